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
_TEXTURE_LO, _TEXTURE_HI = 0.05, 0.15
"""Edge density (share of edge pixels around a pixel) where an area starts / fully counts as texture."""
_TEXTURE_SHADE = 0.25
_TEXTURE_STROKE = 200
"""Smallest line stroke (pixels at 512 px) kept inside a textured area."""
MIN_AVATAR_SIDE = 512


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


def _texture_map(gray: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """(Canny edges, texture weight in [0, 1]): where edges are dense (hair, fabric, foliage) the texture
    weight goes to 1, so those areas are smoothed harder, shaded from the photo instead of posterized, and
    keep only long line strokes (no scratchy hair lines)."""
    edges = cv2.Canny(gray, 40, 100)
    density = cv2.GaussianBlur((edges > 0).astype(np.float32), (0, 0), 6 * f)
    return edges, np.clip((density - _TEXTURE_LO) / (_TEXTURE_HI - _TEXTURE_LO), 0.0, 1.0)


def _toon_array(
    rgb: np.ndarray, out_wh: tuple[int, int], colors: int, line_strength: float, smooth: int, shade: float,
    foreground: np.ndarray | None = None, detail: tuple[float, float, float, float] | None = None,
) -> Image.Image:  # fmt: skip
    """The filter on an HxWx3 uint8 array; returns an RGB image of size `out_wh`. `foreground` (HxW alpha in
    [0, 1], optional): outside it the background is calmed (blurred flat colour, no lines). `detail` (a box
    (x0, y0, x1, y1) as fractions of the image, e.g. the face): inside it every line and shade is kept (eyes,
    brows and mouth are dense in edges too, but they are the likeness, not texture)."""
    h, w = rgb.shape[:2]

    # 1. Working resolution; filter sizes follow it (tuned at 512 px)
    scale = min(MAX_WORK_ENLARGE, WORK_SIDE / max(h, w), max(1.0, max(out_wh) / max(h, w)))
    scale = max(scale, min(MAX_WORK_ENLARGE, max(out_wh) / max(h, w)))
    ww, wh = max(8, round(w * scale)), max(8, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    work = cv2.resize(rgb, (ww, wh), interpolation=interp) if (ww, wh) != (w, h) else rgb.copy()
    f = max(0.25, max(ww, wh) / 512.0)
    fg = None
    if foreground is not None:
        fg = cv2.resize(foreground.astype(np.float32), (ww, wh), interpolation=cv2.INTER_LINEAR)

    # 2. Edge-preserving smoothing; the colour layer gets a few stronger passes on top, textured areas more
    smoothed = work
    for _ in range(smooth):
        smoothed = cv2.bilateralFilter(smoothed, _odd(9 * f), 40, 6 * f)
    gray = cv2.GaussianBlur(cv2.cvtColor(smoothed, cv2.COLOR_RGB2GRAY), (0, 0), 1.0 * f)
    edges, texture = _texture_map(gray, f)
    if detail is not None:
        x0, y0, x1, y1 = (round(detail[0] * ww), round(detail[1] * wh), round(detail[2] * ww), round(detail[3] * wh))
        texture[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = 0.0
    flat_src = smoothed
    for _ in range(smooth // 2 + 1 if smooth else 0):
        flat_src = cv2.bilateralFilter(flat_src, _odd(9 * f), 60, 10 * f)
    if smooth:  # a much stronger smoothing at half size, used where the texture is dense
        half = cv2.resize(flat_src, (max(8, ww // 2), max(8, wh // 2)), interpolation=cv2.INTER_AREA)
        for _ in range(2):
            half = cv2.bilateralFilter(half, _odd(9 * f), 80, 10 * f)
        strong = cv2.resize(half, (ww, wh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        tx = texture[..., None]
        flat_src = (flat_src.astype(np.float32) * (1.0 - tx) + strong * tx).astype(np.uint8)
    if fg is not None:  # a calm background: one soft blur of colour behind the person
        back = cv2.GaussianBlur(flat_src, (0, 0), 12 * f).astype(np.float32)
        a = fg[..., None]
        flat_src = (flat_src.astype(np.float32) * a + back * (1.0 - a)).astype(np.uint8)

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

    # 5. Soft shading: lightness (and a little chroma) from the blurred photo, the rest from the palette;
    #    textured areas take more of the photo's shading (hair as a shaded mass, not palette blotches)
    if shade > 0.0:
        soft = cv2.GaussianBlur(lab, (0, 0), 2.5 * f)
        local = np.minimum(1.0, shade + _TEXTURE_SHADE * texture)
        flat[..., 0] = (1.0 - local) * flat[..., 0] + local * soft[..., 0]
        mix = (_CHROMA_KEEP * local)[..., None]
        flat[..., 1:] = (1.0 - mix) * flat[..., 1:] + mix * soft[..., 1:]
    colour = cv2.cvtColor(np.clip(flat, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32)

    # 6. Line art: Canny on the smoothed gray image; specks removed, only long strokes in textured areas,
    #    none in a calmed background; thickened and anti-aliased
    if line_strength > 0.0:
        _, comp, stats, _ = cv2.connectedComponentsWithStats(edges, connectivity=8)
        area = stats[:, cv2.CC_STAT_AREA]
        keep_small = area >= max(4, round(30 * f * f))
        keep_long = area >= max(8, round(_TEXTURE_STROKE * f * f))
        keep = np.where(texture > 0.5, keep_long[comp], keep_small[comp]) & (comp > 0)
        if fg is not None:
            keep &= fg > 0.5
        edges = keep.astype(np.uint8) * 255
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
    keep_face: bool = True,
) -> Image.Image:
    """Cartoon version of `img`, `upscale` times its size. Deterministic for the same input.

    `colors`: palette size; `line_strength`: 0 (no lines) .. 2 (heavy); `smooth`: bilateral passes;
    `shade`: 0 gives flat palette colours, higher keeps more of the photo's soft shading; `keep_face`: the
    largest face's lines and shading are kept in full (eyes, nose, mouth), texture elsewhere is calmed.
    """
    _check_toon_args(upscale, colors, line_strength, smooth, shade)
    w, h = img.size
    if w < 1 or h < 1:
        raise InputError("image", f"is empty ({w}x{h})", img.size)
    rgb = to_rgb_array(img)
    out_wh = (max(1, round(w * upscale)), max(1, round(h * upscale)))
    detail = None
    if keep_face:
        face = largest_face(img)
        if face is not None:
            detail = (face.x0 / w, face.y0 / h, face.x1 / w, face.y1 / h)
    return _toon_array(rgb, out_wh, colors, line_strength, smooth, shade, None, detail)


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

    # 2. Find the face and crop head and shoulders; the person's mask (GrabCut from the face) for a calm
    #    background
    warnings: list[str] = []
    face = largest_face(img)
    fg = None
    if face is not None:
        box = head_and_shoulders_box(face, img.size, aspect=1.0).as_tuple()
        crop = img.crop(box)
        fg = _person_alpha(img, box, face)
    else:
        warnings.append(NO_FACE_WARNING)
        crop = img

    # 3. Cartoon filter, straight to the output size (at least MIN_AVATAR_SIDE on the long side: a crop of a
    #    small photo is worked on enlarged, so lines and shading are drawn at the size people see)
    w, h = crop.size
    if out_size is None:
        s = max(upscale, MIN_AVATAR_SIDE / max(w, h))
    else:
        s = out_size / max(w, h)
    out_wh = (max(1, round(w * s)), max(1, round(h * s)))
    rgb = to_rgb_array(crop)
    if max(out_wh) > max(w, h):  # enlarge first (Lanczos), so the filters run at the output's detail
        rgb = np.asarray(crop.convert("RGB").resize(out_wh, Image.Resampling.LANCZOS))
    detail = None
    if face is not None:  # the face box inside the crop, as fractions (its lines are the likeness)
        cx0, cy0 = box[0], box[1]
        detail = ((face.x0 - cx0) / w, (face.y0 - cy0) / h, (face.x1 - cx0) / w, (face.y1 - cy0) / h)
    avatar = _toon_array(rgb, out_wh, DEFAULT_COLORS, DEFAULT_LINE_STRENGTH, DEFAULT_SMOOTH, DEFAULT_SHADE, fg, detail)
    return avatar, face, warnings


def _person_alpha(img: Image.Image, box: tuple[int, int, int, int], face: FaceBox) -> np.ndarray | None:
    """The person's soft mask inside `box` (GrabCut seeded by the face, feathered), or None when GrabCut finds
    nothing usable (then the background is toonified like the rest)."""
    from toonbooth.vision.segment import clean_mask, grabcut_segment

    try:
        result = grabcut_segment(np.asarray(img.convert("RGB")), None, iterations=3, work_side=192, face=face)
    except InputError:
        return None
    mask, alpha = clean_mask(result.mask, (), fill_holes=True, feather_px=8)
    x0, y0, x1, y1 = box
    part = alpha[y0:y1, x0:x1]
    if part.size == 0 or not (0.15 < float(mask[y0:y1, x0:x1].mean()) < 0.98):
        return None
    return part
