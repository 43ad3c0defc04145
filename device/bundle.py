"""One self-verifying model file: a `.tflite` whose flatbuffer metadata says how to feed it.

A bundle is a valid TFLite model that any interpreter loads. Its `Model.metadata`
list holds an entry named ``instrument_ai`` pointing to a buffer with one JSON
document (UTF-8): labels, the exact frontend spec, window and hop, the input
normalisation, quantisation parameters, provenance, headline metrics, golden
test vectors and two digests. The device reads it with numpy, flatbuffers and
the interpreter only (see `tflite_file`), and refuses, with one line, any file
it cannot run exactly as it was trained: a model that silently gets the wrong
features is worse than no model.

Integrity (schema version 1), recomputable on the device from the bundle alone:

* ``integrity.model_sha256``: SHA-256 of the whole file with the bytes of the
  ``instrument_ai`` JSON payload (the data of its buffer, not its 4-byte
  length) replaced by zero bytes. It covers every weight, tensor, operator and
  the flatbuffer layout itself - everything except the metadata text.
* ``integrity.metadata_sha256``: SHA-256 of the canonical JSON of the metadata
  without its ``integrity`` and ``signature`` members (`canonical_json`:
  sorted keys, no spaces, ASCII). Together the two digests cover every byte.
* ``signature`` (optional): an ed25519 signature of `signing_message`, which
  names both digests; checked only when the device is given a trusted key.

The writer (`instrument_ai.convert.bundle_writer`) fills the digest and
signature fields with fixed-length hex, so writing them never changes the
payload length and hence never the model digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device import tflite_file
from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.frontend import FrontendSpec, MfccStream
from instrument_ai.device.interpreter import RuntimeUnavailable, make_interpreter
from instrument_ai.device.openset import OpenSetError, rejection_from_metadata
from instrument_ai.device.settings import bundle_engine_defaults

BUNDLE_SCHEMA_VERSION = 1
"""Bumped whenever the meaning of a metadata field changes; a device refuses versions it does not know."""

METADATA_NAME = "instrument_ai"
"""Name of the Model.metadata entry that holds the bundle's JSON."""

SCHEMA_ID = "instrument_ai.bundle"
UNSIGNED_MEMBERS = ("integrity", "signature")
"""Metadata members not covered by `metadata_sha256` (they are derived from it)."""

INT8_GOLDEN_TOLERANCE = 1
"""Golden outputs of an int8 model may differ by one quantisation step (another runtime's kernels round differently)."""
FLOAT_GOLDEN_TOLERANCE = 1e-3
"""Golden outputs of a float model: a probability may move by 1e-3 between runtimes (one int8 step is 4e-3)."""

INT8_KERNEL_TOLERANCE: dict[str, float] = {"tflite-runtime": 12}
"""Int8 golden tolerance (output steps) of runtimes whose int8 kernels are not the ones that made the golden outputs.

The writer computes the expected outputs with ai-edge-litert, whose XNNPACK int8 kernels requantize in
float and round half to even; tensorflow.lite 2.21 gives the same bytes. tflite-runtime 2.14 (its last
release, and the only runtime for 32-bit Raspberry Pi OS) runs TFLite's own int8 kernels, which requantize
with a fixed-point multiplier and round half away from zero: the same bytes as ai-edge-litert with its
reference kernels. A one-step difference after the first convolution grows through the network. Measured
on the shipped model over 655 windows (the demo clip and random MFCCs): up to 10 output steps, 99 % within
6.5, top-1 different on 5; its golden vector differs by 4. A broken kernel is far outside this (XNNPACK
under qemu's default CPU model: 116 steps), so 12 keeps the self-test meaningful.
"""


class BundleError(InstrumentAIError):
    """A bundle the device refuses; the message is one line and names the file and the reason."""


class UntrustedBundle(BundleError):
    """A bundle the trusted key does not vouch for: unsigned, signed by another key, or changed since signing."""


# -- digests --------------------------------------------------------------------------------


def canonical_json(metadata: dict[str, Any]) -> bytes:
    """The bytes `metadata_sha256` is computed over: the metadata without its unsigned members."""
    signed = {key: value for key, value in metadata.items() if key not in UNSIGNED_MEMBERS}
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def metadata_digest(metadata: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(metadata)).hexdigest()


def model_digest(data: bytes, payload: tuple[int, int]) -> str:
    """SHA-256 of `data` with the metadata payload at (start, length) read as zeros."""
    start, length = payload
    view = memoryview(data)
    digest = hashlib.sha256(view[:start])
    digest.update(bytes(length))
    digest.update(view[start + length :])
    return digest.hexdigest()


def signing_message(metadata: dict[str, Any]) -> bytes:
    """What an ed25519 bundle signature signs: both digests, so it covers every byte of the file."""
    integrity = metadata.get("integrity") or {}
    return (
        f"instrument_ai bundle\nschema_version={metadata.get('schema_version')}\n"
        f"model_sha256={integrity.get('model_sha256')}\nmetadata_sha256={integrity.get('metadata_sha256')}\n"
    ).encode()


# -- features <-> tensors ---------------------------------------------------------------------


def encode_features(features: np.ndarray) -> str:
    """Raw MFCCs of a golden vector as base64 float16 (half the size of float32, ample for a test vector)."""
    return base64.b64encode(np.asarray(features, dtype="<f2").tobytes()).decode("ascii")


def decode_features(text: str, shape: tuple[int, int]) -> np.ndarray:
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    expected = 2 * shape[0] * shape[1]
    if len(raw) != expected:
        raise ValueError(f"golden vector has {len(raw)} bytes, expected {expected} for {shape[0]}x{shape[1]}")
    return np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(shape)


@dataclass(frozen=True)
class TensorCodec:
    """How a float tensor becomes the model's input, and its output becomes probabilities."""

    dtype: str  # "int8" or "float32"
    scale: float
    zero_point: int

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> TensorCodec:
        dtype = np.dtype(details["dtype"]).name
        scale, zero_point = details.get("quantization", (0.0, 0))
        return cls(dtype=dtype, scale=float(scale), zero_point=int(zero_point))

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "scale": self.scale, "zero_point": self.zero_point}

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if self.dtype == "float32":
            return x.astype(np.float32, copy=False)
        info = np.iinfo(self.dtype)
        q = np.rint(x / np.float32(self.scale)) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        if self.dtype == "float32":
            return q.astype(np.float32, copy=False)
        return ((q.astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)).astype(np.float32)


# -- the bundle ---------------------------------------------------------------------------------


class Bundle:
    """A loaded, verified bundle: metadata plus a ready interpreter. Not thread-safe (one interpreter)."""

    def __init__(
        self, path: str, metadata: dict[str, Any], model: tflite_file.ModelFile, interpreter: Any, runtime: str
    ) -> None:
        self.path = path
        self.metadata = metadata
        self.model = model
        self.runtime = runtime
        self.name: str = metadata["name"]
        self.version: str = metadata["version"]
        self.labels: list[str] = list(metadata["labels"])
        self.spec = FrontendSpec.from_dict(metadata["frontend_spec"])
        self.window_frames: int = metadata["window_frames"]
        self.window_samples: int = metadata["window_samples"]
        self.sample_rate: int = metadata["sample_rate"]
        self.default_hop_seconds: float = float(metadata["default_hop_seconds"])
        self.engine_defaults: dict[str, Any] = bundle_engine_defaults(metadata)
        """The decision rule and floor its maker chose (`settings.EngineSettings.resolved`); {} for none."""
        norm = metadata["input_normalization"]
        self.mean = np.asarray(norm["mean"], dtype=np.float32)
        self.std = np.asarray(norm["std"], dtype=np.float32)
        self._interpreter = interpreter
        input_details = interpreter.get_input_details()[0]
        outputs = interpreter.get_output_details()
        output_details = outputs[0]
        self._input_index = input_details["index"]
        self._output_index = output_details["index"]
        self.input_codec = TensorCodec.from_details(input_details)
        self.output_codec = TensorCodec.from_details(output_details)
        self.input_shape = tuple(int(v) for v in input_details["shape"])
        self.output_size = int(np.prod(output_details["shape"][1:]))
        self.model_outputs = len(outputs)
        self._embedding_index: int | None = None
        self.embedding_codec: TensorCodec | None = None
        self.embedding_size = 0  # 0: no embedding output (bundles up to 0.4.0)
        declared = metadata.get("embedding")
        position = declared.get("output") if isinstance(declared, dict) else None
        if isinstance(position, int) and not isinstance(position, bool) and 0 < position < len(outputs):
            details = outputs[position]
            self._embedding_index = details["index"]
            self.embedding_codec = TensorCodec.from_details(details)
            self.embedding_size = int(np.prod(details["shape"][1:]))
        self.self_test: dict[str, Any] | None = None
        self.load_ms: float | None = None

    @property
    def n_features(self) -> int:
        """Rows of one input frame: MFCCs, or log-mel bands (the spec's `stage`)."""
        return self.spec.n_features

    @property
    def n_mfcc(self) -> int:
        """The input rows under their old name (MFCC bundles); `n_features` says the same for any stage."""
        return self.spec.n_features

    @property
    def file_bytes(self) -> int:
        return len(self.model.data)

    def __repr__(self) -> str:
        return f"Bundle({self.name} {self.version}, {len(self.labels)} labels, {self.runtime})"

    # -- inference --------------------------------------------------------------------------
    def input_tensor(self, features: np.ndarray) -> np.ndarray:
        """Raw feature windows (N, n_features, frames) -> the model's input tensor (N, n_features, frames, 1)."""
        x = (features.astype(np.float32, copy=False) - self.mean[:, None]) / self.std[:, None]
        return self.input_codec.quantize(x)[..., None]

    def invoke_raw(self, tensor: np.ndarray) -> np.ndarray:
        """Run one input tensor (1, n_features, frames, 1); return the raw output row (int8 or float32)."""
        self._interpreter.set_tensor(self._input_index, tensor)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output_index).reshape(-1).copy()

    def raw_embedding(self) -> np.ndarray | None:
        """The embedding output (raw int8 or float32) of the last invoke; None for a bundle without one."""
        if self._embedding_index is None:
            return None
        return self._interpreter.get_tensor(self._embedding_index).reshape(-1).copy()

    def last_embedding(self) -> np.ndarray | None:
        """The network's penultimate activations (float32, `embedding_size`) for the window of the last
        `predict`/`invoke_raw`: what a personal head learns on. None when the bundle has no embedding output."""
        raw = self.raw_embedding()
        if raw is None or self.embedding_codec is None:
            return None
        return self.embedding_codec.dequantize(raw)

    def _check_features(self, features: Any, batch: bool) -> np.ndarray:
        if not isinstance(features, np.ndarray):
            raise ValueError(f"features must be a numpy array, got {type(features).__name__}")
        window = (self.n_features, self.window_frames)
        if (features.shape[1:] if batch else features.shape) != window or features.ndim != (3 if batch else 2):
            want = f"(N, {window[0]}, {window[1]})" if batch else str(window)
            raise ValueError(f"features must have shape {want} (features, window frames), got {features.shape}")
        if not np.isfinite(features).all():
            raise ValueError("features contain NaN or Inf")
        return features

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probabilities (n_labels,) float32 for one window of raw features (n_features, window_frames)."""
        features = self._check_features(features, batch=False)
        raw = self.invoke_raw(self.input_tensor(features[None]))
        return self.output_codec.dequantize(raw)

    def predict_batch(self, features: np.ndarray) -> np.ndarray:
        """Probabilities (N, n_labels) for N windows (N, n_features, window_frames).

        One invoke per window on the batch-1 interpreter. Measured on a 3-conv
        int8 CNN (40x59 input, ai-edge-litert, 1 thread): 1.8-2.0 ms per window
        looping vs 1.9-2.3 ms after resizing the input to N = 64..256, so the
        loop costs nothing, lets the converter fix the batch at 1 (no run-time
        shape ops), and never reallocates the arena of an interpreter that the
        streaming engine shares.
        """
        features = self._check_features(features, batch=True)
        out = np.empty((features.shape[0], len(self.labels)), dtype=np.float32)
        if features.shape[0] == 0:
            return out
        tensors = self.input_tensor(features)
        for i in range(features.shape[0]):
            out[i] = self.output_codec.dequantize(self.invoke_raw(tensors[i : i + 1]))
        return out

    # -- self-test ------------------------------------------------------------------------------
    def run_self_test(self) -> dict[str, Any]:
        """Run the golden vectors; BundleError when an output is more than the tolerance away."""
        golden = self.metadata["golden"]
        tolerance = golden_tolerance(float(golden["tolerance"]), self.runtime, int8=self.output_codec.dtype == "int8")
        worst = 0.0
        started = time.perf_counter()
        for i, vector in enumerate(golden["vectors"]):
            try:
                features = decode_features(vector["features_f16"], (self.n_features, self.window_frames))
                expected = np.asarray(vector["expected"], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as exc:
                raise BundleError(f"{self.path}: golden vector {i} is malformed ({exc})") from None
            if expected.shape != (self.output_size,):
                raise BundleError(
                    f"{self.path}: golden vector {i} has {expected.size} outputs, the model has {self.output_size}"
                )
            got = self.invoke_raw(self.input_tensor(features[None])).astype(np.float64)
            error = float(np.max(np.abs(got - expected)))
            worst = max(worst, error)
            if not error <= tolerance:
                raise BundleError(
                    f"{self.path}: golden vector {i} ({vector.get('label', '?')}) failed the self-test on "
                    f"{self.runtime}: output differs by {error:g} (tolerance {tolerance:g})"
                )
            worst = max(worst, self._check_golden_embedding(i, vector, tolerance))
        self.self_test = {
            "passed": True,
            "vectors": len(golden["vectors"]),
            "max_error": worst,
            "tolerance": tolerance,
            "ms": (time.perf_counter() - started) * 1e3,
        }
        return self.self_test

    def _check_golden_embedding(self, i: int, vector: dict[str, Any], tolerance: float) -> float:
        """The embedding of golden vector `i` (just invoked) against its stored `embedding_expected`: the largest
        difference; BundleError when it is missing, the wrong size, or further away than `tolerance`."""
        got = self.raw_embedding()
        if got is None:
            return 0.0
        try:
            expected = np.asarray(vector["embedding_expected"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{self.path}: golden vector {i} has no valid expected embedding") from None
        if expected.shape != (self.embedding_size,):
            raise BundleError(
                f"{self.path}: golden vector {i} has {expected.size} embedding values, the model has "
                f"{self.embedding_size}"
            )
        error = float(np.max(np.abs(got.astype(np.float64) - expected))) if expected.size else 0.0
        if got.dtype != np.int8:  # float activations are not probabilities: the tolerance scales with them
            tolerance *= max(1.0, float(np.max(np.abs(expected), initial=0.0)))
        if not error <= tolerance:
            raise BundleError(
                f"{self.path}: golden vector {i} ({vector.get('label', '?')}) failed the self-test on "
                f"{self.runtime}: embedding differs by {error:g} (tolerance {tolerance:g})"
            )
        return error


def golden_tolerance(tolerance: float, runtime: str, *, int8: bool) -> float:
    """The bundle's golden tolerance, widened for a runtime whose int8 kernels round differently (see above)."""
    if int8:
        return max(tolerance, float(INT8_KERNEL_TOLERANCE.get(runtime.split(" ")[0], tolerance)))
    return tolerance


# -- reading --------------------------------------------------------------------------------------


def _fail(path: str, reason: str) -> BundleError:
    return BundleError(f"{path}: {reason}")


def _untrusted(path: str, reason: str) -> UntrustedBundle:
    return UntrustedBundle(f"{path}: {reason}")


MAX_BUNDLE_BYTES = 64 * 1024 * 1024
"""Far above any model this project makes (~100 KB); refusing early keeps a 2 GB file out of memory."""


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a bundle file; BundleError for a missing, unreadable, empty, huge or special file."""
    source = Path(path)
    try:
        if source.is_dir():
            raise _fail(str(path), "is a directory, not a bundle file")
        if source.exists() and not source.is_file():
            raise _fail(str(path), "is not a regular file")
        size = source.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            raise _fail(str(path), f"is {size / 2**20:.0f} MB, too large to be a model bundle (limit 64 MB)")
        data = source.read_bytes()
    except OSError as exc:
        raise _fail(str(path), f"cannot read ({exc.strerror or exc})") from None
    if not data:
        raise _fail(str(path), "is empty")
    return data


def parse_bundle(data: bytes, path: str = "<bundle>") -> tuple[dict[str, Any], tflite_file.ModelFile]:
    """Parse and integrity-check a bundle's bytes: (metadata, model file). No interpreter is built."""
    try:
        model = tflite_file.parse(data, tensors=False)
    except tflite_file.FlatbufferError as exc:
        hint = " (a text file?)" if _looks_like_text(data) else ""
        raise _fail(path, f"not a valid TFLite model{hint}: {exc}") from None
    try:
        index = model.metadata_buffer(METADATA_NAME)
    except tflite_file.FlatbufferError as exc:
        raise _fail(path, str(exc)) from None
    if index is None:
        names = ", ".join(name for name, _ in model.metadata) or "none"
        raise _fail(
            path,
            f"a TFLite model without {METADATA_NAME!r} metadata (not made by `instrument-ai convert`; "
            f"its metadata: {names})",
        )
    payload = model.buffers[index]
    try:
        metadata = json.loads(data[payload[0] : payload[0] + payload[1]].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _fail(path, f"the {METADATA_NAME} metadata is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(metadata, dict) or metadata.get("schema") != SCHEMA_ID:
        raise _fail(path, f"the {METADATA_NAME} metadata is not an {SCHEMA_ID} document")
    version = metadata.get("schema_version")
    if version != BUNDLE_SCHEMA_VERSION:
        raise _fail(
            path,
            f"bundle schema version {version!r} is not supported (this device reads version {BUNDLE_SCHEMA_VERSION}); "
            "update instrument-ai or convert the model again",
        )
    integrity = metadata.get("integrity")
    if not isinstance(integrity, dict):
        raise _fail(path, "the metadata has no integrity digests")
    try:
        recomputed = metadata_digest(metadata)
    except ValueError as exc:
        raise _fail(path, f"the metadata cannot be canonicalised ({exc})") from None
    if integrity.get("metadata_sha256") != recomputed:
        raise _fail(path, "metadata checksum mismatch: the metadata (labels, spec, ...) was edited or is corrupt")
    if integrity.get("model_sha256") != model_digest(data, payload):
        raise _fail(path, "model hash mismatch: the weights or graph were modified or the file is corrupt")
    return metadata, model


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    return bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The verified metadata of a bundle without building an interpreter (for listings)."""
    return parse_bundle(read_bytes(path), str(path))[0]


def _check_signature(path: str, metadata: dict[str, Any], trusted_key: bytes | str) -> None:
    try:
        from instrument_ai.device import ed25519
    except ImportError:  # pragma: no cover - the module ships with the device package
        raise _fail(path, "signature verification is not available in this installation") from None
    try:
        key = trusted_key if isinstance(trusted_key, bytes) else ed25519.load_public_key(trusted_key)
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    signature = metadata.get("signature")
    if not isinstance(signature, dict):
        raise _untrusted(
            path, "the bundle is not signed, and this device only accepts bundles signed by its trusted key"
        )
    if signature.get("algorithm") != "ed25519":
        raise _untrusted(path, f"unsupported signature algorithm {signature.get('algorithm')!r}")
    try:
        value = bytes.fromhex(str(signature.get("value", "")))
    except ValueError:
        raise _untrusted(path, "the signature is not hex") from None
    if not ed25519.verify(key, signing_message(metadata), value):
        raise _untrusted(path, "the signature does not match the trusted key (signed by another key, or modified)")


def _check_fields(path: str, metadata: dict[str, Any]) -> FrontendSpec:
    """Types and consistency of every field the device uses; returns the frontend spec."""
    required: dict[str, type | tuple[type, ...]] = {
        "name": str,
        "version": str,
        "labels": list,
        "frontend_spec": dict,
        "sample_rate": int,
        "window_frames": int,
        "window_samples": int,
        "default_hop_seconds": (int, float),
        "input_normalization": dict,
        "golden": dict,
    }
    for key, kind in required.items():
        if not isinstance(metadata.get(key), kind) or isinstance(metadata.get(key), bool):
            raise _fail(path, f"metadata field {key!r} is missing or has the wrong type")
    labels = metadata["labels"]
    if not labels or not all(isinstance(label, str) and label for label in labels) or len(set(labels)) != len(labels):
        raise _fail(path, "labels must be a non-empty list of distinct names")
    try:
        spec = FrontendSpec.from_dict(metadata["frontend_spec"])
        MfccStream(spec)  # builds (and so checks) the filterbank and DCT tables now
    except (TypeError, ValueError) as exc:
        raise _fail(path, f"this device cannot run the bundle's frontend: {exc}") from None
    if metadata["sample_rate"] != spec.sample_rate:
        raise _fail(path, f"sample_rate {metadata['sample_rate']} differs from the frontend's {spec.sample_rate}")
    frames = metadata["window_frames"]
    if frames < 1 or metadata["window_samples"] != spec.window_samples(frames):
        raise _fail(path, f"window of {frames} frames does not match window_samples {metadata['window_samples']}")
    if not (math.isfinite(metadata["default_hop_seconds"]) and metadata["default_hop_seconds"] > 0):
        raise _fail(path, "default_hop_seconds must be positive")
    norm = metadata["input_normalization"]
    try:
        mean = np.asarray(norm["mean"], dtype=np.float64)
        std = np.asarray(norm["std"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise _fail(path, "input_normalization must hold numeric 'mean' and 'std' lists") from None
    if mean.shape != (spec.n_features,) or std.shape != (spec.n_features,):
        per = "MFCC" if spec.stage == "mfcc" else "mel band"
        raise _fail(path, f"input_normalization mean/std must have {spec.n_features} values (one per {per})")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise _fail(path, "input_normalization must be finite with positive std")
    try:
        rejection_from_metadata(metadata)
    except OpenSetError as exc:
        raise _fail(path, str(exc)) from None
    try:
        bundle_engine_defaults(metadata)
    except ValueError as exc:
        raise _fail(path, str(exc)) from None
    golden = metadata["golden"]
    if not isinstance(golden.get("vectors"), list) or not isinstance(golden.get("tolerance"), (int, float)):
        raise _fail(path, "golden test vectors are missing")
    return spec


def _check_tensors(path: str, bundle: Bundle) -> None:
    """The interpreter's view of the model must be what the metadata promises."""
    expected_input = (1, bundle.n_features, bundle.window_frames, 1)
    if bundle.input_shape != expected_input:
        raise _fail(path, f"model input shape {list(bundle.input_shape)} is not {list(expected_input)}")
    if bundle.output_size != len(bundle.labels):
        raise _fail(
            path,
            f"{len(bundle.labels)} labels but the model has {bundle.output_size} outputs (labels/output size mismatch)",
        )
    _check_embedding(path, bundle)
    for side, codec in (("input", bundle.input_codec), ("output", bundle.output_codec)):
        if codec.dtype not in ("int8", "float32"):
            raise _fail(path, f"model {side} type {codec.dtype} is not supported (int8 or float32)")
        if codec.dtype == "int8" and not codec.scale > 0:
            raise _fail(path, f"model {side} is int8 without quantisation parameters")
        declared = bundle.metadata.get(side)
        if not isinstance(declared, dict):
            raise _fail(path, f"metadata field {side!r} is missing")
        scale = declared.get("scale")
        same = (
            declared.get("dtype") == codec.dtype
            and declared.get("zero_point") == codec.zero_point
            and isinstance(scale, (int, float))
            and not isinstance(scale, bool)
            and math.isclose(float(scale), codec.scale, rel_tol=1e-6, abs_tol=1e-12)
        )
        if not same:
            raise _fail(
                path, f"{side} quantisation in the metadata {declared} differs from the model's {codec.to_dict()}"
            )


def _check_embedding(path: str, bundle: Bundle) -> None:
    """The embedding output the metadata describes (`embedding`: output position, size, dtype, quantisation)
    must be the model's; a model with more outputs than the metadata describes is refused too."""
    declared = bundle.metadata.get("embedding")
    described = 1 + (declared is not None)
    if bundle.model_outputs != described:
        raise _fail(
            path, f"the model has {bundle.model_outputs} outputs but the metadata describes {described} "
            "(probabilities" + (" and embedding)" if declared is not None else ")"),
        )  # fmt: skip
    if declared is None:
        return
    if not isinstance(declared, dict) or declared.get("output") != 1 or bundle.embedding_codec is None:
        raise _fail(path, f"metadata field 'embedding' must name model output 1, got {declared!r:.80}")
    codec = bundle.embedding_codec
    size, scale = declared.get("size"), declared.get("scale")
    same = (
        size == bundle.embedding_size
        and declared.get("dtype") == codec.dtype
        and declared.get("zero_point") == codec.zero_point
        and isinstance(scale, (int, float))
        and not isinstance(scale, bool)
        and math.isclose(float(scale), codec.scale, rel_tol=1e-6, abs_tol=1e-12)
    )
    if not same or codec.dtype not in ("int8", "float32") or (codec.dtype == "int8" and not codec.scale > 0):
        mine = {"size": bundle.embedding_size, **codec.to_dict()}
        raise _fail(path, f"the embedding output in the metadata {declared} differs from the model's {mine}")


def load(
    path: str | Path,
    *,
    num_threads: int = 1,
    self_test: bool = True,
    trusted_key: bytes | str | None = None,
    runtime: str | None = None,
) -> Bundle:
    """Read, verify and prepare a bundle; BundleError (one line) for every reason to refuse it.

    Checks, in order: a readable TFLite flatbuffer, the ``instrument_ai``
    metadata, its schema version, both digests, the signature (only with a
    `trusted_key`), the fields and the frontend spec, the interpreter's tensors
    against the metadata (shapes, labels vs outputs, quantisation), and - with
    `self_test` - the golden vectors within one quantisation step.
    """
    started = time.perf_counter()
    bundle = load_bytes(
        read_bytes(path),
        str(path),
        num_threads=num_threads,
        self_test=self_test,
        trusted_key=trusted_key,
        runtime=runtime,
    )
    bundle.load_ms = (time.perf_counter() - started) * 1e3
    return bundle


def load_bytes(
    data: bytes,
    name: str = "<bundle>",
    *,
    num_threads: int = 1,
    self_test: bool = True,
    trusted_key: bytes | str | None = None,
    runtime: str | None = None,
) -> Bundle:
    """`load` for bundle bytes already in memory (the writer's check, a download before it is saved)."""
    started = time.perf_counter()
    metadata, model = parse_bundle(data, name)
    if trusted_key is not None:
        _check_signature(name, metadata, trusted_key)
    _check_fields(name, metadata)
    try:
        interpreter, runtime_label = make_interpreter(data, num_threads=num_threads, runtime=runtime)
    except RuntimeUnavailable as exc:
        raise BundleError(str(exc)) from None
    except ValueError as exc:
        raise _fail(name, str(exc)) from None
    bundle = Bundle(name, metadata, model, interpreter, runtime_label)
    _check_tensors(name, bundle)
    if self_test:
        bundle.run_self_test()
    bundle.load_ms = (time.perf_counter() - started) * 1e3
    return bundle


# -- benchmark hook ---------------------------------------------------------------------------------


def bench_load(path: str | Path, *, repeats: int = 20, num_threads: int = 1) -> dict[str, Any]:
    """Time `load` (parse + digests + interpreter + golden self-test) of one bundle, for `instrument-ai bench`.

    The first load also pays the one-off import of the interpreter module, so it is
    reported apart; the rest are the steady-state figures (target: < 100 ms).
    """
    started = time.perf_counter()
    first = load(path, num_threads=num_threads)
    first_ms = (time.perf_counter() - started) * 1e3
    data = read_bytes(path)
    loads, parses, tests = [], [], []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        bundle = load(path, num_threads=num_threads)
        loads.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        parse_bundle(data, str(path))
        parses.append((time.perf_counter() - t0) * 1e3)
        tests.append(bundle.run_self_test()["ms"])
    loads.sort()
    return {
        "path": str(path),
        "runtime": first.runtime,
        "num_threads": num_threads,
        "file_bytes": len(data),
        "golden_vectors": len(first.metadata["golden"]["vectors"]),
        "repeats": len(loads),
        "first_load_ms": first_ms,
        "load_ms_median": statistics.median(loads),
        "load_ms_min": loads[0],
        "load_ms_max": loads[-1],
        "parse_and_verify_ms_median": statistics.median(parses),
        "self_test_ms_median": statistics.median(tests),
    }
