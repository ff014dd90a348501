"""Click-prompted person segmentation: Segment Anything (SAM) through transformers, and GrabCut.

Neural backend: Kirillov et al., "Segment Anything" (ICCV 2023), model card
https://huggingface.co/facebook/sam-vit-base, run with transformers' `SamModel` / `SamProcessor`. The
ViT image encoder is the expensive part; its embedding is cached per image content (small LRU), so a
second click on the same photo runs only the prompt encoder and the mask decoder.

Classic backend: Rother, Kolmogorov and Blake, "GrabCut: Interactive Foreground Extraction using Iterated
Graph Cuts" (SIGGRAPH 2004), OpenCV's `cv2.grabCut` seeded from the clicks / box (positive clicks are
sure foreground, negative clicks sure background), or, without any click, from a person box grown out of
the largest detected face.

`clean_mask` turns a raw mask into the cut-out used by the studio: the connected component(s) under the
positive clicks, holes filled, optional dilation and a feathered alpha.

Coordinates are pixels of the image as given; a box is `(x0, y0, x1, y1)` with `x1`/`y1` exclusive
(PIL crop convention), a point is `(x, y)` with `0 <= x < width`, `0 <= y < height`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from toonbooth.core.errors import InputError, ModelError, ModelNotFoundError, OfflineError
from toonbooth.core.images import to_rgb_array
from toonbooth.models.families import LoadEnv, ModelFamily
from toonbooth.models.probe import unsafe_format_error
from toonbooth.models.registry import ModelEntry, read_json, weights_state

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_SAM_ID = "facebook/sam-vit-base"
"""Hub id used when no SAM model is named (larger: facebook/sam-vit-large, facebook/sam-vit-huge)."""

MAX_CLICK_REGION = 0.5
"""GrabCut from clicks only: the probable-foreground region covers at most this share of the photo."""

EMBED_CACHE_ITEMS = 4
"""Image embeddings kept per `SamSegmenter` (one per distinct photo)."""


# ---------------------------------------------------------------------------------------------------
# Prompt and result types
# ---------------------------------------------------------------------------------------------------


class Point(BaseModel):
    """One click on the photo."""

    model_config = ConfigDict(frozen=True)

    x: int = Field(description="Column in pixels, 0 <= x < image width.")
    y: int = Field(description="Row in pixels, 0 <= y < image height.")
    positive: bool = Field(True, description="True: this is the person. False: this is NOT the person.")


class ClickPrompt(BaseModel):
    """What the user clicked: positive / negative points and/or a box around the person.

    The model itself only checks types; `check(width, height)` checks it against a concrete image and
    raises `InputError` naming the field (every segment function calls it first).
    """

    model_config = ConfigDict(frozen=True)

    points: list[Point] = Field(default_factory=list, description="Clicks, in the order they were made.")
    box: tuple[int, int, int, int] | None = Field(
        None, description="Optional box (x0, y0, x1, y1) around the person; x1 / y1 exclusive."
    )

    @property
    def positive_points(self) -> list[Point]:
        return [p for p in self.points if p.positive]

    @property
    def negative_points(self) -> list[Point]:
        return [p for p in self.points if not p.positive]

    def check(self, width: int, height: int) -> None:
        """Raise `InputError` if a point or the box lies outside a `width` x `height` image, or if the
        prompt has neither a positive point nor a box."""
        for i, p in enumerate(self.points):
            if not (0 <= p.x < width and 0 <= p.y < height):
                raise InputError(
                    f"points[{i}]",
                    f"point ({p.x}, {p.y}) is outside the {width}x{height} image "
                    f"(x must be in [0, {width - 1}], y in [0, {height - 1}])",
                    (p.x, p.y),
                )
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (x1 > x0 and y1 > y0):
                raise InputError("box", f"needs x1 > x0 and y1 > y0, got {self.box!r}", self.box)
            if not (min(x0, y0) >= 0 and x1 <= width and y1 <= height):
                raise InputError(
                    "box", f"box {self.box!r} is not inside the {width}x{height} image", self.box
                )
        if not self.positive_points and self.box is None:
            got = f"{len(self.points)} point(s), all negative" if self.points else "no point and no box"
            raise InputError(
                "points",
                f"needs at least one positive point or a box; got {got}",
                [p.model_dump() for p in self.points],
            )


@dataclass(frozen=True)
class MaskResult:
    """A segmentation: `mask` is a bool HxW array of the input image's size.

    `score` is SAM's predicted IoU of the chosen mask; GrabCut has no confidence, its score is None.
    `all_scores` are the predicted IoUs of every candidate mask (multimask output), best not first.
    """

    mask: np.ndarray
    score: float | None
    all_scores: list[float] = field(default_factory=list)
    backend: str = "sam"


# ---------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------


def image_hash(arr: np.ndarray) -> str:
    """Content hash of an image array (shape included)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def person_box_from_face(face: Any, width: int, height: int) -> tuple[int, int, int, int]:
    """A box around the whole visible person, grown from a face box (anything with x0, y0, x1, y1).

    Proportions of an adult body: about 3 face widths across the shoulders (3.6 with the arms) and ~7
    heads tall; the box is cut at the image border (portraits usually end at the chest).
    """
    fw, fh = face.x1 - face.x0, face.y1 - face.y0
    cx = (face.x0 + face.x1) / 2.0
    x0 = int(round(cx - 1.8 * fw))
    x1 = int(round(cx + 1.8 * fw))
    y0 = int(round(face.y0 - 0.7 * fh))  # hair: the detector box starts at the brows
    y1 = int(round(face.y1 + 6.0 * fh))
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def prompt_from_face(img: Image.Image | np.ndarray) -> ClickPrompt:
    """The prompt used when the user did not click: a positive point on the centre of the largest face
    and the person box grown from it. Raises `InputError("points")` when no face is found."""
    from toonbooth.vision.faces import largest_face

    arr = to_rgb_array(img, field="img")
    face = largest_face(Image.fromarray(arr))
    if face is None:
        raise InputError("points", "no click given and no face found in the photo: click on the person", None)
    return _prompt_for_face(face, arr.shape[1], arr.shape[0])


def _prompt_for_face(face: Any, w: int, h: int) -> ClickPrompt:
    cx = min(w - 1, max(0, int(round((face.x0 + face.x1) / 2.0))))
    cy = min(h - 1, max(0, int(round((face.y0 + face.y1) / 2.0))))
    return ClickPrompt(points=[Point(x=cx, y=cy, positive=True)], box=person_box_from_face(face, w, h))


# ---------------------------------------------------------------------------------------------------
# SAM backend
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Embedding:
    embeddings: torch.Tensor
    original_size: tuple[int, int]  # (h, w)
    reshaped_size: tuple[int, int]  # (h, w) inside the model's padded square


class SamSegmenter:
    """SAM (transformers `SamModel` + `SamProcessor`) with a per-image embedding cache.

    Build with `SamSegmenter.from_pretrained(id_or_folder, ...)` or from objects already in memory
    (`SamSegmenter(model, processor, device)`), e.g. `build_tiny_sam()` in tests.
    """

    def __init__(self, model: Any, processor: Any, device: str | torch.device = "cpu", cache_items: int = 4):
        import torch

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.dtype = next(model.parameters()).dtype
        self.cache_items = max(1, int(cache_items))
        self._cache: OrderedDict[str, _Embedding] = OrderedDict()

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        id_or_folder: str | Path = DEFAULT_SAM_ID,
        device: str = "cpu",
        dtype: torch.dtype | str | None = None,
        local_files_only: bool = False,
    ) -> SamSegmenter:
        """Load SAM from a hub id (default `facebook/sam-vit-base`) or a local folder written by
        `save_pretrained`. `local_files_only=True` (or HF_HUB_OFFLINE=1) never contacts the hub."""
        import torch
        from transformers import SamModel, SamProcessor

        if isinstance(dtype, str):
            if not hasattr(torch, dtype):
                raise InputError("dtype", f"unknown torch dtype {dtype!r}", dtype)
            dtype = getattr(torch, dtype)
        src = str(id_or_folder)
        is_folder = Path(src).is_dir()
        if not is_folder and (Path(src).is_absolute() or src.startswith(".")):
            raise ModelNotFoundError(f"SAM folder {src!r} does not exist")
        try:
            processor = SamProcessor.from_pretrained(src, local_files_only=local_files_only)
            # safetensors only: a folder with nothing but pickled `pytorch_model.bin` is refused
            model = SamModel.from_pretrained(
                src, local_files_only=local_files_only, dtype=dtype or torch.float32, use_safetensors=True
            )
        except OSError as e:
            if is_folder:
                raise ModelError(
                    f"SAM folder {src!r} is not a usable SamModel/SamProcessor folder: {e}"
                ) from e
            raise OfflineError(
                f"SAM model {src!r} is not in the local cache and the hub cannot be used "
                f"(local_files_only={local_files_only}): {e}"
            ) from e
        return cls(model, processor, device=device)

    # -- embedding cache ---------------------------------------------------------------------------

    @property
    def image_size(self) -> int:
        """Side of the square the vision encoder sees (1024 for the public SAM checkpoints)."""
        return int(self.processor.image_processor.size["longest_edge"])

    def _embedding(self, arr: np.ndarray) -> _Embedding:
        import torch

        key = image_hash(arr)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        inputs = self.processor(images=Image.fromarray(arr), return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            emb = self.model.get_image_embeddings(pixel_values)
        entry = _Embedding(
            embeddings=emb,
            original_size=tuple(int(v) for v in inputs["original_sizes"][0].tolist()),  # type: ignore[arg-type]
            reshaped_size=tuple(int(v) for v in inputs["reshaped_input_sizes"][0].tolist()),  # type: ignore[arg-type]
        )
        self._cache[key] = entry
        while len(self._cache) > self.cache_items:
            self._cache.popitem(last=False)
        return entry

    def clear_cache(self) -> None:
        self._cache.clear()

    # -- prediction --------------------------------------------------------------------------------

    def segment(
        self,
        img: Image.Image | np.ndarray,
        prompt: ClickPrompt | None = None,
        multimask: bool | None = None,
        mask_threshold: float = 0.0,
    ) -> MaskResult:
        """Best mask for `prompt` (None: the main person, from the largest face).

        `multimask` None = SAM's own advice: three candidates for a single click (ambiguous), one mask
        when several clicks / a box pin the object down. The candidate with the highest predicted IoU wins.
        """
        import torch

        # 1. Check inputs
        arr = to_rgb_array(img, field="img")
        h, w = arr.shape[:2]
        if prompt is None:
            prompt = prompt_from_face(arr)
        prompt.check(w, h)

        # 2. Image embedding (cached per image content)
        emb = self._embedding(arr)

        # 3. Prompt in the model's resized frame (same scaling as SamProcessor._normalize_coordinates)
        sy = emb.reshaped_size[0] / emb.original_size[0]
        sx = emb.reshaped_size[1] / emb.original_size[1]
        kwargs: dict[str, Any] = {}
        if prompt.points:
            pts = torch.tensor([[p.x * sx, p.y * sy] for p in prompt.points], dtype=self.dtype)
            labels = torch.tensor([1 if p.positive else 0 for p in prompt.points], dtype=torch.long)
            kwargs["input_points"] = pts[None, None].to(self.device)
            kwargs["input_labels"] = labels[None, None].to(self.device)
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            box = torch.tensor([[x0 * sx, y0 * sy, x1 * sx, y1 * sy]], dtype=self.dtype)
            kwargs["input_boxes"] = box[None].to(self.device)
        if multimask is None:
            multimask = len(prompt.points) + (prompt.box is not None) == 1

        # 4. Prompt encoder + mask decoder only
        with torch.inference_mode():
            out = self.model(image_embeddings=emb.embeddings, multimask_output=multimask, **kwargs)

        # 5. Postprocess: upscale to the original size, pick the best by predicted IoU
        scores = out.iou_scores[0, 0].float().cpu()
        masks = self.processor.post_process_masks(
            [out.pred_masks[0].float().cpu()],
            [list(emb.original_size)],
            [list(emb.reshaped_size)],
            mask_threshold=mask_threshold,
        )[0][0]  # (num_masks, H, W) bool
        best = int(torch.argmax(scores).item())
        return MaskResult(
            mask=masks[best].numpy().astype(bool),
            score=float(scores[best]),
            all_scores=[float(s) for s in scores.tolist()],
            backend="sam",
        )


# ---------------------------------------------------------------------------------------------------
# GrabCut backend
# ---------------------------------------------------------------------------------------------------


def _face_under_click(arr: np.ndarray, positive: Sequence[Point]) -> Any | None:
    """The largest face, if one of the positive clicks lies on it."""
    from toonbooth.vision.faces import largest_face

    if not positive:
        return None
    face = largest_face(Image.fromarray(arr))
    if face is None:
        return None
    if not any(face.x0 <= p.x < face.x1 and face.y0 <= p.y < face.y1 for p in positive):
        return None
    return face


def grabcut_segment(
    img: Image.Image | np.ndarray,
    prompt: ClickPrompt | None = None,
    iterations: int = 4,
    click_radius: int | None = None,
    click_expand: float = 0.4,
    work_side: int = 256,
    use_face: bool = True,
    roi_margin: float = 0.15,
    face: Any = None,
) -> MaskResult:
    """GrabCut seeded by the prompt; without a prompt, by the person box grown from the largest face.

    Seeds: a box is a hard limit (outside = sure background, inside probable foreground). Without a box,
    when `use_face` and a positive click lies on the largest detected face, the person box grown from
    that face is used as the box, with a head-and-shoulders prior (above the chin, only the head's
    column is probable foreground); otherwise the region around the clicks (their bounding box grown by
    `click_expand` x the photo's long side, shrunk until it covers at most half of the photo) is
    probable foreground and the rest probable background. Positive clicks become sure-foreground disks and negative clicks sure-background disks
    of `click_radius` px (default 1.5 % of the long side, at least 3 px).

    With a box (the user's or the face's), GrabCut runs on a crop: the box plus a context ring of
    `roi_margin` x its long side (nothing outside the crop can be foreground). `face` (a `FaceBox` the caller
    already found) saves detecting it again when there is no prompt. The working image is
    reduced so that its long side is at most `work_side`; the mask is scaled back to the photo's size.
    GrabCut separates colour distributions: a part of the person whose colours differ from the clicked
    part and lies outside the probable region needs its own click.
    """
    # 1. Check inputs
    arr = to_rgb_array(img, field="img")
    h, w = arr.shape[:2]
    if not (1 <= iterations <= 50):
        raise InputError("iterations", f"must be in [1, 50], got {iterations!r}", iterations)
    if not (0.0 <= click_expand <= 2.0):
        raise InputError("click_expand", f"must be in [0, 2], got {click_expand!r}", click_expand)
    if work_side < 64:
        raise InputError("work_side", f"must be >= 64, got {work_side!r}", work_side)
    if not (0.0 <= roi_margin <= 2.0):
        raise InputError("roi_margin", f"must be in [0, 2], got {roi_margin!r}", roi_margin)
    known_face, face = face, None  # `face` is set when the box is grown from a face: a head-and-shoulders prior
    if prompt is None:
        from toonbooth.vision.faces import largest_face

        face = known_face if known_face is not None else largest_face(Image.fromarray(arr))
        if face is None:
            raise InputError(
                "points", "no click given and no face found in the photo: click on the person", None
            )
        prompt = _prompt_for_face(face, w, h)
    prompt.check(w, h)
    if prompt.box is None and use_face:
        face = _face_under_click(arr, prompt.positive_points)
        if face is not None:
            prompt = ClickPrompt(points=prompt.points, box=person_box_from_face(face, w, h))

    # 2. Probable-foreground region (full-image pixels) and the crop GrabCut works on
    if prompt.box is not None:
        rx0, ry0, rx1, ry1 = prompt.box
    else:
        xs, ys = [p.x for p in prompt.positive_points], [p.y for p in prompt.positive_points]
        grow = int(round(click_expand * max(h, w)))
        while True:  # leave at least half of the photo outside, to learn the background's colours
            rx0, ry0 = max(0, min(xs) - grow), max(0, min(ys) - grow)
            rx1, ry1 = min(w, max(xs) + grow + 1), min(h, max(ys) + grow + 1)
            if (rx1 - rx0) * (ry1 - ry0) <= MAX_CLICK_REGION * w * h or grow <= 2:
                break
            grow = int(grow * 0.9)
    if prompt.box is not None:  # crop: the box and a context ring for the background model
        ring = max(8, int(round(roi_margin * max(rx1 - rx0, ry1 - ry0))))
        cx0, cy0 = max(0, rx0 - ring), max(0, ry0 - ring)
        cx1, cy1 = min(w, rx1 + ring), min(h, ry1 + ring)
    else:  # clicks only: the whole photo models the background
        cx0, cy0, cx1, cy1 = 0, 0, w, h
    crop = arr[cy0:cy1, cx0:cx1]
    ch, cw = crop.shape[:2]
    scale = min(1.0, work_side / max(ch, cw))
    if scale < 1.0:
        sw, sh = max(1, int(round(cw * scale))), max(1, int(round(ch * scale)))
        work = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA)
    else:
        sw, sh, work = cw, ch, crop
    long_side = max(w, h) * scale
    radius = int(click_radius * scale) if click_radius is not None else max(3, int(round(0.015 * long_side)))

    def to_work(x: float, y: float) -> tuple[int, int]:
        return int((x - cx0) * scale), int((y - cy0) * scale)

    # 3. Seed mask: region probable foreground, clicks sure, outside probable (soft) or sure (user box) bg
    gc = np.full((sh, sw), cv2.GC_BGD if prompt.box is not None else cv2.GC_PR_BGD, np.uint8)
    wx0, wy0 = to_work(rx0, ry0)
    wx1, wy1 = to_work(rx1, ry1)
    gc[wy0 : max(wy1, wy0 + 1), wx0 : max(wx1, wx0 + 1)] = cv2.GC_PR_FGD
    if face is not None:
        # head and shoulders: above the chin only the head's column (face + hair) is probably the person
        fw = face.x1 - face.x0
        hx0, _ = to_work(face.x0 - 0.6 * fw, 0)
        hx1, chin = to_work(face.x1 + 0.6 * fw, face.y1)
        above = gc[wy0 : max(chin, wy0), :]
        above[:, : max(0, hx0)] = cv2.GC_PR_BGD
        above[:, max(0, hx1) :] = cv2.GC_PR_BGD
    for pts, label in ((prompt.positive_points, cv2.GC_FGD), (prompt.negative_points, cv2.GC_BGD)):
        for p in pts:
            x, y = to_work(p.x, p.y)
            if 0 <= x < sw and 0 <= y < sh:
                cv2.circle(gc, (x, y), radius, int(label), thickness=-1)
    if not np.isin(gc, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():
        # GrabCut needs background samples: a one-pixel frame of probable background
        frame = np.ones((sh, sw), bool)
        frame[1:-1, 1:-1] = False
        gc[frame & (gc != cv2.GC_FGD)] = cv2.GC_PR_BGD

    # 4. GrabCut
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut initialises its colour models with k-means: make it reproducible
    cv2.grabCut(np.ascontiguousarray(work[:, :, ::-1]), gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    fg = np.isin(gc, (cv2.GC_FGD, cv2.GC_PR_FGD))

    # 5. Back to the original size (smooth edge: bilinear then threshold), pasted into the crop
    if scale < 1.0:
        fg = cv2.resize(fg.astype(np.float32), (cw, ch), interpolation=cv2.INTER_LINEAR) >= 0.5
    full = np.zeros((h, w), bool)
    full[cy0:cy1, cx0:cx1] = fg
    fg = full
    return MaskResult(mask=fg, score=None, all_scores=[], backend="grabcut")


# ---------------------------------------------------------------------------------------------------
# Mask clean-up
# ---------------------------------------------------------------------------------------------------


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background regions not connected to the image border become foreground."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask.astype(np.uint8)
    flood = padded.copy()
    ff_mask = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, ff_mask, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return mask | holes


def clean_mask(
    mask: np.ndarray,
    positive_points: Sequence[Point | tuple[int, int]] = (),
    fill_holes: bool = True,
    dilate_px: int = 0,
    feather_px: float = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Clean a raw mask; returns `(mask bool HxW, alpha float32 HxW in [0, 1])`.

    Keeps the connected component(s) that contain a positive click (8-connectivity); with no positive
    click, or none of them on the mask, the largest component. Then fills holes, dilates by `dilate_px`
    (elliptic kernel) and feathers the alpha with a Gaussian of sigma `feather_px / 2` (0: hard alpha).
    """
    # 1. Check inputs
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise InputError(
            "mask", f"must be an HxW array, got {type(mask).__name__} {getattr(mask, 'shape', None)}"
        )
    if not (0 <= dilate_px <= 512):
        raise InputError("dilate_px", f"must be in [0, 512], got {dilate_px!r}", dilate_px)
    if not (0 <= feather_px <= 512):
        raise InputError("feather_px", f"must be in [0, 512], got {feather_px!r}", feather_px)
    m = mask.astype(bool)
    h, w = m.shape
    pts = [(p.x, p.y) if isinstance(p, Point) else (int(p[0]), int(p[1])) for p in positive_points]
    for i, (x, y) in enumerate(pts):
        if not (0 <= x < w and 0 <= y < h):
            raise InputError(f"positive_points[{i}]", f"point ({x}, {y}) is outside the {w}x{h} mask", (x, y))

    # 2. Components under the clicks
    if m.any():
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        keep = {int(labels[y, x]) for x, y in pts if labels[y, x] != 0}
        if not keep:
            keep = {1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))}
        m = np.isin(labels, sorted(keep))

    # 3. Holes, dilation
    if fill_holes and m.any():
        m = _fill_holes(m)
    if dilate_px > 0 and m.any():  # Euclidean disk via a distance transform (linear time)
        m = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= dilate_px

    # 4. Feathered alpha
    alpha = m.astype(np.float32)
    if feather_px > 0:
        alpha = cv2.GaussianBlur(
            alpha, (0, 0), sigmaX=float(feather_px) / 2.0, borderType=cv2.BORDER_REPLICATE
        )
        alpha = np.clip(alpha, 0.0, 1.0)
    return m, alpha


# ---------------------------------------------------------------------------------------------------
# Testing utilities: a tiny random-weight SAM built from a config (no download)
# ---------------------------------------------------------------------------------------------------


def build_tiny_sam(seed: int = 0, image_size: int = 64) -> tuple[Any, Any]:
    """A tiny `SamModel` (random weights, ViT hidden 32, 2 layers, patch 16) and a matching offline
    `SamProcessor` (PIL image processor, `longest_edge=image_size`). For tests and benchmarks only."""
    import torch
    from transformers import (
        SamConfig,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    if image_size % 16 != 0 or image_size < 32:
        raise InputError("image_size", f"must be a multiple of 16 and >= 32, got {image_size!r}", image_size)
    vision = SamVisionConfig(
        hidden_size=32,
        output_channels=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=16,
        window_size=2,
        global_attn_indexes=[1],
        num_pos_feats=16,
        mlp_dim=64,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=32, image_size=image_size, patch_size=16, mask_input_channels=4
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32
    )
    torch.manual_seed(seed)
    model = SamModel(
        SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    )
    mask_side = image_size // 4
    image_processor = SamImageProcessorPil(
        size={"longest_edge": image_size},
        pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": mask_side},
        mask_pad_size={"height": mask_side, "width": mask_side},
    )
    return model.eval(), SamProcessor(image_processor=image_processor)


# ---------------------------------------------------------------------------------------------------
# The SAM model family: `<models>/SAM/<name>/` or `SAM/<org>/<name>/` transformers folders
# ---------------------------------------------------------------------------------------------------

SAM_FOLDERS: tuple[str, ...] = ("SAM", "sam")


def sam_folder_entry(folder: Path, name: str | None = None, top_folder: str = "SAM") -> ModelEntry | None:
    """An entry for a transformers SAM folder (config.json + processor config + weights); None when `folder`
    has no config.json. Only JSON is read."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return None
    name = name or folder.name
    cfg = read_json(cfg_path) or {}
    refused: str | None = None
    if cfg.get("model_type") != "sam":
        refused = (
            f"{folder}: config.json has model_type {cfg.get('model_type')!r}, not 'sam' (a SamModel folder)"
        )
    elif not any((folder / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        refused = (
            f"{folder} has no preprocessor_config.json / processor_config.json (the SamProcessor settings)"
        )
    else:
        weights = weights_state(folder)
        if weights == "pickle":
            refused = str(unsafe_format_error(folder, "a SAM model saved only as pickle (pytorch_model.bin)"))
        elif weights == "none":
            refused = f"{folder} has no model.safetensors"
    vision = cfg.get("vision_config") if isinstance(cfg.get("vision_config"), dict) else {}
    details = {k: vision[k] for k in ("hidden_size", "num_hidden_layers", "image_size") if k in vision}
    return ModelEntry(
        name=name, path=folder, kind="sam", layout="transformers", source="folder", folder=top_folder,
        relpath=name, refused=refused, details=details,
    )  # fmt: skip


def scan_sam(top: Path, folder: str) -> list[ModelEntry]:
    """SAM folders under `top`: `<name>/` or `<org>/<name>/` holding a config.json."""
    out: list[ModelEntry] = []
    for child in sorted(d for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")):
        subs = [child] if (child / "config.json").is_file() else sorted(
            d for d in child.iterdir() if d.is_dir() and not d.name.startswith(".")
        )  # fmt: skip
        for d in subs:
            entry = sam_folder_entry(d, d.relative_to(top).as_posix(), folder)
            if entry is not None:
                out.append(entry)
    return out


def load_sam(entry: ModelEntry, env: LoadEnv) -> SamSegmenter:
    """A SamSegmenter from an installed folder (or a hub id already in the local cache; never downloads)."""
    return SamSegmenter.from_pretrained(
        entry.location, device=str(env.device), dtype=env.dtype, local_files_only=True
    )


SAM_FAMILY = ModelFamily(
    kind="sam",
    description="Segment Anything (transformers SamModel + SamProcessor folder, safetensors)",
    folders=SAM_FOLDERS,
    suffixes=("/",),
    scan=scan_sam,
    load=load_sam,
    approx_bytes=375_000_000,
    shared_only=True,
)
