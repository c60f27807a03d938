"""Near side of the bootstrap: the command ssh runs on the far host, and what
we write to its STDIN so that it needs nothing there but ``python3``.

Like sshuttle, we always ship the package rather than probing whether one is
installed on the far host: the far side is then always the very version the
near side runs (the wire protocol need not bridge versions), the probe
would cost a round trip on every first connection, and the package is
small (see :func:`package_payload`; measured ~60 KB compressed, read and
compiled in well under 100 ms).  sshuttle execs each module's source into a
bare module object; we install a real import hook instead
(:mod:`.importer`), so relative imports, ``importlib`` and tracebacks behave
as they do from a file.

The command line carries only :data:`LOADER`, one line with no single quote
or backslash, so any login shell (sh, bash, zsh, fish, csh) passes it through
``shlex.quote`` unchanged.  Everything else comes on STDIN:

1. stage 2, :mod:`.importer`'s source, zlib-compressed and base64-encoded on
   one line (the loader reads it byte by byte with an unbuffered
   ``readline``, so it never reads past it);
2. the package: a line with a byte count, then zlib-compressed JSON.

Every byte after that is the first subflow's.
"""

from __future__ import annotations

import base64
import json
import shlex
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

# Runs as `python3 -c LOADER ENTRY ARGS...`: refuses a python older than we
# support in one line (exit 3), reads stage 2 as one line from an unbuffered
# fd 0 and runs it with that reader.  It must parse on any python3.
LOADER = ('import base64,sys,zlib;v=sys.version_info;v<(3,10) and (print('
          '"sockimux: python3 on this host is %d.%d; sockimux needs 3.10 or later"%v[:2],'
          'file=sys.stderr),sys.exit(3));'
          'f=open(0,"rb",0,closefd=False);'
          'exec(zlib.decompress(base64.b64decode(f.readline())),'
          '{"__name__":"__sockimux_boot__","stdin":f})')

DEFAULT_PYTHON = ("python3",)


def _here() -> Path:
    # Looked up when called, not at import: a shipped copy has no __file__
    # (it came from memory), and importing this module there must still work.
    return Path(__file__).resolve().parent


def package_sources(root: Path | None = None) -> dict[str, tuple[bool, str]]:
    """Every module of the package: {dotted name: (is package, source)}."""
    root = root or _here().parent
    modules: dict[str, tuple[bool, str]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (is_package, path.read_text(encoding="utf-8"))
    return modules


def stage2() -> bytes:
    """The importer's source as the one line the loader reads."""
    source = (_here() / "importer.py").read_bytes()
    return base64.b64encode(zlib.compress(source, 9)) + b"\n"


def package_payload(extra: Mapping[str, str] | None = None) -> bytes:
    """What follows stage 2 on STDIN: the package (plus ``extra`` top-level
    modules, e.g. a test's probe) as a counted, compressed block."""
    modules = package_sources()
    for name, source in (extra or {}).items():
        modules[name] = (False, source)
    block = zlib.compress(json.dumps(modules, separators=(",", ":")).encode(), 9)
    return b"%d\n" % len(block) + block


def bootstrap_input(extra: Mapping[str, str] | None = None) -> bytes:
    """All that must be written to the first connection's STDIN before the
    subflow's own bytes."""
    return stage2() + package_payload(extra)


def remote_command(entry: str, args: Sequence[str] = (),
                   python: Sequence[str] = DEFAULT_PYTHON) -> str:
    """The command line for ssh: our loader, then ENTRY (a module with a
    ``main(argv) -> int``) and its arguments, each quoted for the remote shell."""
    words = [*python, "-c", LOADER, entry, *args]
    return " ".join(shlex.quote(w) for w in words)
