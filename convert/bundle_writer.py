"""Write a bundle: a converter's `.tflite` plus the ``instrument_ai`` metadata, via the flatbuffers schema.

The model is unpacked into the generated object API of the TFLite schema
(`schema_py_generated`, shipped with ai-edge-litert and with tensorflow), the
metadata JSON is added as one more `Buffer` with a `Metadata` entry pointing to
it, and the whole model is packed again with the flatbuffers builder: no byte
patching, so the result is a flatbuffer any interpreter verifies. Buffer data is
packed 16-byte aligned, as the TFLite converter does, so that kernels may read
weights in place.

The device reader (`instrument_ai.device.bundle`) is the only judge of a
bundle: every bundle written here is loaded back through it, golden vectors
and all, before it reaches the disk, so the writer cannot produce a file the
device would refuse.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device import tflite_file
from instrument_ai.device.bundle import (
    BUNDLE_SCHEMA_VERSION,
    FLOAT_GOLDEN_TOLERANCE,
    INT8_GOLDEN_TOLERANCE,
    METADATA_NAME,
    SCHEMA_ID,
    Bundle,
    decode_features,
    encode_features,
    load_bytes,
    metadata_digest,
    model_digest,
    signing_message,
)
from instrument_ai.device.errors import InstrumentAIError
from instrument_ai.device.lifecycle import atomic_write_bytes

Signer = Callable[[bytes], tuple[bytes, bytes]]
"""message -> (ed25519 public key, 32 bytes; signature, 64 bytes)."""

_ALIGNMENT = 16
_HEX_ZEROS_32 = "0" * 64
_HEX_ZEROS_64 = "0" * 128


class ConvertError(InstrumentAIError):
    """A conversion the user can fix (bad run folder, refused model); one line."""


def _schema() -> Any:
    """The generated TFLite schema classes with the object API (ModelT, BufferT, MetadataT)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - the train extra installs ai-edge-litert
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _aligned_buffer_class(schema: Any) -> type:
    class AlignedBufferT(schema.BufferT):
        """A Buffer whose data vector starts on a 16-byte boundary of the file."""

        def Pack(self, builder: Any) -> int:  # noqa: N802 - flatbuffers object API name
            data_offset = None
            if self.data is not None:
                payload = bytes(np.asarray(self.data, dtype=np.uint8).tobytes())
                builder.StartVector(1, len(payload), _ALIGNMENT)
                builder.head -= len(payload)
                builder.Bytes[builder.head : builder.head + len(payload)] = payload
                data_offset = builder.EndVector()
            schema.BufferStart(builder)
            if data_offset is not None:
                schema.BufferAddData(builder, data_offset)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def align_buffers(schema: Any, model: Any) -> None:
    """Swap the unpacked model's buffers for ones that pack their data 16-byte aligned (the runtime maps them)."""
    aligned = _aligned_buffer_class(schema)
    buffers = []
    for buffer in model.buffers or []:
        copy = aligned()
        copy.data, copy.offset, copy.size = buffer.data, buffer.offset, buffer.size
        buffers.append(copy)
    model.buffers = buffers


def _payload(metadata: dict[str, Any]) -> bytes:
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _pack(model_bytes: bytes, payload: bytes) -> bytes:
    """The model with its ``instrument_ai`` metadata entry set to `payload` (replacing an existing one)."""
    schema = _schema()
    if not tflite_file.is_tflite(model_bytes):
        raise ConvertError("the converter output is not a TFLite flatbuffer")
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    align_buffers(schema, model)
    metadata = list(model.metadata or [])
    ours = [m for m in metadata if (m.name.decode() if isinstance(m.name, bytes) else m.name) == METADATA_NAME]
    data = np.frombuffer(payload, dtype=np.uint8)
    if ours:
        model.buffers[ours[0].buffer].data = data
    else:
        buffer = _aligned_buffer_class(schema)()
        buffer.data = data
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        metadata.append(entry)
    model.metadata = metadata
    import flatbuffers

    builder = flatbuffers.Builder(len(model_bytes) + len(payload) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=tflite_file.TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def attach_metadata(model_bytes: bytes, metadata: dict[str, Any], *, signer: Signer | None = None) -> bytes:
    """The bundle bytes: `model_bytes` carrying `metadata` with its schema id, digests and optional signature.

    The digest (and signature) fields are written as fixed-length hex, first as
    zeros: the payload length, and so the file layout and `model_sha256`, are
    the same before and after they are filled in.
    """
    meta = dict(metadata)
    meta["schema"] = SCHEMA_ID
    meta["schema_version"] = BUNDLE_SCHEMA_VERSION
    meta["integrity"] = {"model_sha256": _HEX_ZEROS_32, "metadata_sha256": _HEX_ZEROS_32}
    if signer is not None:
        meta["signature"] = {"algorithm": "ed25519", "public_key": _HEX_ZEROS_32, "value": _HEX_ZEROS_64}
    else:
        meta.pop("signature", None)
    meta["integrity"]["metadata_sha256"] = metadata_digest(meta)
    draft = _pack(model_bytes, _payload(meta))
    parsed = tflite_file.parse(draft, tensors=False)
    payload_region = parsed.buffers[parsed.metadata_buffer(METADATA_NAME)]
    meta["integrity"]["model_sha256"] = model_digest(draft, payload_region)
    if signer is not None:
        public_key, signature = signer(signing_message(meta))
        if len(public_key) != 32 or len(signature) != 64:
            raise ConvertError("the signer must return a 32-byte ed25519 public key and a 64-byte signature")
        meta["signature"] = {"algorithm": "ed25519", "public_key": public_key.hex(), "value": signature.hex()}
    final = _pack(model_bytes, _payload(meta))
    if len(final) != len(draft) or model_digest(final, payload_region) != meta["integrity"]["model_sha256"]:
        raise AssertionError("filling in the digests changed the bundle layout")  # pragma: no cover
    return final


# -- metadata -----------------------------------------------------------------------------------


def headline_metrics(metrics: Any, *, limit: int = 80) -> dict[str, Any]:
    """The scalars of a run's metrics.json (two levels deep), without lists such as confusion matrices."""
    if not isinstance(metrics, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if len(out) >= limit:
            break
        if isinstance(value, (bool, int, float, str)) and _finite(value):
            out[str(key)] = value
        elif isinstance(value, dict):
            inner = {str(k): v for k, v in value.items() if isinstance(v, (bool, int, float, str)) and _finite(v)}
            if inner:
                out[str(key)] = dict(list(inner.items())[:limit])
    return out


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or np.isfinite(value)


def training_summary(config: dict[str, Any], run_name: str) -> dict[str, Any]:
    """What the bundle says about its training: preset, data (libraries, counts), seed, epochs."""
    keys = ("preset", "data", "seed", "epochs", "window_seconds", "model")
    summary = {key: config[key] for key in keys if key in config}
    data = summary.get("data")
    if isinstance(data, dict) and isinstance(data.get("instruments"), dict):
        # the full instrument lists (tens of KB) stay in the run's config.json; the bundle, which must stay
        # small on the device, carries their counts and a digest that identifies them
        listed = data["instruments"]
        data = dict(data)
        data["instruments"] = {
            "counts": {split: len(names) for split, names in listed.items()},
            "sha256": hashlib.sha256(json.dumps(listed, sort_keys=True).encode()).hexdigest(),
        }
        summary["data"] = data
    summary["run"] = run_name
    return summary


def base_metadata(
    *,
    name: str,
    version: str,
    config: dict[str, Any],
    run_name: str,
    metrics: Any,
    quantization: str,
) -> dict[str, Any]:
    """Every metadata field that comes from the run folder (no tensor details, golden vectors or checks yet)."""
    spec = config["frontend_spec"]
    window_frames = int(config["window_frames"])
    from instrument_ai.device.frontend import FrontendSpec

    window_samples = FrontendSpec.from_dict(spec).window_samples(window_frames)
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    from instrument_ai.device import __version__

    return {
        "name": name,
        "version": version,
        "created": created,
        "producer": f"instrument-ai {__version__} convert",
        "quantization": quantization,
        "labels": list(config["labels"]),
        "frontend_spec": spec,
        "sample_rate": int(spec["sample_rate"]),
        "window_frames": window_frames,
        "window_samples": window_samples,
        "window_seconds": float(config.get("window_seconds", window_samples / spec["sample_rate"])),
        "default_hop_seconds": float(config.get("default_hop_seconds", 0.25)),
        "input_normalization": {
            "mean": [float(v) for v in config["input_normalization"]["mean"]],
            "std": [float(v) for v in config["input_normalization"]["std"]],
        },
        "training": training_summary(config, run_name),
        "metrics": headline_metrics(metrics),
        **_open_set(metrics),
    }


def _open_set(metrics: Any) -> dict[str, Any]:
    """The run's calibrated open-set rejection (train/openset.py), when there is one: {"open_set": {...}}."""
    field = metrics.get("open_set", {}).get("bundle") if isinstance(metrics, dict) else None
    return {"open_set": dict(field)} if isinstance(field, dict) else {}


def tensor_metadata(model_bytes: bytes) -> dict[str, Any]:
    """The input/output tensor fields (name, shape, dtype, quantisation) read from the model itself."""
    model = tflite_file.parse(model_bytes)
    tensors = model.subgraph_tensors[0]
    inputs, outputs = model.subgraph_io[0]
    if len(inputs) != 1 or len(outputs) not in (1, 2):
        raise ConvertError(
            f"the model has {len(inputs)} inputs and {len(outputs)} outputs; a bundle needs 1 and 1 (2 with an "
            "embedding output)"
        )

    def describe(index: int) -> dict[str, Any]:
        tensor = tensors[index]
        quantized = tensor.dtype == "int8"
        return {
            "name": tensor.name,
            "shape": list(tensor.shape),
            "dtype": tensor.dtype,
            "scale": float(tensor.scales[0]) if quantized and tensor.scales else 0.0,
            "zero_point": int(tensor.zero_points[0]) if quantized and tensor.zero_points else 0,
        }

    fields = {"input": describe(inputs[0]), "output": describe(outputs[0])}
    if len(outputs) == 2:
        from instrument_ai.convert.embedding import embedding_metadata

        fields["embedding"] = embedding_metadata(model_bytes)
    return fields


# -- building and writing ---------------------------------------------------------------------------


def build_bundle(
    model_bytes: bytes,
    metadata: dict[str, Any],
    golden_features: np.ndarray,
    golden_labels: Sequence[str],
    *,
    signer: Signer | None = None,
) -> tuple[bytes, Bundle]:
    """Bundle bytes with golden vectors whose expected outputs come from the device code path.

    Pass 1 attaches the metadata with the golden inputs and no expectations and
    loads it without self-test; the expected raw outputs are what that bundle's
    own `input_tensor` + interpreter produce. Pass 2 writes them in, and the
    result is loaded again with the full self-test.
    """
    meta = dict(metadata)
    meta.update(tensor_metadata(model_bytes))
    int8 = meta["output"]["dtype"] == "int8"
    window = (len(meta["input_normalization"]["mean"]), int(meta["window_frames"]))
    if len(golden_features) != len(golden_labels):
        raise ConvertError(f"{len(golden_features)} golden windows but {len(golden_labels)} labels")
    vectors = []
    for features, label in zip(golden_features, golden_labels, strict=True):
        if features.shape != window:
            raise ConvertError(f"golden window shape {features.shape} is not {window}")
        vectors.append({"label": str(label), "features_f16": encode_features(features), "expected": []})
    meta["golden"] = {
        "tolerance": INT8_GOLDEN_TOLERANCE if int8 else FLOAT_GOLDEN_TOLERANCE,
        "units": "int8 output steps" if int8 else "probability",
        "vectors": vectors,
    }
    draft = load_bytes(attach_metadata(model_bytes, meta, signer=signer), "<draft bundle>", self_test=False)
    for vector in vectors:
        raw = draft.invoke_raw(draft.input_tensor(decode_features(vector["features_f16"], window)[None]))
        vector["expected"] = [int(v) for v in raw] if int8 else [round(float(v), 7) for v in raw]
        embedding = draft.raw_embedding()
        if embedding is not None:  # the embedding output's expected values, in its own units (int8 steps)
            kind = int if embedding.dtype == np.int8 else lambda v: round(float(v), 7)
            vector["embedding_expected"] = [kind(v) for v in embedding]
    data = attach_metadata(model_bytes, meta, signer=signer)
    return data, load_bytes(data, "<new bundle>")


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: never a half-written bundle."""
    atomic_write_bytes(path, data)
