"""`.ci/pi_compare.py`, the judge of `make test-pi`: equal events pass, any differing hop fails loudly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "pi_compare.py"
_spec = importlib.util.spec_from_file_location("pi_compare", SCRIPT)
assert _spec and _spec.loader
pi_compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pi_compare)


class Result:
    def __init__(self, returncode: int, capture: pytest.CaptureFixture[str]) -> None:
        self.returncode = returncode
        self.stdout, self.stderr = capture.readouterr()


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    try:
        code = pi_compare.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return Result(code, capsys)


def _events(labels: list[str], runtime: str = "ai-edge-litert 2.3.0") -> list[dict]:
    start = {"type": "start", "runtime": runtime}
    hops = [
        {"type": "hop", "hop": i, "time": 0.25 * (i + 1), "label": label, "confidence": 0.5}
        for i, label in enumerate(labels)
    ]
    return [start, *hops]


@pytest.fixture
def compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    def run(kind: str, x86: list[dict], arm: list[dict]) -> Result:
        paths = []
        for name, objects in (("x86", x86), ("arm", arm)):
            path = tmp_path / f"{kind}-{name}.jsonl"
            path.write_text("".join(json.dumps(o) + "\n" for o in objects))
            paths.append(str(path))
        return _main([kind, *paths], capsys)

    return run


def test_equal_runs_pass(compare) -> None:
    labels = ["silence", "keyboard", "keyboard", "brass"]
    result = compare("run", _events(labels), _events(labels))
    assert result.returncode == 0, result.stderr
    assert "equal: run: 4 hops" in result.stdout


def test_one_differing_hop_fails_with_the_hop_named(compare) -> None:
    result = compare("run", _events(["silence", "brass", "reed"]), _events(["silence", "reed", "reed"]))
    assert result.returncode == 1
    assert "hop 1 t=0.5: x86 brass" in result.stderr and "reed" in result.stderr


def test_a_missing_hop_fails(compare) -> None:
    result = compare("run", _events(["silence", "brass"]), _events(["silence"]))
    assert result.returncode == 1
    assert "2 hops on x86, 1 on arm64" in result.stderr


def test_classify_compares_each_file_and_its_timeline(compare) -> None:
    def answer(label: str, timeline: list[str]) -> dict:
        return {"file": "/x/a.wav", "label": label, "hops": len(timeline), "timeline": _events(timeline)[1:]}

    same = compare("classify", [answer("string", ["string"] * 3)], [answer("string", ["string"] * 3)])
    assert same.returncode == 0, same.stderr
    differs = compare("classify", [answer("string", ["string"] * 3)], [answer("string", ["string", "flute", "string"])])
    assert differs.returncode == 1
    assert "classify a.wav: hop 1" in differs.stderr


def test_output_that_is_not_json_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.jsonl").write_text("INFO: Created TensorFlow Lite XNNPACK delegate\n")
    (tmp_path / "b.jsonl").write_text("{}\n")
    result = _main(["run", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], capsys)
    assert result.returncode == 2 and "not JSON" in result.stderr
