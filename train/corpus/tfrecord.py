"""TFRecord files and `tf.train.Example` messages in pure Python (numpy only), no tensorflow.

Why our own: NSynth ships as TFRecord, and reading it through tensorflow costs a
4-6 s import, pulls tensorflow into every data command and turns a truncated
download into a C++ error. Here the framing is checked record by record, so a
damaged file is *reported* (`TFRecordError` with a reason and the byte offset)
and the caller decides whether to skip or stop.

Framing of one record (all little-endian)::

    uint64 length | uint32 masked_crc32c(length bytes) | payload | uint32 masked_crc32c(payload)

with ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2**32)``.

The payload is a protobuf `Example`::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }       # repeated {key = 1, value = 2}
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    *List    { repeated <bytes|float|int64> value = 1; }  # floats and int64s packed

CRC32C of a 256 KB NSynth record in a pure Python byte loop takes ~50 ms (four
hours for the NSynth train split); `crc32c` below runs many independent lanes
of the table algorithm at once in numpy and stitches them together with the
CRC's linearity, a few milliseconds per record.
"""

from __future__ import annotations

import functools
import gzip
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from instrument_ai.device.errors import InstrumentAIError

FeatureKind = Literal["bytes", "float", "int64"]

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
_MASK_DELTA = 0xA282EAD8
_LANE = 128  # bytes per numpy lane (even); 256 KB -> 2048 lanes (measured fastest)


class TFRecordError(InstrumentAIError, ValueError):
    """A record that cannot be trusted. `reason` is "truncated_record", "bad_crc" or "bad_record"."""

    def __init__(self, reason: str, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.fatal = fatal  # True: the rest of the file cannot be framed any more


# --------------------------------------------------------------------------- CRC32C


@functools.cache
def _table() -> np.ndarray:
    """The 256-entry byte table of the reflected CRC-32C."""
    crc = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        crc = np.where(crc & 1, (crc >> 1) ^ np.uint32(_POLY), crc >> 1).astype(np.uint32)
    return crc


@functools.cache
def _table16() -> np.ndarray:
    """State after two zero bytes from each state v < 2**16.

    By linearity, feeding the 16-bit word w to state s gives table16[(s ^ w) & 0xFFFF] ^ (s >> 16).
    """
    table = _table()
    states = np.arange(1 << 16, dtype=np.uint32)
    for _ in range(2):
        states = table[states & 0xFF] ^ (states >> 8)
    return states


@functools.cache
def _zeros_tables(n: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """Tables of the linear map "advance a CRC state over n zero bytes", one per state byte."""
    table = _table()
    states = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32)[:, None])).astype(
        np.uint32
    )
    for _ in range(n):
        states = table[states & 0xFF] ^ (states >> 8)
    rows = [row.tolist() for row in states]
    return rows[0], rows[1], rows[2], rows[3]


@functools.cache
def _table_list() -> list[int]:
    return _table().tolist()


def _crc_update_py(crc: int, data: bytes | memoryview) -> int:
    table = _table_list()
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C (Castagnoli) of `data`, as used by TFRecord. crc32c(b"123456789") == 0xE3069283."""
    data = memoryview(data).cast("B")
    n = len(data)
    n_lanes = n // _LANE
    if n_lanes < 8:
        return _crc_update_py(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    head = n - n_lanes * _LANE
    crc = _crc_update_py(0xFFFFFFFF, data[:head])
    # CRC state updates are linear over GF(2): state(s, block) = state(0, block) ^ zeros_L(s).
    # Two bytes per step through a 65536-entry table (zero-initialised lanes, so no init/xorout per lane).
    columns = np.frombuffer(data[head:], dtype="<u2").reshape(n_lanes, _LANE // 2).T.astype(np.uint32)
    table16 = _table16()
    lanes = np.zeros(n_lanes, dtype=np.uint32)
    for column in columns:
        lanes = table16[(lanes ^ column) & 0xFFFF] ^ (lanes >> 16)
    z0, z1, z2, z3 = _zeros_tables(_LANE)
    for lane in lanes.tolist():
        crc = z0[crc & 0xFF] ^ z1[(crc >> 8) & 0xFF] ^ z2[(crc >> 16) & 0xFF] ^ z3[crc >> 24] ^ lane
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The masked CRC TFRecord stores (masking keeps CRCs of CRC-bearing data well distributed)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# --------------------------------------------------------------------------- framing


def frame_record(payload: bytes) -> bytes:
    """One TFRecord record around `payload`."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload))


def _open(path: Path) -> BinaryIO:
    """Open a TFRecord file, transparently un-gzipping a GZIP-compressed one."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def iter_records(path: str | Path) -> Iterator[bytes | TFRecordError]:
    """Yield each record's payload, or a `TFRecordError` in its place.

    Errors are yielded rather than raised so the caller can count and go on: a
    bad payload CRC skips one record (`fatal=False`); a truncated record or a bad
    length CRC ends the file (`fatal=True`, nothing after it can be framed).
    """
    path = Path(path)
    with _open(path) as fh:
        index = 0
        offset = 0
        while True:
            where = f"{path}: record {index} at byte {offset}"
            try:
                header = fh.read(12)
            except (OSError, EOFError) as exc:  # e.g. a truncated gzip stream
                yield TFRecordError("truncated_record", f"{where}: unreadable ({exc})", fatal=True)
                return
            if not header:
                return
            if len(header) < 12:
                yield TFRecordError("truncated_record", f"{where}: file ends inside a record header", fatal=True)
                return
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                yield TFRecordError("bad_crc", f"{where}: length CRC mismatch (corrupt file)", fatal=True)
                return
            try:
                payload = fh.read(length)
                footer = fh.read(4)
            except (OSError, EOFError) as exc:
                yield TFRecordError("truncated_record", f"{where}: unreadable ({exc})", fatal=True)
                return
            if len(payload) < length or len(footer) < 4:
                yield TFRecordError(
                    "truncated_record", f"{where}: file ends inside a {length}-byte record (truncated)", fatal=True
                )
                return
            if masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
                yield TFRecordError("bad_crc", f"{where}: payload CRC mismatch (corrupt record)", fatal=False)
            else:
                yield payload
            index += 1
            offset += 16 + length


def write_records(path: str | Path, payloads: Iterable[bytes]) -> int:
    """Write payloads as an uncompressed TFRecord file; returns the number of records."""
    count = 0
    with open(path, "wb") as fh:
        for payload in payloads:
            fh.write(frame_record(payload))
            count += 1
    return count


# --------------------------------------------------------------------------- protobuf


@dataclass(frozen=True)
class Feature:
    """One decoded `tf.train.Feature`: its kind and its values (float32 array for floats)."""

    kind: FeatureKind
    values: list[bytes] | list[int] | np.ndarray


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise ValueError("varint runs past the end of its message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field; length-delimited values as sub-views."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise ValueError(f"field {number} runs past the end of its message")
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire == 5:
            if pos + 4 > end:
                raise ValueError("fixed32 runs past the end of its message")
            yield number, wire, buf[pos : pos + 4]
            pos += 4
        elif wire == 1:
            if pos + 8 > end:
                raise ValueError("fixed64 runs past the end of its message")
            yield number, wire, buf[pos : pos + 8]
            pos += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode_list(kind: FeatureKind, msg: memoryview) -> list[bytes] | list[int] | np.ndarray:
    if kind == "bytes":
        return [bytes(v) for n, w, v in _fields(msg, 0, len(msg)) if n == 1 and w == 2]  # type: ignore[arg-type]
    if kind == "float":
        chunks: list[bytes] = []
        for n, w, v in _fields(msg, 0, len(msg)):
            if n != 1:
                continue
            if w not in (2, 5) or (w == 2 and len(v) % 4):  # type: ignore[arg-type]
                raise ValueError("malformed float_list")
            chunks.append(bytes(v))  # type: ignore[arg-type]
        return np.frombuffer(b"".join(chunks), dtype="<f4").astype(np.float32)
    ints: list[int] = []
    for n, w, v in _fields(msg, 0, len(msg)):
        if n != 1:
            continue
        if w == 0:
            ints.append(_signed64(v))  # type: ignore[arg-type]
        elif w == 2:
            assert isinstance(v, memoryview)
            pos = 0
            while pos < len(v):
                value, pos = _varint(v, pos, len(v))
                ints.append(_signed64(value))
        else:
            raise ValueError("malformed int64_list")
    return ints


_KINDS: dict[int, FeatureKind] = {1: "bytes", 2: "float", 3: "int64"}


def decode_example(payload: bytes | memoryview) -> dict[str, Feature]:
    """Decode a serialized `tf.train.Example` into {name: Feature}; ValueError if malformed."""
    buf = memoryview(payload).cast("B")
    features: dict[str, Feature] = {}
    for n, w, features_msg in _fields(buf, 0, len(buf)):
        if n != 1 or w != 2:
            continue
        assert isinstance(features_msg, memoryview)
        for n2, w2, entry in _fields(features_msg, 0, len(features_msg)):
            if n2 != 1 or w2 != 2:
                continue
            assert isinstance(entry, memoryview)
            key: str | None = None
            feature: Feature | None = None
            for n3, w3, value in _fields(entry, 0, len(entry)):
                assert isinstance(value, memoryview) or w3 != 2
                if n3 == 1 and w3 == 2:
                    try:
                        key = bytes(value).decode("utf-8")  # type: ignore[arg-type]
                    except UnicodeDecodeError:
                        raise ValueError("feature name is not UTF-8") from None
                elif n3 == 2 and w3 == 2:
                    feature = Feature("bytes", [])  # a Feature with no kind set: treat as empty
                    for n4, w4, lst in _fields(value, 0, len(value)):  # type: ignore[arg-type]
                        if n4 in _KINDS and w4 == 2:
                            kind = _KINDS[n4]
                            feature = Feature(kind, _decode_list(kind, lst))  # type: ignore[arg-type]
            if key is None:
                raise ValueError("feature map entry without a name")
            features[key] = feature if feature is not None else Feature("bytes", [])
    return features


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, body: bytes) -> bytes:
    return _encode_varint((number << 3) | 2) + _encode_varint(len(body)) + body


def encode_feature(value: bytes | str | int | float | Sequence | np.ndarray) -> bytes:
    """Serialize one `tf.train.Feature` from a Python value.

    bytes/str and lists of them -> bytes_list; int and int lists -> int64_list;
    float, float lists and float arrays -> float_list (packed float32).
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return _len_field(2, _len_field(1, np.ascontiguousarray(value, dtype="<f4").tobytes()))
        value = value.tolist()
    if isinstance(value, (bytes, str, int, float)) and not isinstance(value, bool):
        value = [value]
    items = list(value)  # type: ignore[arg-type]
    if all(isinstance(v, (bytes, str)) for v in items):
        body = b"".join(_len_field(1, v.encode("utf-8") if isinstance(v, str) else v) for v in items)
        return _len_field(1, body)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return _len_field(3, _len_field(1, b"".join(_encode_varint(v) for v in items)))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        return _len_field(2, _len_field(1, np.asarray(items, dtype="<f4").tobytes()))
    raise TypeError(f"cannot encode {type(items[0]).__name__} values as a tf.train.Feature")


def encode_example(features: Mapping[str, bytes | str | int | float | Sequence | np.ndarray]) -> bytes:
    """Serialize a `tf.train.Example` (features in the given order, as protobuf writers may)."""
    entries = b"".join(
        _len_field(1, _len_field(1, name.encode("utf-8")) + _len_field(2, encode_feature(value)))
        for name, value in features.items()
    )
    return _len_field(1, entries)
