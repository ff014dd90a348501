"""CLIP image encoders (transformers `CLIPVisionModelWithProjection` folders) as a model family.

AnimateAnyone conditions its UNets on the image embedding of `lambdalabs/sd-image-variations-diffusers`'s
`image_encoder/` (CLIP ViT-L/14 with its 768-d projection; Radford et al., "Learning Transferable Visual
Models From Natural Language Supervision", ICML 2021). Family `clip_vision`: `<models>/clip_vision/<name>/`
holding `config.json` (`model_type` `clip_vision_model`) and `model.safetensors` or `pytorch_model.bin`
(read by transformers with `torch.load(weights_only=True)`). A folder called `image_encoder` (the layout of
a diffusers repository pulled whole) is named after its parent: `clip_vision/sd-image-variations-diffusers/
image_encoder/` is `sd-image-variations-diffusers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import ModelError
from ..models.families import LoadEnv, ModelFamily
from ..models.registry import ModelEntry, read_json

CLIP_VISION_FOLDERS: tuple[str, ...] = ("clip_vision", "CLIP-vision")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def clip_vision_folder_entry(folder: Path, name: str, top_folder: str, relpath: str) -> ModelEntry | None:
    """An entry for a transformers CLIP vision folder; None when `folder` has no CLIP vision config.json."""
    cfg = read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    if not cfg or cfg.get("model_type") != "clip_vision_model":
        return None
    weights = [w for w in WEIGHT_FILES if (folder / w).is_file()]
    refused = None if weights else f"{folder} has no {' or '.join(WEIGHT_FILES)}"
    archs = cfg.get("architectures") or []
    if not refused and archs and "CLIPVisionModelWithProjection" not in archs:
        refused = f"{folder}: {archs[0]} has no image projection (CLIPVisionModelWithProjection expected)"
    details = {k: cfg[k] for k in ("hidden_size", "projection_dim", "image_size", "num_hidden_layers") if k in cfg}
    if weights:
        details["weights"] = weights[0]
    return ModelEntry(
        name=name, path=folder, kind="clip_vision", layout="transformers", source="folder", folder=top_folder,
        relpath=relpath, refused=refused, details=details,
    )  # fmt: skip


def scan_clip_vision(top: Path, folder: str) -> list[ModelEntry]:
    """CLIP vision folders up to three levels under `top`."""
    out: list[ModelEntry] = []

    def visit(d: Path, depth: int) -> None:
        rel = d.relative_to(top).as_posix()
        name = d.parent.name if d.name == "image_encoder" and d.parent != top else d.name
        entry = clip_vision_folder_entry(d, name, folder, rel)
        if entry is not None:
            out.append(entry)
            return
        if depth < 3:
            for sub in sorted(x for x in d.iterdir() if x.is_dir() and not x.name.startswith(".")):
                visit(sub, depth + 1)

    for sub in sorted(x for x in top.iterdir() if x.is_dir() and not x.name.startswith(".")):
        visit(sub, 1)
    return out


def load_clip_vision(entry: ModelEntry, env: LoadEnv) -> Any:
    """The encoder in eval mode on the manager's device and dtype (local files only)."""
    from transformers import CLIPVisionModelWithProjection

    try:
        model = CLIPVisionModelWithProjection.from_pretrained(
            entry.location, local_files_only=True, dtype=env.dtype, weights_only=True,
            use_safetensors=entry.details.get("weights") == "model.safetensors",
        )  # fmt: skip
    except (OSError, ValueError) as e:
        raise ModelError(f"CLIP image encoder {entry.name!r} ({entry.location}) does not load: {e}") from e
    return model.to(env.device).eval().requires_grad_(False)


CLIP_VISION_FAMILY = ModelFamily(
    kind="clip_vision",
    description="CLIP image encoder with projection (transformers CLIPVisionModelWithProjection folder)",
    folders=CLIP_VISION_FOLDERS,
    suffixes=("/",),
    scan=scan_clip_vision,
    load=load_clip_vision,
    approx_bytes=1_220_000_000,
    shared_only=True,
)
