"""Classic makeup transfer: per-region Lab colour statistics from a reference face, with per-region intensity.

Method: E. Reinhard, M. Ashikhmin, B. Gooch and P. Shirley, "Color Transfer between Images" (IEEE CG&A 2001),
mean / standard-deviation matching in a decorrelated colour space, applied per face region (lips, eye shadow,
brows, skin, cheeks) on the masked pixels only, in CIE L*a*b* (OpenCV's float conversion: L in [0, 100]):

    out = (x - mean_src_region) * std_ref_region / std_src_region + mean_ref_region

per channel, where "src" is the face being made up and "ref" the reference face. Note the direction: the
ratio is the *reference's* spread over the *source's*, and the source's mean is removed; the widely copied
`color_transfer` package (jrosebr1) ships `std_tar / std_src` with the two images' roles swapped relative to
the paper (its issues #1 and #11). The result is then blended with the source by the region's feathered mask
times a user intensity in [0, 1.5] (values above 1 exaggerate). Regions are composited in `APPLY_ORDER`; each
region's transfer starts from the source pixels, so at intensity 1 a region's pixels carry exactly the
reference region's Lab mean and standard deviation (up to 8-bit rounding).

Pixels outside every feathered mask, and protected pixels (hair, background, clothes: see `face_regions`),
are returned byte-identical. Skin gets a small default intensity so the face keeps its own complexion.

Also here: `reference_quality` (warnings about a reference photo before it is used: no face, small face,
blur by the variance of the Laplacian on a scale-normalised face crop, exposure, uneven light, turned head)
and `align_reference` (the reference warped to the source's pose with a least-squares similarity transform
on the landmarks, S. Umeyama, IEEE TPAMI 1991).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from toonbooth.core.errors import InputError
from toonbooth.core.images import to_rgb_array
from toonbooth.vision.face_regions import FaceRegions, regions_from_landmarks
from toonbooth.vision.faces import FaceBox
from toonbooth.vision.landmarks import FaceLandmarks

MAKEUP_REGIONS: tuple[str, ...] = ("skin", "blush", "eyes", "brows", "lips")
"""The user-facing regions (sliders), which is also the compositing order (`APPLY_ORDER`)."""
APPLY_ORDER = MAKEUP_REGIONS
REGION_MASK: dict[str, str] = {
    "skin": "skin",
    "blush": "blush",
    "eyes": "eye_shadow",
    "brows": "brows",
    "lips": "lips",
}
"""Makeup region -> the `FaceRegions` mask it uses (the `eyes` slider is the eye-shadow ring; eyeballs are never
recoloured)."""
DEFAULT_INTENSITY: dict[str, float] = {"skin": 0.15, "blush": 0.8, "eyes": 1.0, "brows": 0.7, "lips": 1.0}
MAX_INTENSITY = 1.5
MIN_REGION_PIXELS = 16
"""A region with fewer pixels (in the source or the reference) is skipped."""
STD_RATIO_LIMITS = (0.125, 8.0)
"""The std ratio is clipped to this range, so a flat region cannot blow up (never reached on normal faces)."""
_EPS = 1e-6


# ---------------------------------------------------------------------------------------------------
# Lab statistics
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabStats:
    """Per-channel mean and (population) standard deviation of L*, a*, b* over a region."""

    mean: np.ndarray
    std: np.ndarray
    count: int

    def as_dict(self) -> dict[str, object]:
        return {
            "mean": np.round(self.mean, 3).tolist(),
            "std": np.round(self.std, 3).tolist(),
            "count": self.count,
        }


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> float32 Lab (OpenCV float convention: L 0..100, a/b about -128..127)."""
    return cv2.cvtColor(np.ascontiguousarray(rgb).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float32 Lab -> uint8 RGB (clipped, rounded)."""
    rgb = cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def lab_stats(lab: np.ndarray, mask: np.ndarray) -> LabStats:
    """Statistics of the Lab pixels where `mask` is true."""
    px = lab[np.asarray(mask, dtype=bool)].astype(np.float64)
    if len(px) == 0:
        return LabStats(np.zeros(3), np.zeros(3), 0)
    return LabStats(px.mean(axis=0), px.std(axis=0), len(px))


def transfer_lab(lab: np.ndarray, source: LabStats, reference: LabStats) -> np.ndarray:
    """`(x - mean_src) * std_ref / std_src + mean_ref` per channel (float, any leading shape)."""
    ratio = np.clip(reference.std / np.maximum(source.std, _EPS), *STD_RATIO_LIMITS)
    return ((lab.astype(np.float64) - source.mean) * ratio + reference.mean).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# Transfer
# ---------------------------------------------------------------------------------------------------


@dataclass
class MakeupResult:
    image: Image.Image
    intensity: dict[str, float]
    """The intensity used per region (0 for skipped regions)."""
    changed: dict[str, int]
    """Pixels changed per region (where its feathered weight was > 0)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Region -> why it was not transferred."""
    stats: dict[str, tuple[LabStats, LabStats]] = field(default_factory=dict)
    """Region -> (source stats, reference stats)."""


def resolve_intensity(intensity: Mapping[str, float] | None) -> dict[str, float]:
    """Defaults filled in and every value checked (`0 <= v <= MAX_INTENSITY`, known region names)."""
    out = dict(DEFAULT_INTENSITY)
    for name, value in (intensity or {}).items():
        if name not in DEFAULT_INTENSITY:
            raise InputError(
                f"intensity.{name}", f"unknown makeup region; known: {', '.join(MAKEUP_REGIONS)}", name
            )
        v = float(value)
        if not (0.0 <= v <= MAX_INTENSITY) or not np.isfinite(v):
            raise InputError(f"intensity.{name}", f"must be in [0, {MAX_INTENSITY}], got {value!r}", value)
        out[name] = v
    return out


def transfer_makeup(
    source: Image.Image | np.ndarray,
    source_regions: FaceRegions,
    reference: Image.Image | np.ndarray,
    reference_regions: FaceRegions,
    intensity: Mapping[str, float] | None = None,
    *,
    feather_px: float | None = None,
) -> MakeupResult:
    """Copy the reference's makeup colours onto the source, region by region (see the module docstring).

    `source_regions` / `reference_regions`: masks of each image (same size as that image). `intensity`: per
    makeup region (`MAKEUP_REGIONS`) in [0, 1.5]; missing ones take `DEFAULT_INTENSITY`. `feather_px`
    overrides the source regions' feather radius.
    """
    src = _rgb(source, "source")
    ref = _rgb(reference, "reference")
    if source_regions.shape != src.shape[:2]:
        raise InputError(
            "source_regions", f"masks are {source_regions.shape}, the source is {src.shape[:2]}", None
        )
    if reference_regions.shape != ref.shape[:2]:
        raise InputError(
            "reference_regions",
            f"masks are {reference_regions.shape}, the reference is {ref.shape[:2]}",
            None,
        )
    levels = resolve_intensity(intensity)
    used = {name: 0.0 for name in MAKEUP_REGIONS}
    changed = {name: 0 for name in MAKEUP_REGIONS}
    skipped: dict[str, str] = {}
    stats: dict[str, tuple[LabStats, LabStats]] = {}

    # 1. Which regions run, their soft masks and the box around all of them
    plan: list[tuple[str, float, np.ndarray, np.ndarray]] = []
    for name in APPLY_ORDER:
        alpha = levels[name]
        key = REGION_MASK[name]
        if alpha <= 0.0:
            skipped[name] = "intensity 0"
            continue
        if not source_regions.available.get(key, True) or not reference_regions.available.get(key, True):
            skipped[name] = "region not available"
            continue
        hard_src = source_regions.masks[key]
        hard_ref = reference_regions.masks[key]
        if hard_src.sum() < MIN_REGION_PIXELS:
            skipped[name] = f"source region too small ({int(hard_src.sum())} px)"
            continue
        if hard_ref.sum() < MIN_REGION_PIXELS:
            skipped[name] = f"reference region too small ({int(hard_ref.sum())} px)"
            continue
        plan.append((name, alpha, source_regions.soft(key, feather_px), hard_src))
    if not plan:
        return MakeupResult(Image.fromarray(src.copy()), used, changed, skipped, stats)
    support = np.zeros(src.shape[:2], bool)
    for _, _, soft, _ in plan:
        support |= soft > 0.0
    ys, xs = np.nonzero(support)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1

    # 2. Lab statistics: source region on the source, reference region on the reference
    src_lab = rgb_to_lab(src[y0:y1, x0:x1])
    ref_union = np.zeros(ref.shape[:2], bool)
    for name, _, _, _ in plan:
        ref_union |= reference_regions.masks[REGION_MASK[name]]
    rys, rxs = np.nonzero(ref_union)
    ry0, ry1, rx0, rx1 = rys.min(), rys.max() + 1, rxs.min(), rxs.max() + 1
    ref_lab = rgb_to_lab(ref[ry0:ry1, rx0:rx1])
    cur = src_lab.copy()
    total = np.zeros(src_lab.shape[:2], np.float32)
    for name, alpha, soft, hard in plan:
        s_stats = lab_stats(src_lab, hard[y0:y1, x0:x1])
        r_stats = lab_stats(ref_lab, reference_regions.masks[REGION_MASK[name]][ry0:ry1, rx0:rx1])
        stats[name] = (s_stats, r_stats)
        weight = alpha * soft[y0:y1, x0:x1]
        inside = weight > 0.0
        target = transfer_lab(src_lab[inside], s_stats, r_stats)
        w = weight[inside][:, None]
        cur[inside] = cur[inside] + w * (target - cur[inside])
        total = np.maximum(total, weight)
        used[name] = alpha
        changed[name] = int(inside.sum())

    # 3. Back to RGB; everything outside the masks keeps its bytes
    out = src.copy()
    crop_new = lab_to_rgb(cur)
    keep = total > 0.0
    out[y0:y1, x0:x1][keep] = crop_new[keep]
    return MakeupResult(Image.fromarray(out), used, changed, skipped, stats)


# ---------------------------------------------------------------------------------------------------
# Reference quality
# ---------------------------------------------------------------------------------------------------

MIN_EYE_DISTANCE_PX = 40.0
"""Below this the reference face is too small for its makeup to be read reliably (about a 100 px face)."""
BLUR_MIN_LAPLACIAN_VAR = 30.0
"""Variance of the Laplacian of the grey face crop scaled to an eye distance of 64 px. The shared astronaut
photo scores ~130; Gaussian blurs of sigma 0.5 / 1 / 2 px (at its 43 px eye distance) give ~70 / ~19 / ~4."""
DARK_L, BRIGHT_L = 30.0, 85.0
"""Mean skin L* outside [DARK_L, BRIGHT_L] is flagged as under- / over-exposed."""
CLIPPED_FRACTION = 0.08
UNEVEN_L = 18.0
"""Mean L* difference between the two cheeks above this is flagged as uneven (side) lighting."""
TURNED_YAW = 0.3
"""|nose-tip offset from the eye midpoint| / eye distance above this is flagged as a turned head."""


@dataclass(frozen=True)
class QualityWarning:
    code: str
    message: str
    value: float | None = None

    def __str__(self) -> str:
        return self.message


def reference_quality(
    image: Image.Image | np.ndarray, landmarks: FaceLandmarks | None
) -> list[QualityWarning]:
    """Warnings about a makeup reference photo (empty list = looks fine). `landmarks`: its main face or None."""
    rgb = _rgb(image, "reference")
    if landmarks is None:
        return [QualityWarning("no_face", "no face was found in the reference photo")]
    out: list[QualityWarning] = []
    ed = landmarks.eye_distance
    if ed < MIN_EYE_DISTANCE_PX:
        out.append(
            QualityWarning(
                "face_small",
                f"the reference face is small (eyes {ed:.0f} px apart; {MIN_EYE_DISTANCE_PX:.0f}+ recommended)",
                ed,
            )
        )
    # blur: Laplacian variance of the face crop at a fixed scale
    sharp = _laplacian_variance(rgb, landmarks)
    if sharp < BLUR_MIN_LAPLACIAN_VAR:
        out.append(
            QualityWarning("blurry", f"the reference face looks blurry (sharpness {sharp:.0f})", sharp)
        )
    # exposure and lighting on the skin
    regions = regions_from_landmarks(landmarks, rgb.shape[:2])
    skin = regions.masks["skin"]
    if skin.sum() >= MIN_REGION_PIXELS:
        lab = rgb_to_lab(rgb)
        mean_l = float(lab[..., 0][skin].mean())
        if mean_l < DARK_L:
            out.append(
                QualityWarning("dark", f"the reference face is under-exposed (skin L* {mean_l:.0f})", mean_l)
            )
        elif mean_l > BRIGHT_L:
            out.append(
                QualityWarning("bright", f"the reference face is over-exposed (skin L* {mean_l:.0f})", mean_l)
            )
        clipped = float((rgb[skin] >= 250).all(axis=1).mean())
        if clipped > CLIPPED_FRACTION:
            out.append(
                QualityWarning(
                    "clipped", f"{clipped:.0%} of the reference's skin is blown out to white", clipped
                )
            )
        cheeks = _cheek_halves(landmarks, skin)
        if cheeks is not None:
            diff = abs(float(lab[..., 0][cheeks[0]].mean()) - float(lab[..., 0][cheeks[1]].mean()))
            if diff > UNEVEN_L:
                out.append(
                    QualityWarning(
                        "uneven_light",
                        f"the reference face is lit unevenly (cheeks differ by L* {diff:.0f})",
                        diff,
                    )
                )
    yaw = _yaw_ratio(landmarks)
    if abs(yaw) > TURNED_YAW:
        out.append(
            QualityWarning(
                "turned", "the reference face is turned to the side; a frontal photo works best", yaw
            )
        )
    return out


def _laplacian_variance(rgb: np.ndarray, lm: FaceLandmarks) -> float:
    pts = lm.points
    x0, y0 = np.floor(pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 1
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.0
    grey = cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float32)
    k = 64.0 / max(lm.eye_distance, 1.0)
    size = (max(4, round((x1 - x0) * k)), max(4, round((y1 - y0) * k)))
    grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def _cheek_halves(lm: FaceLandmarks, skin: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Skin pixels left and right of the nose line, between eye and mouth height."""
    h, w = skin.shape
    ys, xs = np.mgrid[0:h, 0:w]
    p = lm.points
    right = lm.eye_right_center - lm.eye_left_center
    right = right / max(np.hypot(*right), 1e-6)
    down = np.array([-right[1], right[0]])
    origin = p[27:31].mean(axis=0)
    u = (xs - origin[0]) * right[0] + (ys - origin[1]) * right[1]
    v = (xs - origin[0]) * down[0] + (ys - origin[1]) * down[1]
    span = float(np.dot(lm.mouth_center - origin, down))
    band = (v > 0) & (v < span)
    left_half = skin & band & (u < -0.1 * lm.eye_distance)
    right_half = skin & band & (u > 0.1 * lm.eye_distance)
    if left_half.sum() < MIN_REGION_PIXELS or right_half.sum() < MIN_REGION_PIXELS:
        return None
    return left_half, right_half


def _yaw_ratio(lm: FaceLandmarks) -> float:
    """Signed offset of the nose tip (30) from the eyes' midpoint along the eye line, in eye distances."""
    right = lm.eye_right_center - lm.eye_left_center
    ed = max(np.hypot(*right), 1e-6)
    mid = (lm.eye_left_center + lm.eye_right_center) / 2.0
    return float(np.dot(lm.points[30] - mid, right / ed) / ed)


# ---------------------------------------------------------------------------------------------------
# Reference alignment
# ---------------------------------------------------------------------------------------------------

ALIGN_POINTS = np.r_[17:27, 27:36, 36:48, 48, 54]
"""Landmarks used for the similarity fit: brows, nose, eyes, mouth corners (not the jaw, which moves with pose)."""


def similarity_transform(src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src to dst."""
    src = np.asarray(src_points, dtype=np.float64)
    dst = np.asarray(dst_points, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise InputError(
            "points", f"need two matching (N >= 2, 2) point sets, got {src.shape} and {dst.shape}", None
        )
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1.0
    rot = u @ fix @ vt
    var_s = (s0**2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ fix) / max(var_s, 1e-12))
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def align_reference(
    reference: Image.Image | np.ndarray,
    reference_landmarks: FaceLandmarks,
    source_landmarks: FaceLandmarks,
    source_size: tuple[int, int],
) -> tuple[Image.Image, FaceLandmarks]:
    """The reference warped so its face sits on the source's face (same size as the source, (w, h)).

    Returns the warped reference and its landmarks in that frame. Areas outside the reference are edge-replicated.
    """
    ref = _rgb(reference, "reference")
    w, h = int(source_size[0]), int(source_size[1])
    if w < 1 or h < 1:
        raise InputError("source_size", f"must be positive, got {source_size!r}", source_size)
    m = similarity_transform(reference_landmarks.points[ALIGN_POINTS], source_landmarks.points[ALIGN_POINTS])
    warped = cv2.warpAffine(ref, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    pts = reference_landmarks.points @ m[:, :2].T + m[:, 2]
    b = reference_landmarks.box
    corners = (
        np.array([[b.x0, b.y0], [b.x1, b.y0], [b.x0, b.y1], [b.x1, b.y1]], np.float64) @ m[:, :2].T + m[:, 2]
    )
    x0, y0 = np.clip(np.floor(corners.min(0)), 0, [w - 1, h - 1]).astype(int)
    x1, y1 = np.clip(np.ceil(corners.max(0)), [x0 + 1, y0 + 1], [w, h]).astype(int)
    box = FaceBox(x0=int(x0), y0=int(y0), x1=int(x1), y1=int(y1), score=b.score, method=b.method)
    moved = FaceLandmarks(pts, box, reference_landmarks.score, reference_landmarks.detector, 0, "", (w, h))
    return Image.fromarray(warped), moved


def _rgb(image: Image.Image | np.ndarray, field: str) -> np.ndarray:
    if isinstance(image, Image.Image):
        return to_rgb_array(image)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(
            field, f"expected an RGB uint8 array (H, W, 3), got {arr.dtype} {arr.shape}", arr.shape
        )
    return arr
