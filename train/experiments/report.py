"""Plots and markdown reports for training runs, evaluations and experiments.

Every figure a person looks at is made here, so a training run, an `evaluate`
call and the study all draw the same confusion matrix the same way (rows = true
family, normalised per row, like the original study's figure). matplotlib is
imported lazily and always with the Agg backend: importing this module stays
cheap, and plotting works on a headless machine or in CI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported on first use only)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    """Write a figure atomically (a half-written PNG never replaces a good one) and close it."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def is_png(path: str | Path) -> bool:
    """True when the file exists and starts with the PNG signature."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(8) == PNG_MAGIC


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows with no examples stay zero): recall on the diagonal."""
    matrix = np.asarray(matrix, dtype=np.float64)
    sums = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums > 0)


# -- figures ----------------------------------------------------------------------------------


def plot_history(history: Mapping[str, Sequence[float]], path: str | Path, title: str = "Training") -> Path:
    """Training curves: loss (left) and every accuracy-like metric (right), train and validation.

    `history` is Keras' `History.history` as saved in a run's history.json:
    {"loss": [...], "val_loss": [...], "accuracy": [...], ...}.
    """
    plt = _pyplot()
    series = {k: [float(v) for v in vals] for k, vals in history.items() if isinstance(vals, (list, tuple))}
    if not series:
        raise ValueError("history has no per-epoch series to plot")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, values in sorted(series.items()):
        epochs = np.arange(1, len(values) + 1)
        target = ax_loss if key.endswith("loss") else ax_acc if "acc" in key else None
        if target is None:
            continue
        target.plot(epochs, values, marker="o" if len(values) < 20 else None, label=key)
    ax_loss.set(title=f"{title}: loss", xlabel="epoch", ylabel="loss")
    ax_acc.set(title=f"{title}: accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_confusion(
    matrix: np.ndarray,
    labels: Sequence[str],
    path: str | Path,
    title: str = "Confusion matrix",
    *,
    pred_labels: Sequence[str] | None = None,
) -> Path:
    """Row-normalised confusion matrix (true family down, predicted across), cells annotated in %.

    `pred_labels` differs from `labels` when some true families are unknown to
    the model (their rows are shown, but no column can ever be theirs).
    """
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    pred_labels = list(labels if pred_labels is None else pred_labels)
    if counts.shape != (len(labels), len(pred_labels)):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match {len(labels)}x{len(pred_labels)}")
    norm = normalise_rows(counts)
    size = max(4.0, 0.55 * max(len(labels), len(pred_labels)) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(pred_labels)), pred_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            if counts[i].sum() > 0:
                value = norm[i, j]
                ax.text(j, i, f"{100 * value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_bars(
    values: Mapping[str, float | None],
    path: str | Path,
    title: str,
    *,
    reference: Mapping[str, float | None] | None = None,
    ylabel: str = "accuracy",
    reference_label: str = "original study",
    value_label: str = "ours",
) -> Path:
    """Grouped bar chart of named accuracies, optionally beside published reference figures.

    Used for the per-source breakdown (acoustic / electronic / synthetic) and
    the study comparisons; a None value (nothing to measure) is drawn as a gap.
    """
    plt = _pyplot()
    names = list(values)
    if reference:
        names += [n for n in reference if n not in values]
    x = np.arange(len(names))
    width = 0.38 if reference else 0.6
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.8))
    ours = [values.get(n) for n in names]
    bars = ax.bar(x - (width / 2 if reference else 0), [v if v is not None else 0 for v in ours], width,
                  label=value_label, color="#3a7dc9")  # fmt: skip
    for bar, value in zip(bars, ours, strict=True):
        text = "n/a" if value is None else f"{100 * value:.1f}%"
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, text, ha="center", fontsize=8)
    if reference:
        refs = [reference.get(n) for n in names]
        ref_bars = ax.bar(x + width / 2, [v if v is not None else 0 for v in refs], width, label=reference_label,
                          color="#bbbbbb")  # fmt: skip
        for bar, value in zip(ref_bars, refs, strict=True):
            if value is not None:
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, f"{100 * value:.1f}%",
                        ha="center", fontsize=8)  # fmt: skip
        ax.legend(fontsize=8)
    slanted = len(names) > 4 or max(map(len, names), default=0) > 12  # long names would overlap
    ax.set_xticks(x, names, rotation=20 if slanted else 0, ha="right" if slanted else "center")
    ax.set(title=title, ylabel=ylabel, ylim=(0, 1.1))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_per_source(
    per_source: Mapping[str, Any], path: str | Path, reference: Mapping[str, float] | None = None
) -> Path:
    """Per-source note accuracy bar chart; `per_source` maps source -> {"note_accuracy": ...} or a float."""
    values: dict[str, float | None] = {}
    for name, entry in per_source.items():
        values[name] = entry.get("note_accuracy") if isinstance(entry, Mapping) else entry
    return plot_bars(values, path, "Accuracy per instrument source", reference=reference)


def plot_pairwise_f1(matrix: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Symmetric heatmap of binary-classifier F1 between each pair of families (NaN = not measured)."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"pairwise matrix shape {matrix.shape} does not match {len(labels)} labels")
    size = max(4.0, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    masked = np.ma.masked_invalid(matrix)
    image = ax.imshow(masked, cmap="RdYlGn", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(title=title or "Pairwise binary F1 (quality-flag MLP)")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if np.isfinite(matrix[i, j]):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_holdout(folds: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Note and window accuracy per held-out library, with the mean note accuracy as a line."""
    plt = _pyplot()
    names = [str(f["name"]) for f in folds]
    notes = [float(f.get("note_accuracy") or 0.0) for f in folds]
    windows = [float(f.get("window_accuracy") or 0.0) for f in folds]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(names) + 2), 3.8))
    ax.bar(x - 0.2, notes, 0.4, label="note accuracy", color="#3a7dc9")
    ax.bar(x + 0.2, windows, 0.4, label="window accuracy", color="#9cc3ea")
    if notes:
        mean = float(np.mean(notes))
        ax.axhline(mean, color="#c0392b", linestyle="--", label=f"mean note accuracy {100 * mean:.1f}%")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set(title=title or "Leave-one-library-out", ylabel="accuracy", ylim=(0, 1.05))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_recall_table(
    rows: Mapping[str, Mapping[str, float]], columns: Sequence[str], path: str | Path, title: str
) -> Path:
    """Heatmap of per-family recall (columns) per held-out library (rows); blank where a family is absent."""
    plt = _pyplot()
    names = list(rows)
    matrix = np.array([[rows[r].get(c, np.nan) for c in columns] for r in names], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(0.7 * len(columns) + 3, 0.45 * len(names) + 2))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(columns)):
            if np.isfinite(matrix[i, j]):
                ax.text(j, i, f"{100 * matrix[i, j]:.0f}", ha="center", va="center", fontsize=7)
    ax.set(title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


# -- markdown -----------------------------------------------------------------------------------


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage for tables ('n/a' when there was nothing to measure)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{100 * value:.{digits}f} %"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(path: str | Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write a report: a title and (heading, body) sections. Images are linked relative to the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path


def image_link(png: str | Path, relative_to: str | Path, alt: str) -> str:
    """Markdown image link to `png`, relative to the folder of the report."""
    rel = Path(png).resolve().relative_to(Path(relative_to).resolve()) if Path(png).is_absolute() else Path(png)
    return f"![{alt}]({rel.as_posix()})"


def evaluation_sections(result: Mapping[str, Any], out_dir: str | Path) -> list[tuple[str, str]]:
    """Markdown sections for one evaluation result (the dict `evaluate` writes as JSON)."""
    out_dir = Path(out_dir)
    summary = markdown_table(
        ["", "accuracy", "macro-F1"],
        [
            ["per note", pct(result.get("note_accuracy")), pct(result.get("note_macro_f1"))],
            ["per window", pct(result.get("window_accuracy")), pct(result.get("window_macro_f1"))],
            ["per note, MFCC reversed in time", pct(result.get("reversed", {}).get("note_accuracy")), ""],
        ],
    )
    summary += f"\n\n{result.get('n_notes', 0)} notes, {result.get('n_windows', 0)} windows."
    families = markdown_table(
        ["family", "notes", "precision", "recall", "F1"],
        [
            [name, entry.get("support", 0), pct(entry.get("precision")), pct(entry.get("recall")), pct(entry.get("f1"))]
            for name, entry in result.get("per_family", {}).items()
        ],
    )
    sources = markdown_table(
        ["source", "notes", "note accuracy", "window accuracy"],
        [
            [name, entry.get("n_notes", 0), pct(entry.get("note_accuracy")), pct(entry.get("window_accuracy"))]
            for name, entry in result.get("per_source", {}).items()
        ],
    )
    sections = [("Summary", summary), ("Per family (note level)", families), ("Per source", sources)]
    unknown = result.get("unknown_labels") or {}
    if unknown:
        rows = [
            [name, e["n_notes"], ", ".join(f"{k} {v}" for k, v in e["predicted_as"].items())]
            for name, e in unknown.items()
        ]
        sections.append(
            (
                "Families the model does not know",
                "Excluded from the scores above.\n\n" + markdown_table(["family", "notes", "predicted as"], rows),
            )  # fmt: skip
        )
    images = [f for f in result.get("figures", []) if (out_dir / f).exists()]
    if images:
        sections.append(("Figures", "\n\n".join(image_link(f, out_dir, Path(f).stem) for f in images)))
    return sections


def write_run_report(run_dir: str | Path) -> Path:
    """Training-curve PNG from history.json, plus report.md linking whatever the run folder holds.

    A run folder may already hold confusion-matrix PNGs and metrics.json (from
    the trainer or `evaluate`); they are linked if present.
    """
    run_dir = Path(run_dir)
    sections: list[tuple[str, str]] = []
    history_path = run_dir / "history.json"
    if history_path.exists():
        history = json.loads(history_path.read_text())
        png = plot_history(history, run_dir / "training_curves.png", title=run_dir.name)
        sections.append(("Training curves", image_link(png.name, run_dir, "training curves")))
    config_path = run_dir / "config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text())
        rows = [[k, config[k]] for k in ("preset", "labels", "window_seconds", "epochs", "seed") if k in config]
        sections.insert(0, ("Configuration", markdown_table(["setting", "value"], rows)))
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        scalar = [[k, pct(v) if isinstance(v, float) and 0 <= v <= 1 else v] for k, v in metrics.items()
                  if isinstance(v, (int, float))]  # fmt: skip
        if scalar:
            sections.append(("Metrics", markdown_table(["metric", "value"], scalar)))
    pngs = sorted(p.name for p in run_dir.glob("*.png") if p.name != "training_curves.png")
    if pngs:
        sections.append(("Figures", "\n\n".join(image_link(p, run_dir, Path(p).stem) for p in pngs)))
    preset = json.loads(config_path.read_text()).get("preset") if config_path.exists() else None
    title = f"Training run {run_dir.name}" + (f" ({preset} preset)" if preset else "")
    return write_markdown(run_dir / "report.md", title, sections)
