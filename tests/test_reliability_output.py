"""The daemon outlives its output: a full disk (`--output /dev/full`, ENOSPC), a write that fails for a while and
recovers (every later record still a whole JSON line), and a reader that goes away (EPIPE: a clean stop)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import soundfile
from click.testing import CliRunner
from fakemic import REPO, sequence

from instrument_ai.device import line_output
from instrument_ai.device.cli import cli
from instrument_ai.device.line_output import LineOutput

SCRIPT = [(None, 0.5), (200.0, 1.5), (None, 0.5), (4000.0, 1.5)]  # 4 s: 16 hops


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    soundfile.write(str(path), sequence(SCRIPT, rate=16000), 16000)
    return path


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_full_disk_is_counted_reported_on_stderr_and_classification_goes_on(
    tiny_bundle_path: Path, clip: Path
) -> None:
    args = ["run", "--source", str(clip), "--fast", "--json", "--every-hop", "--model", str(tiny_bundle_path)]
    result = CliRunner().invoke(cli, [*args, "--output", "/dev/full"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    reports = records(result.stderr)
    error, stop = reports[0], reports[-1]
    assert error["type"] == "output_error" and error["errno"] == "ENOSPC" and error["output"] == "/dev/full"
    assert error["action"] == "still classifying" and error["lost"] == 1
    assert len([r for r in reports if r["type"] == "output_error"]) == 1  # one report, not one per record
    assert stop["type"] == "stop" and stop["reason"] == "end of source"
    assert stop["hops"] == 16 and stop["output_lost"] == 1 + 16  # the start and every hop (then this stop record)


def test_plain_text_mode_reports_in_words(tiny_bundle_path: Path, clip: Path) -> None:
    result = CliRunner().invoke(
        cli, ["run", "--source", str(clip), "--fast", "--model", str(tiny_bundle_path), "--output", "/dev/full"]
    )
    assert result.exit_code == 0
    first = result.stderr.splitlines()[0]
    assert first.startswith("instrument-ai run: output_error: output=/dev/full errno=ENOSPC")


class FlakyWrite:
    """os.write that fails with ENOSPC for a while (optionally after writing part of a record), then recovers."""

    def __init__(self, fail_from: int, fail_until: int, partial: bool) -> None:
        self.calls, self.fail_from, self.fail_until, self.partial = 0, fail_from, fail_until, partial
        self.real = os.write

    def __call__(self, fd: int, data: Any) -> int:
        self.calls += 1
        if self.fail_from <= self.calls < self.fail_until:
            if self.partial and self.calls == self.fail_from:
                return self.real(fd, bytes(data[:7]))  # part of the line; the next call fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(fd, data)


@pytest.mark.parametrize("partial", [False, True])
def test_a_disk_that_fills_then_frees_loses_only_the_records_in_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partial: bool
) -> None:
    reports: list[dict] = []
    clock = iter(range(0, 10_000, 7))  # 7 s between writes: reminders every REMIND_SECONDS (60)
    out = LineOutput.open_file(tmp_path / "events.jsonl", reports.append)
    out._clock = lambda: float(next(clock))
    flaky = FlakyWrite(fail_from=3, fail_until=30, partial=partial)
    monkeypatch.setattr(line_output.os, "write", flaky)
    results = [out.write_line(json.dumps({"n": i})) for i in range(40)]
    out.close()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    whole = [json.loads(line) for line in lines if line.startswith('{"n"') and line.endswith("}")]
    assert [r["n"] for r in whole] == [i for i, ok in enumerate(results) if ok]
    assert results[:2] == [True, True] and results[-8:] == [True] * 8 and out.lost == results.count(False)
    assert all(line.startswith('{"n"') for line in lines)  # a cut record ends on its own line, never glued
    if partial:
        assert len(lines) == len(whole) + 1 and lines[2] == '{"n": 2'  # the cut record, ended by a newline
    kinds = [r["type"] for r in reports]
    assert kinds[0] == "output_error" and kinds[-1] == "output_recovered" and reports[-1]["lost"] == out.lost
    assert 2 <= kinds.count("output_error") <= 5  # first failure + a reminder a minute, not one per record


def test_broken_pipe_stops_the_daemon_cleanly(tiny_bundle_path: Path, clip: Path) -> None:
    """`run | head -n 3`: the reader goes away; the daemon stops (reason "output closed"), no traceback."""
    args = ["run", "--source", str(clip), "--json", "--every-hop", "--model", str(tiny_bundle_path)]
    process = subprocess.Popen(
        [sys.executable, "-m", "instrument_ai.device.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None
    for _ in range(3):
        json.loads(process.stdout.readline())
    process.stdout.close()  # like head exiting
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    reports = records(err)
    assert reports[0]["type"] == "output_error" and reports[0]["errno"] == "EPIPE"
    assert reports[-1]["type"] == "stop" and reports[-1]["reason"] == "output closed"
    assert reports[-1]["stream_seconds"] < 3.5 and "Traceback" not in err


def test_an_output_that_cannot_be_opened_is_one_line(tiny_bundle_path: Path, clip: Path, tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "events.jsonl"
    result = CliRunner().invoke(
        cli, ["run", "--source", str(clip), "--fast", "--model", str(tiny_bundle_path), "--output", str(target)]
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert f"{target}: cannot write (No such file or directory)" in result.output
