"""Everything `instrument-ai inspect` reports about a bundle, as one JSON-ready dict (also read by the model card)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from instrument_ai.device import bundle as bundle_module
from instrument_ai.device.tflite_file import parse


def describe(path: Path, *, num_threads: int = 1, trusted_key: str | None = None) -> dict[str, Any]:
    """Everything `inspect` prints, as one JSON-ready dict; BundleError when the device refuses the bundle."""
    bundle = bundle_module.load(path, num_threads=num_threads, trusted_key=trusted_key)
    model = parse(bundle.model.data)
    index = model.metadata_buffer(bundle_module.METADATA_NAME)
    assert index is not None  # bundle.load refused a file without it
    payload = model.buffers[index][1]
    metadata_buffers = {index for _, index in model.metadata}
    tensors = [t for subgraph in model.subgraph_tensors for t in subgraph]
    metadata = dict(bundle.metadata)
    golden = metadata.pop("golden", {})
    metadata["golden"] = {"vectors": len(golden.get("vectors", [])), "tolerance": golden.get("tolerance")}
    return {
        "path": str(path),
        "metadata": metadata,
        "ops": dict(sorted(model.op_counts.items())),
        "operator_codes": model.operators,
        "tensors": len(tensors),
        "tensor_types": dict(sorted(Counter(t.dtype for t in tensors).items())),
        "sizes": {
            "file_bytes": len(model.data),
            "model_bytes_without_metadata": len(model.data) - payload,
            "metadata_bytes": payload,
            "tensor_data_bytes": sum(n for i, (_, n) in enumerate(model.buffers) if i not in metadata_buffers),
        },
        "quantization": {"input": bundle.input_codec.to_dict(), "output": bundle.output_codec.to_dict()},
        "other_metadata": [name for name, _ in model.metadata if name != bundle_module.METADATA_NAME],
        "runtime": bundle.runtime,
        "num_threads": num_threads,
        "self_test": bundle.self_test,
        "signature_checked": trusted_key is not None,
        "load_ms": bundle.load_ms,
    }
