"""Pose change (webtoon seed 001): a character drawn again in another pose.

Steps:
1. pose     — from a photo: DWPose (YOLOX person detector + RTMPose whole-body, 133 keypoints, onnxruntime;
              `nets.dwpose`) converted to the OpenPose skeleton; or from an OpenPose JSON (A1111's openpose
              editor / ControlNet format, checked strictly: errors name `skeleton` and the path inside it).
              The skeleton is fitted into the result's canvas (aspect kept, centred) and drawn exactly as
              ControlNet-openpose expects (`vision.pose_draw`); the drawing and its JSON are outputs the
              artist can see and edit.
2. render   — `animate_anyone`: Moore-AnimateAnyone's reference UNet + denoising UNet (stock diffusers
              UNets, reference attention and the PoseGuider hook from `nets.reference_attn`), CLIP image
              embedding of the character (zeros unconditional), DDIM v-prediction zero-SNR trailing, one
              reference pass at t = 0, no motion module (`nets.animate_anyone.pose2img`);
              `controlnet` (the light path): SD1.5 txt2img + ControlNet openpose on the drawing + IP-Adapter
              with the character image (diffusers `load_ip_adapter`, when installed) + the artist's style LoRAs
              (`diffusion.loras`) through `models.sd`;
              classic (no re-rendering weights, or `backend="classic"`): no re-rendering at all — the skeleton
              drawing is the primary output, with an overlay on the character and the reason.
3. layers   — `background="remove"` or a `background_image`: the character's mask on the result (SAM, or
              GrabCut when SAM is not installed, seeded by the skeleton's points and box), an RGBA layer, and
              the composite over the background (cover-fitted) as anime-me does (`vision.composite`).

`mode="skeleton"` runs step 1 only: the preview of the detected pose before any rendering.
"""

from __future__ import annotations

import json
import random
import time
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from ..core.artifacts import FileArtifact, ImageArtifact
from ..core.errors import BackendUnavailableError, InputError, ModelError
from ..core.specs import ReposeSpec
from ..models import sd
from ..models.infotext import plain_infotext, sd_infotext
from ..models.manager import ModelManager
from ..models.refs import ModelRef
from .base import Engine, EngineContext, EngineOutput, check_model_names, resolve_or_field_error

ARCH = "sd15"
AA_SAMPLER = "DDIM (v-prediction, zero terminal SNR, trailing)"
PULL = "`toonbooth models pull {name}` (or `models pull webtoon` for the whole recipe)"


class ReposeOutput(EngineOutput):
    """The re-posed character (primary; absent when the classic backend ran), the drawn skeleton (the
    primary then), its OpenPose JSON, an overlay of the skeleton on the character (classic), the character
    mask and RGBA layer (`background="remove"` or a background image), the composite over the background."""

    primary: ClassVar[str] = "image"
    image: ImageArtifact | None = None
    skeleton_image: ImageArtifact
    skeleton: FileArtifact
    overlay: ImageArtifact | None = None
    mask: ImageArtifact | None = None
    layer: ImageArtifact | None = None
    composite: ImageArtifact | None = None
    method: str = ""
    width: int = 0
    height: int = 0
    people: int = 0


# ---------------------------------------------------------------------------------------------------
# Checking (no weights loaded)
# ---------------------------------------------------------------------------------------------------


def aa_refs(spec: ReposeSpec) -> list[ModelRef]:
    return [
        ModelRef("animate_anyone", spec.animate_anyone, "animate_anyone", ARCH),
        ModelRef("clip_vision", spec.image_encoder, "image_encoder"),
        ModelRef("vae", spec.vae, "vae"),
    ]


def cn_refs(spec: ReposeSpec) -> list[ModelRef]:
    return [
        ModelRef("checkpoint", spec.diffusion.checkpoint, "diffusion.checkpoint", ARCH),
        ModelRef("controlnet", spec.controlnet, "controlnet", ARCH),
    ]


def pose_ref(spec: ReposeSpec) -> ModelRef:
    return ModelRef("dwpose", spec.pose_model, "pose_model")


@dataclass
class ReposePlan:
    """What runs: `method` animate_anyone | controlnet | classic | skeleton, and why."""

    method: str
    reason: str
    warnings: list[str] = field(default_factory=list)


def _aa_missing(spec: ReposeSpec, models: ModelManager, owner: str | None) -> list[str]:
    missing = models.missing(aa_refs(spec), owner)
    if not missing:  # the UNet config: the folder's own config.json or the sd15 config folder
        entry = models.entry(spec.animate_anyone, "animate_anyone", owner)
        if entry.path is not None and not (entry.path / "config.json").is_file():
            try:
                models.registry.config_folder("sd15")
            except ModelError as exc:
                missing.append(str(exc))
    return missing


def choose_method(spec: ReposeSpec, models: ModelManager, owner: str | None) -> ReposePlan:
    """The method that runs: the asked one when its weights are here (backend neural: refused otherwise),
    for `auto` the first of animate_anyone / controlnet whose weights are here; classic otherwise."""
    if spec.mode == "skeleton":
        return ReposePlan("skeleton", "skeleton preview only (mode skeleton)")
    if spec.backend == "classic":
        return ReposePlan("classic", "asked for the classic backend: skeleton drawing only, no re-rendering")
    wanted = ["animate_anyone", "controlnet"] if spec.method == "auto" else [spec.method]
    why: list[str] = []
    for method in wanted:
        if method == "animate_anyone":
            missing = _aa_missing(spec, models, owner)
            hint = PULL.format(name="animate-anyone")
        else:
            missing = models.missing(cn_refs(spec), owner)
            hint = PULL.format(name="control_v11p_sd15_openpose")
        if not missing:
            reason = "weights present" if spec.method != "auto" else f"auto: {method} weights present"
            if why:
                reason += f" ({'; '.join(why)})"
            return ReposePlan(method, reason)
        why.append(f"{method}: {'; '.join(missing)} — {hint}")
    if spec.backend == "neural":
        raise BackendUnavailableError("re-rendering needs weights: " + " | ".join(why))
    return ReposePlan(
        "classic", "re-rendering needs weights, so only the skeleton was drawn (no fake re-rendering): " + " | ".join(why)
    )


def parse_skeleton(spec: ReposeSpec) -> Any:
    """The spec's OpenPose JSON as a `PoseSkeleton` (InputError naming `skeleton`)."""
    from ..nets.dwpose import parse_openpose_json

    data = spec.skeleton
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise InputError("skeleton", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return parse_openpose_json(data, field="skeleton")


def check_repose(spec: ReposeSpec, models: ModelManager, owner: str | None) -> tuple[ReposePlan, list[tuple[str, float]], str]:
    """Everything refusable before weights load: the skeleton JSON, DWPose for a pose photo, the method's
    weights (backend neural), the light path's checkpoint / sampler / LoRAs / ControlNet. Returns the plan,
    the LoRAs (name, weight) and the prompt without LoRA tags."""
    from ..models.prompts import check_lora_names, extract_lora_tags

    if spec.skeleton is not None:
        parse_skeleton(spec)
    if spec.pose_image is not None:
        missing = models.missing([pose_ref(spec)], owner)
        if missing:
            raise BackendUnavailableError(
                "`pose_image`: estimating a pose from a photo needs the DWPose ONNX pair (yolox_l.onnx + "
                f"dw-ll_ucoco_384.onnx in <models>/DWPose/; {PULL.format(name='dwpose')}) — {'; '.join(missing)}. "
                "Without it, give the pose as an OpenPose JSON `skeleton`."
            )
    if spec.diffusion.controlnet_units:
        raise InputError(
            "diffusion.controlnet_units", "repose brings its own openpose ControlNet (field `controlnet`); "
            "leave controlnet_units empty", len(spec.diffusion.controlnet_units),
        )  # fmt: skip
    plan = choose_method(spec, models, owner)
    prompt, loras = spec.prompt, []
    if plan.method == "controlnet":
        sd.check_diffusion(spec.diffusion, models, owner, ARCH, img2img=False)
        cn = resolve_or_field_error(models, ModelRef("controlnet", spec.controlnet, "controlnet"), owner)
        if cn.arch not in (ARCH, "unknown"):
            raise InputError("controlnet", f"ControlNet {cn.name!r} is {cn.arch}, this studio runs SD1.5", spec.controlnet)
        prompt, tags = extract_lora_tags(spec.prompt)
        check_lora_names(tags, models.registry.names("lora", owner))
        loras = [(x.name, x.weight) for x in spec.diffusion.loras] + [(t.name, t.weight) for t in tags]
    elif plan.method == "animate_anyone":
        if spec.diffusion.sampler not in ("DDIM", "ddim"):
            plan.warnings.append(
                f"`diffusion.sampler` {spec.diffusion.sampler!r} not used: AnimateAnyone runs the scheduler it "
                f"was trained with, {AA_SAMPLER}"
            )
        if spec.diffusion.loras:
            plan.warnings.append("`diffusion.loras` not used: style LoRAs apply to the controlnet method")
    if plan.method in ("classic", "skeleton") and spec.background_image is not None:
        plan.warnings.append("`background_image` not used: there is no re-rendered character to composite")
    return plan, loras, prompt


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def result_size(spec: ReposeSpec, aspect_w: int, aspect_h: int) -> tuple[int, int]:
    """(width, height): given sides win; a missing side follows the reference aspect; else long side `size`;
    multiples of 8."""

    def r8(v: float) -> int:
        return int(min(1024, max(16, round(v / 8) * 8)))

    if spec.width and spec.height:
        return spec.width, spec.height
    if spec.width:
        return spec.width, r8(spec.width * aspect_h / aspect_w)
    if spec.height:
        return r8(spec.height * aspect_w / aspect_h), spec.height
    k = spec.size / max(aspect_w, aspect_h)
    return r8(aspect_w * k), r8(aspect_h * k)


def skeleton_overlay(character: Image.Image, drawing: np.ndarray) -> Image.Image:
    """The skeleton drawn over the (dimmed) character: where the drawing has colour, the drawing."""
    base = np.asarray(character.convert("RGB").resize((drawing.shape[1], drawing.shape[0]), Image.Resampling.LANCZOS))
    out = (base.astype(np.float32) * 0.45 + 140 * 0.55).astype(np.uint8)
    lit = drawing.max(axis=2) > 0
    out[lit] = drawing[lit]
    return Image.fromarray(out)


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` scaled to cover width x height and centre-cropped (the background behind the character)."""
    k = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * k)), max(height, round(image.height * k))
    scaled = image.convert("RGB").resize((w, h), Image.Resampling.LANCZOS)
    x0, y0 = (w - width) // 2, (h - height) // 2
    return scaled.crop((x0, y0, x0 + width, y0 + height))


# ---------------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------------


class ReposeEngine(Engine[ReposeSpec, ReposeOutput]):
    kind = "repose"
    Spec = ReposeSpec
    Output = ReposeOutput

    def required_models(self, spec: ReposeSpec) -> list[ModelRef]:
        refs = [pose_ref(spec)] if spec.pose_image is not None else []
        if spec.mode == "full":
            if spec.method in ("auto", "animate_anyone"):
                refs += aa_refs(spec)
            if spec.method in ("auto", "controlnet"):
                refs += cn_refs(spec)
                if spec.ip_adapter:
                    refs.append(ModelRef("ip_adapter", spec.ip_adapter, "ip_adapter", ARCH, optional=True))
        return refs

    def check_inputs(self, spec: ReposeSpec, models: ModelManager, owner: str | None) -> None:
        check_model_names(self.required_models(spec), models)
        check_repose(spec, models, owner)

    def cost(self, spec, settings):  # type: ignore[override]
        from .base import JobCost

        w, h = spec.width or spec.size, spec.height or spec.size
        steps = spec.diffusion.steps
        return JobCost(pixels=(w * h, "size"), pixel_steps=(w * h * steps, "diffusion.steps"))

    def run(self, spec: ReposeSpec, ctx: EngineContext) -> ReposeOutput:
        return _run(spec, ctx)


def _run(spec: ReposeSpec, ctx: EngineContext) -> ReposeOutput:
    from ..nets.dwpose import openpose_to_json
    from ..nets.openpose_detect import as_in_json, detect_skeleton, fit_skeleton, select_people, without_parts
    from ..vision.pose_draw import draw_openpose

    timings: dict[str, float] = {}
    # 1. Check inputs (cheap) and load the pictures
    t0 = time.perf_counter()
    plan, loras, prompt = check_repose(spec, ctx.models, ctx.owner)
    warnings = list(plan.warnings)
    character = ctx.load_image(spec.character, field="character") if spec.character is not None else None
    background = ctx.load_image(spec.background_image, field="background_image") if spec.background_image else None
    steps = spec.diffusion.steps
    rendering = plan.method in ("animate_anyone", "controlnet")
    total = 2 + (steps + 2 if rendering else 0) + (1 if rendering and (spec.background == "remove" or background) else 0)
    ctx.progress(0, total, stage="pose")
    ctx.log(f"method: {plan.method} ({plan.reason})")
    timings["check"] = time.perf_counter() - t0

    # 2. Pose: DWPose on the photo, or the JSON; fitted into the result canvas and drawn
    t0 = time.perf_counter()
    if spec.pose_image is not None:
        photo = ctx.load_image(spec.pose_image, field="pose_image")
        dw = ctx.models.load("dwpose", spec.pose_model, ctx.owner)
        raw = detect_skeleton(dw, np.asarray(photo.convert("RGB")), people=spec.people, field="pose_image")
        pose_source = f"DWPose {spec.pose_model} on the pose photo ({photo.width}x{photo.height})"
    else:
        raw = select_people(parse_skeleton(spec), spec.people)
        pose_source = f"OpenPose JSON ({raw.width}x{raw.height} canvas)"
    ref_w, ref_h = (character.width, character.height) if character is not None else (raw.width, raw.height)
    width, height = result_size(spec, ref_w, ref_h)
    fitted = as_in_json(without_parts(fit_skeleton(raw, width, height), hands=spec.hands, face=spec.face))
    drawing = draw_openpose(fitted, hands=spec.hands, face=spec.face)
    pose_json = openpose_to_json(fitted)
    timings["pose"] = time.perf_counter() - t0
    ctx.progress(1, total, stage="pose")
    pose_params = plain_infotext("", {"Pose": pose_source, "People": len(fitted.people), "Size": f"{width}x{height}",
                                      "Hands": spec.hands, "Face": spec.face})  # fmt: skip
    out: dict[str, Any] = {
        "skeleton_image": ImageArtifact(Image.fromarray(drawing), pose_params),
        "skeleton": FileArtifact(json.dumps(pose_json).encode("utf-8"), "application/json", ".json"),
    }
    info: dict[str, Any] = {"pose_source": pose_source, "reason": plan.reason, "timings": timings}
    # 3. Render (or say why not)
    if not rendering:
        if character is not None:
            out["overlay"] = ImageArtifact(skeleton_overlay(character, drawing), pose_params)
        backend = "neural" if spec.pose_image is not None and plan.method == "skeleton" else "classic"
        ctx.progress(total, total, stage="pose")
    else:
        assert character is not None
        seed = spec.diffusion.seed if spec.diffusion.seed != -1 else random.randint(0, 2**32 - 1)
        t0 = time.perf_counter()
        if plan.method == "animate_anyone":
            image, params, extra = _render_animate_anyone(spec, ctx, character, drawing, seed, total, pose_source)
        else:
            image, params, extra = _render_controlnet(spec, ctx, character, drawing, seed, total, prompt, loras)
        warnings += extra.pop("warnings", [])
        info.update(extra, seed=seed)
        timings["render"] = time.perf_counter() - t0
        out["image"] = ImageArtifact(image, params)
        backend = "neural"

        # 4. Layers: mask, RGBA layer, composite
        if spec.background == "remove" or background is not None:
            t0 = time.perf_counter()
            mask, alpha, seg_text = _character_mask(spec, ctx, image, fitted)
            out["mask"] = ImageArtifact(Image.fromarray((mask * 255).astype(np.uint8), "L"),
                                        plain_infotext("", {"Segment": seg_text, "Feather": spec.feather_px}))  # fmt: skip
            from ..vision.composite import composite, layers_to_rgba

            out["layer"] = ImageArtifact(layers_to_rgba(image, alpha), params)
            if background is not None:
                out["composite"] = ImageArtifact(composite(cover(background, width, height), image, alpha), params)
            info["segment"] = seg_text
            timings["layers"] = time.perf_counter() - t0
        ctx.progress(total, total, stage="layers")

    for w in warnings:
        ctx.log(w, warning=True)
    return ReposeOutput(
        **out, backend=backend, backend_reason=plan.reason, warnings=warnings, info=info, method=plan.method,
        width=width, height=height, people=len(fitted.people),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# AnimateAnyone
# ---------------------------------------------------------------------------------------------------


def _render_animate_anyone(
    spec: ReposeSpec, ctx: EngineContext, character: Image.Image, drawing: np.ndarray, seed: int, total: int,
    pose_source: str,
) -> tuple[Image.Image, str, dict[str, Any]]:
    import torch

    from ..nets.animate_anyone import pose2img

    models, owner = ctx.models, ctx.owner
    parts = models.load("animate_anyone", spec.animate_anyone, owner)
    vae = models.load("vae", spec.vae, owner)
    encoder = models.load("clip_vision", spec.image_encoder, owner)
    ctx.check_canceled()
    steps = spec.diffusion.steps
    on_step_end = ctx.step_callback(offset=1, total=total, stage="denoise", arch=ARCH)
    shim = types.SimpleNamespace(num_timesteps=steps)

    def on_step(i: int, t: Any, latents: Any) -> None:
        on_step_end(shim, i, t, {"latents": latents})

    def on_stage(name: str) -> None:
        if name == "decode":
            ctx.progress(1 + steps, total, stage="decode")
        ctx.check_canceled()

    image = pose2img(
        parts, vae, encoder, character, drawing, steps=steps, guidance_scale=spec.diffusion.cfg_scale,
        generator=torch.Generator("cpu").manual_seed(seed), on_step=on_step, on_stage=on_stage,
    )  # fmt: skip
    ctx.progress(2 + steps, total, stage="decode")
    h, w = drawing.shape[:2]
    entry = models.entry(spec.animate_anyone, "animate_anyone", owner)
    params = plain_infotext("", {
        "Method": "AnimateAnyone (reference attention + PoseGuider, single image, no motion module)",
        "Steps": steps, "Sampler": AA_SAMPLER, "CFG scale": spec.diffusion.cfg_scale, "Seed": seed,
        "Size": f"{w}x{h}", "Model": entry.name, "Image encoder": spec.image_encoder, "VAE": spec.vae,
        "Pose": pose_source,
    })  # fmt: skip
    return image, params, {"animate_anyone": entry.name, "files": parts.files}


# ---------------------------------------------------------------------------------------------------
# The light path: SD1.5 + ControlNet openpose + IP-Adapter + style LoRAs
# ---------------------------------------------------------------------------------------------------


def _render_controlnet(
    spec: ReposeSpec, ctx: EngineContext, character: Image.Image, drawing: np.ndarray, seed: int, total: int,
    prompt: str, loras: list[tuple[str, float]],
) -> tuple[Image.Image, str, dict[str, Any]]:
    import torch
    from diffusers import StableDiffusionControlNetPipeline

    from ..nets.ip_adapter import attach_ip_adapter, detach_ip_adapter

    models, owner = ctx.models, ctx.owner
    warnings: list[str] = []
    h, w = drawing.shape[:2]
    d = spec.diffusion
    # a. models (cached), the style LoRAs, the pipeline over the base's modules
    base, base_entry = sd.base_pipeline(models, d.checkpoint, ARCH, owner)
    controlnet, cn_entry = sd.controlnet(models, spec.controlnet, base, ARCH, owner)
    loaded = sd.apply_loras(models, base, loras, owner)
    ip = None
    if spec.ip_adapter:
        missing = models.missing([ModelRef("ip_adapter", spec.ip_adapter, "ip_adapter", ARCH)], owner)
        if missing:
            warnings.append(
                f"IP-Adapter not used ({'; '.join(missing)}; {PULL.format(name='ip-adapter_sd15')}): the character's "
                "look comes from the prompt and the style LoRAs only"
            )
        else:
            ip = models.load("ip_adapter", spec.ip_adapter, owner)
    ctx.check_canceled()
    pipe = sd.compose(StableDiffusionControlNetPipeline, base, controlnet=controlnet, requires_safety_checker=False)
    sd.set_sampler(pipe, base, d.sampler, d.schedule_type, field="diffusion.sampler",
                   schedule_field="diffusion.schedule_type")  # fmt: skip
    tis, staged = sd.job_prompts(models, base, ARCH, prompt, spec.negative_prompt, owner)
    warnings += tis.warnings
    total += sd.count_steps(pipe.scheduler, d.steps, None) - d.steps  # second-order samplers call back more often
    kwargs: dict[str, Any] = {}
    # b. denoise (the IP-Adapter is on the shared UNet only for this call)
    if ip is not None:
        attach_ip_adapter(pipe, ip, spec.ip_adapter_scale)
        kwargs["ip_adapter_image"] = character.convert("RGB")
    try:
        image = pipe(
            image=Image.fromarray(drawing), num_inference_steps=d.steps, guidance_scale=d.cfg_scale, width=w, height=h,
            controlnet_conditioning_scale=spec.controlnet_weight,
            generator=torch.Generator(device="cpu").manual_seed(seed), **staged.first_kwargs(pipe.scheduler, d.steps),
            callback_on_step_end=staged.callback(ctx.step_callback(offset=1, total=total, stage="denoise", arch=ARCH)),
            callback_on_step_end_tensor_inputs=staged.tensor_inputs(pipe), **kwargs,
        ).images[0]  # fmt: skip
    finally:
        if ip is not None:
            detach_ip_adapter(pipe)
    ctx.progress(total - 1, total, stage="decode")
    shown = sd.prompt_with_loras(prompt, loaded)
    cn_text = (
        f"Module: none (skeleton drawn by toonbooth), Model: {cn_entry.name}, Weight: {spec.controlnet_weight:g}"
    )
    extra = {"ControlNet 0": cn_text}
    if ip is not None:
        extra["IP-Adapter"] = f"{spec.ip_adapter} (scale {spec.ip_adapter_scale:g})"
    params = sd_infotext(
        shown, spec.negative_prompt, steps=d.steps, sampler=d.sampler, schedule=d.schedule_type, cfg_scale=d.cfg_scale,
        seed=seed, width=w, height=h, model=base_entry.name, model_hash=models.short_hash(base_entry), extra=extra,
        loras=loaded, tis=tis, stages={"Method": "ControlNet openpose + IP-Adapter (light path)"},
    )  # fmt: skip
    return image, params, {
        "checkpoint": base_entry.name, "controlnet": cn_entry.name, "ip_adapter": spec.ip_adapter if ip else None,
        "loras": sd.lora_info(loaded), "prompt": shown, "warnings": warnings,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------


def _character_mask(spec: ReposeSpec, ctx: EngineContext, image: Image.Image, skeleton: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """The character's mask on the result: SAM (when installed) or GrabCut, clicked on the skeleton's
    points inside its box (grown by 15 %), cleaned and feathered."""
    from ..nets.openpose_detect import skeleton_points
    from ..vision.segment import ClickPrompt, Point, clean_mask, grabcut_segment

    w, h = image.size
    pts = skeleton_points(skeleton)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)]
    if not len(pts):
        raise InputError("skeleton", "no skeleton point lies inside the result: cannot find the character")
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    pad = 0.15 * max(x1 - x0, y1 - y0, 16)
    box = (max(0, int(x0 - pad)), max(0, int(y0 - pad)), min(w, int(x1 + pad) + 1), min(h, int(y1 + pad) + 1))
    chosen = pts[np.linspace(0, len(pts) - 1, min(len(pts), 12)).astype(int)]
    prompt = ClickPrompt(points=[Point(x=int(x), y=int(y), positive=True) for x, y in chosen], box=box)
    arr = np.asarray(image.convert("RGB"))
    if not ctx.models.missing([ModelRef("sam", spec.segment_model, "segment_model")], ctx.owner):
        result = ctx.models.load("sam", spec.segment_model, ctx.owner).segment(arr, prompt)
        text = f"SAM {spec.segment_model} on the skeleton's points"
    else:
        result = grabcut_segment(arr, prompt)
        text = "GrabCut seeded by the skeleton (SAM not installed)"
    mask, alpha = clean_mask(result.mask, prompt.positive_points, fill_holes=True, feather_px=spec.feather_px)
    return mask, alpha, text


__all__ = ["ReposeEngine", "ReposeOutput", "check_repose", "choose_method", "parse_skeleton", "result_size"]
