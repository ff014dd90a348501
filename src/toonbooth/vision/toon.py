"""Classic (no-weights) cartoon filter and the classic memoji-avatar backend.

The look is the classic "cartoonize" recipe, made deterministic and tuned toward a soft 3D-cartoon
(memoji-like) avatar:

1. Edge-preserving smoothing with iterated bilateral filters (C. Tomasi and R. Manduchi, "Bilateral
   Filtering for Gray and Color Images", ICCV 1998), at a fixed working resolution.
2. Colour grade in CIE Lab: chroma boost and a lift of the dark tones (bright, saturated cartoon).
3. Colour quantization with k-means (Lloyd) in Lab, chroma weighted double, on a fixed pixel subsample
   with farthest-point initialization (deterministic), then a majority (mode) filter on the label map
   that removes specks. With `shade > 0` the flat palette lightness is mixed with a blurred copy of the
   photo's lightness (and a little of its chroma): faces keep soft, rounded, memoji-like shading.
4. Line art: Canny (J. Canny, TPAMI 1986) on the smoothed grayscale image, tiny connected components
   dropped, slightly dilated and blurred (anti-aliased), drawn as a dark shade of the local colour.
5. Lanczos resize from the working resolution to the output size.

`classic_avatar` crops the head and shoulders around the largest Haar-detected face first.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from toonbooth.core.errors import InputError
from toonbooth.core.images import from_array, to_rgb_array
from toonbooth.vision.faces import FaceBox, head_and_shoulders_box, largest_face

WORK_SIDE = 512
"""Long side (pixels) at which the filters run; images are enlarged at most `MAX_WORK_ENLARGE` times."""
MAX_WORK_ENLARGE = 2.0
NO_FACE_WARNING = "no face found; the whole photo was used"
DEFAULT_COLORS = 12
DEFAULT_LINE_STRENGTH = 1.0
DEFAULT_SMOOTH = 3
DEFAULT_SHADE = 0.55

_KMEANS_SAMPLES = 4000
_KMEANS_ITERS = 12
_CHROMA_WEIGHT = 2.0
_CHROMA_BOOST = 1.3
_LIFT = 0.12
_CHROMA_KEEP = 0.45
"""Share of the photo's own (blurred) chroma kept at `shade=1`; tints highlights instead of greying them."""
_LINE_DARKNESS = 0.2
_SEED = 0


def _check_range(field: str, value: float, lo: float, hi: float, integer: bool = False) -> None:
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if isinstance(value, bool) or not ok_type:
        kind = "an integer" if integer else "a number"
        raise InputError(field, f"must be {kind} in [{lo}, {hi}], got {value!r}", value)
    if not (lo <= value <= hi):
        raise InputError(field, f"must be in [{lo}, {hi}], got {value!r}", value)


def _check_toon_args(upscale: float, colors: int, line_strength: float, smooth: int, shade: float) -> None:
    _check_range("upscale", upscale, 1.0, 4.0)
    _check_range("colors", colors, 2, 64, integer=True)
    _check_range("line_strength", line_strength, 0.0, 2.0)
    _check_range("smooth", smooth, 0, 8, integer=True)
    _check_range("shade", shade, 0.0, 1.0)


def _kmeans(samples: np.ndarray, k: int) -> np.ndarray:
    """Lloyd's k-means with farthest-point initialization: the same samples give the same centres."""
    centres = [samples[int(np.argmin(samples[:, 0]))]]
    dist = ((samples - centres[0]) ** 2).sum(axis=1)
    for _ in range(k - 1):
        centres.append(samples[int(np.argmax(dist))])
        dist = np.minimum(dist, ((samples - centres[-1]) ** 2).sum(axis=1))
    c = np.asarray(centres, dtype=np.float32)
    sq = (samples**2).sum(axis=1)[:, None]
    for _ in range(_KMEANS_ITERS):
        labels = (sq - 2.0 * samples @ c.T + (c**2).sum(axis=1)[None]).argmin(axis=1)
        counts = np.bincount(labels, minlength=k)
        sums = np.stack([np.bincount(labels, weights=samples[:, j], minlength=k) for j in range(3)], axis=1)
        c = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c).astype(np.float32)
    return c


def _mode_filter(labels: np.ndarray, k: int, ksize: int, iters: int) -> np.ndarray:
    """Majority vote of the labels in a `ksize` box around each pixel: removes specks, rounds regions."""
    for _ in range(iters):
        votes = np.stack([cv2.blur((labels == j).astype(np.float32), (ksize, ksize)) for j in range(k)])
        labels = votes.argmax(axis=0)
    return labels


def _odd(n: float) -> int:
    n = max(1, int(round(n)))
    return n if n % 2 else n + 1


def _toon_array(
    rgb: np.ndarray, out_wh: tuple[int, int], colors: int, line_strength: float, smooth: int, shade: float
) -> Image.Image:
    """The filter on an HxWx3 uint8 array; returns an RGB image of size `out_wh`."""
    h, w = rgb.shape[:2]

    # 1. Working resolution; filter sizes follow it (tuned at 512 px)
    scale = min(MAX_WORK_ENLARGE, WORK_SIDE / max(h, w))
    ww, wh = max(8, round(w * scale)), max(8, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    work = cv2.resize(rgb, (ww, wh), interpolation=interp) if (ww, wh) != (w, h) else rgb.copy()
    f = max(0.25, max(ww, wh) / 512.0)

    # 2. Edge-preserving smoothing; the colour layer gets a few stronger passes on top
    smoothed = work
    for _ in range(smooth):
        smoothed = cv2.bilateralFilter(smoothed, _odd(9 * f), 40, 6 * f)
    flat_src = smoothed
    for _ in range(smooth // 2 + 1 if smooth else 0):
        flat_src = cv2.bilateralFilter(flat_src, _odd(9 * f), 60, 10 * f)

    # 3. Colour grade in Lab (OpenCV 8-bit Lab: L in 0..255, a/b offset by 128)
    lab = cv2.cvtColor(flat_src, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 1:] = 128.0 + (lab[..., 1:] - 128.0) * _CHROMA_BOOST
    lab[..., 0] += _LIFT * (255.0 - lab[..., 0])

    # 4. Palette by k-means on a fixed subsample; label map cleaned by a majority (mode) filter
    weights = np.array([1.0, _CHROMA_WEIGHT, _CHROMA_WEIGHT], dtype=np.float32)
    feats = lab.reshape(-1, 3) * weights
    rng = np.random.default_rng(_SEED)
    n_samples = min(_KMEANS_SAMPLES, len(feats))
    centres = _kmeans(feats[rng.choice(len(feats), n_samples, replace=False)], colors)
    labels = (-2.0 * feats @ centres.T + (centres**2).sum(axis=1)[None]).argmin(axis=1).reshape(wh, ww)
    labels = _mode_filter(labels, colors, _odd(11 * f), iters=2)
    flat = (centres / weights)[labels]

    # 5. Soft shading: lightness (and a little chroma) from the blurred photo, the rest from the palette
    if shade > 0.0:
        soft = cv2.GaussianBlur(lab, (0, 0), 2.5 * f)
        flat[..., 0] = (1.0 - shade) * flat[..., 0] + shade * soft[..., 0]
        mix = _CHROMA_KEEP * shade
        flat[..., 1:] = (1.0 - mix) * flat[..., 1:] + mix * soft[..., 1:]
    colour = cv2.cvtColor(np.clip(flat, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32)

    # 6. Line art: Canny on the smoothed gray image, specks removed, thickened and anti-aliased
    if line_strength > 0.0:
        gray = cv2.GaussianBlur(cv2.cvtColor(smoothed, cv2.COLOR_RGB2GRAY), (0, 0), 1.0 * f)
        edges = cv2.Canny(gray, 40, 100)
        _, comp, stats, _ = cv2.connectedComponentsWithStats(edges, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= max(4, round(30 * f * f))
        keep[0] = False
        edges = keep[comp].astype(np.uint8) * 255
        size = max(1, round(2 * f))
        edges = cv2.dilate(edges, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
        alpha = cv2.GaussianBlur(edges.astype(np.float32) / 255.0, (0, 0), 0.7 * f)
        alpha = np.clip(alpha * 1.3 * line_strength, 0.0, 1.0)[..., None]
        colour = colour * (1.0 - alpha) + colour * _LINE_DARKNESS * alpha

    # 7. Output size
    out = from_array(np.clip(colour + 0.5, 0, 255).astype(np.uint8))
    if out.size != out_wh:
        out = out.resize(out_wh, Image.Resampling.LANCZOS)
    return out


def toonify(
    img: Image.Image,
    *,
    upscale: float = 1.5,
    colors: int = DEFAULT_COLORS,
    line_strength: float = DEFAULT_LINE_STRENGTH,
    smooth: int = DEFAULT_SMOOTH,
    shade: float = DEFAULT_SHADE,
) -> Image.Image:
    """Cartoon version of `img`, `upscale` times its size. Deterministic for the same input.

    `colors`: palette size; `line_strength`: 0 (no lines) .. 2 (heavy); `smooth`: bilateral passes;
    `shade`: 0 gives flat palette colours, higher keeps more of the photo's soft shading.
    """
    _check_toon_args(upscale, colors, line_strength, smooth, shade)
    w, h = img.size
    if w < 1 or h < 1:
        raise InputError("image", f"is empty ({w}x{h})", img.size)
    rgb = to_rgb_array(img)
    out_wh = (max(1, round(w * upscale)), max(1, round(h * upscale)))
    return _toon_array(rgb, out_wh, colors, line_strength, smooth, shade)


def classic_avatar(
    img: Image.Image, *, upscale: float = 1.5, out_size: int | None = None
) -> tuple[Image.Image, FaceBox | None, list[str]]:
    """Cartoon avatar of the person in `img` without any model weights.

    Returns `(avatar, face, warnings)`: the largest face's square head-and-shoulders crop, toonified and
    `upscale` times the crop's size (or `out_size` pixels on the long side when given). When no face is
    found the whole photo is used and `warnings` says so.
    """
    # 1. Check inputs
    _check_range("upscale", upscale, 1.0, 4.0)
    if out_size is not None:
        _check_range("out_size", out_size, 64, 4096, integer=True)

    # 2. Find the face and crop head and shoulders
    warnings: list[str] = []
    face = largest_face(img)
    if face is not None:
        crop = img.crop(head_and_shoulders_box(face, img.size, aspect=1.0).as_tuple())
    else:
        warnings.append(NO_FACE_WARNING)
        crop = img

    # 3. Cartoon filter, straight to the output size
    w, h = crop.size
    if out_size is None:
        out_wh = (max(1, round(w * upscale)), max(1, round(h * upscale)))
    else:
        s = out_size / max(w, h)
        out_wh = (max(1, round(w * s)), max(1, round(h * s)))
    rgb = to_rgb_array(crop)
    avatar = _toon_array(rgb, out_wh, DEFAULT_COLORS, DEFAULT_LINE_STRENGTH, DEFAULT_SMOOTH, DEFAULT_SHADE)
    return avatar, face, warnings
