"""Haar face detection and the head-and-shoulders crop (toonbooth.vision.faces)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from toonbooth.core.errors import BackendUnavailableError, InputError
from toonbooth.vision import faces
from toonbooth.vision.faces import Box, FaceBox, detect_faces, head_and_shoulders_box, largest_face

# The astronaut's face in assets/sample_face.png (512x512), read off the picture: brows to chin,
# ear to ear, roughly x 178..272, y 70..165.
FACE_CENTER = (225.0, 115.0)
FACE_SIDE = (75, 130)


@pytest.fixture(scope="module")
def photo(sample_photo_path: Path) -> Image.Image:
    return Image.open(sample_photo_path).convert("RGB")


def no_face_image(w: int = 320, h: int = 240) -> Image.Image:
    """A gradient with a few flat shapes: nothing a face cascade should fire on."""
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    arr = np.stack([255 * x * np.ones_like(y), 255 * y * np.ones_like(x), 128 + 0 * x * y], axis=2)
    img = Image.fromarray(arr.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.rectangle((20, 30, 120, 90), fill=(250, 250, 40))
    draw.ellipse((180, 60, 290, 200), fill=(30, 60, 200))
    draw.polygon([(40, 200), (140, 120), (160, 220)], fill=(200, 30, 30))
    return img


def test_face_found_where_the_face_is(photo: Image.Image) -> None:
    found = detect_faces(photo)
    assert len(found) >= 1
    face = found[0]
    assert isinstance(face, FaceBox)
    assert face.method == "haar_frontal"
    assert face.score > 0
    cx, cy = face.center
    assert abs(cx - FACE_CENTER[0]) < 20 and abs(cy - FACE_CENTER[1]) < 20, face
    assert FACE_SIDE[0] <= face.width <= FACE_SIDE[1] and FACE_SIDE[0] <= face.height <= FACE_SIDE[1]
    assert largest_face(photo) == face
    # sorted by area, largest first
    assert [f.area for f in found] == sorted((f.area for f in found), reverse=True)


def test_boxes_are_in_full_resolution_coordinates(photo: Image.Image) -> None:
    big = photo.resize((1024, 1024), Image.Resampling.LANCZOS)  # detected on a 400 px copy
    face = largest_face(big)
    assert face is not None
    cx, cy = face.center
    assert abs(cx - 2 * FACE_CENTER[0]) < 40 and abs(cy - 2 * FACE_CENTER[1]) < 40
    assert 2 * FACE_SIDE[0] <= face.width <= 2 * FACE_SIDE[1]


def test_no_face_in_synthetic_image() -> None:
    img = no_face_image()
    assert detect_faces(img) == []
    assert largest_face(img) is None


def test_detect_rejects_bad_min_size() -> None:
    with pytest.raises(InputError) as exc:
        detect_faces(no_face_image(), min_size_frac=0.0)
    assert exc.value.field == "min_size_frac"


def test_detector_is_loaded_once() -> None:
    assert faces._detector() is faces._detector()


def test_missing_cascades_say_which_opencv_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoCascades:  # what `import cv2` looks like on OpenCV 5
        __version__ = "5.0.0"

    monkeypatch.setattr(faces, "cv2", NoCascades())
    with pytest.raises(BackendUnavailableError, match=r"opencv-python-headless<5"):
        faces._detector.__wrapped__()


def test_head_and_shoulders_box_frames_the_face(photo: Image.Image) -> None:
    face = largest_face(photo)
    assert face is not None
    box = head_and_shoulders_box(face, photo.size)
    assert box.width == box.height  # square by default
    assert 2.0 * face.width <= box.width <= 2.4 * face.width
    # contains the face, with room for hair above and shoulders below
    assert box.x0 <= face.x0 and box.x1 >= face.x1 and box.y0 < face.y0 and box.y1 > face.y1
    assert face.center[1] - box.y0 < box.y1 - face.center[1]  # face in the upper part
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= photo.width and box.y1 <= photo.height
    assert abs(box.center[0] - face.center[0]) <= 1


def test_head_and_shoulders_box_clamps_and_keeps_aspect() -> None:
    face = Box(x0=0, y0=0, x1=60, y1=60)  # face in the top-left corner of a small image
    box = head_and_shoulders_box(face, (100, 80), aspect=1.0)
    assert (box.x0, box.y0) == (0, 0)
    assert box.width == box.height == 80  # shrunk to the image, still square
    tall = head_and_shoulders_box(Box(x0=200, y0=100, x1=260, y1=160), (640, 480), aspect=0.75)
    assert abs(tall.width / tall.height - 0.75) < 0.01
    assert tall.y1 <= 480 and tall.x1 <= 640


@pytest.mark.parametrize("aspect", [0.0, -1.0, 50.0])
def test_head_and_shoulders_box_rejects_bad_aspect(aspect: float) -> None:
    with pytest.raises(InputError) as exc:
        head_and_shoulders_box(Box(x0=10, y0=10, x1=50, y1=50), (100, 100), aspect=aspect)
    assert exc.value.field == "aspect"


def test_head_and_shoulders_box_rejects_face_outside_image() -> None:
    with pytest.raises(InputError) as exc:
        head_and_shoulders_box(Box(x0=90, y0=10, x1=150, y1=50), (100, 100))
    assert exc.value.field == "face"
