"""The version has one home (device/__init__.py) and `make dist` output stays out of git.

`make dist` itself (sdist + wheel, `twine check`) and the wheel's contents are exercised by
`make test-pi`, which installs that very wheel in an arm64 rootfs; these checks are the cheap part.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

from instrument_ai.device import __version__

REPO = Path(__file__).resolve().parents[1]


def test_version_has_one_source() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "instrument_ai.device.__version__"}


def test_cli_version_is_the_package_version() -> None:
    cli = Path(sys.executable).with_name("instrument-ai")
    result = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"instrument-ai, version {__version__}"


def test_wheel_ships_models_and_device_assets() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.tflite" in package_data["instrument_ai.models"]
    assert "assets/*" in package_data["instrument_ai.device"]
    assert (REPO / "models" / "default.tflite").is_file()
    assert (REPO / "device" / "assets" / "demo.flac").is_file()


def test_dist_is_ignored_by_git() -> None:
    result = subprocess.run(
        ["git", "check-ignore", "-q", "dist/instrument_ai-0-py3-none-any.whl"], cwd=REPO, timeout=30
    )
    assert result.returncode == 0, "dist/ must be in .gitignore"
