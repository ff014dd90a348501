"""Memoji-like 3D cartoon avatar from a photo (seed 000, "My Memoji").

Neural recipe (the seed's own A1111 client): pass 1 = SDXL img2img with ControlNet canny
(70/230, weight 1, whole schedule) at the photo's size; pass 2 = img2img of pass 1 at 1.5x without
ControlNet, same prompt and LoRA. DDIM, 50 steps, CFG 7, denoising 0.75, seed 2968506678.
Classic backend: face crop + toon filter on the CPU (OpenCV), no weights.
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from .. import __version__
from ..core.errors import BackendUnavailableError, InputError
from ..core.images import format_a1111_parameters
from ..core.specs import AvatarSpec
from ..vision.edges import check_canny_thresholds
from .base import EngineContext, EngineResult, NamedImage

ARCH = "sdxl"


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The photo's own size, long side capped at `max_side`, both sides floored to a multiple of 8."""
    scale = min(1.0, max_side / max(width, height))
    w = max(8, int(width * scale) // 8 * 8)
    h = max(8, int(height * scale) // 8 * 8)
    return w, h


def wanted_models(spec: AvatarSpec) -> list[tuple[str, str]]:
    wanted = [("checkpoint", spec.checkpoint), ("controlnet", spec.controlnet)]
    if spec.second_pass and spec.second_checkpoint:
        wanted.append(("checkpoint", spec.second_checkpoint))
    wanted += [("lora", lora.name) for lora in spec.loras]
    return wanted


def choose_backend(spec: AvatarSpec, ctx: EngineContext) -> tuple[str, str]:
    if spec.backend == "classic":
        return "classic", "asked for the classic backend"
    missing = ctx.models.missing(wanted_models(spec), arch=ARCH, owner=getattr(ctx, "owner", None))
    if not missing:
        return "neural", "all weights of the recipe are present"
    reason = "neural weights missing: " + "; ".join(missing) + (
        " — fetch them with `toonbooth models pull memoji` (the seed's memoji LoRA is not on the hub: "
        "add it with `toonbooth models add memoji-07.safetensors`)"
    )
    if spec.backend == "neural":
        raise BackendUnavailableError(reason)
    return "classic", reason


def run(spec: AvatarSpec, ctx: EngineContext) -> EngineResult:
    # 1. Check inputs (cheap, before any model is touched)
    check_canny_thresholds(spec.canny_low, spec.canny_high)
    photo = ctx.load_image(spec.image, field="image")
    backend, reason = choose_backend(spec, ctx)
    ctx.log(f"backend: {backend} ({reason})")
    if backend == "classic":
        return _run_classic(spec, ctx, photo, reason)
    return _run_neural(spec, ctx, photo, reason)


def _run_classic(spec: AvatarSpec, ctx: EngineContext, photo: Image.Image, reason: str) -> EngineResult:
    from ..vision.toon import classic_avatar

    # 1. Toon filter on the head-and-shoulders crop
    ctx.progress(0, 1, stage="classic")
    image, face, warnings = classic_avatar(photo, upscale=spec.upscale)
    ctx.progress(1, 1, stage="classic")
    # 2. Describe what was made
    settings = {
        "Backend": "classic (OpenCV toon filter, no neural weights)",
        "Size": f"{image.width}x{image.height}",
        "Face box": f"{face.x0},{face.y0},{face.x1},{face.y1}" if face else "none",
        "Upscale": spec.upscale,
        "Version": f"toonbooth {__version__}",
    }
    params = format_a1111_parameters("classic toon avatar", "", settings)
    info: dict[str, Any] = {"face_box": face.model_dump() if face else None, "size": [image.width, image.height]}
    return EngineResult([NamedImage("avatar", image, params)], "classic", reason, list(warnings), info)


def _run_neural(spec: AvatarSpec, ctx: EngineContext, photo: Image.Image, reason: str) -> EngineResult:
    import torch
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    from ..models.embeddings import encode_job_prompts
    from ..models.preview import latents_to_preview
    from ..vision.edges import canny_control_image

    # 1. Check inputs and derive sizes / seed
    max_side = spec.max_side or ctx.settings.max_side
    w1, h1 = working_size(photo.width, photo.height, max_side)
    w2 = int(w1 * spec.upscale) // 8 * 8
    h2 = int(h1 * spec.upscale) // 8 * 8
    seed = spec.seed if spec.seed != -1 else random.randint(0, 2**32 - 1)
    prompt = spec.build_prompt()
    lora_tags = [(lo.name, lo.weight) for lo in spec.loras]

    # 2. Load models (cached between jobs) and activate the LoRAs
    models = ctx.models
    owner = getattr(ctx, "owner", None)  # the job owner's own styles (LoRAs) are usable by name
    base, base_entry = models.base_pipeline(spec.checkpoint, ARCH, owner)
    controlnet, cn_entry = models.controlnet(spec.controlnet, base, ARCH, owner)
    loras = models.apply_loras(base, lora_tags, owner)
    ctx.check_canceled()
    pass1 = models.compose(StableDiffusionXLControlNetImg2ImgPipeline, base, controlnet=controlnet)
    models.set_sampler(pass1, base, spec.sampler)
    second_entry = base_entry
    if spec.second_pass:
        if spec.second_checkpoint and spec.second_checkpoint != spec.checkpoint:
            base2, second_entry = models.base_pipeline(spec.second_checkpoint, ARCH, owner)
            models.apply_loras(base2, lora_tags, owner)
        else:
            base2 = base
        pass2 = models.compose(StableDiffusionXLImg2ImgPipeline, base2)
        models.set_sampler(pass2, base2, spec.sampler)

    # 3. Prepare conditions: resized photo, canny map, A1111-syntax prompt embeddings
    init = photo.resize((w1, h1), Image.Resampling.LANCZOS)
    control = canny_control_image(init, spec.canny_low, spec.canny_high)
    # textual-inversion embeddings named in the prompts (shared ones and the job owner's own), per stage
    tis = models.prompt_embeddings([prompt, spec.negative_prompt], base, ARCH, owner)
    staged = encode_job_prompts(
        base, ARCH, prompt, spec.negative_prompt, tis, device=models.device, dtype=models.dtype
    )
    steps1 = min(int(spec.steps * spec.strength), spec.steps)
    steps2 = min(int(spec.steps * spec.second_strength), spec.steps) if spec.second_pass else 0
    if steps1 < 1:
        raise InputError("strength", f"steps*strength must give at least one step, got {spec.steps}*{spec.strength}")
    if spec.second_pass and steps2 < 1:
        raise InputError(
            "second_strength", f"steps*second_strength must give at least one step, got {spec.steps}*{spec.second_strength}"
        )
    total = steps1 + steps2
    ctx.progress(0, total, stage="pass 1")

    def callback(offset: int, stage: str):
        def on_step_end(pipe, i, _t, kwargs):
            want = ctx.wants_preview(i + 1, pipe.num_timesteps)
            preview = latents_to_preview(kwargs["latents"], ARCH) if want else None
            ctx.progress(offset + i + 1, total, stage=stage, preview=preview)
            ctx.check_canceled()
            return kwargs

        return on_step_end

    def generator():
        return torch.Generator(device="cpu").manual_seed(seed)

    embed_kwargs = staged.first_kwargs(pass1.scheduler, spec.steps, spec.strength)

    # 4. Denoise: pass 1 (ControlNet canny img2img at the photo's size)
    out1 = pass1(
        image=init, control_image=control, strength=spec.strength, num_inference_steps=spec.steps,
        guidance_scale=spec.cfg_scale, controlnet_conditioning_scale=spec.controlnet_weight,
        control_guidance_start=spec.guidance_start, control_guidance_end=spec.guidance_end,
        generator=generator(), height=h1, width=w1, callback_on_step_end=staged.callback(callback(0, "pass 1")),
        callback_on_step_end_tensor_inputs=staged.tensor_inputs(pass1), **embed_kwargs,
    ).images[0]

    # 5. Denoise: pass 2 (img2img at `upscale`x, no ControlNet) smooths and upscales
    final = out1
    if spec.second_pass:
        up = out1.resize((w2, h2), Image.Resampling.LANCZOS)
        final = pass2(
            image=up, strength=spec.second_strength, num_inference_steps=spec.steps,
            guidance_scale=spec.cfg_scale, generator=generator(), height=h2, width=w2,
            callback_on_step_end=staged.callback(callback(steps1, "pass 2")),
            callback_on_step_end_tensor_inputs=staged.tensor_inputs(pass2),
            **staged.first_kwargs(pass2.scheduler, spec.steps, spec.second_strength),
        ).images[0]

    # 6. Postprocess: A1111-style parameters text on each image
    shown_prompt = prompt + "".join(f" <lora:{x.name}:{x.weight:g}>" for x in loras)
    common = {
        "Steps": spec.steps, "Sampler": spec.sampler, "CFG scale": spec.cfg_scale, "Seed": seed,
    }
    tail = {"Version": f"toonbooth {__version__}"}
    if loras:
        tail = {"Lora hashes": ", ".join(f"{x.name}: {x.short_hash or 'none'}" for x in loras), **tail}
    if tis.uses:
        version = tail.pop("Version")
        tail.update({"TI hashes": tis.ti_hashes(), "Version": version})
    cn_text = (
        f"Module: canny, Model: {cn_entry.name} [{(models.short_hash(cn_entry) or '')[:8]}], "
        f"Weight: {spec.controlnet_weight:g}, Guidance Start: {spec.guidance_start:g}, "
        f"Guidance End: {spec.guidance_end:g}, Threshold A: {spec.canny_low}, Threshold B: {spec.canny_high}"
    )
    p1 = {
        **common, "Size": f"{w1}x{h1}", "Model hash": models.short_hash(base_entry) or "", "Model": base_entry.name,
        "Denoising strength": spec.strength, "ControlNet 0": cn_text, **tail,
    }
    images = [NamedImage("pass1", out1, format_a1111_parameters(shown_prompt, spec.negative_prompt, p1))]
    if spec.second_pass:
        p2 = {
            **common, "Size": f"{w2}x{h2}", "Model hash": models.short_hash(second_entry) or "",
            "Model": second_entry.name, "Denoising strength": spec.second_strength, **tail,
        }
        images.append(NamedImage("avatar", final, format_a1111_parameters(shown_prompt, spec.negative_prompt, p2)))
    else:
        images[0].name = "avatar"
    info = {
        "seed": seed, "prompt": shown_prompt, "size_pass1": [w1, h1], "size": [final.width, final.height],
        "steps_run": [steps1, steps2], "checkpoint": base_entry.name, "controlnet": cn_entry.name,
        "loras": [{"name": x.name, "weight": x.weight, "hash": x.short_hash} for x in loras],
        "embeddings": tis.info(),
    }
    for msg in tis.warnings:
        ctx.log(msg, warning=True)
    return EngineResult(images, "neural", reason, list(tis.warnings), info)
