"""`.ci/pi_compare.py`, the judge of `make test-pi`: equal events pass, any differing hop fails loudly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "pi_compare.py"


def _events(labels: list[str], runtime: str = "ai-edge-litert 2.3.0") -> list[dict]:
    start = {"type": "start", "runtime": runtime}
    hops = [
        {"type": "hop", "hop": i, "time": 0.25 * (i + 1), "label": label, "confidence": 0.5}
        for i, label in enumerate(labels)
    ]
    return [start, *hops]


def _compare(tmp_path: Path, kind: str, x86: list[dict], arm: list[dict]) -> subprocess.CompletedProcess[str]:
    paths = []
    for name, objects in (("x86", x86), ("arm", arm)):
        path = tmp_path / f"{kind}-{name}.jsonl"
        path.write_text("".join(json.dumps(o) + "\n" for o in objects))
        paths.append(str(path))
    return subprocess.run([sys.executable, str(SCRIPT), kind, *paths], capture_output=True, text=True, timeout=60)


def test_equal_runs_pass(tmp_path: Path) -> None:
    labels = ["silence", "keyboard", "keyboard", "brass"]
    result = _compare(tmp_path, "run", _events(labels), _events(labels))
    assert result.returncode == 0, result.stderr
    assert "equal: run: 4 hops" in result.stdout


def test_one_differing_hop_fails_with_the_hop_named(tmp_path: Path) -> None:
    result = _compare(tmp_path, "run", _events(["silence", "brass", "reed"]), _events(["silence", "reed", "reed"]))
    assert result.returncode == 1
    assert "hop 1 t=0.5: x86 brass" in result.stderr and "reed" in result.stderr


def test_a_missing_hop_fails(tmp_path: Path) -> None:
    result = _compare(tmp_path, "run", _events(["silence", "brass"]), _events(["silence"]))
    assert result.returncode == 1
    assert "2 hops on x86, 1 on arm64" in result.stderr


def test_classify_compares_each_file_and_its_timeline(tmp_path: Path) -> None:
    def answer(label: str, timeline: list[str]) -> dict:
        return {"file": "/x/a.wav", "label": label, "hops": len(timeline), "timeline": _events(timeline)[1:]}

    same = _compare(tmp_path, "classify", [answer("string", ["string"] * 3)], [answer("string", ["string"] * 3)])
    assert same.returncode == 0, same.stderr
    differs = _compare(
        tmp_path, "classify", [answer("string", ["string"] * 3)], [answer("string", ["string", "flute", "string"])]
    )
    assert differs.returncode == 1
    assert "classify a.wav: hop 1" in differs.stderr


def test_output_that_is_not_json_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("INFO: Created TensorFlow Lite XNNPACK delegate\n")
    (tmp_path / "b.jsonl").write_text("{}\n")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "run", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "not JSON" in result.stderr
