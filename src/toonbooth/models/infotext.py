"""One builder of AUTOMATIC1111 infotext (the PNG `parameters` text) for every SD studio.

A1111 writes `prompt`, `Negative prompt: ...`, then `Key: value` pairs in a fixed order (`modules/
processing.py` `create_infotext`): Steps, Sampler, Schedule type, CFG scale, Seed, Size, Model hash, Model,
variation seed, Denoising strength, Clip skip, extra generation parameters (ControlNet units, inpaint
settings), `Lora hashes`, `TI hashes`, then Version. Studios append their own stage settings before the
version."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import __version__
from ..core.images import format_a1111_parameters


def version_text() -> str:
    return f"toonbooth {__version__}"


def lora_hashes(loras: Sequence[Any]) -> str | None:
    """`name: hash, ...` of the job's LoRAs (A1111's `Lora hashes`); None without LoRAs."""
    return ", ".join(f"{x.name}: {x.short_hash or 'none'}" for x in loras) or None


def sd_infotext(
    prompt: str,
    negative_prompt: str,
    *,
    steps: int,
    sampler: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    model_hash: str | None,
    schedule: str | None = None,
    variation_seed: int | None = None,
    variation_strength: float | None = None,
    denoising_strength: float | None = None,
    clip_skip: int | None = None,
    extra: Mapping[str, Any] | None = None,
    loras: Sequence[Any] = (),
    tis: Any = None,
    stages: Mapping[str, Any] | None = None,
) -> str:
    """The infotext of one SD image. `schedule` "Automatic" is left out (as A1111); `tis` is a
    `models.embeddings.PromptEmbeddings` (its `TI hashes`); `stages` are a studio's own settings."""
    settings: dict[str, Any] = {
        "Steps": steps, "Sampler": sampler,
        "Schedule type": None if schedule in (None, "Automatic") else schedule,
        "CFG scale": cfg_scale, "Seed": seed, "Size": f"{width}x{height}",
        "Model hash": model_hash or None, "Model": model,
        "Variation seed": variation_seed, "Variation seed strength": variation_strength,
        "Denoising strength": denoising_strength, "Clip skip": clip_skip,
        **(extra or {}),
        "Lora hashes": lora_hashes(loras),
        "TI hashes": tis.ti_hashes() if tis is not None and tis.uses else None,
        **(stages or {}),
        "Version": version_text(),
    }  # fmt: skip
    return format_a1111_parameters(prompt, negative_prompt, settings)


def plain_infotext(prompt: str, settings: Mapping[str, Any]) -> str:
    """Infotext of a non-SD result (classic backends, masks, layers): the settings, then the version."""
    return format_a1111_parameters(prompt, "", {**settings, "Version": version_text()})
