"""The real audio path: PortAudio -> ALSA -> a private PulseAudio server whose null sink is a fake microphone.

`paplay` plays a rendered note into the sink; `instrument-ai run --source mic --json` records the
remapped monitor source through sounddevice (at the device's native rate, resampled in numpy) and
must report the note's class within two seconds of its onset. PulseAudio missing is a failure,
not a skip: `make apt` installs it.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import soundfile
from fakemic import REPO, TINY_TEST_TONES, PulseFakeMic, sequence

DEADLINE_SECONDS = 45.0  # a guard against a hung server, not a timing assertion


@pytest.fixture(scope="module")
def fake_mic() -> PulseFakeMic:
    with PulseFakeMic(rate=48000) as mic:
        yield mic


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def test_devices_lists_the_fake_microphone(fake_mic: PulseFakeMic) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "instrument_ai.device.cli", "devices", "--json"],
        env=fake_mic.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert any(d["default"] for d in found) and all(d["rate"] > 0 for d in found)
    assert {"pulse", "default"} & {d["name"] for d in found}


def test_mic_stream_reports_the_played_note_within_two_seconds(
    fake_mic: PulseFakeMic, tiny_bundle_path: Path, tmp_path: Path
) -> None:
    clip = tmp_path / "note.wav"
    soundfile.write(str(clip), sequence([(None, 0.3), (TINY_TEST_TONES["high"], 1.5), (None, 0.5)], 48000), 48000)
    mic_roundtrip(fake_mic, tiny_bundle_path, clip, "high")


def mic_roundtrip(fake_mic: PulseFakeMic, model: Path, clip: Path, expected: str) -> None:
    """Open `run --source mic` on the fake microphone, play `clip` once it delivers, expect `expected` in 2 s."""
    args = ["run", "--source", "mic", "--json", "--every-hop", "--duration", "30", "--model", str(model)]
    process = subprocess.Popen(
        [sys.executable, "-m", "instrument_ai.device.cli", *args],
        env=fake_mic.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True)
    reader.start()
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True).start()
    records: list[dict] = []
    player = None
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            records.append(json.loads(line))
            hop = records[-1]
            if hop["type"] in ("change", "hop") and player is None:
                player = fake_mic.play(clip)  # the stream is open and delivering: now play
            if hop.get("label") == expected:
                break
    finally:
        process.terminate()
        process.wait(timeout=20)
        reader.join(timeout=20)  # the reader owns stdout: drain what it read after we stopped looking
        if player is not None:
            player.wait(timeout=20)
    while not lines.empty():
        line = lines.get()
        if line is not None:
            records.append(json.loads(line))
    err = "".join(errors)
    assert process.returncode == 0, err
    start = records[0]
    assert start["type"] == "start" and start["source"].startswith("mic:") and start["realtime"] is True
    assert start["rate"] == start["native_rate"] and start["model_rate"] == 16000
    hops = [r for r in records if r["type"] in ("change", "hop")]
    assert hops, f"no hop decided; stderr: {err[-500:]}"
    assert all(h["frontend_ms"] > 0 for h in hops)
    loud = [h for h in hops if h["label"] != "silence"]
    assert loud, f"the fake microphone heard nothing (levels {[h['level_db'] for h in hops][-10:]})"
    onset = loud[0]["time"] - 0.25  # the note began within the first loud hop
    named = [h for h in hops if h["label"] == expected]
    assert named, f"never reported {expected}: {[(h['time'], h['label']) for h in loud]}"
    assert named[0]["time"] - onset <= 2.0
    assert named[0]["inference_ms"] > 0 and named[0]["level_db"] > -40
    stop = records[-1]
    assert stop["type"] == "stop" and stop["reason"] == "SIGTERM" and stop["dropped"] == 0


def test_pulse_server_is_stopped_by_its_pid() -> None:
    with PulseFakeMic() as mic:
        pid = mic.pid
        assert pid is not None and os.path.exists(f"/proc/{pid}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def test_shipped_model_names_a_demo_note_through_the_fake_microphone(fake_mic: PulseFakeMic, tmp_path: Path) -> None:
    """The shipped bundle, the real audio path: the demo's bass note (22-24 s of demo.flac) played at 48 kHz.

    The bass note is one of the six demo notes the shipped model names (models/README.md, "Known weaknesses").
    """
    import numpy as np

    model = REPO / "models" / "default.tflite"
    assert model.is_file(), "the shipped model is missing"
    audio, rate = soundfile.read(str(REPO / "device" / "assets" / "demo.flac"), dtype="float32")
    note = audio[int(21.7 * rate) : int(24.8 * rate)]
    upsampled = np.interp(np.arange(0, len(note), rate / 48000), np.arange(len(note)), note).astype(np.float32)
    clip = tmp_path / "bass.wav"
    soundfile.write(str(clip), upsampled, 48000)
    mic_roundtrip(fake_mic, model, clip, "bass")
