"""Markers for tests that need data from outside the repository.

* ``needs_shared``: the shared sample libraries (``../shared/sample-libraries``, beside the
  repository). Skipped with the reason when absent; under ``CI`` (which has them) their
  absence fails the test instead, so a broken CI checkout cannot shrink the suite silently.
* ``needs_sources``: fetched catalogue sources in the folder that ``INSTRUMENT_AI_SOURCES``
  names (clones or bare mirrors, as `instrument-ai data fetch --from` reads them). Never in
  CI; skipped unless that variable names a folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "sample-libraries"


def shared_present() -> bool:
    return SHARED.is_dir()


def sources_folder() -> Path | None:
    value = os.environ.get("INSTRUMENT_AI_SOURCES")
    return Path(value) if value and Path(value).is_dir() else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    in_ci = bool(os.environ.get("CI"))
    for item in items:
        if item.get_closest_marker("needs_shared") and not shared_present() and not in_ci:
            item.add_marker(pytest.mark.skip(reason=f"needs the shared sample libraries at {SHARED} (absent)"))
        if item.get_closest_marker("needs_sources") and sources_folder() is None:
            item.add_marker(pytest.mark.skip(reason="needs fetched sources: set INSTRUMENT_AI_SOURCES to their folder"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_shared") and not shared_present() and os.environ.get("CI"):
        pytest.fail(f"CI is set but the shared sample libraries are missing at {SHARED}", pytrace=False)
