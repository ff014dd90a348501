"""Remove a person from a photo: LaMa inpainting around the mask, and the classic OpenCV inpainters.

Neural backend: Suvorov et al., "Resolution-robust Large Mask Inpainting with Fourier Convolutions"
(WACV 2022). `LamaInpainter` drives any module with the interface of the public TorchScript export
`big-lama.pt` (`module(image, mask)`, image RGB in [0, 1], mask {0, 1}, sides multiples of 8), i.e.
IOPaint's calling convention; `toonbooth.nets.lama` builds one from our own implementation of the
generator (and loads that TorchScript file, from the operator's models folder only). This module does
not import `nets` (layers point down); engines hand the module in.

The processing follows IOPaint's "crop" strategy: the mask is dilated so that no outline of the person
survives, a region around its bounding box (with a margin of context) is cut out, shrunk to the model's
native resolution (512) when larger, reflect-padded to a multiple of 8, inpainted, scaled back, and
only the dilated hole is pasted into the photo with an inward-feathered alpha: every pixel outside the
dilated mask is returned exactly as it was.

Classic backend: `cv2.inpaint` with A. Telea, "An Image Inpainting Technique Based on the Fast Marching
Method" (J. Graphics Tools 2004) or Bertalmio, Bertozzi and Sapiro, "Navier-Stokes, Fluid Dynamics, and
Image and Video Inpainting" (CVPR 2001), also on a crop around the mask (and on a reduced copy for large
holes), pasted back the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from toonbooth.core.errors import InputError
from toonbooth.core.images import to_rgb_array

LAMA_NATIVE_SIZE = 512
"""Training resolution of the public big-lama weights."""


# ---------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------


def _mask(mask: Image.Image | np.ndarray, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """Bool HxW mask (nonzero = hole) of the image's size; an empty mask is an input error."""
    if isinstance(mask, Image.Image):
        m = np.asarray(mask.convert("L")) > 127
    elif isinstance(mask, np.ndarray) and mask.ndim == 2:
        m = mask > 0.5 if mask.dtype.kind == "f" else mask.astype(bool)
    else:
        raise InputError(
            name,
            f"must be an HxW array or an 'L' image, got {type(mask).__name__} {getattr(mask, 'shape', '')}",
        )
    if m.shape != shape:
        raise InputError(
            name, f"size {m.shape[1]}x{m.shape[0]} differs from the image's {shape[1]}x{shape[0]}", m.shape
        )
    if not m.any():
        raise InputError(name, "is empty: nothing to remove", None)
    return m


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow a bool mask by `px` pixels (Euclidean disk, via a distance transform: linear time)."""
    if px <= 0 or not mask.any():
        return mask.copy()
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist <= px


def inner_feather(mask: np.ndarray, feather_px: float, core: np.ndarray | None = None) -> np.ndarray:
    """Alpha that ramps from 0 at the mask's border to 1 at `feather_px` inside it; exactly 0 outside the
    mask, and 1 on `core` (the original hole)."""
    if feather_px <= 0:
        alpha = mask.astype(np.float32)
    else:
        dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
        alpha = np.clip(dist / float(feather_px), 0.0, 1.0).astype(np.float32)
    if core is not None:
        alpha[core] = 1.0
    return alpha


@dataclass(frozen=True)
class _Region:
    x0: int
    y0: int
    x1: int
    y1: int


def _region(mask: np.ndarray, margin: int, min_side: int) -> _Region:
    """Bounding box of `mask` grown by `margin` (and to at least `min_side`), clipped to the image."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    x0, x1 = int(xs.min()) - margin, int(xs.max()) + 1 + margin
    y0, y1 = int(ys.min()) - margin, int(ys.max()) + 1 + margin
    for lo, hi, size, axis in ((x0, x1, w, "x"), (y0, y1, h, "y")):
        grow = max(0, min(min_side, size) - (hi - lo))
        lo, hi = lo - grow // 2, hi + grow - grow // 2
        if axis == "x":
            x0, x1 = lo, hi
        else:
            y0, y1 = lo, hi
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(w, x1), min(h, y1)
    return _Region(x0, y0, x1, y1)


def _paste(original: np.ndarray, filled: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend `filled` into `original` with `alpha`; where alpha == 0 the original bytes are kept."""
    a = alpha[..., None]
    blend = np.clip(np.rint(a * filled.astype(np.float32) + (1.0 - a) * original.astype(np.float32)), 0, 255)
    return np.where(a > 0, blend.astype(np.uint8), original)


# ---------------------------------------------------------------------------------------------------
# LaMa
# ---------------------------------------------------------------------------------------------------


class LamaInpainter:
    """Inpaint with a LaMa module (`toonbooth.nets.lama.LamaInpaintModel` or the TorchScript big-lama).

    `dilate_px` grows the hole so that no outline of the removed person remains (default: 1.5 % of the
    photo's long side, at least 5 px); `feather_px` is the inward blend ramp at the hole's border;
    `margin` is the context around the hole's bounding box, as a fraction of its long side (at least
    `min_margin_px`).
    """

    def __init__(
        self,
        module: Any,
        device: str | Any = "cpu",
        native_size: int = LAMA_NATIVE_SIZE,
        dilate_px: int | None = None,
        feather_px: float = 4.0,
        margin: float = 0.5,
        min_margin_px: int = 32,
    ):
        import torch

        if native_size < 64 or native_size % 8:
            raise InputError(
                "native_size", f"must be a multiple of 8 and >= 64, got {native_size!r}", native_size
            )
        if dilate_px is not None and not (0 <= dilate_px <= 256):
            raise InputError("dilate_px", f"must be in [0, 256], got {dilate_px!r}", dilate_px)
        if not (0 <= feather_px <= 256):
            raise InputError("feather_px", f"must be in [0, 256], got {feather_px!r}", feather_px)
        if not (0.0 <= margin <= 4.0):
            raise InputError("margin", f"must be in [0, 4], got {margin!r}", margin)
        self.device = torch.device(device)
        self.module = module.to(self.device).eval() if hasattr(module, "to") else module
        params = list(module.parameters()) if hasattr(module, "parameters") else []
        self.dtype = params[0].dtype if params else torch.float32
        self.native_size = int(native_size)
        self.dilate_px = dilate_px
        self.feather_px = float(feather_px)
        self.margin = float(margin)
        self.min_margin_px = int(min_margin_px)

    def _run(self, rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """Model on one crop: reflect-pad to a multiple of 8 (at least 16), run, unpad; uint8 out."""
        import torch

        h, w = hole.shape
        th, tw = max(16, -(-h // 8) * 8), max(16, -(-w // 8) * 8)
        img = np.pad(rgb.astype(np.float32) / 255.0, ((0, th - h), (0, tw - w), (0, 0)), mode="symmetric")
        msk = np.pad(hole.astype(np.float32), ((0, th - h), (0, tw - w)), mode="symmetric")
        x = torch.from_numpy(img).permute(2, 0, 1)[None].to(self.device, self.dtype)
        m = torch.from_numpy(msk)[None, None].to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.module(x, m)
        out = out[0, :, :h, :w].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        return np.rint(out * 255.0).astype(np.uint8)

    def inpaint(self, img: Image.Image | np.ndarray, mask: Image.Image | np.ndarray) -> Image.Image:
        """`img` with the `mask` area (nonzero = remove) filled in; same size, RGB."""
        # 1. Check inputs
        rgb = to_rgb_array(img, field="img")
        h, w = rgb.shape[:2]
        hole = _mask(mask, (h, w))

        # 2. Dilated hole and its paste-back alpha
        dil_px = self.dilate_px if self.dilate_px is not None else max(5, int(round(0.015 * max(h, w))))
        big = dilate(hole, dil_px)
        alpha = inner_feather(big, min(self.feather_px, float(dil_px)), core=hole)

        # 3. Crop with context, at most the native size
        ys, xs = np.nonzero(big)
        side = max(int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1)
        r = _region(big, max(self.min_margin_px, int(round(self.margin * side))), min_side=64)
        crop, crop_hole = rgb[r.y0 : r.y1, r.x0 : r.x1], big[r.y0 : r.y1, r.x0 : r.x1]
        ch, cw = crop_hole.shape
        scale = min(1.0, self.native_size / max(ch, cw))
        if scale < 1.0:
            sw, sh = max(1, int(round(cw * scale))), max(1, int(round(ch * scale)))
            work = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
            work_hole = cv2.resize(crop_hole.astype(np.float32), (sw, sh), interpolation=cv2.INTER_LINEAR) > 0
        else:
            work, work_hole = crop, crop_hole

        # 4. Inpaint
        filled = self._run(work, work_hole)
        if scale < 1.0:
            filled = cv2.resize(filled, (cw, ch), interpolation=cv2.INTER_CUBIC)

        # 5. Paste only the hole back
        out = rgb.copy()
        out[r.y0 : r.y1, r.x0 : r.x1] = _paste(crop, filled, alpha[r.y0 : r.y1, r.x0 : r.x1])
        return Image.fromarray(out)


# ---------------------------------------------------------------------------------------------------
# Classic (OpenCV)
# ---------------------------------------------------------------------------------------------------


def telea_inpaint(
    img: Image.Image | np.ndarray,
    mask: Image.Image | np.ndarray,
    radius: int = 5,
    method: Literal["telea", "ns"] = "telea",
    dilate_px: int = 0,
    feather_px: float = 0.0,
    work_side: int | None = 512,
) -> Image.Image:
    """Fill the `mask` area with `cv2.inpaint` (Telea fast marching, or Navier-Stokes with "ns").

    Runs on a crop around the (dilated) hole with `radius` + a few px of context; when that crop's long
    side exceeds `work_side`, on a reduced copy (a large hole is smooth after inpainting anyway), scaled
    back. Pixels outside the dilated hole are returned unchanged.
    """
    # 1. Check inputs
    rgb = to_rgb_array(img, field="img")
    h, w = rgb.shape[:2]
    hole = _mask(mask, (h, w))
    if not (1 <= radius <= 64):
        raise InputError("radius", f"must be in [1, 64], got {radius!r}", radius)
    if method not in ("telea", "ns"):
        raise InputError("method", f"must be 'telea' or 'ns', got {method!r}", method)
    if not (0 <= dilate_px <= 256):
        raise InputError("dilate_px", f"must be in [0, 256], got {dilate_px!r}", dilate_px)
    if work_side is not None and work_side < 64:
        raise InputError("work_side", f"must be >= 64 or None, got {work_side!r}", work_side)
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS

    # 2. Hole, alpha, crop
    big = dilate(hole, dilate_px)
    alpha = inner_feather(big, min(float(feather_px), float(dilate_px)), core=hole)
    r = _region(big, radius + 3, min_side=1)
    crop, crop_hole = rgb[r.y0 : r.y1, r.x0 : r.x1], big[r.y0 : r.y1, r.x0 : r.x1]
    ch, cw = crop_hole.shape
    scale = 1.0 if work_side is None else min(1.0, work_side / max(ch, cw))

    # 3. Inpaint (reduced copy for large crops)
    if scale < 1.0:
        sw, sh = max(1, int(round(cw * scale))), max(1, int(round(ch * scale)))
        work = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
        work_hole = cv2.resize(crop_hole.astype(np.float32), (sw, sh), interpolation=cv2.INTER_LINEAR) > 0
        rad = max(1, int(round(radius * scale)))
        filled = cv2.inpaint(work, work_hole.astype(np.uint8), rad, flag)
        filled = cv2.resize(filled, (cw, ch), interpolation=cv2.INTER_CUBIC)
    else:
        filled = cv2.inpaint(np.ascontiguousarray(crop), crop_hole.astype(np.uint8), radius, flag)

    # 4. Paste only the hole back
    out = rgb.copy()
    out[r.y0 : r.y1, r.x0 : r.x1] = _paste(crop, filled, alpha[r.y0 : r.y1, r.x0 : r.x1])
    return Image.fromarray(out)
