"""MicSource logic against a scripted sounddevice: the callback only copies into the queue, overflows and
drops are counted (never raised), a vanished device is reopened, and PortAudio errors become one line."""

from __future__ import annotations

import threading
import types
from typing import Any

import numpy as np
import pytest

from instrument_ai.device import sources

DEVICES = [
    {"name": "Built-in Output", "max_input_channels": 0, "default_samplerate": 48000.0, "hostapi": 0},
    {"name": "USB PnP Sound Device", "max_input_channels": 1, "default_samplerate": 44100.0, "hostapi": 0},
]


class FakeStream:
    instances: list[FakeStream] = []
    fail_rate: int | None = None

    def __init__(self, *, device: int, samplerate: int, channels: int, dtype: str, blocksize: int, callback: Any):
        self.device, self.samplerate, self.channels, self.callback = device, samplerate, channels, callback
        self.blocksize = blocksize
        self.active = False
        self.closed = False
        FakeStream.instances.append(self)

    def start(self) -> None:
        if FakeStream.fail_rate == self.samplerate:
            raise RuntimeError("Error opening InputStream: Invalid sample rate [PaErrorCode -9997]")
        self.active = True

    def stop(self) -> None:
        self.active = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_sd(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    FakeStream.instances = []
    FakeStream.fail_rate = None
    module = types.SimpleNamespace(
        query_devices=lambda: DEVICES,
        query_hostapis=lambda: [{"name": "ALSA"}],
        default=types.SimpleNamespace(device=[1, 0]),
        InputStream=FakeStream,
    )
    monkeypatch.setattr(sources, "_sounddevice", lambda: module)
    return module


def status(overflow: bool = False) -> Any:
    return types.SimpleNamespace(input_overflow=overflow)


def test_opens_the_device_at_its_native_rate_and_queues_copies(fake_sd: Any) -> None:
    mic = sources.MicSource("usb")
    stream = FakeStream.instances[-1]
    assert (mic.rate, stream.samplerate, stream.device, stream.channels) == (44100, 44100, 1, 1)
    assert mic.describe()["native_rate"] == 44100 and mic.name == "mic:USB PnP Sound Device"
    block = np.ones((882, 1), dtype=np.float32)
    stream.callback(block, 882, None, status())
    block[:] = 0  # PortAudio reuses its buffer: the queued block must be a copy
    stop = threading.Event()
    got = next(mic.blocks(stop))
    assert got.shape == (882, 1) and got.min() == 1.0
    stop.set()


def test_overflows_and_drops_are_counted_not_raised(fake_sd: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "QUEUE_BLOCKS", 4)
    mic = sources.MicSource()
    stream = FakeStream.instances[-1]
    for i in range(10):
        stream.callback(np.zeros((10, 1), dtype=np.float32), 10, None, status(overflow=i % 3 == 0))
    assert mic.stats.overflows == 4 and mic.stats.dropped == 6


def test_a_vanished_device_is_reopened_and_reported(fake_sd: Any) -> None:
    notices: list[tuple[str, dict]] = []
    mic = sources.MicSource(1, notify=lambda kind, data: notices.append((kind, data)))
    FakeStream.instances[-1].active = False  # unplugged: PortAudio stops calling back
    stop = threading.Event()
    blocks = mic.blocks(stop)
    produced: list[np.ndarray] = []

    def consume() -> None:
        produced.extend(blocks)

    worker = threading.Thread(target=consume)
    worker.start()
    for _ in range(200):  # wait for the reopen (bounded; not a timing assertion)
        if mic.stats.reconnects:
            break
        threading.Event().wait(0.01)
    FakeStream.instances[-1].callback(np.ones((5, 1), dtype=np.float32), 5, None, status())
    for _ in range(200):
        if produced:
            break
        threading.Event().wait(0.01)
    stop.set()
    worker.join(timeout=5)
    assert [kind for kind, _ in notices] == ["device_lost", "reconnect"]
    assert mic.stats.reconnects == 1 and len(FakeStream.instances) == 2 and FakeStream.instances[0].closed
    assert produced and produced[0].shape == (5, 1)
    assert FakeStream.instances[-1].closed  # closed when the consumer stops


def test_invalid_sample_rate_is_one_line_with_the_native_rate(fake_sd: Any) -> None:
    FakeStream.fail_rate = 16000
    with pytest.raises(sources.SourceError, match=r"Invalid sample rate.*native rate is 44100 Hz") as info:
        sources.MicSource(samplerate=16000)
    assert "\n" not in str(info.value)


def test_too_many_channels_and_no_inputs(fake_sd: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(sources.SourceError, match="has 1 input channel"):
        sources.MicSource(channels=2)
    monkeypatch.setattr(fake_sd, "query_devices", lambda: DEVICES[:1])
    with pytest.raises(sources.NoMicrophoneError, match="no microphone found"):
        sources.MicSource()
