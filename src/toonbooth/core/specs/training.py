"""Personalization training job specs (LoRA, DreamBooth-LoRA, textual inversion) and their presets.

Their runs live in `toonbooth.training`; the preset tables are here because the specs fill their defaults
from them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .base import ImageRef, SpecBase

TrainPresetName = Literal["portrait-character", "art-style", "one-image-style"]
STYLE_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"
TRIGGER_RE = r"^[A-Za-z0-9<][A-Za-z0-9<>_.-]{0,39}$"
LoraTarget = Literal["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "portrait-character": {
        "label": "portrait character (8–20 photos)",
        "description": "A person or a character from 8-20 photos: face-centred crops, DreamBooth-LoRA with prior "
        "preservation (seed 002: 8-10 images at 512²). The photos are deleted after training by default.",
        "kinds": ("train_dreambooth", "train_lora"),
        "min_images": 8,
        "max_images": 20,
        "defaults": {
            "face_crop": True, "delete_images_after": True, "buckets": False, "steps": 800, "learning_rate": 1e-4,
            "lr_scheduler": "constant", "lr_warmup_steps": 0, "rank": 16, "alpha": 16.0, "snr_gamma": 5.0,
            "caption_template": "a photo of {trigger} {class_word}", "checkpoint_every": 200,
        },
    },
    "art-style": {
        "label": "art style (5–50 images)",
        "description": "An artist's drawing style from 5-50 images (seed 001: a LoRA in <= 20 min): aspect-ratio "
        "buckets, cosine schedule with warm-up.",
        "kinds": ("train_lora", "train_ti"),
        "min_images": 5,
        "max_images": 50,
        "defaults": {
            "face_crop": False, "delete_images_after": False, "buckets": True, "steps": 1500, "learning_rate": 1e-4,
            "lr_scheduler": "cosine", "lr_warmup_steps": 50, "rank": 32, "alpha": 16.0, "snr_gamma": 5.0,
            "caption_template": "a picture in the style of {trigger}", "checkpoint_every": 250,
        },
        "kind_defaults": {"train_ti": {"learning_rate": 5e-3, "steps": 1500, "num_vectors": 4}},
    },
    "one-image-style": {
        "label": "one-image style",
        "description": "A style from a single image (seed 001, DreamStyler-like): multi-stage textual inversion, "
        "one embedding per timestep stage.",
        "kinds": ("train_ti", "train_lora"),
        "min_images": 1,
        "max_images": 1,
        "defaults": {
            "face_crop": False, "delete_images_after": False, "buckets": True, "steps": 500,
            "lr_scheduler": "constant", "lr_warmup_steps": 0, "checkpoint_every": 100,
            "caption_template": "a painting in the style of {trigger}",
        },
        "kind_defaults": {
            "train_ti": {"learning_rate": 5e-3, "stages": 6, "num_vectors": 2},
            "train_lora": {"learning_rate": 1e-4, "rank": 8, "alpha": 8.0},
        },
    },
}


def _preset_defaults(cls: type[BaseModel], kind: str, data: Any) -> Any:
    """Fill the fields a preset sets and the request left out (explicit values always win)."""
    if not isinstance(data, dict) or not isinstance(data.get("preset"), str):
        return data  # absent, or not a name: the Literal field reports a wrong type
    preset = TRAIN_PRESETS.get(data["preset"])
    if preset is None:
        return data  # the Literal field reports the unknown name
    if kind not in preset["kinds"]:
        return data  # the `preset` field validator names the mismatch
    values = {**preset["defaults"], **preset.get("kind_defaults", {}).get(kind, {})}
    filled = dict(data)
    for key, value in values.items():
        if key in cls.model_fields and key not in filled:
            filled[key] = value
    if "epochs" in data and "steps" not in data:
        filled.pop("steps", None)  # the user chose epochs: the preset's step count does not apply
    return filled


class _TrainSpecBase(SpecBase):
    """Fields shared by the three training kinds. Presets fill what the request leaves out."""

    version: Literal[1] = 1
    preset: TrainPresetName | None = Field(
        None, description="portrait-character | art-style | one-image-style: sane defaults and image-count bounds."
    )
    style_name: str = Field(
        pattern=STYLE_NAME_RE,
        description="Name of the trained style in its owner's models (`<lora:NAME:0.8>` in prompts).",
    )
    owner: str | None = Field(
        None, max_length=64,
        description="Owner of the style. The service sets it from the signed-in user (a different value is "
        "refused); the CLI may give it.",
    )  # fmt: skip
    images: list[ImageRef] = Field(min_length=1, max_length=200, description="Training images.")
    image_names: list[str] = Field(
        default_factory=list, max_length=200, description="File names of `images` (for messages); optional."
    )
    captions: list[str | None] = Field(
        default_factory=list, max_length=200,
        description="One caption per image (None = template); empty list = all from the template.",
    )  # fmt: skip
    base: str = Field(
        min_length=1, max_length=400,
        description="Base checkpoint: registry name, local diffusers folder (CLI) or hub id.",
    )  # fmt: skip
    arch: Literal["auto", "sd15", "sdxl"] = Field("auto", description="auto: from the checkpoint's keys.")
    trigger: str | None = Field(
        None, pattern=TRIGGER_RE, description="Trigger word / new token; default: the style name."
    )
    class_word: str = Field("person", min_length=1, max_length=100, description="`{class_word}` in templates.")
    caption_template: str = Field(
        "{trigger}", min_length=1, max_length=500,
        description="Caption of images without one; `{trigger}` and `{class_word}` are filled in.",
    )  # fmt: skip
    caption_prefix_trigger: bool = Field(
        True, description="Given captions without the trigger word get `<trigger>, ` in front."
    )
    resolution: int | None = Field(
        None, ge=32, le=2048, description="Training side (area = side²); default 512 (SD1.5) / 1024 (SDXL)."
    )
    buckets: bool = Field(False, description="Aspect-ratio buckets (area ~ resolution², sides step 64).")
    face_crop: bool = Field(False, description="Crop each image around its largest face (portraits).")
    batch_size: int = Field(1, ge=1, le=32)
    gradient_accumulation_steps: int = Field(1, ge=1, le=64)
    steps: int | None = Field(None, ge=1, le=100_000, description="Optimizer steps; default 1000 (or `epochs`).")
    epochs: int | None = Field(None, ge=1, le=10_000, description="Passes over the images instead of `steps`.")
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0)
    lr_scheduler: Literal["constant", "cosine", "linear"] = Field("constant", description="After the warm-up.")
    lr_warmup_steps: int = Field(0, ge=0, le=100_000, description="Linear warm-up from 0.")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto", description="auto: bf16 (else fp16) on a GPU, fp32 on the CPU."
    )
    gradient_checkpointing: bool = Field(False, description="Less memory, ~30% slower.")
    snr_gamma: float | None = Field(
        None, gt=0.0, le=100.0, description="Min-SNR loss weighting gamma (Hang et al. 2023; 5 is usual)."
    )
    noise_offset: float = Field(0.0, ge=0.0, le=1.0, description="Offset noise strength (0.05-0.1 usual).")
    prediction_type: Literal["auto", "epsilon", "v_prediction"] = Field(
        "auto", description="auto: the base scheduler's."
    )
    optimizer: Literal["adamw", "adamw8bit"] = Field(
        "adamw8bit", description="adamw8bit needs bitsandbytes and a GPU; otherwise AdamW is used (logged)."
    )
    weight_decay: float = Field(1e-2, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, ge=0.0, le=1000.0, description="Gradient clipping; 0 = none.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Same seed + same spec = same weights.")
    checkpoint_every: int = Field(
        250, ge=0, le=100_000, description="Save a resumable checkpoint every N steps; 0 = never."
    )
    sample_prompts: list[str] = Field(
        default_factory=list, max_length=8,
        description="Prompts of the sample images made at the end ({trigger}, {class_word} filled in); "
        "default: the caption template.",
    )  # fmt: skip
    sample_steps: int = Field(25, ge=1, le=150)
    sample_guidance: float = Field(7.0, ge=0.0, le=30.0)
    delete_images_after: bool = Field(
        False, description="Delete the uploaded training images when training succeeds (default on for faces)."
    )

    @field_validator("preset")
    @classmethod
    def _preset_kind(cls, v: str | None) -> str | None:
        kind = cls.model_fields["kind"].default
        if v is not None and kind not in TRAIN_PRESETS[v]["kinds"]:
            raise ValueError(f"preset {v!r} is for {', '.join(TRAIN_PRESETS[v]['kinds'])}, not {kind}")
        return v

    @field_validator("images")
    @classmethod
    def _preset_bounds(cls, v: list[str], info: Any) -> list[str]:
        preset = info.data.get("preset")
        if preset is not None:
            p = TRAIN_PRESETS[preset]
            if not p["min_images"] <= len(v) <= p["max_images"]:
                raise ValueError(
                    f"preset {preset!r} ({p['label']}) takes {p['min_images']}-{p['max_images']} images, "
                    f"got {len(v)}"
                )
        return v

    @field_validator("image_names", "captions")
    @classmethod
    def _same_length(cls, v: list[Any], info: Any) -> list[Any]:
        n = len(info.data.get("images") or [])
        if v and len(v) != n:
            raise ValueError(f"must have one entry per image ({n}), got {len(v)}")
        return v

    @field_validator("caption_template")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            v.format(trigger="x", class_word="y")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{trigger}} and {{class_word}} may be filled in ({exc})") from None
        return v

    @field_validator("epochs")
    @classmethod
    def _steps_or_epochs(cls, v: int | None, info: Any) -> int | None:
        if v is not None and info.data.get("steps") is not None:
            raise ValueError("give `steps` or `epochs`, not both")
        return v

    @field_validator("resolution")
    @classmethod
    def _res_multiple(cls, v: int | None) -> int | None:
        if v is not None and v % 8:
            raise ValueError("must be a multiple of 8")
        return v

    def effective_trigger(self) -> str:
        return self.trigger or self.style_name

    def effective_resolution(self, arch: str) -> int:
        return self.resolution or (1024 if arch == "sdxl" else 512)


class _LoraFields(_TrainSpecBase):
    rank: int = Field(16, ge=1, le=256, description="LoRA rank (dim).")
    alpha: float | None = Field(None, gt=0.0, le=1024.0, description="LoRA alpha; scale = alpha/rank. None = rank.")
    target_modules: list[LoraTarget] = Field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"], min_length=1, max_length=8,
        description="UNet modules that get a LoRA (attention projections by default).",
    )  # fmt: skip
    train_text_encoder: bool = Field(False, description="Also LoRA on the text encoders' attention.")
    text_encoder_lr: float | None = Field(None, gt=0.0, le=1.0, description="Default: learning_rate.")
    lora_dropout: float = Field(0.0, ge=0.0, le=0.9)


class TrainLoraSpec(_LoraFields):
    """Train a LoRA (kohya-style fine-tune of UNet attention) from images + captions."""

    kind: Literal["train_lora"] = "train_lora"

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        return _preset_defaults(cls, "train_lora", data)


class TrainDreamBoothSpec(_LoraFields):
    """DreamBooth-LoRA (Ruiz et al. 2023, arXiv:2208.12242): instance prompt `a photo of <trigger> <class>` and
    prior preservation on class images (generated by the base model when not given, cached and reused)."""

    kind: Literal["train_dreambooth"] = "train_dreambooth"
    caption_template: str = Field(
        "a photo of {trigger} {class_word}", min_length=1, max_length=500,
        description="The instance prompt (used for images without a caption).",
    )  # fmt: skip
    class_prompt: str | None = Field(None, max_length=500, description="Default: `a photo of {class_word}`.")
    prior_preservation: bool = Field(True, description="Add the prior-preservation loss on class images.")
    prior_loss_weight: float = Field(1.0, ge=0.0, le=10.0)
    num_class_images: int | None = Field(
        None, ge=1, le=1000,
        description="Class images used (generated if missing); default: 100 on a GPU, 8 on a CPU (each generated "
        "one costs a full sampling run).",
    )  # fmt: skip

    def class_image_count(self, on_gpu: bool) -> int:
        if self.class_images:
            return len(self.class_images)
        if self.num_class_images is not None:
            return self.num_class_images
        return 100 if on_gpu else 8
    class_images: list[ImageRef] = Field(
        default_factory=list, max_length=1000, description="Own class images; default: generated by the base."
    )
    class_image_steps: int = Field(25, ge=1, le=150, description="Sampling steps of generated class images.")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        return _preset_defaults(cls, "train_dreambooth", data)

    def effective_class_prompt(self) -> str:
        return (self.class_prompt or "a photo of {class_word}").format(class_word=self.class_word)


class TrainTISpec(_TrainSpecBase):
    """Textual inversion (Gal et al. 2022, arXiv:2208.01618): new token vectors; with `stages` > 1 the
    DreamStyler multi-stage variant (Ahn et al. 2024, arXiv:2309.06933): one embedding per timestep stage."""

    kind: Literal["train_ti"] = "train_ti"
    caption_template: str = Field(
        "a painting in the style of {trigger}", min_length=1, max_length=500,
        description="Caption of images without one; must contain {trigger}.",
    )  # fmt: skip
    learning_rate: float = Field(5e-3, gt=0.0, le=1.0)
    initializer_token: str = Field("style", min_length=1, max_length=100, description="Word the vectors start from.")
    num_vectors: int = Field(1, ge=1, le=16, description="Vectors per token (stage).")
    stages: int = Field(1, ge=1, le=16, description="Timestep stages with their own embedding (1 = classic TI).")
    ti_layout: Literal["emb_params", "string_to_param"] = Field(
        "emb_params", description="SD1.5 file layout (A1111 reads both); SDXL always uses clip_l / clip_g."
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        return _preset_defaults(cls, "train_ti", data)

    @field_validator("caption_template")
    @classmethod
    def _has_trigger(cls, v: str) -> str:
        if "{trigger}" not in v:
            raise ValueError("must contain {trigger} (the new token is learned from it)")
        return v


TRAIN_SPEC_TYPES: tuple[type[SpecBase], ...] = (TrainLoraSpec, TrainDreamBoothSpec, TrainTISpec)
TrainSpec = TrainLoraSpec | TrainDreamBoothSpec | TrainTISpec


