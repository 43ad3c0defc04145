"""What a corpus is made of: notes per family x kind x library, sounding lengths, estimated-pitch share.

Read from the labels only (examples.json, instruments.json), so it is quick on any
corpus; `instrument-ai data report FOLDER [--png FILE]` prints it as rich tables
and draws the sounding-length histograms per kind as a matplotlib PNG.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

RECORDED_KINDS = ("notes", "sfz")
"""Kinds whose notes are recordings (one note per file, SFZ samples), as opposed to renders of SoundFonts."""
HIST_EDGES = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.01)
"""Sounding-length bins in seconds (short real notes, 0.25-1 s, are a case of their own)."""


def composition(folder: str | Path) -> dict[str, Any]:
    """Counts of a corpus folder; instruments without an instruments.json row count as library `nsynth`."""
    from instrument_ai.train.corpus.nsynth import iter_examples_json

    folder = Path(folder)
    path = folder / "instruments.json"
    rows: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    cells: Counter[tuple[str, str, str]] = Counter()
    families: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    libraries: dict[str, dict[str, Any]] = {}
    sounding: dict[str, list[float]] = defaultdict(list)
    estimated: Counter[str] = Counter()
    for row in rows.values():
        estimated[row.get("kind", "soundfont")] += int(row.get("pitch_estimated_notes", 0))
    for _key, entry in iter_examples_json(folder):
        row = rows.get(entry["instrument_str"], {})
        library = row.get("library", "nsynth")
        kind = row.get("kind", "soundfont" if row else "nsynth")
        family = entry["instrument_family_str"]
        cells[(family, kind, library)] += 1
        families[family] += 1
        kinds[kind] += 1
        lib = libraries.setdefault(library, {"kind": kind, "lineage": row.get("lineage", library), "notes": 0})
        lib["notes"] += 1
        if entry.get("sounding_seconds") is not None:
            sounding[kind].append(float(entry["sounding_seconds"]))
    histogram = {}
    for kind, values in sounding.items():
        counts = [0] * (len(HIST_EDGES) - 1)
        for v in values:
            for i in range(len(counts)):
                if HIST_EDGES[i] <= v < HIST_EDGES[i + 1]:
                    counts[i] += 1
                    break
        histogram[kind] = counts
    notes = sum(families.values())
    real = [c for c in cells.items() if c[0][1] in RECORDED_KINDS]
    instrument_real = [(key, n) for key, n in real if key[0] != "other"]
    real_lineages = {libraries[lib]["lineage"] for (_, _, lib), _ in instrument_real}
    real_families: Counter[str] = Counter()
    for (family, _, _), n in instrument_real:
        real_families[family] += n
    other_sources = {lib for (family, _, lib), _ in cells.items() if family == "other"}
    return {
        "folder": str(folder),
        "notes": notes,
        "families": dict(families.most_common()),
        "kinds": dict(kinds.most_common()),
        "libraries": libraries,
        "cells": [{"family": f, "kind": k, "library": lib, "notes": n} for (f, k, lib), n in sorted(cells.items())],
        "sounding_edges": list(HIST_EDGES),
        "sounding_histogram": histogram,
        "sounding_recorded": {k: len(v) for k, v in sounding.items()},
        "pitch_estimated": dict(estimated),
        "pitch_estimated_share": (sum(estimated.values()) / notes) if notes else 0.0,
        "recorded_instrument_notes": sum(n for _, n in instrument_real),
        "recorded_instrument_sources": len({lib for (_, _, lib), _ in instrument_real}),
        "recorded_instrument_lineages": len(real_lineages),
        "recorded_instrument_families": dict(real_families.most_common()),
        "other_clips": families.get("other", 0),
        "other_sources": len(other_sources),
    }


def print_composition(counts: dict[str, Any]) -> None:
    """Family x kind table, then libraries (kind, lineage, notes, families), then the sounding-length bins."""
    from rich.console import Console
    from rich.table import Table

    kinds = list(counts["kinds"])
    table = Table(title=f"{counts['folder']}: {counts['notes']} notes per family and kind", show_footer=True)
    table.add_column("family", footer="total")
    for kind in kinds:
        table.add_column(kind, justify="right", footer=str(counts["kinds"][kind]))
    table.add_column("total", justify="right", footer=str(counts["notes"]))
    per: Counter[tuple[str, str]] = Counter()
    fam_libs: dict[str, set[str]] = defaultdict(set)
    lib_fams: dict[str, Counter[str]] = defaultdict(Counter)
    for cell in counts["cells"]:
        per[(cell["family"], cell["kind"])] += cell["notes"]
        fam_libs[cell["family"]].add(cell["library"])
        lib_fams[cell["library"]][cell["family"]] += cell["notes"]
    for family, total in counts["families"].items():
        table.add_row(family, *(str(per.get((family, k), "")) for k in kinds), str(total))
    libs = Table(title="per library (source)")
    for name in ("library", "kind", "lineage", "notes", "families"):
        libs.add_column(name, justify="right" if name == "notes" else "left")
    for name, row in sorted(counts["libraries"].items(), key=lambda kv: (kv[1]["kind"], kv[0])):
        fams = ", ".join(f"{f} {n}" for f, n in lib_fams[name].most_common(6))
        libs.add_row(name, row["kind"], row["lineage"], str(row["notes"]), fams)
    console = Console(width=max(Console().width, 160))
    console.print(table)
    console.print(libs)
    edges = counts["sounding_edges"]
    if counts["sounding_histogram"]:
        hist = Table(title="sounding seconds (notes that record it)")
        hist.add_column("kind")
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            hist.add_column(f"{lo:g}-{min(hi, 4):g}", justify="right")
        for kind, bins in counts["sounding_histogram"].items():
            hist.add_row(kind, *(str(b) for b in bins))
        console.print(hist)
    console.print(f"estimated pitch: {counts['pitch_estimated_share']:.1%} of notes {counts['pitch_estimated']}")
    families = ", ".join(f"{k} {v}" for k, v in counts["recorded_instrument_families"].items())
    console.print(f"recorded instrument notes: {counts['recorded_instrument_notes']} from "
                  f"{counts['recorded_instrument_sources']} sources ({counts['recorded_instrument_lineages']} "
                  f"independent lineages): {families}")  # fmt: skip
    console.print(f"other clips: {counts['other_clips']} from {counts['other_sources']} sources")


def plot_composition(counts: dict[str, Any], path: str | Path) -> Path:
    """A PNG: notes per family stacked by kind (left), sounding-length histogram per kind (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    families = list(counts["families"])
    kinds = list(counts["kinds"])
    bottom = np.zeros(len(families))
    for kind in kinds:
        values = np.array([sum(c["notes"] for c in counts["cells"] if c["family"] == f and c["kind"] == kind)
                           for f in families], dtype=float)  # fmt: skip
        ax1.bar(families, values, bottom=bottom, label=kind)
        bottom += values
    ax1.set_ylabel("notes")
    ax1.set_title(f"{counts['notes']} notes per family and kind")
    ax1.tick_params(axis="x", rotation=45)
    ax1.legend()
    edges = counts["sounding_edges"]
    labels = [f"{lo:g}-{min(hi, 4):g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    width = 0.8 / max(1, len(counts["sounding_histogram"]))
    for i, (kind, bins) in enumerate(counts["sounding_histogram"].items()):
        ax2.bar(np.arange(len(bins)) + i * width, bins, width=width, label=kind)
    ax2.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
    ax2.set_xlabel("sounding seconds")
    ax2.set_title("sounding length per kind")
    if counts["sounding_histogram"]:
        ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
