"""AUTOMATIC1111's image operations for img2img and inpainting, as stable-diffusion-webui does them
(https://github.com/AUTOMATIC1111/stable-diffusion-webui, `modules/images.py` `resize_image`,
`modules/masking.py`, `modules/processing.py` `apply_overlay`): resize modes, mask binarising and blur,
"only masked" crop regions, masked-area fill, the latent mask, and pasting the result back."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageFilter, ImageOps

from ..core.errors import InputError
from ..core.images import from_array, to_rgb_array


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


def paste_region(original: Image.Image, generated: Image.Image, overlay: np.ndarray | None,
                 region: tuple[int, int, int, int] | None) -> Image.Image:
    """The generated picture put back into `original`: over the whole picture through `overlay`, or for
    "only masked" inpainting resized into `region` first (A1111 `apply_overlay` with `paste_to`)."""
    if overlay is None:
        return generated
    if region is None:
        return paste_back(original, generated, overlay)
    x1, y1, x2, y2 = region
    canvas = original.copy()
    canvas.paste(resize_image(1, generated, x2 - x1, y2 - y1), (x1, y1))
    return paste_back(original, canvas, overlay)
