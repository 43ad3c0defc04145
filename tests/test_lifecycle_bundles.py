"""flash / models / rollback on real bundles: verification, signatures, several devices, ssh, SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bundle_support import rewrite
from click.testing import CliRunner

from instrument_ai.device import bundle as device_bundle
from instrument_ai.device import lifecycle
from instrument_ai.device.cli import cli

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "instrument_ai.device.cli"]


@pytest.fixture(scope="module")
def second_bundle(art: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model as version 2.0.0 (a different file with valid digests)."""
    target = tmp_path_factory.mktemp("v2") / "tiny-2.tflite"
    return rewrite(art["bundle"], target, lambda meta: meta.update(version="2.0.0"))


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def current_version(directory: Path) -> str:
    return device_bundle.read_metadata(directory / lifecycle.CURRENT)["version"]


def test_flash_models_rollback_cycle(art: dict[str, Any], second_bundle: Path, tmp_path: Path) -> None:
    models = tmp_path / "dev"
    result = invoke("flash", str(art["bundle"]), "--to", str(models))
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    assert invoke("flash", str(second_bundle), "--to", str(models)).exit_code == 0
    assert current_version(models) == "2.0.0"
    listing = invoke("models", "--dir", str(models), "--json")
    rows = json.loads(listing.output)
    assert [(r["version"], r["current"]) for r in rows] == [("1.2.3", False), ("2.0.0", True)]
    result = invoke("rollback", "--dir", str(models))
    assert result.exit_code == 0 and "2.0.0 -> tiny 1.2.3" in result.output
    assert current_version(models) == "1.2.3"
    device_bundle.load(models / lifecycle.CURRENT)  # still loads with its self-test


def test_flash_refuses_a_tampered_bundle_and_changes_nothing(art: dict[str, Any], tmp_path: Path) -> None:
    models = tmp_path / "dev"
    invoke("flash", str(art["bundle"]), "--to", str(models))
    data = bytearray(art["bundle"].read_bytes())
    data[len(data) // 3] ^= 0xFF
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(bytes(data))
    before = sorted(p.name for p in models.rglob("*"))
    result = invoke("flash", str(bad), "--to", str(models))
    assert result.exit_code == 1
    assert "refused" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in models.rglob("*")) == before
    assert current_version(models) == "1.2.3"


def test_trusted_key_refuses_unsigned_bundles(art: dict[str, Any], tmp_path: Path) -> None:
    from instrument_ai.convert import signing

    public_path, _ = signing.generate_keypair(tmp_path / "k.pem")

    def signer(message: bytes) -> tuple[bytes, bytes]:
        signature, public = signing.sign(tmp_path / "k.pem", message)
        return public, signature

    signed = rewrite(art["bundle"], tmp_path / "signed.tflite", lambda meta: None, signer=signer)
    models = tmp_path / "dev"
    unsigned = invoke("flash", str(art["bundle"]), "--to", str(models), "--trusted-key", str(public_path))
    assert unsigned.exit_code == 1 and "sign" in unsigned.output.lower()
    assert not (models / lifecycle.CURRENT).exists()
    ok = invoke("flash", str(signed), "--to", str(models), "--trusted-key", str(public_path))
    assert ok.exit_code == 0, ok.output


def _fake_openssh(bin_dir: Path) -> None:
    """`ssh`/`scp` stand-ins: host "down" is unreachable (exit 255); others run locally."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    ssh = bin_dir / "ssh"
    ssh.write_text(
        "#!/bin/bash\n"
        'while [[ "$1" == -* ]]; do [[ "$1" == -o ]] && shift; shift; done\n'
        'host="$1"; shift\n'
        'if [[ "$host" == *down* ]]; then echo "ssh: connect to host $host: No route to host" >&2; exit 255; fi\n'
        'exec bash -c "$*"\n'
    )
    scp = bin_dir / "scp"
    scp.write_text(
        "#!/bin/bash\n"
        'args=(); while [[ $# -gt 0 ]]; do case "$1" in -o) shift 2;; -*) shift;; *) args+=("$1"); shift;; esac; done\n'
        'src="${args[0]}"; dst="${args[1]}"\n'
        'if [[ "$dst" == *down* ]]; then echo "lost connection" >&2; exit 255; fi\n'
        'exec cp "$src" "${dst#*:}"\n'
    )
    remote = bin_dir / "instrument-ai"
    remote.write_text(f'#!/bin/bash\nexec {sys.executable} -m instrument_ai.device.cli "$@"\n')
    for tool in (ssh, scp, remote):
        tool.chmod(0o755)


def test_flash_several_devices_over_ssh_with_one_unreachable(
    art: dict[str, Any], second_bundle: Path, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    _fake_openssh(bin_dir)
    pi_a, pi_b = tmp_path / "pi-a", tmp_path / "pi-b"
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(f"# two pis and one that is off\npi@kitchen:{pi_a}\npi@down-host:{tmp_path / 'pi-c'}\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [*CLI, "flash", str(art["bundle"]), "--hosts", str(hosts), "--to", f"pi@garage:{pi_b}", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    results = {r["target"]: r["status"] for r in json.loads(done.stdout)}
    assert results == {
        f"pi@kitchen:{pi_a}": "ok",
        f"pi@down-host:{tmp_path / 'pi-c'}": "unreachable",
        f"pi@garage:{pi_b}": "ok",
    }
    for pi in (pi_a, pi_b):
        assert current_version(pi) == "1.2.3"
        assert not list(pi.glob(".incoming-*")), "the uploaded copy is removed after install"
    # dry run: says what it would run, changes nothing
    dry = subprocess.run(
        [*CLI, "flash", str(second_bundle), "--to", f"pi@kitchen:{pi_a}", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert dry.returncode == 0 and "scp" in dry.stdout
    assert current_version(pi_a) == "1.2.3"


def test_remote_refusal_is_reported_per_device(art: dict[str, Any], tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _fake_openssh(bin_dir)
    pi = tmp_path / "pi"
    pi.mkdir()
    (pi / lifecycle.VERSIONS).write_text("a file, not a folder")  # the device's own install step refuses
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [*CLI, "flash", str(art["bundle"]), "--to", f"pi@kitchen:{pi}"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 3
    assert "refused" in done.stdout and "File exists" in done.stdout


def test_sigkill_during_flash_never_breaks_the_current_model(
    art: dict[str, Any], second_bundle: Path, tmp_path: Path
) -> None:
    """Kill `flash` at random moments (during verification, the write, the rename, the symlink swap)."""
    models = tmp_path / "dev"
    lifecycle.install(art["bundle"], models)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(4)
    bundles = [second_bundle, art["bundle"]]
    # how long a whole flash takes here, to spread the kills over it
    start = time.perf_counter()
    subprocess.run([*CLI, "flash", str(second_bundle), "--to", str(models)], env=env, check=True, capture_output=True)
    full = time.perf_counter() - start
    for attempt in range(8):
        process = subprocess.Popen(
            [*CLI, "flash", str(bundles[attempt % 2]), "--to", str(models), "--keep", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.0) * full)
        process.send_signal(signal.SIGKILL)
        process.wait()
        loaded = device_bundle.load(models / lifecycle.CURRENT)  # raises if broken
        assert loaded.metadata["version"] in ("1.2.3", "2.0.0")
        lifecycle.list_installed(models)  # history stays readable
