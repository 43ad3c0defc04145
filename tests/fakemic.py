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

import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from instrument_ai.device.frontend import DEFAULT_SPEC, FrontendSpec, dct_matrix

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_MODEL = REPO / "models" / "default.tflite"
PREVIOUS_MODEL = REPO / "models" / "default-0.4.0.tflite"
"""The previous release (0.4.0): its bundle has no embedding output, so the tests of the MFCC fallback and of
`convert --add-embedding` use it, and the enrolment table of models/README.md was measured on it."""

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
    windows: list[np.ndarray] = field(default_factory=list)  # every input, for tests of what the model saw

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    @property
    def window_samples(self) -> int:
        return self.spec.window_samples(self.window_frames)

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.shapes.append(features.shape)
        self.windows.append(features.copy())
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


# -- a tiny real bundle (no tensorflow): reshape -> fully connected -> softmax ---------------------


def tiny_tflite(weights: np.ndarray, bias: np.ndarray, n_mfcc: int, frames: int) -> bytes:
    """A float32 TFLite model [1, n_mfcc, frames, 1] -> softmax(W x + b), written with the flatbuffers schema."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    n_out, n_in = weights.shape
    assert n_in == n_mfcc * frames

    def buffer(data: bytes | None) -> object:
        b = schema.BufferT()
        b.data = None if data is None else np.frombuffer(data, dtype=np.uint8)
        return b

    def tensor(name: str, shape: list[int], kind: int, buffer_index: int) -> object:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, kind, buffer_index
        return t

    def opcode(builtin: int) -> object:
        c = schema.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), 1
        return c

    f32, i32 = schema.TensorType.FLOAT32, schema.TensorType.INT32
    model = schema.ModelT()
    model.version = 3
    model.description = "instrument-ai test model"
    model.buffers = [
        buffer(None),
        buffer(None),  # input
        buffer(np.array([1, n_in], dtype=np.int32).tobytes()),
        buffer(None),  # flat
        buffer(weights.astype(np.float32).tobytes()),
        buffer(bias.astype(np.float32).tobytes()),
        buffer(None),  # logits
        buffer(None),  # probs
    ]
    graph = schema.SubGraphT()
    graph.tensors = [
        tensor("features", [1, n_mfcc, frames, 1], f32, 1),
        tensor("shape", [2], i32, 2),
        tensor("flat", [1, n_in], f32, 3),
        tensor("weights", [n_out, n_in], f32, 4),
        tensor("bias", [n_out], f32, 5),
        tensor("logits", [1, n_out], f32, 6),
        tensor("probs", [1, n_out], f32, 7),
    ]
    graph.inputs, graph.outputs, graph.name = [0], [6], "main"
    graph.outputs = [6]
    reshape = schema.OperatorT()
    reshape.opcodeIndex, reshape.inputs, reshape.outputs = 0, [0, 1], [2]
    dense = schema.OperatorT()
    dense.opcodeIndex, dense.inputs, dense.outputs = 1, [2, 3, 4], [5]
    dense.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    dense.builtinOptions = schema.FullyConnectedOptionsT()
    softmax = schema.OperatorT()
    softmax.opcodeIndex, softmax.inputs, softmax.outputs = 2, [5], [6]
    softmax.builtinOptionsType = schema.BuiltinOptions.SoftmaxOptions
    options = schema.SoftmaxOptionsT()
    options.beta = 1.0
    softmax.builtinOptions = options
    graph.operators = [reshape, dense, softmax]
    model.subgraphs = [graph]
    model.operatorCodes = [
        opcode(schema.BuiltinOperator.RESHAPE),
        opcode(schema.BuiltinOperator.FULLY_CONNECTED),
        opcode(schema.BuiltinOperator.SOFTMAX),
    ]
    builder = flatbuffers.Builder(n_in * n_out * 4 + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


TINY_CLASSES = {"low": (80.0, 330.0), "mid": (600.0, 1500.0), "high": (2500.0, 6000.0)}
TINY_TEST_TONES = {"low": 200.0, "mid": 1000.0, "high": 4000.0}


def _tone_windows(rng: np.random.Generator, spec: FrontendSpec, frames: int, count: int) -> tuple[np.ndarray, list]:
    """Raw MFCC windows of random tones (0-2 harmonics) and their classes.

    Like the windows of a model trained on notes: each starts with the note
    (half of them at its attack, half inside it) and some end with silence
    (a note shorter than the window), never with silence before the note.
    """
    from instrument_ai.device.frontend import mfcc

    n = spec.window_samples(frames)
    windows, labels = [], []
    for i in range(count):
        name = list(TINY_CLASSES)[i % len(TINY_CLASSES)]
        low, high = TINY_CLASSES[name]
        f0 = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        t = np.arange(n) / spec.sample_rate
        partials = int(rng.integers(1, 4))
        note = sum(0.5**k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(partials) if f0 * (k + 1) < 7500)
        note = note * 10 ** rng.uniform(-2.5, 0) * 0.6
        length = n if rng.random() < 0.5 else int(rng.uniform(0.2, 1.0) * n)  # the first 8 frames hold the note
        x = np.zeros(n)
        x[:length] = note[:length]
        x += rng.standard_normal(n) * (0.0 if i % 2 else 10 ** rng.uniform(-5, -3))  # digital silence or a noise floor
        windows.append(mfcc(x, spec))
        labels.append(name)
    return np.stack(windows), labels


@functools.lru_cache(maxsize=4)
def tiny_bundle_bytes(seed: int = 0, name: str = "tiny-test", version: str = "1") -> bytes:
    """A real bundle (metadata, golden vectors, self-test) of a linear low/mid/high tone classifier.

    Trained here by ridge regression on the normalised MFCCs of the first 8
    frames of tone windows (about a second of CPU), so no model file is
    committed; written by the real bundle writer and loaded by the real reader.
    """
    from instrument_ai.convert.bundle_writer import build_bundle

    spec, frames = DEFAULT_SPEC, 59
    rng = np.random.default_rng(seed)
    x, labels = _tone_windows(rng, spec, frames, 300)
    mean = x.mean(axis=(0, 2))
    std = x.std(axis=(0, 2)) + 1e-3
    first = 8  # the model looks at the window's first 8 frames (0.19 s), where a note's window starts
    z = ((x[:, :, :first] - mean[None, :, None]) / std[None, :, None]).mean(axis=2)  # (N, n_mfcc)
    classes = list(TINY_CLASSES)
    target = np.array([[1.0 if lab == c else 0.0 for c in classes] for lab in labels])
    design = np.concatenate([z, np.ones((z.shape[0], 1))], axis=1)
    coef = np.linalg.solve(design.T @ design + 1e-2 * np.eye(design.shape[1]), design.T @ (8.0 * target - 4.0))
    w40, bias = coef[:-1].T, coef[-1]
    weights = np.zeros((len(classes), spec.n_mfcc, frames))
    weights[:, :, :first] = w40[:, :, None] / first
    weights = weights.reshape(len(classes), -1)
    model = tiny_tflite(weights, bias, spec.n_mfcc, frames)
    metadata = {
        "name": name,
        "version": version,
        "quantization": "float32",
        "labels": classes,
        "frontend_spec": spec.to_dict(),
        "sample_rate": spec.sample_rate,
        "window_frames": frames,
        "window_samples": spec.window_samples(frames),
        "window_seconds": spec.window_samples(frames) / spec.sample_rate,
        "default_hop_seconds": 0.25,
        "input_normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "training": {"note": "tests/fakemic.py tiny linear tone classifier"},
        "metrics": {},
    }
    golden = x[:3].astype(np.float32)
    data, _ = build_bundle(model, metadata, golden, labels[:3])
    return data


def write_tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write the tiny bundle (built once per process) into a fresh temporary folder; for session fixtures."""
    path = tmp_path_factory.mktemp("tiny-bundle") / "tiny.tflite"
    path.write_bytes(tiny_bundle_bytes())
    return path
