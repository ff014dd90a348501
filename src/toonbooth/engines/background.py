"""Webtoon backgrounds (seed 001, "Oh My Assistant"): a photo or a prompt — Korean welcome — becomes a background
in the artist's own style(s).

The seed's recipe: Stable Diffusion img2img when a photo is given (its `strength` says how far the picture may
move from the photo), txt2img from the prompt otherwise, with the artist's trained style (LoRA, or the
one-image DreamStyler-like multi-stage textual inversion) and its trigger word; Korean prompts translated
to English first (the seed's "한글 프롬프트 처리"). Here:

1. check     — the plan (neural / classic / translate only) and every name, refused at submit;
2. translate — Korean (Hangul) prompts -> English with MarianMT `opus-mt-ko-en` (`nets.prompt_translate`:
               A1111 syntax, style triggers and embedding names kept), or the user's edited translation;
3. neural    — SD1.5 or SDXL (the checkpoint decides) through `models.sd`: the cached base pipeline, the
               styles' LoRAs at their weights (`models.style_mix`), the prompt = styles' words + the prompt +
               the preset's suffix, the preset's negative prompt (no people); img2img at the photo's aspect
               (long side `max_side`, multiples of 8) or txt2img at a webtoon panel size; A1111 infotext with
               `Original prompt` next to the translated one;
   classic   — photo only: `vision.webtoon_bg` (edge-preserving flattening, palette, clean ink lines).

`backend="auto"` runs neural when the checkpoint (and its config folder) is installed, else classic for a photo;
a prompt without weights is refused with 409 naming what to fetch (`toonbooth models pull webtoon`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from PIL import Image
from pydantic import BaseModel

from ..core.artifacts import ImageArtifact
from ..core.errors import BackendUnavailableError, InputError
from ..core.specs import PANEL_SIZES, BackgroundSpec
from ..models import sd
from ..models.infotext import plain_infotext, sd_infotext
from ..models.manager import ModelManager
from ..models.refs import ModelRef
from ..models.style_mix import StyleMix, StyleUse, join_prompt, resolve_styles
from ..nets.prompt_translate import (
    PromptText,
    PromptTranslation,
    check_prompt_translation,
    protected_words,
    translate_job_prompts,
    translation_params,
)
from .base import Engine, EngineContext, EngineOutput, resolve_or_field_error

SUPPORTED_ARCHS = ("sd15", "sdxl")
PULL_HINT = "fetch them with `toonbooth models pull webtoon`, which also brings the Korean translator"
CLASSIC_MAX_SIDE = 2048
PIPELINES = {
    ("sd15", "txt2img"): "StableDiffusionPipeline",
    ("sd15", "img2img"): "StableDiffusionImg2ImgPipeline",
    ("sdxl", "txt2img"): "StableDiffusionXLPipeline",
    ("sdxl", "img2img"): "StableDiffusionXLImg2ImgPipeline",
}


class BackgroundFacts(BaseModel):
    """What a background job did, stored with it (the job's `info`)."""

    mode: Literal["full", "translate"]
    route: Literal["txt2img", "img2img", "classic", "none"]
    prompt: str
    """The positive prompt the text encoder got (styles' words + translated prompt + preset suffix, LoRA tags
    as A1111 shows them); '' for the classic filter."""
    negative_prompt: str
    translations: list[PromptTranslation]
    """Each prompt field: the original, what was used, and how (machine / edited / unchanged / off)."""
    styles: list[StyleUse]
    preset: str
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    checkpoint: str | None = None
    steps_run: int | None = None
    classic_settings: dict[str, Any] | None = None


class BackgroundOutput(EngineOutput, BackgroundFacts):
    """The background (primary; absent in `mode="translate"`) and the facts of the job."""

    primary: ClassVar[str] = "background"
    background: ImageArtifact | None = None

    def details(self) -> dict[str, Any]:
        """The stored facts, without the ones that do not apply to this run (None: no seed for the classic
        filter, no classic settings for a neural run, ...)."""
        return {k: v for k, v in super().details().items() if v is not None}


# --------------------------------------------------------------------------------------------------
# Plan and checks (no weights loaded)
# --------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    backend: Literal["neural", "classic", "translate"]
    reason: str
    arch: str | None = None
    entry: Any = None
    mix: StyleMix = field(default_factory=lambda: StyleMix([]))
    tag_loras: list[tuple[str, float]] = field(default_factory=list)
    """`<lora:name:w>` tags written in the prompt (A1111 habit), next to the `styles`."""


def checkpoint_ref(spec: BackgroundSpec) -> ModelRef:
    return ModelRef("checkpoint", spec.diffusion.checkpoint, "diffusion.checkpoint")


def prompt_texts(spec: BackgroundSpec) -> list[PromptText]:
    """The job's prompts as translation sees them (the negative one: the preset's unless given)."""
    return [
        PromptText("prompt", spec.prompt, spec.translated_prompt, "translated_prompt"),
        PromptText("negative_prompt", spec.negative(), spec.translated_negative_prompt, "translated_negative_prompt"),
    ]


def make_plan(spec: BackgroundSpec, models: ModelManager, owner: str | None) -> Plan:
    """Which backend runs and why; every refusal that needs no weights (errors name the field)."""
    if spec.mode == "translate":
        check_prompt_translation(models, prompt_texts(spec))
        return Plan("translate", "mode translate: only the prompts are translated")
    has_photo = spec.image is not None
    if not has_photo and not spec.prompt.strip() and not (spec.translated_prompt or "").strip() and not spec.styles:
        raise InputError("prompt", "a background without a photo needs a prompt (or a style) to draw from", spec.prompt)
    if spec.backend == "classic":
        if not has_photo:
            raise InputError(
                "image", "the classic backend turns a photo into a background; from a prompt alone it needs "
                "the neural backend (Stable Diffusion weights)", None,
            )  # fmt: skip
        return Plan("classic", "asked for the classic backend")
    missing = models.missing([checkpoint_ref(spec)], owner=owner)
    if missing:
        why = "neural weights missing: " + "; ".join(missing)
        if spec.backend == "neural":
            raise BackendUnavailableError(f"{why} — {PULL_HINT}")
        if not has_photo:
            raise BackendUnavailableError(
                f"a background from a prompt needs Stable Diffusion weights ({why}) — {PULL_HINT}; or give a "
                "photo (the classic filter needs no weights)"
            )
        return Plan("classic", f"classic because {why}; {PULL_HINT}")
    entry = resolve_or_field_error(models, checkpoint_ref(spec), owner)
    if entry.arch not in SUPPORTED_ARCHS:
        raise InputError(
            "diffusion.checkpoint", f"{entry.name!r} is {entry.arch}; the background studio runs "
            f"{' or '.join(SUPPORTED_ARCHS)} checkpoints", spec.diffusion.checkpoint,
        )  # fmt: skip
    if entry.inpainting:
        raise InputError("diffusion.checkpoint", f"{entry.name!r} is an inpainting checkpoint; pick a normal one",
                         spec.diffusion.checkpoint)  # fmt: skip
    arch = entry.arch
    sd.check_diffusion(spec.diffusion, models, owner, arch, field="diffusion", img2img=has_photo)
    if any(u.enabled for u in spec.diffusion.controlnet_units):
        raise InputError("diffusion.controlnet_units", "ControlNet units are not used by the background studio "
                         "(img2img keeps the photo's layout through `diffusion.strength`)", None)  # fmt: skip
    mix = resolve_styles(models, spec.styles, arch, owner)
    check_prompt_translation(models, prompt_texts(spec))
    tag_loras = _prompt_loras(spec, models, owner, arch, mix)
    return Plan("neural", "weights present", arch, entry, mix, tag_loras)


def _prompt_loras(
    spec: BackgroundSpec, models: ModelManager, owner: str | None, arch: str, mix: StyleMix
) -> list[tuple[str, float]]:
    """LoRA tags written in the prompt (they survive translation as written), checked like A1111's."""
    from ..models.prompts import extract_lora_tags

    field_name = "translated_prompt" if spec.translated_prompt is not None else "prompt"
    _text, tags = extract_lora_tags(spec.translated_prompt if spec.translated_prompt is not None else spec.prompt)
    out: list[tuple[str, float]] = []
    taken = {name.lower() for name, _ in mix.loras} | {lo.name.lower() for lo in spec.diffusion.loras}
    for tag in tags:
        entry = resolve_or_field_error(models, ModelRef("lora", tag.name, field_name), owner)
        if entry.arch not in (arch, "unknown"):
            raise InputError(field_name, f"LoRA {tag.name!r} is for {entry.arch}, the checkpoint is {arch}", tag.name)
        if entry.name.lower() in taken:
            raise InputError(field_name, f"LoRA {entry.name!r} is given twice (prompt tag and styles / "
                             "diffusion.loras)", tag.name)  # fmt: skip
        taken.add(entry.name.lower())
        out.append((entry.name, tag.weight))
    return out


def photo_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The photo's aspect at long side `max_side` (smaller photos keep their size), multiples of 8."""
    scale = min(1.0, max_side / max(width, height))
    return max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)


# --------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------


class BackgroundEngine(Engine[BackgroundSpec, BackgroundOutput]):
    kind = "background"
    Spec = BackgroundSpec
    Output = BackgroundOutput

    def required_models(self, spec: BackgroundSpec) -> list[ModelRef]:
        if spec.mode == "translate" or spec.backend == "classic":
            return []
        return [checkpoint_ref(spec)]

    def check_inputs(self, spec: BackgroundSpec, models: ModelManager, owner: str | None) -> None:
        make_plan(spec, models, owner)

    def run(self, spec: BackgroundSpec, ctx: EngineContext) -> BackgroundOutput:
        # 1. Check inputs (cheap, before any model is touched)
        plan = make_plan(spec, ctx.models, ctx.owner)
        photo = ctx.load_image(spec.image, field="image") if spec.image is not None else None
        ctx.log(f"backend: {plan.backend} ({plan.reason})")
        if plan.backend == "classic":
            return _run_classic(spec, ctx, photo, plan)
        # 2. Translate Korean prompts (or take the user's edit)
        ctx.progress(0, 1, stage="translate")
        words = [u.trigger for u in plan.mix.uses if u.trigger] + [u.name for u in plan.mix.uses]
        translations, warnings = translate_job_prompts(
            ctx.models, prompt_texts(spec), protected=protected_words(ctx.models, ctx.owner, words)
        )
        if plan.backend == "translate":
            ctx.progress(1, 1, stage="translate")
            return BackgroundOutput(
                backend="neural", backend_reason=plan.reason, warnings=warnings, mode="translate", route="none",
                prompt=translations["prompt"].translated, negative_prompt=translations["negative_prompt"].translated,
                translations=list(translations.values()), styles=[], preset=spec.preset,
            )  # fmt: skip
        return _run_neural(spec, ctx, photo, plan, translations, warnings)


def _run_classic(spec: BackgroundSpec, ctx: EngineContext, photo: Image.Image | None, plan: Plan) -> BackgroundOutput:
    from ..vision.webtoon_bg import webtoon_background

    assert photo is not None  # the plan refuses classic without a photo
    warnings: list[str] = []
    if spec.prompt.strip() or spec.translated_prompt:
        warnings.append("the prompt is not used by the classic filter (it draws from the photo only)")
    if spec.styles:
        warnings.append("styles are not used by the classic filter: " + ", ".join(s.name for s in spec.styles))
    # 1. The filter
    settings = spec.classic_settings()
    ctx.progress(0, 1, stage="classic")
    image = webtoon_background(photo, max_side=spec.max_side or CLASSIC_MAX_SIDE, **settings)
    ctx.progress(1, 1, stage="classic")
    # 2. Describe what was made
    params = plain_infotext("webtoon background (classic filter)", {
        "Backend": "classic (OpenCV webtoon-background filter, no neural weights)", "Preset": spec.preset,
        "Colors": settings["colors"], "Line width": settings["line_width"], "Line detail": settings["line_detail"],
        "Smooth": settings["smooth"], "Line tone": settings["line_tone"], "Size": f"{image.width}x{image.height}",
    })  # fmt: skip
    for w in warnings:
        ctx.log(w, warning=True)
    return BackgroundOutput(
        background=ImageArtifact(image, params), backend="classic", backend_reason=plan.reason, warnings=warnings,
        mode="full", route="classic", prompt="", negative_prompt="", translations=[], styles=[], preset=spec.preset,
        width=image.width, height=image.height, classic_settings=settings,
    )  # fmt: skip


def _run_neural(
    spec: BackgroundSpec,
    ctx: EngineContext,
    photo: Image.Image | None,
    plan: Plan,
    translations: dict[str, PromptTranslation],
    warnings: list[str],
) -> BackgroundOutput:
    import diffusers
    import torch

    models, owner, arch, params = ctx.models, ctx.owner, plan.arch, spec.diffusion
    assert arch is not None
    # 1. Sizes, seed, prompts
    route = "img2img" if photo is not None else "txt2img"
    if photo is not None:
        w, h = photo_size(photo.width, photo.height, spec.max_side or max(PANEL_SIZES[arch]["tall"]))
    else:
        w, h = spec.panel_size(arch)
    seed = params.seed if params.seed != -1 else random.randint(0, 2**32 - 1)
    preset = spec.preset_values()
    prompt = join_prompt(plan.mix.prompt_words, translations["prompt"].translated, preset["prompt"])
    negative = translations["negative_prompt"].translated
    from ..models.prompts import extract_lora_tags

    prompt_text = extract_lora_tags(prompt)[0]  # the tags' LoRAs are in plan.tag_loras

    # 2. Load the models (cached between jobs), activate the styles' LoRAs, build the pipeline
    base, entry = sd.base_pipeline(models, params.checkpoint, arch, owner)
    wanted = plan.mix.loras + plan.tag_loras + [(lo.name, lo.weight) for lo in params.loras]
    loras = sd.apply_loras(models, base, wanted, owner)
    ctx.check_canceled()
    cls = getattr(diffusers, PIPELINES[(arch, route)])
    pipe = sd.compose(cls, base, **({"requires_safety_checker": False} if arch == "sd15" else {}))
    sd.set_sampler(pipe, base, params.sampler, params.schedule_type, field="diffusion.sampler",
                   schedule_field="diffusion.schedule_type")  # fmt: skip

    # 3. Conditions: the photo at the working size, A1111-syntax prompt embeddings (styles' TIs included)
    tis, staged = sd.job_prompts(models, base, arch, prompt_text, negative, owner)
    warnings = warnings + list(tis.warnings)
    strength = params.strength if route == "img2img" else None
    total = sd.count_steps(pipe.scheduler, params.steps, strength)
    ctx.progress(0, total, stage="denoise")
    kwargs: dict[str, Any] = {
        **staged.first_kwargs(pipe.scheduler, params.steps, strength), "num_inference_steps": params.steps,
        "guidance_scale": params.cfg_scale, "height": h, "width": w, "output_type": "pil",
        "generator": torch.Generator("cpu").manual_seed(seed),
        "callback_on_step_end": staged.callback(ctx.step_callback(offset=0, total=total, stage="denoise", arch=arch)),
        "callback_on_step_end_tensor_inputs": staged.tensor_inputs(pipe),
    }  # fmt: skip
    if route == "img2img":
        assert photo is not None
        kwargs.update(image=photo.resize((w, h), Image.Resampling.LANCZOS), strength=strength)

    # 4. Denoise
    image = pipe(**sd.call_kwargs(pipe, kwargs)).images[0]
    ctx.progress(total, total, stage="denoise")

    # 5. Postprocess: A1111 infotext with the originals of translated prompts
    in_prompt = {name for name, _ in plan.tag_loras}  # written in the prompt already (A1111 keeps them there)
    shown = sd.prompt_with_loras(prompt, [x for x in loras if x.name not in in_prompt])
    infotext = sd_infotext(
        shown, negative, steps=params.steps, sampler=params.sampler, schedule=params.schedule_type,
        cfg_scale=params.cfg_scale, seed=seed, width=w, height=h, model=entry.name,
        model_hash=models.short_hash(entry), denoising_strength=strength, extra=translation_params(translations),
        loras=loras, tis=tis,
        stages={"Preset": spec.preset, "Styles": plan.mix.text() or None,
                "Background from": "photo" if route == "img2img" else "prompt"},
    )  # fmt: skip
    for msg in warnings:
        ctx.log(msg, warning=True)
    return BackgroundOutput(
        background=ImageArtifact(image, infotext), backend="neural", backend_reason=f"{plan.reason}: diffusers "
        f"{cls.__name__}", warnings=warnings, mode="full", route=route, prompt=shown, negative_prompt=negative,
        translations=list(translations.values()), styles=plan.mix.uses, preset=spec.preset, width=w, height=h,
        seed=seed, checkpoint=entry.name, steps_run=total,
        info={"loras": sd.lora_info(loras), "embeddings": tis.info()},
    )  # fmt: skip


__all__ = ["BackgroundEngine", "BackgroundFacts", "BackgroundOutput", "make_plan", "photo_size"]
