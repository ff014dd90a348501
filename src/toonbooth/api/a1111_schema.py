"""AUTOMATIC1111 web UI API request models and their translation into a toonbooth `GenerateSpec`.

Field names, types and defaults mirror stable-diffusion-webui's `modules/api/models.py`
(`StableDiffusionTxt2ImgProcessingAPI`, `StableDiffusionImg2ImgProcessingAPI`, built from
`StableDiffusionProcessingTxt2Img` / `Img2Img` plus the API's extra fields) and sd-webui-controlnet's
`external_code.ControlNetUnit` (its `alwayson_scripts.ControlNet.args`). Like A1111, booleans are
accepted as JSON booleans or as strings ("True", "false", "1", ...), and fields the request model does
not know are accepted. Unlike A1111, a field that would change the image and that toonbooth does not
honour is not dropped silently: it is listed in the response's `info.ignored` with the reason in
`info.warnings`.

The adapter only translates: every request becomes one `generate` job spec (`core/specs.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import InputError

A1111_SAMPLER_DEFAULT = "Euler"  # A1111 API: sampler_index defaults to "Euler"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class A1111ControlNetUnit(_Lenient):
    """One unit of `alwayson_scripts.ControlNet.args` (sd-webui-controlnet API)."""

    enabled: bool = True
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: str | dict[str, Any] | None = Field(
        None,
        description="Control image (base64 / data URL), or {image, mask} as sd-webui-controlnet accepts.",
    )
    input_image: str | None = Field(None, description="Older name of `image`.")
    mask: str | None = None
    mask_image: str | None = None
    resize_mode: int | str = "Crop and Resize"
    low_vram: bool = False
    lowvram: bool | None = None
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: int | str = "Balanced"
    guessmode: bool | None = None
    save_detected_map: bool = True
    hr_option: str | int = "Both"


class A1111Base(_Lenient):
    """Fields shared by txt2img and img2img (`StableDiffusionProcessing` + the API's own)."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str = Field(A1111_SAMPLER_DEFAULT, description="Older name of sampler_name.")
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    distilled_cfg_scale: float | None = None
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None


class A1111Txt2ImgRequest(A1111Base):
    """`POST /sdapi/v1/txt2img` body."""

    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    hr_distilled_cfg: float | None = None
    hr_cfg: float | None = None
    hr_additional_modules: list[str] | None = None


class A1111Img2ImgRequest(A1111Base):
    """`POST /sdapi/v1/img2img` body."""

    init_images: list[str] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int | bool = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


class A1111ImageResponse(BaseModel):
    """A1111's `TextToImageResponse` / `ImageToImageResponse`."""

    images: list[str] | None = Field(None, description="Base64 PNGs (with their `parameters` text chunk).")
    parameters: dict[str, Any]
    info: str = Field(
        description="JSON string: A1111 `Processed.js()` fields, `job_id`, `ignored`, `warnings`."
    )


# --------------------------------------------------------------------------------------------------
# Translation
# --------------------------------------------------------------------------------------------------

# override_settings keys: honoured here, or known not to change the image
OVERRIDES_HONOURED = {"sd_model_checkpoint", "CLIP_stop_at_last_layers", "sd_vae"}
OVERRIDES_NO_IMAGE_EFFECT = {
    "samples_format", "samples_save", "save_images_add_number", "grid_save", "send_seed", "send_size",
    "jpeg_quality", "export_for_4chan", "img2img_fix_steps", "enable_pnginfo", "save_txt", "outdir_samples",
    "outdir_txt2img_samples", "outdir_img2img_samples", "live_previews_enable", "show_progress_every_n_steps",
    "sd_checkpoint_hash", "sd_model_checkpoint_hash", "samples_filename_pattern", "save_to_dirs",
}  # fmt: skip
_VAE_DEFAULTS = {None, "", "Automatic", "None", "auto"}
_CONTROLNET_SCRIPT = "controlnet"
# sd-webui-controlnet unit fields that do not change the image
_UNIT_NO_EFFECT = {"save_detected_map", "low_vram", "lowvram", "hr_option", "is_ui", "input_mode", "batch_images",
                   "output_dir", "loopback", "use_preview_as_input", "generated_image", "enabled"}  # fmt: skip


@dataclass
class Translation:
    """The job spec (JSON) a request becomes, and the request fields accepted but not honoured."""

    spec: dict[str, Any]
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def ignore(self, name: str, why: str) -> None:
        if name not in self.ignored:
            self.ignored.append(name)
            self.warnings.append(f"`{name}` not honoured: {why}")


def _is_set(value: Any, default: Any = None) -> bool:
    return value is not None and value != default


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on", "t", "y"}
    return bool(value)


def _unit_image(unit: A1111ControlNetUnit, index: int, tr: Translation) -> str | None:
    image = unit.image if unit.image is not None else unit.input_image
    if isinstance(image, dict):
        if image.get("mask") not in (None, ""):
            tr.ignore(f"controlnet_units.{index}.image.mask", "ControlNet unit masks are not supported")
        image = image.get("image")
        if image is not None and not isinstance(image, str):
            raise InputError(
                f"alwayson_scripts.ControlNet.args.{index}.image.image", "must be a base64 image", image
            )
    if unit.mask or unit.mask_image:
        tr.ignore(f"controlnet_units.{index}.mask", "ControlNet unit masks are not supported")
    return image or None


def translate_controlnet(scripts: dict[str, Any], tr: Translation) -> list[dict[str, Any]]:
    """`alwayson_scripts` -> spec `controlnet_units` (disabled units dropped); other scripts reported."""
    units: list[dict[str, Any]] = []
    for script_name, script in scripts.items():
        if script_name.strip().lower() != _CONTROLNET_SCRIPT:
            tr.ignore(f"alwayson_scripts.{script_name}", "this script/extension is not available")
            continue
        args = script.get("args", []) if isinstance(script, dict) else script
        if not isinstance(args, list):
            raise InputError(
                f"alwayson_scripts.{script_name}.args", "must be a list of ControlNet units", args
            )
        for i, raw in enumerate(args):
            where = f"alwayson_scripts.{script_name}.args.{i}"
            if not isinstance(raw, dict):
                raise InputError(
                    where,
                    "each ControlNet unit must be a JSON object (positional args are not supported)",
                    raw,
                )
            if "enabled" not in raw and str(raw.get("model") or "None").strip() in ("", "None", "none"):
                continue  # Forge / newer clients send every unit slot: one without a model is unused
            try:
                unit = A1111ControlNetUnit.model_validate(raw)
            except ValidationError as exc:
                err = exc.errors()[0]
                sub = ".".join(str(p) for p in err.get("loc", ()))
                raise InputError(
                    f"{where}.{sub}", f"{err.get('msg')}, got {err.get('input')!r}"[:300], err.get("input")
                ) from None
            if not unit.enabled:
                continue
            if unit.model.strip() in ("", "None", "none"):
                raise InputError(
                    f"{where}.model",
                    "an enabled ControlNet unit needs a model (see /controlnet/model_list)",
                    unit.model,
                )
            n = len(units)
            spec_unit: dict[str, Any] = {
                "enabled": True,
                "module": unit.module,
                "model": unit.model,
                "weight": unit.weight,
                "image": _unit_image(unit, n, tr),
                "resize_mode": unit.resize_mode,
                "processor_res": unit.processor_res,
                "threshold_a": unit.threshold_a,
                "threshold_b": unit.threshold_b,
                "guidance_start": unit.guidance_start,
                "guidance_end": unit.guidance_end,
                "control_mode": unit.control_mode,
                "pixel_perfect": unit.pixel_perfect,
                "low_vram": bool(unit.low_vram or unit.lowvram),
            }
            if unit.guessmode:
                tr.ignore(f"controlnet_units.{n}.guessmode", "guess mode is the old name of "
                          "'ControlNet is more important': set control_mode instead")  # fmt: skip
            for extra in sorted(unit.model_extra or {}):
                if extra not in _UNIT_NO_EFFECT:
                    tr.ignore(f"controlnet_units.{n}.{extra}", "not a supported ControlNet unit field")
            units.append(spec_unit)
    return units


_SAME_NAMES = {"", "use same checkpoint", "use same sampler", "use same scheduler", "none"}


def translate_hires(req: A1111Txt2ImgRequest, spec: dict[str, Any], tr: Translation) -> None:
    """txt2img hires fix fields -> the spec's (A1111 `StableDiffusionProcessingTxt2Img`)."""
    if not req.enable_hr:
        return  # (denoising_strength without hires fix is unused by A1111 too)
    spec.update(
        enable_hr=True, hr_scale=req.hr_scale, hr_resize_x=req.hr_resize_x, hr_resize_y=req.hr_resize_y,
        hr_upscaler=req.hr_upscaler or "Latent", hr_second_pass_steps=req.hr_second_pass_steps,
        hr_prompt=req.hr_prompt, hr_negative_prompt=req.hr_negative_prompt,
        denoising_strength=req.denoising_strength,
    )  # fmt: skip
    for name, key in (("hr_checkpoint_name", "hr_checkpoint"), ("hr_sampler_name", "hr_sampler_name"),
                      ("hr_scheduler", "hr_scheduler")):  # fmt: skip
        value = getattr(req, name)
        if isinstance(value, str) and value.strip().lower() not in _SAME_NAMES:
            spec[key] = value
    if req.firstphase_width or req.firstphase_height:
        tr.ignore("firstphase_width", "A1111 >= 1.0 ignores it too: width x height is the first pass")
    if req.hr_cfg is not None and req.hr_cfg != req.cfg_scale:
        tr.ignore("hr_cfg", f"the second pass uses cfg_scale ({req.cfg_scale:g}), as A1111 does")
    if req.hr_distilled_cfg is not None:
        tr.ignore("hr_distilled_cfg", "only Flux-style distilled models use it")
    if req.hr_additional_modules:
        tr.ignore("hr_additional_modules", "Forge's extra modules are not supported")


def translate(
    req: A1111Base,
    mode: str,
    *,
    default_checkpoint: str | None,
    options: dict[str, Any] | None = None,
) -> Translation:
    """An A1111 request -> `GenerateSpec` JSON (not yet validated: `parse_job_spec` does that and names
    the field) plus the list of fields accepted but not honoured."""
    options = options or {}
    overrides = dict(req.override_settings or {})
    tr = Translation(spec={})

    # 1. Checkpoint: override_settings, else the caller's options, else the server default
    checkpoint = (
        overrides.get("sd_model_checkpoint") or options.get("sd_model_checkpoint") or default_checkpoint
    )
    if not checkpoint:
        raise InputError(
            "override_settings.sd_model_checkpoint",
            "no checkpoint given and none is installed (see /sdapi/v1/sd-models)",
            None,
        )
    clip_skip = overrides.get("CLIP_stop_at_last_layers", options.get("CLIP_stop_at_last_layers", 1))
    sampler = req.sampler_name or req.sampler_index or A1111_SAMPLER_DEFAULT
    spec: dict[str, Any] = {
        "kind": "generate",
        "mode": mode,
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "checkpoint": checkpoint,
        "sampler_name": sampler,
        "scheduler": req.scheduler,
        "steps": req.steps,
        "cfg_scale": req.cfg_scale,
        "seed": req.seed,
        "subseed": req.subseed,
        "subseed_strength": req.subseed_strength,
        "seed_resize_from_w": req.seed_resize_from_w,
        "seed_resize_from_h": req.seed_resize_from_h,
        "width": req.width,
        "height": req.height,
        "batch_size": req.batch_size,
        "n_iter": req.n_iter,
        "clip_skip": clip_skip,
    }
    # 2. Mode-specific fields
    if isinstance(req, A1111Img2ImgRequest):
        spec["init_images"] = list(req.init_images or [])
        spec["denoising_strength"] = req.denoising_strength
        spec["resize_mode"] = req.resize_mode
        if req.mask:
            spec["mask"] = req.mask
            blur = req.mask_blur
            if blur is None:
                blur = req.mask_blur_x
                if req.mask_blur_y != req.mask_blur_x:
                    tr.ignore(
                        "mask_blur_y", f"one blur for both axes: mask_blur_x ({req.mask_blur_x}) is used"
                    )
            spec["mask_blur"] = blur
            spec["inpainting_fill"] = req.inpainting_fill
            spec["inpainting_mask_invert"] = _truthy(req.inpainting_mask_invert)
            spec["inpaint_full_res"] = req.inpaint_full_res
            spec["inpaint_full_res_padding"] = req.inpaint_full_res_padding
            if not req.mask_round:
                tr.ignore("mask_round", "the latent mask is always rounded")
        if req.image_cfg_scale is not None:
            tr.ignore("image_cfg_scale", "only instruct-pix2pix models use it; none is supported")
        if _is_set(req.initial_noise_multiplier, 1.0):
            tr.ignore("initial_noise_multiplier", "the initial noise is never scaled")
        if req.latent_mask:
            tr.ignore("latent_mask", "a separate latent mask is not supported")
        if req.include_init_images:
            tr.ignore("include_init_images", "init images are not echoed back")
    elif isinstance(req, A1111Txt2ImgRequest):
        translate_hires(req, spec, tr)
    # 3. ControlNet units
    units = translate_controlnet(req.alwayson_scripts, tr)
    if units:
        spec["controlnet_units"] = units
    # 4. Everything accepted but not honoured
    if req.restore_faces:
        tr.ignore("restore_faces", "no face restoration model is available")
    spec["tiling"] = bool(req.tiling)
    spec["styles"] = list(req.styles or [])
    spec["unknown_names"] = "warn"  # A1111 generates without an unknown network / style and says so
    vae = overrides.get("sd_vae", options.get("sd_vae"))
    if vae not in _VAE_DEFAULTS:
        spec["vae"] = vae
    if req.eta is not None:
        tr.ignore("eta", "the sampler's own default eta is used")
    for name, default in (("s_min_uncond", 0.0), ("s_churn", 0.0), ("s_tmin", 0.0), ("s_noise", 1.0)):
        if _is_set(getattr(req, name), default):
            tr.ignore(name, "sampler parameter not supported")
    if req.s_tmax is not None and req.s_tmax not in (0.0, math.inf):
        tr.ignore("s_tmax", "sampler parameter not supported")
    if req.distilled_cfg_scale is not None:
        tr.ignore("distilled_cfg_scale", "only Flux-style distilled models use it")
    if req.refiner_checkpoint not in (None, "", "None"):
        tr.ignore("refiner_checkpoint", "the SDXL refiner is not supported")
    if req.firstpass_image:
        tr.ignore("firstpass_image", "hires fix always makes its own first pass")
    if req.script_name:
        tr.ignore("script_name", f"scripts are not available ({req.script_name!r})")
    if req.infotext:
        tr.ignore("infotext", "parameters are not read from infotext; send them as fields")
    if req.disable_extra_networks:
        tr.ignore("disable_extra_networks", "<lora:...> tags in the prompt are always applied")
    if overrides.get("eta_noise_seed_delta", options.get("eta_noise_seed_delta", 0)) not in (0, None):
        tr.ignore("override_settings.eta_noise_seed_delta", "ENSD is not supported")
    for key in sorted(overrides):
        if key not in OVERRIDES_HONOURED | OVERRIDES_NO_IMAGE_EFFECT | {"eta_noise_seed_delta"}:
            tr.ignore(f"override_settings.{key}", "unknown or unsupported setting")
    for key in sorted(req.model_extra or {}):
        tr.ignore(key, "not a field of the AUTOMATIC1111 API (A1111 drops it too)")
    tr.spec = spec
    return tr


def echo_parameters(req: A1111Base) -> dict[str, Any]:
    """The response's `parameters`: the request as A1111 returns it (images left out, as A1111 does)."""
    data = req.model_dump(mode="json")
    for key in ("init_images", "mask"):
        if key in data:
            data[key] = None
    for script in data.get("alwayson_scripts", {}).values():
        if isinstance(script, dict) and isinstance(script.get("args"), list):
            for unit in script["args"]:
                if isinstance(unit, dict):
                    for key in ("image", "input_image", "mask", "mask_image"):
                        if key in unit:
                            unit[key] = None
    return data
