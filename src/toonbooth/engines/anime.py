"""Anime-me (seed 002, "Anime-ize a person"): click a person, erase them, redraw them as an anime
character, put the character back.

Stages, each with a neural and a classic backend (`backend="auto"` picks neural per stage when that
stage's weights are present here, and the job reports which ran and why):

1. segment   — Segment Anything (Kirillov et al., ICCV 2023; transformers `SamModel`, default
               `facebook/sam-vit-base`) from the clicks / box, or GrabCut (Rother et al., SIGGRAPH 2004);
               then the component under the clicks, holes filled, feathered edge (`vision.segment`).
2. inpaint   — LaMa (Suvorov et al., WACV 2022; our FFC generator in `nets.lama`, or the TorchScript
               `big-lama.pt` from the operator's models folder only) on a crop around the dilated hole,
               or OpenCV Telea (`vision.inpaint`).
3. character — the person crop (box + margin, long side `gen_size`, multiple of 8) restyled by SD1.5
               img2img with ControlNet canny (pose and outline hold) and the style LoRA (the user's own
               DreamBooth / LoRA styles included), prompt = trigger word + text; or the classic toon filter.
4. composite — Lab mean/std colour harmony against the scene around the mask (Reinhard et al. 2001),
               alpha "over" through the feathered mask, optional outline (`vision.composite`).

Outputs: `composite`, `background` (restored scene), `character` (RGBA layer), `mask`; `mode="mask"`
runs stage 1 only and returns `mask` and an `overlay` preview (SAM's image embedding stays cached, so a
new click on the same photo only runs the prompt encoder and mask decoder).

Models come through `ctx.models` (families `sam`: `<models>/SAM/<name>/` transformers folders, found also by
their hub id `org/name`; `lama`: `<models>/LaMa/<name>.safetensors`, or the operator's TorchScript `.pt` /
`weights_only` `.ckpt`), so this engine never looks at the disk itself.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np
from PIL import Image

from ..core.artifacts import ImageArtifact
from ..core.errors import BackendUnavailableError, InputError, ModelNotFoundError
from ..core.settings import Settings
from ..core.specs import AnimeSpec
from ..models import sd
from ..models.infotext import plain_infotext, sd_infotext
from ..models.manager import ModelManager
from ..models.refs import ModelRef
from ..nets.prompt_translate import (
    PromptText,
    check_prompt_translation,
    protected_words,
    translate_job_prompts,
    translation_params,
)
from ..vision.edges import check_canny_thresholds
from ..vision.segment import ClickPrompt, MaskResult, Point, prompt_from_face
from .base import Engine, EngineContext, EngineOutput, JobCost, check_model_names

ARCH = "sd15"
OVERLAY_COLOR = (255, 64, 160)
PULL_HINT = "fetch it with `toonbooth models pull {name}` (or `models pull anime` for the whole recipe)"


class AnimeOutput(EngineOutput):
    """Full mode: the composite (primary), the restored background, the character layer (RGBA) and the
    mask. Mask mode: the mask (primary) and an overlay preview."""

    primary: ClassVar[str] = "composite"
    composite: ImageArtifact | None = None
    background: ImageArtifact | None = None
    character: ImageArtifact | None = None
    mask: ImageArtifact
    overlay: ImageArtifact | None = None


# ---------------------------------------------------------------------------------------------------
# Which backend each stage runs
# ---------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Which backend each stage runs, and why."""

    segment: str = "grabcut"  # sam | grabcut
    inpaint: str = "telea"  # lama | telea
    character: str = "toon"  # sd15 | toon
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def neural_count(self) -> tuple[int, int]:
        used = [self.segment == "sam", self.inpaint == "lama", self.character == "sd15"]
        return sum(used), len(used)


def sd_refs(spec: AnimeSpec) -> list[ModelRef]:
    return [ModelRef("checkpoint", spec.checkpoint, "checkpoint", ARCH),
            ModelRef("controlnet", spec.controlnet, "controlnet", ARCH)]  # fmt: skip


def choose_backends(spec: AnimeSpec, models: ModelManager, owner: str | None) -> Plan:
    """Per stage: neural when asked (error if impossible) or, for auto, when its weights are here."""
    plan = Plan()
    want = spec.backend

    def decide(stage: str, refs: list[ModelRef], neural: str, classic: str, hint: str) -> str:
        if want == "classic":
            plan.reasons[stage] = "asked for the classic backend"
            return classic
        missing = models.missing(refs, owner)
        if not missing:
            plan.reasons[stage] = "weights present"
            return neural
        why = "; ".join(missing) + f" ({hint})"
        if want == "neural":
            raise BackendUnavailableError(f"{stage}: {why}")
        plan.reasons[stage] = f"classic because {why}"
        return classic

    sam = [ModelRef("sam", spec.sam_model, "sam_model")]
    plan.segment = decide("segment", sam, "sam", "grabcut", PULL_HINT.format(name="sam-vit-base"))
    if spec.mode == "mask":
        return plan
    lama = [ModelRef("lama", spec.lama_model, "lama_model")]
    plan.inpaint = decide("inpaint", lama, "lama", "telea", PULL_HINT.format(name="big-lama"))
    plan.character = decide("character", sd_refs(spec), "sd15", "toon", PULL_HINT.format(name="anime"))
    return plan


# ---------------------------------------------------------------------------------------------------
# Small image helpers
# ---------------------------------------------------------------------------------------------------


def click_prompt(spec: AnimeSpec, photo: Image.Image) -> tuple[ClickPrompt, bool]:
    """The prompt of the spec, checked against the photo (errors name `points[i]` / `box` / `points`);
    without clicks and box: a click on the largest face and the person box grown from it."""
    if not spec.points and spec.box is None:
        return prompt_from_face(photo), True
    prompt = ClickPrompt(points=[Point(x=p.x, y=p.y, positive=p.positive) for p in spec.points], box=spec.box)
    prompt.check(photo.width, photo.height)
    return prompt, False


def crop_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """Bounding box of `mask` grown by `margin` x its long side, clipped to the image."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    pad = int(round(margin * max(x1 - x0, y1 - y0)))
    return max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)


def gen_size_for(width: int, height: int, long_side: int) -> tuple[int, int]:
    """`width` x `height` scaled so the long side is `long_side`, both sides rounded to multiples of 8."""
    s = long_side / max(width, height)
    return max(8, int(round(width * s / 8)) * 8), max(8, int(round(height * s / 8)) * 8)


def mask_overlay(photo: Image.Image, mask: np.ndarray, prompt: ClickPrompt) -> Image.Image:
    """The photo with the mask tinted and outlined, positive clicks green, negative red, the box drawn."""
    rgb = np.asarray(photo.convert("RGB")).astype(np.float32)
    tint = np.asarray(OVERLAY_COLOR, np.float32)
    out = rgb.copy()
    out[mask] = 0.55 * rgb[mask] + 0.45 * tint
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    t = max(1, round(max(photo.size) / 300))
    cv2.drawContours(out, contours, -1, OVERLAY_COLOR, t)
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 200, 0), t)
    r = max(3, round(max(photo.size) / 100))
    for p in prompt.points:
        color = (40, 220, 60) if p.positive else (230, 40, 40)
        cv2.circle(out, (p.x, p.y), r, color, -1)
        cv2.circle(out, (p.x, p.y), r, (255, 255, 255), max(1, r // 3))
    return Image.fromarray(out)


def _points_text(prompt: ClickPrompt) -> str:
    return " ".join(f"{p.x}:{p.y}{'+' if p.positive else '-'}" for p in prompt.points)


# ---------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Segmented:
    result: MaskResult
    mask: np.ndarray
    alpha: np.ndarray
    text: str


class AnimeEngine(Engine[AnimeSpec, AnimeOutput]):
    kind = "anime"
    Spec = AnimeSpec
    Output = AnimeOutput

    def required_models(self, spec: AnimeSpec) -> list[ModelRef]:
        refs = [ModelRef("sam", spec.sam_model, "sam_model")]
        if spec.mode == "full":
            refs += [ModelRef("lama", spec.lama_model, "lama_model"), *sd_refs(spec)]
        return refs

    def check_inputs(self, spec: AnimeSpec, models: ModelManager, owner: str | None) -> None:
        check_model_names(self.required_models(spec), models)
        check_canny_thresholds(spec.canny_low, spec.canny_high)
        plan = choose_backends(spec, models, owner)  # backend="neural" without weights: refused here
        if spec.mode == "full" and plan.character == "sd15":
            check_generation_inputs(spec, models, owner, spec.build_prompt())
            check_prompt_translation(models, [PromptText("prompt", spec.prompt),  # Korean prompts (webtoon)
                                              PromptText("negative_prompt", spec.negative_prompt)])  # fmt: skip

    def cost(self, spec: AnimeSpec, settings: Settings) -> JobCost:
        pixels = spec.gen_size * spec.gen_size
        return JobCost(pixels=(pixels, "gen_size"), pixel_steps=(pixels * int(spec.steps * spec.strength), "steps"))

    def run(self, spec: AnimeSpec, ctx: EngineContext) -> AnimeOutput:
        return _run(spec, ctx)


def _run(spec: AnimeSpec, ctx: EngineContext) -> AnimeOutput:
    owner = ctx.owner
    timings: dict[str, float] = {}
    warnings: list[str] = []

    # 1. Check inputs (cheap, before any model is touched)
    t0 = time.perf_counter()
    check_canny_thresholds(spec.canny_low, spec.canny_high)
    photo = ctx.load_image(spec.image, field="image")
    prompt, from_face = click_prompt(spec, photo)
    if from_face:
        warnings.append("no click given: segmented the person under the largest face")
    plan = choose_backends(spec, ctx.models, owner)
    full = spec.mode == "full"
    loras: list[tuple[str, float]] = []
    prompt_text = spec.build_prompt()
    if full and plan.character == "sd15":
        prompt_text, loras = check_generation_inputs(spec, ctx.models, owner, prompt_text)
    elif full and spec.style:
        warnings.append(f"style {spec.style!r} not used: the character stage runs the classic toon filter")
    for stage, why in plan.reasons.items():
        ctx.log(f"{stage}: {getattr(plan, stage)} ({why})")
    timings["check"] = time.perf_counter() - t0
    n_gen = max(1, int(spec.steps * spec.strength)) if plan.character == "sd15" else 1  # refined below
    total = 1 if not full else 3 + n_gen
    ctx.progress(0, total, stage="segment")

    # 2. Segment + clean the mask
    t0 = time.perf_counter()
    seg = _segment(spec, ctx, plan, photo, prompt, from_face)
    timings["segment"] = time.perf_counter() - t0
    mask_img = Image.fromarray((seg.mask * 255).astype(np.uint8), "L")
    mask_params = plain_infotext("", {
        "Segment": seg.text, "Points": _points_text(prompt) or None,
        "Box": ",".join(str(v) for v in prompt.box) if prompt.box else None,
        "Feather": spec.feather_px, "Size": f"{photo.width}x{photo.height}",
    })  # fmt: skip
    info: dict[str, Any] = {
        "backends": {"segment": plan.segment},
        "reasons": dict(plan.reasons),
        "score": seg.result.score,
        "all_scores": seg.result.all_scores,
        "mask_area": float(seg.mask.mean()),
        "mask_box": list(crop_box(seg.mask, 0.0)),
        "points": [p.model_dump() for p in prompt.points],
        "box": list(prompt.box) if prompt.box else None,
        "size": [photo.width, photo.height],
        "timings": timings,
    }
    if not full:
        ctx.progress(1, 1, stage="segment")
        backend = "neural" if plan.segment == "sam" else "classic"
        return AnimeOutput(
            mask=ImageArtifact(mask_img, mask_params), overlay=ImageArtifact(mask_overlay(photo, seg.mask, prompt)),
            backend=backend, backend_reason=_reason_text(plan, ("segment",)), warnings=warnings, info=info,
        )  # fmt: skip
    if seg.mask.all():
        raise InputError(
            "points", "the segmented person covers the whole photo: add negative points or a box", None
        )
    ctx.progress(1, total, stage="inpaint")

    # 3. Inpaint the background where the person was (dilated hole)
    t0 = time.perf_counter()
    dil = spec.dilate_px if spec.dilate_px is not None else max(5, int(round(0.015 * max(photo.size))))
    background, inpaint_text = _inpaint(spec, ctx, plan, photo, seg.mask, dil)
    timings["inpaint"] = time.perf_counter() - t0
    ctx.progress(2, total, stage="generate")

    # 4. Character: the person crop restyled (SD1.5 img2img + ControlNet canny + style LoRA, or toon)
    t0 = time.perf_counter()
    box = crop_box(seg.alpha > 1.0 / 255, spec.crop_margin)
    crop = photo.crop(box)
    if plan.character == "sd15":
        styled, gen = _generate_sd15(spec, ctx, crop, prompt_text, loras, offset=2)
        warnings += gen["warnings"]
        total = gen["total"]
    else:
        styled, gen = _generate_toon(spec, crop)
    character = photo.copy()
    character.paste(styled.resize(crop.size, Image.Resampling.LANCZOS), box[:2])
    timings["generate"] = time.perf_counter() - t0
    ctx.progress(total - 1, total, stage="composite")

    # 5. Composite through the feathered mask, colours harmonized to the scene
    t0 = time.perf_counter()
    from ..vision.composite import composite, harmonize, layers_to_rgba

    band = max(8, int(round(0.02 * max(photo.size))))
    if spec.harmonize > 0:
        character = harmonize(character, background, seg.mask, band_px=band, strength=spec.harmonize)
    result = composite(background, character, seg.alpha, edge_line_px=spec.edge_line_px)
    layer = layers_to_rgba(character, seg.alpha)
    timings["composite"] = time.perf_counter() - t0
    ctx.progress(total, total, stage="composite")

    # 6. Describe: A1111-style parameters on each image, info
    stages = {"Segment": seg.text, "Inpaint": inpaint_text, "Dilation": dil, "Feather": spec.feather_px,
              "Harmonize": spec.harmonize, "Edge line": spec.edge_line_px or None,
              "Crop": ",".join(str(v) for v in box)}  # fmt: skip
    if plan.character == "sd15":
        char_params = gen["infotext"](stages)
    else:
        char_params = plain_infotext(
            "classic toon character",
            {"Backend": "classic toon filter (no neural weights)", **gen["settings"], **stages},
        )
    bg_params = plain_infotext("", {"Inpaint": inpaint_text, "Dilation": dil, "Size": f"{photo.width}x{photo.height}"})
    info["backends"] = {"segment": plan.segment, "inpaint": plan.inpaint, "character": plan.character}
    info.update(crop_box=list(box), dilate_px=dil, **gen["info"])
    n_neural, n_all = plan.neural_count
    backend = "neural" if n_neural == n_all else "classic" if n_neural == 0 else "mixed"
    for w in warnings:
        ctx.log(w, warning=True)
    return AnimeOutput(
        composite=ImageArtifact(result, char_params), background=ImageArtifact(background, bg_params),
        character=ImageArtifact(layer, char_params), mask=ImageArtifact(mask_img, mask_params), backend=backend,
        backend_reason=_reason_text(plan, ("segment", "inpaint", "character")), warnings=warnings, info=info,
    )  # fmt: skip


def _reason_text(plan: Plan, stages: tuple[str, ...]) -> str:
    return "; ".join(f"{s}: {getattr(plan, s)} ({plan.reasons.get(s, '')})" for s in stages)


def check_generation_inputs(
    spec: AnimeSpec, models: ModelManager, owner: str | None, text: str
) -> tuple[str, list[tuple[str, float]]]:
    """Prompt LoRA tags and the style resolve, the sampler exists, strength gives a step."""
    from ..models.prompts import check_lora_names, extract_lora_tags
    from ..models.samplers import resolve_sampler

    try:
        resolve_sampler(spec.sampler)
    except InputError as exc:
        raise exc.renamed("sampler") from None
    if int(spec.steps * spec.strength) < 1:
        raise InputError(
            "strength",
            f"steps*strength must give at least one step, got {spec.steps}*{spec.strength}",
            spec.strength,
        )
    text, tags = extract_lora_tags(text)
    known = models.registry.names("lora", owner)
    check_lora_names(tags, known)
    loras = [(t.name, t.weight) for t in tags]
    if spec.style:
        try:
            entry = models.entry(spec.style, "lora", owner)
        except ModelNotFoundError:
            listing = ", ".join(known) if known else "(none)"
            raise InputError(
                "style", f"no style LoRA called {spec.style!r}; known: {listing}", spec.style
            ) from None
        if entry.arch not in (ARCH, "unknown"):
            raise InputError(
                "style", f"LoRA {spec.style!r} is for {entry.arch}, this studio runs SD1.5", spec.style
            )
        loras.insert(0, (spec.style, spec.style_weight))
    return text, loras


def _segment(
    spec: AnimeSpec, ctx: EngineContext, plan: Plan, photo: Image.Image, prompt: ClickPrompt, from_face: bool
) -> _Segmented:
    from ..vision.segment import clean_mask, grabcut_segment

    arr = np.asarray(photo.convert("RGB"))
    if plan.segment == "sam":
        result = ctx.models.load("sam", spec.sam_model, ctx.owner).segment(arr, prompt)
        text = f"SAM {spec.sam_model}, score {result.score:.3f}"
    else:
        # without clicks GrabCut builds its own head-and-shoulders prior from the face (better than a box)
        result = grabcut_segment(arr, None if from_face else prompt)
        text = "GrabCut"
    ctx.check_canceled()
    mask, alpha = clean_mask(result.mask, prompt.positive_points, fill_holes=True, feather_px=spec.feather_px)
    if not mask.any():
        raise InputError(
            "points",
            f"{'SAM' if plan.segment == 'sam' else 'GrabCut'} found no person at the clicks "
            f"({_points_text(prompt) or 'box only'}): click on the person or draw a box around them",
            [p.model_dump() for p in prompt.points],
        )
    return _Segmented(result, mask, alpha, text)


def _inpaint(
    spec: AnimeSpec, ctx: EngineContext, plan: Plan, photo: Image.Image, mask: np.ndarray, dil: int
) -> tuple[Image.Image, str]:
    from ..vision.inpaint import LamaInpainter, telea_inpaint

    if plan.inpaint == "lama":
        module = ctx.models.load("lama", spec.lama_model, ctx.owner)
        out = LamaInpainter(module, device=ctx.models.device, dilate_px=dil).inpaint(photo, mask)
        return out, f"LaMa {spec.lama_model}"
    out = telea_inpaint(photo, mask, radius=5, dilate_px=dil, feather_px=min(4.0, float(dil)))
    return out, "Telea (OpenCV)"


def _generate_toon(spec: AnimeSpec, crop: Image.Image) -> tuple[Image.Image, dict[str, Any]]:
    """Classic: the toon filter on the crop (at most `gen_size` on the long side, then scaled back)."""
    from ..vision.toon import toonify

    scale = min(1.0, spec.gen_size / max(crop.size))
    work = (
        crop
        if scale >= 1.0
        else crop.resize(
            (max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.Resampling.LANCZOS
        )
    )
    styled = toonify(work, upscale=1.0)
    settings = {"Size": f"{work.width}x{work.height}"}
    return styled, {"settings": settings, "prompt": "", "info": {"gen_size": list(work.size)}}


def _generate_sd15(
    spec: AnimeSpec,
    ctx: EngineContext,
    crop: Image.Image,
    prompt_text: str,
    loras: list[tuple[str, float]],
    offset: int,
) -> tuple[Image.Image, dict[str, Any]]:
    import torch
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    from ..vision.edges import canny_control_image

    models, owner = ctx.models, ctx.owner

    # Korean prompts -> English before CLIP (the trigger word kept as written)
    translations, notes = translate_job_prompts(
        models, [PromptText("prompt", prompt_text), PromptText("negative_prompt", spec.negative_prompt)],
        protected=protected_words(models, owner, [spec.trigger or ""]),
    )
    prompt_text, negative = translations["prompt"].translated, translations["negative_prompt"].translated

    # 4a. Load models (cached between jobs), activate the style LoRA, build the pipeline
    base, base_entry = sd.base_pipeline(models, spec.checkpoint, ARCH, owner)
    controlnet, cn_entry = sd.controlnet(models, spec.controlnet, base, ARCH, owner)
    loaded = sd.apply_loras(models, base, loras, owner)
    ctx.check_canceled()
    pipe = sd.compose(
        StableDiffusionControlNetImg2ImgPipeline, base, controlnet=controlnet, requires_safety_checker=False
    )
    sd.set_sampler(pipe, base, spec.sampler)

    # 4b. Conditions: crop at the working size, its canny map, A1111-syntax prompt embeddings
    w, h = gen_size_for(crop.width, crop.height, spec.gen_size)
    init = crop.resize((w, h), Image.Resampling.LANCZOS)
    control = canny_control_image(init, spec.canny_low, spec.canny_high)
    tis, staged = sd.job_prompts(models, base, ARCH, prompt_text, negative, owner)
    seed = spec.seed if spec.seed != -1 else random.randint(0, 2**32 - 1)
    n = sd.count_steps(pipe.scheduler, spec.steps, spec.strength)
    total = offset + n + 1
    ctx.progress(offset, total, stage="generate")

    # 4c. Denoise
    styled = pipe(
        image=init, control_image=control, strength=spec.strength, num_inference_steps=spec.steps,
        guidance_scale=spec.cfg_scale, controlnet_conditioning_scale=spec.controlnet_weight,
        generator=torch.Generator(device="cpu").manual_seed(seed),
        **staged.first_kwargs(pipe.scheduler, spec.steps, spec.strength),
        callback_on_step_end=staged.callback(
            ctx.step_callback(offset=offset, total=total, stage="generate", arch=ARCH)
        ),
        callback_on_step_end_tensor_inputs=staged.tensor_inputs(pipe),
    ).images[0]  # fmt: skip

    shown = sd.prompt_with_loras(prompt_text, loaded)
    cn_text = (
        f"Module: canny, Model: {cn_entry.name} [{(models.short_hash(cn_entry) or '')[:8]}], "
        f"Weight: {spec.controlnet_weight:g}, Threshold A: {spec.canny_low}, Threshold B: {spec.canny_high}"
    )

    def infotext(stages: dict[str, Any]) -> str:
        return sd_infotext(
            shown, negative, steps=spec.steps, sampler=spec.sampler, cfg_scale=spec.cfg_scale,
            seed=seed, width=w, height=h, model=base_entry.name, model_hash=models.short_hash(base_entry),
            denoising_strength=spec.strength, extra={"ControlNet 0": cn_text, **translation_params(translations)},
            loras=loaded, tis=tis,
            stages=stages,
        )  # fmt: skip

    info = {
        "seed": seed, "prompt": shown, "gen_size": [w, h], "steps_run": n, "checkpoint": base_entry.name,
        "controlnet": cn_entry.name, "loras": sd.lora_info(loaded), "embeddings": tis.info(),
        "translations": [t.model_dump() for t in translations.values() if t.source != "unchanged"],
    }  # fmt: skip
    # total: segment + inpaint + n denoising steps + composite
    return styled, {"infotext": infotext, "info": info, "total": total, "warnings": notes + tis.warnings}
