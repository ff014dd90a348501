"""Cut a face out of its background as a transparent sticker, and lay several results side by side.

The sticker mask of an FFHQ-aligned face (a toon, or the classic toon look) comes from its 68 landmarks: the
face (jaw line closed over a forehead band) is sure foreground; an ellipse around the head, grown from the
eye distance to take in the hair, is probable foreground; the image border is sure background. GrabCut
(Rother et al., SIGGRAPH 2004; OpenCV `grabCut` with a mask) then follows the colours inside that prior, so
hair and ears are kept and the background goes. A face-parsing label map (CelebAMask-HQ classes, e.g. from
BiSeNet) can be given instead: every label except background and clothes is foreground.
The edge is feathered; the result is an RGBA image whose alpha is that mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw

from toonbooth.core.errors import InputError
from toonbooth.core.images import to_rgb_array

__all__ = ["compare_strip", "head_prior", "sticker_mask", "sticker_rgba"]

# CelebAMask-HQ / BiSeNet labels that are not part of a head sticker: background, clothes
_NOT_HEAD = (0, 16)
GRABCUT_SIDE = 160
"""GrabCut runs on a copy of at most this side (its cost grows with the pixel count); the mask is scaled back."""
HEAD_GROW = 1.75
"""Half-width of the head ellipse, in eye distances (the hair and ears lie inside it)."""


def _pts(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2):
        raise InputError("landmarks", f"expected (68, 2) points, got shape {pts.shape}", pts.shape)
    return pts


def head_prior(landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(face, head) boolean masks of a `size` square: the face polygon and the grown head ellipse."""
    pts = _pts(landmarks)
    eye_l, eye_r = pts[36:42].mean(0), pts[42:48].mean(0)
    ed = float(np.hypot(*(eye_r - eye_l))) or size / 4.0
    right = (eye_r - eye_l) / ed
    down = np.array([-right[1], right[0]])
    forehead = pts[26:16:-1] - down * (0.45 * ed)
    face = np.zeros((size, size), np.uint8)
    cv2.fillPoly(face, [np.round(np.vstack([pts[0:17], forehead])).astype(np.int32)], 1)
    centre = (eye_l + eye_r) / 2.0 + down * (0.25 * ed)
    axes = (int(round(HEAD_GROW * ed)), int(round(2.1 * ed)))
    angle = float(np.degrees(np.arctan2(right[1], right[0])))
    head = np.zeros((size, size), np.uint8)
    cv2.ellipse(head, (int(round(centre[0])), int(round(centre[1]))), axes, angle, 0, 360, 1, -1)
    # the neck below the chin
    chin = pts[8]
    w = 0.55 * ed
    neck = np.array([chin - right * w, chin + right * w, chin + right * w + down * ed, chin - right * w + down * ed])
    cv2.fillPoly(head, [np.round(neck).astype(np.int32)], 1)
    return face.astype(bool), (head.astype(bool) | face.astype(bool))


def sticker_mask(
    image: Image.Image | np.ndarray,
    landmarks: np.ndarray | None = None,
    *,
    parsing: np.ndarray | None = None,
    grabcut: bool = True,
    feather: float = 0.006,
) -> np.ndarray:
    """Float32 alpha in [0, 1] (H, W) of the head in a square aligned `image`.

    From `parsing` (label map of the image's size) when given, else from `landmarks` (68 points in the image's
    pixels), refined by GrabCut unless `grabcut=False`. `feather`: edge softness as a fraction of the side."""
    rgb = to_rgb_array(image) if isinstance(image, Image.Image) else np.asarray(image)[:, :, :3]
    h, w = rgb.shape[:2]
    if h != w:
        raise InputError("image", f"must be square (an aligned face), got {w}x{h}", (w, h))
    if parsing is not None:
        labels = np.asarray(parsing)
        if labels.shape != (h, w):
            labels = cv2.resize(labels.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        mask = ~np.isin(labels, _NOT_HEAD)
    elif landmarks is not None:
        face, head = head_prior(landmarks, h)
        mask = head
        if grabcut and h >= 16:
            mask = (_grabcut(rgb, face, head) & head) | face  # GrabCut may drop, never add beyond the head prior
    else:
        raise InputError("landmarks", "a sticker mask needs landmarks or a parsing map", None)
    mask = _largest_component(mask)
    alpha = mask.astype(np.float32)
    sigma = feather * h
    if sigma > 0.3:
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    return np.clip(alpha, 0.0, 1.0)


def _grabcut(rgb: np.ndarray, face: np.ndarray, head: np.ndarray) -> np.ndarray:
    """GrabCut seeded by the head prior, on a copy at most `GRABCUT_SIDE` px (the mask is scaled back)."""
    h = rgb.shape[0]
    scale = min(1.0, GRABCUT_SIDE / h)
    side = max(16, int(round(h * scale)))
    small = rgb if side == h else cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)

    def down(m: np.ndarray) -> np.ndarray:
        return m if side == h else cv2.resize(m.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST).astype(bool)

    f, hd = down(face), down(head)
    gc = np.full((side, side), cv2.GC_PR_BGD, np.uint8)
    gc[hd] = cv2.GC_PR_FGD
    inner = cv2.erode(f.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, side // 128))
    gc[inner.astype(bool)] = cv2.GC_FGD
    border = max(1, side // 64)
    gc[:border, :] = gc[-border:, :] = cv2.GC_BGD
    gc[:, :border] = gc[:, -border:] = cv2.GC_BGD
    gc[(gc == cv2.GC_BGD) & f] = cv2.GC_FGD
    if not (gc == cv2.GC_FGD).any() or not ((gc == cv2.GC_BGD) | (gc == cv2.GC_PR_BGD)).any():
        return head
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(small), gc, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)
    cut = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.float32)
    if side != h:
        cut = cv2.resize(cut, (h, h), interpolation=cv2.INTER_LINEAR)
    return cut >= 0.5


def _largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask.astype(bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def sticker_rgba(image: Image.Image, alpha: np.ndarray) -> Image.Image:
    """`image` with `alpha` (float [0, 1], same size) as its transparency."""
    rgb = to_rgb_array(image)
    a = np.clip(np.rint(np.asarray(alpha, np.float32) * 255.0), 0, 255).astype(np.uint8)
    if a.shape != rgb.shape[:2]:
        raise InputError("alpha", f"must be {rgb.shape[1]}x{rgb.shape[0]}, got {a.shape[1]}x{a.shape[0]}", a.shape)
    return Image.fromarray(np.dstack([rgb, a]), "RGBA")


def compare_strip(images: Sequence[Image.Image], labels: Sequence[str], tile: int = 256) -> Image.Image:
    """The images side by side, each `tile` px square, with its label underneath."""
    if not images or len(images) != len(labels):
        raise InputError("images", "need one label per image and at least one image", len(images))
    band = max(14, tile // 10)
    out = Image.new("RGB", (tile * len(images), tile + band), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        out.paste(img.convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS), (i * tile, 0))
        draw.text((i * tile + 4, tile + 2), label[: max(4, tile // 7)], fill=(20, 20, 20))
    return out
