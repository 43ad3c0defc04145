"""Bad input through `classify`, `run --source FILE --fast` and `inspect`: each is one clear line and a non-zero
exit, never a traceback; every sample format libsndfile reads is classified, not refused.

Also property-based tests: random bytes named .wav reach only `SourceError` (a one-line CLI error), and a bundle
whose metadata members hold random JSON (with valid digests, so the parser really reads them) is loaded or refused
with `BundleError`, never crashes the loader.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner, Result
from fakemic import sequence, tiny_bundle_bytes, tiny_tflite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instrument_ai.device import bundle as device_bundle
from instrument_ai.device import model_files, sources
from instrument_ai.device.cli import cli
from instrument_ai.device.files import classify_file
from instrument_ai.device.settings import EngineSettings

GIB2 = 2 * 1024**3


@pytest.fixture(scope="module")
def loaded(tiny_bundle_path: Path) -> Any:
    return device_bundle.load(tiny_bundle_path)


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result: Result, code: int = 1) -> str:
    """The result is exit `code` with exactly one line of output, "Error: ...", and no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def run_fast(model: Path, source: Path) -> Result:
    return invoke("run", "--source", source, "--fast", "--json", "--model", model)


def bytes_read() -> int:
    """Bytes this process has read through read(2) so far (/proc/self/io rchar): proves a file was not read."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def write_tone(path: Path, rate: int, freq: float = 200.0, channels: int = 1, **kwargs: Any) -> Path:
    mono = sequence([(None, 0.2), (freq, 1.2), (None, 0.2)], rate=rate)
    soundfile.write(str(path), np.repeat(mono[:, None], channels, axis=1), rate, **kwargs)
    return path


# -- files that must work --------------------------------------------------------------------------------------


GOOD = {
    "u8": (16000, 200.0, 1, "PCM_U8", "low"),
    "i16": (16000, 200.0, 1, "PCM_16", "low"),
    "i24": (16000, 1000.0, 1, "PCM_24", "mid"),
    "i32": (16000, 4000.0, 1, "PCM_32", "high"),
    "f32": (16000, 1000.0, 1, "FLOAT", "mid"),
    "f64": (16000, 200.0, 1, "DOUBLE", "low"),
    "stereo": (44100, 4000.0, 2, "PCM_16", "high"),
    "8k": (8000, 200.0, 1, "PCM_16", "low"),
    "96k": (96000, 4000.0, 1, "FLOAT", "high"),
}


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("good")
    out = {}
    for name, (rate, freq, channels, subtype, _) in GOOD.items():
        out[name] = write_tone(folder / f"{name}.wav", rate, freq, channels, subtype=subtype)
        assert soundfile.info(str(out[name])).subtype == subtype
    return out


def test_every_sample_format_rate_and_layout_is_classified(tiny_bundle_path: Path, good_files: dict[str, Path]) -> None:
    result = invoke("classify", *good_files.values(), "--json", "--model", tiny_bundle_path)
    assert result.exit_code == 0, result.output
    answers = {Path(r["file"]).stem: r for r in map(json.loads, result.output.splitlines())}
    assert {k: v["label"] for k, v in answers.items()} == {k: v[4] for k, v in GOOD.items()}
    assert answers["stereo"]["channels"] == 2 and answers["96k"]["sample_rate"] == 96000
    assert answers["8k"]["sample_rate"] == 8000 and all(abs(r["seconds"] - 1.6) < 0.01 for r in answers.values())


@pytest.mark.parametrize("name", ["u8", "i24", "f64", "stereo", "8k", "96k"])
def test_run_streams_every_format(tiny_bundle_path: Path, good_files: dict[str, Path], name: str) -> None:
    result = run_fast(tiny_bundle_path, good_files[name])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    labels = [r["label"] for r in records if r["type"] == "change"]
    assert GOOD[name][4] in labels and labels[-1] == "silence"  # (8-bit noise on the attack may first say "high")
    assert records[-1]["type"] == "stop" and records[-1]["reason"] == "end of source"


# -- audio files that must be refused ----------------------------------------------------------------------------


def _nan_wav(path: Path, value: float) -> Path:
    x = sequence([(200.0, 1.0)], rate=16000).astype(np.float32)
    x[8000] = value
    soundfile.write(str(path), x, 16000, subtype="FLOAT")
    return path


def _truncated(path: Path) -> Path:
    data = write_tone(path, 16000).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _wav_header_then_holes(path: Path) -> Path:
    """A valid 16-bit mono WAV header announcing 2 GB of audio, then a sparse hole (18.6 h of zeros)."""
    header = b"RIFF" + struct.pack("<I", GIB2 - 8) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    header += b"data" + struct.pack("<I", GIB2 - 44)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(GIB2)
    return path


def _bytes(data: bytes) -> Any:
    def make(path: Path) -> Path:
        path.write_bytes(data)
        return path

    return make


def _sparse(path: Path) -> Path:
    """2 GB of holes: no disk space used, and nothing but zeros to read."""
    with open(path, "wb") as handle:
        handle.truncate(GIB2)
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


def _absurd_rate_wav() -> bytes:
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 2**31 - 1, 0, 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + 3200) + b"WAVE" + fmt + b"data" + struct.pack("<I", 3200) + bytes(3200)


def _empty_wav() -> bytes:
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    return b"RIFF" + struct.pack("<I", 36) + b"WAVE" + fmt + b"data" + struct.pack("<I", 0)


def _header_only(path: Path) -> Path:
    path.write_bytes(write_tone(path, 16000).read_bytes()[:44])
    return path


BAD_AUDIO = {
    "empty": (_bytes(b""), "is empty"),
    "text named wav": (_bytes(b"RIFF? no, just a note to myself\n"), "not a readable audio file"),
    "random bytes": (_bytes(bytes(range(256)) * 40), "not a readable audio file"),
    "truncated": (_truncated, "truncated WAV file: 1.60 s of audio declared, 0.80 s present"),
    "header only": (_header_only, "truncated WAV file: 1.60 s of audio declared, 0.00 s present"),
    "no frames": (lambda p: _bytes(_empty_wav())(p), "contains no audio frames"),
    "nan": (lambda p: _nan_wav(p, float("nan")), "NaN or Inf"),
    "inf": (lambda p: _nan_wav(p, float("inf")), "NaN or Inf"),
    "sparse 2 GB": (_sparse, "not a readable audio file"),
    "directory": (_directory, "is a directory"),
    "missing": (lambda p: p, "no such file"),
    # found by the property test below: a 44101 Hz file would build a 500 MB resampler (the Pi's OOM killer)
    "co-prime rate": (lambda p: write_tone(p, 44101), "sample rate 44101 Hz shares too small a factor"),
    "absurd rate": (lambda p: _bytes(_absurd_rate_wav())(p), "sample rate 2147483647 Hz is outside 1000-384000 Hz"),
}


@pytest.mark.parametrize("case", list(BAD_AUDIO))
def test_bad_audio_is_one_line_through_classify_and_run(tiny_bundle_path: Path, tmp_path: Path, case: str) -> None:
    make, fragment = BAD_AUDIO[case]
    path = make(tmp_path / "input.wav")
    before = bytes_read()
    message = one_line_error(invoke("classify", path, "--model", tiny_bundle_path))
    assert fragment in message and str(path) in message
    if case.startswith("sparse"):
        assert bytes_read() - before < 1_000_000  # refused from its first bytes, not read
    result = run_fast(tiny_bundle_path, path)
    if case in ("nan", "inf"):  # found mid-stream: the hops before it were reported, then one error line
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
        assert result.stderr.count("\n") == 1 and fragment in result.stderr and "Traceback" not in result.output
        assert '"type":"change"' in result.stdout
    else:
        assert fragment in one_line_error(result)


def test_a_2_gb_wav_is_refused_by_classify_from_its_header(tiny_bundle_path: Path, tmp_path: Path) -> None:
    path = _wav_header_then_holes(tmp_path / "long.wav")
    before = bytes_read()
    message = one_line_error(invoke("classify", path, "--model", tiny_bundle_path))
    assert "67108.9 s of audio, longer than --max-seconds 3600 s" in message
    assert bytes_read() - before < 1_000_000


def test_a_device_or_pipe_is_refused_without_blocking(tiny_bundle_path: Path, tmp_path: Path) -> None:
    assert "is not a regular file" in one_line_error(invoke("classify", "/dev/zero", "--model", tiny_bundle_path))
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)  # opening it for reading would block forever
    assert "is not a regular file" in one_line_error(run_fast(tiny_bundle_path, fifo))


def test_wav_streams_of_unknown_length_are_accepted(tiny_bundle_path: Path, tmp_path: Path) -> None:
    """Recorders writing to a pipe leave 0 or 0xFFFFFFFF as the data size: not a truncation."""
    data = bytearray(write_tone(tmp_path / "stream.wav", 16000, subtype="PCM_16").read_bytes())
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "stream.wav").write_bytes(bytes(data))
    result = invoke("classify", tmp_path / "stream.wav", "--json", "--model", tiny_bundle_path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["label"] == "low"


# -- bundles that must be refused --------------------------------------------------------------------------------


def _foreign(path: Path) -> Path:
    path.write_bytes(tiny_tflite(np.zeros((3, 40 * 59)), np.zeros(3), 40, 59))
    return path


BAD_BUNDLES = {
    "text file": (_bytes(b"model = resnet50\n"), "not a valid TFLite model (a text file?)"),
    "empty": (_bytes(b""), "is empty"),
    "random bytes": (_bytes(bytes(range(256)) * 8), "not a valid TFLite model"),
    "truncated": (lambda p: _bytes(tiny_bundle_bytes()[:5000])(p), "truncated or corrupt"),
    "another project's model": (_foreign, "a TFLite model without 'instrument_ai' metadata"),
    "directory": (_directory, "is a directory"),
    "sparse 2 GB": (_sparse, "too large to be a model bundle"),
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES))
def test_bad_bundle_is_one_line_through_inspect_classify_and_run(
    tmp_path: Path, good_files: dict[str, Path], case: str
) -> None:
    make, fragment = BAD_BUNDLES[case]
    path = make(tmp_path / "model.tflite")
    before = bytes_read()
    for args in (
        ["inspect", path],
        ["classify", good_files["i16"], "--model", path],
        ["run", "--source", good_files["i16"], "--fast", "--model", path],
    ):
        message = one_line_error(invoke(*args))
        assert fragment in message and str(path) in message
    if case.startswith("sparse"):
        assert bytes_read() - before < 1_000_000


# -- property-based: the wav reader path ----------------------------------------------------------------------------


def _riff(fmt: bytes, declared: int, payload: bytes, extra: bytes) -> bytes:
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra + b"data" + struct.pack("<I", declared)
    return b"RIFF" + struct.pack("<I", len(body) + len(payload)) + body + payload


riff_files = st.builds(
    _riff,
    st.one_of(
        st.binary(min_size=0, max_size=40),
        st.builds(
            lambda tag, ch, rate, bits: struct.pack(
                "<HHIIHH", tag, ch, rate, (rate * ch * bits // 8) % 2**32, ch * bits // 8, bits
            ),
            st.sampled_from([0, 1, 3, 6, 7, 0xFFFE, 17]),
            st.integers(0, 9),
            st.sampled_from([0, 1, 8000, 16000, 44100, 2**31 - 1]),
            st.sampled_from([0, 1, 8, 16, 24, 32, 64]),
        ),
    ),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=600),
    st.sampled_from([b"", b"LIST\x04\x00\x00\x00abcd", b"fact\x04\x00\x00\x00\x10\x00\x00\x00"]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=800), riff_files))
def test_random_bytes_named_wav_raise_only_source_error(loaded: Any, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.wav"
        path.write_bytes(data)
        try:
            result = classify_file(str(path), loaded, settings=EngineSettings())
        except sources.SourceError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            return
        assert result.label in (*loaded.labels, "silence", "unknown") and len(result.timeline) >= 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(min_size=1, max_size=300), riff_files))
def test_random_wav_bytes_through_the_cli_are_one_line_or_an_answer(tiny_bundle_path: Path, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.wav"
        path.write_bytes(data)
        result = invoke("classify", path, "--model", tiny_bundle_path)
        if result.exit_code == 0:
            assert result.output.startswith(f"{path}: ")
        else:
            one_line_error(result)


def test_file_source_blocks_stop_on_request(tmp_path: Path) -> None:
    """The reader path used above also honours its stop event (the daemon stops within one block)."""
    path = write_tone(tmp_path / "t.wav", 16000)
    stop = threading.Event()
    stop.set()
    assert list(sources.FileSource(path, realtime=False).blocks(stop)) == []


# -- property-based: the bundle metadata parser --------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = [
    ("name",),
    ("version",),
    ("labels",),
    ("sample_rate",),
    ("window_frames",),
    ("window_samples",),
    ("default_hop_seconds",),
    ("frontend_spec",),
    ("frontend_spec", "n_mfcc"),
    ("frontend_spec", "sample_rate"),
    ("frontend_spec", "fmax"),
    ("input_normalization",),
    ("input_normalization", "mean"),
    ("input_normalization", "std"),
    ("golden",),
    ("golden", "vectors"),
    ("golden", "tolerance"),
    ("input",),
    ("output", "dtype"),
    ("output", "zero_point"),
]


@functools.cache
def tiny_parts() -> tuple[bytes, dict[str, Any]]:
    data = tiny_bundle_bytes()
    return data, device_bundle.parse_bundle(data)[0]


def with_member(field: tuple[str, ...], value: Any, delete: bool = False) -> bytes:
    """The tiny bundle with one metadata member replaced (or deleted), re-digested so the parser reads it."""
    from instrument_ai.convert.bundle_writer import attach_metadata

    data, metadata = tiny_parts()
    edited = copy.deepcopy(metadata)
    parent = edited
    for key in field[:-1]:
        parent = parent[key]
    if delete:
        parent.pop(field[-1], None)
    else:
        parent[field[-1]] = value
    return attach_metadata(data, edited)


@settings(max_examples=50, deadline=None)
@given(field=st.sampled_from(FIELDS), value=json_values, delete=st.booleans())
def test_random_metadata_members_are_refused_with_bundle_error_only(
    field: tuple[str, ...], value: Any, delete: bool
) -> None:
    bundle_bytes = with_member(field, value, delete)  # fresh, valid digests: the field checks are what is tested
    try:
        loaded = device_bundle.load_bytes(bundle_bytes, "edited")
    except device_bundle.BundleError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("edited")
        return
    assert loaded.predict(np.zeros((loaded.n_mfcc, loaded.window_frames), np.float32)).shape == (3,)


@pytest.mark.parametrize("value", [None, "0.004", [1]])
@pytest.mark.parametrize("side", ["input", "output"])
def test_a_non_numeric_quantisation_scale_is_one_line_in_run(tmp_path: Path, side: str, value: Any) -> None:
    """The daemon's loader turns any loader failure into one line (and a reload into a refusal)."""
    path = tmp_path / "scale.tflite"
    path.write_bytes(with_member((side, "scale"), value))
    with pytest.raises(model_files.ModelLoadError) as info:
        model_files.load_bundle(path, 1)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("value", [None, "abc"])
def test_a_non_numeric_quantisation_scale_is_a_bundle_error(value: Any) -> None:
    with pytest.raises(device_bundle.BundleError):
        device_bundle.load_bytes(with_member(("input", "scale"), value), "edited")


@settings(max_examples=80, deadline=None)
@given(payload=st.binary(min_size=1, max_size=64), where=st.floats(0.0, 1.0))
def test_random_bytes_in_the_metadata_payload_are_refused(payload: bytes, where: float) -> None:
    """Overwrite part of the metadata JSON in place (the file stays a valid flatbuffer): always refused."""
    data, _ = tiny_parts()
    model = device_bundle.tflite_file.parse(data, tensors=False)
    start, length = model.buffers[model.metadata_buffer(device_bundle.METADATA_NAME)]
    offset = start + int(where * max(0, length - len(payload)))
    damaged = data[:offset] + payload + data[offset + len(payload) :]
    if damaged == data:
        return
    with pytest.raises(device_bundle.BundleError):
        device_bundle.load_bytes(damaged, "damaged")
