"""Wav2Lip/SadTalker mel front-end: golden values computed from first principles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toonbooth.core.errors import InputError
from toonbooth.vision.mel import (
    MelParams,
    hz_to_mel,
    mel_filterbank,
    mel_spectrogram,
    mel_to_hz,
    sadtalker_mel_windows,
    stft_magnitude,
    wav2lip_mel_windows,
)

SR = 16000


def _slaney_mel(f: float) -> float:
    # Slaney: 3 mels per 200 Hz below 1 kHz, then 27 mels per factor 6.4
    return f * 3.0 / 200.0 if f < 1000.0 else 15.0 + math.log(f / 1000.0) * 27.0 / math.log(6.4)


def _band_edges_hz() -> list[float]:
    lo, hi = _slaney_mel(55.0), _slaney_mel(7600.0)
    mels = [lo + (hi - lo) * i / 81 for i in range(82)]
    out = []
    for m in mels:
        out.append(m * 200.0 / 3.0 if m < 15.0 else 1000.0 * math.exp((m - 15.0) * math.log(6.4) / 27.0))
    return out


def test_mel_scale_known_points():
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel(6400.0)) == pytest.approx(42.0)  # one factor 6.4 above 1 kHz = 27 mels
    assert float(hz_to_mel(200.0)) == pytest.approx(3.0)
    f = np.array([55.0, 440.0, 999.0, 1000.0, 3000.0, 7600.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-12)


def test_filterbank_triangles_have_unit_area_and_peak_at_their_centre():
    fb = mel_filterbank(SR, 800, 80, 55.0, 7600.0)
    assert fb.shape == (80, 401)
    edges = _band_edges_hz()
    df = SR / 800
    for i in (40, 60, 79):  # bands much wider than one 20 Hz bin: Riemann sum of the triangle = 1
        assert fb[i].sum() * df == pytest.approx(1.0, rel=0.02)
        peak_hz = np.argmax(fb[i]) * df
        assert abs(peak_hz - edges[i + 1]) <= df
    assert np.all(fb >= 0)
    assert fb[:, : int(55 / df)].sum() == 0  # nothing below fmin


def test_frame_count_and_silence_floor():
    for n in (1, 199, 200, 16000, 16123):
        mel = mel_spectrogram(np.zeros(n, dtype=np.float32))
        assert mel.shape == (80, 1 + n // 200)
        assert np.all(mel == -4.0)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0, 6000.0])
def test_pure_tone_peaks_in_the_band_centred_on_it(freq):
    t = np.arange(SR) / SR
    mel = mel_spectrogram((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
    centres = np.array(_band_edges_hz()[1:-1])
    expected_band = int(np.argmin(np.abs(centres - freq)))
    peak = np.argmax(mel[:, 10:-10].mean(axis=1))
    assert abs(int(peak) - expected_band) <= 1
    # and the band nearest in mel (not Hz) distance is the exact argmax when the tone sits on a centre
    if freq == 1000.0:
        assert int(peak) == expected_band


def test_on_bin_tone_golden_level_with_preemphasis():
    """A cosine exactly on FFT bin k (1 kHz = bin 50) under a periodic Hann window of N = 800 has
    |X[k]| = A N / 4 and |X[k±1]| = A N / 8, zero elsewhere; pre-emphasis scales it by
    |1 - 0.97 e^{-jw}|. The mel band value and its dB normalisation follow by hand."""
    amp, k = 0.3, 50
    f0 = k * SR / 800
    n = np.arange(SR)
    wav = amp * np.cos(2 * np.pi * f0 * n / SR + 0.7)
    w = 2 * np.pi * f0 / SR
    gain = abs(1 - 0.97 * complex(math.cos(w), -math.sin(w)))

    mag = stft_magnitude(wav, 800, 200, 800)
    mid = mag[:, 20]
    assert mid[k] == pytest.approx(amp * 800 / 4, rel=1e-9)
    assert mid[k - 1] == pytest.approx(amp * 800 / 8, rel=1e-9)
    assert mid[k + 1] == pytest.approx(amp * 800 / 8, rel=1e-9)

    fb = mel_filterbank(SR, 800, 80, 55.0, 7600.0)
    band = int(np.argmax(fb[:, k]))
    mel_value = gain * (fb[band, k] * amp * 200 + (fb[band, k - 1] + fb[band, k + 1]) * amp * 100)
    db = 20 * math.log10(mel_value) - 20
    expected = max(-4.0, min(4.0, 8 * (db + 100) / 100 - 4))
    out = mel_spectrogram(wav.astype(np.float64))
    assert out[band, 20] == pytest.approx(expected, abs=2e-3)


def test_pad_modes_differ_only_at_the_edges():
    rng = np.random.default_rng(0)
    wav = rng.standard_normal(4000) * 0.1
    a = mel_spectrogram(wav, MelParams(pad_mode="constant"))
    b = mel_spectrogram(wav, MelParams(pad_mode="reflect"))
    np.testing.assert_allclose(a[:, 3:-3], b[:, 3:-3], atol=1e-5)
    assert not np.allclose(a[:, 0], b[:, 0])


def test_windows():
    mel = np.arange(80 * 100, dtype=np.float32).reshape(80, 100)
    st = sadtalker_mel_windows(mel, n_frames=31)
    assert st.shape == (31, 80, 16)
    np.testing.assert_array_equal(st[0][:, 0], mel[:, 0])  # int(80 * -2 / 25) = -6 → clamped to 0
    np.testing.assert_array_equal(st[5], mel[:, 9:25])  # int(80 * 3 / 25) = 9
    np.testing.assert_array_equal(st[30][:, -1], mel[:, 99])  # clamped at the end
    chunks = wav2lip_mel_windows(mel)
    assert all(c.shape == (80, 16) for c in chunks)
    np.testing.assert_array_equal(chunks[1], mel[:, 3:19])  # int(1 * 3.2) = 3
    np.testing.assert_array_equal(chunks[-1], mel[:, 84:])


def test_bad_input():
    with pytest.raises(InputError, match="mono"):
        mel_spectrogram(np.zeros((2, 100)))
    with pytest.raises(InputError, match="empty"):
        mel_spectrogram(np.zeros(0))
    with pytest.raises(InputError, match="pad_mode"):
        mel_spectrogram(np.zeros(100), MelParams(pad_mode="edge"))
