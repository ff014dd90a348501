"""Typed job specs: one pydantic model per job kind, a discriminated union on `kind`, versioned.

The same JSON is the REST body, the CLI's job file, the queue row and the OpenAPI schema.
Bounds live on the fields, so a bad value is refused before any heavy work starts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InputError

ImageRef = Annotated[
    str,
    Field(
        min_length=1,
        description="An input image: `blob:<sha256>` of a stored upload, a `data:image/...;base64,` URL, "
        "or raw base64. Local file paths are accepted only by the CLI, which stores the file first.",
    ),
]

Backend = Literal["auto", "neural", "classic"]
Gender = Literal["male", "female", "unspecified"]
Expression = Literal["smiling", "crying", "neutral", "angry", "laughing", "sad"]

MEMOJI_NEGATIVE_PROMPT = (
    "Pixelated design, distorted facial features, blurry rendering, overly detailed skin texture, "
    "animal-like characteristics, sharp or harsh expressions, low-quality resolution, unrecognizable face, "
    "unnatural colors, 3D effects"
)
MEMOJI_SEED = 2968506678
_EMAIL_FORBIDDEN = set("\r\n\t ,;<>\"'()[]\\")


def validate_email(value: str | None, field: str = "email") -> str | None:
    """Plain address `local@domain.tld`; no display names, no header-injection characters."""
    if value is None or value == "":
        return None
    if len(value) > 254 or any(c in _EMAIL_FORBIDDEN for c in value) or value.count("@") != 1:
        raise InputError(field, f"not a plain e-mail address: {value!r}", value)
    local, domain = value.split("@")
    if not local or "." not in domain or domain.startswith(".") or domain.endswith(".") or ".." in domain:
        raise InputError(field, f"not a plain e-mail address: {value!r}", value)
    return value


class SpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraRef(SpecBase):
    name: str = Field(min_length=1, max_length=200, description="LoRA name in the registry (file stem).")
    weight: float = Field(1.0, ge=-4.0, le=4.0, description="Strength; 0 leaves the base model unchanged.")


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


# --------------------------------------------------------------------------------------------------
# Generic generation (what the AUTOMATIC1111-compatible API translates into)
# --------------------------------------------------------------------------------------------------

CONTROLNET_MODULES: tuple[str, ...] = ("none", "canny", "invert")
_MODULE_ALIASES = {"invert (from white bg & black line)": "invert"}
CONTROLNET_RESIZE_MODES: tuple[str, ...] = ("Just Resize", "Crop and Resize", "Resize and Fill")
CONTROLNET_CONTROL_MODES: tuple[str, ...] = (
    "Balanced",
    "My prompt is more important",
    "ControlNet is more important",
)
ControlNetResizeMode = Literal["Just Resize", "Crop and Resize", "Resize and Fill"]
ControlNetControlMode = Literal["Balanced", "My prompt is more important", "ControlNet is more important"]


def _by_index(value: Any, names: tuple[str, ...]) -> Any:
    """sd-webui-controlnet also takes enum fields as their index (0, 1, 2)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    return value


class ControlNetUnit(SpecBase):
    """One ControlNet unit, as sd-webui-controlnet's API takes it (`alwayson_scripts.ControlNet.args[i]`).

    `pixel_perfect`: the preprocessor runs at the resolution that makes its map exactly the generation
    size (scale factor of `resize_mode` applied to the control image); without it, it runs with the short
    side at `processor_res` (-1 = 512) and the map is then resized to the generation size.
    """

    enabled: bool = Field(True, description="A disabled unit is skipped entirely.")
    module: str = Field(
        "none",
        description="Preprocessor: `canny` (OpenCV Canny, thresholds `threshold_a`/`threshold_b`), `invert` "
        "(255 - image: black lines on white -> white on black), `none` (the image already is the control map).",
    )
    model: str = Field(
        min_length=1, max_length=400,
        description="ControlNet in the registry: name, file name or A1111 title `name [hash]`.",
    )  # fmt: skip
    weight: float = Field(1.0, ge=0.0, le=2.0, description="Control strength (diffusers conditioning scale).")
    image: ImageRef | None = Field(
        None,
        description="Control image; default (img2img): the first init image, as sd-webui-controlnet does.",
    )
    resize_mode: ControlNetResizeMode = Field(
        "Crop and Resize",
        description="How the control map is fitted to the generation size (also 0, 1, 2): stretch, "
        "cover + centre crop, fit + black borders.",
    )
    processor_res: int = Field(
        -1, ge=-1, le=4096, description="Short side the preprocessor runs at; -1 = 512."
    )
    threshold_a: float = Field(-1, ge=-1, le=255, description="canny: low threshold; -1 = 100.")
    threshold_b: float = Field(-1, ge=-1, le=255, description="canny: high threshold; -1 = 200.")
    guidance_start: float = Field(0.0, ge=0.0, le=1.0, description="Active from this fraction of the steps.")
    guidance_end: float = Field(1.0, ge=0.0, le=1.0, description="Active until this fraction of the steps.")
    control_mode: ControlNetControlMode = Field(
        "Balanced",
        description="Balanced; 'My prompt is more important' (residuals scaled 0.825^(depth from the middle "
        "block)); 'ControlNet is more important' (the same scaling and control on the conditional half of "
        "classifier-free guidance only). Also 0, 1, 2.",
    )
    pixel_perfect: bool = Field(False, description="Preprocess at the generation resolution (see class doc).")
    low_vram: bool = Field(False, description="Accepted for compatibility; no effect on the image.")

    @field_validator("module", mode="before")
    @classmethod
    def _module(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        name = v.strip().lower()
        name = _MODULE_ALIASES.get(name, name)
        if name not in CONTROLNET_MODULES:
            raise ValueError(f"unknown ControlNet module {v!r}; supported: {', '.join(CONTROLNET_MODULES)}")
        return name

    @field_validator("resize_mode", mode="before")
    @classmethod
    def _resize_mode(cls, v: Any) -> Any:
        return _by_index(v, CONTROLNET_RESIZE_MODES)

    @field_validator("control_mode", mode="before")
    @classmethod
    def _control_mode(cls, v: Any) -> Any:
        return _by_index(v, CONTROLNET_CONTROL_MODES)

    @field_validator("guidance_end")
    @classmethod
    def _guidance_order(cls, v: float, info: Any) -> float:
        start = info.data.get("guidance_start", 0.0)
        if v < start:
            raise ValueError(f"must be >= guidance_start ({start})")
        return v


class GenerateSpec(SpecBase):
    """Generic Stable Diffusion 1.5 / SDXL generation with AUTOMATIC1111 semantics: txt2img, img2img,
    inpainting (mask), ControlNet units, LoRA tags in the prompt. Field names and defaults follow A1111's
    `/sdapi/v1/txt2img` and `/img2img` request bodies, so its API adapter only translates."""

    kind: Literal["generate"] = "generate"
    version: Literal[1] = 1
    mode: Literal["txt2img", "img2img"] = Field("txt2img", description="img2img needs `init_images`.")
    prompt: str = Field(
        "", max_length=20000, description="A1111 syntax: (emphasis:1.2), [less], BREAK, <lora:name:w>."
    )
    negative_prompt: str = Field("", max_length=20000)
    checkpoint: str = Field(
        min_length=1, max_length=400,
        description="SD1.5 or SDXL checkpoint: registry name, file name or A1111 title `name [hash]`.",
    )  # fmt: skip
    sampler_name: str = Field(
        "Euler a", max_length=100, description="A1111 sampler name (Euler a, DPM++ 2M, DDIM, ...)."
    )
    scheduler: str | None = Field(
        None, max_length=100, description="A1111 >= 1.9 schedule type (Automatic, Karras, Exponential, ...)."
    )
    steps: int = Field(20, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0.0, le=30.0)
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="-1 = random; image i uses seed + i (reported).")
    subseed: int = Field(-1, ge=-1, le=2**32 - 1, description="Variation seed; -1 = random.")
    subseed_strength: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Variation strength (honoured for txt2img; reported as ignored otherwise).",
    )
    seed_resize_from_w: int = Field(-1, ge=-1, le=8192, description="Not supported: values > 0 are reported.")
    seed_resize_from_h: int = Field(-1, ge=-1, le=8192, description="Not supported: values > 0 are reported.")
    width: int = Field(512, ge=8, le=4096, description="Multiple of 8.")
    height: int = Field(512, ge=8, le=4096, description="Multiple of 8.")
    batch_size: int = Field(1, ge=1, le=8, description="Images per denoising batch.")
    n_iter: int = Field(
        1, ge=1, le=100, description="Batches run one after the other (batch_size*n_iter images)."
    )
    clip_skip: int = Field(1, ge=1, le=12, description="A1111 CLIP skip (1 = last layer); SD1.5 only.")
    denoising_strength: float | None = Field(
        None, ge=0.0, le=1.0, description="img2img strength; default 0.75. Unused by txt2img (no hires fix)."
    )
    init_images: list[ImageRef] = Field(
        default_factory=list, max_length=1, validate_default=True,
        description="img2img: exactly one start image (txt2img: none).",
    )  # fmt: skip
    resize_mode: Literal[0, 1, 2, 3] = Field(
        0,
        description="Init image to width x height: 0 just resize, 1 crop and resize, 2 resize and fill, "
        "3 latent upscale (runs as 0 and is reported in info.ignored).",
    )
    mask: ImageRef | None = Field(
        None, description="Inpainting mask (img2img): white = repaint, black = keep."
    )
    mask_blur: int = Field(4, ge=0, le=64, description="Gaussian blur of the mask (A1111 kernel and sigma).")
    inpainting_fill: Literal[0, 1, 2, 3] = Field(
        0, description="Masked content: 0 fill, 1 original, 2 latent noise, 3 latent nothing."
    )
    inpainting_mask_invert: bool = Field(False, description="Repaint the black part of the mask instead.")
    inpaint_full_res: bool = Field(
        True,
        description="'Only masked': repaint the mask's box (+ padding) at width x height and paste it back "
        "into the full-size image (A1111 API default True).",
    )
    inpaint_full_res_padding: int = Field(0, ge=0, le=1024, description="Pixels around the mask's box.")
    controlnet_units: list[ControlNetUnit] = Field(
        default_factory=list, max_length=4, description="ControlNet units; several = MultiControlNet."
    )

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError("must be a multiple of 8")
        return v

    @field_validator("init_images")
    @classmethod
    def _init_images(cls, v: list[str], info: Any) -> list[str]:
        mode = info.data.get("mode")
        if mode == "img2img" and not v:
            raise ValueError("img2img needs one init image")
        if mode == "txt2img" and v:
            raise ValueError(f"txt2img takes no init images ({len(v)} given)")
        return v

    @field_validator("mask")
    @classmethod
    def _mask(cls, v: str | None, info: Any) -> str | None:
        if v is not None and info.data.get("mode") != "img2img":
            raise ValueError("a mask needs mode img2img")
        return v

    @field_validator("n_iter")
    @classmethod
    def _image_count(cls, v: int, info: Any) -> int:
        batch = info.data.get("batch_size", 1)
        if batch * v > 100:
            raise ValueError(f"batch_size * n_iter must be <= 100 (batch_size is {batch})")
        return v

    @field_validator("controlnet_units")
    @classmethod
    def _units(cls, v: list[ControlNetUnit], info: Any) -> list[ControlNetUnit]:
        if info.data.get("mode") == "txt2img":
            for i, unit in enumerate(v):
                if unit.enabled and unit.image is None:
                    raise ValueError(
                        f"unit {i}: txt2img needs the unit's own `image` (no init image to default to)"
                    )
        return v

    def used_strength(self) -> float | None:
        """Denoising strength img2img runs with (A1111 default 0.75); None for txt2img."""
        if self.mode == "txt2img":
            return None
        return 0.75 if self.denoising_strength is None else self.denoising_strength


# --------------------------------------------------------------------------------------------------
# Personalization training (issue 5): LoRA, DreamBooth-LoRA, textual inversion. Their runs live in
# `toonbooth.training`; the preset tables are here because the specs fill their defaults from them.
# --------------------------------------------------------------------------------------------------

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
            "num_class_images": 100,
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
    if not isinstance(data, dict) or data.get("preset") is None:
        return data
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
    num_class_images: int = Field(100, ge=1, le=1000, description="Class images used (generated if missing).")
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


# --------------------------------------------------------------------------------------------------
# Anime-me (seed 002): click a person, erase them, redraw them as an anime character, put them back
# --------------------------------------------------------------------------------------------------

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


# Add a kind: define its spec above and append it here.
JOB_SPEC_TYPES: tuple[type[SpecBase], ...] = (AvatarSpec, GenerateSpec, *TRAIN_SPEC_TYPES, AnimeSpec)

if len(JOB_SPEC_TYPES) > 1:  # pragma: no cover - becomes the normal branch once a second kind lands
    JobSpec = Annotated[Union[JOB_SPEC_TYPES], Field(discriminator="kind")]  # type: ignore[valid-type]
else:
    JobSpec = AvatarSpec  # type: ignore[misc]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(JobSpec)


def job_kinds() -> list[str]:
    return [t.model_fields["kind"].default for t in JOB_SPEC_TYPES]


def parse_job_spec(data: dict[str, Any] | str | bytes) -> SpecBase:
    """Validate a job spec from a dict or JSON; errors become an InputError naming the field."""
    try:
        if isinstance(data, (str, bytes)):
            return _ADAPTER.validate_json(data)
        kind = data.get("kind") if isinstance(data, dict) else None
        if isinstance(data, dict) and kind is None and len(JOB_SPEC_TYPES) > 1:
            raise InputError("kind", f"is required; known: {', '.join(job_kinds())}", None)
        if kind is not None and kind not in job_kinds():
            raise InputError("kind", f"unknown job kind {kind!r}; known: {', '.join(job_kinds())}", kind)
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise input_error_from_validation(exc) from None


def input_error_from_validation(exc: ValidationError) -> InputError:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    if len(JOB_SPEC_TYPES) > 1 and loc and loc[0] in job_kinds():  # the union's tag is not a field
        loc = loc[1:]
    field = ".".join(str(p) for p in loc) or "body"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    if isinstance(value, str) and len(value) > 80:
        shown = repr(value[:80] + "...")
    return InputError(field, f"{err.get('msg', 'invalid')}, got {shown}", value)
