"""Webtoon background job spec (seed 001, "Oh My Assistant"): a photo or a prompt (Korean welcome) becomes a
background in the artist's own style(s), at a webtoon panel size."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import Backend, ImageRef, SpecBase
from .diffusion import DiffusionParams

NO_PEOPLE_NEGATIVE = (
    "people, person, human, man, woman, girl, boy, child, crowd, character, face, hands, body, "
    "text, speech bubble, watermark, signature, logo, lowres, blurry, jpeg artifacts, deformed"
)

BACKGROUND_PRESETS: dict[str, dict[str, Any]] = {
    "clean-lineart": {
        "label": "Clean line art",
        "prompt": "webtoon background, clean lineart, crisp ink outlines, detailed scenery, flat shading, "
        "no humans",
        "negative_prompt": f"{NO_PEOPLE_NEGATIVE}, photo, realistic, 3d render, sketchy lines, messy lines, noise",
        "classic": {"colors": 12, "line_width": 2, "line_detail": 0.5, "smooth": 3, "line_tone": 0.1},
    },
    "flat-color": {
        "label": "Flat colour",
        "prompt": "webtoon background, flat colors, cel shading, simple shapes, clean edges, vivid palette, "
        "no humans",
        "negative_prompt": f"{NO_PEOPLE_NEGATIVE}, photo, realistic, 3d render, gradient noise, texture, grain",
        "classic": {"colors": 8, "line_width": 1, "line_detail": 0.35, "smooth": 4, "line_tone": 0.15},
    },
    "watercolor-ish": {
        "label": "Watercolour-ish",
        "prompt": "webtoon background, soft watercolor, light washes, gentle gradients, pastel colors, "
        "thin pencil lines, no humans",
        "negative_prompt": f"{NO_PEOPLE_NEGATIVE}, photo, realistic, 3d render, harsh outlines, oversaturated",
        "classic": {"colors": 20, "line_width": 1, "line_detail": 0.25, "smooth": 5, "line_tone": 0.45},
    },
    "none": {
        "label": "None (prompt only)",
        "prompt": "",
        "negative_prompt": NO_PEOPLE_NEGATIVE,
        "classic": {"colors": 16, "line_width": 1, "line_detail": 0.4, "smooth": 3, "line_tone": 0.15},
    },
}
BackgroundPreset = Literal["clean-lineart", "flat-color", "watercolor-ish", "none"]

PANEL_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    # webtoon canvases are 800 px wide (tall scroll panels, 5:8) and wide establishing shots (16:9)
    "sd15": {"tall": (800, 1280), "wide": (1280, 720), "square": (768, 768)},
    # SDXL: the same shapes on its ~1 MP training buckets
    "sdxl": {"tall": (832, 1344), "wide": (1344, 768), "square": (1024, 1024)},
}
PanelSize = Literal["tall", "wide", "square"]


class StyleRef(SpecBase):
    """One style by name with its strength: a LoRA or a textual-inversion embedding (multi-stage too) — the
    user's own trained styles or shared ones."""

    name: str = Field(min_length=1, max_length=200, description="Style (LoRA / embedding) name in the registry.")
    weight: float = Field(0.8, ge=0.0, le=2.0, description="Strength; 0 = off (the base model).")


class ClassicBackgroundParams(SpecBase):
    """Settings of the classic (no weights) webtoon-background filter; None = the preset's."""

    colors: int | None = Field(None, ge=2, le=48, description="Palette size (flat colour regions).")
    line_width: int | None = Field(None, ge=0, le=8, description="Line width in px at 1 MP; 0 = no lines.")
    line_detail: float | None = Field(None, ge=0.0, le=1.0, description="How many edges become lines.")
    smooth: int | None = Field(None, ge=0, le=8, description="Edge-preserving smoothing passes.")
    line_tone: float | None = Field(
        None, ge=0.0, le=1.0, description="Line lightness: 0 = black ink, 1 = the paper's colour."
    )


def _default_diffusion() -> DiffusionParams:
    return DiffusionParams(checkpoint="stable-diffusion-v1-5", sampler="DPM++ 2M", schedule_type="Karras",
                           steps=25, cfg_scale=7.0, strength=0.6)  # fmt: skip


class BackgroundSpec(SpecBase):
    """Webtoon background: from a photo (img2img, `diffusion.strength` 0-1, the photo's aspect kept, its long
    side capped at `max_side`, multiples of 8) or from a prompt (txt2img at a panel `size`), in one or more
    styles with a strength each, with a preset's prompt suffix and negative prompt (people kept out).

    Korean prompts are translated to English first (MarianMT `opus-mt-ko-en`); the job reports the original
    and the translation, and `translated_prompt` lets the user run their own edit of it. `mode="translate"`
    only translates (nothing is drawn): the UI's preview of the translation.

    Backends: neural (SD1.5 or SDXL — the checkpoint decides) or classic (photo only: an OpenCV filter that
    flattens colours into a palette and draws clean lines; no weights). `auto` runs neural when the weights
    are installed, else classic for a photo; a prompt without weights is refused (409)."""

    kind: Literal["background"] = "background"
    version: Literal[1] = 1
    mode: Literal["full", "translate"] = Field("full", description="full: make the background; translate: only "
                                               "translate the prompts (preview).")  # fmt: skip
    image: ImageRef | None = Field(None, description="Photo to turn into a background; none = from the prompt.")
    prompt: str = Field(
        "", max_length=4000, description="What to draw (Korean or English; A1111 syntax: (word:1.2), BREAK, "
        "<lora:name:w>). Follows the styles' words; the preset's suffix follows it.",
    )  # fmt: skip
    negative_prompt: str | None = Field(
        None, max_length=4000, description="Negative prompt; none = the preset's (keeps people out)."
    )
    translated_prompt: str | None = Field(
        None, max_length=4000, description="Your own English version of a Korean `prompt` (used instead of the "
        "machine translation; the original is still reported).",
    )  # fmt: skip
    translated_negative_prompt: str | None = Field(
        None, max_length=4000, description="Your own English version of a Korean `negative_prompt`."
    )
    preset: BackgroundPreset = Field("clean-lineart", description="Look: prompt suffix, negative prompt and the "
                                     "classic filter's settings.")  # fmt: skip
    styles: list[StyleRef] = Field(default_factory=list, max_length=6, description="Styles combined, each with "
                                   "its strength (LoRA or textual inversion; yours or shared).")  # fmt: skip
    size: PanelSize = Field("tall", description="Panel size of a prompt-only background (tall 5:8, wide 16:9, "
                            "square), per architecture; a photo keeps its own aspect.")  # fmt: skip
    width: int | None = Field(None, ge=8, le=2048, description="Explicit width (multiple of 8), with height.")
    height: int | None = Field(
        None, ge=8, le=2048, validate_default=True, description="Explicit height (multiple of 8), with width."
    )
    max_side: int | None = Field(
        None, ge=8, le=2048, description="Photo: long side of the result; default the panel long side of the "
        "architecture (1280 SD1.5, 1344 SDXL) for neural, the photo's own size up to 2048 for classic.",
    )  # fmt: skip
    backend: Backend = Field("auto", description="auto | neural | classic (classic needs a photo).")
    diffusion: DiffusionParams = Field(default_factory=_default_diffusion)
    classic: ClassicBackgroundParams = Field(default_factory=ClassicBackgroundParams)

    @field_validator("diffusion", mode="before")
    @classmethod
    def _studio_defaults(cls, v: Any) -> Any:
        """A partial `diffusion` object keeps this studio's defaults for the fields it leaves out."""
        if isinstance(v, dict):
            return {**_default_diffusion().model_dump(exclude={"loras", "controlnet_units"}), **v}
        return v

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, v: int | None) -> int | None:
        if v is not None and v % 8:
            raise ValueError("must be a multiple of 8")
        return v

    @field_validator("height")
    @classmethod
    def _both_sides(cls, v: int | None, info: Any) -> int | None:
        if (v is None) != (info.data.get("width") is None):
            raise ValueError("give width and height together (or neither: the panel `size` decides)")
        return v

    def preset_values(self) -> dict[str, Any]:
        return BACKGROUND_PRESETS[self.preset]

    def negative(self) -> str:
        """The negative prompt as written (the preset's unless given)."""
        return self.preset_values()["negative_prompt"] if self.negative_prompt is None else self.negative_prompt

    def classic_settings(self) -> dict[str, Any]:
        """The classic filter's settings: the preset's, overridden by `classic`."""
        values = dict(self.preset_values()["classic"])
        values.update({k: v for k, v in self.classic.model_dump().items() if v is not None})
        return values

    def panel_size(self, arch: str) -> tuple[int, int]:
        """Prompt-only size: explicit width x height, else the panel size of `arch`."""
        if self.width is not None and self.height is not None:
            return self.width, self.height
        return PANEL_SIZES[arch if arch in PANEL_SIZES else "sd15"][self.size]
