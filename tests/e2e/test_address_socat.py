"""Our reading of socat's address syntax against socat's own.

socat runs ``EXEC:<printer> ...`` and the printer reports the argv it was
given; our parser must split the same address into the same words (quotes,
escapes, brackets, C escapes, at both of socat's levels: the address, then
EXEC's command line).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sockimux.core.address_parser import parse_address
from sockimux.core.addresses import Exec
from sockimux.core.errors import AddressError

from .harness import require

# Commands after the printer's path, each exercising one rule of socat's lexer.
CASES = [
    "somehost socat STDIO UNIX-CONNECT\\:/tmp/sockB",  # the original README's subflow
    "a\\:b 'c,d' \"e:f\"",
    "'hard \\\\ quote' \"soft 'inner' quote\"",
    "(a:b,c) [d:e] {f,g} x(y z)w",
    "a\"b:c\"d 'e'\"f\"",
    "tab\\there nl\\nhere back\\\\slash",
    "\"sh -c 'echo a | b'\"",
    "two   spaces   between",
    "\"''\" empty-word-before",
    "('x') [\"y\"] {'a b'}",
]

COMMAND_CHARS = list(":,'\"()[]{}\\ abn/.-=!")


@pytest.fixture(scope="module")
def printer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("argv") / "argv.py"
    path.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    path.chmod(0o755)
    return path


def socat_argv(address: str) -> list[str] | None:
    """The words socat's EXEC gives the printer, None if socat refuses the address."""
    run = subprocess.run([require("socat"), "-u", address, "-"], capture_output=True, timeout=10)
    if run.returncode != 0:
        return None
    words: list[str] = json.loads(run.stdout)
    return words


def our_argv(address: str) -> list[str]:
    parsed = parse_address(address)
    assert isinstance(parsed, Exec)
    return list(parsed.argv[1:])


@pytest.mark.parametrize("command", CASES)
def test_exec_words_match_socat(printer: Path, command: str) -> None:
    address = f"EXEC:{printer} {command}"
    assert our_argv(address) == socat_argv(address)


@pytest.mark.parametrize("command", CASES)
def test_canonical_form_means_the_same_to_socat(printer: Path, command: str) -> None:
    canonical = str(parse_address(f"EXEC:{printer} {command}"))
    assert our_argv(canonical) == socat_argv(canonical)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.sampled_from(COMMAND_CHARS), min_size=1, max_size=24))
def test_generated_commands_match_socat(printer: Path, command: str) -> None:
    address = f"EXEC:{printer} {command}"
    assume(address == address.strip())  # we ignore spaces around an address; socat does not
    try:
        parsed = parse_address(address)
    except AddressError:
        return  # malformed for us; socat reads past the end of such strings
    assert isinstance(parsed, Exec)
    # socat turns spaces at either end into empty words; we do not (README).
    assume(parsed.command == parsed.command.strip(" "))
    assert list(parsed.argv[1:]) == socat_argv(address)
