"""The embedding output: the network's penultimate activations as a second output of a bundle's model.

A personal head (`device/personal.py`) learns far better on what the network itself computed just before its
classifier than on MFCC statistics. That tensor - the input of the final dense (FULLY_CONNECTED) layer, int8 in
an int8 model - already exists in every converted model; this module makes it a model output by rewriting the
TFLite flatbuffer (the schema's object API: the subgraph's `outputs` and the serving signature gain it), so
the same bytes serve both `convert` (a new run) and `convert --add-embedding` (an existing bundle, whose Keras
model may be long gone). No weight, operator or tensor changes, so the probabilities stay what they were: the
rewritten bundle is checked for that on its golden vectors before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from instrument_ai.device.bundle import Bundle, decode_features, load_bytes, parse_bundle, read_bytes
from instrument_ai.device.errors import InstrumentAIError

EMBEDDING_OUTPUT = 1
"""Position of the embedding among the model's outputs (the probabilities stay output 0)."""
EMBEDDING_SIGNATURE_NAME = "embedding"

_FULLY_CONNECTED = 9
_SOFTMAX = 25
_PASS_THROUGH = (_SOFTMAX, 22, 114)  # SOFTMAX, RESHAPE, QUANTIZE: between the dense layer and the output


class EmbeddingError(InstrumentAIError):
    """A model whose penultimate activations cannot be found or exported; one line (exit 2)."""

    exit_code = 2


def _schema() -> Any:
    from instrument_ai.convert.bundle_writer import _schema as schema

    return schema()


def _opcode(model: Any, op: Any) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return int(max(code.builtinCode, code.deprecatedBuiltinCode))


def penultimate_tensor(model: Any) -> int:
    """Index (in subgraph 0) of the input of the dense layer that computes the model's output.

    Walks back from output 0 through SOFTMAX / RESHAPE / QUANTIZE to a FULLY_CONNECTED op; EmbeddingError when
    the output does not come from one, or its input is not one vector per window.
    """
    graph = model.subgraphs[0]
    producer = {int(t): op for op in graph.operators for t in op.outputs}
    tensor = int(graph.outputs[0])
    for _ in range(8):
        op = producer.get(tensor)
        if op is None:
            break
        code = _opcode(model, op)
        if code == _FULLY_CONNECTED:
            found = int(op.inputs[0])
            shape = [int(v) for v in graph.tensors[found].shape]
            if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
                raise EmbeddingError(f"the final dense layer's input has shape {shape}, not [1, N]")
            return found
        if code not in _PASS_THROUGH:
            break
        tensor = int(op.inputs[0])
    raise EmbeddingError("the model's output does not come from a dense (FULLY_CONNECTED) layer: nothing to export")


def add_embedding_output(model_bytes: bytes) -> bytes:
    """`model_bytes` (a TFLite model, bundle or not) with the penultimate activations as output 1.

    Metadata buffers (an ``instrument_ai`` payload included) are carried over unchanged; the caller re-attaches
    the metadata, which changes the digests. EmbeddingError for a model that already has more than one output.
    """
    import flatbuffers

    from instrument_ai.convert.bundle_writer import align_buffers
    from instrument_ai.device import tflite_file

    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    if len(model.subgraphs or []) != 1:
        raise EmbeddingError(f"the model has {len(model.subgraphs or [])} subgraphs; a bundle has 1")
    graph = model.subgraphs[0]
    if len(graph.outputs) != 1:
        raise EmbeddingError(f"the model already has {len(graph.outputs)} outputs (an embedding output?)")
    embedding = penultimate_tensor(model)
    graph.outputs = np.asarray([int(graph.outputs[0]), embedding], dtype=np.int32)
    for signature in model.signatureDefs or []:
        entry = schema.TensorMapT()
        entry.name = EMBEDDING_SIGNATURE_NAME
        entry.tensorIndex = embedding
        signature.outputs = [*(signature.outputs or []), entry]
    align_buffers(schema, model)
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=tflite_file.TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def embedding_metadata(model_bytes: bytes) -> dict[str, Any]:
    """The metadata's ``embedding`` field, read from the model: output position, tensor name, size, quantisation."""
    from instrument_ai.device import tflite_file

    parsed = tflite_file.parse(model_bytes)
    _, outputs = parsed.subgraph_io[0]
    if len(outputs) <= EMBEDDING_OUTPUT:
        raise EmbeddingError("the model has no embedding output")
    tensor = parsed.subgraph_tensors[0][outputs[EMBEDDING_OUTPUT]]
    quantized = tensor.dtype == "int8"
    return {
        "output": EMBEDDING_OUTPUT,
        "layer": "input of the final dense layer (penultimate activations)",
        "name": tensor.name,
        "size": int(np.prod(tensor.shape[1:])),
        "dtype": tensor.dtype,
        "scale": float(tensor.scales[0]) if quantized and tensor.scales else 0.0,
        "zero_point": int(tensor.zero_points[0]) if quantized and tensor.zero_points else 0,
    }


def add_embedding_to_bundle(
    source: Path,
    out: Path,
    *,
    signer: Callable[[bytes], tuple[bytes, bytes]] | None = None,
    background: Path | None = None,
    background_notes: int = 10,
) -> tuple[Bundle, bool]:
    """Write `out`: the bundle at `source` with an embedding output, its metadata and golden expectations.

    The old bundle is loaded (and self-tested) first; the new one must give the same golden outputs as the old
    one (the probabilities are untouched) or nothing is written. A signature cannot survive (the digests change):
    the result is re-signed with `signer`, else unsigned. With `background` (a corpus folder) the bundle also gets
    its bank of known sounds (`convert/background.py`). Returns (the new bundle, whether the old one was signed).
    """
    from instrument_ai.convert import bundle_writer
    from instrument_ai.device.bundle import BundleError, load

    try:
        old = load(source)
    except BundleError as exc:
        raise EmbeddingError(str(exc)) from None
    if old.embedding_size:
        raise EmbeddingError(f"{source}: already has an embedding output ({old.embedding_size} values)")
    data = read_bytes(source)
    metadata, _ = parse_bundle(data, str(source))
    was_signed = "signature" in metadata
    model_bytes = add_embedding_output(data)
    meta = {k: v for k, v in metadata.items() if k not in ("integrity", "signature", "input", "output", "golden")}
    golden = metadata["golden"]
    window = (old.n_features, old.window_frames)
    features = np.stack([decode_features(v["features_f16"], window) for v in golden["vectors"]])
    labels = [str(v.get("label", "?")) for v in golden["vectors"]]
    try:
        new_bytes, new = bundle_writer.build_bundle(model_bytes, meta, features, labels, signer=signer)
    except BundleError as exc:
        raise EmbeddingError(f"the rewritten model fails the device's checks: {exc}") from None
    for i, vector in enumerate(new.metadata["golden"]["vectors"]):
        before, after = np.asarray(golden["vectors"][i]["expected"]), np.asarray(vector["expected"])
        if before.shape != after.shape or np.max(np.abs(before - after), initial=0) > float(golden["tolerance"]):
            raise EmbeddingError(f"golden vector {i}: the rewritten model's output differs from {source}'s")
    if background is not None:
        from instrument_ai.convert.background import with_background

        new_bytes = with_background(new_bytes, background, background_notes, signer=signer, name=str(out))
    bundle_writer.write_atomic(out, new_bytes)
    return load_bytes(new_bytes, str(out)), was_signed
