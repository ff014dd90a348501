"""Toonify layer swap: every position rule of studios.md B3 on a 64-px generator pair."""

from __future__ import annotations

import math

import pytest
import torch

from toonbooth.core.errors import InputError, ModelError
from toonbooth.nets.blend import blend_state_dicts, describe_blend, pick_latent_avg, switch_position
from toonbooth.nets.stylegan2 import tiny_generator

# The TF generator's layers in the blend script's order: (TF layer, resolution, level, rosinality prefix).
# 4x4 `Conv` is not in the list (the script's name matching skips it).
TF_LAYERS = [
    ("4x4/Const", 4, 0, "input.input"),
    ("4x4/ToRGB", 4, 1, "to_rgb1."),
    ("8x8/Conv0_up", 8, 0, "convs.0."),
    ("8x8/Conv1", 8, 1, "convs.1."),
    ("8x8/ToRGB", 8, 1, "to_rgbs.0."),
    ("16x16/Conv0_up", 16, 0, "convs.2."),
    ("16x16/Conv1", 16, 1, "convs.3."),
    ("16x16/ToRGB", 16, 1, "to_rgbs.1."),
    ("32x32/Conv0_up", 32, 0, "convs.4."),
    ("32x32/Conv1", 32, 1, "convs.5."),
    ("32x32/ToRGB", 32, 1, "to_rgbs.2."),
    ("64x64/Conv0_up", 64, 0, "convs.6."),
    ("64x64/Conv1", 64, 1, "convs.7."),
    ("64x64/ToRGB", 64, 1, "to_rgbs.3."),
]


def _script_positions() -> dict[str, int]:
    """Positions as the script counts them: +1 per (resolution, level) group, 4x4 first."""
    positions, pos = {}, 0
    for res in (4, 8, 16, 32, 64):
        for level in (0, 1):
            for _, r, lv, prefix in TF_LAYERS:
                if (r, lv) == (res, level):
                    positions[prefix] = pos
            pos += 1
    return positions


POSITIONS = _script_positions()


def _prefix_of(key: str) -> str | None:
    for _, _, _, prefix in TF_LAYERS:
        if key == prefix or key.startswith(prefix):
            return prefix
    return None


@pytest.fixture(scope="module")
def pair():
    return tiny_generator(64, seed=1).state_dict(), tiny_generator(64, seed=2).state_dict()


def test_documented_positions():
    assert POSITIONS["input.input"] == 0 and POSITIONS["to_rgb1."] == 1
    assert POSITIONS["convs.2."] == 4 and POSITIONS["convs.3."] == POSITIONS["to_rgbs.1."] == 5
    assert switch_position(4, 0) == 0 and switch_position(16, 1) == 5 and switch_position(1024, 0) == 16


@pytest.mark.parametrize("res", [4, 8, 16, 32, 64])
@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("mapping_from", ["lo", "hi"])
def test_hard_switch_takes_exactly_the_documented_tensors(pair, res, level, mapping_from):
    lo, hi = pair
    out = blend_state_dicts(lo, hi, res, level, mapping_from=mapping_from)
    mid = POSITIONS[[p for _, r, lv, p in TF_LAYERS if (r, lv) == (res, level)][0]]
    assert set(out) == set(lo)
    n_hi = 0
    for key, value in out.items():
        prefix = _prefix_of(key)
        if key.startswith("style."):
            expected = hi[key] if mapping_from == "hi" else lo[key]
        elif prefix is None:  # conv1 (4x4 Conv) and the noise buffers: always the low-res model
            assert key.startswith(("conv1.", "noises."))
            expected = lo[key]
        else:
            from_hi = POSITIONS[prefix] - mid > 1
            n_hi += from_hi
            expected = hi[key] if from_hi else lo[key]
        assert torch.equal(value, expected), key
    if mid + 2 <= 9:  # something lies more than one position above the switch
        assert n_hi > 0


def test_describe_blend_names_each_source(pair):
    lo, _ = pair
    rows = {r.key: r for r in describe_blend(lo, 16, 0)}
    assert rows["input.input"].source == "lo" and rows["input.input"].position == 0
    assert rows["convs.3.conv.weight"].source == "lo"  # position 5 = mid + 1: not > 1
    assert rows["convs.4.conv.weight"].source == "hi"  # position 6 = mid + 2
    assert rows["to_rgbs.2.bias"].source == "hi"
    assert rows["conv1.conv.weight"].source == "lo" and "not blended" in rows["conv1.conv.weight"].rule
    assert rows["noises.noise_8"].source == "lo"
    assert rows["style.1.weight"].source == "lo"
    assert {r.source for r in describe_blend(lo, 16, 0, mapping_from="hi") if r.key.startswith("style.")} == {
        "hi"
    }


def test_logistic_blend_interpolates(pair):
    lo, hi = pair
    width = 1.5
    out = blend_state_dicts(lo, hi, 16, 1, blend_width=width)
    mid = switch_position(16, 1)
    weights = {}
    for key in out:
        prefix = _prefix_of(key)
        if prefix is None:
            expected = lo[key]
            assert torch.equal(out[key], expected)
            continue
        y = 1.0 / (1.0 + math.exp(-(POSITIONS[prefix] - mid) / width))
        weights[prefix] = y
        assert 0.0 < y < 1.0
        expected = hi[key].double() * y + lo[key].double() * (1 - y)
        assert torch.allclose(out[key].double(), expected, atol=1e-6), key
        if not torch.equal(lo[key], hi[key]):
            assert not torch.equal(out[key], lo[key]) and not torch.equal(out[key], hi[key])
    ordered = [weights[p] for p in sorted(weights, key=POSITIONS.get)]
    assert ordered == sorted(ordered)
    assert weights["convs.3."] == pytest.approx(0.5)
    rows = {r.key: r for r in describe_blend(lo, 16, 1, blend_width=width)}
    assert rows["convs.0.conv.weight"].source == "mix"
    assert rows["convs.0.conv.weight"].weight_hi == pytest.approx(weights["convs.0."])


def test_blend_runs_as_a_generator(pair):
    lo, hi = pair
    g = tiny_generator(64, seed=1)
    g.load_state_dict(blend_state_dicts(lo, hi, 8, 0, blend_width=0.7), strict=True)
    img, _ = g([torch.randn(1, 32)], randomize_noise=False)
    assert img.shape == (1, 3, 64, 64) and torch.isfinite(img).all()


def test_bad_arguments(pair):
    lo, hi = pair
    with pytest.raises(InputError, match="resolution"):
        blend_state_dicts(lo, hi, 12, 0)
    with pytest.raises(InputError, match="resolution"):
        blend_state_dicts(lo, hi, 256, 0)
    with pytest.raises(InputError, match="level"):
        blend_state_dicts(lo, hi, 16, 2)
    with pytest.raises(InputError, match="mapping_from"):
        blend_state_dicts(lo, hi, 16, 0, mapping_from="both")
    other = tiny_generator(32).state_dict()
    with pytest.raises(ModelError, match="different keys"):
        blend_state_dicts(lo, other, 16, 0)
    a, b = torch.ones(3), torch.zeros(3)
    assert pick_latent_avg(a, b, "lo") is a and pick_latent_avg(a, b, "hi") is b
