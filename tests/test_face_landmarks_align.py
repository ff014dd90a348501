"""The dlib landmark stack (vision.landmarks), FFHQ alignment (vision.ffhq_align) and the structure drawing
(vision.face_structure), on the shared face photo."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from toonbooth.core.errors import InputError, ModelNotFoundError
from toonbooth.vision.face_structure import (
    BLUE,
    CYAN,
    LIME,
    MAGENTA,
    ORANGE,
    STRUCTURE_PARTS,
    YELLOW,
    draw_structure,
)
from toonbooth.vision.faces import detect_faces
from toonbooth.vision.ffhq_align import align_face, expected_aligned_points, ffhq_quad
from toonbooth.vision.landmarks import (
    COMMERCIAL_USE_OK,
    LICENCES,
    PREDICTOR_68_FILE,
    FaceLandmarker,
    FaceLandmarks,
    LandmarkModelFiles,
    packaged_model_files,
)

# The astronaut's face in assets/sample_face.png (512 x 512), read off the picture: eyes near y 100-105,
# image-left eye x ~203, image-right eye x ~246, mouth centre ~(224, 140).
EYE_LEFT = (203.0, 102.0)
EYE_RIGHT = (246.0, 104.0)
MOUTH = (224.0, 140.0)


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    if packaged_model_files() is None:
        pytest.skip("face_recognition_models is not installed")
    return FaceLandmarker.from_package()


@pytest.fixture(scope="module")
def photo(sample_photo_path: Path) -> Image.Image:
    return Image.open(sample_photo_path).convert("RGB")


@pytest.fixture(scope="module")
def face(landmarker: FaceLandmarker, photo: Image.Image) -> FaceLandmarks:
    found = landmarker.main_face(photo)
    assert found is not None
    return found


def _near(p: np.ndarray, q: tuple[float, float], tol: float) -> bool:
    return float(np.hypot(*(np.asarray(p) - np.asarray(q)))) <= tol


# ---------------------------------------------------------------------------------------------------
# landmarks
# ---------------------------------------------------------------------------------------------------


def test_model_files_found_without_importing_the_package() -> None:
    import sys

    files = packaged_model_files()
    if files is None:
        pytest.skip("face_recognition_models is not installed")
    assert files.predictor_68.name == PREDICTOR_68_FILE and files.predictor_68.is_file()
    assert files.cnn_detector is not None and files.cnn_detector.is_file()
    assert (
        "face_recognition_models" not in sys.modules
    )  # found by find_spec only (its __init__ needs pkg_resources)


def test_licences_say_68_point_is_non_commercial() -> None:
    assert COMMERCIAL_USE_OK[PREDICTOR_68_FILE] is False
    assert "NON-COMMERCIAL" in LICENCES[PREDICTOR_68_FILE]
    assert COMMERCIAL_USE_OK["shape_predictor_5_face_landmarks.dat"] is True


def test_landmarks_on_the_shared_photo(face: FaceLandmarks) -> None:
    assert (
        face.detector == "dlib_hog" and face.view == "front" and face.upsample == 1
    )  # 512 px: upsampled once
    assert face.points.shape == (68, 2) and face.image_size == (512, 512)
    assert _near(face.eye_left_center, EYE_LEFT, 6) and _near(face.eye_right_center, EYE_RIGHT, 6)
    assert _near(face.mouth_center, MOUTH, 6)
    # named groups are the 300-W index ranges, geometry is plausible
    assert face.jaw.shape == (17, 2) and face.brows.shape == (10, 2) and face.nose.shape == (9, 2)
    assert face.eyes.shape == (12, 2) and face.mouth.shape == (20, 2)
    assert (
        face.brows[:, 1].mean() < face.eyes[:, 1].mean() < face.nose[-5:, 1].mean() < face.mouth[:, 1].mean()
    )
    assert face.jaw[8, 1] > face.mouth[:, 1].max()  # chin below the mouth
    x0, y0, x1, y1 = face.box.as_tuple()
    assert x0 < face.eye_left_center[0] < face.eye_right_center[0] < x1 and y0 < face.eye_left_center[1] < y1


def test_landmarks_in_a_given_box_agree(
    landmarker: FaceLandmarker, photo: Image.Image, face: FaceLandmarks
) -> None:
    again = landmarker.landmarks_in_box(photo, face.box.as_tuple())
    assert again.detector == "given_box"
    assert np.abs(again.points - face.points).max() <= 1.0
    with pytest.raises(InputError, match="box"):
        landmarker.landmarks_in_box(photo, (500, 500, 600, 600))


def _rotate(photo: Image.Image, degrees: float) -> Image.Image:
    arr = np.asarray(photo)
    m = cv2.getRotationMatrix2D((224.0, 115.0), degrees, 1.0)
    return Image.fromarray(
        cv2.warpAffine(arr, m, (arr.shape[1], arr.shape[0]), borderMode=cv2.BORDER_REFLECT)
    )


def _yaw_squeeze(photo: Image.Image, k: float, cx: float = 224.0) -> Image.Image:
    """A crude three-quarter view: the image-right half of the face squeezed by k, the left half stretched."""
    arr = np.asarray(photo)
    h, w = arr.shape[:2]
    xs = np.arange(w, dtype=np.float32)
    src = np.where(xs < cx, cx - (cx - xs) / (2.0 - k), cx + (xs - cx) / k).astype(np.float32)
    mapx = np.tile(src, (h, 1))
    mapy = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    return Image.fromarray(cv2.remap(arr, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))


def test_rolled_face_haar_misses_landmarker_finds(landmarker: FaceLandmarker, photo: Image.Image) -> None:
    rolled = _rotate(photo, 35.0)  # head tilted 35 degrees
    assert detect_faces(rolled, fallback="none") == []  # the frontal/profile Haar cascades find nothing
    assert detect_faces(rolled)[0].method == "dlib_hog"  # ... the default falls back to dlib's HOG
    face = landmarker.main_face(rolled)
    assert face is not None and face.detector == "dlib_hog" and face.view.startswith("front_rotated")
    # the eyes come out rotated by ~35 degrees, where the rotation put them
    m = cv2.getRotationMatrix2D((224.0, 115.0), 35.0, 1.0)
    want_left = m[:, :2] @ np.array(EYE_LEFT) + m[:, 2]
    assert _near(face.eye_left_center, tuple(want_left), 8)


def test_three_quarter_crop_needs_the_cnn(landmarker: FaceLandmarker, photo: Image.Image) -> None:
    # a squeezed (pseudo three-quarter) and tilted face, cropped to 256 px: HOG finds nothing, the CNN does
    img = _rotate(_yaw_squeeze(photo, 0.5), 20.0).crop((96, 0, 352, 256))
    assert landmarker.detect(img, detector="hog") == []
    face = landmarker.main_face(img)
    assert face is not None and face.detector == "dlib_cnn" and face.score > 0
    assert (
        face.eye_left_center[0] < face.eye_right_center[0] and face.mouth_center[1] > face.eye_left_center[1]
    )
    x0, y0, x1, y1 = face.box.as_tuple()
    assert x0 < face.mouth_center[0] < x1 and y0 < face.mouth_center[1] < y1


def test_no_face_and_bad_inputs(landmarker: FaceLandmarker, tmp_path: Path) -> None:
    flat = Image.new("RGB", (96, 96), (128, 128, 128))
    assert landmarker.detect(flat, detector="hog") == []
    with pytest.raises(InputError, match="detector"):
        landmarker.detect(flat, detector="haar")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="too small"):
        landmarker.detect(Image.new("RGB", (4, 4)))
    with pytest.raises(ModelNotFoundError):
        FaceLandmarker.load(LandmarkModelFiles(predictor_68=tmp_path / "missing.dat"))


# ---------------------------------------------------------------------------------------------------
# FFHQ alignment
# ---------------------------------------------------------------------------------------------------


def test_quad_of_a_level_face_is_the_documented_square() -> None:
    pts = np.zeros((68, 2))
    pts[36:42] = (100.0, 100.0)
    pts[42:48] = (140.0, 100.0)  # eye_to_eye = (40, 0)
    pts[48] = (110.0, 150.0)
    pts[54] = (130.0, 150.0)  # eye_to_mouth = (0, 50)
    q = ffhq_quad(pts)
    k = max(2.0 * 40.0, 1.8 * 50.0)  # 90
    c = np.array([120.0, 100.0 + 5.0])
    assert np.allclose(q.center, c)
    assert q.qsize == pytest.approx(2 * k)
    assert np.allclose(q.quad, [c + (-k, -k), c + (-k, k), c + (k, k), c + (k, -k)])


def test_eyes_land_where_the_recipe_puts_them(
    landmarker: FaceLandmarker, photo: Image.Image, face: FaceLandmarks
) -> None:
    aligned = align_face(photo, face, output_size=256)
    assert aligned.image.size == (256, 256)
    want = expected_aligned_points(face, 256)
    # the transform's own mapping agrees with the quad geometry
    assert np.allclose(aligned.transform.to_aligned(face.eye_left_center), want["eye_left"], atol=1e-6)
    # and the pixels agree: landmarks found again on the aligned image sit there (within a few px)
    again = landmarker.main_face(aligned.image)
    assert again is not None
    assert _near(again.eye_left_center, tuple(want["eye_left"]), 3.0)
    assert _near(again.eye_right_center, tuple(want["eye_right"]), 3.0)
    assert _near(again.mouth_center, tuple(want["mouth"]), 3.0)
    # FFHQ puts the eyes level, ~1/4 of the width apart, a little above the middle
    assert abs(want["eye_left"][1] - want["eye_right"][1]) < 1.5
    assert 100 < want["eye_left"][1] < 128


def test_image_warp_matches_the_transform_subpixel(face: FaceLandmarks) -> None:
    # a white disc drawn at the left eye (on black) must come out at transform.to_aligned(eye)
    e = face.eye_left_center
    canvas = np.zeros((512, 512, 3), np.uint8)
    cv2.circle(
        canvas, (int(round(e[0] * 16)), int(round(e[1] * 16))), 48, (255, 255, 255), -1, cv2.LINE_AA, 4
    )
    aligned = align_face(canvas, face, output_size=256)
    g = np.asarray(aligned.image)[:, :, 0].astype(np.float64)
    ys, xs = np.mgrid[0:256, 0:256]
    centroid = np.array([(g * xs).sum() / g.sum(), (g * ys).sum() / g.sum()])
    assert np.abs(centroid - aligned.transform.to_aligned(e)).max() < 0.2


def test_transform_inverts_and_resizes(photo: Image.Image, face: FaceLandmarks) -> None:
    t = align_face(photo, face, output_size=256, transform_size=256).transform
    pts = np.random.default_rng(0).uniform(0, 512, size=(50, 2))
    assert np.allclose(t.to_original(t.to_aligned(pts)), pts, atol=1e-9)
    assert np.allclose(t.to_aligned(t.to_original(pts)), pts, atol=1e-9)
    big = t.resized(1024)
    # the centre of aligned pixel (u, v) at 256 is the centre of the 4x4 block at 1024
    assert np.allclose(big.to_original([[4 * 10 + 1.5, 4 * 20 + 1.5]]), t.to_original([[10, 20]]), atol=1e-9)
    assert abs(t.angle_degrees) < 5 and t.scale == pytest.approx(big.scale * 4)


def test_paste_back_restores_the_photo_outside_the_face(photo: Image.Image, face: FaceLandmarks) -> None:
    aligned = align_face(photo, face, output_size=256)
    back = aligned.transform.paste_back(aligned.image, photo)
    a, b = np.asarray(photo), np.asarray(back)
    alpha = aligned.transform.warp_to_photo(np.ones((256, 256), np.float32))
    outside = alpha == 0
    assert outside.mean() > 0.5 and np.array_equal(a[outside], b[outside])  # byte-identical outside
    inner = aligned.transform.warp_to_photo(np.pad(np.ones((200, 200), np.float32), 28)) > 0.999
    assert np.abs(a[inner].astype(int) - b[inner].astype(int)).mean() < 6  # only resampling error inside
    # a constant aligned image shows up inside, feathered towards the edge
    red = Image.new("RGB", (256, 256), (255, 0, 0))
    painted = np.asarray(aligned.transform.paste_back(red, photo))
    cx, cy = aligned.transform.to_original([127.5, 127.5]).round().astype(int)
    assert tuple(painted[cy, cx]) == (255, 0, 0)
    assert np.array_equal(painted[outside], a[outside])


def test_alignment_pads_when_the_quad_leaves_the_photo(
    landmarker: FaceLandmarker, photo: Image.Image
) -> None:
    crop = photo.crop((150, 40, 300, 200))  # the face fills this crop: the quad leaves it
    face = landmarker.main_face(crop)
    assert face is not None
    aligned = align_face(crop, face, output_size=128)
    assert aligned.padded and aligned.image.size == (128, 128)
    corner = np.asarray(aligned.image)[:4, :4].astype(int)
    assert corner.std() < 40  # the padded corner is blurred / median-filled, not a hard mirror seam
    with pytest.raises(InputError, match="output_size"):
        align_face(crop, face, output_size=4)


# ---------------------------------------------------------------------------------------------------
# structure drawing
# ---------------------------------------------------------------------------------------------------


def _designed_points() -> np.ndarray:
    """68 points laid out so each part is far from the others on a 256 canvas."""
    p = np.zeros((68, 2))
    p[0:17] = np.stack([np.linspace(20, 236, 17), np.full(17, 240.0)], 1)  # jaw: a horizontal line at y 240
    p[17:22] = np.stack([np.linspace(40, 100, 5), np.full(5, 40.0)], 1)
    p[22:27] = np.stack([np.linspace(156, 216, 5), np.full(5, 40.0)], 1)
    p[27:31] = np.stack([np.full(4, 128.0), np.linspace(60, 120, 4)], 1)  # nose bridge, vertical
    p[31:36] = np.stack([np.linspace(108, 148, 5), np.full(5, 135.0)], 1)
    ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    p[36:42] = np.stack([70 + 20 * np.cos(ang), 80 + 10 * np.sin(ang)], 1)
    p[42:48] = np.stack([186 + 20 * np.cos(ang), 80 + 10 * np.sin(ang)], 1)
    a12 = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    p[48:60] = np.stack([128 + 50 * np.cos(a12), 190 + 25 * np.sin(a12)], 1)
    a8 = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    p[60:68] = np.stack([128 + 25 * np.cos(a8), 190 + 8 * np.sin(a8)], 1)
    return p


def test_structure_colours_at_known_positions() -> None:
    img = np.asarray(draw_structure(_designed_points(), size=256))
    assert img.shape == (256, 256, 3)
    assert tuple(img[240, 60]) == LIME  # on the jaw line
    assert tuple(img[242, 60]) == LIME  # 4 px wide: still on it 2 px off the centre line
    assert tuple(img[40, 70]) == YELLOW and tuple(img[40, 186]) == YELLOW
    assert tuple(img[90, 128]) == ORANGE and tuple(img[135, 128]) == ORANGE
    assert tuple(img[80, 70]) == MAGENTA and tuple(img[80, 186]) == MAGENTA  # eyes are filled
    assert tuple(img[190, 90]) == CYAN  # outer lip fill between the contours
    assert tuple(img[190, 128]) == BLUE  # inner lips drawn last, over the outer fill
    assert tuple(img[5, 5]) == (0, 0, 0) and tuple(img[160, 40]) == (0, 0, 0)  # black elsewhere
    colours = {tuple(int(v) for v in c) for c in img.reshape(-1, 3)}
    assert {LIME, YELLOW, ORANGE, MAGENTA, CYAN, BLUE, (0, 0, 0)} <= colours
    assert [p.name for p in STRUCTURE_PARTS][-2:] == ["lips_outer", "lips_inner"]


def test_structure_rescales_and_blank_without_face() -> None:
    pts = _designed_points()
    small = np.asarray(draw_structure((pts + 0.5) / 2 - 0.5, size=256, image_size=(128, 128)))
    assert tuple(small[80, 70]) == MAGENTA and tuple(small[240, 60]) == LIME
    assert not np.asarray(draw_structure(None, size=64)).any()
    assert not np.asarray(draw_structure([], size=64)).any()
    with pytest.raises(InputError, match="landmarks"):
        draw_structure(np.zeros((5, 2)), size=64)


def test_structure_of_the_photo_face(face: FaceLandmarks) -> None:
    img = np.asarray(draw_structure(face, size=512, image_size=(512, 512)))
    ex, ey = np.rint(face.eye_left_center).astype(int)
    mx, my = np.rint(face.points[62]).astype(int)  # inner upper lip
    assert tuple(img[ey, ex]) == MAGENTA
    assert tuple(img[my, mx]) in (BLUE, CYAN)
