"""Compositing: Lab harmonization toward the scene band, alpha blending, outline, RGBA layer."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from toonbooth.core.errors import InputError
from toonbooth.vision.composite import border_band, composite, harmonize, layers_to_rgba


def scene(h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    bg = np.clip(rng.normal((60, 90, 150), 10, (h, w, 3)), 0, 255).astype(np.uint8)  # bluish scene
    char = np.clip(rng.normal((230, 190, 60), 15, (h, w, 3)), 0, 255).astype(np.uint8)  # yellow character
    mask = np.zeros((h, w), bool)
    mask[12:40, 20:44] = True
    return bg, char, mask


def lab_mean(rgb: np.ndarray, where: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[where].mean(0)


def test_harmonize_moves_character_lab_mean_toward_the_band():
    bg, char, mask = scene()
    out = np.asarray(harmonize(char, bg, mask, band_px=6, strength=0.5))
    assert out.shape == char.shape and out.dtype == np.uint8
    band = border_band(mask, 6)
    target = lab_mean(bg, band)
    before = np.linalg.norm(lab_mean(char, mask) - target)
    after = np.linalg.norm(lab_mean(out, mask) - target)
    assert after < 0.6 * before  # half-way transfer
    full = np.asarray(harmonize(char, bg, mask, band_px=6, strength=1.0))
    assert np.linalg.norm(lab_mean(full, mask) - target) < 0.15 * before
    same = np.asarray(harmonize(char, bg, mask, band_px=6, strength=0.0))
    assert np.abs(same.astype(int) - char).max() <= 1  # Lab round trip only


def test_composite_blends_through_alpha_and_draws_outline():
    bg, char, mask = scene()
    alpha = mask.astype(np.float32)
    out = np.asarray(composite(Image.fromarray(bg), char, alpha))
    assert out.shape == bg.shape
    assert np.array_equal(out[mask], char[mask]) and np.array_equal(out[~mask], bg[~mask])

    half = np.full(mask.shape, 0.5, np.float32)
    mid = np.asarray(composite(bg, char, half)).astype(int)
    assert np.abs(mid - (bg.astype(int) + char) / 2).max() <= 1

    lined = np.asarray(composite(bg, char, alpha, edge_line_px=2, edge_color=(0, 0, 0)))
    ring = border_band(mask, 2)
    assert (lined[ring] == 0).all()
    assert np.array_equal(lined[mask], char[mask])
    far = ~border_band(mask, 4) & ~mask
    assert np.array_equal(lined[far], bg[far])


def test_layers_to_rgba():
    _, char, mask = scene()
    rgba = layers_to_rgba(char, mask.astype(np.float32) * 0.8)
    assert rgba.mode == "RGBA" and rgba.size == (64, 48)
    arr = np.asarray(rgba)
    assert np.array_equal(arr[..., :3], char)
    assert set(np.unique(arr[..., 3])) == {0, 204}


def test_bad_inputs_name_the_field():
    bg, char, mask = scene()
    with pytest.raises(InputError) as ei:
        composite(bg, char[:10], mask.astype(np.float32))
    assert ei.value.field == "character"
    with pytest.raises(InputError) as ei:
        composite(bg, char, mask.astype(np.float32) * 2)
    assert ei.value.field == "alpha"
    with pytest.raises(InputError) as ei:
        harmonize(char, bg, np.zeros_like(mask), band_px=4)
    assert ei.value.field == "mask"
    with pytest.raises(InputError) as ei:
        harmonize(char, bg, mask, band_px=4, strength=1.5)
    assert ei.value.field == "strength"
