"""The device side stays light: no tensorflow, keras, librosa, scipy, numba, sklearn or matplotlib.

A Raspberry Pi installs only the `device` extra, so `instrument-ai --help`,
every device subcommand's `--help` and every module under
`instrument_ai.device` must work without those packages. Each check runs in a
fresh interpreter (the test process itself has imported everything) and reads
`sys.modules` at exit. A slow test also builds the wheel and installs it into
an empty venv, to prove the `package-dir` mapping and the packaged assets.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import pytest

from instrument_ai.device.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"tensorflow", "keras", "librosa", "scipy", "numba", "sklearn", "matplotlib"}

# Runs the real entry point for each argument list in turn, in one interpreter: modules only accumulate, so
# if nothing heavy is loaded after the last command, no command loaded it; the per-command record names the
# first culprit otherwise.
CLI_PROBE = r"""
import contextlib, io, json, os, sys
from instrument_ai.device.cli import main
forbidden = set(json.loads(os.environ["FORBIDDEN"]))
report = []
for args in json.loads(os.environ["RUNS"]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
    seen = sorted({m.split(".")[0] for m in sys.modules} & forbidden)
    report.append({"args": args, "code": code, "output": out.getvalue(), "forbidden_so_far": seen})
json.dump(report, open(os.environ["PROBE_OUT"], "w"))
"""

# Imports each module in turn and records which forbidden top-level packages each one pulled in.
MODULE_PROBE = r"""
import importlib, json, os, sys, traceback
forbidden = set(json.loads(os.environ["FORBIDDEN"]))
report = {}
for name in json.loads(os.environ["MODULES"]):
    try:
        importlib.import_module(name)
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    seen = sorted({m.split(".")[0] for m in sys.modules} & forbidden)
    report[name] = {"error": error, "forbidden_so_far": seen}
json.dump(report, open(os.environ["PROBE_OUT"], "w"))
"""


def _device_commands() -> list[list[str]]:
    """Argument lists for every device subcommand's --help, including the subcommands of groups."""
    runs = [["--help"]]
    for name, (target, _) in sorted(COMMANDS.items()):
        module_name, attr = target.split(":")
        if not module_name.startswith("instrument_ai.device.") or importlib.util.find_spec(module_name) is None:
            continue
        runs.append([name, "--help"])
        command = getattr(importlib.import_module(module_name), attr)
        if isinstance(command, click.Group):
            runs += [[name, sub, "--help"] for sub in sorted(command.commands)]
    return runs


def _forbidden(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & FORBIDDEN)


def test_the_device_commands_are_found() -> None:
    names = {run[0] for run in _device_commands()}
    assert {"--help", "features", "bench"} <= names
    assert ["bench", "frontend", "--help"] in _device_commands()


def test_cli_help_imports_nothing_heavy(tmp_path: Path) -> None:
    runs = _device_commands()
    out = tmp_path / "report.json"
    env = {**os.environ, "PROBE_OUT": str(out), "RUNS": json.dumps(runs), "FORBIDDEN": json.dumps([*FORBIDDEN])}
    result = subprocess.run([sys.executable, "-c", CLI_PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [entry["args"] for entry in report] == runs
    for entry in report:
        command = "instrument-ai " + " ".join(entry["args"])
        assert entry["code"] == 0 and "Usage:" in entry["output"], f"{command}: {entry['output']}"
        assert entry["forbidden_so_far"] == [], f"{command} imported {entry['forbidden_so_far']}"


def test_console_script_help_via_importtime() -> None:
    """The installed `instrument-ai` script itself, with Python's own import log (-X importtime)."""
    script = Path(sys.executable).parent / "instrument-ai"
    assert script.exists(), f"{script}: the console script is not installed (pip install -e .)"
    result = subprocess.run(
        [str(script), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
        timeout=120,
    )
    assert result.returncode == 0 and "features" in result.stdout and "bench" in result.stdout
    imported = [
        line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    ]
    assert "instrument_ai.device.cli" in imported and "click" in imported
    assert _forbidden(imported) == []


def test_every_device_module_imports_light(tmp_path: Path) -> None:
    import instrument_ai.device as device

    names = sorted(m.name for m in pkgutil.walk_packages(device.__path__, "instrument_ai.device."))
    assert "instrument_ai.device.frontend" in names and "instrument_ai.device.commands.bench" in names
    out = tmp_path / "report.json"
    env = {
        **os.environ,
        "PROBE_OUT": str(out),
        "MODULES": json.dumps(names),
        "FORBIDDEN": json.dumps(sorted(FORBIDDEN)),
    }
    result = subprocess.run([sys.executable, "-c", MODULE_PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    errors = {name: entry["error"] for name, entry in report.items() if entry["error"]}
    assert errors == {}
    culprits = {name: entry["forbidden_so_far"] for name, entry in report.items() if entry["forbidden_so_far"]}
    assert culprits == {}, f"first module to import a heavy package: {next(iter(culprits.items()))}"


def test_train_and_convert_cli_modules_defer_heavy_imports(tmp_path: Path) -> None:
    """Not a device rule, but importing a CLI module (e.g. for --help) must not load tensorflow either."""
    targets = sorted({t.split(":")[0] for t, _ in COMMANDS.values() if not t.startswith("instrument_ai.device.")})
    present = [m for m in targets if importlib.util.find_spec(m) is not None]
    out = tmp_path / "report.json"
    env = {
        **os.environ,
        "PROBE_OUT": str(out),
        "MODULES": json.dumps(present),
        "FORBIDDEN": json.dumps(["tensorflow", "keras", "librosa", "numba", "matplotlib"]),
    }
    result = subprocess.run([sys.executable, "-c", MODULE_PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert {n: e["error"] for n, e in report.items() if e["error"]} == {}
    assert {n: e["forbidden_so_far"] for n, e in report.items() if e["forbidden_so_far"]} == {}


def test_editable_install_maps_the_three_folders() -> None:
    """`.venv` has the editable install: the import package resolves to the repository's folders."""
    for package, folder in (("device", "device"), ("train", "train"), ("convert", "convert")):
        module = importlib.import_module(f"instrument_ai.{package}")
        assert Path(module.__file__).resolve().parent == REPO / folder


# -- the wheel -----------------------------------------------------------------------------------------

# What the fresh venv borrows from .venv, by symlink: the device extra's pure runtime needs minus the
# interpreter and sounddevice (not needed to compute features from a file), and nothing heavy.
DEVICE_RUNTIME = ("numpy", "numpy.libs", "click", "soundfile", "_soundfile", "_soundfile_data", "_cffi_backend")


def _link_runtime(target: Path) -> None:
    import typing_extensions

    site = Path(typing_extensions.__file__).parent
    names = [*DEVICE_RUNTIME, "typing_extensions"]
    for entry in site.iterdir():
        stem = entry.name.split(".")[0] if entry.suffix in (".py", ".so") else entry.name
        if stem in names and not entry.name.endswith((".dist-info", ".pth")):
            (target / entry.name).symlink_to(entry)


@pytest.mark.slow
def test_wheel_builds_and_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in ("device", "train", "convert", "models"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("instrument_ai-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "instrument_ai/device/frontend.py",
        "instrument_ai/device/cli.py",
        "instrument_ai/device/commands/bench.py",
        "instrument_ai/device/assets/demo.flac",
        "instrument_ai/train/__init__.py",
        "instrument_ai/train/corpus/demo_clip.py",
        "instrument_ai/train/sources/sources.toml",
        "instrument_ai/train/commands/train.py",
        "instrument_ai/train/experiments/evaluate.py",
        "instrument_ai/convert/__init__.py",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    assert not any(n.startswith(("tests/", "device/", "instrument_ai/__init__.py")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "instrument-ai = instrument_ai.device.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    runtime = tmp_path / "device-runtime"
    runtime.mkdir()
    _link_runtime(runtime)
    (site / "device_runtime.pth").write_text(f"{runtime}\n")

    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import json, sys, instrument_ai.device.frontend as f, instrument_ai.train, instrument_ai.convert\n"
            "info = {'file': f.__file__, 'frames': f.DEFAULT_SPEC.n_frames(16000), 'modules': sorted(sys.modules)}\n"
            "print(json.dumps(info))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    info = json.loads(probe.stdout)
    assert Path(info["file"]).is_relative_to(site), info["file"]  # the wheel's copy, not the repository's
    assert info["frames"] == 59
    assert _forbidden(info["modules"]) == []

    features = subprocess.run(
        [str(venv / "bin" / "instrument-ai"), "features", "--demo", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env,
        timeout=120,
    )
    assert features.returncode == 0, features.stderr
    summary = json.loads(features.stdout)
    assert Path(summary["file"]).is_relative_to(site) and summary["shape"][0] == 40 and summary["shape"][1] > 1000
