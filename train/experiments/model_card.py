"""`models/README.md`, written from the JSON that the run, the holdout, the bundle and the benchmark leave behind.

A model card whose figures are typed by hand drifts from the model it describes; this one has no number that
is not read from a file a command wrote (`train`, `experiment holdout`, `inspect --json`, `bench runtime
--json`), and it names those commands next to the figures so anyone can reproduce them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.settings import ENGINE_DEFAULTS_KEY

TARGETS = {
    "soundfont_folds": 0.75,
    "real_folds": 0.70,
    "short_real_notes": 0.60,
    "other_false_events_per_minute": 1.0,
    "other_hops_named_instrument": 0.05,
    "hop_median_ms": 2.0,
    "int8_bytes": 600 * 1024,
}
"""Issue 14's targets, so the card says plainly which are met."""

MAX_COMMITTED_BYTES = 1_000_000
"""The most a bundle committed to models/ may weigh (the developers' guide: each under 1 MB)."""


class CardError(InstrumentAIError, ValueError):
    """An input the card needs is missing or unreadable; one line for the user."""


@dataclass
class CardInputs:
    bundle: dict[str, Any]
    """`inspect --json` of the int8 bundle."""
    run_config: dict[str, Any]
    run_metrics: dict[str, Any]
    holdout: dict[str, Any]
    """holdout.json of the shipped recipe."""
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    """label -> holdout.json of another recipe under the same protocol (the lever table)."""
    bench: dict[str, Any] | None = None
    float_bundle: dict[str, Any] | None = None
    sources: list[Any] = field(default_factory=list)
    """Catalogue entries (train/catalogue.Source) of the corpus' libraries, for the credits."""
    commands: dict[str, str] = field(default_factory=dict)
    """What produced each input (shown beside its figures)."""
    enrol: dict[str, Any] | None = None
    """enrol.json of `instrument-ai experiment enrol` (the personal-head table), if given."""
    levers: dict[str, Any] | None = None
    """levers.json of the lever screen (its tables are read from the holdout folders it names), if given."""


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CardError(f"{path}: no such file ({what})") from None
    except (OSError, ValueError) as exc:
        raise CardError(f"{path}: cannot read {what} ({exc})") from None


def load_inputs(
    bundle: Path,
    run: Path,
    holdout: Path,
    *,
    comparisons: Sequence[tuple[str, Path]] = (),
    bench: Path | None = None,
    catalogue: Path | None = None,
    enrol: Path | None = None,
    levers: Path | None = None,
) -> CardInputs:
    """Read every input; a missing one is a CardError naming the file."""
    from instrument_ai.device.commands.inspect import describe

    try:
        info = describe(Path(bundle))
    except Exception as exc:  # BundleError and I/O: the device refused it
        raise CardError(f"{bundle}: {exc}") from None
    twin = Path(bundle).with_name(f"{Path(bundle).stem}-float{Path(bundle).suffix}")
    float_info = describe(twin) if twin.is_file() else None
    holdout_json = Path(holdout) / "holdout.json" if Path(holdout).is_dir() else Path(holdout)
    inputs = CardInputs(
        bundle=info,
        run_config=_read_json(Path(run) / "config.json", "the run's config"),
        run_metrics=_read_json(Path(run) / "metrics.json", "the run's metrics"),
        holdout=_read_json(holdout_json, "the holdout summary"),
        bench=_read_json(bench, "the benchmark JSON") if bench else None,
        float_bundle=float_info,
        enrol=_read_json(enrol, "the enrolment JSON") if enrol else None,
        levers=_read_json(levers, "the lever list") if levers else None,
    )
    for label, path in comparisons:
        p = Path(path) / "holdout.json" if Path(path).is_dir() else Path(path)
        inputs.comparisons[label] = _read_json(p, f"the holdout summary of {label}")
    libraries = set(inputs.run_config.get("data", {}).get("libraries", []))
    from instrument_ai.train.sources import catalogue as catalogue_module

    try:
        entries = catalogue_module.load(catalogue)
    except Exception:  # the credits are a courtesy; a broken catalogue is reported by `data fetch`
        entries = []
    inputs.sources = [e for e in entries if e.name in libraries]
    return inputs


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def headline(summary: dict[str, Any]) -> dict[str, float | None]:
    """The figures the targets are about, from one holdout.json."""
    by_kind = summary.get("by_kind", {})
    real_folds = [f for f in summary.get("folds", []) if f.get("kind") == "real" and f.get("note_accuracy") is not None]
    short = [f["per_length"]["short"] for f in real_folds if "short" in f.get("per_length", {})]
    other = by_kind.get("other", {})
    return {
        "soundfont": by_kind.get("soundfont", {}).get("mean_note_accuracy"),
        "real": by_kind.get("real", {}).get("mean_note_accuracy"),
        "synth": by_kind.get("synth", {}).get("mean_note_accuracy"),
        "short_real": sum(short) / len(short) if short else None,
        "other_hops": other.get("hops_named_instrument"),
        "other_events": other.get("false_events_per_minute"),
    }


def _hop_median(bench: dict[str, Any] | None) -> float | None:
    if not bench or not bench.get("end_to_end"):
        return None
    first = next((e for e in bench["end_to_end"] if e.get("input_rate") == 16000), bench["end_to_end"][0])
    return first["sounding_hop_ms"]["median"]


def render(inputs: CardInputs) -> str:
    """The whole card as Markdown."""
    meta = inputs.bundle["metadata"]
    name, version = meta.get("name", "default"), meta.get("version", "?")
    labels = meta.get("labels", inputs.run_config.get("labels", []))
    summary = inputs.run_config.get("model", {})
    h = headline(inputs.holdout)
    hop = _hop_median(inputs.bench)
    sizes = inputs.bundle["sizes"]
    cmd = inputs.commands
    out: list[str] = [f"# Model card: {name} {version} (`models/{name}.tflite`)", ""]
    out.append("<!-- Generated by `instrument-ai experiment model-card`; do not edit by hand: every figure below "
               "is read from the JSON files named beside it. -->")  # fmt: skip
    out += ["", "## Headline (leave-one-source-out)", ""]
    rows = [
        ["SoundFont/WebAudioFont folds, mean note accuracy", _pct(h["soundfont"]), "≥ 75 %",
         _met(None if h["soundfont"] is None else h["soundfont"] >= TARGETS["soundfont_folds"])],
        ["real-recording folds, mean note accuracy", _pct(h["real"]), "≥ 70 %",
         _met(None if h["real"] is None else h["real"] >= TARGETS["real_folds"])],
        ["real-recording notes shorter than 0.5 s", _pct(h["short_real"]), "≥ 60 %",
         _met(None if h["short_real"] is None else h["short_real"] >= TARGETS["short_real_notes"])],
        ["held-out `other` sources: hops named an instrument", _pct(h["other_hops"]), "≤ 5 %",
         _met(None if h["other_hops"] is None else h["other_hops"] <= TARGETS["other_hops_named_instrument"])],
        ["held-out `other` sources: false instrument events per minute",
         "n/a" if h["other_events"] is None else f"{h['other_events']:.1f}", "≤ 1",
         _met(None if h["other_events"] is None else h["other_events"] <= TARGETS["other_false_events_per_minute"])],
        ["end-to-end cost per 0.25 s hop (median, this machine)", "n/a" if hop is None else f"{hop:.3f} ms", "< 2 ms",
         _met(None if hop is None else hop < TARGETS["hop_median_ms"])],
        ["int8 bundle size", f"{sizes['file_bytes']:,} bytes", "≤ 600 KB",
         _met(sizes["file_bytes"] <= TARGETS["int8_bytes"])],
    ]  # fmt: skip
    out.append(_table(["figure", "value", "target", ""], rows))
    out += ["", f"Protocol: {cmd.get('holdout', '`instrument-ai experiment holdout`')}; "
            f"settings {json.dumps(inputs.holdout.get('settings', {}).get('overrides', {}))}, groups "
            f"{inputs.holdout.get('settings', {}).get('groups') or 'one training per source'}. A source is only ever "
            "tested by a model that did not train, validate, calibrate or choose its threshold on it."]  # fmt: skip
    held_data = inputs.holdout.get("settings", {}).get("data")
    run_data = inputs.run_config.get("data", {}).get("path")
    if held_data and run_data and Path(held_data).resolve() != Path(run_data).resolve():
        out += ["", f"The holdout ran on `{held_data}`; the shipped model trained on `{run_data}` (the same recipe). "
                "Sources present only in the latter are not in the tables below."]  # fmt: skip
    out += ["", "## Intended use", "",
            "Name the instrument family of one note, heard through a microphone or read from a file, on a Raspberry "
            "Pi or any machine with a TFLite runtime, and say nothing (`other`) for sounds that are no instrument: "
            f"one decision per {inputs.run_config.get('default_hop_seconds', 0.25)} s hop over a "
            f"{inputs.run_config.get('window_seconds', 1.0)} s window of 16 kHz audio. Not for polyphonic mixtures, "
            "instrument identity (only the family), or any decision with consequences for people."]  # fmt: skip
    out += ["", "## The files", ""]
    frontend = meta.get("frontend_spec", {})
    rows = [
        ["file", f"`models/{name}.tflite`, {sizes['file_bytes']:,} bytes (model "
         f"{sizes['model_bytes_without_metadata']:,} + metadata {sizes['metadata_bytes']:,})"],
        ["quantization", f"input {inputs.bundle['quantization']['input']['dtype']}, output "
         f"{inputs.bundle['quantization']['output']['dtype']}"],
        ["labels, in output order", ", ".join(labels)],
        ["frontend", _frontend_line(frontend)],
        ["network", f"{summary.get('params', 0):,} parameters, {summary.get('macs', 0) / 1e6:.2f} M multiply-adds "
         "per window; ops " + ", ".join(inputs.bundle["ops"])],
        ["open-set rejection", _open_set_line(inputs.run_metrics)],
        ["decision rule it carries", _rule_line(meta.get(ENGINE_DEFAULTS_KEY))],
    ]  # fmt: skip
    check = meta.get("conversion_check") or {}
    if check:
        lost = check.get("note_accuracy_loss_points", 0)
        rows.append(["int8 against float (`convert`'s check)",
                     f"note accuracy {_pct(check.get('keras_note_accuracy'))} -> "
                     f"{_pct(check.get('bundle_note_accuracy'))} on {check.get('notes')} validation notes "
                     f"({lost:.2f} points lost, limit {check.get('max_note_loss_points')}); top-1 differs on "
                     f"{_pct(check.get('top1_disagreement'))} of {check.get('windows')} windows"])  # fmt: skip
    if inputs.float_bundle:
        twin_bytes = inputs.float_bundle["sizes"]["file_bytes"]
        rows.append(["float twin", f"`models/{name}-float.tflite`, {twin_bytes:,} bytes"])
    else:
        rows.append(["float twin", _no_twin_line(name, int(summary.get("params", 0)))])
    out.append(_table(["", ""], rows))
    out += ["", "`instrument-ai inspect models/" + f"{name}.tflite` prints all of it and runs the self-test."]
    out += _training_section(inputs)
    out += _holdout_section(inputs.holdout)
    out += _note_sections(inputs.holdout)
    if inputs.comparisons:
        out += _lever_section(inputs)
    out += _screen_section(inputs.levers)
    out += _latency_section(inputs)
    out += enrol_section(inputs.enrol, inputs.commands.get("enrol"))
    out += _credits_section(inputs)
    out += _weaknesses_section(inputs, h)
    return "\n".join(out).rstrip() + "\n"


def _frontend_line(spec: dict[str, Any]) -> str:
    """The frontend, ending in the stage the model takes (an MFCC model and a log-mel one share the first steps)."""
    head = (f"{spec.get('sample_rate')} Hz, {spec.get('window')} window {spec.get('n_fft')}, hop "
            f"{spec.get('hop_length')}, {spec.get('n_mels')} mels "
            f"{spec.get('fmin', 0):g}-{spec.get('fmax', 0):g} Hz")  # fmt: skip
    if spec.get("stage", "mfcc") == "mfcc":
        return f"{head}, {spec.get('n_mfcc')} MFCCs (numpy, `device/frontend.py`)"
    return f"{head}, their log ({spec.get('log')}): the model's input (numpy, `device/frontend.py`)"


def _rule_line(rule: dict[str, Any] | None) -> str:
    """The decision rule the device uses with this bundle unless its user sets one (`convert --decision ...`)."""
    if not rule:
        return "none: the device's fallback, per hop at 0.4"
    how = "one decision per note" if rule.get("decision") == "note" else "per hop"
    parts = [f"{how}, floor {rule.get('min_confidence', 0.4):g}"]
    if rule.get("first_answer_hop", 1) != 1:
        parts.append(f"first answer at hop {rule['first_answer_hop']}")
    if rule.get("chosen_on"):
        parts.append(f"chosen on {rule['chosen_on']}")
    return "; ".join(parts)


def _no_twin_line(name: str, params: int) -> str:
    """Why no float twin ships: the project commits no bundle of 1 MB or more (README, "Models")."""
    if params * 4 < MAX_COMMITTED_BYTES:
        return "none shipped"
    return (f"none shipped: its {params:,} float32 weights alone are {params * 4 / 1e6:.1f} MB, over the "
            f"{MAX_COMMITTED_BYTES / 1e6:.0f} MB the project commits per bundle (`instrument-ai convert RUN --float` "
            f"makes it from the run)")


def _open_set_line(metrics: dict[str, Any]) -> str:
    bundle = metrics.get("open_set", {}).get("bundle") or {}
    if not metrics.get("other_output"):
        return metrics.get("other_note", "no `other` output")
    if not bundle:
        return "`other` output; no calibrated threshold (defaults kept)"
    parts = [f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in bundle.items()
             if not isinstance(v, (dict, list))]  # fmt: skip
    return "`other` output, and " + ", ".join(parts) + " (chosen on validation sources)"


def _training_section(inputs: CardInputs) -> list[str]:
    data = inputs.run_config.get("data", {})
    counts = data.get("counts", {})
    m = inputs.run_metrics
    tc = inputs.run_config.get("train_config", {})
    lines = ["", "## Training data and recipe", ""]
    train, valid = counts.get("train", {}), counts.get("valid", {})
    lines.append(f"{train.get('notes', 0):,} training notes of {train.get('instruments', 0):,} instruments and "
                 f"{valid.get('notes', 0):,} validation notes of {valid.get('instruments', 0):,} other instruments, "
                 f"from {len(data.get('libraries', []))} sources (`{data.get('path', '?')}`).")  # fmt: skip
    fams = train.get("families", {})
    if fams:
        lines += ["", _table(["family", *fams], [["training notes", *fams.values()]])]
    keys = ("preset", "epochs", "real_weight", "label_smoothing", "mixup_alpha", "augment_copies", "onset_fraction",
            "balance", "max_minutes")  # fmt: skip
    ensemble = inputs.run_config.get("ensemble")
    if ensemble:
        lines += ["", "An ensemble (`instrument-ai experiment ensemble`): the members' logits, weighted, averaged in "
                  f"one graph: {_members_line(ensemble)}. All members trained on the same data; the open-set "
                  "temperature and threshold were fitted again on the joined model."]  # fmt: skip
        lines.append(f"{m.get('train_seconds', 0) / 60:.1f} min of training in all on this machine; validation note "
                     f"accuracy {_pct(m.get('note_accuracy'))} on {m.get('n_notes', '?')} notes.")  # fmt: skip
    else:
        lines += ["", "Settings: " + ", ".join(f"{k} {tc.get(k)}" for k in keys if k in tc) + "."]
        lines.append(f"Trained {m.get('epochs_run', '?')} epochs (best {m.get('best_epoch', '?')}, "
                     f"{m.get('stopped', '')}) in {m.get('train_seconds', 0) / 60:.1f} min of training on this "
                     f"machine; validation note accuracy {_pct(m.get('note_accuracy'))}.")  # fmt: skip
    if inputs.commands.get("train"):
        lines += ["", "```", inputs.commands["train"], inputs.commands.get("convert", ""), "```"]
    return lines


def _members_line(ensemble: dict[str, Any]) -> str:
    """Each member's run, preset and weight; a member that is itself an ensemble is opened when its folder is here."""
    parts = []
    for path, preset, weight in zip(ensemble.get("members", []), ensemble.get("presets", []),
                                    ensemble.get("weights", []), strict=False):  # fmt: skip
        inner = ""
        config = Path(path) / "config.json"
        if preset == "ensemble" and config.is_file():
            nested = json.loads(config.read_text()).get("ensemble") or {}
            inner = f" ({_members_line(nested)})"
        parts.append(f"`{Path(path).name}` ({preset}, weight {float(weight):.3g}){inner}")
    return ", ".join(parts)


def _holdout_section(summary: dict[str, Any]) -> list[str]:
    folds = summary.get("folds", [])
    lines = ["", "## Held-out sources, one by one", ""]
    inst = [f for f in folds if f.get("note_accuracy") is not None]
    rows = []
    for f in sorted(inst, key=lambda f: (f.get("kind", ""), f["name"])):
        pl = f.get("per_length", {})
        rows.append([f["name"], f.get("kind", ""), f["n_notes"], _pct(f["note_accuracy"]),
                     *(_pct(pl.get(k)) for k in ("short", "medium", "long"))])  # fmt: skip
    lines.append(_table(["held-out source", "kind", "notes", "note accuracy", "< 0.5 s", "0.5-1.5 s", "longer"], rows))
    others = [f for f in folds if f.get("kind") == "other" and f.get("other")]
    if others:
        lines += ["", "Held-out `other` sources (no instrument in them):", ""]
        rows = [[f["name"], f["other"]["hops"], _pct(f["other"]["hops_named_instrument"]),
                 f"{f['other']['false_events_per_minute']:.1f}"] for f in others]  # fmt: skip
        lines.append(_table(["source", "hops", "hops named an instrument", "false events / min"], rows))
    recall = summary.get("mean_family_recall", {})
    if recall:
        lines += ["", "Mean recall per family over the held-out instrument sources:", "",
                  _table(list(recall), [[_pct(v) for v in recall.values()]])]  # fmt: skip
    lengths = summary.get("mean_per_length", {})
    if lengths:
        lines += ["", "Mean note accuracy per note length: " + ", ".join(f"{k} {_pct(v)}" for k, v in lengths.items())]
    return lines


def _note_sections(summary: dict[str, Any]) -> list[str]:
    """Issue 23's sections, as holdout.md has them: phrases through the daemon, instrument notes lost to `other`,
    accuracy by four note lengths (none for a holdout.json written before them)."""
    from instrument_ai.train.experiments.holdout import note_sections

    lines: list[str] = []
    for title, body in note_sections({"folds": [], **summary}):
        lines += ["", f"## {title}", "", body]
    return lines


def _lever_section(inputs: CardInputs) -> list[str]:
    rows = []
    for label, summary in [("this model's recipe", inputs.holdout), *inputs.comparisons.items()]:
        h = headline(summary)
        rows.append([label, _pct(h["soundfont"]), _pct(h["real"]), _pct(h["short_real"]), _pct(h["other_hops"]),
                     "n/a" if h["other_events"] is None else f"{h['other_events']:.1f}"])  # fmt: skip
    return ["", "## Recipes compared under the same protocol", "",
            _table(["recipe", "SoundFont folds", "real folds", "real < 0.5 s", "other: hops named",
                    "other: false events/min"], rows)]  # fmt: skip


def _screen_section(document: dict[str, Any] | None) -> list[str]:
    """The lever screen (docs/experiments/levers.md): each lever against the 0.4.0 recipe on the cheap protocol,
    then the best combinations on the 4-group one (nothing without the lever list)."""
    if not document:
        return []
    from instrument_ai.train.experiments.levers import render, render_confirmation

    lines = ["", "## Lever screen (docs/experiments/levers.md)", "",
             "One change to the 0.4.0 recipe per row, 2 groups of held-out sources, 24 epochs per group; "
             "deltas in points against the first row.", "", render(document.get("levers", []))]  # fmt: skip
    if document.get("confirm"):
        lines += ["", "The best combinations on the 4-group protocol, against the 0.4.0 recipe on it:", "",
                  render_confirmation(document["confirm"])]  # fmt: skip
    return lines


def _latency_section(inputs: CardInputs) -> list[str]:
    bench = inputs.bench
    if not bench:
        return []
    lines = ["", "## Cost on this machine (`instrument-ai bench runtime --json`)", ""]
    rows = [[e["quantization"], e["threads"], f"{e['predict_ms']['median']:.3f} ms",
             f"{e['invoke_ms']['median']:.3f} ms"] for e in bench.get("interpreter", [])]  # fmt: skip
    if rows:
        lines.append(_table(["bundle", "threads", "predict median", "invoke median"], rows))
    rows = [[f"{e['input_rate']} Hz, {e['block_ms']:g} ms blocks", f"{e['sounding_hop_ms']['median']:.3f} ms",
             f"{e['all_hop_ms']['median']:.3f} ms", f"{e['real_time_factor']:.4f}"]
            for e in bench.get("end_to_end", [])]  # fmt: skip
    if rows:
        lines += ["", _table(["end to end per hop", "sounding median", "all hops median", "real-time factor"], rows)]
    process = bench.get("process") or {}
    if "peak_rss_mb" in process:
        lines += ["", f"`run --source demo`: peak RSS {process['peak_rss_mb']:.0f} MB, first hop after "
                  f"{process['process_to_first_hop_s']:.2f} s."]  # fmt: skip
    latency = bench.get("decision_latency")
    if latency:
        from instrument_ai.device.bench_runtime import note_latency_words

        named = "; ".join(note_latency_words(r) for r in latency["notes"])
        lines += ["", f"Demo: {latency['named_correctly']} of {len(latency['notes'])} notes named ({named})."]
    return lines


def enrol_section(enrol: dict[str, Any] | None, command: str | None = None) -> list[str]:
    """"Teach it your instrument": `experiment enrol`'s table (nothing without its JSON)."""
    if not enrol:
        return []
    from instrument_ai.train.experiments.enrol import markdown_table

    how = command or "`instrument-ai experiment enrol`"
    return ["", "## Enrolled notes on held-out sources (`instrument-ai enrol`)", "",
            f"{how}: K notes of each instrument family of a source this model never heard are enrolled "
            "(`device/personal.py`), the source's other notes scored before and after.", "",
            markdown_table(enrol)]  # fmt: skip


def _credits_section(inputs: CardInputs) -> list[str]:
    libraries = inputs.run_config.get("data", {}).get("libraries", [])
    catalogued = {s.name for s in inputs.sources}
    lines = ["", "## Sources and licences", "",
             "Recorded and sampled sources (catalogue `train/sources/sources.toml`, pinned commits; "
             "docs/sources.md):", ""]
    rows = [[s.name, s.repo, s.licence] for s in sorted(inputs.sources, key=lambda s: s.name)]
    lines.append(_table(["source", "repository", "licence"], rows) if rows else "(none)")
    rest = [lib for lib in libraries if lib not in catalogued]
    if rest:
        lines += ["", "SoundFont / WebAudioFont libraries and generated sounds (README, \"Data\"): " + ", ".join(rest)]
    return lines


def _weaknesses_section(inputs: CardInputs, h: dict[str, float | None]) -> list[str]:
    folds = [f for f in inputs.holdout.get("folds", []) if f.get("note_accuracy") is not None]
    worst = sorted(folds, key=lambda f: f["note_accuracy"])[:3]
    recall = inputs.holdout.get("mean_family_recall", {})
    weak = sorted(recall.items(), key=lambda kv: kv[1])[:3]
    lines = ["", "## Known weaknesses", ""]
    if worst:
        lines.append("- Weakest held-out sources: " + ", ".join(f"{f['name']} ({_pct(f['note_accuracy'])})"
                                                               for f in worst) + ".")  # fmt: skip
    if weak:
        lines.append("- Weakest families: " + ", ".join(f"{k} ({_pct(v)})" for k, v in weak) + ".")
    if h["other_events"] is not None and h["other_events"] > TARGETS["other_false_events_per_minute"]:
        lines.append(f"- In a room it still names an instrument {h['other_events']:.1f} times a minute on held-out "
                     "non-instrument sounds.")  # fmt: skip
    lines.append("- Trained on SoundFont renders and a few thousand real notes of ~20 public sources: real rooms, "
                 "microphones and playing styles beyond them are not covered.")  # fmt: skip
    return lines


def write_card(inputs: CardInputs, out: Path) -> Path:
    """Write the card atomically (a half-written card would replace a good one)."""
    text = render(inputs)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
