"""Training images: checks, captions, face-centred crops, aspect-ratio buckets, a resumable batch order.

* Every image comes in through `core.images.load_image` (size / pixel limits, format by content).
* Captions: given per image (the CLI reads a `.txt` beside each image, as kohya-ss `sd-scripts` and
  diffusers' `train_text_to_image` folders do), else the template with the trigger word.
* Portrait presets crop each photo around its largest face (`vision.faces.head_and_shoulders_box`).
* Aspect-ratio buckets follow NovelAI's bucketing as kohya-ss implements it: sides in steps of 64
  (8 below 256 px), area <= resolution², aspect <= 2; each image goes to the bucket of nearest aspect,
  is scaled to cover it and centre-cropped. SDXL's size conditioning (`original_size`,
  `crops_coords_top_left`, Podell et al. 2023 §2.2) is recorded per image.
* Refused with an `InputError` naming the file: too few / too many images, images too small for the
  resolution (more than 2x upscaling), exact duplicates (same pixels) and near duplicates (difference
  hash, Krawetz 2013, within 2 bits, and the same mean colour).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import InputError
from ..core.images import load_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
MAX_UPSCALE = 2.0
DHASH_BITS_SAME = 2
MEAN_COLOUR_SAME = 8.0


@dataclass
class TrainExample:
    """One prepared training image."""

    name: str
    image: Image.Image  # RGB, exactly `bucket` in size
    caption: str
    original_size: tuple[int, int]  # (height, width) of the uploaded image
    crop_top_left: tuple[int, int]  # (top, left) of the crop in the scaled image
    bucket: tuple[int, int]  # (width, height)


@dataclass
class FolderImage:
    name: str
    data: bytes
    caption: str | None


# --------------------------------------------------------------------------------------------------
# Folders (CLI)
# --------------------------------------------------------------------------------------------------


def read_image_folder(
    folder: Path, *, max_bytes: int, max_pixels: int, field: str = "images"
) -> list[FolderImage]:
    """Image files of `folder` (sorted by name, not recursive) with the caption of a `.txt` beside each.

    Every file is decoded once through `load_image` so a bad file is named before anything is stored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(field, f"not a folder: {str(folder)!r}", str(folder))
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(field, f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}", str(folder))
    out: list[FolderImage] = []
    for path in files:
        data = path.read_bytes()
        load_image(data, field=f"{field} ({path.name})", max_bytes=max_bytes, max_pixels=max_pixels)
        txt = path.with_suffix(".txt")
        caption = txt.read_text(encoding="utf-8").strip() if txt.is_file() else None
        out.append(FolderImage(path.name, data, caption or None))
    return out


# --------------------------------------------------------------------------------------------------
# Buckets
# --------------------------------------------------------------------------------------------------


def bucket_step(resolution: int) -> int:
    return 64 if resolution >= 256 else 8


def make_buckets(resolution: int, buckets: bool, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """(width, height) sizes with area <= resolution², sides multiples of the step, aspect <= max_ratio."""
    if not buckets:
        return [(resolution, resolution)]
    step = bucket_step(resolution)
    area = resolution * resolution
    sizes = {(resolution, resolution)}
    width = step
    while width <= resolution * max_ratio:
        height = min((area // width) // step * step, int(resolution * max_ratio) // step * step)
        if height >= step and max(width, height) / min(width, height) <= max_ratio:
            sizes.add((width, height))
            sizes.add((height, width))
        width += step
    return sorted(sizes)


def nearest_bucket(width: int, height: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    aspect = math.log(width / height)
    return min(sizes, key=lambda s: (abs(math.log(s[0] / s[1]) - aspect), -s[0] * s[1]))


# --------------------------------------------------------------------------------------------------
# Duplicates
# --------------------------------------------------------------------------------------------------


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: 9x8 greyscale, one bit per horizontal neighbour comparison."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _pixel_digest(image: Image.Image) -> str:
    return hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()


def check_duplicates(images: list[Image.Image], names: list[str], field: str = "images") -> None:
    """InputError naming both files for an exact or near duplicate."""
    seen: dict[str, int] = {}
    hashes = [dhash(im) for im in images]
    means = [np.asarray(im.resize((16, 16)), dtype=np.float32).reshape(-1, 3).mean(0) for im in images]
    for i, im in enumerate(images):
        digest = _pixel_digest(im)
        if digest in seen:
            j = seen[digest]
            raise InputError(
                f"{field}[{i}]", f"{names[i]} is the same image as {names[j]}: remove one", names[i]
            )
        seen[digest] = i
        for j in range(i):
            close = bin(hashes[i] ^ hashes[j]).count("1") <= DHASH_BITS_SAME
            if close and float(np.abs(means[i] - means[j]).max()) <= MEAN_COLOUR_SAME:
                raise InputError(
                    f"{field}[{i}]",
                    f"{names[i]} is a near duplicate of {names[j]} (same picture resized or re-encoded): "
                    "remove one",
                    names[i],
                )


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------


def build_caption(
    given: str | None, *, template: str, trigger: str, class_word: str, prefix_trigger: bool,
    require_trigger: bool, field: str, name: str,
) -> str:  # fmt: skip
    """The caption of one image: the given one (trigger put in front when asked), else the template."""
    if given is None or not given.strip():
        return template.format(trigger=trigger, class_word=class_word)
    caption = " ".join(given.split())
    has = trigger in caption.replace(",", " ").split()
    if not has and prefix_trigger:
        caption = f"{trigger}, {caption}"
    elif not has and require_trigger:
        raise InputError(
            field,
            f"the caption of {name} does not contain the token {trigger!r}, which is what is learned",
            given,
        )
    return caption


# --------------------------------------------------------------------------------------------------
# Preparation
# --------------------------------------------------------------------------------------------------


def _crop_box(
    image: Image.Image, bucket: tuple[int, int], face_crop: bool, field: str, name: str
) -> tuple[int, int, int, int]:
    bw, bh = bucket
    w, h = image.size
    if face_crop:
        from ..vision.faces import head_and_shoulders_box, largest_face

        face = largest_face(image)
        if face is None:
            raise InputError(
                field,
                f"no face found in {name}: portrait training needs one clearly visible face per photo",
                name,
            )
        box = head_and_shoulders_box(face, (w, h), aspect=bw / bh)
        return box.as_tuple()
    # cover the bucket, centre crop (in source pixels)
    scale = max(bw / w, bh / h)
    cw, ch = min(w, round(bw / scale)), min(h, round(bh / scale))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return (x0, y0, x0 + cw, y0 + ch)


def prepare_examples(
    images: list[Image.Image],
    names: list[str],
    captions: list[str | None],
    *,
    resolution: int,
    buckets: bool,
    face_crop: bool,
    trigger: str,
    class_word: str,
    template: str,
    prefix_trigger: bool,
    require_trigger: bool,
    min_images: int = 1,
    max_images: int = 200,
    field: str = "images",
) -> list[TrainExample]:
    """Check, crop, resize and caption the training images (already decoded by `load_image`)."""
    # 1. Count
    n = len(images)
    if n < min_images or n > max_images:
        raise InputError(field, f"needs {min_images}-{max_images} images, got {n}", n)
    if len(names) != n or (captions and len(captions) != n):
        raise InputError(field, f"names/captions must match the {n} images", n)
    captions = list(captions) if captions else [None] * n
    # 2. Duplicates (on the uploaded pixels)
    check_duplicates(images, names, field)
    # 3. Crop to the bucket, refuse images that would be upscaled more than MAX_UPSCALE
    sizes = make_buckets(resolution, buckets)
    out: list[TrainExample] = []
    for i, (img, name) in enumerate(zip(images, names, strict=True)):
        where = f"{field}[{i}]"
        bucket = nearest_bucket(img.width, img.height, sizes)
        x0, y0, x1, y1 = _crop_box(img, bucket, face_crop, where, name)
        scale = max(bucket[0] / (x1 - x0), bucket[1] / (y1 - y0))
        if scale > MAX_UPSCALE:
            what = "the face crop" if face_crop else "the image"
            raise InputError(
                where,
                f"{name} is too small: {what} is {x1 - x0}x{y1 - y0} px, training at {bucket[0]}x{bucket[1]} would "
                f"upscale it {scale:.1f}x (at most {MAX_UPSCALE:g}x); use a larger image or a lower resolution",
                f"{img.width}x{img.height}",
            )
        crop = img.crop((x0, y0, x1, y1)).resize(bucket, Image.Resampling.LANCZOS)
        caption = build_caption(
            captions[i], template=template, trigger=trigger, class_word=class_word, prefix_trigger=prefix_trigger,
            require_trigger=require_trigger, field=f"captions[{i}]", name=name,
        )  # fmt: skip
        out.append(
            TrainExample(
                name=name,
                image=crop,
                caption=caption,
                original_size=(img.height, img.width),
                crop_top_left=(round(y0 * scale), round(x0 * scale)),
                bucket=bucket,
            )  # fmt: skip
        )
    return out


def fit_to_bucket(image: Image.Image, bucket: tuple[int, int]) -> Image.Image:
    """Cover + centre crop (class images of prior preservation)."""
    x0, y0, x1, y1 = _crop_box(image, bucket, False, "class_images", "class image")
    return image.crop((x0, y0, x1, y1)).resize(bucket, Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------------------------------
# Batch order
# --------------------------------------------------------------------------------------------------


class BatchOrder:
    """Which examples make micro-batch k: a pure function of (seed, k), so a resumed run continues the
    exact same order. Each epoch is a seeded permutation grouped by bucket (a batch holds one bucket)."""

    def __init__(self, buckets: list[tuple[int, int]], batch_size: int, seed: int):
        self.buckets = buckets
        self.batch_size = batch_size
        self.seed = seed
        self._epoch: tuple[int, list[list[int]]] | None = None
        self.batches_per_epoch = sum(math.ceil(buckets.count(b) / batch_size) for b in sorted(set(buckets)))

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._epoch is not None and self._epoch[0] == epoch:
            return self._epoch[1]
        rng = np.random.default_rng([self.seed, epoch])
        perm = [int(i) for i in rng.permutation(len(self.buckets))]
        batches: list[list[int]] = []
        for bucket in sorted(set(self.buckets)):
            members = [i for i in perm if self.buckets[i] == bucket]
            batches += [members[j : j + self.batch_size] for j in range(0, len(members), self.batch_size)]
        order = [batches[int(i)] for i in rng.permutation(len(batches))]
        self._epoch = (epoch, order)
        return order

    def batch(self, k: int) -> list[int]:
        """Example indices of micro-batch `k` (0-based, over all epochs)."""
        epoch, index = divmod(k, self.batches_per_epoch)
        return self._epoch_batches(epoch)[index]

    def position(self, k: int) -> dict[str, int]:
        epoch, index = divmod(k, self.batches_per_epoch)
        return {"micro_batch": k, "epoch": epoch, "index_in_epoch": index}
