"""Memoji avatar job spec (seed 000)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import Backend, ImageRef, LoraRef, SpecBase, validate_email

Gender = Literal["male", "female", "unspecified"]
Expression = Literal["smiling", "crying", "neutral", "angry", "laughing", "sad"]


MEMOJI_NEGATIVE_PROMPT = (
    "Pixelated design, distorted facial features, blurry rendering, overly detailed skin texture, "
    "animal-like characteristics, sharp or harsh expressions, low-quality resolution, unrecognizable face, "
    "unnatural colors, 3D effects"
)
MEMOJI_SEED = 2968506678


class AvatarSpec(SpecBase):
    """Memoji-like 3D cartoon avatar from a photo (seed 000 recipe)."""

    kind: Literal["avatar"] = "avatar"
    version: Literal[1] = 1
    image: ImageRef
    gender: Gender = Field("unspecified", description="Goes into the prompt: `emoji, {gender}, ...`.")
    expression: Expression = Field("smiling", description="Goes into the prompt.")
    glasses: bool = Field(False, description="Adds `glasses` to the prompt.")
    email: str | None = Field(None, description="Optional address the result is e-mailed to.")
    backend: Backend = Field("auto", description="auto: neural when its weights are present, else classic.")

    # --- neural recipe (defaults from the seed's client; every value overridable) ---
    prompt: str | None = Field(
        None, max_length=4000, description="Full prompt override (A1111 syntax). Default: built from the options."
    )
    negative_prompt: str = Field(MEMOJI_NEGATIVE_PROMPT, max_length=4000)
    checkpoint: str = Field("samaritan-3d-cartoon-sdxl", description="SDXL base (registry name, folder, hub id).")
    second_checkpoint: str | None = Field(
        None, description="Checkpoint of pass 2 (the seed's 'vanilla' model). Default: same as `checkpoint`."
    )
    loras: list[LoraRef] = Field(
        default_factory=lambda: [LoraRef(name="memoji", weight=1.0)],
        max_length=8,
        description="LoRAs applied to both passes (the seed: memoji at weight 1).",
    )
    controlnet: str = Field("diffusers_xl_canny_full", description="SDXL canny ControlNet (registry name).")
    controlnet_weight: float = Field(1.0, ge=0.0, le=2.0)
    guidance_start: float = Field(0.0, ge=0.0, le=1.0, description="ControlNet active from this fraction.")
    guidance_end: float = Field(1.0, ge=0.0, le=1.0, description="ControlNet active until this fraction.")
    canny_low: int = Field(70, ge=0, le=255)
    canny_high: int = Field(230, ge=0, le=255)
    sampler: str = Field("DDIM", description="A1111 sampler name (DDIM, Euler a, DPM++ 2M Karras, ...).")
    steps: int = Field(50, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0.0, le=30.0)
    strength: float = Field(0.75, ge=0.0, le=1.0, description="Denoising strength of pass 1 (A1111 default 0.75).")
    second_strength: float = Field(0.75, ge=0.0, le=1.0, description="Denoising strength of pass 2.")
    second_pass: bool = Field(True, description="Run pass 2 (img2img at `upscale`x without ControlNet).")
    upscale: float = Field(1.5, ge=1.0, le=4.0, description="Pass-2 size factor (also the classic upscale).")
    upscaler: str | None = Field(
        None, max_length=200,
        description="Upscaler that enlarges pass 1 before pass 2: None = Lanczos (the seed's client); or an "
        "ESRGAN-family upscaler's name (models/ESRGAN, models/RealESRGAN), e.g. `R-ESRGAN 4x+`.",
    )  # fmt: skip
    seed: int = Field(MEMOJI_SEED, ge=-1, le=2**32 - 1, description="-1 = random (the used seed is reported).")
    max_side: int | None = Field(None, ge=64, le=4096, description="Long-side cap of pass 1; default: settings.")

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return validate_email(v)

    @field_validator("guidance_end")
    @classmethod
    def _guidance_order(cls, v: float, info: Any) -> float:
        start = info.data.get("guidance_start", 0.0)
        if v < start:
            raise ValueError(f"must be >= guidance_start ({start}), got {v}")
        return v

    def build_prompt(self) -> str:
        if self.prompt is not None:
            return self.prompt
        parts = ["emoji", self.gender, self.expression]
        if self.glasses:
            parts.append("glasses")
        return ", ".join(parts)


