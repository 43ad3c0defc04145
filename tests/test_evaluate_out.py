"""Where `evaluate` writes its report by default (issue 21, defect 15): never into the shipped models folder.

A bundle's evaluation goes to ``runs/evaluate-<bundle>-<data>[-<split>]-<time>`` under the working directory, a
new folder each time; a training run's stays beside the run (``<run>/eval-<data>``), which is the user's own.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from instrument_ai.device.cli import cli

REPO = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("toy_eval", Path(__file__).with_name("test_evaluate_toycorpus.py"))
assert _spec is not None and _spec.loader is not None
_toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_toy)


def test_a_bundle_evaluation_goes_to_runs_not_beside_the_shipped_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _toy.make_corpus(tmp_path / "corpus", libraries=("LibA",), pitches=(48, 60))
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(REPO / "models" / "default.tflite", models / "default.tflite")
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "--model", "models/default.tflite", "--data", str(corpus), "--quiet"]
    for _ in range(2):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in models.iterdir()) == ["default.tflite"]  # nothing written beside the bundle
    reports = sorted((tmp_path / "runs").iterdir())
    assert len(reports) == 2, reports  # one folder per evaluation: the first is not overwritten
    for report in reports:
        assert report.name.startswith("evaluate-default-corpus-") and (report / "report.md").is_file()
    assert f"report: {Path('runs') / reports[-1].name / 'report.md'}" in result.output
