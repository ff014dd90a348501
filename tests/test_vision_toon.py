"""Canny control images and the classic toon filter / avatar (toonbooth.vision.edges, toonbooth.vision.toon)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from toonbooth.core.errors import InputError
from toonbooth.vision.edges import canny_control_image
from toonbooth.vision.faces import head_and_shoulders_box
from toonbooth.vision.toon import MIN_AVATAR_SIDE, NO_FACE_WARNING, classic_avatar, toonify


@pytest.fixture(scope="module")
def photo(sample_photo_path: Path) -> Image.Image:
    return Image.open(sample_photo_path).convert("RGB")


@pytest.fixture(scope="module")
def small(photo: Image.Image) -> Image.Image:
    return photo.resize((96, 80), Image.Resampling.LANCZOS)


def no_face_image(w: int = 160, h: int = 120) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, axis=0)
    arr = np.stack([x, x[:, ::-1], np.full_like(x, 90)], axis=2).astype(np.uint8)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    draw.rectangle((10, 10, 60, 50), fill=(240, 240, 30))
    draw.ellipse((90, 40, 150, 110), fill=(20, 40, 200))
    return img


# --- canny ----------------------------------------------------------------------------------------


def test_canny_is_binary_rgb_same_size(photo: Image.Image) -> None:
    out = canny_control_image(photo, 70, 230)
    assert out.mode == "RGB" and out.size == photo.size
    arr = np.asarray(out)
    assert set(np.unique(arr).tolist()) == {0, 255}
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    # the ControlNet-extension semantics: Canny straight on the RGB uint8 array
    assert np.array_equal(arr[..., 0], cv2.Canny(np.asarray(photo), 70, 230))
    # lower thresholds find more edges
    assert (np.asarray(canny_control_image(photo, 20, 60)) > 0).sum() > (arr > 0).sum()


@pytest.mark.parametrize(
    ("low", "high", "field"),
    [(-1, 200, "canny_low"), (10, 256, "canny_high"), (200, 100, "canny_low"), (1.5, 100, "canny_low")],
)
def test_canny_rejects_bad_thresholds(small: Image.Image, low: object, high: object, field: str) -> None:
    with pytest.raises(InputError) as exc:
        canny_control_image(small, low, high)  # type: ignore[arg-type]
    assert exc.value.field == field
    assert str(low if field == "canny_low" else high) in str(exc.value)


# --- toonify --------------------------------------------------------------------------------------


def test_toonify_quantizes_and_changes_the_image(photo: Image.Image) -> None:
    src = photo.resize((160, 160), Image.Resampling.LANCZOS)
    out = toonify(src, upscale=1.0)
    a, b = np.asarray(src).astype(np.int16), np.asarray(out).astype(np.int16)
    assert out.size == src.size and out.mode == "RGB"
    assert np.abs(a - b).mean() > 5.0
    n_in = len(np.unique(a.reshape(-1, 3), axis=0))
    n_out = len(np.unique(b.reshape(-1, 3), axis=0))
    assert n_out < n_in
    # flat palette (no shading, no lines): at most `colors` colours before the final resize
    flat = np.asarray(toonify(src, upscale=1.0, colors=6, shade=0.0, line_strength=0.0))
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) < n_in // 4
    # it still looks like the photo: the mean colour barely moves
    assert np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).max() < 40


def test_toonify_is_deterministic(small: Image.Image) -> None:
    assert toonify(small).tobytes() == toonify(small).tobytes()


@pytest.mark.parametrize(("upscale", "size"), [(1.0, (96, 80)), (1.5, (144, 120)), (2.0, (192, 160))])
def test_toonify_size(small: Image.Image, upscale: float, size: tuple[int, int]) -> None:
    assert toonify(small, upscale=upscale).size == size


def test_toonify_lines_darken(photo: Image.Image) -> None:
    # 512 px is the working size: no resize, so lines can only darken pixels
    without = np.asarray(toonify(photo, upscale=1.0, line_strength=0.0, smooth=1)).astype(np.float32)
    with_lines = np.asarray(toonify(photo, upscale=1.0, line_strength=1.0, smooth=1)).astype(np.float32)
    assert (with_lines <= without + 1).all()
    darker = (without - with_lines).max(axis=2) > 60
    assert 0.01 < darker.mean() < 0.25  # clear lines, not a smear


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"upscale": 0.5}, "upscale"),
        ({"upscale": 5.0}, "upscale"),
        ({"colors": 1}, "colors"),
        ({"colors": 8.5}, "colors"),
        ({"line_strength": 3.0}, "line_strength"),
        ({"smooth": -1}, "smooth"),
        ({"shade": 1.5}, "shade"),
    ],
)
def test_toonify_rejects_bad_args(small: Image.Image, kwargs: dict, field: str) -> None:
    with pytest.raises(InputError) as exc:
        toonify(small, **kwargs)
    assert exc.value.field == field


# --- classic avatar -------------------------------------------------------------------------------


def test_classic_avatar_crops_the_face(photo: Image.Image) -> None:
    avatar, face, warnings = classic_avatar(photo, upscale=1.5)
    assert face is not None and warnings == []
    box = head_and_shoulders_box(face, photo.size, aspect=1.0)
    side = max(round(box.width * 1.5), MIN_AVATAR_SIDE)  # 1.5x the crop, at least 512 px to share
    assert avatar.size == (side, side)
    assert avatar.width == avatar.height
    # the avatar is the crop, cartooned: its colours follow the crop's
    crop = np.asarray(photo.crop(box.as_tuple()).resize(avatar.size)).astype(np.float32)
    out = np.asarray(avatar).astype(np.float32)
    assert np.corrcoef(crop.mean(axis=2).ravel(), out.mean(axis=2).ravel())[0, 1] > 0.8


def test_classic_avatar_out_size(photo: Image.Image) -> None:
    avatar, face, _ = classic_avatar(photo, out_size=256)
    assert face is not None and avatar.size == (256, 256)


def test_classic_avatar_without_face_uses_whole_photo() -> None:
    img = no_face_image()
    avatar, face, warnings = classic_avatar(img, upscale=1.5)
    assert face is None
    assert warnings == [NO_FACE_WARNING]
    assert avatar.size == (512, 384)  # a small photo (160x120): enlarged to 512 px on its long side


@pytest.mark.parametrize(("kwargs", "field"), [({"upscale": 0.9}, "upscale"), ({"out_size": 10}, "out_size")])
def test_classic_avatar_rejects_bad_args(small: Image.Image, kwargs: dict, field: str) -> None:
    with pytest.raises(InputError) as exc:
        classic_avatar(small, **kwargs)
    assert exc.value.field == field


def test_classic_avatar_calms_texture_and_background(photo: Image.Image) -> None:
    """What people share: hair drawn as a shaded mass with few strokes (no scratch lines), a background with no
    lines and little variation, and the face's lines (eyes, mouth) kept."""
    avatar, face, _ = classic_avatar(photo)
    arr = np.asarray(avatar).astype(np.float32)
    side = arr.shape[0]
    dark = arr.mean(axis=2) < 60  # line pixels (and the dark suit)
    corner = (slice(0, side // 8), slice(0, side // 8))  # background, top-left
    assert dark[corner].mean() == 0.0 and arr[corner].std(axis=(0, 1)).max() < 12.0
    box = head_and_shoulders_box(face, photo.size, aspect=1.0)
    s = side / box.width
    fx0, fy0, fx1, fy1 = ((face.x0 - box.x0) * s, (face.y0 - box.y0) * s, (face.x1 - box.x0) * s, (face.y1 - box.y0) * s)
    eyes = (slice(int(fy0 + 0.25 * (fy1 - fy0)), int(fy0 + 0.5 * (fy1 - fy0))), slice(int(fx0), int(fx1)))
    assert dark[eyes].mean() > 0.01  # eye lines are there
    hair = (slice(int(max(0, fy0 - 0.45 * (fy1 - fy0))), int(fy0)), slice(int(fx0), int(fx1)))
    before = classic_avatar_lines_without_texture_care(photo)
    assert dark[hair].mean() < 0.6 * before, (dark[hair].mean(), before)


def classic_avatar_lines_without_texture_care(photo: Image.Image) -> float:
    """Share of line pixels in the hair band when the whole crop is treated as detail (no texture calming)."""
    import toonbooth.vision.toon as toon

    face = toon.largest_face(photo)
    box = head_and_shoulders_box(face, photo.size, aspect=1.0)
    crop = photo.crop(box.as_tuple())
    side = max(round(box.width * 1.5), MIN_AVATAR_SIDE)
    rgb = np.asarray(crop.resize((side, side), Image.Resampling.LANCZOS))
    plain = toon._toon_array(rgb, (side, side), toon.DEFAULT_COLORS, toon.DEFAULT_LINE_STRENGTH, toon.DEFAULT_SMOOTH,
                             toon.DEFAULT_SHADE, None, (0.0, 0.0, 1.0, 1.0))  # fmt: skip
    arr = np.asarray(plain).astype(np.float32).mean(axis=2) < 60
    s = side / box.width
    fx0, fy0, fx1, fy1 = ((face.x0 - box.x0) * s, (face.y0 - box.y0) * s, (face.x1 - box.x0) * s, (face.y1 - box.y0) * s)
    return float(arr[int(max(0, fy0 - 0.45 * (fy1 - fy0))) : int(fy0), int(fx0) : int(fx1)].mean())
