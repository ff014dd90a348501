"""Memoji-like 3D cartoon avatar from a photo (seed 000, "My Memoji").

Neural recipe (the seed's own A1111 client): pass 1 = SDXL img2img with ControlNet canny
(70/230, weight 1, whole schedule) at the photo's size; pass 2 = img2img of pass 1 at 1.5x without
ControlNet, same prompt and LoRA. DDIM, 50 steps, CFG 7, denoising 0.75, seed 2968506678.
Classic backend: face crop + toon filter on the CPU (OpenCV), no weights.
"""

from __future__ import annotations

import random
from typing import ClassVar

from PIL import Image

from ..core.artifacts import ImageArtifact
from ..core.errors import BackendUnavailableError, InputError
from ..core.settings import Settings
from ..core.specs import AvatarSpec
from ..models import sd
from ..models.infotext import plain_infotext, sd_infotext
from ..models.manager import ModelManager
from ..models.refs import ModelRef
from ..models.samplers import resolve_sampler
from ..nets.prompt_translate import (
    PromptText,
    check_prompt_translation,
    protected_words,
    translate_job_prompts,
    translation_params,
)
from ..vision.edges import check_canny_thresholds
from .base import Engine, EngineContext, EngineOutput, JobCost

ARCH = "sdxl"
MISSING_HINT = (
    " — fetch them with `toonbooth models pull memoji` (the seed's memoji LoRA is not on the hub: "
    "add it with `toonbooth models add memoji-07.safetensors`)"
)


class AvatarOutput(EngineOutput):
    """The avatar (pass 2, or pass 1 when there is no second pass) and, neural with two passes, pass 1."""

    primary: ClassVar[str] = "avatar"
    avatar: ImageArtifact
    pass1: ImageArtifact | None = None


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The photo's own size, long side capped at `max_side`, both sides floored to a multiple of 8."""
    scale = min(1.0, max_side / max(width, height))
    w = max(8, int(width * scale) // 8 * 8)
    h = max(8, int(height * scale) // 8 * 8)
    return w, h


def denoise_steps(spec: AvatarSpec) -> tuple[int, int]:
    """Steps pass 1 and pass 2 run (A1111: int(steps * strength)); errors name the strength field."""
    steps1 = min(int(spec.steps * spec.strength), spec.steps)
    steps2 = min(int(spec.steps * spec.second_strength), spec.steps) if spec.second_pass else 0
    if steps1 < 1:
        raise InputError("strength", f"steps*strength must give at least one step, got {spec.steps}*{spec.strength}")
    if spec.second_pass and steps2 < 1:
        raise InputError(
            "second_strength", f"steps*second_strength must give at least one step, got {spec.steps}*{spec.second_strength}"
        )
    return steps1, steps2


class AvatarEngine(Engine[AvatarSpec, AvatarOutput]):
    kind = "avatar"
    Spec = AvatarSpec
    Output = AvatarOutput

    def required_models(self, spec: AvatarSpec) -> list[ModelRef]:
        refs = [ModelRef("checkpoint", spec.checkpoint, "checkpoint", ARCH),
                ModelRef("controlnet", spec.controlnet, "controlnet", ARCH)]  # fmt: skip
        if spec.second_pass and spec.second_checkpoint:
            refs.append(ModelRef("checkpoint", spec.second_checkpoint, "second_checkpoint", ARCH))
        refs += [ModelRef("lora", lo.name, f"loras.{i}.name", ARCH) for i, lo in enumerate(spec.loras)]
        return refs

    def check_inputs(self, spec: AvatarSpec, models: ModelManager, owner: str | None) -> None:
        check_canny_thresholds(spec.canny_low, spec.canny_high)
        if spec.backend == "classic":
            return
        try:
            resolve_sampler(spec.sampler)
        except InputError as exc:
            raise exc.renamed("sampler") from None
        denoise_steps(spec)
        if spec.second_pass and spec.upscaler:
            from ..nets.esrgan import check_upscaler_name

            check_upscaler_name(models, spec.upscaler, owner, field="upscaler")
        if self.choose_backend(spec, models, owner)[0] == "neural":  # (backend="neural" without weights: 409)
            check_prompt_translation(models, _prompt_texts(spec))  # a Korean prompt override needs the translator

    def cost(self, spec: AvatarSpec, settings: Settings) -> JobCost:
        side = spec.max_side or settings.max_side  # pass 1 works at the photo's size, long side capped
        p1 = side * side
        p2 = int(side * spec.upscale) ** 2 if spec.second_pass else 0
        s1, s2 = int(spec.steps * spec.strength), int(spec.steps * spec.second_strength) if spec.second_pass else 0
        return JobCost(pixels=(max(p1, p2), "upscale" if p2 > p1 else "max_side"),
                       pixel_steps=(p1 * s1 + p2 * s2, "steps"))  # fmt: skip

    def choose_backend(self, spec: AvatarSpec, models: ModelManager, owner: str | None) -> tuple[str, str]:
        if spec.backend == "classic":
            return "classic", "asked for the classic backend"
        missing = models.missing(self.required_models(spec), owner=owner)
        if not missing:
            return "neural", "all weights of the recipe are present"
        reason = "neural weights missing: " + "; ".join(missing) + MISSING_HINT
        if spec.backend == "neural":
            raise BackendUnavailableError(reason)
        return "classic", reason

    def run(self, spec: AvatarSpec, ctx: EngineContext) -> AvatarOutput:
        # 1. Check inputs (cheap, before any model is touched)
        check_canny_thresholds(spec.canny_low, spec.canny_high)
        photo = ctx.load_image(spec.image, field="image")
        backend, reason = self.choose_backend(spec, ctx.models, ctx.owner)
        ctx.log(f"backend: {backend} ({reason})")
        if backend == "classic":
            return _run_classic(spec, ctx, photo, reason)
        return _run_neural(spec, ctx, photo, reason)


def _prompt_texts(spec: AvatarSpec) -> list[PromptText]:
    return [PromptText("prompt", spec.build_prompt()), PromptText("negative_prompt", spec.negative_prompt)]


def _run_classic(spec: AvatarSpec, ctx: EngineContext, photo: Image.Image, reason: str) -> AvatarOutput:
    from ..vision.toon import classic_avatar

    # 1. Toon filter on the head-and-shoulders crop
    ctx.progress(0, 1, stage="classic")
    image, face, warnings = classic_avatar(photo, upscale=spec.upscale)
    ctx.progress(1, 1, stage="classic")
    # 2. Describe what was made
    params = plain_infotext("classic toon avatar", {
        "Backend": "classic (OpenCV toon filter, no neural weights)", "Size": f"{image.width}x{image.height}",
        "Face box": f"{face.x0},{face.y0},{face.x1},{face.y1}" if face else "none", "Upscale": spec.upscale,
    })  # fmt: skip
    info = {"face_box": face.model_dump() if face else None, "size": [image.width, image.height]}
    return AvatarOutput(avatar=ImageArtifact(image, params), backend="classic", backend_reason=reason,
                        warnings=list(warnings), info=info)  # fmt: skip


def _run_neural(spec: AvatarSpec, ctx: EngineContext, photo: Image.Image, reason: str) -> AvatarOutput:
    import torch
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

    from ..vision.edges import canny_control_image

    # 1. Check inputs and derive sizes / seed
    max_side = spec.max_side or ctx.settings.max_side
    w1, h1 = working_size(photo.width, photo.height, max_side)
    w2 = int(w1 * spec.upscale) // 8 * 8
    h2 = int(h1 * spec.upscale) // 8 * 8
    seed = spec.seed if spec.seed != -1 else random.randint(0, 2**32 - 1)
    translations, notes = translate_job_prompts(ctx.models, _prompt_texts(spec), protected=protected_words(
        ctx.models, ctx.owner))  # Korean prompt overrides -> English before CLIP  # fmt: skip
    prompt, negative = translations["prompt"].translated, translations["negative_prompt"].translated
    lora_tags = [(lo.name, lo.weight) for lo in spec.loras]
    steps1, steps2 = denoise_steps(spec)

    # 2. Load models (cached between jobs) and activate the LoRAs
    models, owner = ctx.models, ctx.owner  # the job owner's own styles (LoRAs) are usable by name
    base, base_entry = sd.base_pipeline(models, spec.checkpoint, ARCH, owner)
    controlnet, cn_entry = sd.controlnet(models, spec.controlnet, base, ARCH, owner)
    loras = sd.apply_loras(models, base, lora_tags, owner)
    ctx.check_canceled()
    pass1 = sd.compose(StableDiffusionXLControlNetImg2ImgPipeline, base, controlnet=controlnet)
    sd.set_sampler(pass1, base, spec.sampler)
    second_entry = base_entry
    if spec.second_pass:
        if spec.second_checkpoint and spec.second_checkpoint != spec.checkpoint:
            base2, second_entry = sd.base_pipeline(models, spec.second_checkpoint, ARCH, owner)
            sd.apply_loras(models, base2, lora_tags, owner)
        else:
            base2 = base
        pass2 = sd.compose(StableDiffusionXLImg2ImgPipeline, base2)
        sd.set_sampler(pass2, base2, spec.sampler)

    # 3. Prepare conditions: resized photo, canny map, A1111-syntax prompt embeddings
    init = photo.resize((w1, h1), Image.Resampling.LANCZOS)
    control = canny_control_image(init, spec.canny_low, spec.canny_high)
    tis, staged = sd.job_prompts(models, base, ARCH, prompt, negative, owner)
    total = steps1 + steps2
    ctx.progress(0, total, stage="pass 1")

    def generator():
        return torch.Generator(device="cpu").manual_seed(seed)

    # 4. Denoise: pass 1 (ControlNet canny img2img at the photo's size)
    out1 = pass1(
        image=init, control_image=control, strength=spec.strength, num_inference_steps=spec.steps,
        guidance_scale=spec.cfg_scale, controlnet_conditioning_scale=spec.controlnet_weight,
        control_guidance_start=spec.guidance_start, control_guidance_end=spec.guidance_end,
        generator=generator(), height=h1, width=w1,
        callback_on_step_end=staged.callback(ctx.step_callback(offset=0, total=total, stage="pass 1", arch=ARCH)),
        callback_on_step_end_tensor_inputs=staged.tensor_inputs(pass1),
        **staged.first_kwargs(pass1.scheduler, spec.steps, spec.strength),
    ).images[0]  # fmt: skip

    # 5. Denoise: pass 2 (img2img at `upscale`x, no ControlNet) smooths and upscales
    final = out1
    if spec.second_pass:
        if spec.upscaler:  # a real upscaler (ESRGAN family) enlarges pass 1, then Lanczos to the exact size
            from ..nets.esrgan import resolve_upscaler

            up = resolve_upscaler(models, spec.upscaler, owner, field="upscaler").resize_to(
                out1, w2, h2, check=ctx.check_canceled
            )
        else:
            up = out1.resize((w2, h2), Image.Resampling.LANCZOS)
        step2 = ctx.step_callback(offset=steps1, total=total, stage="pass 2", arch=ARCH)
        final = pass2(
            image=up, strength=spec.second_strength, num_inference_steps=spec.steps,
            guidance_scale=spec.cfg_scale, generator=generator(), height=h2, width=w2,
            callback_on_step_end=staged.callback(step2), callback_on_step_end_tensor_inputs=staged.tensor_inputs(pass2),
            **staged.first_kwargs(pass2.scheduler, spec.steps, spec.second_strength),
        ).images[0]  # fmt: skip

    # 6. Postprocess: A1111-style parameters text on each image
    shown_prompt = sd.prompt_with_loras(prompt, loras)
    cn_text = (
        f"Module: canny, Model: {cn_entry.name} [{(models.short_hash(cn_entry) or '')[:8]}], "
        f"Weight: {spec.controlnet_weight:g}, Guidance Start: {spec.guidance_start:g}, "
        f"Guidance End: {spec.guidance_end:g}, Threshold A: {spec.canny_low}, Threshold B: {spec.canny_high}"
    )

    def infotext(width: int, height: int, entry, strength: float, extra: dict | None) -> str:
        return sd_infotext(
            shown_prompt, negative, steps=spec.steps, sampler=spec.sampler, cfg_scale=spec.cfg_scale,
            seed=seed, width=width, height=height, model=entry.name, model_hash=models.short_hash(entry),
            denoising_strength=strength, extra={**(extra or {}), **translation_params(translations)}, loras=loras,
            tis=tis,
        )  # fmt: skip

    first = ImageArtifact(out1, infotext(w1, h1, base_entry, spec.strength, {"ControlNet 0": cn_text}))
    info = {
        "seed": seed, "prompt": shown_prompt, "size_pass1": [w1, h1], "size": [final.width, final.height],
        "steps_run": [steps1, steps2], "checkpoint": base_entry.name, "controlnet": cn_entry.name,
        "loras": sd.lora_info(loras), "embeddings": tis.info(),
        "translations": [t.model_dump() for t in translations.values() if t.source != "unchanged"], "upscaler": spec.upscaler or "Lanczos",
    }  # fmt: skip
    for msg in notes + tis.warnings:
        ctx.log(msg, warning=True)
    common = {"backend": "neural", "backend_reason": reason, "warnings": notes + list(tis.warnings), "info": info}
    if not spec.second_pass:
        return AvatarOutput(avatar=first, **common)
    second = ImageArtifact(final, infotext(w2, h2, second_entry, spec.second_strength, None))
    return AvatarOutput(avatar=second, pass1=first, **common)
