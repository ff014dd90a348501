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

Model locations: SAM from `<models>/SAM/<name>` (a `save_pretrained` folder; a hub id `org/name` is also
looked up as `<models>/SAM/org/name` and `<models>/SAM/name`), the local hub cache, or (CLI only) a local
folder; LaMa from `<models>/LaMa/<name>.safetensors` (or `.pt` TorchScript / `weights_only` `.ckpt`).
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from .. import __version__
from ..core.errors import BackendUnavailableError, InputError, ModelNotFoundError
from ..core.images import format_a1111_parameters
from ..core.specs import AnimeSpec
from ..vision.segment import ClickPrompt, MaskResult, Point, prompt_from_face
from .base import EngineContext, EngineResult, NamedImage

ARCH = "sd15"
SAM_FOLDERS = ("SAM", "sam")
LAMA_FOLDERS = ("LaMa", "lama")
LAMA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".pth")
OVERLAY_COLOR = (255, 64, 160)
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,199}$")


# ---------------------------------------------------------------------------------------------------
# Where the weights are (per stage)
# ---------------------------------------------------------------------------------------------------


@dataclass
class ModelSource:
    """A located model: `kind` "folder" / "hub" (SAM) or "safetensors" / "torchscript" / "ckpt" (LaMa)."""

    kind: str
    location: str
    name: str


@dataclass
class Plan:
    """Which backend each stage runs, and why."""

    segment: str = "grabcut"  # sam | grabcut
    inpaint: str = "telea"  # lama | telea
    character: str = "toon"  # sd15 | toon
    reasons: dict[str, str] = field(default_factory=dict)
    sam: ModelSource | None = None
    lama: ModelSource | None = None

    @property
    def neural_count(self) -> tuple[int, int]:
        used = [self.segment == "sam", self.inpaint == "lama", self.character == "sd15"]
        return sum(used), len(used)


def _model_dirs(ctx: EngineContext) -> list[Path]:
    s = ctx.settings
    return [Path(s.resolved_models_dir), *[Path(p) for p in s.extra_model_dirs]]


def _allow_paths(ctx: EngineContext) -> bool:
    return bool(getattr(ctx.models, "allow_paths", False))


def _hub_cached(repo_id: str) -> bool:
    """Whether the local hub cache holds the SAM config and weights of `repo_id` (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    if not isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return False
    return any(
        isinstance(try_to_load_from_cache(repo_id, f), str)
        for f in ("model.safetensors", "pytorch_model.bin")
    )


def locate_sam(name: str, ctx: EngineContext) -> ModelSource:
    """The SAM model `name`: a `<models>/SAM/...` folder, a local folder (CLI only), or a hub id.

    A hub id found in the local hub cache is kind "hub"; one only the hub has is "hub-remote" (then
    `backend="neural"` may download it when online, `auto` falls back to GrabCut). Not found anywhere:
    ModelNotFoundError saying where it was looked for."""
    parts = [p for p in name.split("/") if p]
    safe = bool(parts) and ".." not in parts and all(_SAFE_NAME_RE.match(p) for p in parts)
    if safe:
        candidates = [Path(*parts)] + ([Path(parts[-1])] if len(parts) > 1 else [])
        for root in _model_dirs(ctx):
            for folder in SAM_FOLDERS:
                for rel in candidates:
                    d = root / folder / rel
                    if (d / "config.json").is_file():
                        return ModelSource("folder", str(d), name)
    if _allow_paths(ctx):
        d = Path(name).expanduser()
        if d.is_dir():
            if not (d / "config.json").is_file():
                raise ModelNotFoundError(
                    f"SAM folder {name!r} has no config.json (a `save_pretrained` folder)"
                )
            return ModelSource("folder", str(d), name)
    elif not safe:
        raise InputError("sam_model", f"must be a model name or a hub id, got {name!r}", name)
    if _HUB_ID_RE.match(name):
        return ModelSource("hub" if _hub_cached(name) else "hub-remote", name, name)
    where = _model_dirs(ctx)[0] / SAM_FOLDERS[0] / name
    raise ModelNotFoundError(f"SAM model {name!r} not found (looked for the folder {where})")


def locate_lama(name: str, ctx: EngineContext) -> ModelSource:
    """The LaMa weights `name` in `<models>/LaMa/` (or, CLI only, a file path)."""
    p = Path(name).expanduser()
    if _allow_paths(ctx) and p.suffix.lower() in LAMA_SUFFIXES and p.is_file():
        return _lama_source(p, name)
    if not _SAFE_NAME_RE.match(name):
        raise InputError("lama_model", f"must be a file name in <models>/LaMa/, got {name!r}", name)
    stems = [name] if Path(name).suffix.lower() in LAMA_SUFFIXES else [name + s for s in LAMA_SUFFIXES]
    for root in _model_dirs(ctx):
        for folder in LAMA_FOLDERS:
            for fn in stems:
                f = root / folder / fn
                if f.is_file():
                    return _lama_source(f, name)
    where = _model_dirs(ctx)[0] / LAMA_FOLDERS[0]
    raise ModelNotFoundError(
        f"LaMa weights {name!r} not found in {where} (expected {name}.safetensors, .pt or .ckpt; "
        "fetch them with `toonbooth models pull big-lama`)"
    )


def _lama_source(path: Path, name: str) -> ModelSource:
    kind = {".safetensors": "safetensors", ".pt": "torchscript"}.get(path.suffix.lower(), "ckpt")
    return ModelSource(kind, str(path), name)


def _sd_missing(spec: AnimeSpec, ctx: EngineContext, owner: str | None) -> list[str]:
    return ctx.models.missing([("checkpoint", spec.checkpoint), ("controlnet", spec.controlnet)], ARCH, owner)


def choose_backends(spec: AnimeSpec, ctx: EngineContext, owner: str | None) -> Plan:
    """Per stage: neural when asked (error if impossible) or, for auto, when its weights are here."""
    plan = Plan()
    want = spec.backend

    def decide(stage: str, missing: str | None, neural: str, classic: str) -> str:
        if want == "classic":
            plan.reasons[stage] = "asked for the classic backend"
            return classic
        if missing is None:
            plan.reasons[stage] = "weights present"
            return neural
        if want == "neural":
            raise BackendUnavailableError(f"{stage}: {missing}")
        plan.reasons[stage] = f"classic because {missing}"
        return classic

    # segment
    missing: str | None = None
    if want != "classic":
        try:
            plan.sam = locate_sam(spec.sam_model, ctx)
            if plan.sam.kind == "hub-remote" and want == "auto":
                missing = (
                    f"SAM {spec.sam_model!r} is neither in <models>/SAM/ nor in the local hub cache "
                    "(fetch it with `toonbooth models pull sam-vit-base`, or `models pull anime` for the whole "
                    "recipe)"
                )
        except ModelNotFoundError as exc:
            missing = str(exc)
    plan.segment = decide("segment", missing, "sam", "grabcut")
    if spec.mode == "mask":
        return plan

    # inpaint
    missing = None
    if want != "classic":
        try:
            plan.lama = locate_lama(spec.lama_model, ctx)
        except ModelNotFoundError as exc:
            missing = str(exc)
    plan.inpaint = decide("inpaint", missing, "lama", "telea")

    # character
    missing = None
    if want != "classic":
        reasons = _sd_missing(spec, ctx, owner)
        if reasons:
            missing = (
                "SD1.5 weights missing: "
                + "; ".join(reasons)
                + " (fetch them with `toonbooth models pull anime`)"
            )
    plan.character = decide("character", missing, "sd15", "toon")
    return plan


# ---------------------------------------------------------------------------------------------------
# Loading (cached in the runtime's model cache, never in module globals)
# ---------------------------------------------------------------------------------------------------


def _aux_cache(models: Any):
    """Where SAM and LaMa stay loaded: the manager's `aux_cache` for small perception models when it
    has one (so that they do not push the diffusion pipelines out), else its main cache."""
    return getattr(models, "aux_cache", None) or models.cache


def load_sam(src: ModelSource, ctx: EngineContext):
    from ..vision.segment import SamSegmenter

    models = ctx.models
    key = ("sam", src.kind, src.location, str(models.device), str(models.dtype))

    def load():
        from ..models.loader import is_offline

        local_only = src.kind != "hub-remote" or is_offline(ctx.settings)
        return SamSegmenter.from_pretrained(
            src.location, device=str(models.device), dtype=models.dtype, local_files_only=local_only
        )

    return _aux_cache(models).get_or_load(key, load)


def load_lama_module(src: ModelSource, ctx: EngineContext):
    """LaMa in float32 (the FFT of half tensors is limited to power-of-two sizes on CUDA)."""
    from ..nets.lama import load_lama, load_lama_torchscript

    models = ctx.models
    key = ("lama", src.location, str(models.device))

    def load():
        if src.kind == "torchscript":
            root = next(
                (d for d in _model_dirs(ctx) if Path(src.location).resolve().is_relative_to(d.resolve())),
                _model_dirs(ctx)[0],
            )
            return load_lama_torchscript(src.location, root, device=models.device)
        return load_lama(src.location, device=models.device)

    return _aux_cache(models).get_or_load(key, load)


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


def _denoise_steps(scheduler: Any, steps: int, strength: float) -> int:
    """Iterations `callback_on_step_end` will count for img2img (diffusers `get_timesteps`)."""
    sched = type(scheduler).from_config(scheduler.config)
    sched.set_timesteps(steps, device="cpu")
    t_start = max(steps - min(int(steps * strength), steps), 0)
    return max(1, len(sched.timesteps) - t_start * getattr(sched, "order", 1))


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


def run(spec: AnimeSpec, ctx: EngineContext) -> EngineResult:
    from ..vision.edges import check_canny_thresholds

    owner = getattr(ctx, "owner", None)
    timings: dict[str, float] = {}
    warnings: list[str] = []

    # 1. Check inputs (cheap, before any model is touched)
    t0 = time.perf_counter()
    check_canny_thresholds(spec.canny_low, spec.canny_high)
    photo = ctx.load_image(spec.image, field="image")
    prompt, from_face = click_prompt(spec, photo)
    if from_face:
        warnings.append("no click given: segmented the person under the largest face")
    plan = choose_backends(spec, ctx, owner)
    full = spec.mode == "full"
    loras: list[tuple[str, float]] = []
    prompt_text = spec.build_prompt()
    if full and plan.character == "sd15":
        prompt_text, loras = _check_generation_inputs(spec, ctx, owner, prompt_text)
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
    mask_params = format_a1111_parameters(
        "",
        "",
        {
            "Segment": seg.text, "Points": _points_text(prompt) or None,
            "Box": ",".join(str(v) for v in prompt.box) if prompt.box else None,
            "Feather": spec.feather_px, "Size": f"{photo.width}x{photo.height}",
            "Version": f"toonbooth {__version__}",
        },
    )  # fmt: skip
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
        images = [
            NamedImage("mask", mask_img, mask_params),
            NamedImage("overlay", mask_overlay(photo, seg.mask, prompt), None),
        ]
        backend = "neural" if plan.segment == "sam" else "classic"
        return EngineResult(images, backend, _reason_text(plan, ("segment",)), warnings, info)
    if seg.mask.all():
        raise InputError(
            "points", "the segmented person covers the whole photo: add negative points or a box", None
        )
    ctx.progress(1, total, stage="inpaint")

    # 3. Inpaint the background where the person was (dilated hole)
    t0 = time.perf_counter()
    dil = spec.dilate_px if spec.dilate_px is not None else max(5, int(round(0.015 * max(photo.size))))
    background, inpaint_text = _inpaint(ctx, plan, photo, seg.mask, dil)
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
    tail = {"Version": f"toonbooth {__version__}"}
    if plan.character == "sd15":
        gen_settings = {**gen["settings"], **stages, **tail}
        char_params = format_a1111_parameters(gen["prompt"], spec.negative_prompt, gen_settings)
    else:
        gen_settings = {
            "Backend": "classic toon filter (no neural weights)",
            **gen["settings"],
            **stages,
            **tail,
        }
        char_params = format_a1111_parameters("classic toon character", "", gen_settings)
    bg_params = format_a1111_parameters(
        "", "", {"Inpaint": inpaint_text, "Dilation": dil, "Size": f"{photo.width}x{photo.height}", **tail}
    )
    images = [
        NamedImage("composite", result, char_params),
        NamedImage("background", background, bg_params),
        NamedImage("character", layer, char_params),
        NamedImage("mask", mask_img, mask_params),
    ]
    info["backends"] = {"segment": plan.segment, "inpaint": plan.inpaint, "character": plan.character}
    info.update(crop_box=list(box), dilate_px=dil, **gen["info"])
    n_neural, n_all = plan.neural_count
    backend = "neural" if n_neural == n_all else "classic" if n_neural == 0 else "mixed"
    for w in warnings:
        ctx.log(w, warning=True)
    return EngineResult(
        images, backend, _reason_text(plan, ("segment", "inpaint", "character")), warnings, info
    )


def _reason_text(plan: Plan, stages: tuple[str, ...]) -> str:
    return "; ".join(f"{s}: {getattr(plan, s)} ({plan.reasons.get(s, '')})" for s in stages)


def _check_generation_inputs(
    spec: AnimeSpec, ctx: EngineContext, owner: str | None, text: str
) -> tuple[str, list[tuple[str, float]]]:
    """Prompt LoRA tags and the style resolve, the sampler exists, strength gives a step."""
    from ..models.prompts import check_lora_names, extract_lora_tags
    from ..models.samplers import resolve_sampler

    resolve_sampler(spec.sampler)
    if int(spec.steps * spec.strength) < 1:
        raise InputError(
            "strength",
            f"steps*strength must give at least one step, got {spec.steps}*{spec.strength}",
            spec.strength,
        )
    text, tags = extract_lora_tags(text)
    known = ctx.models.registry.names("lora", owner)
    check_lora_names(tags, known)
    loras = [(t.name, t.weight) for t in tags]
    if spec.style:
        try:
            entry = ctx.models.entry(spec.style, "lora", owner)
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
        assert plan.sam is not None
        result = load_sam(plan.sam, ctx).segment(arr, prompt)
        text = f"SAM {plan.sam.name}, score {result.score:.3f}"
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
    ctx: EngineContext, plan: Plan, photo: Image.Image, mask: np.ndarray, dil: int
) -> tuple[Image.Image, str]:
    from ..vision.inpaint import LamaInpainter, telea_inpaint

    if plan.inpaint == "lama":
        assert plan.lama is not None
        module = load_lama_module(plan.lama, ctx)
        out = LamaInpainter(module, device=ctx.models.device, dilate_px=dil).inpaint(photo, mask)
        return out, f"LaMa {plan.lama.name}"
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

    from ..models.embeddings import encode_job_prompts
    from ..models.preview import latents_to_preview
    from ..vision.edges import canny_control_image

    owner = getattr(ctx, "owner", None)
    models = ctx.models

    # 4a. Load models (cached between jobs), activate the style LoRA, build the pipeline
    base, base_entry = models.base_pipeline(spec.checkpoint, ARCH, owner)
    controlnet, cn_entry = models.controlnet(spec.controlnet, base, ARCH, owner)
    loaded = models.apply_loras(base, loras, owner)
    ctx.check_canceled()
    pipe = models.compose(
        StableDiffusionControlNetImg2ImgPipeline, base, controlnet=controlnet, requires_safety_checker=False
    )
    models.set_sampler(pipe, base, spec.sampler)

    # 4b. Conditions: crop at the working size, its canny map, A1111-syntax prompt embeddings
    w, h = gen_size_for(crop.width, crop.height, spec.gen_size)
    init = crop.resize((w, h), Image.Resampling.LANCZOS)
    control = canny_control_image(init, spec.canny_low, spec.canny_high)
    # textual-inversion embeddings named in the prompts (shared ones and the job owner's own), per stage
    tis = models.prompt_embeddings([prompt_text, spec.negative_prompt], base, ARCH, owner)
    staged = encode_job_prompts(
        base, ARCH, prompt_text, spec.negative_prompt, tis, device=models.device, dtype=models.dtype
    )
    seed = spec.seed if spec.seed != -1 else random.randint(0, 2**32 - 1)
    n = _denoise_steps(pipe.scheduler, spec.steps, spec.strength)
    total = offset + n + 1
    ctx.progress(offset, total, stage="generate")

    def on_step_end(pipe, i, _t, kwargs):
        want = ctx.wants_preview(i + 1, pipe.num_timesteps)
        preview = latents_to_preview(kwargs["latents"], ARCH) if want else None
        ctx.progress(offset + min(i + 1, n), total, stage="generate", preview=preview)
        return kwargs

    # 4c. Denoise
    styled = pipe(
        image=init, control_image=control, strength=spec.strength, num_inference_steps=spec.steps,
        guidance_scale=spec.cfg_scale, controlnet_conditioning_scale=spec.controlnet_weight,
        generator=torch.Generator(device="cpu").manual_seed(seed),
        **staged.first_kwargs(pipe.scheduler, spec.steps, spec.strength),
        callback_on_step_end=staged.callback(on_step_end),
        callback_on_step_end_tensor_inputs=staged.tensor_inputs(pipe),
    ).images[0]  # fmt: skip

    shown = prompt_text + "".join(f" <lora:{x.name}:{x.weight:g}>" for x in loaded)
    cn_text = (
        f"Module: canny, Model: {cn_entry.name} [{(models.short_hash(cn_entry) or '')[:8]}], "
        f"Weight: {spec.controlnet_weight:g}, Threshold A: {spec.canny_low}, Threshold B: {spec.canny_high}"
    )
    settings: dict[str, Any] = {
        "Steps": spec.steps, "Sampler": spec.sampler, "CFG scale": spec.cfg_scale, "Seed": seed,
        "Size": f"{w}x{h}", "Model hash": models.short_hash(base_entry) or None, "Model": base_entry.name,
        "Denoising strength": spec.strength, "ControlNet 0": cn_text,
        "Lora hashes": ", ".join(f"{x.name}: {x.short_hash or 'none'}" for x in loaded) or None,
        "TI hashes": tis.ti_hashes(),
    }  # fmt: skip
    info = {
        "seed": seed, "prompt": shown, "gen_size": [w, h], "steps_run": n, "checkpoint": base_entry.name,
        "controlnet": cn_entry.name, "loras": [{"name": x.name, "weight": x.weight, "hash": x.short_hash} for x in loaded],
        "embeddings": tis.info(),
    }  # fmt: skip
    # total: segment + inpaint + n denoising steps + composite
    return styled, {
        "settings": settings, "prompt": shown, "info": info, "total": offset + n + 1, "warnings": tis.warnings,
    }  # fmt: skip
