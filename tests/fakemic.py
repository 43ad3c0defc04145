"""Test helpers of the device runtime: a fake bundle, test signals, and a PulseAudio fake microphone.

`FakeBundle` has the attributes of `instrument_ai.device.bundle.Bundle` that the
engine uses, and a deterministic "model": the spectral centroid of the window
(recovered from the MFCCs by the transposed DCT) picks "low", "mid" or "high".
A pure tone of 200 Hz is "low", 1 kHz "mid", 4 kHz "high", so engine tests can
state exactly which label must appear when, without a trained model.

`PulseFakeMic` starts a private PulseAudio server whose null sink's monitor is
remapped into a source: whatever `paplay` plays into the sink is what a
sounddevice `InputStream` records, i.e. the real PortAudio -> ALSA -> Pulse path.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from instrument_ai.device.frontend import DEFAULT_SPEC, FrontendSpec, dct_matrix

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_MODEL = REPO / "models" / "default.tflite"

FAKE_LABELS = ["low", "mid", "high"]
_CENTRES = np.array([4.0, 25.0, 52.0])  # mel-band centroid of each class (200 Hz ~ 3, 1 kHz ~ 20, 4 kHz ~ 50)


@dataclass
class FakeBundle:
    """A stand-in bundle: spectral-centroid classifier over `FAKE_LABELS`; counts its calls.

    The centroid (in mel bands) is computed per frame and averaged over the
    frames within 40 dB of the loudest, so a window that is 3/4 one tone and
    1/4 another is classified as the first one.
    """

    spec: FrontendSpec = DEFAULT_SPEC
    window_frames: int = 59
    default_hop_seconds: float = 0.25
    sharpness: float = 1.0 / 3.0  # 0 gives uniform probabilities (always "unknown")
    labels: list[str] = field(default_factory=lambda: list(FAKE_LABELS))
    runtime: str = "fake"
    name: str = "fake"
    version: str = "0"
    calls: int = 0
    shapes: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    @property
    def window_samples(self) -> int:
        return self.spec.window_samples(self.window_frames)

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.shapes.append(features.shape)
        assert features.dtype == np.float32
        log_mel = dct_matrix(self.spec).T @ features.astype(np.float64)
        peak = log_mel.max(axis=0)
        active = peak > log_mel.max() - 40.0  # frames within 40 dB of the loudest: the sounding part
        weights = 10.0 ** ((log_mel[:, active] - peak[active]) / 10.0)
        per_frame = (weights * np.arange(log_mel.shape[0])[:, None]).sum(axis=0) / weights.sum(axis=0)
        centroid = float(per_frame.mean())
        scores = -self.sharpness * np.abs(centroid - _CENTRES)
        probs = np.exp(scores - scores.max())
        return (probs / probs.sum()).astype(np.float32)

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        return np.stack([self.predict(f) for f in features])


def tone(freq: float, seconds: float, rate: int = 16000, amplitude: float = 0.5, start: int = 0) -> np.ndarray:
    """A sine tone with 5 ms fades, float64."""
    n = round(seconds * rate)
    t = (np.arange(n) + start) / rate
    out = amplitude * np.sin(2 * np.pi * freq * t)
    fade = min(n // 2, round(0.005 * rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        out[:fade] *= ramp
        out[n - fade :] *= ramp[::-1]
    return out


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(round(seconds * rate))


def sequence(parts: list[tuple[float | None, float]], rate: int = 16000) -> np.ndarray:
    """Concatenate (freq or None for silence, seconds) parts."""
    return np.concatenate([silence(s, rate) if f is None else tone(f, s, rate) for f, s in parts])


# -- the PulseAudio fake microphone -----------------------------------------------------------


class PulseFakeMic:
    """A private PulseAudio server with a null sink `fakemic` whose monitor is the default source `fakemic_src`.

    Use as a context manager; `env` holds PULSE_SERVER for child processes;
    `play(path)` plays a file into the sink with paplay. The server is stopped
    by its own pid (never by name) on exit.
    """

    def __init__(self, rate: int = 48000) -> None:
        missing = [tool for tool in ("pulseaudio", "paplay", "pactl") if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(
                f"{', '.join(missing)} not installed: the fake-microphone test needs "
                "apt-get install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2 (make apt)"
            )
        self.rate = rate
        self.dir = Path(tempfile.mkdtemp(prefix="fakemic-"))
        self.socket = self.dir / "native"
        self.pid: int | None = None
        self.env = dict(os.environ)
        self.env.update(
            PULSE_SERVER=f"unix:{self.socket}",
            PULSE_RUNTIME_PATH=str(self.dir),
            XDG_RUNTIME_DIR=str(self.dir),
            HOME=str(self.dir),
            PULSE_SOURCE="fakemic_src",
            PULSE_SINK="fakemic",
        )

    def __enter__(self) -> PulseFakeMic:
        command = [
            "pulseaudio",
            "--daemonize=yes",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--use-pid-file=yes",
            "--log-target=stderr",
            "-n",
            "-L",
            f"module-native-protocol-unix socket={self.socket} auth-anonymous=1",
            "-L",
            f"module-null-sink sink_name=fakemic rate={self.rate} channels=1",
            "-L",
            "module-remap-source master=fakemic.monitor source_name=fakemic_src",
            "-L",
            "module-always-sink",
        ]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"pulseaudio failed to start: {result.stderr.strip().splitlines()[-1:]}")
        pid_file = self.dir / "pid"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text().strip():
                self.pid = int(pid_file.read_text().split()[0])
                probe = subprocess.run(["pactl", "info"], env=self.env, capture_output=True, text=True)
                if probe.returncode == 0:
                    subprocess.run(["pactl", "set-default-source", "fakemic_src"], env=self.env, check=True)
                    return self
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError("pulseaudio did not come up within 10 s")

    def play(self, path: Path) -> subprocess.Popen:
        return subprocess.Popen(
            ["paplay", "--device=fakemic", str(path)], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def __exit__(self, *exc: object) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    os.kill(self.pid, 0)
                    time.sleep(0.05)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)
