"""Fixtures shared by several test files, and markers for tests that need data from outside the repository.

Fixtures (each built once per session):

* ``tiny_bundle_path``: a real bundle of the tiny low/mid/high tone classifier (`fakemic.tiny_bundle_bytes`),
  written to a temporary folder; the CLI tests run it as ``--model``.
* ``art``: the tiny trained run folder, its int8 bundle converted through the CLI and the Keras model
  (`bundle_support.artifacts`); the bundle and convert tests share it.

Markers:

* ``needs_shared``: the shared sample libraries (``../shared/sample-libraries``, beside the
  repository). Skipped with the reason when absent; under ``CI`` (which has them) their
  absence fails the test instead, so a broken CI checkout cannot shrink the suite silently.
* ``needs_apt("prog", ...)``: programs the Makefile installs from Debian (chromium, chromedriver,
  mosquitto). Skipped with the reason when one is missing; required (a failure) when ``CI`` is set.
* ``needs_sources``: fetched catalogue sources in the folder that ``INSTRUMENT_AI_SOURCES``
  names (clones or bare mirrors, as `instrument-ai data fetch --from` reads them). Never in
  CI; skipped unless that variable names a folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "sample-libraries"


@pytest.fixture(scope="session")
def tiny_bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tone-classifier bundle as a file (trained and built once per session, about a second)."""
    from fakemic import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def art(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny trained run, its int8 bundle (via the CLI) and the Keras model; seconds of TF, so once per session."""
    from bundle_support import artifacts

    return artifacts(tmp_path_factory)


def shared_present() -> bool:
    return SHARED.is_dir()


def find_program(name: str) -> str | None:
    """A program on PATH, or in the sbin folders a non-root PATH often lacks (mosquitto lives in /usr/sbin)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def missing_programs(item: pytest.Item) -> list[str]:
    marker = item.get_closest_marker("needs_apt")
    return [name for name in (marker.args if marker else ()) if find_program(name) is None]


def sources_folder() -> Path | None:
    value = os.environ.get("INSTRUMENT_AI_SOURCES")
    return Path(value) if value and Path(value).is_dir() else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    in_ci = bool(os.environ.get("CI"))
    for item in items:
        if item.get_closest_marker("needs_shared") and not shared_present() and not in_ci:
            item.add_marker(pytest.mark.skip(reason=f"needs the shared sample libraries at {SHARED} (absent)"))
        missing = missing_programs(item)
        if missing and not in_ci:
            item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(missing)} (apt; `make apt` installs it)"))
        if item.get_closest_marker("needs_sources") and sources_folder() is None:
            item.add_marker(pytest.mark.skip(reason="needs fetched sources: set INSTRUMENT_AI_SOURCES to their folder"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_shared") and not shared_present() and os.environ.get("CI"):
        pytest.fail(f"CI is set but the shared sample libraries are missing at {SHARED}", pytrace=False)
    missing = missing_programs(item)
    if missing and os.environ.get("CI"):
        names = ", ".join(missing)
        pytest.fail(f"CI is set but {names} is not installed (see APT_PACKAGES in the Makefile)", pytrace=False)
