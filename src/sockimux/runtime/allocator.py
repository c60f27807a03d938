"""Allocator settings for a process that cycles through large buffers.

sockimux allocates and frees buffers of 64 KiB to 1 MiB many thousand times
a second (reads of STDIN, DATA bodies).  glibc serves blocks above its mmap
threshold (128 KiB at first, then adapting) with a fresh mmap each, and gives
the top of its heap back to the kernel as soon as 128 KiB are free there, so
the same memory is unmapped, mapped again, faulted in and zeroed by the
kernel over and over: in a bulk transfer that was a quarter of the CPU time
of both ends.  A fixed mmap threshold above our largest buffer and a trim
threshold of a few windows keep that memory in the heap for reuse; peak RSS
is unchanged, since it is set by what is held at once.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024  # above any buffer we allocate (1 MiB at most)
TRIM_THRESHOLD = 64 * 1024 * 1024  # free heap top kept for reuse


def tune() -> bool:
    """Apply the settings if the C library is glibc; True if it took them."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt): its defaults apply
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
