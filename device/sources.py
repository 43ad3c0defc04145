"""Where the audio of `instrument-ai run` comes from: microphone, file, stdin or the shipped demo.

Every source yields blocks of shape ``(n, channels)`` (int16 or float32) at its
own native rate; the engine downmixes and resamples. A source never blocks for
long: `blocks(stop)` checks the stop event at least every `POLL_SECONDS`, so
SIGINT / SIGTERM end the stream within one hop.

The microphone follows the rule of real-time audio: the PortAudio callback only
copies the block into a bounded queue (and counts overflows and drops); all
work happens in the consumer (the caller of `blocks`). A full queue drops the
block and counts it rather than blocking the audio thread.
"""

from __future__ import annotations

import contextlib
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from instrument_ai.device.audio_io import demo_path
from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.native_stderr import quiet_native_stderr

POLL_SECONDS = 0.05
"""Longest a source waits without looking at the stop event."""
QUEUE_BLOCKS = 256
"""Blocks the microphone queue holds (several seconds) before dropping."""

STALL_SECONDS = 2.0
"""A stream that claims to run but delivers nothing for this long is treated as lost (a dead sound server)."""
RECONNECT_FIRST_WAIT = 0.25
RECONNECT_MAX_WAIT = 5.0
"""Backoff between reopen attempts: from the first wait, doubling, up to the longest."""
REMINDER_SECONDS = 60.0
"""Longest silence of the notices during a long outage."""

Notify = Callable[[str, dict[str, Any]], None]

NO_MIC_HINT = "try `instrument-ai run --source demo`, or list inputs with `instrument-ai devices`"


class SourceError(InstrumentAIError, RuntimeError):
    """An audio source that cannot be used; the message is one line for the user."""


class NoMicrophoneError(SourceError):
    """No usable audio input device (or no PortAudio) on this machine."""

    exit_code = 3  # the CLI's documented status for "no audio input" (systemd restarts on it)


@dataclass
class SourceStats:
    blocks: int = 0
    overflows: int = 0  # blocks PortAudio flagged as input overflow (samples lost before us)
    dropped: int = 0  # blocks we dropped because the consumer fell behind
    reconnects: int = 0
    lost: int = 0  # times the input went away (each is followed by a reconnect, unless the stream stops first)


@dataclass
class Source:
    """Base: a named stream of blocks at `rate` Hz with `channels` channels."""

    name: str
    rate: int
    channels: int
    realtime: bool
    stats: SourceStats = field(default_factory=SourceStats)
    notify: Notify | None = None

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "rate": self.rate, "channels": self.channels, "realtime": self.realtime}

    def _notice(self, kind: str, **data: Any) -> None:
        if self.notify is not None:
            self.notify(kind, data)


# -- files ----------------------------------------------------------------------------------------


class FileSource(Source):
    """An audio file (anything libsndfile reads: wav, flac, ogg...), at real time or as fast as possible.

    `loop`: at the end, play it again from the start, until the stop event (a demo on a screen all day).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        realtime: bool = True,
        block_seconds: float = 0.05,
        name: str = "",
        loop: bool = False,
    ) -> None:
        import soundfile

        path = Path(path)
        size = _regular_file_size(path)  # before libsndfile: a FIFO or a device would block it or never end
        if size == 0:
            raise SourceError(f"{path}: is empty (0 bytes), not an audio file")
        check_wav_header(path, size)
        try:
            info = soundfile.info(str(path))
        except Exception as exc:  # soundfile raises several types for unreadable input
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SourceError(f"{path}: not a readable audio file ({reason})") from None
        if info.frames <= 0 or info.samplerate <= 0 or info.channels <= 0:
            raise SourceError(f"{path}: contains no audio frames")
        super().__init__(
            name=name or str(path), rate=int(info.samplerate), channels=int(info.channels), realtime=realtime
        )
        self.path = path
        self.loop = loop
        self.passes = 0  # plays started (a loop's count)
        self.frames = int(info.frames)
        self.block_frames = max(1, round(block_seconds * self.rate)) if realtime else max(1, round(0.25 * self.rate))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "loop": True} if self.loop else super().describe()

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        import soundfile

        started = time.monotonic()
        delivered = 0
        try:
            with soundfile.SoundFile(str(self.path)) as handle:
                self.passes = 1
                while not stop.is_set():
                    block = handle.read(self.block_frames, dtype="float32", always_2d=True)
                    if block.shape[0] == 0:
                        if not self.loop:
                            return
                        handle.seek(0)  # again from the start; the stream's clock runs on
                        self.passes += 1
                        continue
                    if not np.isfinite(block).all():
                        raise SourceError(f"{self.path}: contains NaN or Inf samples")
                    delivered += block.shape[0]
                    if self.realtime:  # a block is "recorded" when its last sample has been played
                        due = started + delivered / self.rate
                        while not stop.is_set() and (wait := due - time.monotonic()) > 0:
                            stop.wait(min(wait, POLL_SECONDS))
                        if stop.is_set():
                            return
                    self.stats.blocks += 1
                    yield block
        except SourceError:
            raise
        except Exception as exc:  # a file truncated or corrupted after its header
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SourceError(f"{self.path}: read failed ({reason})") from None


def _regular_file_size(path: Path) -> int:
    """The size of `path`, a regular file; SourceError (one line) for anything else."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise SourceError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(f"{path}: is not a regular file (a device or a pipe?); give an audio file")
    return info.st_size


UNKNOWN_LENGTH_SIZES = (0, 0xFFFFFFFF)
"""WAV data sizes that mean "not known": written by recorders that stream to a pipe (arecord, sox, ffmpeg)."""


def check_wav_header(path: Path, size: int) -> None:
    """Refuse a RIFF/WAVE file whose data chunk is longer than the file (a truncated copy or download).

    libsndfile silently reads what is there, so a half-copied recording would
    be classified as if it were whole. Only the chunk headers are read (at most
    a few hundred bytes), never the audio, so a 2 GB file costs nothing here.
    Anything that is not RIFF/WAVE is left to libsndfile.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            offset, block_align, rate = 12, 0, 0
            for _ in range(64):  # real files have a handful of chunks; a loop of garbage ends here
                handle.seek(offset)
                header = handle.read(8)
                if len(header) < 8:
                    return
                chunk, length = header[:4], int.from_bytes(header[4:], "little")
                if chunk == b"fmt " and length >= 16:
                    fmt = handle.read(16)
                    if len(fmt) == 16:
                        rate = int.from_bytes(fmt[4:8], "little")
                        block_align = int.from_bytes(fmt[12:14], "little")
                if chunk == b"data":
                    held = size - (offset + 8)
                    if length in UNKNOWN_LENGTH_SIZES or length >= 0x7FFFF000 or length <= held:
                        return
                    raise SourceError(
                        f"{path}: truncated WAV file: {_amount(length, block_align, rate)} of audio "
                        f"declared, {_amount(max(held, 0), block_align, rate)} present"
                    )
                offset += 8 + length + (length & 1)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _amount(n_bytes: int, block_align: int, rate: int) -> str:
    if block_align > 0 and rate > 0:
        return f"{n_bytes / block_align / rate:.2f} s"
    return f"{n_bytes} bytes"


def demo_source(*, realtime: bool = True, loop: bool = False) -> FileSource:
    """The recording that ships with the package (notes of several families, silences between)."""
    return FileSource(demo_path(), realtime=realtime, name="demo", loop=loop)


# -- stdin ----------------------------------------------------------------------------------------


class StdinSource(Source):
    """Raw signed 16-bit little-endian PCM on stdin (interleaved when several channels), e.g. from arecord."""

    def __init__(
        self, rate: int, channels: int = 1, *, stream: BinaryIO | None = None, block_frames: int = 1024
    ) -> None:
        super().__init__(name="stdin", rate=rate, channels=channels, realtime=False)
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._block_bytes = block_frames * 2 * channels
        self._queue: queue.Queue[np.ndarray | None | BaseException] = queue.Queue(maxsize=64)

    def _reader(self) -> None:
        frame_bytes = 2 * self.channels
        leftover = b""
        read = getattr(self._stream, "read1", None) or self._stream.read  # read1: return what is there now
        try:
            while True:
                chunk = read(self._block_bytes)
                if not chunk:
                    break
                data = leftover + chunk
                usable = len(data) - len(data) % frame_bytes
                leftover = data[usable:]
                if usable:
                    block = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, self.channels)
                    self._queue.put(block)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which reports it
            self._queue.put(exc)
            return
        self._queue.put(None)

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        threading.Thread(target=self._reader, name="stdin-reader", daemon=True).start()
        while not stop.is_set():
            try:
                item = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise SourceError(f"stdin: read failed ({item})")
            self.stats.blocks += 1
            yield item


# -- microphone -----------------------------------------------------------------------------------


def _sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio into a one-line NoMicrophoneError."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise NoMicrophoneError(f"no audio input available (PortAudio: {exc}); {NO_MIC_HINT}") from None
    return sounddevice


def input_devices() -> list[dict[str, Any]]:
    """The input devices PortAudio sees: index, name, channels, native rate, host API, default flag."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except Exception as exc:  # PortAudioError and friends
        raise NoMicrophoneError(f"cannot list audio devices ({exc}); {NO_MIC_HINT}") from None
    out = []
    for index, device in enumerate(devices):
        if device["max_input_channels"] <= 0:
            continue
        out.append(
            {
                "index": index,
                "name": device["name"],
                "channels": int(device["max_input_channels"]),
                "rate": int(round(device["default_samplerate"])),
                "hostapi": hostapis[device["hostapi"]]["name"],
                "default": index == default_in,
            }
        )
    return out


def resolve_device(device: str | int | None) -> dict[str, Any]:
    """Pick an input device by index, by name substring (case-insensitive), or the default one."""
    devices = input_devices()
    if not devices:
        raise NoMicrophoneError(f"no microphone found; {NO_MIC_HINT}")
    if device is None or device == "":
        return next((d for d in devices if d["default"]), devices[0])
    text = str(device).strip()
    if text.lstrip("-").isdigit():
        wanted = int(text)
        for candidate in devices:
            if candidate["index"] == wanted:
                return candidate
        raise SourceError(f"--device {wanted}: no input device with that index (see `instrument-ai devices`)")
    matches = [d for d in devices if text.lower() in d["name"].lower()]
    if not matches:
        raise SourceError(f"--device {text!r}: no input device name contains it (see `instrument-ai devices`)")
    exact = [d for d in matches if d["name"].lower() == text.lower()]
    return (exact or matches)[0]


class MicSource(Source):
    """A sounddevice InputStream at the device's native rate (or `samplerate`); reconnects if the device goes.

    Survival rules (a daemon on a Pi runs for months): a stream that stops
    (USB microphone unplugged, sound server restarted) or goes quiet for
    `stall_seconds` while claiming to run is closed and reopened with
    exponential backoff (`RECONNECT_FIRST_WAIT` doubling to
    `RECONNECT_MAX_WAIT`), re-initialising PortAudio so that a re-plugged
    device is found again under its name; each loss and each recovery is one
    notice (``device_lost``, ``reconnect``), a long outage adds a
    ``reconnect_waiting`` reminder per `REMINDER_SECONDS`. Overflows and drops
    are counted, and reported as an ``overflow`` notice at most every
    `REMINDER_SECONDS / 6`.
    """

    def __init__(
        self,
        device: str | int | None = None,
        *,
        samplerate: int | None = None,
        channels: int = 1,
        block_seconds: float = 0.02,
        reconnect: bool = True,
        notify: Notify | None = None,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        chosen = resolve_device(device)
        if channels > chosen["channels"]:
            raise SourceError(f"{chosen['name']}: has {chosen['channels']} input channel(s), {channels} asked")
        rate = int(samplerate or chosen["rate"])
        super().__init__(name=f"mic:{chosen['name']}", rate=rate, channels=channels, realtime=True, notify=notify)
        self.device = chosen
        self.block_frames = max(1, round(block_seconds * rate))
        self.reconnect = reconnect
        self.stall_seconds = stall_seconds
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=QUEUE_BLOCKS)
        self._stream: Any = None
        self._reported = (0, 0)  # overflows, dropped already reported
        self._next_overflow_notice = 0.0
        self._open()  # fail now, with a clear message, rather than in the loop

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": self.device["index"], "native_rate": self.device["rate"]}

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """The PortAudio thread: copy and enqueue, nothing else."""
        if status.input_overflow:
            self.stats.overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.stats.dropped += 1

    def _open(self) -> None:
        sd = _sounddevice()
        try:
            stream = sd.InputStream(
                device=self.device["index"],
                samplerate=self.rate,
                channels=self.channels,
                dtype="float32",
                blocksize=self.block_frames,
                callback=self._callback,
            )
            stream.start()
        except Exception as exc:  # PortAudioError: "Invalid sample rate [-9997]" and friends
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hint = f" (its native rate is {self.device['rate']} Hz; omit --samplerate)" if "rate" in reason else ""
            raise SourceError(f"cannot open input {self.device['name']!r} at {self.rate} Hz: {reason}{hint}") from None
        self._stream = stream

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.stop()
                self._stream.close()
            self._stream = None

    def _alive(self) -> bool:
        try:
            return self._stream is not None and bool(self._stream.active)
        except Exception:  # noqa: BLE001 - a vanished device can make even this raise
            return False

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        last_block = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    block = self._queue.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    quiet = time.monotonic() - last_block
                    if not self._alive():
                        self._recover(stop, "the input stream stopped")
                        last_block = time.monotonic()
                    elif quiet > self.stall_seconds:
                        self._recover(stop, f"no audio for {quiet:.1f} s")
                        last_block = time.monotonic()
                    continue
                last_block = time.monotonic()
                self.stats.blocks += 1
                self._report_overflows()
                yield block
        finally:
            self.close()

    def _report_overflows(self) -> None:
        counts = (self.stats.overflows, self.stats.dropped)
        if counts != self._reported and time.monotonic() >= self._next_overflow_notice:
            self._notice("overflow", overflows=counts[0], dropped=counts[1])
            self._reported = counts
            self._next_overflow_notice = time.monotonic() + REMINDER_SECONDS / 6

    def _recover(self, stop: threading.Event, reason: str) -> None:
        """The stream died (USB microphone unplugged?): reopen it with backoff until it works or we stop."""
        if not self.reconnect:
            raise SourceError(f"input {self.device['name']!r} stopped delivering audio ({reason})")
        self.close()
        self.stats.lost += 1
        lost_at = time.monotonic()
        self._notice("device_lost", device=self.device["name"], reason=reason)
        wait, attempts, remind_at = RECONNECT_FIRST_WAIT, 0, lost_at + REMINDER_SECONDS
        while not stop.is_set():
            attempts += 1
            try:
                with quiet_native_stderr():  # PortAudio and ALSA print several lines per failed attempt
                    _reinitialize_portaudio()
                    self.device = resolve_device(self.device["name"])
                    self._open()
            except SourceError as exc:
                if time.monotonic() >= remind_at:
                    down = round(time.monotonic() - lost_at, 1)
                    self._notice(
                        "reconnect_waiting",
                        device=self.device["name"],
                        attempts=attempts,
                        down_seconds=down,
                        error=str(exc),
                    )
                    remind_at = time.monotonic() + REMINDER_SECONDS
                stop.wait(wait)
                wait = min(2 * wait, RECONNECT_MAX_WAIT)
                continue
            self.stats.reconnects += 1
            down = round(time.monotonic() - lost_at, 2)
            self._notice("reconnect", device=self.device["name"], attempts=attempts, down_seconds=down)
            return


def _reinitialize_portaudio() -> None:
    """Make PortAudio enumerate devices again (it lists them once, at initialisation); only with no stream open."""
    sd = _sounddevice()
    terminate, initialize = getattr(sd, "_terminate", None), getattr(sd, "_initialize", None)
    if terminate is None or initialize is None:
        return
    with contextlib.suppress(Exception):
        terminate()
    with contextlib.suppress(Exception):
        initialize()
