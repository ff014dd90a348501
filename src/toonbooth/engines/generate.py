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
* Every image gets A1111 infotext; `EngineResult.info` has the fields of A1111's `Processed.js()`, plus
  `ignored`: the request fields that were accepted but not honoured (their reasons are in `warnings`).
"""

from __future__ import annotations

import datetime
import inspect
import random
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFilter, ImageOps

from .. import __version__
from ..core.errors import InputError, ModelNotFoundError
from ..core.images import format_a1111_parameters, from_array, to_rgb_array
from ..core.specs import ControlNetUnit, GenerateSpec
from .base import EngineContext, EngineResult, NamedImage

SUPPORTED_ARCHS = ("sd15", "sdxl")
MASKED_CONTENT = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}
CANNY_DEFAULTS = (100, 200)  # sd-webui-controlnet slider defaults (threshold_a / threshold_b = -1)
DEFAULT_PROCESSOR_RES = 512
SOFT_INJECTION_BASE = 0.825  # sd-webui-controlnet / ControlNet "soft injection" per-depth factor

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


# --------------------------------------------------------------------------------------------------
# Seeds and noise
# --------------------------------------------------------------------------------------------------


def job_seeds(seed: int, count: int) -> list[int]:
    """A1111: image i of the job uses seed + i; -1 picks a random base seed first."""
    base = random.randint(0, 2**32 - 1) if seed == -1 else seed
    return [base + i for i in range(count)]


def slerp(val: float, low, high, dim: int = 1):
    """Spherical interpolation of two noise tensors along `dim` (A1111 `processing.slerp`, which uses
    dim 1 of its C x H x W noise); falls back to linear interpolation for nearly parallel inputs."""
    import torch

    low_n = low / torch.norm(low, dim=dim, keepdim=True)
    high_n = high / torch.norm(high, dim=dim, keepdim=True)
    dot = (low_n * high_n).sum(dim)
    if dot.mean() > 0.9995:
        return low * (1.0 - val) + high * val
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(dim) * low + (
        torch.sin(val * omega) / so
    ).unsqueeze(dim) * high


def variation_noise(shape: tuple[int, ...], seeds: list[int], subseeds: list[int], strength: float):
    """Start noise (B, C, H, W) of a batch: each image's seeded noise, slerped towards its subseed's."""
    import torch

    out = []
    for s, sub in zip(seeds, subseeds, strict=True):
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s))
        if strength > 0:
            other = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(sub))
            noise = slerp(strength, noise, other)
        out.append(noise)
    return torch.stack(out)


# --------------------------------------------------------------------------------------------------
# Image fitting, masks and compositing (A1111 images.resize_image / masking)
# --------------------------------------------------------------------------------------------------


def resize_image(mode: int, im: Image.Image, width: int, height: int) -> Image.Image:
    """A1111 img2img resize modes: 0 stretch, 1 cover + centre crop, 2 fit + borders filled by stretching
    the image's edge rows / columns (3, latent upscale, is not handled here)."""
    lanczos = Image.Resampling.LANCZOS
    if mode == 0:
        return im.resize((width, height), lanczos)
    ratio, src_ratio = width / height, im.width / im.height
    if mode == 1:
        if ratio > src_ratio:
            w, h = width, max(1, im.height * width // im.width)
        else:
            w, h = max(1, im.width * height // im.height), height
        resized = im.resize((w, h), lanczos)
        out = Image.new(im.mode, (width, height))
        out.paste(resized, (width // 2 - w // 2, height // 2 - h // 2))
        return out
    if mode == 2:
        if ratio < src_ratio:
            w, h = width, max(1, im.height * width // im.width)
        else:
            w, h = max(1, im.width * height // im.height), height
        resized = im.resize((w, h), lanczos)
        out = Image.new(im.mode, (width, height))
        x0, y0 = width // 2 - w // 2, height // 2 - h // 2
        out.paste(resized, (x0, y0))
        below, right = height - y0 - h, width - x0 - w
        if y0 > 0:  # bands above / below: the first / last row stretched
            out.paste(resized.resize((width, y0), lanczos, box=(0, 0, w, 0)), (0, 0))
        if below > 0:
            out.paste(resized.resize((width, below), lanczos, box=(0, h, w, h)), (0, y0 + h))
        if x0 > 0:  # bands left / right: the first / last column stretched
            out.paste(resized.resize((x0, height), lanczos, box=(0, 0, 0, h)), (0, 0))
        if right > 0:
            out.paste(resized.resize((right, height), lanczos, box=(w, 0, w, h)), (x0 + w, 0))
        return out
    raise InputError("resize_mode", f"must be 0, 1 or 2 here, got {mode}", mode)


def binary_mask(mask: Image.Image, invert: bool) -> Image.Image:
    """A1111 `create_binary_mask` (round=True): greyscale, > 128 -> 255 else 0; then optional inversion."""
    grey = np.asarray(mask.convert("L"))
    out = np.where(grey > 128, 255, 0).astype(np.uint8)
    if invert:
        out = 255 - out
    return Image.fromarray(out, "L")


def blur_mask(mask: Image.Image, blur: int) -> Image.Image:
    """A1111's separable Gaussian mask blur: kernel 2*int(2.5*blur+0.5)+1 along x, then y, sigma = blur."""
    if blur <= 0:
        return mask
    arr = np.asarray(mask, dtype=np.uint8)
    k = 2 * int(2.5 * blur + 0.5) + 1
    arr = cv2.GaussianBlur(arr, (k, 1), blur)
    arr = cv2.GaussianBlur(arr, (1, k), blur)
    return Image.fromarray(arr, "L")


def crop_region(mask: Image.Image, pad: int) -> tuple[int, int, int, int] | None:
    """Box (x1, y1, x2, y2) of the mask's non-zero pixels grown by `pad`, clamped; None for an empty mask."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height)


def expand_crop_region(
    region: tuple[int, int, int, int], width: int, height: int, image_w: int, image_h: int
) -> tuple[int, int, int, int]:
    """Grow the box along its short direction to the width/height aspect ratio, staying inside the image
    (A1111 `masking.expand_crop_region`)."""
    x1, y1, x2, y2 = region
    if (x2 - x1) / (y2 - y1) > width / height:
        diff = int((x2 - x1) * height / width - (y2 - y1))
        y1 -= diff // 2
        y2 += diff - diff // 2
        if y2 >= image_h:
            y1, y2 = y1 - (y2 - image_h), image_h
        if y1 < 0:
            y2, y1 = y2 - y1, 0
        y2 = min(y2, image_h)
    else:
        diff = int((y2 - y1) * width / height - (x2 - x1))
        x1 -= diff // 2
        x2 += diff - diff // 2
        if x2 >= image_w:
            x1, x2 = x1 - (x2 - image_w), image_w
        if x1 < 0:
            x2, x1 = x2 - x1, 0
        x2 = min(x2, image_w)
    return x1, y1, x2, y2


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Pre-fill the masked area with the blurred colours around it (A1111 `masking.fill`, "fill"): the
    unmasked pixels, premultiplied by their opacity, are blurred at falling radii and laid over each other,
    the last layer (radius 0) being the unmasked pixels themselves."""
    keep = ImageOps.invert(mask.convert("L"))
    layer = Image.new("RGBa", image.size)
    layer.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    out = Image.new("RGBA", image.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = layer.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(blurred)
    return out.convert("RGB")


def latent_mask_blocks(mask: Image.Image, width: int, height: int, scale: int = 8) -> np.ndarray:
    """A1111's latent mask: the mask resized to latent size (bicubic), scaled to [0, 1] and rounded; (h, w)."""
    small = mask.convert("L").resize((width // scale, height // scale), Image.Resampling.BICUBIC)
    return np.around(np.asarray(small, dtype=np.float32) / 255.0)


def paste_back(original: Image.Image, generated: Image.Image, alpha: np.ndarray) -> Image.Image:
    """original * (1 - alpha) + generated * alpha, alpha in [0, 1] (A1111 `apply_overlay`)."""
    a = alpha.astype(np.float32)[..., None]
    out = (
        to_rgb_array(original).astype(np.float32) * (1.0 - a) + to_rgb_array(generated).astype(np.float32) * a
    )
    return from_array(np.clip(np.rint(out), 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------------
# ControlNet preprocessing
# --------------------------------------------------------------------------------------------------


def _cv_resize(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    shrink = w * h < arr.shape[0] * arr.shape[1]
    return cv2.resize(
        arr, (max(1, w), max(1, h)), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )


def pixel_perfect_resolution(image_w: int, image_h: int, width: int, height: int, resize_mode: str) -> int:
    """sd-webui-controlnet pixel perfect: the preprocessor's short side that makes its map the
    generation size after the unit's resize mode."""
    k = (min if resize_mode == "Resize and Fill" else max)(height / image_h, width / image_w)
    return int(round(k * min(image_w, image_h)))


def fit_map(arr: np.ndarray, width: int, height: int, resize_mode: str, binary: bool) -> np.ndarray:
    """Fit a control map (H x W x 3 uint8) to width x height: stretch, cover + centre crop, or fit + black
    borders; binary maps are re-thresholded at 127 so resizing does not blur the edges."""
    ih, iw = arr.shape[:2]
    if resize_mode == "Just Resize":
        out = _cv_resize(arr, width, height)
    else:
        k = (max if resize_mode == "Crop and Resize" else min)(width / iw, height / ih)
        w, h = max(1, int(round(iw * k))), max(1, int(round(ih * k)))
        scaled = _cv_resize(arr, w, h)
        if resize_mode == "Crop and Resize":
            x0, y0 = max(0, (w - width) // 2), max(0, (h - height) // 2)
            out = scaled[y0 : y0 + height, x0 : x0 + width]
            if out.shape[:2] != (height, width):  # rounding left a pixel short
                out = _cv_resize(out, width, height)
        else:
            out = np.zeros((height, width, 3), dtype=np.uint8)
            h, w = min(h, height), min(w, width)
            y0, x0 = (height - h) // 2, (width - w) // 2
            out[y0 : y0 + h, x0 : x0 + w] = scaled[:h, :w]
    if binary:
        out = np.where(out > 127, 255, 0).astype(np.uint8)
    return np.ascontiguousarray(out)


def canny_thresholds(unit: ControlNetUnit, index: int) -> tuple[int, int]:
    low = CANNY_DEFAULTS[0] if unit.threshold_a == -1 else int(round(unit.threshold_a))
    high = CANNY_DEFAULTS[1] if unit.threshold_b == -1 else int(round(unit.threshold_b))
    if low > high:
        raise InputError(
            f"controlnet_units.{index}.threshold_a",
            f"canny low threshold must be <= threshold_b ({high}), got {unit.threshold_a:g}",
            unit.threshold_a,
        )
    return low, high


def control_map(
    source: Image.Image, unit: ControlNetUnit, index: int, width: int, height: int
) -> Image.Image:
    """The unit's control image at width x height: preprocess (`module`), then fit (`resize_mode`)."""
    from ..vision.edges import canny_control_image

    rgb = to_rgb_array(source)
    if unit.module == "none":
        return from_array(fit_map(rgb, width, height, unit.resize_mode, binary=False))
    if unit.module == "invert":
        return from_array(fit_map(255 - rgb, width, height, unit.resize_mode, binary=False))
    if unit.module == "canny":
        low, high = canny_thresholds(unit, index)
        if unit.pixel_perfect:
            res = pixel_perfect_resolution(source.width, source.height, width, height, unit.resize_mode)
        else:
            res = DEFAULT_PROCESSOR_RES if unit.processor_res == -1 else unit.processor_res
        k = res / min(source.width, source.height)
        scaled = _cv_resize(rgb, int(round(source.width * k)), int(round(source.height * k)))
        edges = to_rgb_array(canny_control_image(from_array(scaled), low, high))
        return from_array(fit_map(edges, width, height, unit.resize_mode, binary=True))
    raise InputError(f"controlnet_units.{index}.module", f"unsupported module {unit.module!r}", unit.module)


class ControlModeHooks:
    """Per-unit control modes as forward hooks on the ControlNet models (removed by `close`).

    Soft injection multiplies residual j of n (the middle block last) by 0.825^(n-1-j); cfg injection zeroes
    the residuals of the unconditional half of the batch. A model used by several units is called once per
    unit per step, in unit order, so its hook walks through those units' modes in turn."""

    def __init__(self, pipe: Any, models: list[Any], modes: list[str]):
        self._handles = []
        by_model: dict[int, list[str]] = {}
        objects: dict[int, Any] = {}
        for model, mode in zip(models, modes, strict=True):
            by_model.setdefault(id(model), []).append(mode)
            objects[id(model)] = model
        for key, unit_modes in by_model.items():
            if all(m == "Balanced" for m in unit_modes):
                continue
            self._handles.append(objects[key].register_forward_hook(self._hook(pipe, unit_modes)))

    @staticmethod
    def _hook(pipe: Any, modes: list[str]):
        calls = [0]

        def hook(_module, _args, output):
            mode = modes[calls[0] % len(modes)]
            calls[0] += 1
            if mode == "Balanced":
                return output
            down, mid = output[0], output[1]
            n = len(down) + 1
            down = [d * SOFT_INJECTION_BASE ** (n - 1 - j) for j, d in enumerate(down)]
            if mode == "ControlNet is more important" and pipe.do_classifier_free_guidance:
                half = mid.shape[0] // 2
                keep = [0.0] * half + [1.0] * (mid.shape[0] - half)
                down = [d * d.new_tensor(keep).view(-1, 1, 1, 1) for d in down]
                mid = mid * mid.new_tensor(keep).view(-1, 1, 1, 1)
            return (down, mid, *output[2:])

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


# --------------------------------------------------------------------------------------------------
# The job
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


def _lookup(models: Any, name: str, kind: str, owner: str | None, field_name: str):
    try:
        return models.entry(name, kind, owner)
    except ModelNotFoundError as exc:
        raise InputError(field_name, str(exc), name) from None


def check_inputs(spec: GenerateSpec, models: Any, owner: str | None = None) -> _Checked:
    """Everything that can be refused without loading weights: sampler, checkpoint family, LoRA tags,
    ControlNet models, step count, seeds; and the list of fields accepted but not honoured."""
    from ..models.prompts import check_lora_names, extract_lora_tags
    from ..models.samplers import resolve_sampler

    ignored: list[str] = []
    warnings: list[str] = []

    def ignore(name: str, why: str) -> None:
        ignored.append(name)
        warnings.append(f"`{name}` not honoured: {why}")

    # sampler and schedule type
    try:
        sampler, schedule = resolve_sampler(spec.sampler_name, spec.scheduler)
    except InputError as exc:
        name = "scheduler" if exc.field == "schedule_type" else "sampler_name"
        raise InputError(name, str(exc).split(": ", 1)[-1], exc.value) from None
    # checkpoint family
    entry = _lookup(models, spec.checkpoint, "checkpoint", owner, "checkpoint")
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
        lora = _lookup(models, tag.name, "lora", owner, "prompt")
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
        cn = _lookup(models, unit.model, "controlnet", owner, f"controlnet_units.{i}.model")
        if cn.arch not in (arch, "unknown"):
            raise InputError(
                f"controlnet_units.{i}.model",
                f"ControlNet {cn.name!r} is for {cn.arch}, the checkpoint is {arch}",
                unit.model,
            )
        if unit.module == "canny":
            canny_thresholds(unit, i)
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


def _latent_fill_hook(pipe: Any, prep: _Prepared, fill: int, seeds_ref: dict[str, list[int]]) -> None:
    """Masked content 2 / 3: replace the init latents inside the latent mask by seeded noise / zeros
    (A1111 img2img `init`). Wraps the pipeline's VAE encoding of the init image (not of the masked image
    that inpainting UNets are conditioned on)."""
    import torch

    encode = pipe._encode_vae_image
    prepare_mask = pipe.prepare_mask_latents
    state = {"conditioning": False}

    def prepare_mask_latents(*args, **kwargs):
        state["conditioning"] = True
        try:
            return prepare_mask(*args, **kwargs)
        finally:
            state["conditioning"] = False

    def encode_init(image, generator=None):
        latents = encode(image=image, generator=generator)
        if state["conditioning"]:
            return latents
        m = torch.from_numpy(prep.latmask).to(latents.device, latents.dtype)[None, None]
        if fill == 3:
            return latents * (1 - m)
        noise = torch.cat([
            torch.randn(latents.shape[1:], generator=torch.Generator("cpu").manual_seed(s))[None]
            for s in seeds_ref["seeds"]
        ]).to(latents.device, latents.dtype)  # fmt: skip
        return latents[:1] * (1 - m) + noise * m

    pipe._encode_vae_image = encode_init
    pipe.prepare_mask_latents = prepare_mask_latents


def count_steps(scheduler: Any, steps: int, strength: float | None) -> int:
    """Denoising-loop iterations of one pipeline call (what `callback_on_step_end` counts): the scheduler's
    timesteps, minus those img2img skips (diffusers `get_timesteps`)."""
    sched = type(scheduler).from_config(scheduler.config)
    sched.set_timesteps(steps, device="cpu")
    n = len(sched.timesteps)
    if strength is not None:
        t_start = max(steps - min(int(steps * strength), steps), 0)
        n -= t_start * getattr(sched, "order", 1)
    return max(n, 1)


def _call_kwargs(pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keep the keyword arguments this pipeline's `__call__` takes (img2img ones have no height/width:
    their size is the init image's, which already is width x height)."""
    accepted = set(inspect.signature(pipe.__call__).parameters)
    return {k: v for k, v in kwargs.items() if k in accepted}


def run(spec: GenerateSpec, ctx: EngineContext) -> EngineResult:
    import diffusers
    import torch
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    from ..models.embeddings import encode_job_prompts
    from ..models.preview import latents_to_preview

    models = ctx.models
    owner = getattr(ctx, "owner", None)
    w, h = spec.width, spec.height

    # 1. Check inputs (cheap, before any weights are loaded)
    checked = check_inputs(spec, models, owner)
    arch, entry = checked.arch, checked.entry
    warnings = list(checked.warnings)
    prep = prepare_images(spec, ctx, inpainting_unet=bool(entry.inpainting), warnings=warnings)
    for unit in checked.units:
        if unit.spec.image is not None:
            unit.image = ctx.load_image(unit.spec.image, field=f"controlnet_units.{unit.index}.image")
        else:
            unit.image = prep.photo
    ctx.check_canceled()

    # 2. Load models (cached between jobs), activate the prompt's LoRAs, build the pipeline
    if entry.inpainting:
        base, entry = models.inpaint_base_pipeline(spec.checkpoint, arch, owner)
    else:
        base, entry = models.base_pipeline(spec.checkpoint, arch, owner)
    loaded_loras = models.apply_loras(base, checked.loras, owner)
    for unit in checked.units:
        unit.model, unit.entry = models.controlnet(unit.spec.model, base, arch, owner)
    ctx.check_canceled()
    cls = getattr(diffusers, pipeline_name(arch, prep.route, bool(checked.units)))
    extra: dict[str, Any] = {}
    if checked.units:
        cn_models = [u.model for u in checked.units]
        extra["controlnet"] = cn_models[0] if len(cn_models) == 1 else MultiControlNetModel(cn_models)
    if arch != "sdxl":
        extra["requires_safety_checker"] = False
    pipe = models.compose(cls, base, **extra)
    try:
        models.set_sampler(pipe, base, checked.sampler, checked.schedule)
    except InputError as exc:
        name = "scheduler" if exc.field == "schedule_type" else "sampler_name"
        raise InputError(name, str(exc).split(": ", 1)[-1], exc.value) from None
    seeds_ref: dict[str, list[int]] = {"seeds": []}
    if prep.route == "inpaint" and prep.latmask is not None and spec.inpainting_fill in (2, 3):
        _latent_fill_hook(pipe, prep, spec.inpainting_fill, seeds_ref)

    # 3. Prepare conditions: control maps, A1111-syntax prompt embeddings
    controls: list[Image.Image] = []
    for unit in checked.units:
        source = unit.image
        assert source is not None  # the spec refuses txt2img units without an image
        if prep.region is not None and prep.original is not None:  # "only masked": the same box of the map
            source = source.resize(prep.original.size, Image.Resampling.LANCZOS).crop(prep.region)
        controls.append(control_map(source, unit.spec, unit.index, w, h))
    # textual-inversion embeddings named in the prompts (shared ones and the owner's own), per stage
    tis = models.prompt_embeddings([checked.prompt_text, spec.negative_prompt], base, arch, owner)
    warnings += tis.warnings
    staged = encode_job_prompts(
        base, arch, checked.prompt_text, spec.negative_prompt, tis, device=models.device, dtype=models.dtype,
        clip_skip=spec.clip_skip,
    )  # fmt: skip
    strength = 1.0 if prep.route == "inpaint" and spec.mode == "txt2img" else checked.strength
    embed_kwargs = staged.first_kwargs(pipe.scheduler, spec.steps, strength)
    per_call = count_steps(pipe.scheduler, spec.steps, strength)
    total = per_call * spec.n_iter
    common: dict[str, Any] = {
        **embed_kwargs, "num_inference_steps": spec.steps, "guidance_scale": spec.cfg_scale,
        "num_images_per_prompt": spec.batch_size, "height": h, "width": w, "output_type": "pil",
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
                shape = (
                    pipe.unet.config.out_channels,
                    h // pipe.vae_scale_factor,
                    w // pipe.vae_scale_factor,
                )
                noise = variation_noise(shape, seeds, subseeds, spec.subseed_strength)
                kwargs["latents"] = noise.to(models.device, models.dtype)

            def on_step_end(pipe_, i, _t, cb_kwargs, offset=it * per_call):
                want = ctx.wants_preview(i + 1, pipe_.num_timesteps)
                preview = latents_to_preview(cb_kwargs["latents"], arch) if want else None
                ctx.progress(min(offset + i + 1, total), total, stage="generate", preview=preview)
                return cb_kwargs

            kwargs["callback_on_step_end"] = staged.callback(on_step_end)  # + stage swaps of multi-stage TIs
            kwargs["callback_on_step_end_tensor_inputs"] = staged.tensor_inputs(pipe)
            out = pipe(**_call_kwargs(pipe, kwargs))
            generated.extend(out.images)
            ctx.progress((it + 1) * per_call, total, stage="generate")
    finally:
        hooks.close()

    # 5. Postprocess: paste the original back outside the mask, A1111 infotext, info
    finals = [_paste(img, prep) for img in generated]
    model_hash = models.short_hash(entry) or ""
    settings_common = {
        "Steps": spec.steps, "Sampler": checked.sampler,
        "Schedule type": None if checked.schedule == "Automatic" else checked.schedule,
        "CFG scale": spec.cfg_scale,
    }  # fmt: skip
    tail: dict[str, Any] = {}
    if loaded_loras:
        tail["Lora hashes"] = ", ".join(f"{x.name}: {x.short_hash or 'none'}" for x in loaded_loras)
    if tis.uses:
        tail["TI hashes"] = tis.ti_hashes()
    tail["Version"] = f"toonbooth {__version__}"
    cn_params = {f"ControlNet {n}": _unit_text(u) for n, u in enumerate(checked.units)}
    infotexts = []
    for k, _img in enumerate(finals):
        settings = {
            **settings_common, "Seed": checked.seeds[k], "Size": f"{w}x{h}",
            "Model hash": model_hash or None, "Model": entry.name,
            "Variation seed": checked.subseeds[k] if spec.subseed_strength > 0 else None,
            "Variation seed strength": spec.subseed_strength if spec.subseed_strength > 0 else None,
            "Denoising strength": checked.strength,
            "Clip skip": spec.clip_skip if spec.clip_skip > 1 and arch != "sdxl" else None,
            **prep.extra, **cn_params, **tail,
        }  # fmt: skip
        infotexts.append(format_a1111_parameters(spec.prompt, spec.negative_prompt, settings))
    images = [NamedImage(f"image-{k}", img, infotexts[k]) for k, img in enumerate(finals)]
    n = len(finals)
    info: dict[str, Any] = {
        "prompt": spec.prompt, "all_prompts": [spec.prompt] * n,
        "negative_prompt": spec.negative_prompt, "all_negative_prompts": [spec.negative_prompt] * n,
        "seed": checked.seeds[0], "all_seeds": checked.seeds,
        "subseed": checked.subseeds[0], "all_subseeds": checked.subseeds, "subseed_strength": spec.subseed_strength,
        "width": w, "height": h, "sampler_name": checked.sampler, "scheduler": checked.schedule,
        "cfg_scale": spec.cfg_scale, "steps": spec.steps, "batch_size": spec.batch_size, "n_iter": spec.n_iter,
        "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": entry.name, "sd_model_hash": model_hash or None, "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": spec.seed_resize_from_w, "seed_resize_from_h": spec.seed_resize_from_h,
        "denoising_strength": checked.strength,
        "extra_generation_params": {**prep.extra, **cn_params, **tail},
        "index_of_first_image": 0, "infotexts": infotexts, "styles": [],
        "job_timestamp": datetime.datetime.now().strftime("%Y%m%d%H%M%S"),
        "clip_skip": spec.clip_skip, "is_using_inpainting_conditioning": bool(entry.inpainting),
        "version": f"toonbooth {__version__}",
        "pipeline": cls.__name__, "loras": [{"name": x.name, "weight": x.weight, "hash": x.short_hash} for x in loaded_loras],
        "embeddings": tis.info(), "ignored": sorted(set(checked.ignored)),
    }  # fmt: skip
    for msg in warnings:
        ctx.log(msg, warning=True)
    return EngineResult(images, "neural", f"diffusers {cls.__name__}", warnings, info)


def _paste(generated: Image.Image, prep: _Prepared) -> Image.Image:
    if prep.overlay is None or prep.original is None:
        return generated
    if prep.region is None:
        return paste_back(prep.original, generated, prep.overlay)
    x1, y1, x2, y2 = prep.region
    canvas = prep.original.copy()
    canvas.paste(resize_image(1, generated, x2 - x1, y2 - y1), (x1, y1))
    return paste_back(prep.original, canvas, prep.overlay)


def _unit_text(unit: _Unit) -> str:
    u = unit.spec
    parts = [
        f"Module: {u.module}", f"Model: {unit.entry.title}", f"Weight: {u.weight:g}", f"Resize Mode: {u.resize_mode}",
        f"Processor Res: {DEFAULT_PROCESSOR_RES if u.processor_res == -1 else u.processor_res}",
    ]  # fmt: skip
    if u.module == "canny":
        low, high = canny_thresholds(u, unit.index)
        parts += [f"Threshold A: {low}", f"Threshold B: {high}"]
    parts += [
        f"Guidance Start: {u.guidance_start:g}", f"Guidance End: {u.guidance_end:g}",
        f"Pixel Perfect: {u.pixel_perfect}", f"Control Mode: {u.control_mode}",
    ]  # fmt: skip
    return ", ".join(parts)


__all__ = [
    "ControlModeHooks",
    "check_inputs",
    "control_map",
    "count_steps",
    "crop_region",
    "expand_crop_region",
    "fill_masked",
    "fit_map",
    "job_seeds",
    "pipeline_name",
    "pixel_perfect_resolution",
    "resize_image",
    "run",
    "slerp",
]
