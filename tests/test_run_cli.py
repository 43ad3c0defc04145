"""`instrument-ai run`, `classify` and `devices` end to end, with a real (tiny) bundle through the real
interpreter: sources (file at any rate/channels, stdin PCM, demo), outputs (JSON, text, --output,
--every-hop, --stats), signals (SIGINT/SIGTERM stop, SIGHUP reload), exit codes, bad input, and the
`sys.modules` of a `run` process (no tensorflow, librosa, scipy or numba)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from fakemic import REPO, sequence
from livehelp import demo_hops

from instrument_ai.device import sources
from instrument_ai.device.cli import cli
from instrument_ai.device.commands import run as run_cli
from instrument_ai.device.engine import Event
from instrument_ai.device.live_view import LiveView

SCRIPT = [(None, 1.0), (200.0, 1.5), (None, 1.0), (4000.0, 1.5), (None, 0.5)]
EXPECTED = ["silence", "low", "silence", "high", "silence"]
FORBIDDEN = ("tensorflow", "librosa", "scipy", "numba", "keras", "matplotlib")


def write_clip(path: Path, rate: int, channels: int = 1, script: list = SCRIPT, **kwargs: object) -> Path:
    mono = sequence(script, rate=rate)
    soundfile.write(str(path), np.repeat(mono[:, None], channels, axis=1), rate, **kwargs)
    return path


def cli_subprocess(args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    """Run `instrument-ai ARGS` in a fresh interpreter that reports its sys.modules on stderr at exit."""
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print('MODULES=' + json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
        "from instrument_ai.device.cli import main\n"
        f"main({args!r})\n"
    )
    env = {**os.environ, "PULSE_SERVER": "unix:/nonexistent/native"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=REPO, **kwargs
    )


def modules_of(result: subprocess.CompletedProcess) -> set[str]:
    line = next(line for line in result.stderr.splitlines() if line.startswith("MODULES="))
    return set(json.loads(line[len("MODULES=") :]))


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def changes(records: list[dict]) -> list[dict]:
    return [r for r in records if r["type"] == "change"]


# -- run --------------------------------------------------------------------------------------------


def test_run_demo_fast_json_never_imports_heavy_libraries(tiny_bundle_path: Path) -> None:
    result = cli_subprocess(["run", "--source", "demo", "--fast", "--json", "--model", str(tiny_bundle_path)])
    assert result.returncode == 0, result.stderr
    loaded = modules_of(result)
    heavy = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert heavy == [], f"run imported {heavy[:5]}"
    assert "ai_edge_litert" in {m.split(".")[0] for m in loaded}
    records = json_lines(result.stdout)
    start, stop = records[0], records[-1]
    assert start["type"] == "start" and start["runtime"].startswith("ai-edge-litert")
    assert start["source"] == "demo" and start["model_rate"] == 16000 and start["hop_seconds"] == 0.25
    assert stop["type"] == "stop" and stop["reason"] == "end of source" and stop["hops"] == demo_hops()
    assert stop["first_hop_seconds"] is not None and stop["rss_mb"] > 0
    # The demo has 8 notes with silences between: each shows up as a sounding label after silence.
    demo = json.loads((REPO / "device" / "assets" / "demo.json").read_text())
    events = changes(records)
    tail = min((span["onset"] for span in demo.get("no_instrument", [])), default=float("inf"))
    onsets = [e for e in events if e["label"] != "silence" and e["previous"] == "silence" and e["time"] < tail]
    assert len(onsets) == len(demo["notes"])
    for event, note in zip(onsets, demo["notes"], strict=True):
        assert 0 < event["time"] - note["onset"] <= 0.5  # decided within two hops of the onset
        assert event["frontend_ms"] > 0 and event["inference_ms"] > 0


def test_run_file_any_rate_and_channels(tiny_bundle_path: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.wav", 44100, channels=2)
    runner = CliRunner()
    result = runner.invoke(cli, ["run", "--source", str(clip), "--fast", "--json", "--model", str(tiny_bundle_path)])
    assert result.exit_code == 0, result.output
    records = json_lines(result.output)
    assert records[0]["rate"] == 44100 and records[0]["channels"] == 2
    events = changes(records)
    assert [e["label"] for e in events] == EXPECTED
    assert 1.0 < events[1]["time"] <= 1.5 and 3.5 < events[3]["time"] <= 4.0


def test_run_stdin_pcm(tiny_bundle_path: Path) -> None:
    pcm = np.round(sequence(SCRIPT, rate=48000) * 32767).astype("<i2").tobytes()
    runner = CliRunner()
    args = ["run", "--source", "-", "--samplerate", "48000", "--json", "--model", str(tiny_bundle_path)]
    result = runner.invoke(cli, args, input=pcm)
    assert result.exit_code == 0, result.output
    assert [e["label"] for e in changes(json_lines(result.output))] == EXPECTED


def test_stdin_source_handles_odd_reads_and_stereo() -> None:
    frames = np.arange(-500, 500, dtype="<i2").reshape(-1, 2)

    class Dribble(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def read1(self, n: int) -> bytes:  # 3 bytes at a time: samples split across reads
            chunk, self.data = self.data[:3], self.data[3:]
            return chunk

    source = sources.StdinSource(8000, 2, stream=Dribble(frames.tobytes() + b"\x01"))
    import threading

    got = np.concatenate(list(source.blocks(threading.Event())))
    np.testing.assert_array_equal(got, frames)  # the odd trailing byte is dropped


def test_output_file_every_hop_and_stats(tiny_bundle_path: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.flac", 22050, format="FLAC")
    out = tmp_path / "events.jsonl"
    args = ["run", "--source", str(clip), "--fast", "--json", "--every-hop", "--output", str(out)]
    result = CliRunner().invoke(cli, [*args, "--stats", "0.000001", "--model", str(tiny_bundle_path)])
    assert result.exit_code == 0, result.output
    assert result.output == ""  # everything went to the file
    records = json_lines(out.read_text())
    hops = [r for r in records if r["type"] in ("change", "hop")]
    assert len(hops) == 22 and [r["hop"] for r in hops] == list(range(22))  # 5.5 s / 0.25 s
    stats = [r for r in records if r["type"] == "stats"]
    assert stats and {"hops", "mean_ms", "p99_ms", "overflows", "dropped", "rss_mb"} <= set(stats[0])
    assert records[-1]["type"] == "stop" and records[-1]["overflows"] == 0 and records[-1]["dropped"] == 0


def test_plain_text_output_names_changes(tiny_bundle_path: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.wav", 16000)
    result = CliRunner().invoke(cli, ["run", "--source", str(clip), "--fast", "--model", str(tiny_bundle_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "runtime ai-edge-litert" in lines[0] and "hop 0.25 s" in lines[0]
    assert [line.split()[2] for line in lines[1:6]] == ["(silence)", "low", "(silence)", "high", "(silence)"]
    assert lines[-1].startswith("-- stats: 22 hops")


def _start_realtime(args: list[str]) -> tuple[subprocess.Popen, list[dict]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "instrument_ai.device.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:  # wait for the first decided hop
        seen.append(json.loads(line))
        if seen[-1]["type"] in ("change", "hop"):
            break
    return process, seen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_stream_cleanly(tiny_bundle_path: Path, sig: signal.Signals) -> None:
    process, seen = _start_realtime(
        ["run", "--source", "demo", "--json", "--every-hop", "--model", str(tiny_bundle_path)]
    )
    process.send_signal(sig)
    out, err = process.communicate(timeout=20)
    records = seen + json_lines(out)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    stop = records[-1]
    assert stop["type"] == "stop" and stop["reason"] == sig.name
    last_hop = [r for r in records if r["type"] in ("change", "hop")][-1]
    assert stop["stream_seconds"] - last_hop["time"] < 0.25 + 0.1  # nothing decided after the signal's hop
    assert stop["stream_seconds"] < 10  # stopped long before the 25 s demo ended


def test_sighup_reloads_the_model_directory(tiny_bundle_path: Path, tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "a.tflite").write_bytes(tiny_bundle_path.read_bytes())
    (tmp_path / "current.tflite").symlink_to(versions / "a.tflite")
    process, _ = _start_realtime(["run", "--source", "demo", "--json", "--model-dir", str(tmp_path)])
    process.send_signal(signal.SIGHUP)
    import time

    time.sleep(0.6)  # let a hop or two pass so the reload happens between hops
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    swaps = [r for r in json_lines(out) if r["type"] == "swap"]
    assert swaps and swaps[0]["old"] == "tiny-test 1" and swaps[0]["new"] == "tiny-test 1"


def test_no_microphone_says_so_and_points_to_demo_and_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "input_devices", lambda: [])
    result = CliRunner().invoke(cli, ["run"])
    assert result.exit_code == run_cli.EXIT_NO_AUDIO
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert "no microphone" in message and "--source demo" in message and "instrument-ai devices" in message


def test_no_microphone_in_a_real_process() -> None:
    result = cli_subprocess(["run"])  # PULSE_SERVER points nowhere: PortAudio finds no input here
    assert result.returncode == run_cli.EXIT_NO_AUDIO, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("MODULES=")]
    assert len(errors) == 1 and "--source demo" in errors[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--source", "-"], 2, "needs --samplerate"),
        (["--source", "mic", "--fast"], 2, "--fast applies only"),
        (["--source", "demo", "--device", "1"], 2, "--device applies only"),
        (["--source", "demo", "--samplerate", "8000"], 2, "--samplerate applies only"),
        (["--source", "demo", "--model", "x.tflite", "--model-dir", "d"], 2, "not both"),
        (["--source", "demo", "--hop", "0"], 2, "--hop"),
        (["--source", "demo", "--smooth", "0"], 2, "--smooth"),
        (["--source", "demo", "--min-confidence", "2"], 2, "--min-confidence"),
        (["--source", "nowhere.wav"], 1, "no such file"),
        (["--source", "demo", "--model", "missing.tflite"], 2, "--model missing.tflite: no such model file"),
    ],
)
def test_bad_run_input_is_one_line_with_its_exit_code(args: list[str], code: int, fragment: str) -> None:
    result = CliRunner().invoke(cli, ["run", *args])
    assert result.exit_code == code, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (TypeError, AttributeError))


def test_unreadable_audio_and_garbage_model(tmp_path: Path, tiny_bundle_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n")
    result = CliRunner().invoke(cli, ["run", "--source", str(text), "--model", str(tiny_bundle_path)])
    assert result.exit_code == 1 and "not a readable audio file" in result.output
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 100)
    result = CliRunner().invoke(cli, ["run", "--source", "demo", "--fast", "--model", str(garbage)])
    assert result.exit_code == 1 and str(garbage) in result.output and len(result.output.strip().splitlines()) == 1
    empty_dir = tmp_path / "models"
    empty_dir.mkdir()
    result = CliRunner().invoke(cli, ["run", "--source", "demo", "--fast", "--model-dir", str(empty_dir)])
    assert result.exit_code == 2 and "no model installed" in result.output


def test_mid_stream_read_failure_is_reported_not_raised(tmp_path: Path, tiny_bundle_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.wav", 16000)
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])  # header says 5.5 s, the file holds half
    result = CliRunner().invoke(
        cli, ["run", "--source", str(clip), "--fast", "--json", "--model", str(tiny_bundle_path)]
    )
    # libsndfile may read it short (exit 0) or fail (exit 1, one line): never an uncaught exception
    assert result.exit_code in (0, 1) and isinstance(result.exception, (SystemExit, type(None))), result.output


# -- classify -----------------------------------------------------------------------------------------


def test_classify_files_of_any_format_rate_and_length(tiny_bundle_path: Path, tmp_path: Path) -> None:
    files = [
        write_clip(tmp_path / "low.wav", 44100, 2, [(None, 0.3), (200.0, 2.0)]),
        write_clip(tmp_path / "mid.flac", 22050, 1, [(1000.0, 0.7)], format="FLAC"),
        write_clip(tmp_path / "high.ogg", 16000, 1, [(None, 0.2), (4000.0, 3.0), (None, 0.5)], format="OGG"),
        write_clip(tmp_path / "short.wav", 8000, 1, [(200.0, 0.1)]),
        write_clip(tmp_path / "quiet.wav", 16000, 1, [(None, 1.0)]),
    ]
    result = CliRunner().invoke(cli, ["classify", *map(str, files), "--json", "--model", str(tiny_bundle_path)])
    assert result.exit_code == 0, result.output
    answers = {Path(r["file"]).stem: r for r in json_lines(result.output)}
    assert {k: v["label"] for k, v in answers.items()} == {
        "low": "low",
        "mid": "mid",
        "high": "high",
        "short": "low",
        "quiet": "silence",
    }
    assert answers["low"]["sample_rate"] == 44100 and answers["low"]["channels"] == 2
    assert answers["high"]["confidence"] > 0.8 and answers["high"]["top_k"][0]["label"] == "high"


def test_classify_timeline_and_text(tiny_bundle_path: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.wav", 16000)
    result = CliRunner().invoke(cli, ["classify", str(clip), "--timeline", "--json", "--model", str(tiny_bundle_path)])
    (record,) = json_lines(result.output)
    assert len(record["timeline"]) == 22 and record["timeline"][4]["label"] == "low"
    result = CliRunner().invoke(cli, ["classify", str(clip), "--timeline", "--model", str(tiny_bundle_path)])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{clip}: ") and len(lines) == 1 + 22


def test_classify_reports_bad_files_and_continues(tiny_bundle_path: Path, tmp_path: Path) -> None:
    good = write_clip(tmp_path / "good.wav", 16000, 1, [(200.0, 1.0)])
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    result = CliRunner().invoke(
        cli, ["classify", str(tmp_path / "missing.wav"), str(empty), str(good), "--model", str(tiny_bundle_path)]
    )
    assert result.exit_code == 1
    assert f"{good}: low" in result.output
    assert "missing.wav: no such file" in result.output and "2 of 3 file(s)" in result.output
    assert "Traceback" not in result.output


# -- devices and the live view ------------------------------------------------------------------------


def test_devices_lists_inputs_with_native_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = [
        {"index": 3, "name": "USB Mic", "channels": 1, "rate": 48000, "hostapi": "ALSA", "default": True},
        {"index": 5, "name": "Line In", "channels": 2, "rate": 44100, "hostapi": "ALSA", "default": False},
    ]
    monkeypatch.setattr(sources, "input_devices", lambda: fake)
    result = CliRunner().invoke(cli, ["devices"])
    assert result.exit_code == 0
    assert "48000 Hz" in result.output and "USB Mic" in result.output and "* " in result.output
    result = CliRunner().invoke(cli, ["devices", "--json"])
    assert [json.loads(line)["rate"] for line in result.output.splitlines()] == [48000, 44100]
    assert sources.resolve_device.__name__  # resolution by name part and by index:
    assert sources.resolve_device("line")["index"] == 5 and sources.resolve_device("3")["name"] == "USB Mic"
    assert sources.resolve_device(None)["index"] == 3
    with pytest.raises(sources.SourceError, match="no input device name contains"):
        sources.resolve_device("bluetooth")
    with pytest.raises(sources.SourceError, match="no input device with that index"):
        sources.resolve_device("7")


def test_live_view_draws_label_bars_level_and_timings() -> None:
    out = io.StringIO()
    view = LiveView(out, top_k=3)
    view.start({"model_name": "tiny", "model_version": "1", "runtime": "ai-edge-litert 2.3.0", "source": "demo"})
    event = Event(
        time=1.25,
        label="flute",
        confidence=0.8,
        top_k=[("flute", 0.8), ("reed", 0.15), ("organ", 0.05)],
        level_db=-23.0,
        frontend_ms=0.4,
        inference_ms=1.1,
        hop=4,
    )
    view.hop(event, {"overflows": 2, "dropped": 0})
    view.close({"hops": 5, "mean_ms": 1.5, "p99_ms": 2.0, "overflows": 2, "dropped": 0})
    text = out.getvalue()
    assert "ai-edge-litert 2.3.0" in text and "FLUTE" in text and "reed" in text
    assert "█" in text and "-23.0 dBFS" in text and "inference 1.10 ms" in text and "overflows 2" in text
    assert "1.25 s  flute" in text  # the change is logged above the panel
