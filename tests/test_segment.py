"""Segmentation: tiny random-weight SAM (transformers, from a config), GrabCut, mask clean-up, prompts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from toonbooth.core.errors import InputError, OfflineError
from toonbooth.vision.segment import (
    ClickPrompt,
    MaskResult,
    Point,
    SamSegmenter,
    build_tiny_sam,
    clean_mask,
    grabcut_segment,
)


def figure_scene(seed: int = 0, h: int = 96, w: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A textured background (stripes + noise) with a drawn figure: ellipse head + ellipse body in
    distinct real-valued colours with noise. Returns (image uint8, known figure mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = np.stack(
        [120 + 60 * np.sin(xx / 3.0), 140 + 50 * np.sin((xx + yy) / 5.0), 100 + 40 * np.cos(yy / 4.0)],
        axis=-1,
    )
    bg += rng.normal(0, 12, bg.shape)
    head = np.zeros((h, w), np.uint8)
    body = np.zeros((h, w), np.uint8)
    cv2.ellipse(head, (w // 2, h // 4 + 4), (10, 12), 0, 0, 360, 1, -1)
    cv2.ellipse(body, (w // 2, int(h * 0.68)), (20, 28), 0, 0, 360, 1, -1)
    head_m, body_m = head.astype(bool), body.astype(bool) & ~head.astype(bool)
    img = bg.copy()
    img[head_m] = np.array([222.5, 180.3, 150.7]) + rng.normal(0, 6, (head_m.sum(), 3))
    img[body_m] = np.array([40.2, 70.9, 200.4]) + rng.normal(0, 6, (body_m.sum(), 3))
    return np.clip(img, 0, 255).astype(np.uint8), head_m | body_m


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def tiny_sam() -> SamSegmenter:
    model, processor = build_tiny_sam(seed=0)
    return SamSegmenter(model, processor, device="cpu")


# --- SAM ------------------------------------------------------------------------------------------


def test_sam_point_prompt_returns_mask_of_image_size_and_score(tiny_sam):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    res = tiny_sam.segment(img, ClickPrompt(points=[Point(x=10, y=20)]))
    assert isinstance(res, MaskResult)
    assert res.mask.shape == (48, 80) and res.mask.dtype == bool
    assert isinstance(res.score, float)
    assert len(res.all_scores) == 3  # single click: multimask output
    assert res.score == max(res.all_scores)


def test_sam_second_click_reuses_cached_embedding(tiny_sam):
    tiny_sam.clear_cache()
    calls = []
    hook = tiny_sam.model.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        img, _ = figure_scene(seed=3, h=64, w=72)
        r1 = tiny_sam.segment(img, ClickPrompt(points=[Point(x=36, y=40)]))
        r2 = tiny_sam.segment(img, ClickPrompt(points=[Point(x=36, y=40), Point(x=5, y=5, positive=False)]))
        r3 = tiny_sam.segment(img.copy(), ClickPrompt(points=[Point(x=36, y=40)], box=(10, 10, 60, 60)))
        assert len(calls) == 1  # same content -> one vision-encoder pass for three prompts
        assert len(r2.all_scores) == 1 and len(r3.all_scores) == 1  # several prompts: single mask
        assert r1.mask.shape == r2.mask.shape == (64, 72)
        other = img.copy()
        other[0, 0] = 255 - other[0, 0]
        tiny_sam.segment(other, ClickPrompt(points=[Point(x=36, y=40)]))
        assert len(calls) == 2  # a different photo is encoded
    finally:
        hook.remove()


def test_sam_is_deterministic_and_prompt_dependent(tiny_sam):
    img, _ = figure_scene(seed=4, h=64, w=64)
    a = tiny_sam.segment(img, ClickPrompt(points=[Point(x=32, y=44)]))
    b = tiny_sam.segment(img, ClickPrompt(points=[Point(x=32, y=44)]))
    assert np.array_equal(a.mask, b.mask) and a.score == b.score
    c = tiny_sam.segment(img, ClickPrompt(box=(2, 2, 30, 30)))
    assert c.all_scores != a.all_scores


def test_sam_from_pretrained_folder_and_offline_hub_id(tmp_path):
    model, processor = build_tiny_sam(seed=0)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    seg = SamSegmenter.from_pretrained(tmp_path, device="cpu", local_files_only=True)
    img, _ = figure_scene(seed=5, h=40, w=40)
    ref = SamSegmenter(model, processor).segment(img, ClickPrompt(points=[Point(x=20, y=20)]))
    got = seg.segment(img, ClickPrompt(points=[Point(x=20, y=20)]))
    assert np.array_equal(ref.mask, got.mask) and got.score == pytest.approx(ref.score, abs=1e-6)
    with pytest.raises(OfflineError, match="facebook/sam-vit-base"):
        SamSegmenter.from_pretrained("facebook/sam-vit-base", local_files_only=True)


def test_sam_without_click_uses_the_face(tiny_sam, sample_photo_path):
    img = Image.open(sample_photo_path).convert("RGB")
    res = tiny_sam.segment(img, None)
    assert res.mask.shape == (img.height, img.width)


# --- GrabCut --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_grabcut_click_on_figure_reaches_iou_09(seed):
    img, gt = figure_scene(seed)
    click = Point(x=48, y=52)  # on the body, below the head
    res = grabcut_segment(img, ClickPrompt(points=[click]))
    assert res.backend == "grabcut" and res.score is None
    assert res.mask.shape == gt.shape and res.mask.dtype == bool
    assert iou(res.mask, gt) > 0.9
    cleaned, _ = clean_mask(res.mask, [click])
    assert iou(cleaned, gt) > 0.9
    # a click per part works too (the region then grows from both, capped to half of the photo)
    both = grabcut_segment(img, ClickPrompt(points=[Point(x=48, y=70), Point(x=48, y=28)]))
    assert iou(both.mask, gt) > 0.9


def test_grabcut_box_prompt_and_negative_click():
    img, gt = figure_scene(2)
    res = grabcut_segment(
        img, ClickPrompt(points=[Point(x=48, y=52), Point(x=10, y=10, positive=False)], box=(20, 10, 76, 95))
    )
    assert iou(res.mask, gt) > 0.9
    assert not res.mask[:, :20].any()  # a user box is a hard limit


def test_grabcut_without_click_segments_the_person_around_the_face(sample_photo_path):
    from toonbooth.vision.faces import largest_face

    img = Image.open(sample_photo_path).convert("RGB")
    face = largest_face(img)
    assert face is not None
    res = grabcut_segment(img, None)
    cx, cy = (face.x0 + face.x1) // 2, (face.y0 + face.y1) // 2
    assert res.mask[cy, cx]
    assert 0.1 < res.mask.mean() < 0.9
    assert not res.mask[0, :].all()  # top row is not all person


# --- clean-up -------------------------------------------------------------------------------------


def test_clean_mask_keeps_clicked_component_fills_holes_dilates_and_feathers():
    m = np.zeros((60, 60), bool)
    m[10:30, 10:30] = True  # clicked blob, with a hole
    m[18:22, 18:22] = False
    m[35:59, 35:59] = True  # larger, not clicked
    m[40:59, 5:8] = True
    out, alpha = clean_mask(m, [Point(x=12, y=12)])
    assert out[20, 20]  # hole filled
    assert not out[50, 50] and not out[45, 6]  # other components dropped
    assert out.sum() == 400
    assert alpha.dtype == np.float32 and set(np.unique(alpha)) <= {0.0, 1.0}

    largest, _ = clean_mask(m)  # no click: largest component
    assert largest[50, 50] and not largest[12, 12]

    dil, soft = clean_mask(m, [(12, 12)], dilate_px=2, feather_px=4)
    assert dil.sum() > out.sum() and dil[8, 20] and not dil[6, 20]
    assert 0.0 < soft[8, 20] < 1.0 and soft[20, 20] == pytest.approx(1.0, abs=1e-3)


# --- bad prompts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "field", "text"),
    [
        (
            ClickPrompt(points=[Point(x=5, y=5), Point(x=40, y=3)]),
            "points[1]",
            "(40, 3) is outside the 32x24",
        ),
        (ClickPrompt(points=[Point(x=-1, y=3)]), "points[0]", "(-1, 3)"),
        (ClickPrompt(points=[Point(x=5, y=5, positive=False)]), "points", "all negative"),
        (ClickPrompt(), "points", "no point and no box"),
        (ClickPrompt(points=[Point(x=5, y=5)], box=(20, 5, 10, 15)), "box", "x1 > x0"),
        (ClickPrompt(box=(0, 0, 33, 10)), "box", "not inside the 32x24"),
    ],
)
def test_bad_prompts_raise_input_error_naming_the_field(tiny_sam, prompt, field, text):
    img = np.zeros((24, 32, 3), np.uint8)
    for fn in (lambda: grabcut_segment(img, prompt), lambda: tiny_sam.segment(img, prompt)):
        with pytest.raises(InputError) as ei:
            fn()
        assert ei.value.field == field
        assert text in str(ei.value)
