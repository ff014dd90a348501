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
from ..core.errors import BackendUnavailableError, InputError
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


def check_generate(spec: GenerateSpec, models: ModelManager, owner: str | None = None) -> _Checked:
    """Everything that can be refused without loading weights: sampler, checkpoint family, LoRA tags,
    ControlNet models, step count, seeds; and the list of fields accepted but not honoured."""
    from ..models.prompts import check_lora_names, extract_lora_tags
    from ..models.samplers import resolve_sampler

    ignored: list[str] = []
    warnings: list[str] = []

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
    # LoRA tags (from the prompt only, as A1111's extra networks)
    prompt_text, tags = extract_lora_tags(spec.prompt)
    check_lora_names(tags, models.registry.names("lora", owner))
    loras: list[tuple[str, float]] = []
    for tag in tags:
        lora = resolve_or_field_error(models, ModelRef("lora", tag.name, "prompt"), owner)
        if lora.arch not in (arch, "unknown"):
            raise InputError(
                "prompt", f"LoRA {tag.name!r} is for {lora.arch}, the checkpoint is {arch}", tag.name
            )
        if tag.unet_weight != tag.weight:
            ignore("prompt", f"<lora:{tag.name}:...> has a separate UNet weight {tag.unet_weight:g}; "
                   f"both parts use {tag.weight:g}")  # fmt: skip
        loras.append((lora.name, tag.weight))
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
        entry,
        arch,
        sampler,
        schedule,
        prompt_text,
        loras,
        units,
        seeds,
        subseeds,
        strength,
        ignored,
        warnings,
    )


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

        models = ctx.models
        w, h = spec.width, spec.height

        # 1. Check inputs (cheap, before any weights are loaded)
        checked = check_generate(spec, models, ctx.owner)
        arch, entry = checked.arch, checked.entry
        warnings = list(checked.warnings)
        # Korean prompts -> English (LoRA tags, emphasis, BREAK and embedding names kept as written)
        translations, notes = translate_job_prompts(
            models, job_prompt_texts(spec), protected=protected_words(models, ctx.owner)
        )
        warnings += notes
        prompt, negative = translations["prompt"].translated, translations["negative_prompt"].translated
        if translations["prompt"].changed:
            from ..models.prompts import extract_lora_tags

            checked.prompt_text = extract_lora_tags(prompt)[0]
        prep = prepare_images(spec, ctx, inpainting_unet=bool(entry.inpainting), warnings=warnings)
        for unit in checked.units:
            if unit.spec.image is not None:
                unit.image = ctx.load_image(unit.spec.image, field=f"controlnet_units.{unit.index}.image")
            else:
                unit.image = prep.photo
        ctx.check_canceled()

        # 2. Load models (cached between jobs), activate the prompt's LoRAs, build the pipeline
        base, entry = sd.base_pipeline(models, spec.checkpoint, arch, ctx.owner)
        loaded_loras = sd.apply_loras(models, base, checked.loras, ctx.owner)
        for unit in checked.units:
            unit.model, unit.entry = sd.controlnet(models, unit.spec.model, base, arch, ctx.owner)
        ctx.check_canceled()
        cls = getattr(diffusers, pipeline_name(arch, prep.route, bool(checked.units)))
        extra: dict[str, Any] = {}
        if checked.units:
            cn_models = [u.model for u in checked.units]
            extra["controlnet"] = cn_models[0] if len(cn_models) == 1 else MultiControlNetModel(cn_models)
        if arch != "sdxl":
            extra["requires_safety_checker"] = False
        pipe = sd.compose(cls, base, **extra)
        sd.set_sampler(pipe, base, checked.sampler, checked.schedule, field="sampler_name", schedule_field="scheduler")
        seeds_ref: dict[str, list[int]] = {"seeds": []}
        if prep.route == "inpaint" and prep.latmask is not None and spec.inpainting_fill in (2, 3):
            latent_fill_hook(pipe, prep.latmask, spec.inpainting_fill, seeds_ref)

        # 3. Prepare conditions: control maps, A1111-syntax prompt embeddings
        controls: list[Image.Image] = []
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
        tis, staged = sd.job_prompts(
            models, base, arch, checked.prompt_text, negative, ctx.owner, clip_skip=spec.clip_skip
        )
        warnings += tis.warnings
        strength = 1.0 if prep.route == "inpaint" and spec.mode == "txt2img" else checked.strength
        per_call = sd.count_steps(pipe.scheduler, spec.steps, strength)
        total = per_call * spec.n_iter
        common: dict[str, Any] = {
            **staged.first_kwargs(pipe.scheduler, spec.steps, strength), "num_inference_steps": spec.steps,
            "guidance_scale": spec.cfg_scale, "num_images_per_prompt": spec.batch_size, "height": h, "width": w,
            "output_type": "pil",
        }  # fmt: skip
        if prep.route != "txt2img":
            common.update(image=prep.init, strength=strength)
        if prep.route == "inpaint":
            common["mask_image"] = prep.mask
        if checked.units:
            many = len(checked.units) > 1
            specs = [u.spec for u in checked.units]
            common["image" if prep.route == "txt2img" else "control_image"] = controls if many else controls[0]
            common["controlnet_conditioning_scale"] = [u.weight for u in specs] if many else specs[0].weight
            common["control_guidance_start"] = (
                [u.guidance_start for u in specs] if many else specs[0].guidance_start
            )
            common["control_guidance_end"] = [u.guidance_end for u in specs] if many else specs[0].guidance_end
        hooks = ControlModeHooks(
            pipe, [u.model for u in checked.units], [u.spec.control_mode for u in checked.units]
        )

        # 4. Denoise: n_iter batches of batch_size images, one 0..100 progress stream
        generated: list[Image.Image] = []
        try:
            ctx.progress(0, total, stage="generate")
            for it in range(spec.n_iter):
                batch = slice(it * spec.batch_size, (it + 1) * spec.batch_size)
                seeds, subseeds = checked.seeds[batch], checked.subseeds[batch]
                seeds_ref["seeds"] = seeds
                kwargs = dict(common)
                kwargs["generator"] = [torch.Generator("cpu").manual_seed(s) for s in seeds]
                if spec.mode == "txt2img" and spec.subseed_strength > 0:
                    shape = (pipe.unet.config.out_channels, h // pipe.vae_scale_factor, w // pipe.vae_scale_factor)
                    noise = variation_noise(shape, seeds, subseeds, spec.subseed_strength)
                    kwargs["latents"] = noise.to(models.device, models.dtype)
                step = ctx.step_callback(offset=it * per_call, total=total, stage="generate", arch=arch)
                kwargs["callback_on_step_end"] = staged.callback(step)  # + stage swaps of multi-stage TIs
                kwargs["callback_on_step_end_tensor_inputs"] = staged.tensor_inputs(pipe)
                out = pipe(**sd.call_kwargs(pipe, kwargs))
                generated.extend(out.images)
                ctx.progress((it + 1) * per_call, total, stage="generate")
        finally:
            hooks.close()

        # 5. Postprocess: paste the original back outside the mask, A1111 infotext
        finals = [paste_region(prep.original, img, prep.overlay, prep.region) for img in generated]
        model_hash = models.short_hash(entry) or None
        cn_params = {
            f"ControlNet {n}": unit_text(u.spec, u.index, u.entry.title) for n, u in enumerate(checked.units)
        }
        extra_params = {**prep.extra, **cn_params, **translation_params(translations)}
        infotexts = [
            sd_infotext(
                prompt, negative, steps=spec.steps, sampler=checked.sampler,
                schedule=checked.schedule, cfg_scale=spec.cfg_scale, seed=checked.seeds[k], width=w, height=h,
                model=entry.name, model_hash=model_hash,
                variation_seed=checked.subseeds[k] if spec.subseed_strength > 0 else None,
                variation_strength=spec.subseed_strength if spec.subseed_strength > 0 else None,
                denoising_strength=checked.strength,
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
        return GenerateOutput(
            images=[ImageArtifact(img, infotexts[k]) for k, img in enumerate(finals)],
            backend="neural", backend_reason=f"diffusers {cls.__name__}", warnings=warnings,
            prompt=prompt, negative_prompt=negative, seeds=checked.seeds,
            subseeds=checked.subseeds, subseed_strength=spec.subseed_strength, width=w, height=h,
            sampler_name=checked.sampler, scheduler=checked.schedule, cfg_scale=spec.cfg_scale, steps=spec.steps,
            batch_size=spec.batch_size, n_iter=spec.n_iter, sd_model_name=entry.name, sd_model_hash=model_hash,
            seed_resize_from_w=spec.seed_resize_from_w, seed_resize_from_h=spec.seed_resize_from_h,
            denoising_strength=checked.strength, extra_generation_params=extra_gen, infotexts=infotexts,
            clip_skip=spec.clip_skip, is_using_inpainting_conditioning=bool(entry.inpainting),
            job_timestamp=datetime.datetime.now().strftime("%Y%m%d%H%M%S"), version=version_text(),
            pipeline=cls.__name__, loras=sd.lora_info(loaded_loras), embeddings=tis.info(),
            ignored=sorted(set(checked.ignored)),
            translations=[t for t in translations.values() if t.source != "unchanged"],
        )  # fmt: skip


__all__ = [
    "GenerateEngine",
    "GenerateOutput",
    "check_generate",
    "pipeline_name",
    "prepare_images",
]
