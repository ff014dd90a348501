"""Mel spectrogram front-end of Wav2Lip / SadTalker, in numpy + scipy (no librosa).

Parameters follow the `hparams.py` shared by Wav2Lip (https://github.com/Rudrabha/Wav2Lip, `hparams.py`,
`audio.py`) and SadTalker (https://github.com/OpenTalker/SadTalker, `src/utils/hparams.py`,
`src/utils/audio.py`), as summarised in toonbooth's research notes (studios.md B8):

- 16 kHz mono, pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]``;
- centred STFT with a periodic Hann window, n_fft = win = 800, hop = 200 (80 frames per second),
  magnitude (not power);
- 80 mel bands between 55 and 7600 Hz on the Slaney mel scale with Slaney ("area 1") normalisation
  (the librosa defaults);
- ``S = 20 log10(max(1e-5, mel)) - 20`` (min level -100 dB, reference 20 dB), then the symmetric
  normalisation ``clip(8 (S + 100) / 100 - 4, -4, 4)``.

librosa changed the default STFT padding from ``reflect`` (Wav2Lip pinned 0.7.0) to ``constant``
(SadTalker pinned 0.9.2); `MelParams.pad_mode` selects either, ``constant`` by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from ..core.errors import InputError

__all__ = [
    "MelParams",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "stft_magnitude",
    "mel_spectrogram",
    "sadtalker_mel_windows",
    "wav2lip_mel_windows",
]


@dataclass(frozen=True)
class MelParams:
    """Mel front-end settings; the defaults are Wav2Lip's / SadTalker's."""

    sample_rate: int = 16000
    n_fft: int = 800
    hop_length: int = 200
    win_length: int = 800
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    """Pre-emphasis coefficient k of ``y[n] = x[n] - k x[n-1]``; 0 disables it."""
    ref_level_db: float = 20.0
    min_level_db: float = -100.0
    max_abs_value: float = 4.0
    pad_mode: str = "constant"
    """STFT edge padding: ``constant`` (librosa >= 0.9, SadTalker) or ``reflect`` (librosa 0.7, Wav2Lip)."""


# Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4).
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Frequency in Hz → Slaney mel (linear below 1 kHz, logarithmic above)."""
    f = np.asarray(hz, dtype=np.float64)
    lin = f / _F_SP
    with np.errstate(divide="ignore"):
        log = _MIN_LOG_MEL + np.log(np.maximum(f, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, lin)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Slaney mel → frequency in Hz (inverse of `hz_to_mel`)."""
    m = np.asarray(mel, dtype=np.float64)
    lin = m * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log, lin)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular Slaney-normalised mel filters, shape (n_mels, 1 + n_fft // 2).

    Band i rises linearly from edge i to edge i+1 and falls to edge i+2, the n_mels + 2 edges being equally
    spaced on the mel scale between `fmin` and `fmax`; each triangle is scaled by 2 / (edge_{i+2} - edge_i)
    so that its area over frequency (in Hz) is one.
    """
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise InputError("fmax", f"expected 0 <= fmin < fmax <= sample_rate/2, got {fmin}..{fmax}", fmax)
    bins_hz = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bins_hz[None, :]) / (upper - centre)
    tri = np.maximum(0.0, np.minimum(rising, falling))
    return (tri * (2.0 / (upper - lower))).astype(np.float64)


def _hann_periodic(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def stft_magnitude(
    wav: np.ndarray, n_fft: int, hop_length: int, win_length: int, pad_mode: str = "constant"
) -> np.ndarray:
    """|STFT| of a centred, Hann-windowed signal, shape (1 + n_fft // 2, 1 + len(wav) // hop_length)."""
    if pad_mode not in ("constant", "reflect"):
        raise InputError("pad_mode", f"expected 'constant' or 'reflect', got {pad_mode!r}", pad_mode)
    x = np.asarray(wav, dtype=np.float64)
    pad = n_fft // 2
    if pad_mode == "reflect" and len(x) <= pad:
        pad_mode = "constant"  # too short to reflect
    x = np.pad(x, pad, mode=pad_mode)
    window = np.zeros(n_fft)
    left = (n_fft - win_length) // 2
    window[left : left + win_length] = _hann_periodic(win_length)
    n_frames = 1 + (len(x) - n_fft) // hop_length
    idx = np.arange(n_fft)[None, :] + hop_length * np.arange(n_frames)[:, None]
    frames = x[idx] * window[None, :]
    return np.abs(np.fft.rfft(frames, axis=1)).T


def mel_spectrogram(wav: np.ndarray, params: MelParams | None = None) -> np.ndarray:
    """Normalised log-mel spectrogram (n_mels, frames) in [-max_abs, max_abs], float32.

    `wav` is float mono audio at `params.sample_rate` (resampling is the caller's job). Silence maps to
    exactly -max_abs_value. Frames: 1 + len(wav) // hop_length (80 per second with the defaults).
    """
    p = params or MelParams()
    x = np.asarray(wav)
    if x.ndim != 1:
        raise InputError("audio", f"expected mono audio (1-D samples), got shape {x.shape}", x.shape)
    if x.size == 0:
        raise InputError("audio", "expected at least one sample, got an empty signal", 0)
    x = x.astype(np.float64)
    if p.preemphasis:
        x = lfilter([1.0, -p.preemphasis], [1.0], x)
    mag = stft_magnitude(x, p.n_fft, p.hop_length, p.win_length, p.pad_mode)
    mel = mel_filterbank(p.sample_rate, p.n_fft, p.n_mels, p.fmin, p.fmax) @ mag
    floor = 10.0 ** (p.min_level_db / 20.0)
    db = 20.0 * np.log10(np.maximum(floor, mel)) - p.ref_level_db
    m = p.max_abs_value
    norm = (2.0 * m) * (db - p.min_level_db) / (-p.min_level_db) - m
    return np.clip(norm, -m, m).astype(np.float32)


def sadtalker_mel_windows(mel: np.ndarray, n_frames: int, fps: float = 25.0, width: int = 16) -> np.ndarray:
    """SadTalker's per-video-frame mel windows, shape (n_frames, n_mels, width).

    Frame i takes mel columns ``int(80 (i - 2) / fps) + j`` for j < width, clamped to the valid range
    (80 = mel frames per second at hop 200 / 16 kHz).
    """
    n_mels, total = mel.shape
    out = np.empty((n_frames, n_mels, width), dtype=mel.dtype)
    for i in range(n_frames):
        start = int(80.0 * (i - 2) / fps)
        cols = np.clip(np.arange(start, start + width), 0, total - 1)
        out[i] = mel[:, cols]
    return out


def wav2lip_mel_windows(mel: np.ndarray, fps: float = 25.0, width: int = 16) -> list[np.ndarray]:
    """Wav2Lip's mel chunks: chunk i starts at column ``int(i 80 / fps)``; the last one is right-aligned."""
    n_mels, total = mel.shape
    if total < width:
        raise InputError("audio", f"expected at least {width} mel frames, got {total}", total)
    chunks: list[np.ndarray] = []
    i = 0
    while True:
        start = int(i * 80.0 / fps)
        if start + width > total:
            chunks.append(mel[:, total - width :])
            break
        chunks.append(mel[:, start : start + width])
        i += 1
    return chunks
