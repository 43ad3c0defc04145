"""Streaming equals batch, the spec is strict, bad input is refused clearly, tables are cached.

The property test is the contract the device relies on: whatever block sizes
the sound card delivers (1 sample to many seconds), the concatenated
`MfccStream` output equals `mfcc` of the whole recording, so a model trained
on batch features sees the same numbers live.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instrument_ai.device import frontend
from instrument_ai.device.frontend import (
    DEFAULT_SPEC,
    DEFAULT_WINDOW_SECONDS,
    FrontendSpec,
    MfccStream,
    as_mono_float,
    librosa_preset,
    log_mel,
    mel_filterbank,
    mel_power,
    mfcc,
    psf_preset,
)

STREAM_TOL = 1e-5

SPECS = {
    "default": DEFAULT_SPEC,
    "librosa": librosa_preset(),
    "psf": psf_preset(),  # pre-emphasis: the stream must carry the previous sample across blocks
    # hop does not divide the window, window shorter than the FFT, a dB reference, pre-emphasis with dB
    "odd": FrontendSpec(win_length=700, hop_length=333, n_fft=1024, preemphasis=0.5, db_ref=2.0, window="hamming"),
}


def _signal(kind: str, n: int, seed: int, dtype: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    if kind == "noise":
        x = rng.standard_normal(n) * 0.3
    elif kind == "sine":
        x = 0.5 * np.sin(2 * np.pi * rng.uniform(40, 7000) * t)
    elif kind == "silence":
        x = np.zeros(n)
    else:  # a burst in silence, clipped
        x = np.zeros(n)
        start = int(rng.integers(0, max(1, n)))
        x[start : start + 3000] = np.clip(rng.standard_normal(min(3000, n - start)) * 2, -1, 1)
    if dtype == "int16":
        return (x * 32767).astype(np.int16)
    return x.astype(dtype)


def _split(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    edges = [0, *sorted(c % (n + 1) for c in cuts), n]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _stream_all(spec: FrontendSpec, signal: np.ndarray, bounds: list[tuple[int, int]]) -> np.ndarray:
    stream = MfccStream(spec)
    outputs = [stream.process(signal[a:b]) for a, b in bounds]
    assert all(o.shape[0] == spec.n_mfcc and o.dtype == np.float32 for o in outputs)
    assert stream.samples_seen == signal.shape[0]
    result = np.concatenate(outputs, axis=1)
    assert stream.frames_emitted == result.shape[1]
    return result


def _batch(spec: FrontendSpec, signal: np.ndarray) -> np.ndarray:
    if signal.size == 0:
        return np.zeros((spec.n_mfcc, 0), dtype=np.float32)
    return mfcc(signal, spec)


BLOCK_STEPS = [1, 255, 256, 257, 4000, 16000, 32000]
block_cuts = st.one_of(
    st.lists(st.integers(0, 60_000), max_size=40),  # arbitrary cuts, including empty blocks
    st.lists(st.integers(0, 400), max_size=60),  # many tiny blocks at the start, then one long one
    # regular blocks, as a sound card delivers them: single samples (first 2000), hop-ish, 0.25 s, 1 s, 2 s
    st.builds(lambda step: list(range(step, 2000 if step == 1 else 60_000, step)), st.sampled_from(BLOCK_STEPS)),
)


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.one_of(st.integers(0, 3000), st.integers(3000, 60_000)),
    kind=st.sampled_from(["noise", "sine", "silence", "burst"]),
    dtype=st.sampled_from(["float32", "float64", "int16"]),
    seed=st.integers(0, 2**16),
    cuts=block_cuts,
)
def test_stream_equals_batch(name: str, n: int, kind: str, dtype: str, seed: int, cuts: list[int]) -> None:
    spec = SPECS[name]
    signal = _signal(kind, n, seed, dtype)
    streamed = _stream_all(spec, signal, _split(n, cuts))
    batch = _batch(spec, signal)
    assert streamed.shape == batch.shape == (spec.n_mfcc, spec.n_frames(n))
    np.testing.assert_allclose(streamed, batch, rtol=0, atol=STREAM_TOL)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_one_sample_blocks_and_one_multi_second_block(name: str) -> None:
    """The two extremes, deterministically: every sample on its own, and 4 s in one call."""
    spec = SPECS[name]
    signal = _signal("noise", spec.window_samples(6) + 5, 1, "float32")
    single = _stream_all(spec, signal, [(i, i + 1) for i in range(signal.size)])
    np.testing.assert_allclose(single, mfcc(signal, spec), rtol=0, atol=STREAM_TOL)
    long_signal = _signal("burst", 4 * 16000, 2, "float64")
    whole = _stream_all(spec, long_signal, [(0, long_signal.size)])
    np.testing.assert_array_equal(whole, mfcc(long_signal, spec))


def test_preemphasis_state_crosses_blocks() -> None:
    """Without the carried sample, the first sample of every block would be wrong: prove the state matters."""
    spec = psf_preset()
    signal = _signal("noise", 16000, 3, "float64")
    bounds = _split(signal.size, list(range(97, 16000, 97)))
    np.testing.assert_allclose(_stream_all(spec, signal, bounds), mfcc(signal, spec), atol=STREAM_TOL)
    restarted = np.concatenate([mfcc(signal[: 8000 + 240], spec), mfcc(signal[8000:], spec)], axis=1)
    assert restarted.shape[1] == mfcc(signal, spec).shape[1]
    assert np.abs(restarted - mfcc(signal, spec)).max() > 1e-3  # the block boundary frame differs


def test_reset_forgets_everything() -> None:
    spec = psf_preset()
    stream = MfccStream(spec)
    stream.process(_signal("noise", 5000, 4, "float32"))
    stream.reset()
    assert stream.frames_emitted == 0 and stream.samples_seen == 0
    signal = _signal("sine", 3000, 5, "float32")
    np.testing.assert_array_equal(stream.process(signal), mfcc(signal, spec))


def test_stream_accepts_empty_blocks_and_column_vectors() -> None:
    stream = MfccStream()
    assert stream.process(np.zeros(0, dtype=np.float32)).shape == (40, 0)
    assert stream.process(np.zeros((100, 1), dtype=np.float32)).shape == (40, 0)
    assert stream.process(np.zeros((2000, 1), dtype=np.float32)).shape == (40, DEFAULT_SPEC.n_frames(2100))


def test_int16_is_scaled_to_unit_range() -> None:
    signal = _signal("noise", 4000, 6, "int16")
    np.testing.assert_array_equal(mfcc(signal), mfcc(signal.astype(np.float64) / 32768.0))


def test_inputs_are_not_modified() -> None:
    signal = _signal("noise", 4000, 7, "float64")
    before = signal.copy()
    for spec in SPECS.values():
        mfcc(signal, spec)
        mel_power(signal, spec)
        MfccStream(spec).process(signal)
    np.testing.assert_array_equal(signal, before)


def test_strided_and_read_only_inputs() -> None:
    signal = _signal("noise", 9000, 8, "float64")
    expected = mfcc(np.ascontiguousarray(signal[::2]))
    np.testing.assert_array_equal(mfcc(signal[::2]), expected)
    frozen = signal.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(mfcc(frozen), mfcc(signal))


def test_feature_shapes_and_stages() -> None:
    signal = _signal("noise", 16000, 9, "float32")
    assert mfcc(signal).shape == (40, 59)
    assert mel_power(signal).shape == log_mel(signal).shape == (64, 59)
    assert (mel_power(signal) > 0).all()
    np.testing.assert_allclose(log_mel(signal), 10 * np.log10(np.maximum(mel_power(signal), 1e-10)), atol=1e-3)


# -- spec ------------------------------------------------------------------------------------------


def test_default_spec_and_window() -> None:
    spec = DEFAULT_SPEC
    assert (spec.sample_rate, spec.win_length, spec.hop_length, spec.n_fft) == (16000, 1024, 256, 1024)
    assert (spec.n_mels, spec.n_mfcc, spec.fmin, spec.fmax, spec.mel_scale) == (64, 40, 20.0, 8000.0, "slaney")
    assert DEFAULT_WINDOW_SECONDS <= 1.0
    assert spec.n_frames(16000) == 59
    assert spec.window_samples(59) == 15872 <= 16000
    for frames in range(1, 200):
        assert spec.n_frames(spec.window_samples(frames)) == frames
        assert spec.n_frames(spec.window_samples(frames) - 1) == frames - 1
    assert spec.n_frames(0) == 0


@pytest.mark.parametrize("spec", [*SPECS.values(), psf_preset(8000, nfft=256), librosa_preset(44100, n_mels=40)])
def test_json_round_trip(spec: FrontendSpec) -> None:
    text = spec.to_json()
    again = FrontendSpec.from_json(text)
    assert again == spec and hash(again) == hash(spec)
    assert FrontendSpec.from_dict(json.loads(text)) == spec
    assert again.to_json() == text
    assert json.loads(text) == spec.to_dict()
    every_field = {f.name for f in frontend.dataclasses.fields(FrontendSpec)}
    assert set(spec.to_dict()) == every_field - {"stage"}  # an MFCC spec is written as before the stage existed
    log_mel_spec = frontend.dataclasses.replace(spec, stage="log_mel")
    assert set(log_mel_spec.to_dict()) == every_field
    assert FrontendSpec.from_json(log_mel_spec.to_json()) == log_mel_spec


def test_numpy_scalars_and_integral_floats_are_normalised() -> None:
    spec = FrontendSpec(n_mels=np.int64(64), fmin=20, fmax=np.float32(8000.0))
    assert spec == DEFAULT_SPEC
    assert type(spec.n_mels) is int and type(spec.fmin) is float
    assert FrontendSpec.from_json(spec.to_json()) == DEFAULT_SPEC


def test_from_dict_refuses_unknown_fields() -> None:
    data = DEFAULT_SPEC.to_dict() | {"noise_gate": 0.1}
    with pytest.raises(ValueError, match="unknown field.*noise_gate"):
        FrontendSpec.from_dict(data)


def test_from_dict_refuses_missing_fields() -> None:
    data = DEFAULT_SPEC.to_dict()
    del data["n_mels"], data["lifter"]
    with pytest.raises(ValueError, match="missing field.*lifter, n_mels"):
        FrontendSpec.from_dict(data)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '"spec"', "null"])
def test_from_json_refuses_non_objects(text: str) -> None:
    with pytest.raises(ValueError, match="frontend spec"):
        FrontendSpec.from_json(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fmax": 9000.0}, "fmax 9000.0 Hz is above the Nyquist frequency 8000.0"),
        ({"n_mfcc": 65}, r"n_mfcc \(65\) cannot exceed n_mels \(64\)"),
        ({"window": "blackman"}, "window='blackman' is not one of hann, hamming, rect"),
        ({"mel_scale": "bark"}, "mel_scale"),
        ({"log": "log2"}, "log='log2'"),
        ({"win_length": 2048}, "win_length must be in 1..n_fft"),
        ({"hop_length": 0}, "hop_length must be in 1..win_length"),
        ({"hop_length": 2000}, "hop_length must be in 1..win_length"),
        ({"sample_rate": 0}, "sample_rate must be positive"),
        ({"sample_rate": 16000.0}, "sample_rate must be an integer"),
        ({"n_mels": True}, "n_mels must be an integer"),
        ({"fmin": "20"}, "fmin must be a number"),
        ({"fmin": 9000.0}, "need 0 <= fmin < fmax"),
        ({"fmin": -1.0}, "need 0 <= fmin < fmax"),
        ({"fmax": float("nan")}, "need 0 <= fmin < fmax"),
        ({"preemphasis": 1.0}, r"preemphasis must be in \[0, 1\)"),
        ({"log_floor": 0.0}, "log_floor must be a positive number"),
        ({"db_ref": -1.0}, "db_ref must be positive"),
        ({"dct_type": 3}, "only DCT type 2"),
        ({"lifter": -1}, "lifter must be >= 0"),
        ({"energy_c0": 1}, "energy_c0 must be true or false"),
        ({"version": 2}, "version 2 is not supported"),
        ({"n_mels": 400, "fmin": 0.0}, r"mel band\(s\) .* contain no FFT bin"),
    ],
)
def test_invalid_specs_name_the_field(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrontendSpec(**changes)
    with pytest.raises(ValueError, match=message):  # the same refusal through the bundle's path
        FrontendSpec.from_dict(DEFAULT_SPEC.to_dict() | changes)


# -- bad audio -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "message"),
    [
        (np.array([0.0, np.nan, 0.0] * 400), "NaN or Inf"),
        (np.array([0.0, np.inf] * 600, dtype=np.float32), "NaN or Inf"),
        (np.array([-np.inf] * 1200), "NaN or Inf"),
        (np.zeros(2000, dtype=np.int32), "dtype must be float32, float64 or int16, got int32"),
        (np.zeros(2000, dtype=np.float16), "got float16"),
        (np.zeros(2000, dtype=np.uint8), "got uint8"),
        (np.zeros(2000, dtype=np.complex128), "got complex128"),
        (np.zeros(2000, dtype=bool), "got bool"),
        (np.zeros((2000, 2), dtype=np.float32), r"mono \(1-D\), got shape \(2000, 2\)"),
        (np.zeros((2, 2000), dtype=np.float32), "mono"),
        (np.zeros((10, 10, 10)), "mono"),
        (np.array(0.5), "mono"),
        ([0.0] * 2000, "numpy array, got list"),
        (np.zeros(0, dtype=np.float32), "audio is empty"),
    ],
)
def test_bad_audio_raises_value_error(signal: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mfcc(signal)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        mel_power(signal)  # type: ignore[arg-type]
    if message != "audio is empty":  # an empty block is fine for a stream: nothing new arrived
        with pytest.raises(ValueError, match=message):
            MfccStream().process(signal)  # type: ignore[arg-type]


def test_bad_block_leaves_the_stream_usable() -> None:
    signal = _signal("noise", 6000, 10, "float32")
    stream = MfccStream()
    first = stream.process(signal[:3000])
    with pytest.raises(ValueError):
        stream.process(np.full(100, np.nan, dtype=np.float32))
    rest = stream.process(signal[3000:])
    np.testing.assert_array_equal(np.concatenate([first, rest], axis=1), mfcc(signal))


def test_as_mono_float_returns_float64() -> None:
    assert as_mono_float(np.zeros(3, dtype=np.float32)).dtype == np.float64
    assert as_mono_float(np.array([-32768, 16384], dtype=np.int16)).tolist() == [-1.0, 0.5]


# -- tables ------------------------------------------------------------------------------------------------


def test_tables_are_built_once_per_spec_and_read_only() -> None:
    spec = FrontendSpec(n_mels=48, n_mfcc=20)
    same = FrontendSpec.from_json(spec.to_json())
    assert frontend._tables(spec) is frontend._tables(same)
    before = frontend._tables.cache_info()
    mfcc(np.zeros(4000), same)
    MfccStream(same).process(np.zeros(3000))
    after = frontend._tables.cache_info()
    assert after.misses == before.misses and after.hits > before.hits
    assert frontend._tables(FrontendSpec(n_mels=49, n_mfcc=20)) is not frontend._tables(spec)
    tables = frontend._tables(spec)
    for array in (tables.window, tables.mel_t, tables.dct_t):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 1.0


@pytest.mark.parametrize(
    "spec", [*SPECS.values(), psf_preset(nfilt=40, numcep=13), FrontendSpec(n_mels=128, fmin=0.0, n_mfcc=13)]
)
def test_banded_mel_sum_equals_the_dense_filterbank(spec: FrontendSpec) -> None:
    """The speed-up (two non-overlapping layers + reduceat) computes exactly the dense matrix product."""
    tables = frontend._tables(spec)
    assert tables.layers is not None  # triangles always allow it; the dense fallback is for odd filterbanks
    signal = _signal("noise", spec.window_samples(12), 11, "float64")
    frames = frontend._frame(signal, spec)
    banded, _ = frontend._chunk_mel_power(spec, tables, frontend._workspace(spec, tables), frames, band_order=True)
    spectrum = np.fft.rfft(frames * tables.window, n=spec.n_fft)
    dense = (np.abs(spectrum) ** 2 * tables.power_scale) @ mel_filterbank(spec).T
    np.testing.assert_allclose(banded, dense, rtol=1e-12, atol=0)


def test_dense_fallback_for_overlapping_bands() -> None:
    weights = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    assert frontend._mel_layers(weights, 1.0) is None  # bands 0 and 2 overlap: not two layers
    layers = frontend._mel_layers(np.array([[1.0, 0.5, 0.0, 0.0], [0.0, 0.5, 1.0, 0.0], [0.0, 0.0, 0.5, 1.0]]), 2.0)
    assert layers is not None
    power = np.array([[1.0, 2.0, 3.0, 4.0]])
    flat = (power[:, None, :] * layers.weights).reshape(1, -1)
    np.testing.assert_allclose(np.add.reduceat(flat, layers.starts, axis=1)[:, layers.order], [[4.0, 8.0, 11.0]])


def test_dense_filterbank_fallback_gives_the_same_features() -> None:
    """A filterbank that cannot be split into layers goes through the dense matmul: same numbers."""
    spec = DEFAULT_SPEC
    tables = frontend._tables(spec)
    dense = frontend.dataclasses.replace(tables, layers=None, dct_fast_t=tables.dct_t * frontend._DB_PER_NEPER)
    signal = _signal("burst", spec.window_samples(70), 12, "float64")
    frames = frontend._frame(signal, spec)
    ours = frontend._frames_to(spec, frames, "mfcc", dense, frontend._Workspace(spec, dense))
    np.testing.assert_allclose(ours, mfcc(signal, spec), rtol=0, atol=STREAM_TOL)


@pytest.mark.parametrize("rfft_has_out", [True, False])
def test_public_rfft_paths(monkeypatch: pytest.MonkeyPatch, rfft_has_out: bool) -> None:
    """Without numpy's rfft gufunc (another numpy), np.fft.rfft with `out` (numpy 2) or without (numpy 1) agrees."""
    monkeypatch.setattr(frontend, "_RFFT_HAS_OUT", rfft_has_out)
    signal = _signal("noise", 20000, 13, "float64")
    for spec in SPECS.values():
        tables = frontend._tables(spec)
        public = frontend.dataclasses.replace(tables, rfft=None)
        frames = frontend._frame(frontend._preemphasise(signal, spec.preemphasis, 0.0), spec)
        ours = frontend._frames_to(spec, frames, "mfcc", public, frontend._Workspace(spec, public))
        np.testing.assert_array_equal(ours, mfcc(signal, spec))


def test_direct_rfft_is_verified_or_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert frontend._direct_rfft(1024) is not None  # this numpy: the gufunc exists and agrees
    assert frontend._direct_rfft(1023) is not None  # odd sizes use rfft_n_odd
    wrong = SimpleNamespace(rfft_n_even=lambda x, fct, out: np.multiply(out, 0, out=out), rfft_n_odd=None)
    monkeypatch.setattr(np.fft, "_pocketfft_umath", wrong)  # a gufunc that disagrees is not used
    assert frontend._direct_rfft(1024) is None
    monkeypatch.delattr(np.fft, "_pocketfft_umath")  # as if numpy had moved it
    monkeypatch.setitem(sys.modules, "numpy.fft._pocketfft_umath", None)
    assert frontend._direct_rfft(1024) is None


def test_concurrent_callers_do_not_share_buffers() -> None:
    """Each thread has its own workspace: parallel feature extraction (training) gives the serial numbers."""
    from concurrent.futures import ThreadPoolExecutor

    signals = [_signal(kind, 30000 + 1000 * i, i, "float32") for i, kind in enumerate(["noise", "sine", "burst"] * 4)]
    specs = [SPECS[name] for name in sorted(SPECS)]
    jobs = [(s, spec) for s in signals for spec in specs]
    serial = [mfcc(s, spec) for s, spec in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda job: mfcc(*job), jobs * 2))
    for i, result in enumerate(parallel):
        np.testing.assert_array_equal(result, serial[i % len(jobs)])


def test_many_specs_in_turn() -> None:
    """More specs than the per-thread workspace cache holds: buffers are rebuilt, numbers unchanged."""
    signal = _signal("noise", 12000, 14, "float64")
    specs = [FrontendSpec(n_mels=40 + i, n_mfcc=20) for i in range(7)]
    first = [mfcc(signal, spec) for spec in specs]
    for spec, expected in zip(reversed(specs), reversed(first), strict=True):
        np.testing.assert_array_equal(mfcc(signal, spec), expected)
