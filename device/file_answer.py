"""One answer for a whole file that agrees with its own timeline.

Averaging the raw probabilities of every sounding hop can name a family the
timeline never shows (a keyboard note whose attack looks like guitar averaged
to "unknown (guitar 0.39)" while every later hop said keyboard). The file's
answer is therefore the family *held longest* in the timeline, with its share
of the sounding hops; the mean probabilities stay as the top-k detail.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from instrument_ai.device.engine import Event
from instrument_ai.device.labels import SILENCE, UNKNOWN


def file_answer(hops: list[Event], labels: list[str], top_k: int) -> dict[str, Any]:
    """label, confidence (mean probability of that label), share (of sounding hops) and top_k for a file."""
    sounding = [e for e in hops if e.probs is not None]
    if not sounding:
        label = UNKNOWN if any(e.label == UNKNOWN for e in hops) else SILENCE  # too short to name, or silent
        return {"label": label, "confidence": 0.0, "share": 0.0, "top_k": []}
    mean = np.mean([e.probs for e in sounding if e.probs is not None], axis=0)  # all of them (typed for mypy)
    order = np.argsort(-mean, kind="stable")[:top_k]
    top = [{"label": labels[i], "p": round(float(mean[i]), 4)} for i in order]
    held = Counter(e.label for e in sounding if e.label not in (SILENCE, UNKNOWN))
    if not held:
        return {"label": UNKNOWN, "confidence": top[0]["p"], "share": 0.0, "top_k": top}

    def mean_of(name: str) -> float:  # a rejected hop may carry `other` that the bundle has no output for
        return float(mean[labels.index(name)]) if name in labels else 0.0

    # longest held; ties go to the higher mean probability
    label = max(held, key=lambda name: (held[name], mean_of(name)))
    return {
        "label": label,
        "confidence": round(mean_of(label), 4),
        "share": round(held[label] / len(sounding), 4),
        "top_k": top,
    }
