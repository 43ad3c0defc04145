"""`service install` defects a new user found (issue 21, defect 11): each test failed before its fix.

A unit that could only exit 2 (the page beyond loopback without a token, a relative path) is refused when it
is written, not when systemd starts it; `%` and `$` in --args reach the daemon as typed.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from instrument_ai.device.cli import cli

BASE = ["service", "install", "--print", "--executable", "/opt/ia/bin/instrument-ai"]


def _exec_start(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("ExecStart="))


def test_the_page_beyond_loopback_needs_a_token_or_http_open() -> None:
    refused = CliRunner().invoke(cli, [*BASE, "--http", "0.0.0.0:8080"])
    assert refused.exit_code == 2 and "--http-token-file" in refused.output and "ExecStart" not in refused.output
    for ok in (
        ["--http", "127.0.0.1:8080"],
        ["--http", "8080"],
        ["--http", "0.0.0.0:8080", "--http-token-file", "/etc/instrument-ai/http-token"],
        ["--http", "0.0.0.0:8080", "--args", "--http-open"],
    ):
        result = CliRunner().invoke(cli, [*BASE, *ok])
        assert result.exit_code == 0, (ok, result.output)


def test_relative_paths_are_refused() -> None:
    for option, value in (("--executable", "venv/bin/instrument-ai"), ("--model-dir", "models")):
        args = [a for a in BASE if a not in ("--executable", "/opt/ia/bin/instrument-ai")] + [option, value]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and "absolute" in result.output and value in result.output, result.output


def test_percent_and_dollar_in_args_reach_the_daemon_as_typed() -> None:
    result = CliRunner().invoke(cli, [*BASE, "--args", "--mqtt-device a%hb --mqtt-password p$HOME%%x"])
    assert result.exit_code == 0, result.output
    line = _exec_start(result.output)
    assert line.endswith("--mqtt-device a%%hb --mqtt-password p$$HOME%%%%x"), line
    words = shlex.split(line.removeprefix("ExecStart=").replace("$$", "$").replace("%%", "%"))
    assert words[-4:] == ["--mqtt-device", "a%hb", "--mqtt-password", "p$HOME%%x"]
    percent_dir = CliRunner().invoke(cli, [*BASE, "--model-dir", "/srv/100%"])
    assert "--model-dir /srv/100%%" in _exec_start(percent_dir.output)
    assert "WorkingDirectory=/srv/100%%" in percent_dir.output


def test_errors_a_restart_cannot_fix_exit_2_so_systemd_stops_retrying(tmp_path: Path, art: dict[str, Any]) -> None:
    """No model installed yet, or a bundle the trusted key refuses: configuration (exit 2), not a runtime error."""
    from instrument_ai.convert import signing
    from instrument_ai.device import lifecycle

    unit = CliRunner().invoke(cli, BASE)
    assert "RestartPreventExitStatus=2" in unit.output
    empty = tmp_path / "empty"
    empty.mkdir()
    demo = ["run", "--source", "demo", "--fast", "--json"]
    result = CliRunner().invoke(cli, [*demo, "--model-dir", str(empty)])
    assert result.exit_code == 2 and "no model installed" in result.output, result.output
    result = CliRunner().invoke(cli, [*demo, "--model-dir", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such model directory" in result.output, result.output
    public, _ = signing.generate_keypair(tmp_path / "k.pem")
    models = tmp_path / "models"
    lifecycle.install(art["bundle"], models)  # unsigned, flashed before the key was set up
    result = CliRunner().invoke(cli, [*demo, "--model-dir", str(models), "--trusted-key", str(public)])
    assert result.exit_code == 2 and "not signed" in result.output, result.output


def test_the_state_directory_stays_group_writable_across_restarts() -> None:
    """systemd resets a StateDirectory= to StateDirectoryMode at every start (0755 by default), which would take
    the group's write access (the guide's flash user) away: the unit names the mode the install step gives it."""
    result = CliRunner().invoke(cli, BASE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "StateDirectory=instrument-ai" in lines
    assert "StateDirectoryMode=2775" in lines
