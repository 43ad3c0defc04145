"""The streaming resampler: frequency response (flat passband, attenuated stopband, no aliasing, no images),
time alignment, and independence of the block sizes the stream is cut into."""

from __future__ import annotations

import numpy as np
import pytest

from instrument_ai.device.resample import StreamResampler, as_float_frames, design_filter, resample

MIC_RATES = [8000, 11025, 22050, 32000, 44100, 48000, 96000]


def amplitude_at(signal: np.ndarray, freq: float, rate: int, also: tuple[float, ...] = ()) -> float:
    """Amplitude of the `freq` component of the middle half of `signal`.

    A joint least-squares fit of sines at `freq` and at the frequencies `also`
    present in the signal, so that a strong tone does not leak into the estimate.
    """
    n = signal.size
    mid = slice(n // 4, 3 * n // 4)
    t = np.arange(n)[mid] / rate
    columns = [fn(2 * np.pi * f * t) for f in (freq, *also) for fn in (np.sin, np.cos)]
    coef, *_ = np.linalg.lstsq(np.stack(columns, axis=1), signal[mid], rcond=None)
    return float(np.hypot(coef[0], coef[1]))


def rms(signal: np.ndarray) -> float:
    n = signal.size
    return float(np.sqrt(np.mean(signal[n // 4 : 3 * n // 4] ** 2)))


def sine(freq: float, rate: int, seconds: float = 0.5, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)


@pytest.mark.parametrize("in_rate", MIC_RATES)
def test_passband_is_flat_within_a_tenth_of_a_db(in_rate: int) -> None:
    out_rate = 16000
    edge = 0.9 * min(in_rate, out_rate) / 2  # the documented passband edge
    for freq in (50.0, 440.0, 0.5 * edge, 0.97 * edge):
        y = resample(sine(freq, in_rate), in_rate, out_rate)
        gain_db = 20 * np.log10(amplitude_at(y, freq, out_rate) / 0.5)
        assert abs(gain_db) < 0.1, f"{in_rate} Hz input, {freq:.0f} Hz tone: gain {gain_db:.3f} dB"


@pytest.mark.parametrize("in_rate", [22050, 32000, 44100, 48000, 96000])
def test_tones_above_the_new_nyquist_are_removed_not_aliased(in_rate: int) -> None:
    out_rate = 16000
    for freq in (8100.0, 9000.0, 12345.0, 0.45 * in_rate):
        y = resample(sine(freq, in_rate), in_rate, out_rate)
        alias = abs((freq + out_rate / 2) % out_rate - out_rate / 2)  # where it would fold to
        assert amplitude_at(y, alias, out_rate) < 0.5 * 10 ** (-75 / 20), f"{freq} Hz aliased to {alias} Hz"
        assert rms(y) < 0.5 * 10 ** (-70 / 20), f"{freq} Hz tone leaks {20 * np.log10(rms(y) / 0.5):.1f} dB"


@pytest.mark.parametrize("in_rate", [8000, 11025])
def test_upsampling_makes_no_images_above_the_old_nyquist(in_rate: int) -> None:
    freq = 3000.0
    y = resample(sine(freq, in_rate), in_rate, 16000)
    image = in_rate - freq  # the first spectral image of the zero-stuffed signal
    assert amplitude_at(y, freq, 16000) == pytest.approx(0.5, rel=0.02)
    assert amplitude_at(y, image, 16000, also=(freq,)) < 0.5 * 10 ** (-75 / 20)


def test_transition_band_lies_between_the_passband_edge_and_the_nyquist() -> None:
    # 48 kHz -> 16 kHz: flat to 7.2 kHz, at least 6 dB down half-way to 8 kHz... and gone at 8 kHz.
    gains = {f: amplitude_at(resample(sine(f, 48000), 48000, 16000), f, 16000) / 0.5 for f in (7200.0, 7900.0)}
    assert gains[7200.0] > 10 ** (-0.1 / 20)
    assert gains[7900.0] < 10 ** (-6 / 20)


@pytest.mark.parametrize("in_rate", [8000, 22050, 44100, 48000, 16000])
def test_output_does_not_depend_on_block_sizes(in_rate: int) -> None:
    rng = np.random.default_rng(in_rate)
    x = rng.standard_normal(in_rate) * 0.3
    whole = resample(x, in_rate, 16000)
    for trial in range(3):
        rs = StreamResampler(in_rate, 16000)
        parts, i = [], 0
        while i < x.size:
            k = int(rng.choice([0, 1, 2, 7, 64, 441, 1000, 4096])) if trial else int(rng.integers(1, 20000))
            parts.append(rs.process(x[i : i + k]))
            i += k
        parts.append(rs.flush())
        streamed = np.concatenate(parts)
        assert streamed.shape == whole.shape
        np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-12)


@pytest.mark.parametrize("in_rate", [8000, 44100, 48000])
def test_length_dc_gain_and_time_alignment(in_rate: int) -> None:
    n = in_rate  # one second
    y = resample(np.full(n, 0.25), in_rate, 16000)
    assert y.size == 16000
    np.testing.assert_allclose(y[2000:14000], 0.25, atol=1e-4)  # unit gain at DC
    click = np.zeros(n)
    click[in_rate // 2] = 1.0  # at t = 0.5 s
    y = resample(click, in_rate, 16000)
    assert abs(int(np.argmax(np.abs(y))) - 8000) <= 1  # delay-compensated: still at 0.5 s


def test_streaming_latency_is_bounded_and_reported() -> None:
    rs = StreamResampler(48000, 16000)
    got = rs.process(np.zeros(48000))
    held_back = 48000 - got.size * 3
    assert 0 < held_back <= 3 * rs.latency_samples + 3
    assert rs.latency_samples < 48000 * 0.005  # under 5 ms of look-ahead


def test_passthrough_returns_the_input() -> None:
    x = np.random.default_rng(0).standard_normal(1000)
    rs = StreamResampler(16000, 16000)
    np.testing.assert_array_equal(rs.process(x), x)
    assert rs.flush().size == 0


def test_filter_bank_shape_and_symmetry() -> None:
    bank, delay = design_filter(1, 3)
    h = bank.reshape(-1)[: 2 * delay + 1]
    np.testing.assert_allclose(h, h[::-1], atol=1e-15)  # linear phase
    assert bank.shape[0] == 1 and h.sum() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("bad", [0, -16000, 16000.5, True, None])
def test_bad_rates_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="sample rate"):
        StreamResampler(bad, 16000)  # type: ignore[arg-type]


def test_block_conversion_scales_int16_and_refuses_bad_input() -> None:
    block = np.array([[-32768, 16384]], dtype=np.int16)
    np.testing.assert_allclose(as_float_frames(block, 2), [[-1.0, 0.5]])
    assert as_float_frames(np.zeros(5, dtype=np.float32), 1).shape == (5, 1)
    with pytest.raises(ValueError, match="shape"):
        as_float_frames(np.zeros((5, 2)), 1)
    with pytest.raises(ValueError, match="NaN"):
        as_float_frames(np.array([0.0, np.nan]), 1)
    with pytest.raises(ValueError, match="dtype"):
        as_float_frames(np.zeros(4, dtype=np.uint8), 1)
    with pytest.raises(ValueError, match="numpy array"):
        as_float_frames([0.0, 1.0], 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("in_rate", [16000, 44100, 48000, 8000])
def test_input_needed_is_exactly_enough(in_rate: int) -> None:
    x = np.random.default_rng(1).standard_normal(in_rate)
    for n_out in (1, 17, 4000, 12000):
        need = StreamResampler(in_rate, 16000).input_needed(n_out)
        assert StreamResampler(in_rate, 16000).process(x[:need]).size >= n_out
        assert StreamResampler(in_rate, 16000).process(x[: need - 1]).size < n_out
