"""Classic (no weights) "webtoon background" filter: a photo of a place becomes flat colour regions with clean
ink lines, the look of a drawn webtoon background. No faces or people are needed or looked for.

1. Edge-preserving flattening: iterated bilateral filters (Tomasi & Manduchi, ICCV 1998) at a working
   resolution of at most `WORK_SIDE` px (cheap), brought back to the output size.
2. Palette: k-means in CIE Lab (chroma weighted double; `vision.toon`'s deterministic Lloyd with
   farthest-point start on a fixed subsample), a light lift of the dark tones and a small chroma boost (webtoon
   backgrounds are bright); every pixel takes its nearest palette colour, and a majority (mode) filter of the
   label map removes specks. The colour layer holds at most `colors` distinct colours.
3. Lines: Canny (Canny, TPAMI 1986) on the flattened lightness, short fragments dropped, thickened to
   `line_width` px (per megapixel: thicker on bigger pictures), drawn hard (no anti-aliasing) in one ink colour
   between black and the palette's lightest colour (`line_tone`). So the result holds at most `colors` + 1
   colours, which is what makes it look drawn and lets an artist recolour regions with a bucket fill.

Deterministic for the same input; about 0.3 s for a 1 MP photo on one CPU core (`bench/background.py`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from ..core.errors import InputError
from ..core.images import from_array, to_rgb_array
from .toon import _kmeans, _odd

WORK_SIDE = 512
"""Long side (px) at which the smoothing runs."""
MAX_SIDE = 4096
_KMEANS_SAMPLES = 6000
_CHROMA_WEIGHT = 2.0
_CHROMA_BOOST = 1.15
_LIFT = 0.08
_INK = np.array([22.0, 20.0, 26.0], dtype=np.float32)
_SEED = 0
_LUT_SHIFT = 3
_LUT_LEVELS = 256 >> _LUT_SHIFT


def _check(name: str, value: float, lo: float, hi: float, integer: bool = False) -> None:
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if isinstance(value, bool) or not ok or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise InputError(f"classic.{name}", f"must be {kind} in [{lo:g}, {hi:g}], got {value!r}", value)


def _nearest_lut(centres: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(32, 32, 32) uint8: the nearest centre (weighted Lab) of each RGB bin's middle colour."""
    levels = (np.arange(_LUT_LEVELS, dtype=np.uint8) << _LUT_SHIFT) + (1 << (_LUT_SHIFT - 1))
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    feats = cv2.cvtColor(cube, cv2.COLOR_RGB2LAB).astype(np.float32).reshape(-1, 3) * weights
    dist = -2.0 * feats @ centres.T + (centres**2).sum(axis=1)[None]
    return dist.argmin(axis=1).astype(np.uint8).reshape(_LUT_LEVELS, _LUT_LEVELS, _LUT_LEVELS)


def _majority(labels: np.ndarray, k: int, ksize: int) -> np.ndarray:
    """Each pixel takes the label most frequent in the `ksize` box around it (ties: the lower label)."""
    best = labels.copy()
    best_count = np.zeros(labels.shape, np.int32)
    for j in range(k):
        count = cv2.boxFilter((labels == j).astype(np.uint8), cv2.CV_32S, (ksize, ksize), normalize=False)
        better = count > best_count
        best[better] = j
        best_count = np.maximum(best_count, count)
    return best


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The photo's own size, its long side capped at `max_side` (aspect kept)."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def webtoon_background(
    img: Image.Image,
    *,
    colors: int = 12,
    line_width: int = 2,
    line_detail: float = 0.5,
    smooth: int = 3,
    line_tone: float = 0.1,
    max_side: int | None = None,
) -> Image.Image:
    """The webtoon-background version of `img` at its own size (long side capped at `max_side`).

    `colors`: palette size; `line_width`: ink line width in px for a 1 MP picture (0 = no lines); `line_detail`:
    0 only the strongest edges .. 1 many; `smooth`: flattening passes; `line_tone`: 0 black ink .. 1 the lightest
    palette colour. Errors name the field (`classic.colors`, ...)."""
    # 1. Check inputs
    _check("colors", colors, 2, 48, integer=True)
    _check("line_width", line_width, 0, 8, integer=True)
    _check("line_detail", line_detail, 0.0, 1.0)
    _check("smooth", smooth, 0, 8, integer=True)
    _check("line_tone", line_tone, 0.0, 1.0)
    if max_side is not None:
        _check("max_side", max_side, 8, MAX_SIDE, integer=True)
    w, h = img.size
    if w < 8 or h < 8:
        raise InputError("image", f"must be at least 8x8 pixels, got {w}x{h}", [w, h])
    rgb = to_rgb_array(img)
    ow, oh = output_size(w, h, max_side)
    if (ow, oh) != (w, h):
        rgb = cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_AREA)

    # 2. Edge-preserving flattening at the working resolution, back at the output size
    scale = min(1.0, WORK_SIDE / max(ow, oh))
    ww, wh = max(8, round(ow * scale)), max(8, round(oh * scale))
    work = cv2.resize(rgb, (ww, wh), interpolation=cv2.INTER_AREA) if scale < 1.0 else rgb.copy()
    f = max(0.25, max(ww, wh) / 512.0)
    for i in range(smooth):
        work = cv2.bilateralFilter(work, _odd(7 * f), 30 + 10 * i, 5 * f)
    soft = cv2.resize(work, (ow, oh), interpolation=cv2.INTER_LINEAR) if scale < 1.0 else work

    # 3. Palette: k-means in Lab on a fixed subsample of the flattened picture; every pixel takes its nearest
    #    colour (through a 32^3 RGB lookup table), specks voted away; the palette is lifted and saturated
    weights = np.array([1.0, _CHROMA_WEIGHT, _CHROMA_WEIGHT], dtype=np.float32)
    feats = cv2.cvtColor(work, cv2.COLOR_RGB2LAB).astype(np.float32).reshape(-1, 3) * weights
    rng = np.random.default_rng(_SEED)
    sample = feats[rng.choice(len(feats), min(_KMEANS_SAMPLES, len(feats)), replace=False)]
    k = max(1, min(colors, len(np.unique(sample, axis=0))))
    centres = _kmeans(sample, k)
    labels = _nearest_lut(centres, weights)[soft[..., 0] >> _LUT_SHIFT, soft[..., 1] >> _LUT_SHIFT,
                                            soft[..., 2] >> _LUT_SHIFT]  # fmt: skip
    out_f = math.sqrt(ow * oh / 1e6)  # 1 at one megapixel
    labels = _majority(labels, k, _odd(max(3.0, 5 * out_f)))
    lab = centres / weights
    lab[:, 0] += _LIFT * (255.0 - lab[:, 0])
    lab[:, 1:] = 128.0 + (lab[:, 1:] - 128.0) * _CHROMA_BOOST
    palette_lab = np.clip(np.rint(lab), 0, 255).astype(np.uint8)[None]
    palette = cv2.cvtColor(palette_lab, cv2.COLOR_LAB2RGB)[0]
    out = palette[labels]

    # 4. Ink lines from the flattened picture's lightness, one colour, hard edges
    if line_width > 0:
        gray = cv2.GaussianBlur(cv2.cvtColor(soft, cv2.COLOR_RGB2GRAY), (0, 0), max(0.8, 1.2 * out_f))
        low = 110.0 - 85.0 * line_detail
        edges = cv2.Canny(gray, low, 2.5 * low)
        _, comp, stats, _ = cv2.connectedComponentsWithStats(edges, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= max(6, round(40 * out_f))
        keep[0] = False
        edges = keep[comp].astype(np.uint8)
        width = max(1, round(line_width * max(out_f, 0.25)))
        if width > 1:
            edges = cv2.dilate(edges, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width)))
        paper = palette[int(np.argmax(palette_lab[0, :, 0]))].astype(np.float32)
        ink = np.clip(np.rint(_INK * (1.0 - line_tone) + paper * line_tone), 0, 255).astype(np.uint8)
        out[edges.astype(bool)] = ink
    return from_array(np.ascontiguousarray(out))


__all__ = ["WORK_SIDE", "output_size", "webtoon_background"]
