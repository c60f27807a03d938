"""`sockimux ssh -s HOST NAME`: how -s is read from ssh's options, and which
program the far side runs for a subsystem (real files, no ssh)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sockimux.remote.subsystem import configured, subsystem_command
from sockimux.sshmode import UsageError, _subsystem_flag, parse


@pytest.mark.parametrize(("arg", "left", "asks"), [
    ("-s", None, True), ("-sT", "-T", True), ("-Ts", "-T", True), ("-Cs4", "-C4", True),
    ("-sp22", "-p22", True), ("-sp", "-p", True),
    ("-ps", "-ps", False),  # -p's value is "s"
    ("-x", "-x", False), ("-oRequestTTY=no", "-oRequestTTY=no", False),
])
def test_s_is_taken_out_of_sshs_flags(arg: str, left: str | None, asks: bool) -> None:
    assert _subsystem_flag(arg) == (left, asks)


def test_what_scp_and_sftp_pass_becomes_a_far_subsystem() -> None:
    """scp -S PROGRAM (SFTP mode, OpenSSH 9) runs PROGRAM with these words."""
    argv = ["-x", "-oPermitLocalCommand=no", "-oClearAllForwardings=yes", "-oRemoteCommand=none",
            "-oRequestTTY=no", "-oForwardAgent=no", "-l", "root", "-s", "--", "far.example", "sftp"]
    target = parse(argv).address.target
    assert target.destination == "far.example"
    assert "-s" not in target.ssh_options and "-l" in target.ssh_options
    assert target.far_args[-2:] == ["--subsystem", "sftp"]
    with pytest.raises(UsageError, match="subsystem"):
        parse(["-s", "far.example"])
    with pytest.raises(UsageError, match="subsystem"):
        parse(["-s", "far.example", "sftp", "extra"])


def test_the_subsystem_program_sshd_is_configured_with(tmp_path: Path) -> None:
    config = tmp_path / "sshd_config"
    config.write_text("Port 22\n# Subsystem sftp /commented/out\n"
                      "subsystem\tsftp  /opt/sftp-server -l INFO\nSubsystem sftp /second/one\n")
    assert configured("sftp", config.read_text().splitlines()) == "/opt/sftp-server -l INFO"
    assert subsystem_command("sftp", str(config), ()) == "/opt/sftp-server -l INFO"
    assert configured("other", config.read_text().splitlines()) is None


def test_internal_sftp_or_no_config_falls_back_to_an_installed_sftp_server(tmp_path: Path) -> None:
    server = tmp_path / "sftp-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    internal = tmp_path / "internal"
    internal.write_text("Subsystem sftp internal-sftp\n")
    missing = str(tmp_path / "no-such-config")
    places = (str(tmp_path / "not-here"), str(server))
    assert subsystem_command("sftp", str(internal), places) == str(server)
    assert subsystem_command("sftp", missing, places) == str(server)
    with pytest.raises(LookupError, match="internal-sftp"):
        subsystem_command("sftp", str(internal), ())
    with pytest.raises(LookupError, match="'backup'"):
        subsystem_command("backup", missing, places)
