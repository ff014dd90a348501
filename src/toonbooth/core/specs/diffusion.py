"""`DiffusionParams`: the Stable Diffusion settings studio specs share (checkpoint, sampler, steps, CFG,
strength, seed, LoRAs, ControlNet units), so a new studio embeds them as one typed sub-model — with its own
defaults — instead of redeclaring and renaming them. Errors name the nested field (`diffusion.steps`).
`GenerateSpec` stays flat (it mirrors A1111's request); the avatar and anime specs keep their flat fields
(the seed's clients send them)."""

from __future__ import annotations

from pydantic import Field

from .base import LoraRef, SpecBase
from .generate import ControlNetUnit


class DiffusionParams(SpecBase):
    checkpoint: str = Field(min_length=1, max_length=400, description="Base checkpoint (registry name, A1111 title).")
    sampler: str = Field("DPM++ 2M", max_length=100, description="A1111 sampler name (DDIM, Euler a, DPM++ 2M, ...).")
    schedule_type: str | None = Field(
        None, max_length=50, description="A1111 >= 1.9 schedule type (Karras, Exponential, ...); None = the sampler's."
    )
    steps: int = Field(30, ge=1, le=150, description="Denoising steps of the full schedule.")
    cfg_scale: float = Field(7.0, ge=0.0, le=30.0, description="Classifier-free guidance scale.")
    strength: float = Field(
        0.75, ge=0.0, le=1.0, description="img2img denoising strength: int(steps * strength) steps run."
    )
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="-1 = random (the seed used is reported).")
    loras: list[LoraRef] = Field(default_factory=list, max_length=8, description="LoRAs (styles) and weights.")
    controlnet_units: list[ControlNetUnit] = Field(default_factory=list, max_length=4)

    def steps_run(self, strength: float | None = None) -> int:
        """Denoising iterations an img2img call at `strength` (default: this one) runs (A1111 / diffusers)."""
        s = self.strength if strength is None else strength
        return min(int(self.steps * s), self.steps)
