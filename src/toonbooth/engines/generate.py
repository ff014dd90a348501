"""Generic Stable Diffusion 1.5 / SDXL generation with AUTOMATIC1111 semantics (the `generate` job kind).

Every `/sdapi/v1/txt2img` and `/img2img` request of an A1111 client becomes one `GenerateSpec` and runs
here. Behaviour follows stable-diffusion-webui (https://github.com/AUTOMATIC1111/stable-diffusion-webui)
and sd-webui-controlnet (https://github.com/Mikubill/sd-webui-controlnet), on diffusers pipelines:

* Seeds (`modules/processing.py`): image i of the job uses `seed + i` (and `subseed + i`); each image's
  start noise comes from its own CPU generator, so an image does not depend on its batch. Variation seeds
  (`subseed_strength`) are honoured for txt2img: start noise = A1111's `slerp` of the two noises, taken
  along the same tensor axis A1111 uses (dim 1 of the C x H x W noise).
* img2img (`StableDiffusionProcessingImg2Img.init`, `modules/images.resize_image`): the init image is fitted
  to width x height by `resize_mode` (0 stretch, 1 cover + centre crop, 2 fit + edge-stretched borders);
  A1111 runs int(steps * denoising_strength) steps, as diffusers does.
* Inpainting (same place, `modules/masking.py`): the mask is binarised at 128, optionally inverted,
  blurred with A1111's separable Gaussian (kernel 2*int(2.5*blur+0.5)+1, sigma = mask_blur); "only masked"
  (`inpaint_full_res`) repaints the mask's box plus padding, widened to the width/height aspect, at
  width x height and pastes it back into the full-size picture. Masked content: 0 fill (masked area
  pre-filled with blurred surrounding colours, A1111 `masking.fill`), 1 original, 2 latent noise, 3 latent
  nothing (the init latents inside the rounded latent mask replaced by seeded unit noise / zeros; the
  pixel fill runs first for 0, 2 and 3, as in A1111). Normal checkpoints run diffusers' inpaint pipelines
  with their 4-channel UNet (the area outside the latent mask re-noised from the init latents every step,
  like A1111's masked sampling); inpainting checkpoints (9-channel UNet) get the rounded pixel mask and the
  masked image as conditioning, and are used through their inpaint pipeline for txt2img and plain img2img
  too (full mask), as A1111 conditions them. Finally, as A1111's `apply_overlay`, the original picture is
  pasted back outside the (blurred; doubled and clipped for whole-picture inpainting) mask.
* ControlNet units (sd-webui-controlnet `external_code.ControlNetUnit`): modules `canny` (OpenCV, thresholds
  `threshold_a`/`threshold_b`, default 100/200), `invert`, `none`; the preprocessor runs at `processor_res`
  (or, with `pixel_perfect`, at the resolution whose map is exactly the generation size), and the map is
  fitted with the unit's resize mode; binary maps stay binary (re-thresholded at 127 after resizing).
  Control modes: "My prompt is more important" scales the residuals by 0.825^(depth from the middle
  block) (soft injection); "ControlNet is more important" also removes the control from the unconditional
  half of classifier-free guidance (cfg injection) — applied per unit with forward hooks on the
  ControlNet models, so units can differ. Several units run as a diffusers MultiControlNetModel.
* Pose modules `openpose` (body), `openpose_full` and `dw_openpose_full` (body, hands, face): DWPose (the
  `dwpose` ONNX pair) at the preprocessor resolution, drawn in the ControlNet-openpose convention
  (`nets.openpose_detect.unit_pose_map`), then fitted like any map; nobody found = a black map (as the
  extension) and a warning.
* Every image gets A1111 infotext; `GenerateOutput` carries the typed facts A1111's `Processed.js()` is made
  of (the A1111 adapter builds that dict), plus `ignored`: the request fields that were accepted but not
  honoured (their reasons are in `warnings`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import BaseModel

from ..core.artifacts import ImageArtifact
from ..core.errors import (
    BackendUnavailableError,
    InputError,
    JobCanceledError,
    ModelError,
    ModelNotFoundError,
)
from ..core.settings import Settings
from ..core.specs import ControlNetUnit, GenerateSpec
from ..models import sd
from ..models.infotext import sd_infotext, version_text
from ..models.manager import ModelManager
from ..models.refs import ModelRef
from ..models.seeds import job_seeds, variation_noise
from ..nets.prompt_translate import (
    PromptText,
    PromptTranslation,
    check_prompt_translation,
    protected_words,
    translate_job_prompts,
    translation_params,
)
from ..vision.a1111_image import (
    binary_mask,
    blur_mask,
    crop_region,
    expand_crop_region,
    fill_masked,
    latent_mask_blocks,
    paste_region,
    resize_image,
)
from ..vision.control import POSE_MODULES, canny_thresholds, control_map, unit_text
from .base import Engine, EngineContext, EngineOutput, JobCost, resolve_or_field_error

SUPPORTED_ARCHS = ("sd15", "sdxl")
MASKED_CONTENT = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}

_PIPELINES = {
    ("sd15", "txt2img", False): "StableDiffusionPipeline",
    ("sd15", "img2img", False): "StableDiffusionImg2ImgPipeline",
    ("sd15", "inpaint", False): "StableDiffusionInpaintPipeline",
    ("sd15", "txt2img", True): "StableDiffusionControlNetPipeline",
    ("sd15", "img2img", True): "StableDiffusionControlNetImg2ImgPipeline",
    ("sd15", "inpaint", True): "StableDiffusionControlNetInpaintPipeline",
    ("sdxl", "txt2img", False): "StableDiffusionXLPipeline",
    ("sdxl", "img2img", False): "StableDiffusionXLImg2ImgPipeline",
    ("sdxl", "inpaint", False): "StableDiffusionXLInpaintPipeline",
    ("sdxl", "txt2img", True): "StableDiffusionXLControlNetPipeline",
    ("sdxl", "img2img", True): "StableDiffusionXLControlNetImg2ImgPipeline",
    ("sdxl", "inpaint", True): "StableDiffusionXLControlNetInpaintPipeline",
}


def pipeline_name(arch: str, route: str, controlnet: bool) -> str:
    """diffusers pipeline class for arch (sd15 | sdxl) x route (txt2img | img2img | inpaint) x ControlNet."""
    return _PIPELINES[(arch, route, controlnet)]


class GenerateFacts(BaseModel):
    """What A1111's `Processed` reports about a generate job's images (stored as the job's info; the A1111
    adapter builds `Processed.js()` from it)."""

    prompt: str
    negative_prompt: str
    seeds: list[int]
    subseeds: list[int]
    subseed_strength: float
    width: int
    height: int
    sampler_name: str
    scheduler: str
    cfg_scale: float
    steps: int
    batch_size: int
    n_iter: int
    sd_model_name: str
    sd_model_hash: str | None
    seed_resize_from_w: int
    seed_resize_from_h: int
    denoising_strength: float | None
    extra_generation_params: dict[str, Any]
    infotexts: list[str]
    clip_skip: int
    is_using_inpainting_conditioning: bool
    job_timestamp: str
    version: str
    pipeline: str
    loras: list[dict[str, Any]]
    embeddings: list[dict[str, Any]]
    ignored: list[str]
    translations: list[PromptTranslation] = []
    """Korean prompts: the original and what the text encoder got (`prompt` / `negative_prompt` above are
    the translated ones; the infotext keeps the original as `Original prompt`)."""
    styles: list[str] = []
    sd_vae_name: str | None = None
    sd_vae_hash: str | None = None
    hires_size: list[int] | None = None  # the images' size with hires fix (width/height are the first pass's)
    interrupted: bool = False  # /interrupt: the images are what was made so far
    skipped: list[int] = []  # batches (n_iter index) ended early by /skip


class GenerateOutput(EngineOutput, GenerateFacts):
    """The images of a generate job (image-0, image-1, ...) and their facts."""

    primary: ClassVar[str] = "images"
    item_names: ClassVar[dict[str, str]] = {"images": "image-{i}"}

    images: list[ImageArtifact]


# --------------------------------------------------------------------------------------------------
# Checking (no weights loaded)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Unit:
    index: int
    spec: ControlNetUnit
    entry: Any
    model: Any = None
    image: Image.Image | None = None


@dataclass
class _Hires:
    """The hires-fix plan (A1111 `StableDiffusionProcessingTxt2Img.calculate_target_resolution`)."""

    upscale_to: tuple[int, int]  # size the first pass is upscaled to (multiples of 8)
    size: tuple[int, int]  # final size after the centre crop of hr_resize_x x hr_resize_y
    upscaler: str
    latent_mode: str | None  # a Latent* mode, else None (pixel upscaler)
    steps: int  # denoising steps the second pass runs
    strength: float
    entry: Any  # checkpoint of the second pass
    sampler: str
    schedule: str
    prompt: str  # without LoRA tags
    negative_prompt: str
    loras: list[tuple[str, float]]
    params: dict[str, Any] = field(default_factory=dict)  # infotext fields


@dataclass
class _Checked:
    entry: Any
    arch: str
    sampler: str
    schedule: str
    prompt_text: str
    loras: list[tuple[str, float]]
    units: list[_Unit]
    seeds: list[int]
    subseeds: list[int]
    strength: float | None
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    prompt: str = ""  # with styles applied (what infotext shows)
    negative_prompt: str = ""
    vae: Any = None
    hires: _Hires | None = None


_VAE_AUTOMATIC = {"", "automatic", "none", "auto"}
_SAME = {"", "use same checkpoint", "use same sampler", "use same scheduler", "use same"}


def _same(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() in _SAME else value


def resolve_lora_tags(
    tags: list[Any], models: ModelManager, owner: str | None, arch: str, strict: bool, warnings: list[str],
    field_name: str = "prompt",
) -> list[tuple[str, float]]:  # fmt: skip
    """(registry name, weight) of each `<lora:...>` tag, resolved as A1111 does: the file name, then the
    alias the file carries (`ss_output_name`), then the catalog's names (`memoji` -> memoji-07). An unknown
    name is an InputError naming `field_name` when `strict`, else a warning (A1111 generates without it)."""
    out: list[tuple[str, float]] = []
    for tag in tags:
        try:
            lora = models.entry(tag.name, "lora", owner)
            if lora.source not in ("folder", "diffusers-folder"):
                raise ModelNotFoundError(f"no installed LoRA called {tag.name!r}")
        except (ModelNotFoundError, ModelError):
            known = models.registry.names("lora", owner)
            message = f"unknown LoRA '{tag.name}'; known: {', '.join(known) if known else '(none)'}"
            if strict:
                raise InputError(field_name, message, tag.name) from None
            warnings.append(f"{message} — generated without it (as A1111 does)")
            continue
        if lora.arch not in (arch, "unknown"):
            message = f"LoRA {tag.name!r} is for {lora.arch}, the checkpoint is {arch}"
            if strict:
                raise InputError(field_name, message, tag.name)
            warnings.append(f"{message} — generated without it")
            continue
        if tag.unet_weight != tag.weight:
            warnings.append(f"`{field_name}` <lora:{tag.name}:...> has a separate UNet weight {tag.unet_weight:g}; "
                            f"both parts use {tag.weight:g}")  # fmt: skip
        out.append((lora.name, tag.weight))
    return out


def hires_sizes(spec: GenerateSpec) -> tuple[tuple[int, int], tuple[int, int], dict[str, Any]]:
    """(upscale_to, final size, infotext fields) of hires fix, as A1111 computes them; sizes are floored to
    multiples of 8 (the latent grid)."""
    w, h = spec.width, spec.height
    params: dict[str, Any] = {}
    rx, ry = spec.hr_resize_x, spec.hr_resize_y
    if rx == 0 and ry == 0:
        params["Hires upscale"] = spec.hr_scale
        ux, uy = int(w * spec.hr_scale), int(h * spec.hr_scale)
        fx, fy = ux, uy
    else:
        params["Hires resize"] = f"{rx}x{ry}"
        if ry == 0:
            ux, uy = rx, rx * h // w
            fx, fy = ux, uy
        elif rx == 0:
            ux, uy = ry * w // h, ry
            fx, fy = ux, uy
        else:
            if w / h < rx / ry:
                ux, uy = rx, rx * h // w
            else:
                ux, uy = ry * w // h, ry
            fx, fy = rx, ry
    ux, uy = ux // 8 * 8, uy // 8 * 8
    tx, ty = max(0, (ux - fx) // 8), max(0, (uy - fy) // 8)
    return (ux, uy), (ux - 8 * tx, uy - 8 * ty), params


def check_generate(spec: GenerateSpec, models: ModelManager, owner: str | None = None) -> _Checked:
    """Everything that can be refused without loading weights: sampler, checkpoint family, LoRA tags,
    styles, VAE, ControlNet models, hires fix, step count, seeds; and the list of fields accepted but not
    honoured."""
    from ..models.prompt_styles import apply_styles, load_styles, style_folders
    from ..models.prompts import extract_lora_tags
    from ..models.samplers import resolve_sampler
    from ..nets.esrgan import LATENT_UPSCALE_MODES, check_upscaler_name

    ignored: list[str] = []
    warnings: list[str] = []
    strict = spec.unknown_names == "error"

    def ignore(name: str, why: str) -> None:
        ignored.append(name)
        warnings.append(f"`{name}` not honoured: {why}")

    # Korean prompts need the translator (409 naming the field when it is not installed)
    check_prompt_translation(models, job_prompt_texts(spec))
    # sampler and schedule type
    try:
        sampler, schedule = resolve_sampler(spec.sampler_name, spec.scheduler)
    except InputError as exc:
        raise exc.renamed("scheduler" if exc.field == "schedule_type" else "sampler_name") from None
    # checkpoint family
    entry = resolve_or_field_error(models, ModelRef("checkpoint", spec.checkpoint, "checkpoint"), owner)
    if entry.arch not in SUPPORTED_ARCHS:
        raise InputError(
            "checkpoint",
            f"{entry.name!r} is a {entry.arch} model; supported: {', '.join(SUPPORTED_ARCHS)}"
            if entry.arch != "unknown"
            else f"cannot tell whether {entry.name!r} is SD1.5 or SDXL (supported: {', '.join(SUPPORTED_ARCHS)})",
            spec.checkpoint,
        )
    arch = entry.arch
    # prompt styles (A1111 styles.csv), then LoRA tags (from the prompt only, as A1111's extra networks)
    prompt, negative = spec.prompt, spec.negative_prompt
    if spec.styles:
        styles = load_styles(style_folders(models.settings))
        prompt, negative, style_warnings = apply_styles(prompt, negative, spec.styles, styles, strict=strict)
        warnings += style_warnings
    prompt_text, tags = extract_lora_tags(prompt)
    loras = resolve_lora_tags(tags, models, owner, arch, strict, warnings)
    # VAE
    vae = None
    if spec.vae is not None and spec.vae.strip().lower() not in _VAE_AUTOMATIC:
        vae = resolve_or_field_error(models, ModelRef("vae", spec.vae, "vae"), owner)
        if vae.details.get("latent_channels") not in (None, 4):
            raise InputError("vae", f"VAE {vae.name!r} has {vae.details.get('latent_channels')} latent channels; "
                             "SD1.5 / SDXL VAEs have 4", spec.vae)  # fmt: skip
    # ControlNet units
    units: list[_Unit] = []
    for i, unit in enumerate(spec.controlnet_units):
        if not unit.enabled:
            continue
        cn = resolve_or_field_error(models, ModelRef("controlnet", unit.model, f"controlnet_units.{i}.model"), owner)
        if cn.arch not in (arch, "unknown"):
            raise InputError(
                f"controlnet_units.{i}.model",
                f"ControlNet {cn.name!r} is for {cn.arch}, the checkpoint is {arch}",
                unit.model,
            )
        if unit.module == "canny":
            canny_thresholds(unit, i)
        if unit.module in POSE_MODULES and (missing := models.missing([_pose_ref(i)], owner)):
            raise BackendUnavailableError(
                f"`controlnet_units.{i}.module` {unit.module} runs DWPose, whose ONNX pair is not installed "
                f"({'; '.join(missing)}): `toonbooth models pull dwpose`"
            )
        units.append(_Unit(i, unit, cn))
    # steps and strength
    strength = spec.used_strength()
    if strength is not None and min(int(spec.steps * strength), spec.steps) < 1:
        raise InputError(
            "denoising_strength",
            f"steps * denoising_strength must give at least one step, got {spec.steps} * {strength:g}",
            strength,
        )
    # hires fix
    hires = None
    if spec.enable_hr:
        if entry.inpainting:
            raise InputError("enable_hr", f"hires fix with an inpainting checkpoint ({entry.name!r}) is not "
                             "supported; use a normal checkpoint", True)  # fmt: skip
        upscale_to, size, params = hires_sizes(spec)
        if min(size) < 8 or max(upscale_to) > 8192:
            raise InputError("hr_scale", f"hires fix would make {upscale_to[0]}x{upscale_to[1]} (final "
                             f"{size[0]}x{size[1]}); sides must be 8..8192", spec.hr_scale)  # fmt: skip
        check_upscaler_name(models, spec.hr_upscaler, owner, field="hr_upscaler", latent_ok=True)
        hr_strength = spec.hires_strength()  # 0: the second pass only upscales (nothing is denoised)
        hr_entry = entry
        hr_ckpt = _same(spec.hr_checkpoint)
        if hr_ckpt is not None:
            hr_entry = resolve_or_field_error(models, ModelRef("checkpoint", hr_ckpt, "hr_checkpoint"), owner)
            if hr_entry.arch not in (arch, "unknown") or hr_entry.inpainting:
                raise InputError("hr_checkpoint", f"{hr_entry.name!r} is {'an inpainting ' if hr_entry.inpainting else ''}"
                                 f"{hr_entry.arch}; the second pass needs a normal {arch} checkpoint", hr_ckpt)  # fmt: skip
            params["Hires checkpoint"] = hr_entry.title
        try:
            hr_sampler, hr_schedule = resolve_sampler(
                _same(spec.hr_sampler_name) or spec.sampler_name, _same(spec.hr_scheduler) or spec.scheduler
            )
        except InputError as exc:
            raise exc.renamed("hr_scheduler" if exc.field == "schedule_type" else "hr_sampler_name") from None
        hr_prompt = spec.hr_prompt or spec.prompt
        hr_negative = spec.hr_negative_prompt or spec.negative_prompt
        if spec.styles:  # A1111 styles the second pass's prompts too
            hr_prompt, hr_negative, _ = apply_styles(hr_prompt, hr_negative, spec.styles, styles, strict=False)
        hr_text, hr_tags = extract_lora_tags(hr_prompt)
        hr_loras = loras if hr_prompt == prompt else resolve_lora_tags(
            hr_tags, models, owner, arch, strict, warnings, "hr_prompt"
        )  # fmt: skip
        if spec.hr_second_pass_steps:
            params["Hires steps"] = spec.hr_second_pass_steps
        params["Hires upscaler"] = spec.hr_upscaler
        if hr_sampler != sampler:
            params["Hires sampler"] = hr_sampler
        if hr_schedule != schedule:
            params["Hires schedule type"] = hr_schedule
        if hr_prompt != prompt:
            params["Hires prompt"] = hr_prompt
        if hr_negative != negative:
            params["Hires negative prompt"] = hr_negative
        hires = _Hires(
            upscale_to, size, spec.hr_upscaler,
            spec.hr_upscaler if spec.hr_upscaler in LATENT_UPSCALE_MODES else None,
            (spec.hr_second_pass_steps or spec.steps) if hr_strength > 0 else 0, hr_strength, hr_entry, hr_sampler, hr_schedule, hr_text,
            hr_negative, hr_loras, params,
        )  # fmt: skip
    # seeds
    count = spec.batch_size * spec.n_iter
    seeds = job_seeds(spec.seed, count)
    subseeds = job_seeds(spec.subseed, count)
    # accepted but not honoured
    if spec.subseed_strength > 0 and spec.mode != "txt2img":
        ignore("subseed_strength", "variation seeds are honoured for txt2img only")
    for name in ("seed_resize_from_w", "seed_resize_from_h"):
        value = getattr(spec, name)
        if value > 0 and value != (spec.width if name.endswith("w") else spec.height):
            ignore(name, "resizing the seed's noise is not supported")
    if spec.mode == "img2img" and spec.resize_mode == 3:
        ignore("resize_mode", "3 (latent upscale) runs as 0 (just resize)")
    if arch == "sdxl" and spec.clip_skip > 1:
        ignore("clip_skip", "SDXL always uses the penultimate CLIP layer (as A1111)")
    return _Checked(
        entry, arch, sampler, schedule, prompt_text, loras, units, seeds, subseeds, strength, ignored, warnings,
        prompt=prompt, negative_prompt=negative, vae=vae, hires=hires,
    )  # fmt: skip


def _pose_ref(index: int) -> ModelRef:
    return ModelRef("dwpose", "dwpose", f"controlnet_units.{index}.module")


def job_prompt_texts(spec: GenerateSpec) -> list[PromptText]:
    """The prompts of a generate job, for translation."""
    return [PromptText("prompt", spec.prompt), PromptText("negative_prompt", spec.negative_prompt)]


@dataclass
class _Prepared:
    route: str  # txt2img | img2img | inpaint
    init: Image.Image | None = None  # what the pipeline starts from (width x height)
    mask: Image.Image | None = None  # mask given to the pipeline (width x height, 0/255)
    latmask: np.ndarray | None = None  # A1111 latent mask (h/8, w/8) of 0/1
    original: Image.Image | None = None  # picture the result is pasted back into
    photo: Image.Image | None = None  # the init image as given (default control image)
    overlay: np.ndarray | None = None  # alpha of the generated image over `original`
    region: tuple[int, int, int, int] | None = None  # inpaint "only masked" box in `original`
    extra: dict[str, Any] = field(default_factory=dict)


def prepare_images(
    spec: GenerateSpec, ctx: EngineContext, inpainting_unet: bool, warnings: list[str]
) -> _Prepared:
    """Init image, mask and overlay at the generation size, as A1111's img2img `init` builds them."""
    w, h = spec.width, spec.height
    if spec.mode == "txt2img":
        if inpainting_unet:  # A1111 conditions inpainting models with a full mask over a blank image
            return _Prepared(
                "inpaint", Image.new("RGB", (w, h), (127, 127, 127)), Image.new("L", (w, h), 255)
            )
        return _Prepared("txt2img")
    photo = ctx.load_image(spec.init_images[0], field="init_images.0")
    mode = 0 if spec.resize_mode == 3 else spec.resize_mode

    def plain(init: Image.Image) -> _Prepared:  # img2img without a mask (inpainting UNets: a full mask)
        if inpainting_unet:
            return _Prepared("inpaint", init, Image.new("L", (w, h), 255), photo=photo)
        return _Prepared("img2img", init, photo=photo)

    mask_img = None
    if spec.mask is not None:
        mask_img = binary_mask(ctx.load_image(spec.mask, field="mask"), spec.inpainting_mask_invert)
        if spec.inpaint_full_res and mask_img.size != photo.size:
            raise InputError(
                "mask", f"must have the init image's size {photo.width}x{photo.height} for inpaint_full_res, "
                f"got {mask_img.width}x{mask_img.height}", list(mask_img.size),
            )  # fmt: skip
        mask_img = blur_mask(mask_img, spec.mask_blur)
    if mask_img is None:
        return plain(resize_image(mode, photo, w, h))
    prep = _Prepared("inpaint", photo=photo)
    if spec.mask_blur > 0:
        prep.extra["Mask blur"] = spec.mask_blur
    if spec.inpainting_mask_invert:
        prep.extra["Mask mode"] = "Inpaint not masked"
    prep.extra["Masked content"] = MASKED_CONTENT[spec.inpainting_fill]
    if spec.inpaint_full_res:
        region = crop_region(mask_img, spec.inpaint_full_res_padding)
        if region is None:  # A1111 switches to plain img2img of the whole picture
            warnings.append(
                "the mask is empty: 'only masked' inpainting ran as plain img2img (as A1111 does)"
            )
            return plain(resize_image(mode, photo, w, h))
        region = expand_crop_region(region, w, h, photo.width, photo.height)
        prep.region = region
        prep.original = photo
        prep.overlay = np.asarray(mask_img, dtype=np.float32) / 255.0
        latent_mask = resize_image(2, mask_img.crop(region), w, h)
        init = resize_image(2, photo.crop(region), w, h)
        prep.extra["Inpaint area"] = "Only masked"
        prep.extra["Masked area padding"] = spec.inpaint_full_res_padding
    else:
        latent_mask = resize_image(mode, mask_img, w, h)
        init = resize_image(mode, photo, w, h)
        prep.original = init
        prep.overlay = np.clip(np.asarray(latent_mask, dtype=np.float32) * 2.0, 0, 255) / 255.0
    if spec.inpainting_fill != 1:
        init = fill_masked(init, latent_mask)
    prep.init = init
    prep.latmask = latent_mask_blocks(latent_mask, w, h)
    if inpainting_unet:  # conditioning mask: the pixel mask rounded (A1111 inpainting_image_conditioning)
        prep.mask = Image.fromarray(np.where(np.asarray(latent_mask) >= 128, 255, 0).astype(np.uint8), "L")
    else:  # the latent mask, block-upsampled: diffusers' nearest downsampling gives it back exactly
        blocks = np.kron(prep.latmask, np.ones((8, 8), dtype=np.float32))
        prep.mask = Image.fromarray((blocks * 255).astype(np.uint8), "L")
    return prep



# --------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------


class GenerateEngine(Engine[GenerateSpec, GenerateOutput]):
    kind = "generate"
    Spec = GenerateSpec
    Output = GenerateOutput

    def required_models(self, spec: GenerateSpec) -> list[ModelRef]:
        refs = [ModelRef("checkpoint", spec.checkpoint, "checkpoint")]
        refs += [
            ModelRef("controlnet", u.model, f"controlnet_units.{i}.model")
            for i, u in enumerate(spec.controlnet_units) if u.enabled
        ]  # fmt: skip
        refs += [_pose_ref(i) for i, u in enumerate(spec.controlnet_units) if u.enabled and u.module in POSE_MODULES]
        return refs

    def check_inputs(self, spec: GenerateSpec, models: ModelManager, owner: str | None) -> None:
        check_generate(spec, models, owner)

    def cost(self, spec: GenerateSpec, settings: Settings) -> JobCost:
        images = spec.batch_size * spec.n_iter
        strength = spec.used_strength()
        steps = spec.steps if strength is None else max(1, min(int(spec.steps * strength), spec.steps))
        pixels = spec.width * spec.height
        return JobCost(pixels=(pixels, "width"), images=(images, "batch_size"),
                       pixel_steps=(pixels * steps * images, "steps"))  # fmt: skip

    def run(self, spec: GenerateSpec, ctx: EngineContext) -> GenerateOutput:
        import diffusers
        import torch
        from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

        from ..models.guidance import ControlModeHooks, latent_fill_hook
        from ..nets.esrgan import resolve_upscaler, upscale_latents

        models = ctx.models
        w, h = spec.width, spec.height

        # 1. Check inputs (cheap, before any weights are loaded)
        checked = check_generate(spec, models, ctx.owner)
        arch, entry, hr = checked.arch, checked.entry, checked.hires
        warnings = list(checked.warnings)
        # Korean prompts -> English (LoRA tags, emphasis, BREAK and embedding names kept as written)
        # (after A1111 styles were applied: the text the encoders get)
        translations, notes = translate_job_prompts(
            models, [PromptText("prompt", checked.prompt), PromptText("negative_prompt", checked.negative_prompt)],
            protected=protected_words(models, ctx.owner),
        )  # fmt: skip
        warnings += notes
        checked.prompt = translations["prompt"].translated
        checked.negative_prompt = translations["negative_prompt"].translated
        if translations["prompt"].changed:
            from ..models.prompts import extract_lora_tags

            checked.prompt_text = extract_lora_tags(checked.prompt)[0]
        prep = prepare_images(spec, ctx, inpainting_unet=bool(entry.inpainting), warnings=warnings)
        for unit in checked.units:
            if unit.spec.image is not None:
                unit.image = ctx.load_image(unit.spec.image, field=f"controlnet_units.{unit.index}.image")
            else:
                unit.image = prep.photo
        ctx.check_canceled()

        # 2. Load models (cached between jobs), activate the prompt's LoRAs, build the pipeline(s)
        base, entry = sd.base_pipeline(models, spec.checkpoint, arch, ctx.owner)
        loaded_loras = sd.apply_loras(models, base, checked.loras, ctx.owner)
        for unit in checked.units:
            unit.model, unit.entry = sd.controlnet(models, unit.spec.model, base, arch, ctx.owner)
        vae = models.load_entry(checked.vae, arch=arch) if checked.vae is not None else None
        ctx.check_canceled()
        cls = getattr(diffusers, pipeline_name(arch, prep.route, bool(checked.units)))
        extra: dict[str, Any] = {}
        if checked.units:
            cn_models = [u.model for u in checked.units]
            extra["controlnet"] = cn_models[0] if len(cn_models) == 1 else MultiControlNetModel(cn_models)
        if arch != "sdxl":
            extra["requires_safety_checker"] = False
        if vae is not None:
            extra["vae"] = vae
        pipe = sd.compose(cls, base, **extra)
        sd.set_sampler(pipe, base, checked.sampler, checked.schedule, field="sampler_name", schedule_field="scheduler")
        seeds_ref: dict[str, list[int]] = {"seeds": []}
        if prep.route == "inpaint" and prep.latmask is not None and spec.inpainting_fill in (2, 3):
            latent_fill_hook(pipe, prep.latmask, spec.inpainting_fill, seeds_ref)
        # hires fix: the second pass's pipeline (its own checkpoint / sampler / LoRAs when asked)
        pipe2 = base2 = None
        upscaler = None
        if hr is not None:
            base2 = base
            if hr.entry.location != entry.location:
                base2, _ = sd.base_pipeline(models, hr.entry.name, arch, ctx.owner)
                sd.apply_loras(models, base2, hr.loras, ctx.owner)
            cls2 = getattr(diffusers, pipeline_name(arch, "img2img", bool(checked.units)))
            pipe2 = sd.compose(cls2, base2, **extra)
            sd.set_sampler(pipe2, base2, hr.sampler, hr.schedule, field="hr_sampler_name", schedule_field="hr_scheduler")
            if hr.latent_mode is None:
                upscaler = resolve_upscaler(models, hr.upscaler, ctx.owner, field="hr_upscaler")
        switch_loras = hr is not None and base2 is base and hr.loras != checked.loras

        # 3. Prepare conditions: control maps, A1111-syntax prompt embeddings
        controls: list[Image.Image] = []
        controls2: list[Image.Image] = []
        for unit in checked.units:
            source = unit.image
            assert source is not None  # the spec refuses txt2img units without an image
            if prep.region is not None and prep.original is not None:  # "only masked": the same box of the map
                source = source.resize(prep.original.size, Image.Resampling.LANCZOS).crop(prep.region)
            drawn = None
            if unit.spec.module in POSE_MODULES:
                from ..nets.openpose_detect import unit_pose_map

                pose = unit_pose_map(models, ctx.owner, source, unit.spec, unit.index, w, h)
                drawn = pose.image
                if not pose.found:
                    warnings.append(f"ControlNet unit {unit.index}: no person found, the pose map is empty")
            controls.append(control_map(source, unit.spec, unit.index, w, h, precomputed=drawn))
            if hr is not None:
                drawn2 = None
                if unit.spec.module in POSE_MODULES:
                    drawn2 = unit_pose_map(models, ctx.owner, source, unit.spec, unit.index, *hr.upscale_to).image
                controls2.append(control_map(source, unit.spec, unit.index, *hr.upscale_to, precomputed=drawn2))
        tis, staged = sd.job_prompts(
            models, base, arch, checked.prompt_text, checked.negative_prompt, ctx.owner, clip_skip=spec.clip_skip
        )
        warnings += tis.warnings
        strength = 1.0 if prep.route == "inpaint" and spec.mode == "txt2img" else checked.strength
        per_call = sd.count_steps(pipe.scheduler, spec.steps, strength)
        per_call2 = steps2 = 0
        strength2 = 1.0
        staged2 = staged
        if hr is not None and pipe2 is not None and base2 is not None and hr.steps > 0:
            # A1111 runs exactly `hires steps` steps: a schedule of int(steps / strength), entered so late that
            # that many remain
            steps2 = int(hr.steps / min(hr.strength, 0.999))
            strength2 = min(1.0, (hr.steps + 0.5) / steps2)
            per_call2 = sd.count_steps(pipe2.scheduler, steps2, strength2)
            if base2 is not base or hr.prompt != checked.prompt_text or hr.negative_prompt != checked.negative_prompt:
                tis2, staged2 = sd.job_prompts(models, base2, arch, hr.prompt, hr.negative_prompt, ctx.owner,
                                               clip_skip=spec.clip_skip)  # fmt: skip
                warnings += [x for x in tis2.warnings if x not in warnings]
        total = (per_call + per_call2) * spec.n_iter
        common: dict[str, Any] = {
            **staged.first_kwargs(pipe.scheduler, spec.steps, strength), "num_inference_steps": spec.steps,
            "guidance_scale": spec.cfg_scale, "num_images_per_prompt": spec.batch_size, "height": h, "width": w,
            "output_type": "latent" if hr is not None and hr.latent_mode is not None else "pil",
        }  # fmt: skip
        if prep.route != "txt2img":
            common.update(image=prep.init, strength=strength)
        if prep.route == "inpaint":
            common["mask_image"] = prep.mask
        many = len(checked.units) > 1
        specs = [u.spec for u in checked.units]

        def control_kwargs(maps: list[Image.Image], route: str) -> dict[str, Any]:
            if not maps:
                return {}
            return {
                "image" if route == "txt2img" else "control_image": maps if many else maps[0],
                "controlnet_conditioning_scale": [u.weight for u in specs] if many else specs[0].weight,
                "control_guidance_start": [u.guidance_start for u in specs] if many else specs[0].guidance_start,
                "control_guidance_end": [u.guidance_end for u in specs] if many else specs[0].guidance_end,
            }

        common.update(control_kwargs(controls, prep.route))
        hooks = ControlModeHooks(
            pipe, [u.model for u in checked.units], [u.spec.control_mode for u in checked.units]
        )
        take_skip = getattr(ctx, "take_skip", lambda: False)

        def callback(tracker: sd.DenoisedTracker, inner: Any) -> Any:
            def on_step_end(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
                tracker.on_step(kwargs["latents"])
                if take_skip():
                    raise _SkipImageError()
                return inner(p, i, t, kwargs)

            return on_step_end

        # 4. Denoise: n_iter batches of batch_size images (each with its hires pass), one progress stream
        generated: list[Image.Image] = []
        skipped: list[int] = []
        interrupted = False
        cancel_message = ""
        # what /interrupt and /skip decode: the latest denoised estimate of each pass's loop
        trackers = {"first": sd.DenoisedTracker(pipe)}
        if pipe2 is not None:
            trackers["hires"] = sd.DenoisedTracker(pipe2)
        tiling = sd.circular_padding(
            pipe.unet, pipe.vae, *((pipe2.unet, pipe2.vae) if pipe2 is not None else ()), enable=spec.tiling
        )
        try:
            ctx.progress(0, total, stage="generate")
            with tiling:
                for it in range(spec.n_iter):
                    batch = slice(it * spec.batch_size, (it + 1) * spec.batch_size)
                    seeds, subseeds = checked.seeds[batch], checked.subseeds[batch]
                    seeds_ref["seeds"] = seeds
                    offset = it * (per_call + per_call2)
                    for t in trackers.values():
                        t.reset()
                    active_pipe, tracker = pipe, trackers["first"]
                    try:
                        if switch_loras and it > 0:
                            sd.apply_loras(models, base, checked.loras, ctx.owner)
                        kwargs = dict(common)
                        kwargs["generator"] = [torch.Generator("cpu").manual_seed(x) for x in seeds]
                        if spec.mode == "txt2img" and spec.subseed_strength > 0:
                            shape = (pipe.unet.config.out_channels, h // pipe.vae_scale_factor, w // pipe.vae_scale_factor)
                            noise = variation_noise(shape, seeds, subseeds, spec.subseed_strength)
                            kwargs["latents"] = noise.to(models.device, models.dtype)
                        step = ctx.step_callback(offset=offset, total=total, stage="generate", arch=arch)
                        kwargs["callback_on_step_end"] = callback(tracker, staged.callback(step))
                        kwargs["callback_on_step_end_tensor_inputs"] = staged.tensor_inputs(pipe)
                        images = pipe(**sd.call_kwargs(pipe, kwargs)).images
                        ctx.progress(offset + per_call, total, stage="generate")
                        if hr is not None and pipe2 is not None:
                            if switch_loras:
                                sd.apply_loras(models, base, hr.loras, ctx.owner)
                            init2 = self._upscale_first_pass(images, hr, upscaler, upscale_latents, ctx)
                            if hr.steps == 0:  # denoising strength 0: the second pass only upscales
                                images = sd.decode_latents(pipe2, init2) if hr.latent_mode is not None else init2
                            else:
                                active_pipe, tracker = pipe2, trackers["hires"]
                                step2 = ctx.step_callback(offset=offset + per_call, total=total, stage="hires fix", arch=arch)
                                kwargs2: dict[str, Any] = {
                                    **staged2.first_kwargs(pipe2.scheduler, steps2, strength2), "image": init2,
                                    "strength": strength2, "num_inference_steps": steps2,
                                    "guidance_scale": spec.cfg_scale, "num_images_per_prompt": spec.batch_size,
                                    "output_type": "pil", **control_kwargs(controls2, "img2img"),
                                    "generator": [torch.Generator("cpu").manual_seed(x) for x in seeds],
                                    "callback_on_step_end": callback(tracker, staged2.callback(step2)),
                                    "callback_on_step_end_tensor_inputs": staged2.tensor_inputs(pipe2),
                                }  # fmt: skip
                                images = pipe2(**sd.call_kwargs(pipe2, kwargs2)).images
                        generated.extend(images)
                        ctx.progress(offset + per_call + per_call2, total, stage="generate")
                    except _SkipImageError:  # A1111 /skip: this batch ends with what it has, the next one runs
                        if tracker.latest is not None:
                            generated.extend(sd.decode_latents(active_pipe, tracker.latest))
                        skipped.append(it)
                        ctx.log(f"batch {it + 1}/{spec.n_iter} skipped at the user's request")
                    except JobCanceledError as exc:  # /interrupt: keep what was made so far
                        if tracker.latest is not None:
                            generated.extend(sd.decode_latents(active_pipe, tracker.latest))
                        if not generated:
                            raise
                        interrupted = True
                        cancel_message = str(exc)
                        break
        finally:
            hooks.close()

        # 5. Postprocess: paste the original back outside the mask, A1111 infotext
        finals = [paste_region(prep.original, img, prep.overlay, prep.region) for img in generated]
        model_hash = models.short_hash(entry) or None
        cn_params = {
            f"ControlNet {n}": unit_text(u.spec, u.index, u.entry.title) for n, u in enumerate(checked.units)
        }
        vae_name = vae_hash = None
        head: dict[str, Any] = {}
        if checked.vae is not None:
            vae_name = checked.vae.path.name if checked.vae.path is not None else checked.vae.name
            vae_hash = models.short_hash(checked.vae)
            head = {"VAE hash": vae_hash, "VAE": vae_name}
        if spec.tiling:
            head["Tiling"] = "True"
        extra_params = {**head, **(hr.params if hr is not None else {}), **prep.extra, **cn_params,
                        **translation_params(translations)}  # fmt: skip
        used_strength = hr.strength if hr is not None else checked.strength
        infotexts = [
            sd_infotext(
                checked.prompt, checked.negative_prompt, steps=spec.steps, sampler=checked.sampler,
                schedule=checked.schedule, cfg_scale=spec.cfg_scale, seed=checked.seeds[k], width=w, height=h,
                model=entry.name, model_hash=model_hash,
                variation_seed=checked.subseeds[k] if spec.subseed_strength > 0 else None,
                variation_strength=spec.subseed_strength if spec.subseed_strength > 0 else None,
                denoising_strength=used_strength,
                clip_skip=spec.clip_skip if spec.clip_skip > 1 and arch != "sdxl" else None,
                extra=extra_params, loras=loaded_loras, tis=tis,
            )  # fmt: skip
            for k in range(len(finals))
        ]
        extra_gen = dict(extra_params)
        if loaded_loras:
            extra_gen["Lora hashes"] = ", ".join(f"{x.name}: {x.short_hash or 'none'}" for x in loaded_loras)
        if tis.uses:
            extra_gen["TI hashes"] = tis.ti_hashes()
        extra_gen["Version"] = version_text()
        for msg in warnings:
            ctx.log(msg, warning=True)
        if interrupted:  # said in the (partial) output, not logged: a server shutdown re-queues the job instead
            warnings.append(f"interrupted: {len(finals)} of {len(checked.seeds)} images, the last one(s) as far "
                            "as they got (the current latents decoded, as A1111 does)")  # fmt: skip
        output = GenerateOutput(
            images=[ImageArtifact(img, infotexts[k]) for k, img in enumerate(finals)],
            backend="neural", backend_reason=f"diffusers {cls.__name__}", warnings=warnings,
            prompt=checked.prompt, negative_prompt=checked.negative_prompt, seeds=checked.seeds[: len(finals)],
            subseeds=checked.subseeds[: len(finals)], subseed_strength=spec.subseed_strength, width=w, height=h,
            sampler_name=checked.sampler, scheduler=checked.schedule, cfg_scale=spec.cfg_scale, steps=spec.steps,
            batch_size=spec.batch_size, n_iter=spec.n_iter, sd_model_name=entry.name, sd_model_hash=model_hash,
            seed_resize_from_w=spec.seed_resize_from_w, seed_resize_from_h=spec.seed_resize_from_h,
            denoising_strength=used_strength, extra_generation_params=extra_gen, infotexts=infotexts,
            clip_skip=spec.clip_skip, is_using_inpainting_conditioning=bool(entry.inpainting),
            job_timestamp=datetime.datetime.now().strftime("%Y%m%d%H%M%S"), version=version_text(),
            pipeline=cls.__name__, loras=sd.lora_info(loaded_loras), embeddings=tis.info(),
            ignored=sorted(set(checked.ignored)), styles=list(spec.styles), sd_vae_name=vae_name,
            sd_vae_hash=vae_hash, hires_size=list(hr.size) if hr is not None else None, interrupted=interrupted,
            skipped=skipped,
            translations=[t for t in translations.values() if t.source != "unchanged"],
        )  # fmt: skip
        if interrupted:
            raise JobCanceledError(cancel_message, partial=output)
        return output

    @staticmethod
    def _upscale_first_pass(images: Any, hr: _Hires, upscaler: Any, upscale_latents: Any, ctx: EngineContext) -> Any:
        """The first pass's result at the hires size: latents interpolated (Latent modes), or pictures through
        the upscaler (A1111 `resize_image(0, ...)`), then centre-cropped to hr_resize_x x hr_resize_y."""
        (ux, uy), (fx, fy) = hr.upscale_to, hr.size
        if hr.latent_mode is not None:
            lat = upscale_latents(images, ux, uy, hr.latent_mode)
            ty, tx = (uy - fy) // 8, (ux - fx) // 8
            return lat[:, :, ty // 2 : lat.shape[2] - (ty + 1) // 2, tx // 2 : lat.shape[3] - (tx + 1) // 2]
        out = []
        for img in images:
            big = upscaler.resize_to(img, ux, uy, check=ctx.check_canceled)
            left, top = ((ux - fx) // 16) * 8, ((uy - fy) // 16) * 8
            out.append(big.crop((left, top, left + fx, top + fy)))
        return out


class _SkipImageError(Exception):
    """A1111 /skip inside a denoising loop: end this batch with what it has."""


__all__ = [
    "GenerateEngine",
    "GenerateOutput",
    "check_generate",
    "pipeline_name",
    "prepare_images",
]
