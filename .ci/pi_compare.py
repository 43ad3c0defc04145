#!/usr/bin/env python3
"""Compare the events of two runs of the same `instrument-ai` command, label for label and hop for hop.

`make test-pi` runs `run --source demo --fast --json --every-hop` and `classify --json --timeline` on
x86 (the project venv) and in the arm64 rootfs under qemu; this says whether they gave the same answers.
Standard library only, so it runs with any Python 3. Exit 0 when equal, 1 with a diff when not,
2 when a file is not what the command writes.

    pi_compare.py run X86.jsonl ARM.jsonl
    pi_compare.py classify X86.jsonl ARM.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Hop events: what must be equal. Confidences are reported, not compared: the labels are the answer.
HopKey = tuple[int, float, str]
MAX_SHOWN = 10


def unusable(message: str) -> SystemExit:
    """Exit 2: a file is not what the command writes (a crash, logs on stdout), so nothing was compared."""
    print(f"pi_compare: {message}", file=sys.stderr)
    return SystemExit(2)


def read_objects(path: Path) -> list[dict]:
    """Every JSON object of a JSON-lines file (blank lines skipped)."""
    objects = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            objects.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise unusable(f"{path}:{number}: not JSON ({exc.msg}); stdout mixed with logs?") from None
    if not objects:
        raise unusable(f"{path}: no events at all")
    return objects


def hop_events(events: list[dict]) -> list[dict]:
    return [event for event in events if event.get("type") in ("hop", "change")]


def hop_key(event: dict) -> HopKey:
    return (int(event["hop"]), round(float(event["time"]), 6), str(event["label"]))


def diff_hops(name: str, expected: list[dict], actual: list[dict]) -> list[str]:
    """One line per differing hop (at most MAX_SHOWN, then a count), empty when they agree."""
    problems: list[str] = []
    if len(expected) != len(actual):
        problems.append(f"{name}: {len(expected)} hops on x86, {len(actual)} on arm64")
    mismatches = [
        (want, got) for want, got in zip(expected, actual, strict=False) if hop_key(want) != hop_key(got)
    ]
    for want, got in mismatches[:MAX_SHOWN]:
        problems.append(
            f"{name}: hop {want['hop']} t={want['time']}: x86 {want['label']} ({want.get('confidence')}) "
            f"!= arm64 hop {got['hop']} t={got['time']} {got['label']} ({got.get('confidence')})"
        )
    if len(mismatches) > MAX_SHOWN:
        problems.append(f"{name}: ... and {len(mismatches) - MAX_SHOWN} more differing hops")
    return problems


def max_confidence_gap(expected: list[dict], actual: list[dict]) -> float:
    pairs = zip(expected, actual, strict=False)
    gaps = [abs(float(a.get("confidence", 0)) - float(b.get("confidence", 0))) for a, b in pairs]
    return max(gaps, default=0.0)


def compare_run(x86: list[dict], arm: list[dict]) -> tuple[list[str], str]:
    want, got = hop_events(x86), hop_events(arm)
    if not want:
        raise unusable("the x86 run has no hop events (was --every-hop given?)")
    problems = diff_hops("run", want, got)
    runtimes = [next((e.get("runtime") for e in events if e.get("type") == "start"), "?") for events in (x86, arm)]
    changes = sum(1 for event in want if event["type"] == "change")
    summary = (
        f"run: {len(want)} hops, {changes} label changes; x86 {runtimes[0]}, arm64 {runtimes[1]}; "
        f"largest confidence difference {max_confidence_gap(want, got):.4f}"
    )
    return problems, summary


def compare_classify(x86: list[dict], arm: list[dict]) -> tuple[list[str], str]:
    problems: list[str] = []
    if len(x86) != len(arm):
        problems.append(f"classify: {len(x86)} files on x86, {len(arm)} on arm64")
    hops = 0
    for want, got in zip(x86, arm, strict=False):
        name = Path(str(want.get("file", "?"))).name
        if Path(str(got.get("file", "?"))).name != name:
            problems.append(f"classify: file {name} on x86 but {got.get('file')} on arm64")
            continue
        if "error" in want or "error" in got:
            problems.append(f"classify {name}: x86 error {want.get('error')!r}, arm64 error {got.get('error')!r}")
            continue
        if (want["label"], want["hops"]) != (got["label"], got["hops"]):
            problems.append(
                f"classify {name}: x86 {want['label']} over {want['hops']} hops "
                f"!= arm64 {got['label']} over {got['hops']} hops"
            )
        problems += diff_hops(f"classify {name}", hop_events(want["timeline"]), hop_events(got["timeline"]))
        hops += len(want["timeline"])
    labels = ", ".join(f"{Path(str(o.get('file'))).name}: {o.get('label')}" for o in x86)
    return problems, f"classify: {len(x86)} files, {hops} hops; {labels}"


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("run", "classify"):
        print("usage: " + " | ".join(line.strip() for line in __doc__.strip().splitlines()[-2:]), file=sys.stderr)
        return 2
    kind, x86_path, arm_path = argv[0], Path(argv[1]), Path(argv[2])
    x86, arm = read_objects(x86_path), read_objects(arm_path)
    problems, summary = (compare_run if kind == "run" else compare_classify)(x86, arm)
    if problems:
        print(f"MISMATCH between x86 ({x86_path}) and arm64 ({arm_path}):", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"equal: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
