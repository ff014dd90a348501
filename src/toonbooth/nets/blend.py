"""Toonify layer-swap blending of two StyleGAN2 generators in the rosinality key layout.

Follows Justin Pinkney and Doron Adler, "Resolution Dependent GAN Interpolation for Controllable Image
Synthesis Between Domains" (https://arxiv.org/abs/2010.05334; https://github.com/justinpinkney/toonify and
`blend_models.py` of justinpinkney/stylegan2): the low-resolution layers (pose, face shape) come from one
model (`lo`, e.g. the cartoon fine-tune) and the high-resolution layers (texture, lighting) from the other
(`hi`, e.g. FFHQ).

Position rules of that script, expressed on rosinality keys (toonbooth studios.md B3):

| TF layer              | rosinality keys                          | position        |
|-----------------------|------------------------------------------|-----------------|
| 4x4 `Const`           | `input.input`                            | 0               |
| 4x4 `ToRGB`           | `to_rgb1.*`                              | 1               |
| 4x4 `Conv`            | `conv1.*`                                | not blended: lo |
| 2^r `Conv0_up`        | `convs.{2(r-3)}.*`                       | 2(r-2)          |
| 2^r `Conv1`, `ToRGB`  | `convs.{2(r-3)+1}.*`, `to_rgbs.{r-3}.*`  | 2(r-2)+1        |

The switch point is the position of (`resolution`, `level`): `mid = 2*(log2(resolution)-2) + level`. With
`x = position - mid`, the weight of `hi` is `y = 1/(1+exp(-x/blend_width))` (logistic) or, for the hard
switch, `y = 1 if x > 1 else 0` -- exactly the script's rule, so a layer comes from `hi` only when it is
more than one position above the switch. `out = y*hi + (1-y)*lo`; noise strengths and biases travel with
their layer. The noise buffers (`noises.*`) and the 4x4 `conv1` come from `lo` (the script clones the
low-resolution model); the mapping network (`style.*`, and with it `latent_avg`) comes from the side named
by `mapping_from` (the script: `lo`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from ..core.errors import InputError, ModelError

__all__ = [
    "BlendRow",
    "blend_position",
    "blend_state_dicts",
    "blend_weight",
    "describe_blend",
    "pick_latent_avg",
    "switch_position",
]

Side = Literal["lo", "hi"]


def switch_position(resolution: int, level: int) -> int:
    """Position of (`resolution`, `level`): level 0 = `Conv0_up`/`Const`, level 1 = `Conv1`/`ToRGB`."""
    log = int(round(math.log2(resolution))) if resolution > 0 else 0
    if resolution < 4 or 2**log != resolution:
        raise InputError("resolution", f"must be a power of two >= 4, got {resolution}", resolution)
    if level not in (0, 1):
        raise InputError("level", f"must be 0 (Conv0_up/Const) or 1 (Conv1/ToRGB), got {level}", level)
    return 2 * (log - 2) + level


def blend_position(key: str) -> int | None:
    """Blend position of a rosinality generator key, or None when the key is not blended
    (`style.*`, `conv1.*`, `noises.*`)."""
    if key == "input.input":
        return 0
    if key.startswith("to_rgb1."):
        return 1
    m = re.match(r"convs\.(\d+)\.", key)
    if m:
        return int(m.group(1)) + 2
    m = re.match(r"to_rgbs\.(\d+)\.", key)
    if m:
        return 2 * int(m.group(1)) + 3
    return None


def blend_weight(position: int, mid: int, blend_width: float | None) -> float:
    """Weight of the `hi` model at `position` for a switch at `mid` (hard when `blend_width` is falsy)."""
    x = position - mid
    if blend_width:
        return 1.0 / (1.0 + math.exp(-x / blend_width))
    return 1.0 if x > 1 else 0.0


@dataclass(frozen=True)
class BlendRow:
    """Where one output tensor came from."""

    key: str
    position: int | None
    weight_hi: float
    source: str
    """`lo`, `hi` or `mix`."""
    rule: str


def _check_args(blend_width: float | None, mapping_from: str) -> None:
    if blend_width is not None and (not math.isfinite(blend_width) or blend_width < 0):
        raise InputError(
            "blend_width", f"must be a positive number or None (hard switch), got {blend_width}", blend_width
        )
    if mapping_from not in ("lo", "hi"):
        raise InputError("mapping_from", f"must be 'lo' or 'hi', got {mapping_from!r}", mapping_from)


def _rows(
    keys: list[str], resolution: int, level: int, blend_width: float | None, mapping_from: str
) -> list[BlendRow]:
    _check_args(blend_width, mapping_from)
    mid = switch_position(resolution, level)
    max_pos = max((p for k in keys if (p := blend_position(k)) is not None), default=1)
    if mid > max_pos:
        raise InputError(
            "resolution",
            f"switch position {mid} is above the generator's last layer (position {max_pos})",
            resolution,
        )
    rows = []
    for key in keys:
        pos = blend_position(key)
        if key.startswith("style."):
            w = 1.0 if mapping_from == "hi" else 0.0
            rows.append(BlendRow(key, None, w, mapping_from, "mapping network"))
        elif pos is None:
            rule = "4x4 conv: not blended" if key.startswith("conv1.") else "not a blended layer"
            rows.append(BlendRow(key, None, 0.0, "lo", rule))
        else:
            w = blend_weight(pos, mid, blend_width)
            src = "hi" if w == 1.0 else "lo" if w == 0.0 else "mix"
            rows.append(BlendRow(key, pos, w, src, f"position {pos} - switch {mid}"))
    return rows


def describe_blend(
    keys: Mapping[str, torch.Tensor] | list[str] | set[str],
    resolution: int,
    level: int = 0,
    blend_width: float | None = None,
    mapping_from: Side = "lo",
) -> list[BlendRow]:
    """One row per generator key: its position, the weight of `hi` and which side it comes from."""
    return _rows(sorted(keys), resolution, level, blend_width, mapping_from)


def blend_state_dicts(
    lo: Mapping[str, torch.Tensor],
    hi: Mapping[str, torch.Tensor],
    resolution: int,
    level: int = 0,
    blend_width: float | None = None,
    mapping_from: Side = "lo",
) -> dict[str, torch.Tensor]:
    """A new generator state dict: low-resolution layers from `lo`, high-resolution ones from `hi`.

    Both must be rosinality generator state dicts of the same architecture. Tensors that come wholly from
    one side are copied (bit-identical); tensors equal on both sides (blur kernels) are copied from `lo`."""
    if set(lo) != set(hi):
        diff = sorted(set(lo) ^ set(hi))
        raise ModelError(
            f"the two generators have different keys (e.g. {diff[:4]}): not the same architecture"
        )
    bad = [k for k in lo if tuple(lo[k].shape) != tuple(hi[k].shape)]
    if bad:
        raise ModelError(f"the two generators differ in shape at {bad[:4]}: not the same architecture")
    out: dict[str, torch.Tensor] = {}
    for row in _rows(list(lo), resolution, level, blend_width, mapping_from):
        a, b = lo[row.key], hi[row.key]
        if row.source == "hi":
            out[row.key] = b.detach().clone()
        elif row.source == "lo" or torch.equal(a, b):
            out[row.key] = a.detach().clone()
        else:
            y = row.weight_hi
            out[row.key] = (b.detach().double() * y + a.detach().double() * (1.0 - y)).to(a.dtype)
    return out


def pick_latent_avg(
    lo: torch.Tensor | None, hi: torch.Tensor | None, mapping_from: Side = "lo"
) -> torch.Tensor | None:
    """The `latent_avg` of the blend: the one of the side that gives the mapping network."""
    _check_args(None, mapping_from)
    return hi if mapping_from == "hi" else lo
