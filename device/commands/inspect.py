"""`instrument-ai inspect BUNDLE`: what a bundle holds, whether this device accepts it, and how fast it loads.

The shell prints `bundle_report.describe`, which runs the same `bundle.load` (digests, fields, interpreter,
golden self-test) a device runs before it swaps a model in, so "inspect says ok" means "the daemon will
accept it". Device-side: numpy, flatbuffers and the interpreter only.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from instrument_ai.device import bundle as bundle_module
from instrument_ai.device.bundle_report import describe
from instrument_ai.device.commands.options import threads_option, trusted_key_option
from instrument_ai.device.settings import FALLBACK_DECISION, FALLBACK_MIN_CONFIDENCE, waiting_words

__all__ = ["describe", "inspect_bundle"]


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@threads_option()
@trusted_key_option("Also require a signature by this ed25519 public key (hex or file).")
def inspect_bundle(path: Path, as_json: bool, threads: int, trusted_key: str | None) -> None:
    """Print the metadata, operators, sizes and self-test result of the bundle PATH."""
    try:
        info = describe(path, num_threads=threads, trusted_key=trusted_key)
    except bundle_module.BundleError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise click.ClickException(f"{path}: refused: {reason}") from None
    if as_json:
        click.echo(json.dumps(info))
        return
    meta = info["metadata"]
    sizes = info["sizes"]
    spec = meta["frontend_spec"]
    click.echo(
        f"{info['path']}: '{meta['name']}' version {meta['version']} ({meta['quantization']}), {meta['created']}"
    )
    click.echo(f"  labels ({len(meta['labels'])}): {', '.join(meta['labels'])}")
    click.echo(
        f"  frontend: {spec['sample_rate']} Hz, win {spec['win_length']} / hop {spec['hop_length']} / n_fft "
        f"{spec['n_fft']}, {spec['n_mels']} {spec['mel_scale']} mels {spec['fmin']:g}-{spec['fmax']:g} Hz, "
        + (f"{spec['n_mfcc']} MFCCs" if spec.get("stage", "mfcc") == "mfcc" else "log-mel bands (no DCT)")
    )
    click.echo(
        f"  window: {meta['window_frames']} frames = {meta['window_samples']} samples; default hop "
        f"{meta['default_hop_seconds']} s"
    )
    rule = meta.get("engine_defaults")
    if isinstance(rule, dict):
        click.echo(
            f"  decision: {rule.get('decision', FALLBACK_DECISION)}, floor "
            f"{rule.get('min_confidence', FALLBACK_MIN_CONFIDENCE)}"
            + waiting_words(rule)
            + " unless `run` is told otherwise"
            + (f" (chosen on {rule['chosen_on']})" if "chosen_on" in rule else "")
        )
    else:
        click.echo(f"  decision: none (the fallback: {FALLBACK_DECISION}, floor {FALLBACK_MIN_CONFIDENCE})")
    for side in ("input", "output"):
        q = info["quantization"][side]
        shape = meta.get(side, {}).get("shape")
        click.echo(f"  {side}: {shape} {q['dtype']} scale {q['scale']:.6g} zero point {q['zero_point']}")
    embedding = meta.get("embedding")
    if isinstance(embedding, dict):
        click.echo(
            f"  embedding: output {embedding['output']}, {embedding['size']} {embedding['dtype']} values scale "
            f"{embedding['scale']:.6g} zero point {embedding['zero_point']} ({embedding['name']}); in the self-test"
        )
    else:
        click.echo("  embedding: none (enrol uses the MFCC note descriptor; `convert --add-embedding` adds one)")
    click.echo(f"  ops: {', '.join(f'{op} x{n}' for op, n in info['ops'].items())}; {info['tensors']} tensors")
    click.echo(
        f"  size: {sizes['file_bytes']} bytes ({sizes['model_bytes_without_metadata']} model + "
        f"{sizes['metadata_bytes']} metadata)"
    )
    training = meta.get("training", {})
    data = training.get("data", {}) if isinstance(training.get("data"), dict) else {}
    click.echo(
        f"  training: preset {training.get('preset', '?')}, run {training.get('run', '?')}, libraries "
        f"{', '.join(map(str, data.get('libraries', []))) or '?'}"
    )
    if meta.get("metrics"):
        click.echo(f"  metrics: {_metrics_line(meta['metrics'])}")
    check = meta.get("conversion_check")
    if check:
        click.echo(
            f"  vs Keras: top-1 agreement {100 * (1 - check['top1_disagreement']):.2f} % of {check['windows']} windows,"
            f" note accuracy loss {check['note_accuracy_loss_points']:.2f} points"
        )
    integrity = meta["integrity"]
    signed = "signed (ed25519)" if "signature" in meta else "unsigned"
    click.echo(f"  model sha256 {integrity['model_sha256']}; {signed}")
    test = info["self_test"]
    click.echo(
        f"  self-test: {test['vectors']} golden vectors passed on {info['runtime']} (max error {test['max_error']:g}, "
        f"tolerance {test['tolerance']:g}); load + self-test {info['load_ms']:.1f} ms"
    )


def _metrics_line(metrics: object, limit: int = 300) -> str:
    """The metrics as JSON, shortened by whole top-level keys (never cut mid-JSON); --json shows them all."""
    if not isinstance(metrics, dict):
        return json.dumps(metrics)
    text = json.dumps(metrics)
    if len(text) <= limit:
        return text
    kept: dict[str, object] = {}
    for key, value in metrics.items():
        if len(json.dumps({**kept, key: value})) > limit:
            continue
        kept[key] = value
    return f"{json.dumps(kept)} (+{len(metrics) - len(kept)} more; --json for all)"
