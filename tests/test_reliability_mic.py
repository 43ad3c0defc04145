"""The microphone goes away and comes back: reopen with exponential backoff (PortAudio re-initialised so a re-plugged
device is found again), a stream that claims to run but delivers nothing is treated as lost, every loss and
recovery is one notice, overflows are reported without flooding; and against the real audio path, PulseAudio
stopped under a running daemon and started again: the daemon reconnects and names the next note."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from fakemic import REPO, TINY_TEST_TONES, PulseFakeMic, sequence

from instrument_ai.device import sources

DEADLINE = 45.0  # guards against a hung child or server; never a timing assertion


# -- a scripted sounddevice ----------------------------------------------------------------------------------------


class Stream:
    def __init__(self, owner: ScriptedSD, callback: Any, **kwargs: Any) -> None:
        self.owner, self.callback, self.kwargs = owner, callback, kwargs
        self.active = False
        self.closed = False

    def start(self) -> None:
        if self.owner.unplugged:
            raise RuntimeError("Error starting stream: Device unavailable [PaErrorCode -9985]")
        self.active = True
        self.owner.streams.append(self)

    def stop(self) -> None:
        self.active = False

    def close(self) -> None:
        self.closed = True


class ScriptedSD:
    """Devices can be unplugged (absent from the list) and re-plugged (under another index, as USB does)."""

    def __init__(self) -> None:
        self.unplugged = False
        self.index = 1
        self.streams: list[Stream] = []
        self.reinits = 0
        self.default = types.SimpleNamespace(device=[1, 0])

    def query_devices(self) -> list[dict]:
        out = [{"name": "Built-in Output", "max_input_channels": 0, "default_samplerate": 48000.0, "hostapi": 0}]
        if not self.unplugged:
            out += [{"name": "placeholder", "max_input_channels": 0, "default_samplerate": 8000.0, "hostapi": 0}] * (
                self.index - 1
            )
            out.append(
                {"name": "USB PnP Sound Device", "max_input_channels": 1, "default_samplerate": 44100.0, "hostapi": 0}
            )
        return out

    def query_hostapis(self) -> list[dict]:
        return [{"name": "ALSA"}]

    def InputStream(self, **kwargs: Any) -> Stream:  # noqa: N802 - sounddevice's name
        return Stream(self, **kwargs)

    def _terminate(self) -> None:
        self.reinits += 1

    def _initialize(self) -> None:
        pass


@pytest.fixture
def sd(monkeypatch: pytest.MonkeyPatch) -> ScriptedSD:
    fake = ScriptedSD()
    monkeypatch.setattr(sources, "_sounddevice", lambda: fake)
    return fake


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded: the backoff without the waiting."""

    def __init__(self, on_wait: Any = None) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.on_wait = on_wait

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None and timeout >= 0.2:  # the backoff's waits (queue polls are 0.05 s)
            self.waits.append(timeout)
            if self.on_wait is not None:
                self.on_wait(len(self.waits))
            return self.is_set()
        return super().wait(timeout)


def status(overflow: bool = False) -> Any:
    return types.SimpleNamespace(input_overflow=overflow)


def test_reopen_backs_off_exponentially_and_finds_the_device_under_a_new_index(sd: ScriptedSD) -> None:
    notices: list[tuple[str, dict]] = []
    mic = sources.MicSource("usb", notify=lambda kind, data: notices.append((kind, data)))
    assert mic.device["index"] == 1
    sd.unplugged = True
    sd.streams[-1].active = False  # PortAudio stopped calling back

    def replug(waits: int) -> None:
        if waits == 8:
            sd.unplugged, sd.index = False, 3

    stop = RecordingStop(replug)
    mic._recover(stop, "the input stream stopped")
    assert stop.waits == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert mic.device["index"] == 3 and sd.streams[-1].kwargs["device"] == 3 and sd.streams[-1].active
    assert sd.reinits == 9  # PortAudio re-enumerated before every attempt
    assert [kind for kind, _ in notices] == ["device_lost", "reconnect"]
    assert notices[0][1] == {"device": "USB PnP Sound Device", "reason": "the input stream stopped"}
    assert notices[1][1]["attempts"] == 9 and notices[1][1]["down_seconds"] >= 0
    assert (mic.stats.lost, mic.stats.reconnects) == (1, 1)


def test_a_long_outage_is_reminded_and_stop_ends_the_wait(sd: ScriptedSD, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "REMINDER_SECONDS", 0.0)
    notices: list[tuple[str, dict]] = []
    mic = sources.MicSource(notify=lambda kind, data: notices.append((kind, data)))
    sd.unplugged = True
    stop = RecordingStop(lambda waits: stop.set() if waits == 3 else None)
    mic._recover(stop, "gone")
    kinds = [kind for kind, _ in notices]
    assert kinds == ["device_lost", "reconnect_waiting", "reconnect_waiting", "reconnect_waiting"]
    assert "Device unavailable" in notices[1][1]["error"] or "no microphone" in notices[1][1]["error"]
    assert mic.stats.reconnects == 0


def test_a_stream_that_claims_to_run_but_delivers_nothing_is_reopened(sd: ScriptedSD) -> None:
    notices: list[tuple[str, dict]] = []
    mic = sources.MicSource(notify=lambda kind, data: notices.append((kind, data)), stall_seconds=0.2)
    first = sd.streams[-1]
    stop = threading.Event()
    got: list[np.ndarray] = []

    def consume() -> None:
        got.extend(mic.blocks(stop))

    worker = threading.Thread(target=consume)
    worker.start()
    try:
        deadline = time.monotonic() + DEADLINE
        while len(sd.streams) < 2 and time.monotonic() < deadline:  # "active", silent: a dead sound server
            time.sleep(0.01)
        sd.streams[-1].callback(np.ones((4, 1), np.float32), 4, None, status())
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(timeout=10)
    assert first.closed and len(sd.streams) == 2 and got[0].shape == (4, 1)
    assert notices[0][0] == "device_lost" and notices[0][1]["reason"].startswith("no audio for")
    assert notices[1][0] == "reconnect" and mic.stats.reconnects == 1


def test_overflows_are_reported_without_flooding(sd: ScriptedSD, monkeypatch: pytest.MonkeyPatch) -> None:
    notices: list[tuple[str, dict]] = []
    mic = sources.MicSource(notify=lambda kind, data: notices.append((kind, data)))
    stream = sd.streams[-1]
    stop = threading.Event()
    blocks = mic.blocks(stop)
    for i in range(30):
        stream.callback(np.zeros((4, 1), np.float32), 4, None, status(overflow=i % 2 == 0))
        next(blocks)
    assert [kind for kind, _ in notices] == ["overflow"]  # the first, then quiet for REMINDER_SECONDS / 6
    assert notices[0][1] == {"overflows": 1, "dropped": 0}
    monkeypatch.setattr(sources, "REMINDER_SECONDS", 0.0)
    mic._next_overflow_notice = 0.0
    stream.callback(np.zeros((4, 1), np.float32), 4, None, status(overflow=True))
    next(blocks)
    assert notices[-1] == ("overflow", {"overflows": 16, "dropped": 0}) and mic.stats.overflows == 16
    stop.set()


def test_without_reconnect_a_lost_device_is_one_line_error(sd: ScriptedSD) -> None:
    mic = sources.MicSource(reconnect=False)
    with pytest.raises(sources.SourceError, match=r"stopped delivering audio \(gone\)$"):
        mic._recover(threading.Event(), "gone")


# -- the real audio path: stop PulseAudio under a running daemon, start it again ---------------------------------


def _stop_server(mic: PulseFakeMic) -> None:
    """Stop the fake microphone's PulseAudio by its pid, keeping its folder (socket path) for the restart."""
    pid = mic.pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
            break
        time.sleep(0.02)
    mic.pid = None
    (mic.dir / "pid").unlink(missing_ok=True)


def test_daemon_reconnects_when_pulseaudio_stops_and_starts_again(
    tiny_bundle_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = tiny_bundle_path
    clip = tmp_path_factory.mktemp("clip") / "note.wav"
    soundfile.write(str(clip), sequence([(None, 0.3), (TINY_TEST_TONES["high"], 2.0), (None, 0.3)], 48000), 48000)
    with PulseFakeMic(rate=48000) as mic:
        args = ["run", "--source", "mic", "--json", "--every-hop", "--duration", "120", "--model", str(model)]
        process = subprocess.Popen(
            [sys.executable, "-m", "instrument_ai.device.cli", *args],
            env=mic.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(json.loads(x)) for x in process.stdout], daemon=True).start()
        errors: list[str] = []
        threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True).start()
        seen: list[dict] = []

        def until(predicate: Any, what: str) -> dict:
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline:
                try:
                    record = lines.get(timeout=0.2)
                except queue.Empty:
                    if process.poll() is not None:
                        break
                    continue
                seen.append(record)
                if predicate(record):
                    return record
            raise AssertionError(f"no {what}: {seen[-5:]}; stderr {''.join(errors)[-600:]}")

        player = None
        try:
            until(lambda r: r["type"] in ("hop", "change"), "first hop")
            _stop_server(mic)
            lost = until(lambda r: r["type"] == "device_lost", "device_lost")
            mic.__enter__()  # the same socket: what a restarted sound server (or a re-plugged mic) looks like
            back = until(lambda r: r["type"] == "reconnect", "reconnect")
            until(lambda r: r["type"] in ("hop", "change"), "a hop after the reconnect")
            player = mic.play(clip)
            until(lambda r: r.get("label") == "high", "the note played after the reconnect")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=DEADLINE)
            if player is not None:
                player.wait(timeout=DEADLINE)
        while True:
            try:
                seen.append(lines.get(timeout=2))
            except queue.Empty:
                break
    assert process.returncode == 0, "".join(errors)
    assert lost["device"] == back["device"] and back["attempts"] >= 1
    stop = seen[-1]
    assert stop["type"] == "stop" and stop["reason"] == "SIGTERM"
    assert stop["reconnects"] == 1 and stop["device_lost"] == 1
    assert "Traceback" not in "".join(errors)
