"""Anime-me job spec (seed 002): click a person, erase them, redraw them as an anime character, put them back."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import Backend, ImageRef, SpecBase

ANIME_PROMPT = "anime style, cel shading, clean lineart, vibrant colors, best quality"
ANIME_NEGATIVE_PROMPT = (
    "photo, realistic, 3d render, lowres, blurry, bad anatomy, extra fingers, deformed face, "
    "watermark, text, jpeg artifacts"
)


class AnimePoint(SpecBase):
    """One click on the photo, in pixels of the photo as uploaded."""

    x: int = Field(description="Column, 0 <= x < image width (checked against the photo).")
    y: int = Field(description="Row, 0 <= y < image height (checked against the photo).")
    positive: bool = Field(True, description="True: this is the person. False: this is NOT the person.")


class AnimeSpec(SpecBase):
    """Anime-me: segment the clicked person (SAM / GrabCut), restore the background where they stood
    (LaMa / Telea), redraw the person crop as an anime character (SD1.5 img2img + ControlNet canny +
    style LoRA / classic toon filter) and composite it back (feathered mask, Lab colour harmony).

    `mode="mask"` only segments (fast: SAM's image embedding is cached per photo) and returns the mask
    and an overlay preview; `mode="full"` runs the whole job."""

    kind: Literal["anime"] = "anime"
    version: Literal[1] = 1
    image: ImageRef
    points: list[AnimePoint] = Field(
        default_factory=list,
        max_length=64,
        description="Clicks: positive on the person, negative on what is not the person. Without any "
        "point and box, the main person is found from the largest face.",
    )
    box: tuple[int, int, int, int] | None = Field(
        None, description="Optional box (x0, y0, x1, y1) around the person; x1 / y1 exclusive."
    )
    mode: Literal["mask", "full"] = Field("full", description="mask: segmentation only; full: the whole job.")
    backend: Backend = Field(
        "auto",
        description="Per stage (segment: SAM vs GrabCut, inpaint: LaMa vs Telea, character: SD1.5 vs toon "
        "filter). auto: neural where that stage's weights are present, else classic; the job reports "
        "which ran per stage.",
    )

    # --- models ---
    sam_model: str = Field(
        "facebook/sam-vit-base",
        min_length=1,
        max_length=400,
        description="SAM: hub id (from the local hub cache), a folder `<models>/SAM/<name>`, or (CLI) a "
        "local folder written by `save_pretrained`.",
    )
    lama_model: str = Field(
        "big-lama",
        min_length=1,
        max_length=400,
        description="LaMa weights in `<models>/LaMa/`: `<name>.safetensors` (generator state dict), the "
        "TorchScript `<name>.pt` (operator's folder only) or a `weights_only` `<name>.ckpt`.",
    )
    checkpoint: str = Field("stable-diffusion-v1-5", min_length=1, max_length=400, description="SD1.5 base.")
    style: str | None = Field(
        None,
        max_length=200,
        description="Style / character LoRA (registry name; the user's own trained styles included).",
    )
    style_weight: float = Field(1.0, ge=-4.0, le=4.0, description="LoRA strength; 0 = base model only.")
    controlnet: str = Field(
        "control_v11p_sd15_canny", min_length=1, max_length=400, description="SD1.5 canny ControlNet."
    )
    controlnet_weight: float = Field(1.0, ge=0.0, le=2.0, description="How strongly pose / outline hold.")
    canny_low: int = Field(100, ge=0, le=255)
    canny_high: int = Field(200, ge=0, le=255)

    # --- prompt and sampling ---
    trigger: str | None = Field(
        None,
        max_length=200,
        description="The style's trigger word (DreamBooth token), put first in the prompt.",
    )
    prompt: str = Field(ANIME_PROMPT, max_length=4000, description="A1111 syntax; follows the trigger word.")
    negative_prompt: str = Field(ANIME_NEGATIVE_PROMPT, max_length=4000)
    strength: float = Field(0.6, ge=0.0, le=1.0, description="Denoising strength of the restyle.")
    steps: int = Field(25, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0.0, le=30.0)
    sampler: str = Field("DPM++ 2M Karras", max_length=100, description="A1111 sampler name.")
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="-1 = random (the used seed is reported).")
    gen_size: int = Field(
        512, ge=64, le=1024, description="Long side of the person crop while it is redrawn (multiple of 8)."
    )
    crop_margin: float = Field(
        0.1, ge=0.0, le=1.0, description="Context around the person's box, as a share of its long side."
    )

    # --- masks and compositing ---
    dilate_px: int | None = Field(
        None,
        ge=0,
        le=256,
        description="Growth of the hole that is inpainted; default 1.5 % of the long side.",
    )
    feather_px: float = Field(4.0, ge=0.0, le=128.0, description="Soft edge of the character's mask.")
    harmonize: float = Field(
        0.5, ge=0.0, le=1.0, description="Colour match of the character to the scene (0 = off, 1 = full)."
    )
    edge_line_px: int = Field(
        0, ge=0, le=16, description="Outline around the character (anime look); 0 = none."
    )

    @field_validator("gen_size")
    @classmethod
    def _gen_multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError("must be a multiple of 8")
        return v

    @field_validator("canny_high")
    @classmethod
    def _canny_order(cls, v: int, info: Any) -> int:
        low = info.data.get("canny_low", 0)
        if v < low:
            raise ValueError(f"must be >= canny_low ({low})")
        return v

    def build_prompt(self) -> str:
        """Trigger word first, then the prompt (A1111 syntax)."""
        parts = [p.strip() for p in (self.trigger, self.prompt) if p and p.strip()]
        return ", ".join(parts)


