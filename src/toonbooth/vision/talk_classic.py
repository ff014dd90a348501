"""Classic talking animation (no weights, CPU): a still face animated by the voice's loudness and spectrum.

The recipe is the landmark-driven cartoon lip-sync of puppet animation, as used by MakeItTalk's cartoon
path (Zhou et al., "MakeItTalk: Speaker-Aware Talking-Head Animation", SIGGRAPH Asia 2020,
https://github.com/yzhou359/MakeItTalk, which warps cartoon faces along landmarks with a Delaunay warp)
but driven directly by two audio features instead of a learned landmark predictor:

- per video frame (25 fps), the RMS loudness of the frame's samples in dBFS -> mouth opening, gated below a
  silence threshold (silent frames keep the mouth exactly closed) and scaled to the utterance's loud level;
- the spectral centroid of the frame (Hann window, 80 Hz - 5 kHz) -> mouth width: a low centroid (back,
  rounded vowels "o", "u") narrows the mouth, a high one (front vowels "ee", "i") widens it.

Faces are warped along the known 68-point landmarks (dlib / iBUG 300-W order: jaw 0-16, brows 17-26, nose
27-35, eyes 36-47, outer lips 48-59, inner lips 60-67; (x, y) pixels) with thin-plate-spline backward
maps (scipy `RBFInterpolator`, Bookstein 1989) limited to a region of interest whose displacement fades to
zero at its border, sampled with OpenCV `remap`:

- mouth: lower lip and jaw drop, upper lip lifts a little, corners move in/out; the opened inner-lip polygon is
  painted dark;
- blinks: random starts (seeded RNG) 2-6 s apart, 150 ms each, the upper lids pulled onto the lower ones;
- head sway: a slow, small rotation and shift of the whole frame around the neck.

Everything is numpy / scipy / OpenCV and runs far faster than real time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.distance import cdist

from ..core.errors import InputError

__all__ = [
    "ClassicTalkSettings",
    "AudioTrack",
    "TalkPlan",
    "frame_count",
    "audio_track",
    "blink_times",
    "blink_curve",
    "plan_talk",
    "render_frame",
    "iter_talk_frames",
    "talk_frames",
]

MOUTH_OUTER = tuple(range(48, 60))
MOUTH_INNER = tuple(range(60, 68))
_JAW_DROP = (0.15, 0.35, 0.6, 0.85, 1.0, 0.85, 0.6, 0.35, 0.15)  # jaw points 4..12


@dataclass(frozen=True)
class ClassicTalkSettings:
    """User-tunable look of the classic animation."""

    fps: int = 25
    mouth_open: float = 0.45
    """Largest drop of the lower lip, as a fraction of the mouth width."""
    mouth_shape: float = 0.12
    """Largest corner shift for "ee" (out) / "o" (in), as a fraction of the mouth width."""
    silence_db: float = -45.0
    """Frames quieter than this (RMS, dBFS) keep the mouth closed."""
    range_db: float = 30.0
    """Loudness range (below the utterance's loud level) mapped onto the opening."""
    blink: bool = True
    blink_interval: tuple[float, float] = (2.0, 6.0)
    blink_duration: float = 0.15
    sway_degrees: float = 1.5
    """Amplitude of the head roll sway (0 = still)."""
    sway_shift: float = 0.01
    """Amplitude of the head shift, as a fraction of the face height (0 = still)."""
    seed: int = 0
    mouth_color: tuple[int, int, int] = (62, 20, 28)


@dataclass(frozen=True)
class AudioTrack:
    """Per-video-frame audio features."""

    loudness_db: np.ndarray
    """RMS level of the frame's samples, dBFS (-inf for digital silence)."""
    openness: np.ndarray
    """Mouth opening in [0, 1]; exactly 0 on silent frames."""
    centroid_hz: np.ndarray
    """Spectral centroid (80 Hz - 5 kHz), 0 on silent frames."""
    width: np.ndarray
    """Mouth shape in [-1, 1]: -1 rounded ("o"), +1 spread ("ee"); 0 on silent frames."""


@dataclass(frozen=True)
class TalkPlan:
    """Everything that varies per frame, computed up front."""

    fps: int
    openness: np.ndarray
    width: np.ndarray
    blink: np.ndarray
    """Eye closure in [0, 1]."""
    angle_deg: np.ndarray
    shift: np.ndarray
    """(T, 2) head shift in pixels."""
    blink_starts: tuple[float, ...]

    @property
    def n_frames(self) -> int:
        return int(self.openness.shape[0])


# ---------------------------------------------------------------------------------------------------
# Audio features
# ---------------------------------------------------------------------------------------------------


def frame_count(n_samples: int, sample_rate: int, fps: int = 25) -> int:
    """ceil(duration * fps) in exact integer arithmetic."""
    return -(-int(n_samples) * int(fps) // int(sample_rate))


def _check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 1 or x.size == 0:
        raise InputError("audio", f"expected non-empty mono samples (1-D), got shape {x.shape}", x.shape)
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError("audio", f"expected float samples in [-1, 1], got {x.dtype}", str(x.dtype))
    if not np.all(np.isfinite(x)):
        raise InputError("audio", "samples must be finite numbers (found NaN or inf)", None)
    if int(sample_rate) <= 0:
        raise InputError("sample_rate", f"expected a positive sample rate, got {sample_rate}", sample_rate)
    return x.astype(np.float32, copy=False)


def audio_track(
    audio: np.ndarray, sample_rate: int, settings: ClassicTalkSettings | None = None
) -> AudioTrack:
    """Loudness, opening, spectral centroid and mouth shape for each of ceil(duration * fps) frames.

    Frame i covers samples [i sr / fps, (i + 1) sr / fps). The opening maps the level linearly from
    `loud - range_db` (closed) to the utterance's loud level (95th percentile of the voiced frames), and is 0
    below `silence_db`."""
    s = settings or ClassicTalkSettings()
    x = _check_audio(audio, sample_rate)
    sr, fps = int(sample_rate), int(s.fps)
    n = frame_count(len(x), sr, fps)
    bounds = [(i * sr // fps, min(len(x), (i + 1) * sr // fps)) for i in range(n)]
    db = np.full(n, -np.inf)
    centroid = np.zeros(n)
    nfft = 1 << max(9, math.ceil(math.log2(max(2, sr // fps))))
    freqs = np.fft.rfftfreq(nfft, 1.0 / sr)
    band = (freqs >= 80.0) & (freqs <= 5000.0)
    for i, (a, b) in enumerate(bounds):
        seg = x[a:b].astype(np.float64)
        if seg.size == 0:
            continue
        rms = math.sqrt(float(np.mean(seg * seg)))
        if rms > 0:
            db[i] = 20.0 * math.log10(rms)
        if db[i] >= s.silence_db:
            spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size), nfft))[band]
            total = float(spec.sum())
            centroid[i] = float((spec * freqs[band]).sum() / total) if total > 0 else 0.0
    voiced = db >= s.silence_db
    openness = np.zeros(n)
    width = np.zeros(n)
    if voiced.any():
        loud = max(float(np.percentile(db[voiced], 95)), s.silence_db + 6.0)
        floor = max(s.silence_db, loud - s.range_db)
        raw = np.clip((db - floor) / max(1e-6, loud - floor), 0.0, 1.0)
        raw[~voiced] = 0.0
        # light smoothing between voiced neighbours only: silence stays exactly closed
        padded = np.pad(raw, 1)
        smooth = 0.6 * raw + 0.2 * (padded[:-2] + padded[2:])
        openness = np.where(voiced, np.clip(smooth, 0.0, 1.0), 0.0)
        with np.errstate(divide="ignore"):
            w = np.clip(np.log2(np.maximum(centroid, 1.0) / 1200.0) / 1.5, -1.0, 1.0)
        width = np.where(voiced, w, 0.0)
    return AudioTrack(db, openness, centroid, width)


# ---------------------------------------------------------------------------------------------------
# Blinks and sway
# ---------------------------------------------------------------------------------------------------


def blink_times(
    duration: float, seed: int, interval: tuple[float, float] = (2.0, 6.0), blink_duration: float = 0.15
) -> list[float]:
    """Blink start times (s) within `duration`: the first after U(lo/2, hi/2), then every U(lo, hi) seconds,
    from `numpy.random.default_rng(seed)`."""
    lo, hi = interval
    if not 0 < lo <= hi:
        raise InputError("blink_interval", f"expected 0 < min <= max, got {interval}", interval)
    rng = np.random.default_rng(seed)
    t = float(rng.uniform(lo / 2, hi / 2))
    out = []
    while t + blink_duration <= duration:
        out.append(t)
        t += float(rng.uniform(lo, hi))
    return out


def blink_curve(
    n_frames: int, fps: int, starts: list[float] | tuple[float, ...], blink_duration: float = 0.15
):
    """Eye closure per frame: sin(pi u) over each blink, u = (t - start) / duration in [0, 1]."""
    t = np.arange(n_frames) / fps
    out = np.zeros(n_frames)
    for t0 in starts:
        u = (t - t0) / blink_duration
        inside = (u > 0) & (u < 1)
        out[inside] = np.maximum(out[inside], np.sin(np.pi * u[inside]))
    return out


def _sway(n_frames: int, fps: int, s: ClassicTalkSettings, face_h: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(s.seed + 1)
    ph = rng.uniform(0, 2 * np.pi, 6)
    t = np.arange(n_frames) / fps
    angle = s.sway_degrees * (
        0.65 * np.sin(2 * np.pi * 0.21 * t + ph[0]) + 0.35 * np.sin(2 * np.pi * 0.47 * t + ph[1])
    )
    amp = s.sway_shift * face_h
    dx = amp * (0.6 * np.sin(2 * np.pi * 0.17 * t + ph[2]) + 0.4 * np.sin(2 * np.pi * 0.41 * t + ph[3]))
    dy = amp * (0.6 * np.sin(2 * np.pi * 0.13 * t + ph[4]) + 0.4 * np.sin(2 * np.pi * 0.33 * t + ph[5]))
    return angle, np.stack([dx, dy], axis=1)


def plan_talk(
    audio: np.ndarray,
    sample_rate: int,
    landmarks: np.ndarray,
    settings: ClassicTalkSettings | None = None,
) -> TalkPlan:
    """Per-frame opening, width, blink closure and sway for the whole utterance."""
    s = settings or ClassicTalkSettings()
    lmk = _check_landmarks(landmarks)
    track = audio_track(audio, sample_rate, s)
    n = track.openness.shape[0]
    duration = len(np.asarray(audio)) / float(sample_rate)
    starts = blink_times(duration, s.seed, s.blink_interval, s.blink_duration) if s.blink else []
    blink = blink_curve(n, s.fps, starts, s.blink_duration)
    face_h = float(np.ptp(lmk[:, 1]))
    angle, shift = _sway(n, s.fps, s, face_h)
    return TalkPlan(s.fps, track.openness, track.width, blink, angle, shift, tuple(starts))


# ---------------------------------------------------------------------------------------------------
# Warping
# ---------------------------------------------------------------------------------------------------


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise InputError(
            "image", f"expected an RGB(A) uint8 array (H, W, 3|4), got {img.dtype} {img.shape}", img.shape
        )
    return img


def _check_landmarks(landmarks: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    lmk = np.asarray(landmarks, dtype=np.float64)
    if lmk.shape != (68, 2) or not np.all(np.isfinite(lmk)):
        raise InputError("landmarks", f"expected 68 finite (x, y) points, got shape {lmk.shape}", lmk.shape)
    if shape is not None:
        h, w = shape[:2]
        if (
            lmk[:, 0].min() < -0.5 * w
            or lmk[:, 0].max() > 1.5 * w
            or lmk[:, 1].min() < -0.5 * h
            or lmk[:, 1].max() > 1.5 * h
        ):
            raise InputError("landmarks", f"points lie far outside the {w}x{h} image", lmk.shape)
    return lmk


def _roi(x0: float, y0: float, x1: float, y1: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    return (
        max(0, int(math.floor(x0))),
        max(0, int(math.floor(y0))),
        min(w, int(math.ceil(x1))),
        min(h, int(math.ceil(y1))),
    )


def _border_points(roi: tuple[int, int, int, int], per_side: int = 6) -> np.ndarray:
    x0, y0, x1, y1 = roi
    xs = np.linspace(x0, x1 - 1, per_side)
    ys = np.linspace(y0, y1 - 1, per_side)
    pts = [np.stack([xs, np.full_like(xs, y0)], 1), np.stack([xs, np.full_like(xs, y1 - 1)], 1)]
    pts += [np.stack([np.full_like(ys, x0), ys], 1), np.stack([np.full_like(ys, x1 - 1), ys], 1)]
    return np.unique(np.concatenate(pts), axis=0)


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """Thin-plate radial function of squared distances: r^2 log r^2 (proportional to r^2 log r)."""
    out = np.zeros_like(r2)
    np.log(r2, out=out, where=r2 > 0)
    return out * r2


def _tps(ctrl: np.ndarray, values: np.ndarray, query: np.ndarray, reg: float = 1e-6) -> np.ndarray:
    """Thin-plate spline through `values` at the points `ctrl`, evaluated at `query` (coordinates are
    normalised first; `reg` regularises near-duplicate sites)."""
    centre = ctrl.mean(axis=0)
    scale = max(1e-6, float(np.abs(ctrl - centre).max()))
    c = (ctrl - centre) / scale
    q = (query - centre) / scale
    n = len(c)
    a = np.zeros((n + 3, n + 3))
    a[:n, :n] = _tps_kernel(cdist(c, c, "sqeuclidean")) + reg * np.eye(n)
    a[:n, n] = a[n, :n] = 1.0
    a[:n, n + 1 :] = c
    a[n + 1 :, :n] = c.T
    rhs = np.zeros((n + 3, values.shape[1]))
    rhs[:n] = values
    coef = np.linalg.solve(a, rhs)
    return _tps_kernel(cdist(q, c, "sqeuclidean")) @ coef[:n] + coef[n] + q @ coef[n + 1 :]


def _warp_roi(frame: np.ndarray, roi: tuple[int, int, int, int], src: np.ndarray, dst: np.ndarray) -> None:
    """In place: move the points `src` to `dst` inside `roi` with a thin-plate-spline backward map whose
    displacement fades to zero at the ROI border (the frame outside the ROI is untouched). The spline is
    evaluated on a coarse grid (about 24 cells a side) and interpolated."""
    x0, y0, x1, y1 = roi
    rw, rh = x1 - x0, y1 - y0
    if rw < 4 or rh < 4:
        return
    step = max(2, int(max(rw, rh) / 24))
    anchors = _border_points(roi)
    ctrl = np.concatenate([dst, anchors])
    disp = np.concatenate([src - dst, np.zeros_like(anchors)])
    _, keep = np.unique(np.round(ctrl * 2.0), axis=0, return_index=True)  # distinct sites only
    keep = np.sort(keep)
    gx = np.arange(x0, x1 + step, step, dtype=np.float64)
    gy = np.arange(y0, y1 + step, step, dtype=np.float64)
    mx, my = np.meshgrid(gx, gy)
    coarse = _tps(ctrl[keep], disp[keep], np.stack([mx.ravel(), my.ravel()], 1)).reshape(len(gy), len(gx), 2)
    # fade to zero over the outer 15 % of the ROI
    fx = np.clip(np.minimum(gx - x0, x1 - 1 - gx) / max(2.0, 0.15 * rw), 0, 1)
    fy = np.clip(np.minimum(gy - y0, y1 - 1 - gy) / max(2.0, 0.15 * rh), 0, 1)
    coarse *= ((np.sin(0.5 * np.pi * fy)[:, None] ** 2) * (np.sin(0.5 * np.pi * fx)[None, :] ** 2))[..., None]
    full = cv2.resize(
        coarse.astype(np.float32), (len(gx) * step, len(gy) * step), interpolation=cv2.INTER_LINEAR
    )
    full = full[:rh, :rw]
    px, py = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    warped = cv2.remap(
        frame,
        px + full[..., 0],
        py + full[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    frame[y0:y1, x0:x1] = warped


def _mouth(frame: np.ndarray, lmk: np.ndarray, openness: float, width: float, s: ClassicTalkSettings) -> None:
    left, right = lmk[48], lmk[54]
    mw = float(np.linalg.norm(right - left))
    if mw < 2:
        return
    cx = 0.5 * (left[0] + right[0])
    drop = openness * s.mouth_open * mw
    spread = width * s.mouth_shape * mw * (0.4 + 0.6 * openness)
    lips = np.array(MOUTH_OUTER + MOUTH_INNER)
    p = lmk[lips]
    rel = np.clip((p[:, 0] - cx) / (0.5 * mw), -1.0, 1.0)
    profile = np.sqrt(1.0 - rel * rel)
    is_lower = np.isin(lips, (55, 56, 57, 58, 59, 65, 66, 67))
    is_upper = np.isin(lips, (49, 50, 51, 52, 53, 61, 62, 63))
    dy = np.where(is_lower, drop * profile, np.where(is_upper, -0.18 * drop * profile, 0.12 * drop))
    lip_dst = p + np.stack([spread * rel, dy], 1)
    jaw = np.arange(4, 13)
    jaw_dst = lmk[jaw] + np.stack([np.zeros(9), 0.85 * drop * np.array(_JAW_DROP)], 1)
    fixed = lmk[[2, 3, 13, 14, 30, 31, 32, 33, 34, 35]]
    src_a = np.concatenate([p, lmk[jaw], fixed])
    dst_a = np.concatenate([lip_dst, jaw_dst, fixed])
    nose_y = lmk[33, 1]
    chin_y = lmk[8, 1]
    pad_x = 0.35 * mw
    roi = _roi(
        min(lmk[3, 0], left[0] - pad_x),
        nose_y,
        max(lmk[13, 0], right[0] + pad_x),
        chin_y + drop + 0.25 * mw,
        frame.shape,
    )
    _warp_roi(frame, roi, src_a, dst_a)
    if openness <= 0:
        return
    inner = dst_a[len(MOUTH_OUTER) : len(MOUTH_OUTER) + len(MOUTH_INNER)]  # moved inner-lip contour
    # paint the opening inside the polygon's bounding box only
    h, w = frame.shape[:2]
    bx0, by0 = max(0, int(inner[:, 0].min()) - 2), max(0, int(inner[:, 1].min()) - 2)
    bx1, by1 = min(w, int(inner[:, 0].max()) + 3), min(h, int(inner[:, 1].max()) + 3)
    if bx1 - bx0 < 1 or by1 - by0 < 1:
        return
    mask = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
    cv2.fillPoly(
        mask, [np.round((inner - (bx0, by0)) * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4
    )
    mask = cv2.GaussianBlur(mask, (3, 3), 0)
    alpha = (mask.astype(np.float32) * (min(1.0, 3.0 * openness) / 255.0))[..., None]
    region = frame[by0:by1, bx0:bx1, :3].astype(np.float32)
    color = np.array(s.mouth_color, np.float32)
    frame[by0:by1, bx0:bx1, :3] = (region + (color - region) * alpha + 0.5).astype(np.uint8)


def _lid_curve(lmk: np.ndarray, idx: list[int], xs: np.ndarray) -> np.ndarray:
    pts = lmk[idx]
    order = np.argsort(pts[:, 0])
    return np.interp(xs, pts[order, 0], pts[order, 1])


def _eyes(frame: np.ndarray, lmk: np.ndarray, closure: float) -> None:
    """Upper lids slide down over the eyes: in each column, the skin between the brow and the lid is
    stretched down to the closing lid line, below it the eye stays (it is covered, not squashed)."""
    h, w = frame.shape[:2]
    for base, brow in ((36, range(17, 22)), (42, range(22, 27))):
        c0, c1 = lmk[base], lmk[base + 3]
        ew = float(abs(c1[0] - c0[0]))
        if ew < 2:
            continue
        x0 = max(0, int(math.floor(min(c0[0], c1[0]))))
        x1 = min(w, int(math.ceil(max(c0[0], c1[0]))) + 1)
        xs = np.arange(x0, x1, dtype=np.float64)
        upper = _lid_curve(lmk, [base, base + 1, base + 2, base + 3], xs)
        lower = _lid_curve(lmk, [base, base + 5, base + 4, base + 3], xs)
        lower = np.maximum(lower, upper)
        brow_low = float(lmk[list(brow), 1].max())
        top_val = min(brow_low, float(upper.min()) - 0.25 * ew)
        top = np.full_like(xs, top_val)
        new_upper = upper + closure * (lower - upper)
        y0 = max(0, int(math.floor(top_val)))
        y1 = min(h, int(math.ceil(float(lower.max()))) + 1)
        if y1 - y0 < 2:
            continue
        ys = np.arange(y0, y1, dtype=np.float64)[:, None]
        span_new = np.maximum(new_upper - top, 1e-6)[None, :]
        src_y = np.where(
            ys <= new_upper[None, :],
            top[None, :] + (ys - top[None, :]) * (upper - top)[None, :] / span_new,
            ys,
        )
        src_y = np.where(ys < top[None, :], ys, src_y)
        map_x = np.broadcast_to(xs[None, :], src_y.shape).astype(np.float32)
        warped = cv2.remap(
            frame, map_x, src_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        frame[y0:y1, x0:x1] = warped
        if closure > 0.5:  # lash line along the closing lid
            a = (closure - 0.5) / 0.5
            line = np.stack([xs, new_upper], 1)[:: max(1, len(xs) // 12)]
            line = np.concatenate([line, [[xs[-1], new_upper[-1]]]])
            lx0, ly0 = max(0, x0 - 2), max(0, y0 - 2)
            lx1, ly1 = min(w, x1 + 2), min(h, y1 + 2)
            mask = np.zeros((ly1 - ly0, lx1 - lx0), np.uint8)
            pts = np.round((line - (lx0, ly0)) * 16).astype(np.int32)
            cv2.polylines(mask, [pts], False, 255, max(1, round(ew / 16)), cv2.LINE_AA, 4)
            alpha = (mask.astype(np.float32) / 255.0 * a)[..., None]
            region = frame[ly0:ly1, lx0:lx1, :3].astype(np.float32)
            frame[ly0:ly1, lx0:lx1, :3] = (region * (1 - 0.65 * alpha)).astype(np.uint8)


def render_frame(
    image: np.ndarray,
    landmarks: np.ndarray,
    *,
    openness: float = 0.0,
    width: float = 0.0,
    blink: float = 0.0,
    angle_deg: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    settings: ClassicTalkSettings | None = None,
) -> np.ndarray:
    """One frame: mouth opened by `openness` in [0, 1] with shape `width` in [-1, 1], eyes closed by `blink`
    in [0, 1], the head rotated by `angle_deg` and shifted by `shift` pixels. All zero -> a copy of `image`."""
    s = settings or ClassicTalkSettings()
    img = _check_image(image)
    lmk = _check_landmarks(landmarks, img.shape)
    frame = img.copy()
    if openness > 0 or width != 0:
        _mouth(frame, lmk, float(np.clip(openness, 0, 1)), float(np.clip(width, -1, 1)), s)
    if blink > 0:
        _eyes(frame, lmk, float(np.clip(blink, 0, 1)))
    if angle_deg != 0 or shift[0] != 0 or shift[1] != 0:
        face_h = float(np.ptp(lmk[:, 1]))
        pivot = (float(lmk[8, 0]), float(lmk[8, 1] + 0.3 * face_h))
        m = cv2.getRotationMatrix2D(pivot, float(angle_deg), 1.0)
        m[:, 2] += shift
        frame = cv2.warpAffine(
            frame,
            m,
            (frame.shape[1], frame.shape[0]),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return frame


def iter_talk_frames(
    image: np.ndarray,
    landmarks: np.ndarray,
    audio: np.ndarray,
    sample_rate: int,
    settings: ClassicTalkSettings | None = None,
    plan: TalkPlan | None = None,
) -> Iterator[np.ndarray]:
    """Frames (uint8, same shape as `image`) of the still face speaking `audio`, ceil(duration * fps) of
    them, one at a time (stop iterating to cancel). `plan` reuses a `plan_talk` result."""
    s = settings or ClassicTalkSettings()
    img = _check_image(image)
    lmk = _check_landmarks(landmarks, img.shape)
    p = plan or plan_talk(audio, sample_rate, lmk, s)
    for i in range(p.n_frames):
        yield render_frame(
            img,
            lmk,
            openness=float(p.openness[i]),
            width=float(p.width[i]),
            blink=float(p.blink[i]),
            angle_deg=float(p.angle_deg[i]),
            shift=(float(p.shift[i, 0]), float(p.shift[i, 1])),
            settings=s,
        )


def talk_frames(
    image: np.ndarray,
    landmarks: np.ndarray,
    audio: np.ndarray,
    sample_rate: int,
    settings: ClassicTalkSettings | None = None,
) -> list[np.ndarray]:
    """All frames of `iter_talk_frames` in a list (short clips; stream long ones)."""
    return list(iter_talk_frames(image, landmarks, audio, sample_rate, settings))
