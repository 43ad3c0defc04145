"""Read the parts of a `.tflite` flatbuffer that a bundle needs, with the flatbuffers runtime only.

The device must open a model bundle without tensorflow and without the PyPI
`tflite` package (neither is installed on a Raspberry Pi), so this module holds
a few hand-written accessors, by vtable slot, for the tables of the TFLite
schema (tensorflow/lite/schema/schema.fbs) that we read: Model, OperatorCode,
SubGraph, Tensor, QuantizationParameters, Buffer, Metadata.

The flatbuffers runtime does no bounds checking (a truncated file would read
garbage or fail deep inside `struct`), so every position is checked against the
file size first and a damaged file raises one `FlatbufferError` that says what
was out of range. It is not a full verifier: the interpreter runs its own
verifier when it builds the model; this module only has to be safe on the
parts it reads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from flatbuffers import util as fb_util
from flatbuffers.table import Table

from instrument_ai.device.errors import InstrumentAIError

TFLITE_IDENTIFIER = b"TFL3"
"""The file identifier every TFLite flatbuffer carries at bytes 4..8."""

# BuiltinOperator enum of the TFLite schema, in code order (0..209).
_OP_NAMES_TEXT = (
    "ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE "
    "EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D "
    "LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 "
    "RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM "
    "EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND "
    "TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN "
    "EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX "
    "MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV "
    "SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT "
    "REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV "
    "REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU "
    "SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU "
    "REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE "
    "NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL "
    "PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS "
    "HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE "
    "READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM "
    "MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX "
    "UNSORTED_SEGMENT_SUM ATAN2 UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT "
    "STABLEHLO_LOGISTIC STABLEHLO_ADD STABLEHLO_DIVIDE STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM "
    "STABLEHLO_RESHAPE STABLEHLO_CLAMP STABLEHLO_CONCATENATE STABLEHLO_BROADCAST_IN_DIM "
    "STABLEHLO_CONVOLUTION STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE STABLEHLO_ABS "
    "STABLEHLO_AND STABLEHLO_COSINE STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG STABLEHLO_MINIMUM "
    "STABLEHLO_NEGATE STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT STABLEHLO_SELECT "
    "STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT "
    "STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA "
    "STABLEHLO_DOT_GENERAL STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE STABLEHLO_GATHER "
    "STABLEHLO_TRANSPOSE DILATE STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW STABLEHLO_COMPOSITE "
    "STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT STABLEHLO_CASE"
)
OP_NAMES: tuple[str, ...] = tuple(_OP_NAMES_TEXT.split())

_TENSOR_TYPES_TEXT = (
    "float32 float16 int32 uint8 int64 string bool int16 complex64 int8 float64 complex128 uint64 "
    "resource variant uint32 uint16 int4 bfloat16 int2 uint4 float8_e4m3fn float8_e5m2"
)
TENSOR_TYPES: tuple[str, ...] = tuple(_TENSOR_TYPES_TEXT.split())
"""TensorType enum of the TFLite schema, in code order."""


class FlatbufferError(InstrumentAIError, ValueError):
    """The bytes are not a TFLite flatbuffer, or a part we read lies outside the file."""


# vtable slots (field index in schema.fbs) of the tables we read.
_MODEL_VERSION, _MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_DESCRIPTION, _MODEL_BUFFERS = 0, 1, 2, 3, 4
_MODEL_METADATA = 6
_OPCODE_DEPRECATED_BUILTIN, _OPCODE_CUSTOM, _OPCODE_VERSION, _OPCODE_BUILTIN = 0, 1, 2, 3
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS, _SUBGRAPH_OPERATORS, _SUBGRAPH_NAME = 0, 1, 2, 3, 4
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_BUFFER, _TENSOR_NAME, _TENSOR_QUANTIZATION = 0, 1, 2, 3, 4
_QUANT_SCALE, _QUANT_ZERO_POINT = 2, 3
_OPERATOR_OPCODE_INDEX = 0
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2
_METADATA_NAME, _METADATA_BUFFER = 0, 1


class _Node:
    """One flatbuffer table, every read bounds-checked against the whole file."""

    __slots__ = ("_data", "_size", "_table", "_vtable_len", "what")

    def __init__(self, data: bytes, pos: int, what: str) -> None:
        self._data = data
        self._size = len(data)
        self.what = what
        self._need(pos, 4, what)
        vtable = pos - struct.unpack_from("<i", data, pos)[0]
        self._need(vtable, 4, f"{what} vtable")
        vtable_len = struct.unpack_from("<H", data, vtable)[0]
        self._need(vtable, vtable_len, f"{what} vtable")
        self._vtable_len = vtable_len
        self._table = Table(data, pos)

    def _need(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or length < 0 or pos + length > self._size:
            raise FlatbufferError(f"{what} is out of bounds of the {self._size}-byte file: truncated or corrupt")

    def _field(self, slot: int) -> int:
        """Offset of a field relative to the table, 0 when absent (the flatbuffers convention)."""
        vt_offset = 4 + 2 * slot
        if vt_offset >= self._vtable_len:
            return 0
        return self._table.Offset(vt_offset)

    def scalar(self, slot: int, fmt: str, default: int | float) -> int | float:
        offset = self._field(slot)
        if not offset:
            return default
        pos = self._table.Pos + offset
        self._need(pos, struct.calcsize(fmt), f"{self.what} field {slot}")
        return struct.unpack_from("<" + fmt, self._data, pos)[0]

    def _target(self, slot: int) -> int | None:
        """Absolute position of the object an offset field points to, or None when absent."""
        offset = self._field(slot)
        if not offset:
            return None
        pos = self._table.Pos + offset
        self._need(pos, 4, f"{self.what} field {slot}")
        return pos + struct.unpack_from("<I", self._data, pos)[0]

    def table(self, slot: int, what: str) -> _Node | None:
        pos = self._target(slot)
        return None if pos is None else _Node(self._data, pos, what)

    def vector(self, slot: int, element_size: int, what: str) -> tuple[int, int]:
        """(start of the elements, element count) of a vector field; (0, 0) when absent."""
        pos = self._target(slot)
        if pos is None:
            return 0, 0
        self._need(pos, 4, what)
        count = struct.unpack_from("<I", self._data, pos)[0]
        self._need(pos + 4, count * element_size, what)
        return pos + 4, count

    def numbers(self, slot: int, fmt: str, what: str) -> list[Any]:
        start, count = self.vector(slot, struct.calcsize(fmt), what)
        return list(struct.unpack_from(f"<{count}{fmt}", self._data, start)) if count else []

    def tables(self, slot: int, what: str) -> list[_Node]:
        start, count = self.vector(slot, 4, what)
        nodes = []
        for i in range(count):
            pos = start + 4 * i
            nodes.append(_Node(self._data, pos + struct.unpack_from("<I", self._data, pos)[0], f"{what}[{i}]"))
        return nodes

    def string(self, slot: int, what: str) -> str | None:
        start, count = self.vector(slot, 1, what)
        if not start:
            return None
        return self._data[start : start + count].decode("utf-8", errors="replace")


@dataclass(frozen=True)
class TensorInfo:
    """What `inspect` shows of a tensor: name, shape, type and quantization."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: int
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelFile:
    """The parsed skeleton of a `.tflite` file (positions are byte offsets into `data`)."""

    data: bytes
    version: int
    description: str
    buffers: list[tuple[int, int]]
    """(start, length) of every Buffer's data vector; (0, 0) for an empty buffer."""
    metadata: list[tuple[str, int]]
    """(name, buffer index) of every Model.metadata entry, in file order."""
    operators: list[str]
    """Operator of every op code (builtin name, or CUSTOM:name)."""
    op_counts: dict[str, int] = field(default_factory=dict)
    """How often each operator is used across all subgraphs."""
    subgraph_tensors: list[list[TensorInfo]] = field(default_factory=list)
    subgraph_io: list[tuple[list[int], list[int]]] = field(default_factory=list)

    def buffer_bytes(self, index: int) -> bytes:
        start, length = self.buffers[index]
        return self.data[start : start + length]

    def metadata_buffer(self, name: str) -> int | None:
        """Buffer index of the metadata entry `name`; FlatbufferError when the name occurs twice."""
        found = [buffer for entry, buffer in self.metadata if entry == name]
        if len(found) > 1:
            raise FlatbufferError(f"metadata entry {name!r} occurs {len(found)} times")
        return found[0] if found else None

    @property
    def tensor_count(self) -> int:
        return sum(len(tensors) for tensors in self.subgraph_tensors)


def is_tflite(data: bytes) -> bool:
    """True when `data` starts like a TFLite flatbuffer (root offset plus the TFL3 identifier)."""
    return len(data) >= 8 and fb_util.BufferHasIdentifier(data, 0, TFLITE_IDENTIFIER)


def parse(data: bytes, *, tensors: bool = True) -> ModelFile:
    """Parse the Model table of a `.tflite` file; FlatbufferError when it is not one or is damaged.

    `tensors=False` skips the per-tensor walk (names, shapes, quantization), which
    only `inspect` needs; buffers, metadata, op codes and operators are always read
    and bounds-checked, so a truncated file is caught here and not in the interpreter.
    """
    if len(data) < 8:
        raise FlatbufferError(f"{len(data)} bytes is too short to be a TFLite model")
    if not is_tflite(data):
        raise FlatbufferError("not a TFLite flatbuffer (no TFL3 file identifier)")
    try:
        root = struct.unpack_from("<I", data, 0)[0]
        model = _Node(data, root, "Model table")
        return _read_model(data, model, tensors=tensors)
    except struct.error as exc:  # defensive: every read is checked first
        raise FlatbufferError(f"corrupt flatbuffer ({exc})") from None
    except UnicodeDecodeError:
        raise FlatbufferError("corrupt flatbuffer (a string is not UTF-8)") from None


def _read_model(data: bytes, model: _Node, *, tensors: bool) -> ModelFile:
    version = int(model.scalar(_MODEL_VERSION, "I", 0))
    description = model.string(_MODEL_DESCRIPTION, "model description") or ""

    buffers: list[tuple[int, int]] = []
    for node in model.tables(_MODEL_BUFFERS, "buffers"):
        if node.scalar(_BUFFER_OFFSET, "Q", 0) or node.scalar(_BUFFER_SIZE, "Q", 0):
            raise FlatbufferError(f"{node.what} is stored outside the flatbuffer (models over 2 GB are not supported)")
        buffers.append(node.vector(_BUFFER_DATA, 1, f"{node.what} data"))

    metadata: list[tuple[str, int]] = []
    for node in model.tables(_MODEL_METADATA, "metadata"):
        name = node.string(_METADATA_NAME, f"{node.what} name") or ""
        index = int(node.scalar(_METADATA_BUFFER, "I", 0))
        if index >= len(buffers):
            raise FlatbufferError(f"metadata entry {name!r} points to buffer {index} of {len(buffers)}")
        metadata.append((name, index))

    operators: list[str] = []
    for node in model.tables(_MODEL_OPCODES, "operator codes"):
        code = max(int(node.scalar(_OPCODE_DEPRECATED_BUILTIN, "b", 0)), int(node.scalar(_OPCODE_BUILTIN, "i", 0)))
        if code == OP_NAMES.index("CUSTOM"):
            operators.append(f"CUSTOM:{node.string(_OPCODE_CUSTOM, 'custom code') or '?'}")
        else:
            operators.append(OP_NAMES[code] if 0 <= code < len(OP_NAMES) else f"BUILTIN_{code}")

    op_counts: dict[str, int] = {}
    all_tensors: list[list[TensorInfo]] = []
    io: list[tuple[list[int], list[int]]] = []
    for subgraph in model.tables(_MODEL_SUBGRAPHS, "subgraphs"):
        for op in subgraph.tables(_SUBGRAPH_OPERATORS, f"{subgraph.what} operators"):
            index = int(op.scalar(_OPERATOR_OPCODE_INDEX, "I", 0))
            if index >= len(operators):
                raise FlatbufferError(f"{op.what} uses op code {index} of {len(operators)}")
            op_counts[operators[index]] = op_counts.get(operators[index], 0) + 1
        io.append(
            (
                subgraph.numbers(_SUBGRAPH_INPUTS, "i", f"{subgraph.what} inputs"),
                subgraph.numbers(_SUBGRAPH_OUTPUTS, "i", f"{subgraph.what} outputs"),
            )
        )
        all_tensors.append(_read_tensors(subgraph, len(buffers)) if tensors else [])
    return ModelFile(
        data=data,
        version=version,
        description=description,
        buffers=buffers,
        metadata=metadata,
        operators=operators,
        op_counts=op_counts,
        subgraph_tensors=all_tensors,
        subgraph_io=io,
    )


def _read_tensors(subgraph: _Node, n_buffers: int) -> list[TensorInfo]:
    infos = []
    for i, node in enumerate(subgraph.tables(_SUBGRAPH_TENSORS, f"{subgraph.what} tensors")):
        type_code = int(node.scalar(_TENSOR_TYPE, "b", 0))
        buffer = int(node.scalar(_TENSOR_BUFFER, "I", 0))
        if buffer >= n_buffers:
            raise FlatbufferError(f"{node.what} points to buffer {buffer} of {n_buffers}")
        quant = node.table(_TENSOR_QUANTIZATION, f"{node.what} quantization")
        scales: tuple[float, ...] = ()
        zero_points: tuple[int, ...] = ()
        if quant is not None:
            scales = tuple(quant.numbers(_QUANT_SCALE, "f", f"{node.what} scales"))
            zero_points = tuple(quant.numbers(_QUANT_ZERO_POINT, "q", f"{node.what} zero points"))
        infos.append(
            TensorInfo(
                index=i,
                name=node.string(_TENSOR_NAME, f"{node.what} name") or "",
                shape=tuple(node.numbers(_TENSOR_SHAPE, "i", f"{node.what} shape")),
                dtype=TENSOR_TYPES[type_code] if 0 <= type_code < len(TENSOR_TYPES) else f"type{type_code}",
                buffer=buffer,
                scales=scales,
                zero_points=zero_points,
            )
        )
    return infos
