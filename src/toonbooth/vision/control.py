"""ControlNet preprocessing as sd-webui-controlnet does it (https://github.com/Mikubill/sd-webui-controlnet):
the unit's module (canny, invert, none; the pose modules `openpose`, `openpose_full`, `dw_openpose_full`
arrive as a map drawn by the caller — DWPose lives in `nets`, above this layer), the preprocessor resolution
(`processor_res`, or pixel perfect: the resolution whose map is exactly the generation size), and the
map fitted to the generation size by the unit's resize mode (binary maps stay binary)."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from ..core.errors import InputError
from ..core.images import from_array, to_rgb_array
from ..core.specs import ControlNetUnit

POSE_MODULES = ("openpose", "openpose_full", "dw_openpose_full")
CANNY_DEFAULTS = (100, 200)  # sd-webui-controlnet slider defaults (threshold_a / threshold_b = -1)
DEFAULT_PROCESSOR_RES = 512


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


def preprocessor_resolution(source_w: int, source_h: int, unit: ControlNetUnit, width: int, height: int) -> int:
    """The short side the unit's preprocessor runs at: pixel perfect, else `processor_res` (-1 = 512)."""
    if unit.pixel_perfect:
        return pixel_perfect_resolution(source_w, source_h, width, height, unit.resize_mode)
    return DEFAULT_PROCESSOR_RES if unit.processor_res == -1 else unit.processor_res


def control_map(
    source: Image.Image, unit: ControlNetUnit, index: int, width: int, height: int,
    precomputed: np.ndarray | None = None,
) -> Image.Image:
    """The unit's control image at width x height: preprocess (`module`), then fit (`resize_mode`). The
    pose modules take their map drawn at `preprocessor_resolution` as `precomputed`."""
    from .edges import canny_control_image

    if unit.module in POSE_MODULES:
        if precomputed is None:
            raise InputError(f"controlnet_units.{index}.module", f"{unit.module} needs the pose map drawn first "
                             "(DWPose)", unit.module)  # fmt: skip
        return from_array(fit_map(precomputed, width, height, unit.resize_mode, binary=False))
    rgb = to_rgb_array(source)
    if unit.module == "none":
        return from_array(fit_map(rgb, width, height, unit.resize_mode, binary=False))
    if unit.module == "invert":
        return from_array(fit_map(255 - rgb, width, height, unit.resize_mode, binary=False))
    if unit.module == "canny":
        low, high = canny_thresholds(unit, index)
        res = preprocessor_resolution(source.width, source.height, unit, width, height)
        k = res / min(source.width, source.height)
        scaled = _cv_resize(rgb, int(round(source.width * k)), int(round(source.height * k)))
        edges = to_rgb_array(canny_control_image(from_array(scaled), low, high))
        return from_array(fit_map(edges, width, height, unit.resize_mode, binary=True))
    raise InputError(f"controlnet_units.{index}.module", f"unsupported module {unit.module!r}", unit.module)


def unit_text(unit: ControlNetUnit, index: int, model_title: str) -> str:
    """The unit's infotext value (`ControlNet N: Module: ..., Model: ..., ...`), as sd-webui-controlnet writes it."""
    parts = [
        f"Module: {unit.module}", f"Model: {model_title}", f"Weight: {unit.weight:g}", f"Resize Mode: {unit.resize_mode}",
        f"Processor Res: {DEFAULT_PROCESSOR_RES if unit.processor_res == -1 else unit.processor_res}",
    ]  # fmt: skip
    if unit.module == "canny":
        low, high = canny_thresholds(unit, index)
        parts += [f"Threshold A: {low}", f"Threshold B: {high}"]
    parts += [
        f"Guidance Start: {unit.guidance_start:g}", f"Guidance End: {unit.guidance_end:g}",
        f"Pixel Perfect: {unit.pixel_perfect}", f"Control Mode: {unit.control_mode}",
    ]  # fmt: skip
    return ", ".join(parts)
