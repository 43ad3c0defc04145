"""report.py: every figure is a valid PNG, the maths behind them is right, and report.md links what exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from instrument_ai.train.experiments import report


def test_normalise_rows_gives_recall_rows_and_leaves_empty_rows_zero() -> None:
    norm = report.normalise_rows(np.array([[3, 1], [0, 0]]))
    assert norm.tolist() == [[0.75, 0.25], [0.0, 0.0]]


def test_confusion_pairwise_bars_and_holdout_figures_are_pngs(tmp_path: Path) -> None:
    labels = ["bass", "organ", "reed"]
    cm = np.array([[5, 1, 0], [0, 4, 2], [0, 0, 0]])
    report.plot_confusion(cm, labels, tmp_path / "cm.png", "t")
    pair = np.array([[np.nan, 0.8, 0.5], [0.8, np.nan, np.nan], [0.5, np.nan, np.nan]])
    report.plot_pairwise_f1(pair, labels, tmp_path / "pair.png")
    report.plot_per_source({"acoustic": {"note_accuracy": 0.7}, "synthetic": 0.2}, tmp_path / "src.png",
                           reference={"acoustic": 0.94, "electronic": 0.356})  # fmt: skip
    report.plot_holdout([{"name": "A", "note_accuracy": 0.5, "window_accuracy": 0.4}], tmp_path / "h.png")
    for name in ("cm.png", "pair.png", "src.png", "h.png"):
        assert report.is_png(tmp_path / name), name
        assert (tmp_path / name).stat().st_size > 2000
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_figures_refuse_mismatched_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not match"):
        report.plot_confusion(np.zeros((2, 3)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="does not match"):
        report.plot_pairwise_f1(np.zeros((2, 2)), ["a", "b", "c"], tmp_path / "y.png")
    with pytest.raises(ValueError, match="no per-epoch series"):
        report.plot_history({"note": "nothing"}, tmp_path / "z.png")
    assert not (tmp_path / "x.png").exists()


def test_is_png_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"GIF89a....")
    assert not report.is_png(tmp_path / "a.png")
    assert not report.is_png(tmp_path / "missing.png")


def test_markdown_table_and_pct() -> None:
    table = report.markdown_table(["a", "b"], [[1, report.pct(0.5)], [2, report.pct(None)]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 50.0 % |", "| 2 | n/a |"]


def test_write_run_report_links_curves_metrics_and_existing_pngs(tmp_path: Path) -> None:
    run = tmp_path / "run7"
    run.mkdir()
    history = {"loss": [1.2, 0.8, 0.6], "val_loss": [1.3, 1.0, 0.9], "accuracy": [0.4, 0.6, 0.7],
               "val_note_accuracy": [0.3, 0.5, 0.55]}  # fmt: skip
    (run / "history.json").write_text(json.dumps(history))
    (run / "config.json").write_text(json.dumps({"preset": "edge", "labels": ["bass", "organ"], "epochs": 3}))
    (run / "metrics.json").write_text(json.dumps({"note_accuracy": 0.55, "n_notes": 40, "per_family": {}}))
    report.plot_confusion(np.eye(2), ["bass", "organ"], run / "confusion_valid.png")
    md = report.write_run_report(run).read_text()
    assert report.is_png(run / "training_curves.png")
    assert "![training curves](training_curves.png)" in md
    assert "confusion_valid.png" in md
    assert "| note_accuracy | 55.0 % |" in md and "| n_notes | 40 |" in md
    assert "| preset | edge |" in md


def test_evaluation_sections_name_unknown_families(tmp_path: Path) -> None:
    result = {
        "note_accuracy": 0.5, "window_accuracy": 0.4, "note_macro_f1": 0.3, "window_macro_f1": 0.2,
        "reversed": {"note_accuracy": 0.25}, "n_notes": 4, "n_windows": 8,
        "per_family": {"bass": {"support": 4, "precision": 1.0, "recall": 0.5, "f1": 0.66}},
        "per_source": {"acoustic": {"n_notes": 4, "note_accuracy": 0.5, "window_accuracy": 0.4}},
        "unknown_labels": {"reed": {"n_notes": 2, "predicted_as": {"bass": 2}}},
    }  # fmt: skip
    text = "\n".join(body for _, body in report.evaluation_sections(result, tmp_path))
    assert "| reed | 2 | bass 2 |" in text and "25.0 %" in text


def test_importing_the_evaluation_modules_stays_light() -> None:
    """The CLI imports these on use; the heavy libraries must wait until a function needs them."""
    modules = ["experiments.report", "experiments.evaluate", "commands.evaluate", "commands.experiment",
               "experiments.study", "experiments.holdout"]
    code = (
        "import sys\n"
        + "".join(f"import instrument_ai.train.{m}\n" for m in modules)
        + "print(sorted(m for m in ('matplotlib', 'tensorflow', 'keras', 'sklearn', 'librosa', 'scipy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
