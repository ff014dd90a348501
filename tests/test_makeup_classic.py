"""Face regions (vision.face_regions) and the classic per-region Lab makeup transfer (vision.makeup_classic)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFilter

from toonbooth.core.errors import InputError
from toonbooth.vision.face_regions import (
    REGION_NAMES,
    FaceRegions,
    feather_mask,
    regions_from_landmarks,
    regions_from_parsing,
)
from toonbooth.vision.landmarks import FaceLandmarker, FaceLandmarks, packaged_model_files
from toonbooth.vision.makeup_classic import (
    DEFAULT_INTENSITY,
    MAKEUP_REGIONS,
    STD_RATIO_LIMITS,
    LabStats,
    align_reference,
    lab_stats,
    reference_quality,
    resolve_intensity,
    rgb_to_lab,
    similarity_transform,
    transfer_lab,
    transfer_makeup,
)

# ---------------------------------------------------------------------------------------------------
# designed images
# ---------------------------------------------------------------------------------------------------

H = W = 64


def _regions(masks: dict[str, np.ndarray], feather: float = 0.0) -> FaceRegions:
    full = {name: np.zeros((H, W), bool) for name in REGION_NAMES}
    full.update(masks)
    return FaceRegions(full, "landmarks", np.zeros((H, W), bool), feather, {n: True for n in REGION_NAMES})


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _noise_image(mean: tuple[int, int, int], amp: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.array(mean) + rng.integers(-amp, amp + 1, size=(H, W, 3)), 0, 255).astype(np.uint8)


@pytest.fixture()
def designed() -> tuple[np.ndarray, FaceRegions, np.ndarray, FaceRegions]:
    """Source: mid-grey-pink noise; reference: a reddish, lower-contrast 'lipstick' region elsewhere."""
    src = _noise_image((170, 120, 110), 30, seed=1)
    ref = _noise_image((120, 120, 120), 5, seed=2)
    ref_lips = _box(40, 56, 8, 40)
    ref[ref_lips] = _noise_image((175, 55, 80), 12, seed=3)[ref_lips]
    src_regions = _regions({"lips": _box(20, 36, 20, 52), "skin": _box(4, 16, 4, 60)})
    ref_regions = _regions({"lips": ref_lips, "skin": _box(2, 20, 2, 62)})
    return src, src_regions, ref, ref_regions


# ---------------------------------------------------------------------------------------------------
# transfer
# ---------------------------------------------------------------------------------------------------


def test_transfer_formula_direction() -> None:
    x = np.array([[10.0, 0.0, 0.0], [30.0, 20.0, -20.0]], np.float32)
    src = lab_stats(x, np.ones(2, bool))
    ref = LabStats(np.array([50.0, 5.0, 5.0]), np.array([4.0, 2.0, 3.0]), 2)
    out = transfer_lab(x, src, ref)
    # (x - mu_src) * sigma_ref / sigma_src + mu_ref: the result carries the reference's statistics
    assert np.allclose(out.mean(0), ref.mean, atol=1e-5) and np.allclose(out.std(0), ref.std, atol=1e-5)
    # the swapped ratio (the common mistake) would give sigma_src^2 / sigma_ref instead
    assert not np.allclose(((x - src.mean) * src.std / ref.std + ref.mean).std(0), ref.std)
    # a flat source region cannot blow up: the ratio is clipped to STD_RATIO_LIMITS
    flat = LabStats(src.mean, np.array([1e-9, 10.0, 10.0]), 2)
    assert transfer_lab(x, flat, ref)[:, 0].std() == pytest.approx(
        10.0 * STD_RATIO_LIMITS[1]
    )  # x's L spread is 10


def test_region_moves_to_reference_stats_at_intensity_1(designed) -> None:
    src, src_regions, ref, ref_regions = designed
    only_lips = {name: 0.0 for name in MAKEUP_REGIONS} | {"lips": 1.0}
    res = transfer_makeup(src, src_regions, ref, ref_regions, only_lips)
    out = np.asarray(res.image)
    lips = src_regions.masks["lips"]
    got = lab_stats(rgb_to_lab(out), lips)
    want = lab_stats(rgb_to_lab(ref), ref_regions.masks["lips"])
    before = lab_stats(rgb_to_lab(src), lips)
    assert (
        np.abs(before.mean - want.mean).max() > 10 and np.abs(before.std - want.std).max() > 3
    )  # a real move
    # exact up to 8-bit rounding of the result
    assert np.allclose(got.mean, want.mean, atol=0.15), (got.mean, want.mean)
    assert np.allclose(got.std, want.std, atol=0.15), (got.std, want.std)
    assert res.stats["lips"][1].count == int(ref_regions.masks["lips"].sum())
    assert res.intensity["lips"] == 1.0 and res.skipped["skin"] == "intensity 0"
    assert res.changed["lips"] == int(lips.sum())
    # everything outside the lips is byte-identical
    assert np.array_equal(out[~lips], src[~lips])


def test_half_intensity_is_halfway_in_lab(designed) -> None:
    src, src_regions, ref, ref_regions = designed
    levels = {name: 0.0 for name in MAKEUP_REGIONS}
    full = np.asarray(transfer_makeup(src, src_regions, ref, ref_regions, levels | {"lips": 1.0}).image)
    half = np.asarray(transfer_makeup(src, src_regions, ref, ref_regions, levels | {"lips": 0.5}).image)
    lips = src_regions.masks["lips"]
    l_src, l_full, l_half = (rgb_to_lab(a)[lips].mean(0) for a in (src, full, half))
    assert np.allclose(l_half, (l_src + l_full) / 2, atol=0.3)


def test_feathered_masks_leave_everything_else_byte_identical(designed) -> None:
    src, src_regions, ref, ref_regions = designed
    src_regions.feather_px = 4.0
    res = transfer_makeup(src, src_regions, ref, ref_regions, {"lips": 1.2, "skin": 0.3})
    out = np.asarray(res.image)
    reach = (src_regions.soft("lips") > 0) | (src_regions.soft("skin") > 0)
    assert (
        reach.sum() > src_regions.masks["lips"].sum() + src_regions.masks["skin"].sum()
    )  # the feather reaches out
    assert np.array_equal(out[~reach], src[~reach])
    assert not np.array_equal(out[src_regions.masks["lips"]], src[src_regions.masks["lips"]])


def test_intensity_zero_everywhere_returns_the_source(designed) -> None:
    src, src_regions, ref, ref_regions = designed
    res = transfer_makeup(src, src_regions, ref, ref_regions, {name: 0.0 for name in MAKEUP_REGIONS})
    assert np.array_equal(np.asarray(res.image), src)
    assert all(v == 0 for v in res.changed.values()) and set(res.skipped) == set(MAKEUP_REGIONS)


def test_intensity_checks_and_defaults() -> None:
    levels = resolve_intensity({"lips": 1.5})
    assert levels["lips"] == 1.5 and levels["skin"] == DEFAULT_INTENSITY["skin"] <= 0.2  # skin kept natural
    with pytest.raises(InputError, match=r"intensity\.lips"):
        resolve_intensity({"lips": 1.6})
    with pytest.raises(InputError, match=r"intensity\.nose"):
        resolve_intensity({"nose": 1.0})


def test_small_reference_region_is_skipped(designed) -> None:
    src, src_regions, ref, ref_regions = designed
    ref_regions.masks["lips"] = _box(0, 2, 0, 2)
    res = transfer_makeup(src, src_regions, ref, ref_regions, {"lips": 1.0, "skin": 0.0})
    assert "reference region too small" in res.skipped["lips"]
    assert np.array_equal(np.asarray(res.image), src)


# ---------------------------------------------------------------------------------------------------
# regions
# ---------------------------------------------------------------------------------------------------


def _label_map() -> np.ndarray:
    """A drawn parsing map: background, hair on top, a skin oval with brows, eyes, nose, lips and a mouth."""
    lab = np.zeros((128, 128), np.uint8)
    cv2.ellipse(lab, (64, 64), (40, 52), 0, 0, 360, 1, -1)  # skin
    lab[:20] = 17  # hair
    cv2.rectangle(lab, (36, 40), (54, 43), 2, -1)  # brows
    cv2.rectangle(lab, (74, 40), (92, 43), 3, -1)
    cv2.ellipse(lab, (45, 52), (8, 4), 0, 0, 360, 4, -1)  # eyes
    cv2.ellipse(lab, (83, 52), (8, 4), 0, 0, 360, 5, -1)
    cv2.rectangle(lab, (60, 58), (68, 76), 10, -1)  # nose
    cv2.ellipse(lab, (64, 92), (16, 7), 0, 0, 360, 12, -1)  # lips
    cv2.ellipse(lab, (64, 92), (10, 2), 0, 0, 360, 11, -1)  # mouth inside
    return lab


def test_regions_from_parsing() -> None:
    lab = _label_map()
    r = regions_from_parsing(lab)
    assert r.source == "parsing" and all(r.available.values())
    assert np.array_equal(r.masks["lips"], lab == 12) and np.array_equal(r.masks["mouth"], lab == 11)
    assert np.array_equal(r.masks["hair"], lab == 17) and np.array_equal(r.masks["background"], lab == 0)
    assert np.array_equal(r.masks["skin"], (lab == 1) | (lab == 10))
    shadow, blush, skin = r.masks["eye_shadow"], r.masks["blush"], r.masks["skin"]
    assert shadow.sum() > 50 and not (shadow & ~skin).any() and not (shadow & r.masks["brows"]).any()
    assert blush.sum() > 50 and not (blush & ~skin).any()
    ys, _ = np.nonzero(blush)
    assert 52 < ys.mean() < 92  # cheeks: between eye and mouth height
    soft = r.soft("lips", radius=6.0)
    assert soft[r.masks["lips"]].min() == 1.0
    assert soft[r.masks["mouth"]].max() == 0.0  # no lipstick on the teeth
    assert soft[r.protect].max() == 0.0 and r.protect[r.masks["hair"]].all()  # hair is protected
    assert r.soft("skin")[r.masks["eyes"]].max() == 0.0


def test_regions_from_parsing_reject_bad_maps() -> None:
    with pytest.raises(InputError, match="labels"):
        regions_from_parsing(np.full((8, 8), 25, np.uint8))
    with pytest.raises(InputError, match="labels"):
        regions_from_parsing(np.zeros(8, np.uint8))
    no_face = regions_from_parsing(np.zeros((16, 16), np.uint8))
    assert not no_face.masks["eye_shadow"].any() and not no_face.masks["blush"].any()


def test_feather_mask_profile() -> None:
    m = np.zeros((1, 21), bool)
    m[0, :5] = True
    f = feather_mask(np.repeat(m, 3, 0), 8.0)[1]
    assert (f[:5] == 1).all() and f[13:].max() == 0.0  # exactly 0 beyond the radius
    assert np.all(np.diff(f[4:14]) <= 0)  # monotone fall-off


# ---------------------------------------------------------------------------------------------------
# on the photo
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_face(sample_photo_path: Path) -> tuple[FaceLandmarker, np.ndarray, FaceLandmarks]:
    if packaged_model_files() is None:
        pytest.skip("face_recognition_models is not installed")
    landmarker = FaceLandmarker.from_package()
    photo = np.asarray(Image.open(sample_photo_path).convert("RGB"))
    face = landmarker.main_face(photo)
    assert face is not None
    return landmarker, photo, face


def _made_up(photo: np.ndarray, face: FaceLandmarks) -> np.ndarray:
    """The photo with purple lips and blue eye shadow painted in (a reference with known makeup)."""
    r = regions_from_landmarks(face, photo.shape[:2])
    out = photo.astype(np.float32)
    for name, colour, k in (("lips", (150, 20, 90), 0.7), ("eye_shadow", (40, 60, 200), 0.5)):
        m = r.soft(name)[:, :, None] * k
        out = out * (1 - m) + np.array(colour, np.float32) * m
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def test_landmark_regions_on_the_photo(photo_face) -> None:
    _, photo, face = photo_face
    r = regions_from_landmarks(face, photo.shape[:2])
    assert r.source == "landmarks" and not r.available["hair"] and r.available["lips"]
    for name in ("lips", "eyes", "eye_shadow", "brows", "skin", "blush"):
        assert r.masks[name].sum() > 40, name
    ex, ey = np.rint(face.eye_left_center).astype(int)
    assert r.masks["eyes"][ey, ex] and not r.masks["skin"][ey, ex]
    mx, my = np.rint(face.points[51]).astype(int) + (0, 2)  # just inside the upper lip
    assert r.masks["lips"][my, mx]
    assert not (r.masks["lips"] & r.masks["skin"]).any()


def test_makeup_from_a_reference_on_the_photo(photo_face) -> None:
    landmarker, photo, face = photo_face
    reference = np.ascontiguousarray(
        _made_up(photo, face)[:, ::-1]
    )  # mirrored: another pose of the same face
    ref_face = landmarker.main_face(reference)
    assert ref_face is not None
    src_r = regions_from_landmarks(face, photo.shape[:2])
    ref_r = regions_from_landmarks(ref_face, reference.shape[:2])
    res = transfer_makeup(
        photo, src_r, reference, ref_r, {"lips": 1.0, "eyes": 1.0, "skin": 0.0, "blush": 0.0, "brows": 0.0}
    )
    out = np.asarray(res.image)
    lab_out, lab_ref, lab_src = rgb_to_lab(out), rgb_to_lab(reference), rgb_to_lab(photo)
    lips = src_r.masks["lips"]
    # lips take the reference's purple: a* close to the reference's, b* pulled negative
    assert abs(lab_out[lips][:, 1].mean() - lab_ref[ref_r.masks["lips"]][:, 1].mean()) < 1.0
    assert lab_out[lips][:, 2].mean() < lab_src[lips][:, 2].mean() - 5
    shadow = src_r.masks["eye_shadow"]
    assert lab_out[shadow][:, 2].mean() < lab_src[shadow][:, 2].mean() - 10  # bluer lids
    reach = (src_r.soft("lips") > 0) | (src_r.soft("eye_shadow") > 0)
    assert np.array_equal(out[~reach], photo[~reach])


def test_reference_quality(photo_face) -> None:
    _, photo, face = photo_face
    assert reference_quality(photo, face) == []
    codes = [w.code for w in reference_quality(photo, None)]
    assert codes == ["no_face"]
    blurred = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(2.5)))
    assert "blurry" in [w.code for w in reference_quality(blurred, face)]
    dark = (photo.astype(np.float32) * 0.2).astype(np.uint8)
    assert "dark" in [w.code for w in reference_quality(dark, face)]
    side = photo.astype(np.float32)
    side[:, : int(face.points[30, 0])] *= 0.35  # one half of the face in shadow
    assert "uneven_light" in [w.code for w in reference_quality(side.astype(np.uint8), face)]
    small = face.scaled(0.25)
    assert "face_small" in [w.code for w in reference_quality(photo, small)]


def test_align_reference_to_the_source_pose(photo_face) -> None:
    landmarker, photo, face = photo_face
    m = cv2.getRotationMatrix2D((256.0, 256.0), 15.0, 0.8)
    moved = cv2.warpAffine(photo, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
    ref_face = landmarker.main_face(moved)
    assert ref_face is not None
    warped, warped_face = align_reference(moved, ref_face, face, (512, 512))
    assert warped.size == (512, 512)
    assert np.abs(warped_face.points[36:48] - face.points[36:48]).mean() < 3.0
    # the similarity fit itself is exact on exact data
    pts = np.random.default_rng(0).uniform(0, 100, (10, 2))
    t = similarity_transform(pts, pts @ m[:, :2].T + m[:, 2])
    assert np.allclose(t, m, atol=1e-9)
