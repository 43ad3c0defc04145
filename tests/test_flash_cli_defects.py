"""`flash`/`rollback` from the command line and over ssh, as a new user met them (issue 21):

* section 2: `flash --to pi@host:` finds `instrument-ai` on the Pi outside the ssh PATH, and sends the
  trusted key's value (not a local path the Pi does not have);
* defect 9: a FIFO or a device is named for what it is; a missing --trusted-key exits 2 as `run` does;
* defect 12: a refused remote install leaves no `.incoming-*` copy on the device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bundle_support import rewrite
from test_lifecycle_bundles import _fake_openssh, current_version

from instrument_ai.device import lifecycle

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "instrument_ai.device.cli"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, timeout=120)


def _ssh_without_cli_on_path(tmp_path: Path) -> dict[str, str]:
    """Fake ssh/scp on PATH, and the device's instrument-ai only in ~/.local/bin (as a venv user install)."""
    tools = tmp_path / "tools"
    _fake_openssh(tools)
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (tools / "instrument-ai").rename(home / ".local" / "bin" / "instrument-ai")
    return {"PATH": f"{tools}:{os.environ['PATH']}", "HOME": str(home)}


def test_flash_over_ssh_finds_the_cli_outside_the_path(art: dict[str, Any], tmp_path: Path) -> None:
    env = _ssh_without_cli_on_path(tmp_path)
    pi = tmp_path / "pi"
    done = _cli("flash", str(art["bundle"]), "--to", f"pi@kitchen:{pi}", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)[0]["status"] == "ok"
    assert current_version(pi) == "1.2.3"
    # a --remote-command that is not there: refused in one line naming it, and no upload left behind
    missing = _cli(
        "flash", str(art["bundle"]), "--to", f"pi@kitchen:{pi}", "--remote-command", "/nowhere/instrument-ai", env=env
    )
    assert missing.returncode == 3 and "refused" in missing.stdout
    assert not list(pi.glob(".incoming-*"))


def test_flash_over_ssh_without_any_cli_says_where_it_looked(art: dict[str, Any], tmp_path: Path) -> None:
    env = _ssh_without_cli_on_path(tmp_path)
    (Path(env["HOME"]) / ".local" / "bin" / "instrument-ai").unlink()
    pi = tmp_path / "pi"
    done = _cli("flash", str(art["bundle"]), "--to", f"pi@kitchen:{pi}", env=env)
    assert done.returncode == 3
    assert "not found" in done.stdout and "--remote-command" in done.stdout
    assert not list(pi.glob(".incoming-*")), "the uploaded copy is removed when the install cannot run"


def test_flash_over_ssh_sends_the_trusted_key_itself(art: dict[str, Any], tmp_path: Path) -> None:
    from instrument_ai.convert import signing

    public_path, _ = signing.generate_keypair(tmp_path / "k.pem")

    def signer(message: bytes) -> tuple[bytes, bytes]:
        signature, public = signing.sign(tmp_path / "k.pem", message)
        return public, signature

    signed = rewrite(art["bundle"], tmp_path / "signed.tflite", lambda meta: None, signer=signer)
    key_hex = Path(public_path).read_text().split()[0]
    env = _ssh_without_cli_on_path(tmp_path)
    pi = tmp_path / "pi"
    dry = _cli(
        "flash", str(signed), "--to", f"pi@kitchen:{pi}", "--trusted-key", str(public_path), "--dry-run", env=env
    )
    assert dry.returncode == 0, dry.stderr
    assert f"--trusted-key {key_hex}" in dry.stdout and str(public_path) not in dry.stdout
    done = _cli("flash", str(signed), "--to", f"pi@kitchen:{pi}", "--trusted-key", str(public_path), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    unsigned = _cli("flash", str(art["bundle"]), "--to", f"pi@kitchen:{pi}", "--trusted-key", key_hex, env=env)
    assert unsigned.returncode == 1 and "sign" in unsigned.stderr.lower()


def test_a_refused_remote_install_leaves_no_upload(art: dict[str, Any], tmp_path: Path) -> None:
    env = _ssh_without_cli_on_path(tmp_path)
    pi = tmp_path / "pi"
    pi.mkdir()
    (pi / lifecycle.VERSIONS).write_text("a file, not a folder")  # the device's own install step refuses
    done = _cli("flash", str(art["bundle"]), "--to", f"pi@kitchen:{pi}", env=env)
    assert done.returncode == 3 and "refused" in done.stdout
    assert not list(pi.glob(".incoming-*"))


def test_flash_names_a_fifo_and_a_device(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.tflite"
    os.mkfifo(fifo)
    done = _cli("flash", str(fifo), "--to", str(tmp_path / "models"))
    assert done.returncode == 1 and "named pipe" in done.stderr and "no such" not in done.stderr
    zero = tmp_path / "zero.tflite"
    zero.symlink_to("/dev/zero")
    done = _cli("flash", str(zero), "--to", str(tmp_path / "models"))
    assert done.returncode == 1 and "character device" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_missing_trusted_key_is_a_configuration_error(art: dict[str, Any], tmp_path: Path) -> None:
    for args in (
        ["flash", str(art["bundle"]), "--to", str(tmp_path / "m"), "--trusted-key", str(tmp_path / "MISSING")],
        ["rollback", "--dir", str(tmp_path), "--trusted-key", str(tmp_path / "MISSING")],
    ):
        done = _cli(*args)
        assert done.returncode == 2, done.stderr
        assert "MISSING" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_flash_to_a_regular_file_says_so(art: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("x")
    done = _cli("flash", str(art["bundle"]), "--to", str(target))
    assert done.returncode == 3 and "is a file, not a directory" in done.stdout


def test_a_daemon_records_what_it_runs_and_flash_keeps_it(art: dict[str, Any], tmp_path: Path) -> None:
    """Defect 4: a daemon that refuses three flashed bundles keeps its own version on disk (--keep 3)."""
    models = tmp_path / "dev"
    assert _cli("flash", str(art["bundle"]), "--to", str(models)).returncode == 0
    ran = _cli("run", "--model-dir", str(models), "--source", "demo", "--fast", "--json", "--duration", "1")
    assert ran.returncode == 0, ran.stderr
    assert [r["running"] for r in lifecycle.list_installed(models)] == [True]
    for version in ("2.0.0", "3.0.0", "4.0.0"):
        newer = rewrite(art["bundle"], tmp_path / f"v{version}.tflite", lambda meta, v=version: meta.update(version=v))
        assert _cli("flash", str(newer), "--to", str(models)).returncode == 0
    rows = lifecycle.list_installed(models)
    assert [(r["version"], r["running"], r["present"]) for r in rows] == [
        ("1.2.3", True, True),
        ("2.0.0", False, True),
        ("3.0.0", False, True),
        ("4.0.0", False, True),
    ]


def test_a_swapped_in_version_becomes_the_running_one(art: dict[str, Any], tmp_path: Path) -> None:
    """Defect 4, hot reload: after a swap the history names the new version as the one that runs."""
    from livehelp import Daemon, wait_until

    models = tmp_path / "dev"
    assert _cli("flash", str(art["bundle"]), "--to", str(models)).returncode == 0
    daemon = Daemon(["--source", "demo", "--json", "--model-dir", str(models), "--reload-poll", "0.2"])
    try:
        daemon.wait_for(lambda: daemon.hops(), 60, "the first hop")
        assert [r["running"] for r in lifecycle.list_installed(models)] == [True]
        newer = rewrite(art["bundle"], tmp_path / "v2.tflite", lambda meta: meta.update(version="2.0.0"))
        assert _cli("flash", str(newer), "--to", str(models)).returncode == 0
        daemon.wait_for(lambda: any(r["type"] == "swap" for r in daemon.records), 60, "the swap")
        wait_until(
            lambda: [(r["version"], r["running"]) for r in lifecycle.list_installed(models)]
            == [("1.2.3", False), ("2.0.0", True)],
            10,
            "the swap to be recorded",
        )
    finally:
        daemon.stop()
