"""Per-region face masks for makeup: from a face-parsing label map, or from 68 landmarks (classic fallback).

Regions (`REGION_NAMES`): `lips`, `mouth` (inside the lips: teeth, tongue), `eyes` (the eyeballs), `eye_shadow` (a ring around each eye on the skin,
below the brows), `brows`, `skin` (face skin including the nose), `blush` (an ellipse on each cheek), `hair`,
`neck`, `background`.

- From parsing (`regions_from_parsing`): a label map in the 19 CelebAMask-HQ classes that BiSeNet face parsing
  produces (zllrunning/face-parsing.PyTorch; C.-H. Lee et al., "MaskGAN", CVPR 2020): lips = upper + lower lip,
  eyes = l/r eye, brows = l/r brow, skin = skin + nose, hair, neck, background; eye-shadow ring and cheeks are
  placed geometrically (from landmarks when given, else from the label centroids) and kept on the skin.
  Hair, background, clothes, hat, glasses and jewellery form the `protect` mask: feathered masks are zeroed
  there, so makeup never touches them.
- From landmarks (`regions_from_landmarks`, 300-W 68-point order): lips = outer-lip polygon minus the inner
  one, eyes = eye polygons, brows = the brow points thickened towards the eyes, skin = the jaw line closed over
  a forehead band raised above the brows, minus eyes, brows and mouth. Hair, neck and background cannot be told
  from 68 points: they are empty and not `available`.

`FaceRegions.soft(name)` gives the feathered mask: 1 on the region, falling smoothly to 0 over `feather_px`
outside it (so statistics over the region are unaffected by the feather), 0 on protected pixels and on the
regions in `KEEP_OUT` (eyeballs and the inside of the mouth are never painted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from toonbooth.core.errors import InputError
from toonbooth.vision.landmarks import FaceLandmarks

REGION_NAMES: tuple[str, ...] = (
    "lips",
    "mouth",
    "eyes",
    "eye_shadow",
    "brows",
    "skin",
    "blush",
    "hair",
    "neck",
    "background",
)
KEEP_OUT: dict[str, tuple[str, ...]] = {
    "lips": ("mouth", "eyes"),
    "eye_shadow": ("eyes", "mouth"),
    "brows": ("eyes", "mouth"),
    "skin": ("eyes", "mouth"),
    "blush": ("eyes", "mouth"),
}
"""Regions whose pixels a region's feathered mask never reaches (no lipstick on teeth, no shadow on eyeballs)."""

# CelebAMask-HQ / BiSeNet label indices (see nets.bisenet.FACE_PARSING_CLASSES; vision must not import nets)
_BACKGROUND, _SKIN, _L_BROW, _R_BROW, _L_EYE, _R_EYE, _EYE_G = 0, 1, 2, 3, 4, 5, 6
_L_EAR, _R_EAR, _EAR_R, _NOSE, _MOUTH, _U_LIP, _L_LIP = 7, 8, 9, 10, 11, 12, 13
_NECK, _NECK_L, _CLOTH, _HAIR, _HAT = 14, 15, 16, 17, 18
PARSING_REGION_LABELS: dict[str, tuple[int, ...]] = {
    "lips": (_U_LIP, _L_LIP),
    "mouth": (_MOUTH,),
    "eyes": (_L_EYE, _R_EYE),
    "brows": (_L_BROW, _R_BROW),
    "skin": (_SKIN, _NOSE),
    "hair": (_HAIR,),
    "neck": (_NECK,),
    "background": (_BACKGROUND,),
}
PROTECTED_LABELS: tuple[int, ...] = (_BACKGROUND, _EYE_G, _EAR_R, _NECK_L, _CLOTH, _HAIR, _HAT)
"""Labels that makeup never changes (hair, background, clothes, hat, glasses, earrings, necklace)."""

FEATHER_FRACTION = 0.1
"""Default feather radius as a fraction of the eye distance (about 4 px on a face 100 px wide)."""
EYE_SHADOW_FRACTION = 0.22
"""Eye-shadow ring width, as a fraction of the eye distance."""


@dataclass
class FaceRegions:
    """Hard region masks of one face (bool, image-sized) and how to feather them."""

    masks: dict[str, np.ndarray]
    source: Literal["parsing", "landmarks"]
    protect: np.ndarray
    """Pixels never to change (bool); all False for landmark regions."""
    feather_px: float
    """Default feather radius in pixels (from the face size)."""
    available: dict[str, bool] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.protect.shape  # type: ignore[return-value]

    def soft(self, name: str, radius: float | None = None) -> np.ndarray:
        """The feathered float32 mask of region `name` (1 inside, smooth fall-off outside, 0 on protected pixels)."""
        if name not in self.masks:
            raise InputError("region", f"unknown region {name!r}; known: {', '.join(REGION_NAMES)}", name)
        soft = feather_mask(self.masks[name], self.feather_px if radius is None else radius)
        if self.protect.any() and name not in ("hair", "background"):
            soft[self.protect] = 0.0
        for other in KEEP_OUT.get(name, ()):
            soft[self.masks[other]] = 0.0
        return soft

    def pixel_counts(self) -> dict[str, int]:
        return {k: int(v.sum()) for k, v in self.masks.items()}


def feather_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """float32 mask: 1 on `mask`, then a smoothstep fall-off to exactly 0 at `radius` px outside it."""
    hard = np.asarray(mask).astype(bool)
    if radius <= 0.0 or not hard.any():
        return hard.astype(np.float32)
    dist = cv2.distanceTransform((~hard).astype(np.uint8), cv2.DIST_L2, 5)
    t = np.clip(1.0 - dist / float(radius), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# From a parsing label map
# ---------------------------------------------------------------------------------------------------


def regions_from_parsing(
    labels: np.ndarray, landmarks: FaceLandmarks | np.ndarray | None = None
) -> FaceRegions:
    """Regions from a (H, W) label map of the 19 face-parsing classes (+ landmarks for eye shadow and cheeks)."""
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.size == 0:
        raise InputError("labels", f"expected a 2-D label map, got shape {lab.shape}", lab.shape)
    if lab.max() > _HAT:
        raise InputError(
            "labels", f"has label {int(lab.max())}, the face-parsing classes are 0..18", int(lab.max())
        )
    masks = {name: np.isin(lab, ids) for name, ids in PARSING_REGION_LABELS.items()}
    skin = masks["skin"]
    geo = _geometry(landmarks, lab)
    if geo is None:  # no eyes and no landmarks: nothing to place eye shadow / blush by
        masks["eye_shadow"] = np.zeros_like(skin)
        masks["blush"] = np.zeros_like(skin)
        feather = max(1.0, 0.01 * np.sqrt(max(skin.sum(), 1)))
    else:
        masks["eye_shadow"] = _eye_shadow(masks["eyes"], geo, skin & ~masks["brows"])
        masks["blush"] = _cheeks(geo, lab.shape) & skin & ~masks["eye_shadow"]
        feather = FEATHER_FRACTION * geo.eye_distance
    protect = np.isin(lab, PROTECTED_LABELS)
    return FaceRegions(
        masks=masks,
        source="parsing",
        protect=protect,
        feather_px=max(1.0, float(feather)),
        available={name: True for name in REGION_NAMES},
    )


# ---------------------------------------------------------------------------------------------------
# From 68 landmarks
# ---------------------------------------------------------------------------------------------------


def regions_from_landmarks(
    landmarks: FaceLandmarks | np.ndarray, image_shape: tuple[int, int]
) -> FaceRegions:
    """Regions from 68 landmarks alone, for an image of `image_shape` (H, W). No hair / neck / background."""
    pts = _points(landmarks)
    h, w = int(image_shape[0]), int(image_shape[1])
    if h < 1 or w < 1:
        raise InputError("image_shape", f"must be positive, got {image_shape!r}", image_shape)
    geo = _Geometry.from_points(pts)
    ed = geo.eye_distance

    eyes = _fill((h, w), [pts[36:42], pts[42:48]])
    outer = _fill((h, w), [pts[48:60]])
    inner = _fill((h, w), [pts[60:68]])
    lips = outer & ~inner
    brow_t = 0.12 * ed
    brows = _fill(
        (h, w),
        [_thick_polyline(pts[17:22], geo.down * brow_t), _thick_polyline(pts[22:27], geo.down * brow_t)],
    )
    # face: jaw line closed over a forehead band raised above the brows by 0.35 eye distances
    forehead = pts[26:16:-1] - geo.down * (0.35 * ed)
    face = _fill((h, w), [np.vstack([pts[0:17], forehead])])
    skin = face & ~eyes & ~brows & ~outer
    eye_shadow = _eye_shadow(eyes, geo, skin)
    blush = _cheeks(geo, (h, w)) & skin & ~eye_shadow
    zero = np.zeros((h, w), bool)
    masks = {
        "lips": lips,
        "mouth": inner,
        "eyes": eyes,
        "eye_shadow": eye_shadow,
        "brows": brows,
        "skin": skin,
        "blush": blush,
        "hair": zero.copy(),
        "neck": zero.copy(),
        "background": zero.copy(),
    }
    available = {name: name not in ("hair", "neck", "background") for name in REGION_NAMES}
    return FaceRegions(masks, "landmarks", zero.copy(), max(1.0, FEATHER_FRACTION * ed), available)


# ---------------------------------------------------------------------------------------------------
# Geometry shared by both
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    eye_left: np.ndarray
    eye_right: np.ndarray
    mouth_left: np.ndarray
    mouth_right: np.ndarray
    nose: np.ndarray | None = None

    @property
    def eye_distance(self) -> float:
        return float(max(np.hypot(*(self.eye_right - self.eye_left)), 1.0))

    @property
    def right(self) -> np.ndarray:
        """Unit vector from the image-left eye to the image-right eye."""
        v = self.eye_right - self.eye_left
        return v / max(np.hypot(*v), 1e-6)

    @property
    def down(self) -> np.ndarray:
        """Unit vector perpendicular to `right`, pointing from the eyes to the mouth."""
        r = self.right
        d = np.array([-r[1], r[0]])
        mouth = (self.mouth_left + self.mouth_right) / 2.0
        eyes = (self.eye_left + self.eye_right) / 2.0
        return d if np.dot(mouth - eyes, d) >= 0 else -d

    @classmethod
    def from_points(cls, pts: np.ndarray) -> _Geometry:
        return cls(pts[36:42].mean(0), pts[42:48].mean(0), pts[48], pts[54], pts[30])


def _geometry(landmarks: FaceLandmarks | np.ndarray | None, lab: np.ndarray) -> _Geometry | None:
    if landmarks is not None:
        return _Geometry.from_points(_points(landmarks))
    centres = []
    for ids in ((_L_EYE, _R_EYE), (_U_LIP, _L_LIP, _MOUTH)):
        ys, xs = np.nonzero(np.isin(lab, ids))
        if len(xs) == 0:
            return None
        centres.append((xs, ys))
    (ex, ey), (mx, my) = centres
    # split eyes by the eye pixels' mean x; mouth corners = the lip pixels' x extremes at their mean height
    mid = ex.mean()
    left, right = ex < mid, ex >= mid
    if not left.any() or not right.any():
        return None
    el = np.array([ex[left].mean(), ey[left].mean()])
    er = np.array([ex[right].mean(), ey[right].mean()])
    ml = np.array([mx.min(), my.mean()])
    mr = np.array([mx.max(), my.mean()])
    return _Geometry(el, er, ml, mr)


def _eye_shadow(eyes: np.ndarray, geo: _Geometry, allowed: np.ndarray) -> np.ndarray:
    """A ring around the eyes: `EYE_SHADOW_FRACTION` wide above the eye line, a third of that below it."""
    r = max(1, int(round(EYE_SHADOW_FRACTION * geo.eye_distance)))
    wide = _dilate(eyes, r)
    narrow = _dilate(eyes, max(1, r // 3))
    ring = narrow.copy()
    if wide.any():  # the part of the wide ring above the eye line, computed in its bounding box only
        ys, xs = np.nonzero(wide)
        eye_line = (geo.eye_left + geo.eye_right) / 2.0
        above = (xs - eye_line[0]) * geo.down[0] + (ys - eye_line[1]) * geo.down[1] <= 0.05 * geo.eye_distance
        ring[ys[above], xs[above]] = True
    return ring & ~eyes & allowed


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _cheeks(geo: _Geometry, shape: tuple[int, int]) -> np.ndarray:
    """An ellipse on each cheek: below the eye, level with the nose tip, shifted outwards."""
    ed = geo.eye_distance
    out = np.zeros(shape, np.uint8)
    angle = float(np.degrees(np.arctan2(geo.right[1], geo.right[0])))
    axes = (max(1, int(round(0.28 * ed))), max(1, int(round(0.19 * ed))))
    for eye, sign in ((geo.eye_left, -1.0), (geo.eye_right, 1.0)):
        c = eye + geo.down * (0.62 * ed) + geo.right * (sign * 0.12 * ed)
        centre = (int(round(c[0] * 16)), int(round(c[1] * 16)))
        cv2.ellipse(out, centre, (axes[0] * 16, axes[1] * 16), angle, 0, 360, 1, -1, cv2.LINE_8, 4)
    return out.astype(bool)


def _thick_polyline(points: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """A polygon covering a polyline and its copy moved by `offset`."""
    return np.vstack([points, (points + offset)[::-1]])


def _fill(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    polys = [np.rint(p * 16).astype(np.int32).reshape(-1, 1, 2) for p in polygons]
    cv2.fillPoly(out, polys, 1, cv2.LINE_8, 4)
    return out.astype(bool)


def _points(landmarks: FaceLandmarks | np.ndarray) -> np.ndarray:
    pts = (
        landmarks.points if isinstance(landmarks, FaceLandmarks) else np.asarray(landmarks, dtype=np.float64)
    )
    if pts.shape != (68, 2) or not np.all(np.isfinite(pts)):
        raise InputError("landmarks", f"expected 68 finite (x, y) points, got shape {pts.shape}", pts.shape)
    return pts
