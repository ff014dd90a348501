"""Generic generation job spec: what the AUTOMATIC1111-compatible API translates into."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import ImageRef, SpecBase

CONTROLNET_MODULES: tuple[str, ...] = ("none", "canny", "invert", "openpose", "openpose_full", "dw_openpose_full")
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
        "(255 - image: black lines on white -> white on black), `none` (the image already is the control map), "
        "`openpose` (body), `openpose_full` / `dw_openpose_full` (body, hands, face): DWPose skeleton drawn as "
        "ControlNet-openpose expects (needs the DWPose ONNX pair).",
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
        None, ge=0.0, le=1.0,
        description="img2img strength, and the hires-fix second pass's; default 0.75 (A1111). Unused by plain txt2img.",
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
    styles: list[str] = Field(
        default_factory=list, max_length=20,
        description="A1111 prompt styles (`styles.csv` in the models or data folder) applied in order to the "
        "prompt and negative prompt: a style's `{prompt}` is replaced by the prompt, else it is appended.",
    )  # fmt: skip
    unknown_names: Literal["error", "warn"] = Field(
        "error",
        description="A LoRA tag or prompt style that names nothing installed: `error` refuses the job (422, "
        "the native API's default); `warn` generates without it and says so in `warnings` (what A1111 does; "
        "the A1111 routes send this).",
    )
    tiling: bool = Field(
        False, description="Seamless tiling: the UNet's and VAE's convolutions pad circularly (A1111 `tiling`)."
    )
    vae: str | None = Field(
        None, max_length=400,
        description="VAE in place of the checkpoint's own (models/VAE, e.g. the SDXL fp16-fix VAE); "
        "None / `Automatic` / `None` = the checkpoint's own (A1111 `sd_vae`).",
    )  # fmt: skip
    # --- hires fix (txt2img): A1111's second pass at a larger size ---
    enable_hr: bool = Field(
        False, description="Hires fix: generate at width x height, upscale, then img2img at the larger size."
    )
    hr_scale: float = Field(2.0, ge=1.0, le=8.0, description="Hires fix factor (when hr_resize_x/y are 0).")
    hr_resize_x: int = Field(0, ge=0, le=8192, description="Hires fix target width (0 = from hr_scale / height).")
    hr_resize_y: int = Field(0, ge=0, le=8192, description="Hires fix target height (0 = from hr_scale / width).")
    hr_upscaler: str = Field(
        "Latent", min_length=1, max_length=200,
        description="Latent, Latent (antialiased), Latent (bicubic), Latent (bicubic antialiased), "
        "Latent (nearest), Latent (nearest-exact), None, Lanczos, Nearest, or an ESRGAN-family upscaler's name.",
    )  # fmt: skip
    hr_second_pass_steps: int = Field(
        0, ge=0, le=150, description="Denoising steps the second pass runs (0 = `steps`), as A1111 counts them."
    )
    hr_checkpoint: str | None = Field(
        None, max_length=400, description="Checkpoint of the second pass (same architecture); None = the same."
    )
    hr_sampler_name: str | None = Field(None, max_length=100, description="Second-pass sampler; None = the same.")
    hr_scheduler: str | None = Field(None, max_length=100, description="Second-pass schedule type; None = the same.")
    hr_prompt: str = Field("", max_length=20000, description="Second-pass prompt; empty = the prompt.")
    hr_negative_prompt: str = Field("", max_length=20000, description="Second-pass negative prompt; empty = the same.")

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

    @field_validator("enable_hr")
    @classmethod
    def _hires_txt2img(cls, v: bool, info: Any) -> bool:
        if v and info.data.get("mode") != "txt2img":
            raise ValueError("hires fix is a txt2img option (A1111 has none for img2img)")
        return v

    def hires_strength(self) -> float:
        """Second-pass denoising strength of hires fix (A1111's txt2img default 0.75)."""
        return 0.75 if self.denoising_strength is None else self.denoising_strength

    def used_strength(self) -> float | None:
        """Denoising strength img2img runs with (A1111 default 0.75); None for txt2img."""
        if self.mode == "txt2img":
            return None
        return 0.75 if self.denoising_strength is None else self.denoising_strength


