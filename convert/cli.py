"""`instrument-ai convert RUNDIR --out models/NAME.tflite`: the click shell of `converter.convert_run`.

Parses the options, loads the signing key, converts, prints the summary. Every refusal is a one-line
InstrumentAIError (RunFolderError, ConvertError, SigningError) that `cli.main` prints with its exit status.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from instrument_ai.device.settings import (
    DECISIONS,
    FALLBACK_DECISION,
    FALLBACK_FIRST_ANSWER_HOP,
    FALLBACK_MIN_CONFIDENCE,
    waiting_words,
)


@click.command()
@click.argument("rundir", required=False, type=click.Path(path_type=Path))
@click.option(
    "--add-embedding",
    "add_embedding",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Instead of a run: copy this existing bundle to --out with the embedding output added (re-signed with "
    "--sign, else unsigned).",
)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Bundle to write.")
@click.option("--float", "as_float", is_flag=True, help="Keep float32 weights and I/O (the fallback, ~4x larger).")
@click.option("--name", help="Model name in the metadata [default: the --out file name].")
@click.option("--version", "version", help="Model version [default: UTC time, YYYYMMDD.HHMMSS].")
@click.option("--golden", default=3, show_default=True, type=click.IntRange(1, 20), help="Golden test vectors.")
@click.option(
    "--calibration-windows", default=500, show_default=True, type=click.IntRange(1), help="Representative windows."
)
@click.option(
    "--max-disagreement",
    default=0.02,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Refuse when top-1 differs from Keras on more than this fraction of validation windows.",
)
@click.option(
    "--max-note-loss",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 100),
    help="Refuse when validation note accuracy drops by more than this many points.",
)
@click.option("--sign", "sign_key", type=click.Path(dir_okay=False, path_type=Path), help="Sign with this private key.")
@click.option(
    "--background",
    "background",
    type=click.Path(file_okay=False, path_type=Path),
    help="Corpus folder: ship a bank of its notes (described by the new bundle) that personal heads keep apart from.",
)
@click.option(
    "--background-notes",
    default=10,
    show_default=True,
    type=click.IntRange(1, 50),
    help="Notes per family in the --background bank.",
)
@click.option(
    "--decision",
    type=click.Choice(DECISIONS),
    default=None,
    help="The decision rule the device uses with this bundle unless told otherwise (`run --decision`) "
    f"[none: the device's fallback, {FALLBACK_DECISION}].",
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="The bundle's floor (`run --min-confidence`), chosen on held-out phrases "
    f"[none: {FALLBACK_MIN_CONFIDENCE:g}].",
)
@click.option(
    "--first-answer-hop",
    type=click.IntRange(1, 8),
    default=None,
    help="With --decision note: a note names a family from its Nth hop on (`run --first-answer-hop`) "
    f"[none: {FALLBACK_FIRST_ANSWER_HOP}].",
)
@click.option(
    "--decided-on",
    default=None,
    help="Where --decision/--min-confidence/--first-answer-hop were chosen (kept in the bundle).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def convert(
    rundir: Path | None,
    add_embedding: Path | None,
    out: Path,
    as_float: bool,
    name: str | None,
    version: str | None,
    golden: int,
    calibration_windows: int,
    max_disagreement: float,
    max_note_loss: float,
    sign_key: Path | None,
    background: Path | None,
    background_notes: int,
    decision: str | None,
    min_confidence: float | None,
    first_answer_hop: int | None,
    decided_on: str | None,
    as_json: bool,
) -> None:
    """Convert the training run RUNDIR into one int8 TFLite bundle (checked against Keras before it is written).

    The bundle's model has two outputs: the probabilities and the embedding (the penultimate activations, which
    `instrument-ai enrol` learns on). `--add-embedding BUNDLE` gives an existing bundle that second output.
    """
    from instrument_ai.convert.converter import convert_run

    if (rundir is None) == (add_embedding is None):
        raise click.UsageError("give a RUNDIR or --add-embedding BUNDLE (one of them)")
    signer = None
    if sign_key is not None:
        from instrument_ai.convert import signing

        signing.load_private_key(sign_key)

        def signer(message: bytes) -> tuple[bytes, bytes]:
            signature, public = signing.sign(sign_key, message)
            return public, signature

    rule = {"decision": decision, "min_confidence": min_confidence, "first_answer_hop": first_answer_hop,
            "chosen_on": decided_on}  # fmt: skip
    engine_defaults = {key: value for key, value in rule.items() if value is not None}
    if set(engine_defaults) == {"chosen_on"}:
        raise click.UsageError("--decided-on says where --decision/--min-confidence/--first-answer-hop were chosen: "
                               "give one of them")  # fmt: skip
    if add_embedding is not None:
        if engine_defaults:
            raise click.UsageError("--decision/--min-confidence/--first-answer-hop/--decided-on apply to a RUNDIR "
                                   "conversion")  # fmt: skip
        _add_embedding(add_embedding, out, signer, as_json, background, background_notes)
        return
    assert rundir is not None
    bundle, report, run = convert_run(
        rundir,
        out,
        int8=not as_float,
        name=name,
        version=version,
        golden=golden,
        calibration_windows=calibration_windows,
        max_disagreement=max_disagreement,
        max_note_loss_points=max_note_loss,
        signer=signer,
        background=background,
        background_notes=background_notes,
        engine_defaults=engine_defaults,
    )
    for warning in run.warnings:
        click.echo(f"warning: {warning}", err=True)
    payload = bundle.model.buffers[bundle.model.metadata_buffer("instrument_ai")][1]
    summary = {
        "bundle": str(out),
        "name": bundle.name,
        "version": bundle.version,
        "quantization": bundle.metadata["quantization"],
        "file_bytes": bundle.file_bytes,
        "metadata_bytes": payload,
        "labels": bundle.labels,
        "runtime": bundle.runtime,
        "self_test": bundle.self_test,
        "signed": "signature" in bundle.metadata,
        "engine_defaults": bundle.engine_defaults,
        "conversion_check": report.to_dict(),
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"{out}: {summary['quantization']} bundle '{bundle.name}' {bundle.version}, {bundle.file_bytes / 1024:.1f} KB "
        f"(model {(bundle.file_bytes - payload) / 1024:.1f} KB + metadata {payload / 1024:.1f} KB)"
        + (", signed" if summary["signed"] else "")
    )
    vectors = bundle.self_test["vectors"]
    click.echo(f"  {len(bundle.labels)} labels; self-test {vectors} golden vectors passed on {bundle.runtime}")
    if bundle.engine_defaults:
        rule = bundle.engine_defaults
        click.echo(
            f"  the device decides {rule.get('decision', FALLBACK_DECISION)} at floor "
            f"{rule.get('min_confidence', FALLBACK_MIN_CONFIDENCE):g}"
            + waiting_words(rule)
            + " unless told otherwise"
            + (f" (chosen on {rule['chosen_on']})" if "chosen_on" in rule else "")
        )
    click.echo(
        f"  vs Keras on {report.windows} validation windows ({report.notes} notes): top-1 agreement "
        f"{100 * (1 - report.top1_disagreement):.2f} %, note accuracy {100 * report.keras_note_accuracy:.2f} % -> "
        f"{100 * report.bundle_note_accuracy:.2f} % ({0.0 - report.note_accuracy_loss_points + 0.0:+.2f} points)"
    )


def _add_embedding(
    source: Path, out: Path, signer: object, as_json: bool, background: Path | None, background_notes: int
) -> None:
    """`convert --add-embedding`: write the bundle with its embedding output and say what became of a signature."""
    from instrument_ai.convert.embedding import add_embedding_to_bundle

    if source.resolve() == out.resolve():
        raise click.UsageError("--out must differ from the bundle given to --add-embedding (it is kept as it was)")
    bundle, was_signed = add_embedding_to_bundle(
        source,
        out,
        signer=signer,
        background=background,
        background_notes=background_notes,  # type: ignore[arg-type]
    )
    bank = bundle.metadata.get("personal_background")
    signed = "signature" in bundle.metadata
    embedding = bundle.metadata["embedding"]
    summary = {
        "bundle": str(out),
        "from": str(source),
        "name": bundle.name,
        "version": bundle.version,
        "embedding": embedding,
        "file_bytes": bundle.file_bytes,
        "self_test": bundle.self_test,
        "signed": signed,
        "was_signed": was_signed,
        "background_points": len(bank["labels"]) if bank else 0,
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"{out}: '{bundle.name}' {bundle.version} with an embedding output ({embedding['size']} {embedding['dtype']} "
        f"values, {embedding['name']}); self-test {bundle.self_test['vectors'] if bundle.self_test else 0} golden "
        f"vectors passed, probabilities unchanged"
    )
    if bank:
        click.echo(f"  background: {len(bank['labels'])} known sounds from {bank['corpus']} for personal heads")
    if was_signed and not signed:
        click.echo("  the signature of the original could not be kept (the model changed): unsigned; use --sign KEY")
