"""The face side of the makeup studio: finding the face in the source and the reference, the face crop the
networks see and the way back into the photo, per-region blending of a made-up face with the source, and what
the user is shown about it (which regions changed, before / after).

- Landmarks: the shared 68-point dlib stack (`vision.landmarks`), whose model files ship in the
  `face_recognition_models` package; `packaged_landmarker()` loads it once per process (like the OpenCV cascades
  of `vision.faces`).
- Face crop: FFHQ alignment (`vision.ffhq_align`): the face upright and centred in a square, with the transform
  back into the photo. Face parsing runs on that crop (BiSeNet was trained on such crops) and its labels are
  warped back with nearest-neighbour sampling; pixels outside the crop are background (protected).
- Blending (`blend_regions`): per makeup region r with intensity a_r and feathered mask m_r (`FaceRegions.soft`),
  the weight is W = max_r a_r * m_r and the result is `source + W * (made_up - source)`, rounded; where W = 0
  the source's bytes are kept. So intensity 0 everywhere returns the source exactly, "lips only" changes only
  pixels of the lips' feathered mask, and a finished neural result can be re-blended in milliseconds.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..core.errors import InputError
from ..core.images import to_rgb_array
from .face_regions import FaceRegions
from .landmarks import FaceLandmarker, FaceLandmarks
from .makeup_classic import MAKEUP_REGIONS, REGION_MASK, rgb_to_lab

MIN_SIDE = 64
"""Smallest side (pixels) of a source or reference photo."""
PARSING_SIZE = 512
REGION_COLOURS: dict[str, tuple[int, int, int]] = {
    "lips": (235, 40, 95),
    "eyes": (150, 80, 235),
    "brows": (160, 105, 45),
    "skin": (250, 205, 120),
    "blush": (255, 120, 170),
}
"""Outline colour of each makeup region in the overlay."""


@functools.lru_cache(maxsize=1)
def packaged_landmarker() -> FaceLandmarker:
    """dlib's HOG + CNN detectors and 68-point predictor from the `face_recognition_models` package, loaded once
    per process (ModelNotFoundError when that package is not installed)."""
    return FaceLandmarker.from_package()


def check_photo_size(image: Image.Image, field: str, min_side: int = MIN_SIDE) -> None:
    """InputError naming `field` when the photo is smaller than `min_side` on a side."""
    if min(image.size) < min_side:
        raise InputError(field, f"is {image.width}x{image.height} px; the makeup studio needs at least "
                         f"{min_side}x{min_side} px with the face clearly visible", list(image.size))  # fmt: skip


def find_face(landmarker: FaceLandmarker, image: Image.Image | np.ndarray, field: str, label: str) -> FaceLandmarks:
    """The main face's 68 landmarks, or InputError naming `field` (`source` / `reference`)."""
    face = landmarker.main_face(image)
    if face is None:
        raise InputError(field, f"no face was found in the {label} photo: use a photo where the face is clearly "
                         "visible, facing the camera, at least ~100 px wide", None)  # fmt: skip
    return face


# ---------------------------------------------------------------------------------------------------
# Parsing labels on the aligned crop, back in the photo
# ---------------------------------------------------------------------------------------------------


def labels_to_photo(labels: np.ndarray, photo_from_aligned: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """A label map of an aligned crop warped into the photo (nearest neighbour; outside the crop: 0 = background).

    `photo_from_aligned`: the 2x3 matrix mapping aligned pixels to photo pixels (`AlignTransform.matrix` for the
    crop's size); `image_size`: (width, height) of the photo."""
    w, h = image_size
    inverse = cv2.invertAffineTransform(np.asarray(photo_from_aligned, np.float64))
    return cv2.warpAffine(np.ascontiguousarray(labels, np.uint8), inverse, (w, h),
                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Per-region blending and what changed
# ---------------------------------------------------------------------------------------------------


def region_weight_maps(regions: FaceRegions, intensity: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Per makeup region with intensity > 0: intensity x its feathered mask (float32, image-sized)."""
    maps: dict[str, np.ndarray] = {}
    for name in MAKEUP_REGIONS:
        level = float(intensity.get(name, 0.0))
        if level <= 0.0 or not regions.available.get(REGION_MASK[name], True):
            continue
        maps[name] = level * regions.soft(REGION_MASK[name])
    return maps


def region_weights(regions: FaceRegions, intensity: Mapping[str, float]) -> np.ndarray:
    """W = max over the makeup regions of intensity x feathered mask (float32, image-sized, 0..1.5)."""
    weight = np.zeros(regions.shape, np.float32)
    for m in region_weight_maps(regions, intensity).values():
        np.maximum(weight, m, out=weight)
    return weight


def blend_regions(
    source: Image.Image | np.ndarray,
    made_up: Image.Image | np.ndarray,
    regions: FaceRegions,
    intensity: Mapping[str, float],
) -> Image.Image:
    """`source + W * (made_up - source)` with W from `region_weights`; the source's bytes where W = 0."""
    src = _rgb(source, "source")
    new = _rgb(made_up, "made_up")
    if new.shape != src.shape:
        raise InputError("reblend_from", f"is {new.shape[1]}x{new.shape[0]}, the source is {src.shape[1]}x"
                         f"{src.shape[0]}: use the neural layer of a job on this source", list(new.shape[:2]))  # fmt: skip
    if regions.shape != src.shape[:2]:
        raise InputError("regions", f"masks are {regions.shape}, the source is {src.shape[:2]}", None)
    weight = region_weights(regions, intensity)
    out = src.copy()
    ys, xs = np.nonzero(weight > 0.0)
    if len(ys):
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        w = weight[y0:y1, x0:x1, None]
        s = src[y0:y1, x0:x1].astype(np.float32)
        mixed = np.clip(np.rint(s + w * (new[y0:y1, x0:x1].astype(np.float32) - s)), 0, 255).astype(np.uint8)
        keep = w[..., 0] > 0.0
        out[y0:y1, x0:x1][keep] = mixed[keep]
    return Image.fromarray(out)


def change_report(
    source: Image.Image | np.ndarray,
    result: Image.Image | np.ndarray,
    regions: FaceRegions,
    intensity: Mapping[str, float],
) -> dict[str, dict[str, float | int]]:
    """Per makeup region: `pixels` changed because of it and the mean CIE76 colour difference `delta_e` over the
    pixels it drives. A pixel belongs to the region with the largest intensity x feathered mask there (the one
    that moved it); regions at intensity 0 drive none."""
    src = _rgb(source, "source")
    out = _rgb(result, "result")
    report: dict[str, dict[str, float | int]] = {name: {"pixels": 0, "delta_e": 0.0} for name in MAKEUP_REGIONS}
    maps = region_weight_maps(regions, intensity)
    diff = np.any(src != out, axis=2)
    if not maps or not diff.any():
        return report
    names = list(maps)
    support = np.zeros(src.shape[:2], bool)
    for m in maps.values():
        support |= m > 0.0
    if not support.any():
        return report
    ys, xs = np.nonzero(support)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    stack = np.stack([maps[n][y0:y1, x0:x1] for n in names])
    own = np.where(support[y0:y1, x0:x1], stack.argmax(axis=0), -1)
    delta = np.linalg.norm(rgb_to_lab(out[y0:y1, x0:x1]) - rgb_to_lab(src[y0:y1, x0:x1]), axis=2)
    changed = diff[y0:y1, x0:x1]
    for i, name in enumerate(names):
        mine = own == i
        if mine.any():
            report[name] = {"pixels": int((changed & mine).sum()), "delta_e": round(float(delta[mine].mean()), 3)}
    return report


def changed_regions(report: Mapping[str, Mapping[str, float | int]], min_delta_e: float = 0.5) -> list[str]:
    """The regions whose mean colour moved by at least `min_delta_e` (about the threshold of a visible change)."""
    return [name for name, r in report.items() if r["pixels"] and float(r["delta_e"]) >= min_delta_e]


def region_overlay(result: Image.Image | np.ndarray, regions: FaceRegions, names: list[str]) -> Image.Image:
    """The result with the outline (and a light tint) of each region in `names`, in `REGION_COLOURS`."""
    out = _rgb(result, "result").astype(np.float32)
    thick = max(1, round(max(out.shape[:2]) / 400))
    contours_by_name = []
    for name in names:
        mask = regions.masks[REGION_MASK[name]]
        colour = np.array(REGION_COLOURS[name], np.float32)
        out[mask] = 0.8 * out[mask] + 0.2 * colour
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contours_by_name.append((contours, REGION_COLOURS[name]))
    img = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    for contours, colour in contours_by_name:
        cv2.drawContours(img, contours, -1, colour, thick, cv2.LINE_AA)
    return Image.fromarray(img)


def before_after(source: Image.Image, result: Image.Image, gap: int = 4, max_side: int = 768) -> Image.Image:
    """Source and result side by side (white gap between them), each at most `max_side` on its long side."""
    scale = min(1.0, max_side / max(source.size))
    w, h = max(1, round(source.width * scale)), max(1, round(source.height * scale))

    def fit(img: Image.Image) -> Image.Image:
        img = img.convert("RGB")
        return img if img.size == (w, h) else img.resize((w, h), Image.Resampling.LANCZOS)

    canvas = Image.new("RGB", (2 * w + gap, h), (255, 255, 255))
    canvas.paste(fit(source), (0, 0))
    canvas.paste(fit(result), (w + gap, 0))
    return canvas


# ---------------------------------------------------------------------------------------------------
# Regions computed once per photo
# ---------------------------------------------------------------------------------------------------


class MemoRegions(FaceRegions):
    """`FaceRegions` whose feathered masks are computed once (a preview or re-blend reuses them)."""

    @classmethod
    def of(cls, regions: FaceRegions) -> MemoRegions:
        return cls(regions.masks, regions.source, regions.protect, regions.feather_px, regions.available)

    def soft(self, name: str, radius: float | None = None) -> np.ndarray:
        memo: dict = self.__dict__.setdefault("_memo", {})
        key = (name, radius)
        if key not in memo:
            memo[key] = super().soft(name, radius)
            memo[key].setflags(write=False)
        return memo[key]

    @property
    def nbytes(self) -> int:
        memo = self.__dict__.get("_memo", {})
        return (sum(int(m.nbytes) for m in self.masks.values()) + int(self.protect.nbytes)
                + sum(int(m.nbytes) for m in memo.values()))  # fmt: skip


@dataclass
class FaceAnalysis:
    """One photo's main face: its landmarks and makeup regions (and how they were made)."""

    landmarks: FaceLandmarks
    regions: MemoRegions
    method: str
    """`parsing` or `landmarks`."""
    quality: list[dict[str, Any]] | None = None
    """Reference-photo warnings (filled for references)."""

    @property
    def nbytes(self) -> int:
        return self.regions.nbytes


class AnalysisCache:
    """Recently analysed photos (thread-safe LRU, bounded in bytes): a preview, a re-blend or a second job on the
    same photos does not detect, parse and rasterise the face again. Keys say what the analysis depends on."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[Any, ...], FaceAnalysis] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: tuple[Any, ...]) -> FaceAnalysis | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return hit

    def put(self, key: tuple[Any, ...], value: FaceAnalysis) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > 1 and sum(v.nbytes for v in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _rgb(image: Image.Image | np.ndarray, field: str) -> np.ndarray:
    if isinstance(image, Image.Image):
        return to_rgb_array(image)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(field, f"expected an RGB uint8 array (H, W, 3), got {arr.dtype} {arr.shape}", arr.shape)
    return arr
