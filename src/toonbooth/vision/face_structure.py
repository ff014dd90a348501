"""The Stable-Makeup "structure" image: 68 landmarks drawn as coloured contours on black.

Follows `conditioning_from_landmarks` / `get_patch` in Xiaojiu-z/Stable-Makeup `spiga_draw.py` (Y. Zhang et al.,
"Stable-Makeup: When Real-World Makeup Transfer Meets Diffusion Model", arXiv:2403.07764); the structure
ControlNet was trained on these drawings. The reference renders with matplotlib on a black `size x size`
canvas at 72 dpi with `lw=4` (4 px); parts, in drawing order:

| points | part | colour | style |
|---|---|---|---|
| 0-16 | jaw | lime #00FF00 | open polyline |
| 17-21, 22-26 | brows | yellow #FFFF00 | open |
| 27-30, 31-35 | nose bridge, nose bottom | orange #FFA500 | open |
| 36-41, 42-47 | eyes | magenta #FF00FF | closed and filled |
| 48-59 | outer lips | cyan #00FFFF | closed and filled |
| 60-67 | inner lips | blue #0000FF | closed and filled, over the outer lips |

Each closed part is filled first and then stroked, part by part in this order (matplotlib draws a patch's
face before its edge). The landmarks are in the canvas's pixel coordinates (pixel centres at integers, as
matplotlib's `imshow` of the black canvas sets them up); the reference resizes the face to 512 x 512 before
finding landmarks. No face -> an all-black canvas.

Rendered here with OpenCV (anti-aliased 4 px polylines at 1/16 px precision, `fillPoly`), not matplotlib's
Agg rasteriser: the colours, widths, order and geometry are the reference's; edge anti-aliasing and line
joins (matplotlib: miter joins, butt caps; OpenCV: round) differ by a pixel at the contours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from toonbooth.core.errors import InputError
from toonbooth.vision.landmarks import FaceLandmarks

STRUCTURE_SIZE = 512
LINE_WIDTH = 4
_SHIFT = 4  # fixed-point bits for sub-pixel coordinates


@dataclass(frozen=True)
class StructurePart:
    name: str
    start: int
    stop: int
    color: tuple[int, int, int]
    """RGB."""
    closed: bool


LIME = (0, 255, 0)
YELLOW = (255, 255, 0)
ORANGE = (255, 165, 0)
MAGENTA = (255, 0, 255)
CYAN = (0, 255, 255)
BLUE = (0, 0, 255)

STRUCTURE_PARTS: tuple[StructurePart, ...] = (
    StructurePart("jaw", 0, 17, LIME, False),
    StructurePart("brow_left", 17, 22, YELLOW, False),
    StructurePart("brow_right", 22, 27, YELLOW, False),
    StructurePart("nose_bridge", 27, 31, ORANGE, False),
    StructurePart("nose_bottom", 31, 36, ORANGE, False),
    StructurePart("eye_left", 36, 42, MAGENTA, True),
    StructurePart("eye_right", 42, 48, MAGENTA, True),
    StructurePart("lips_outer", 48, 60, CYAN, True),
    StructurePart("lips_inner", 60, 68, BLUE, True),
)
"""The parts in drawing order (later parts paint over earlier ones)."""


def draw_structure(
    faces: FaceLandmarks | np.ndarray | Sequence[FaceLandmarks | np.ndarray] | None,
    size: int = STRUCTURE_SIZE,
    *,
    image_size: tuple[int, int] | None = None,
    line_width: int = LINE_WIDTH,
) -> Image.Image:
    """The structure drawing of one or more faces on a black `size x size` RGB canvas.

    `faces`: 68-point landmarks (a `FaceLandmarks`, a (68, 2) array, or a list of them; None or an empty
    list gives a black canvas). `image_size`: (width, height) of the image the points refer to, when that is
    not the canvas (the points are rescaled per axis, as if the image had been resized to the canvas).
    """
    if not (16 <= size <= 4096):
        raise InputError("size", f"must be in [16, 4096], got {size!r}", size)
    if not (1 <= line_width <= 64):
        raise InputError("line_width", f"must be in [1, 64], got {line_width!r}", line_width)
    canvas = np.zeros((size, size, 3), np.uint8)
    for pts in _face_list(faces):
        if image_size is not None:
            w, h = image_size
            if w < 1 or h < 1:
                raise InputError("image_size", f"must be positive, got {image_size!r}", image_size)
            pts = (pts + 0.5) * np.array([size / w, size / h]) - 0.5
        _draw_one(canvas, pts, line_width)
    return Image.fromarray(canvas)


def _face_list(faces: object) -> list[np.ndarray]:
    if faces is None:
        return []
    if isinstance(faces, FaceLandmarks):
        return [faces.points]
    if isinstance(faces, np.ndarray) and faces.ndim == 2:
        return [_check(faces)]
    return [_check(f.points if isinstance(f, FaceLandmarks) else np.asarray(f)) for f in faces]  # type: ignore[union-attr]


def _check(pts: np.ndarray) -> np.ndarray:
    arr = np.asarray(pts, dtype=np.float64)
    if arr.shape != (68, 2) or not np.all(np.isfinite(arr)):
        raise InputError(
            "landmarks", f"expected 68 finite (x, y) points per face, got shape {arr.shape}", arr.shape
        )
    return arr


def _draw_one(canvas: np.ndarray, pts: np.ndarray, line_width: int) -> None:
    fixed = np.rint(pts * (1 << _SHIFT)).astype(np.int32)
    for part in STRUCTURE_PARTS:
        poly = fixed[part.start : part.stop].reshape(-1, 1, 2)
        color = tuple(int(c) for c in part.color)  # the canvas is RGB
        if part.closed:
            cv2.fillPoly(canvas, [poly], color, lineType=cv2.LINE_AA, shift=_SHIFT)
        cv2.polylines(
            canvas, [poly], part.closed, color, thickness=line_width, lineType=cv2.LINE_AA, shift=_SHIFT
        )
