"""Live preview of the latents during denoising: AUTOMATIC1111's "Approx cheap" decoder.

A1111 (`modules/sd_vae_approx.py` `cheap_approximation`, used while sampling when the live preview method
is "Approx cheap") maps the four channels of a Stable Diffusion latent - in the scaled space the UNet
denoises, i.e. the tensor diffusers hands to `callback_on_step_end` as `latents` - to RGB with one fixed
4x3 matrix fitted on decoded images (the method is described at
https://discuss.huggingface.co/t/decoding-latents-to-rgb-without-upscaling/23204/2), then shows
`x * 0.5 + 0.5` clamped to [0, 1]. SD1.x and SD2 share the kl-f8 VAE and one matrix; the SDXL VAE (base
and refiner) has its own. A1111's matrices carry no bias term. One latent pixel covers 8x8 image pixels,
so the preview is resized (bilinear) to at most 8x the latent, long side at most `max_side`.

Costs a matrix product on the first image of the batch and a small PNG: far below one denoising step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from ..core.errors import InputError

if TYPE_CHECKING:
    import torch

PreviewArch = Literal["sd15", "sd2", "sdxl", "sdxl-refiner"]

# Rows: latent channels 0..3; columns: R, G, B contribution (output in [-1, 1] before * 0.5 + 0.5).
_SD1_FACTORS: tuple[tuple[float, float, float], ...] = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
_SDXL_FACTORS: tuple[tuple[float, float, float], ...] = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)
LATENT_RGB_FACTORS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "sd15": _SD1_FACTORS,
    "sd2": _SD1_FACTORS,
    "sdxl": _SDXL_FACTORS,
    "sdxl-refiner": _SDXL_FACTORS,
}
_FACTORS_NP = {arch: np.asarray(rows, dtype=np.float32) for arch, rows in LATENT_RGB_FACTORS.items()}

LATENT_SCALE = 8  # image pixels per latent pixel (kl-f8 VAE)


def preview_size(latent_w: int, latent_h: int, max_side: int = 256) -> tuple[int, int]:
    """(width, height) of the preview of a `latent_w` x `latent_h` latent: 8x, shrunk to fit `max_side`."""
    scale = min(float(LATENT_SCALE), max_side / max(latent_w, latent_h))
    return max(1, round(latent_w * scale)), max(1, round(latent_h * scale))


def latents_to_preview(latents: torch.Tensor, arch: str, max_side: int = 256) -> Image.Image:
    """RGB preview of the first image of `latents` ((batch, 4, h, w) or (4, h, w), any dtype or device).

    `arch` picks the factor matrix: "sd15" / "sd2" or "sdxl" / "sdxl-refiner"."""
    # 1. Check inputs
    factors = _FACTORS_NP.get(arch)
    if factors is None:
        raise InputError("arch", f"`arch` must be one of {', '.join(LATENT_RGB_FACTORS)}, got {arch!r}", arch)
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise InputError("max_side", f"`max_side` must be an integer >= 1, got {max_side!r}", max_side)
    shape = tuple(latents.shape)
    sample = latents[0] if latents.ndim == 4 else latents
    if sample.ndim != 3 or sample.shape[0] != factors.shape[0] or sample.shape[1] < 1 or sample.shape[2] < 1:
        raise InputError(
            "latents",
            f"`latents` must be (batch, 4, h, w) or (4, h, w), got shape {list(shape)}",
            list(shape),
        )

    # 2. Linear map latent channels -> RGB on the CPU in float32, then A1111's x * 0.5 + 0.5
    x = sample.detach().to("cpu").float().numpy()  # (4, h, w)
    rgb = np.tensordot(factors.T, x, axes=1)  # (3, h, w)
    rgb = np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=-1.0)
    pixels = np.clip(rgb * 127.5 + 128.0, 0.0, 255.0).astype(np.uint8)  # (x*0.5+0.5)*255, rounded
    image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "RGB")

    # 3. Resize: one latent pixel is 8x8 image pixels, long side at most max_side
    size = preview_size(image.width, image.height, max_side)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image
