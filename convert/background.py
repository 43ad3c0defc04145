"""The background bank: a few training-like notes per family, described as the personal head describes a hop and
shipped in the bundle's metadata, so a head keeps apart the sounds the general model already knows.

A hop that lies nearer to a known sound of another family than to the enrolled notes is not pulled toward the
enrolled family (`personal.PersonalHead.match`). The bank is model-specific (embeddings and outputs of *this*
network), so it is built through the bundle itself, from a corpus folder (NSynth layout: examples.json,
instruments.json, audio/NAME.wav): `N` seeded notes per label, each heard by the engine exactly as `enrol` hears
a note (`personal.extract_notes`), reduced to one point, the mean of its first hops' descriptors and outputs.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device import personal
from instrument_ai.device.errors import InstrumentAIError

DEFAULT_PER_FAMILY = 10
"""Notes per label: 120 points, about 40 kB of metadata with a 128-value embedding."""


class BackgroundError(InstrumentAIError):
    """A corpus the bank cannot be built from; one line (exit 2)."""

    exit_code = 2


def choose_notes(corpus: Path, labels: list[str], per_family: int, seed: int = 0) -> list[tuple[str, str]]:
    """(note name, family) of `per_family` seeded notes per label of the corpus (fewer when it has fewer)."""
    try:
        examples = json.loads((corpus / "examples.json").read_text())
    except FileNotFoundError:
        raise BackgroundError(f"{corpus}: not a corpus folder (examples.json is missing)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BackgroundError(f"{corpus}: unreadable examples.json ({exc})") from None
    by_family: dict[str, list[str]] = {}
    for name, row in sorted(examples.items()):
        family = str(row.get("instrument_family_str", ""))
        if family in labels:
            by_family.setdefault(family, []).append(name)
    if not by_family:
        raise BackgroundError(f"{corpus}: no note of any of the model's labels ({', '.join(labels)})")
    rng = random.Random(f"background:{seed}")
    chosen = []
    for family in labels:
        names = by_family.get(family, [])
        chosen += [(name, family) for name in rng.sample(names, min(per_family, len(names)))]
    return chosen


def build_background(bundle: Any, corpus: Path, per_family: int = DEFAULT_PER_FAMILY, seed: int = 0) -> dict[str, Any]:
    """The ``personal_background`` metadata field for `bundle` (its own descriptor kind) from `corpus`."""
    import soundfile

    kind = personal.descriptor_kind(bundle)
    width = personal.descriptor_width(kind, bundle)
    owners, points, outputs = [], [], []
    for name, family in choose_notes(corpus, list(bundle.labels), per_family, seed):
        try:
            audio, rate = soundfile.read(str(corpus / "audio" / f"{name}.wav"), dtype="float32", always_2d=True)
            notes = personal.extract_notes(audio, rate, bundle, family, keep_clip=False)
        except (OSError, RuntimeError, personal.NoNoteError):
            continue  # unreadable or silent: the bank is a sample, one note less does not matter
        note = notes[0]
        assert note.probs is not None
        owners.append(family)
        points.append(note.descriptors.mean(axis=0))
        outputs.append(note.probs.mean(axis=0))
    if not owners:
        raise BackgroundError(f"{corpus}: none of the chosen notes could be heard")
    descriptors = np.asarray(points, dtype="<f2")
    probs = np.clip(np.rint(np.asarray(outputs) * 255.0), 0, 255).astype(np.uint8)
    return {
        "descriptor": kind,
        "width": width,
        "labels": owners,
        "descriptors_f16": base64.b64encode(descriptors.tobytes()).decode("ascii"),
        "probs_u8": base64.b64encode(probs.tobytes()).decode("ascii"),
        "per_family": per_family,
        "corpus": corpus.resolve().name,
        "seed": seed,
    }


def with_background(data: bytes, corpus: Path, per_family: int, *, signer: Any = None, name: str = "<bundle>") -> bytes:
    """Bundle bytes with the bank of `corpus` in their metadata (digests refilled; signed again with `signer`)."""
    from instrument_ai.convert.bundle_writer import attach_metadata
    from instrument_ai.device.bundle import load_bytes, parse_bundle

    bundle = load_bytes(data, name)
    metadata, _ = parse_bundle(data, name)
    meta = {k: v for k, v in metadata.items() if k not in ("integrity", "signature")}
    meta[personal.BACKGROUND_FIELD] = build_background(bundle, corpus, per_family)
    out = attach_metadata(data, meta, signer=signer)
    load_bytes(out, name)  # the device reads it back, self-test and all
    return out
