"""Stage 2 of the bootstrap: run on the far host, before sockimux exists there.

The one-line loader that ssh runs (see :mod:`.bootstrap`) reads this file's
source from its STDIN and executes it with ``__name__`` set to
``__sockimux_boot__`` and ``stdin`` set to an unbuffered reader of fd 0.  It
then reads the package: one line with a byte count, then that many bytes of
zlib-compressed JSON ``{module name: [is package, source]}``, installs an
import hook that serves those modules from memory, and runs
``ENTRY.main(ARGS)`` with ENTRY and ARGS taken from the loader's command line.

Why from memory: nothing is written on the far host (no temporary directory
to clean up after a crash, no ``__pycache__``), and what runs there is always
exactly the version the near side runs.  Why stdlib only: the far host needs
nothing but ``python3``.  Why exact reads: every byte after the package on
fd 0 belongs to the first subflow, so reading one byte too many would lose it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import types
import zlib
from collections.abc import Sequence
from typing import BinaryIO

ORIGIN = "<sockimux shipped>"  # shown in tracebacks instead of a path on disk


class ShippedModules(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Finds and loads the modules that came over the wire, never touching disk.

    It goes first in ``sys.meta_path``, so a different sockimux installed on
    the far host cannot mix its modules with ours."""

    def __init__(self, modules: dict[str, tuple[bool, str]]) -> None:
        self._modules = modules

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        entry = self._modules.get(fullname)
        if entry is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=f"{ORIGIN}/{fullname}",
                                               is_package=entry[0])

    def is_package(self, fullname: str) -> bool:
        return self._modules[fullname][0]

    def get_source(self, fullname: str) -> str:
        return self._modules[fullname][1]

    def get_code(self, fullname: str) -> types.CodeType:
        # The file name is what tracebacks print; linecache finds the text
        # through get_source, so a far-side traceback still shows its lines.
        return compile(self.get_source(fullname), f"{ORIGIN}/{fullname}", "exec", dont_inherit=True)

    def exec_module(self, module: types.ModuleType) -> None:
        # A name, not a path on disk: code that only mentions __file__ (a log
        # record's pathname) works as from a file; code that opens it fails
        # there, loudly, instead of with a NameError somewhere later.
        module.__file__ = f"{ORIGIN}/{module.__name__}"
        exec(self.get_code(module.__name__), module.__dict__)


def read_exactly(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes from an unbuffered stream, or exit: a short package is
    an ssh connection cut during start-up, not a bug worth a traceback."""
    parts = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            sys.stderr.write("sockimux: the package was cut short on its way to this host\n")
            raise SystemExit(3)
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def install(stream: BinaryIO) -> ShippedModules:
    """Read the package from ``stream`` and make it importable."""
    header = stream.readline()
    if not header.endswith(b"\n") or not header[:-1].isdigit():
        sys.stderr.write("sockimux: no package arrived on this host\n")
        raise SystemExit(3)
    raw = json.loads(zlib.decompress(read_exactly(stream, int(header))))
    finder = ShippedModules({name: (bool(pkg), str(src)) for name, (pkg, src) in raw.items()})
    sys.meta_path.insert(0, finder)
    sys.dont_write_bytecode = True
    return finder


def boot(stream: BinaryIO, argv: Sequence[str]) -> None:
    """Install the package, then hand over to ``ENTRY.main(ARGS)``."""
    if not argv:
        sys.stderr.write("sockimux: the bootstrap was given no entry point\n")
        raise SystemExit(2)
    install(stream)
    entry = importlib.import_module(argv[0])
    raise SystemExit(entry.main(list(argv[1:])))


if __name__ == "__sockimux_boot__":
    boot(globals()["stdin"], sys.argv[1:])
