"""Put the redrawn character back into the restored scene.

- `harmonize`: colour transfer by mean / standard-deviation matching in CIE L*a*b* (Reinhard, Ashikhmin,
  Gooch and Shirley, "Color Transfer between Images", IEEE CG&A 2001), with the statistics of the
  character taken inside its mask and those of the scene in a band around the mask (the surroundings
  the character must sit in), blended with a factor so the style's own palette survives.
- `composite`: alpha blending ("over", Porter and Duff 1984) of the character onto the background,
  with an optional outline drawn just outside the character's silhouette (the anime look).
- `layers_to_rgba`: the character layer as an RGBA image, for the layer PNGs.

Images are RGB `PIL.Image` or HxWx3 uint8 arrays; masks are HxW bool; alphas HxW float in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from toonbooth.core.errors import InputError
from toonbooth.core.images import to_rgb_array

STD_RATIO_LIMITS = (0.5, 2.0)
"""Per-channel std scale factors are clamped to this range (a flat band must not blow up the contrast)."""


def _same_size(name: str, arr: np.ndarray, shape: tuple[int, int]) -> None:
    if arr.shape[:2] != shape:
        raise InputError(
            name,
            f"size {arr.shape[1]}x{arr.shape[0]} differs from the image's {shape[1]}x{shape[0]}",
            arr.shape[:2],
        )


def _alpha(alpha: np.ndarray | Image.Image, shape: tuple[int, int], name: str = "alpha") -> np.ndarray:
    if isinstance(alpha, Image.Image):
        a = np.asarray(alpha.convert("L"), dtype=np.float32) / 255.0
    elif isinstance(alpha, np.ndarray) and alpha.ndim == 2:
        if alpha.dtype == bool:
            a = alpha.astype(np.float32)
        elif alpha.dtype == np.uint8:
            a = alpha.astype(np.float32) / 255.0
        else:
            a = alpha.astype(np.float32)
            if a.size and (a.min() < 0.0 or a.max() > 1.0):
                raise InputError(name, f"values must be in [0, 1], got [{a.min():.3g}, {a.max():.3g}]", None)
    else:
        raise InputError(name, f"must be an HxW array or an 'L' image, got {type(alpha).__name__}", None)
    _same_size(name, a, shape)
    return a


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _rgb_from_lab(lab: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def border_band(mask: np.ndarray, band_px: int) -> np.ndarray:
    """The ring of pixels within Euclidean distance `band_px` outside `mask`."""
    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (dist <= band_px) & ~mask


def harmonize(
    char_rgb: Image.Image | np.ndarray,
    background_rgb: Image.Image | np.ndarray,
    mask: np.ndarray,
    band_px: int = 24,
    strength: float = 0.5,
) -> Image.Image:
    """Shift the character's colours toward the scene around it.

    In Lab, every channel of the character (statistics inside `mask`) is mapped to the mean / std of the
    background in the `band_px` ring outside the mask; the result is mixed with the original by
    `strength` (0 = unchanged, 1 = full transfer). Returns the whole character image, adjusted.
    """
    # 1. Check inputs
    char = to_rgb_array(char_rgb, field="char_rgb")
    bg = to_rgb_array(background_rgb, field="background_rgb")
    shape = char.shape[:2]
    _same_size("background_rgb", bg, shape)
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise InputError("mask", f"must be an HxW array, got {type(mask).__name__}", None)
    _same_size("mask", mask, shape)
    m = mask.astype(bool)
    if not m.any():
        raise InputError("mask", "is empty: no character to harmonize", None)
    if not (1 <= band_px <= 512):
        raise InputError("band_px", f"must be in [1, 512], got {band_px!r}", band_px)
    if not (0.0 <= strength <= 1.0):
        raise InputError("strength", f"must be in [0, 1], got {strength!r}", strength)
    band = border_band(m, band_px)
    if not band.any():
        raise InputError("mask", "covers the whole image: no scene around the character to match", None)

    # 2. Statistics
    lab_c = _lab(char)
    lab_b = _lab(bg)
    mu_c, sd_c = (v.reshape(3) for v in cv2.meanStdDev(lab_c, mask=m.astype(np.uint8)))
    mu_b, sd_b = (v.reshape(3) for v in cv2.meanStdDev(lab_b, mask=band.astype(np.uint8)))
    ratio = np.clip(sd_b / np.maximum(sd_c, 1e-3), *STD_RATIO_LIMITS)

    # 3. Transfer and blend
    # (1 - s) x + s ((x - mu_c) ratio + mu_b) = gain x + offset, per channel
    gain = ((1.0 - strength) + strength * ratio).astype(np.float32)
    offset = (strength * (mu_b - mu_c * ratio)).astype(np.float32)
    out = lab_c * gain + offset
    return Image.fromarray(_rgb_from_lab(out))


def composite(
    background: Image.Image | np.ndarray,
    character: Image.Image | np.ndarray,
    alpha: np.ndarray | Image.Image,
    edge_line_px: int = 0,
    edge_color: tuple[int, int, int] = (30, 30, 30),
) -> Image.Image:
    """`character` over `background` through `alpha`; with `edge_line_px` > 0 an outline of that width
    is drawn just outside the silhouette (alpha >= 0.5), under the character's own soft edge."""
    # 1. Check inputs
    bg = to_rgb_array(background, field="background")
    ch = to_rgb_array(character, field="character")
    shape = bg.shape[:2]
    _same_size("character", ch, shape)
    a = _alpha(alpha, shape)
    if not (0 <= edge_line_px <= 64):
        raise InputError("edge_line_px", f"must be in [0, 64], got {edge_line_px!r}", edge_line_px)
    if len(edge_color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in edge_color):
        raise InputError("edge_color", f"must be three integers in [0, 255], got {edge_color!r}", edge_color)

    # 2. Alpha blend
    a3 = a[..., None]
    out = a3 * ch.astype(np.float32) + (1.0 - a3) * bg.astype(np.float32)

    # 3. Outline outside the silhouette
    if edge_line_px > 0:
        sil = a >= 0.5
        ring = border_band(sil, edge_line_px).astype(np.float32)
        line_a = (ring * (1.0 - a))[..., None]
        out = line_a * np.asarray(edge_color, np.float32) + (1.0 - line_a) * out
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def layers_to_rgba(character: Image.Image | np.ndarray, alpha: np.ndarray | Image.Image) -> Image.Image:
    """The character as an RGBA image (alpha in the fourth channel), e.g. for the layer PNG."""
    ch = to_rgb_array(character, field="character")
    a = _alpha(alpha, ch.shape[:2])
    rgba = np.dstack([ch, np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)])
    return Image.fromarray(rgba)
