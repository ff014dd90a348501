"""68-point face landmarks on the CPU with dlib: the landmark stack shared by toonify, talking head and makeup.

Detectors (dlib, http://dlib.net, Boost Software License):
- the HOG + linear-SVM frontal detector built into dlib (`get_frontal_face_detector`, five filters: front,
  looking left, looking right, rotated left, rotated right), after N. Dalal and B. Triggs, "Histograms of
  Oriented Gradients for Human Detection" (CVPR 2005);
- the CNN "max-margin object detection" detector `mmod_human_face_detector.dat`, after D. E. King,
  "Max-Margin Object Detection" (arXiv:1502.00046). It also finds three-quarter and near-profile faces that
  the HOG filters (and OpenCV's frontal Haar cascades) miss, at about 20x the CPU cost.

Landmarks: the ensemble-of-regression-trees shape predictor of V. Kazemi and J. Sullivan, "One Millisecond
Face Alignment with an Ensemble of Regression Trees" (CVPR 2014), with the `shape_predictor_68_face_landmarks
.dat` model in the iBUG 300-W 68-point order (0-16 jaw, 17-21 / 22-26 brows, 27-35 nose, 36-41 / 42-47 eyes,
48-59 outer lips, 60-67 inner lips; C. Sagonas et al., "300 Faces in-the-Wild Challenge", ICCVW 2013).

The model files ship in the pip package `face_recognition_models` (its `models/` folder). That package's
`__init__` imports `pkg_resources`, so `packaged_model_files` finds the folder with `importlib.util.find_spec`
without importing it. Any other copy of the same files (e.g. a models folder) is passed in by path.

Licences (davisking/dlib-models `README.md`): see `LICENCES`. The 68-point model was trained on iBUG 300-W,
whose licence excludes commercial use, so **the 68-point model cannot be used in a commercial product**.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from toonbooth.core.errors import InputError, ModelError, ModelNotFoundError
from toonbooth.core.images import to_rgb_array
from toonbooth.vision.faces import FaceBox

PREDICTOR_68_FILE = "shape_predictor_68_face_landmarks.dat"
PREDICTOR_5_FILE = "shape_predictor_5_face_landmarks.dat"
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"

LICENCES: dict[str, str] = {
    PREDICTOR_68_FILE: (
        "NON-COMMERCIAL: trained on the iBUG 300-W data set, whose licence excludes commercial use; "
        "per the dlib-models README the model therefore can't be used in a commercial product."
    ),
    PREDICTOR_5_FILE: (
        "Public domain (CC0-style dedication in the dlib-models README); trained on dlib's own 7198-face "
        "data set. It has eye corners and the nose bottom only, no mouth: not enough for FFHQ alignment."
    ),
    CNN_DETECTOR_FILE: (
        "Public domain (CC0-style dedication in the dlib-models README); trained on dlib's own face "
        "detection data set."
    ),
    "dlib_hog": "Boost Software License 1.0 (built into the dlib library).",
}
"""Licence of each landmark / detector model, keyed by file name (and `dlib_hog` for the built-in detector)."""

COMMERCIAL_USE_OK: dict[str, bool] = {
    PREDICTOR_68_FILE: False,
    PREDICTOR_5_FILE: True,
    CNN_DETECTOR_FILE: True,
    "dlib_hog": True,
}

# 300-W index groups (end exclusive)
JAW = slice(0, 17)
BROW_LEFT = slice(17, 22)
"""The brow on the image's left (the subject's right), as in the 300-W / FFHQ naming."""
BROW_RIGHT = slice(22, 27)
NOSE_BRIDGE = slice(27, 31)
NOSE_BOTTOM = slice(31, 36)
EYE_LEFT = slice(36, 42)
"""The eye on the image's left (FFHQ's `lm_eye_left`)."""
EYE_RIGHT = slice(42, 48)
MOUTH_OUTER = slice(48, 60)
MOUTH_INNER = slice(60, 68)

HOG_VIEWS = ("front", "left", "right", "front_rotated_left", "front_rotated_right")
"""What each of the five HOG filters of `get_frontal_face_detector` looks for (its `weight_index`)."""

DetectorName = Literal["dlib_hog", "dlib_cnn", "given_box"]
DetectorChoice = Literal["auto", "hog", "cnn"]

HOG_MAX_SIDE = 1280
"""Images are scaled down to this long side before the HOG detector runs (boxes are mapped back)."""
CNN_MAX_SIDE = 512
"""The same for the CNN detector, which costs ~20x more per pixel (~3 s at 512x512 on one CPU core)."""
HOG_UPSAMPLE_BELOW = 640
"""A HOG detection image with a long side under this is upsampled once (its filters need faces >= ~80 px)."""
CNN_UPSAMPLE_BELOW = 320
"""The same for the CNN detector, whose window finds smaller faces (upsampling costs it 4x)."""


# ---------------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LandmarkModelFiles:
    """Paths of the dlib model files the landmarker needs (`cnn_detector` and `predictor_5` optional)."""

    predictor_68: Path
    cnn_detector: Path | None = None
    predictor_5: Path | None = None


def packaged_model_files() -> LandmarkModelFiles | None:
    """The model files inside the installed `face_recognition_models` package, or None when it is absent.

    The package is located with `importlib.util.find_spec` and never imported (its `__init__` needs
    `pkg_resources`). Only that package's own `models/` folder is looked at.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    predictor = folder / PREDICTOR_68_FILE
    if not predictor.is_file():
        return None
    cnn = folder / CNN_DETECTOR_FILE
    five = folder / PREDICTOR_5_FILE
    return LandmarkModelFiles(
        predictor_68=predictor,
        cnn_detector=cnn if cnn.is_file() else None,
        predictor_5=five if five.is_file() else None,
    )


# ---------------------------------------------------------------------------------------------------
# Result type
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceLandmarks:
    """68 landmarks of one face in full-image pixel coordinates (x, y; pixel centres at integers)."""

    points: np.ndarray
    """(68, 2) float64, 300-W order."""
    box: FaceBox
    """The detector's box (method = the detector name)."""
    score: float
    """The detector's raw score (HOG: SVM margin; CNN: MMOD confidence; `given_box`: 0)."""
    detector: DetectorName
    upsample: int = 0
    """How many times the detection image was upsampled (2x each)."""
    view: str = ""
    """For HOG: which of the five filters fired (`HOG_VIEWS`); empty otherwise."""
    image_size: tuple[int, int] = (0, 0)
    """(width, height) of the image the points refer to."""

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float64)
        if pts.shape != (68, 2):
            raise InputError("points", f"expected a (68, 2) array, got shape {pts.shape}", pts.shape)
        object.__setattr__(self, "points", pts)

    # named groups -----------------------------------------------------------------------------------
    @property
    def jaw(self) -> np.ndarray:
        return self.points[JAW]

    @property
    def brow_left(self) -> np.ndarray:
        return self.points[BROW_LEFT]

    @property
    def brow_right(self) -> np.ndarray:
        return self.points[BROW_RIGHT]

    @property
    def brows(self) -> np.ndarray:
        return self.points[17:27]

    @property
    def nose(self) -> np.ndarray:
        return self.points[27:36]

    @property
    def eye_left(self) -> np.ndarray:
        return self.points[EYE_LEFT]

    @property
    def eye_right(self) -> np.ndarray:
        return self.points[EYE_RIGHT]

    @property
    def eyes(self) -> np.ndarray:
        return self.points[36:48]

    @property
    def mouth_outer(self) -> np.ndarray:
        return self.points[MOUTH_OUTER]

    @property
    def mouth_inner(self) -> np.ndarray:
        return self.points[MOUTH_INNER]

    @property
    def mouth(self) -> np.ndarray:
        return self.points[48:68]

    # centres ----------------------------------------------------------------------------------------
    @property
    def eye_left_center(self) -> np.ndarray:
        """Mean of points 36-41 (FFHQ's `eye_left`)."""
        return self.eye_left.mean(axis=0)

    @property
    def eye_right_center(self) -> np.ndarray:
        """Mean of points 42-47 (FFHQ's `eye_right`)."""
        return self.eye_right.mean(axis=0)

    @property
    def mouth_center(self) -> np.ndarray:
        """Midpoint of the mouth corners 48 and 54 (FFHQ's `mouth_avg`)."""
        return (self.points[48] + self.points[54]) * 0.5

    @property
    def eye_distance(self) -> float:
        """Pixels between the two eye centres."""
        return float(np.hypot(*(self.eye_right_center - self.eye_left_center)))

    def scaled(self, sx: float, sy: float | None = None) -> FaceLandmarks:
        """The same face for an image resized by (sx, sy) (index coordinates, pixel centres kept)."""
        sy = sx if sy is None else sy
        s = np.array([sx, sy])
        pts = (self.points + 0.5) * s - 0.5
        b = self.box
        box = FaceBox(
            x0=max(0, int(np.floor(b.x0 * sx))),
            y0=max(0, int(np.floor(b.y0 * sy))),
            x1=max(1, int(np.ceil(b.x1 * sx))),
            y1=max(1, int(np.ceil(b.y1 * sy))),
            score=b.score,
            method=b.method,
        )
        size = (round(self.image_size[0] * sx), round(self.image_size[1] * sy))
        return FaceLandmarks(pts, box, self.score, self.detector, self.upsample, self.view, size)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready description (points rounded to 0.01 px)."""
        return {
            "points": np.round(self.points, 2).tolist(),
            "box": list(self.box.as_tuple()),
            "score": round(float(self.score), 4),
            "detector": self.detector,
            "upsample": self.upsample,
            "view": self.view,
            "image_size": list(self.image_size),
        }


# ---------------------------------------------------------------------------------------------------
# The landmarker
# ---------------------------------------------------------------------------------------------------


def _import_dlib():
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - dlib-bin is a dependency
        raise ModelError("face landmarks need dlib: install the `dlib-bin` wheel") from e
    return dlib


def _check_file(path: Path | str, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"{what} file not found: {p}")
    return p


@dataclass
class FaceLandmarker:
    """dlib detectors + the 68-point shape predictor. Build with `FaceLandmarker.load(files)`.

    dlib's detector objects are not documented as thread-safe, so each call holds the instance's lock.
    """

    predictor: object
    hog: object
    cnn: object | None
    files: LandmarkModelFiles
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, files: LandmarkModelFiles) -> FaceLandmarker:
        """Load the models named in `files` (paths given by the caller; nothing is searched for)."""
        dlib = _import_dlib()
        predictor_path = _check_file(files.predictor_68, "68-point shape predictor")
        cnn_path = _check_file(files.cnn_detector, "CNN face detector") if files.cnn_detector else None
        try:
            predictor = dlib.shape_predictor(str(predictor_path))
        except RuntimeError as e:
            raise ModelError(f"{predictor_path} is not a dlib shape predictor: {e}") from e
        n_parts = predictor(np.zeros((32, 32, 3), np.uint8), dlib.rectangle(4, 4, 27, 27)).num_parts
        if n_parts != 68:
            raise ModelError(f"{predictor_path} predicts {n_parts} points, expected 68")
        cnn = None
        if cnn_path is not None:
            try:
                cnn = dlib.cnn_face_detection_model_v1(str(cnn_path))
            except RuntimeError as e:
                raise ModelError(f"{cnn_path} is not a dlib MMOD face detector: {e}") from e
        return cls(predictor=predictor, hog=dlib.get_frontal_face_detector(), cnn=cnn, files=files)

    @classmethod
    def from_package(cls) -> FaceLandmarker:
        """Load the files that ship in the `face_recognition_models` pip package."""
        files = packaged_model_files()
        if files is None:
            raise ModelNotFoundError(
                "the `face_recognition_models` package (dlib's 68-point landmark model) is not installed"
            )
        return cls.load(files)

    # detection ------------------------------------------------------------------------------------
    def detect(
        self,
        image: Image.Image | np.ndarray,
        *,
        detector: DetectorChoice = "auto",
        max_faces: int | None = None,
    ) -> list[FaceLandmarks]:
        """All faces with their 68 landmarks, best detector score first.

        `detector="auto"` runs HOG first (fast; frontal, looking left/right and rolled faces) and the CNN
        only when HOG finds nothing (three-quarter and near-profile faces); each result says which one
        found it. Small images are upsampled once for detection (`HOG_UPSAMPLE_BELOW`, `CNN_UPSAMPLE_BELOW`),
        large ones scaled down (`HOG_MAX_SIDE`, `CNN_MAX_SIDE`); landmarks are always fitted at full resolution.
        """
        if detector not in ("auto", "hog", "cnn"):
            raise InputError("detector", f"must be `auto`, `hog` or `cnn`, got {detector!r}", detector)
        if max_faces is not None and max_faces < 1:
            raise InputError("max_faces", f"must be at least 1, got {max_faces!r}", max_faces)
        rgb = _as_rgb(image)
        if detector == "cnn" and self.cnn is None:
            raise ModelError(
                "the CNN detector was asked for but no `mmod_human_face_detector.dat` was loaded"
            )
        faces: list[FaceLandmarks] = []
        if detector in ("auto", "hog"):
            faces = self._run_hog(rgb)
        if not faces and detector in ("auto", "cnn") and self.cnn is not None:
            faces = self._run_cnn(rgb)
        faces.sort(key=lambda f: (-f.score, -f.box.area, f.box.x0, f.box.y0))
        return faces[:max_faces] if max_faces else faces

    def main_face(
        self, image: Image.Image | np.ndarray, *, detector: DetectorChoice = "auto"
    ) -> FaceLandmarks | None:
        """The face with the best detector score, or None."""
        faces = self.detect(image, detector=detector, max_faces=1)
        return faces[0] if faces else None

    def landmarks_in_box(
        self, image: Image.Image | np.ndarray, box: tuple[int, int, int, int]
    ) -> FaceLandmarks:
        """The 68 landmarks inside a box found elsewhere (e.g. the Haar detector), `(x0, y0, x1, y1)`."""
        rgb = _as_rgb(image)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        h, w = rgb.shape[:2]
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise InputError("box", f"{tuple(box)} is not inside the {w}x{h} image", tuple(box))
        dlib = _import_dlib()
        rect = dlib.rectangle(x0, y0, x1 - 1, y1 - 1)
        with self.lock:
            shape = self.predictor(rgb, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        fb = FaceBox(x0=x0, y0=y0, x1=x1, y1=y1, score=0.0, method="given_box")
        return FaceLandmarks(pts, fb, 0.0, "given_box", 0, "", (w, h))

    # internals ------------------------------------------------------------------------------------
    def _prepare(self, rgb: np.ndarray, max_side: int, upsample_below: int) -> tuple[np.ndarray, float, int]:
        h, w = rgb.shape[:2]
        scale = min(1.0, max_side / max(h, w))
        small = rgb
        if scale < 1.0:
            small = np.asarray(
                Image.fromarray(rgb).resize(
                    (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR
                )
            )
        upsample = 1 if max(small.shape[:2]) < upsample_below else 0
        return small, scale, upsample

    def _shape_at(
        self, rgb: np.ndarray, rect: object, scale: float
    ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Landmarks for a detection rect found on the image scaled by `scale`, in full coordinates."""
        dlib = _import_dlib()
        h, w = rgb.shape[:2]
        inv = 1.0 / scale
        l, t, r, b = rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1  # noqa: E741
        x0, y0, x1, y1 = l * inv, t * inv, r * inv, b * inv
        full = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
        shape = self.predictor(rgb, full)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        cx0 = int(np.clip(round(x0), 0, w - 1))
        cy0 = int(np.clip(round(y0), 0, h - 1))
        cx1 = int(np.clip(round(x1), cx0 + 1, w))
        cy1 = int(np.clip(round(y1), cy0 + 1, h))
        return pts, (cx0, cy0, cx1, cy1)

    def _run_hog(self, rgb: np.ndarray) -> list[FaceLandmarks]:
        small, scale, upsample = self._prepare(rgb, HOG_MAX_SIDE, HOG_UPSAMPLE_BELOW)
        out = []
        with self.lock:
            rects, scores, kinds = self.hog.run(small, upsample, 0.0)
            for rect, score, kind in zip(rects, scores, kinds, strict=True):
                pts, box = self._shape_at(rgb, rect, scale)
                fb = FaceBox(
                    x0=box[0],
                    y0=box[1],
                    x1=box[2],
                    y1=box[3],
                    score=max(0.0, float(score)),
                    method="dlib_hog",
                )
                view = HOG_VIEWS[int(kind)] if 0 <= int(kind) < len(HOG_VIEWS) else str(int(kind))
                out.append(
                    FaceLandmarks(
                        pts, fb, float(score), "dlib_hog", upsample, view, (rgb.shape[1], rgb.shape[0])
                    )
                )
        return out

    def _run_cnn(self, rgb: np.ndarray) -> list[FaceLandmarks]:
        small, scale, upsample = self._prepare(rgb, CNN_MAX_SIDE, CNN_UPSAMPLE_BELOW)
        out = []
        with self.lock:
            dets = self.cnn(small, upsample)
            for det in dets:
                score = float(det.confidence)
                pts, box = self._shape_at(rgb, det.rect, scale)
                fb = FaceBox(
                    x0=box[0], y0=box[1], x1=box[2], y1=box[3], score=max(0.0, score), method="dlib_cnn"
                )
                out.append(
                    FaceLandmarks(pts, fb, score, "dlib_cnn", upsample, "", (rgb.shape[1], rgb.shape[0]))
                )
        return out


_PACKAGED: list[FaceLandmarker | None] = []
_PACKAGED_LOCK = threading.Lock()


def packaged_landmarker() -> FaceLandmarker | None:
    """The landmarker of the `face_recognition_models` package's files, loaded once per process (~2 s, shared
    by every caller); None when that package is not installed."""
    with _PACKAGED_LOCK:
        if not _PACKAGED:
            files = packaged_model_files()
            _PACKAGED.append(FaceLandmarker.load(files) if files is not None else None)
        return _PACKAGED[0]


def _as_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """A C-contiguous uint8 RGB array (what dlib accepts)."""
    if isinstance(image, Image.Image):
        arr = to_rgb_array(image)
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
            raise InputError(
                "image", f"expected an RGB uint8 array (H, W, 3), got {arr.dtype} {arr.shape}", arr.shape
            )
        arr = arr[:, :, :3]
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise InputError(
            "image", f"is too small for face detection ({arr.shape[1]}x{arr.shape[0]})", arr.shape
        )
    return np.ascontiguousarray(arr)
