"""Training presets as the UI and the CLI show them, and how a spec's step count is resolved.

The preset tables live in `core.specs.TRAIN_PRESETS` (the specs fill their defaults from them); this
module describes them and turns `steps` / `epochs` into the number of optimizer steps, the way kohya-ss
`sd-scripts` and diffusers' training examples count them (`max_train_steps = epochs * ceil(batches /
grad_accum)`).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from ..core.errors import InputError
from ..core.specs import TRAIN_PRESETS

DEFAULT_STEPS = 1000


class PresetInfo(BaseModel):
    """One training preset as shown to users."""

    name: str
    label: str
    description: str
    kinds: list[str] = Field(description="Job kinds the preset applies to.")
    min_images: int
    max_images: int
    defaults: dict[str, Any] = Field(description="Field values the preset sets (explicit values win).")
    kind_defaults: dict[str, dict[str, Any]] = Field(default_factory=dict)


def list_presets() -> list[PresetInfo]:
    return [preset_info(name) for name in TRAIN_PRESETS]


def preset_info(name: str) -> PresetInfo:
    if name not in TRAIN_PRESETS:
        raise InputError("preset", f"unknown preset {name!r}; known: {', '.join(TRAIN_PRESETS)}", name)
    p = TRAIN_PRESETS[name]
    return PresetInfo(
        name=name, label=p["label"], description=p["description"], kinds=list(p["kinds"]),
        min_images=p["min_images"], max_images=p["max_images"], defaults=dict(p["defaults"]),
        kind_defaults={k: dict(v) for k, v in p.get("kind_defaults", {}).items()},
    )  # fmt: skip


def image_count_bounds(preset: str | None) -> tuple[int, int]:
    """(min, max) images for a preset; without one, 1..200 (the spec's own bounds)."""
    if preset is None:
        return 1, 200
    p = TRAIN_PRESETS[preset]
    return int(p["min_images"]), int(p["max_images"])


def total_steps(steps: int | None, epochs: int | None, batches_per_epoch: int, grad_accum: int) -> int:
    """Optimizer steps of a run: `steps` as given, else `epochs` passes, else DEFAULT_STEPS."""
    if steps is not None:
        return int(steps)
    if epochs is not None:
        return max(1, int(epochs) * math.ceil(batches_per_epoch / grad_accum))
    return DEFAULT_STEPS
