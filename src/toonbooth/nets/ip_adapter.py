"""IP-Adapter (Ye et al., "IP-Adapter: Text Compatible Image Prompt Adapter for Text-to-Image Diffusion
Models", 2023, https://arxiv.org/abs/2308.06721; weights `h94/IP-Adapter`, Apache-2.0) as a model family, put
on a diffusers pipeline with diffusers' own `load_ip_adapter` for one job and taken off again.

Family `ip_adapter`: the layout diffusers' `load_ip_adapter(repo, subfolder="models",
weight_name="ip-adapter_sd15.safetensors", image_encoder_folder="image_encoder")` reads, under
`<models>/IP-Adapter/`: a weights file (`image_proj.*` and `ip_adapter.*` tensors; `.safetensors`, or the
`.bin` dict read with `torch.load(weights_only=True)`) and, next to it, `image_encoder/` (a transformers
CLIPVisionModelWithProjection folder; OpenCLIP ViT-H/14 for the SD1.5 adapters). `toonbooth models pull
ip-adapter_sd15` writes exactly that. The entry is named after the weights file's stem.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ModelError, UnsafeModelFormatError
from ..models.families import LoadEnv, ModelFamily
from ..models.registry import ModelEntry, walk_files
from .clip_vision import clip_vision_folder_entry, load_clip_vision

IP_ADAPTER_FOLDERS: tuple[str, ...] = ("IP-Adapter", "ipadapter")
IP_ADAPTER_SUFFIXES = (".safetensors", ".bin")


def _read_bin(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeModelFormatError(f"{path.name}: refused, it needs full unpickling (not only tensors)") from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise ModelError(f"{path.name}: not a readable PyTorch weights file ({e})") from e
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), dict) for k in ("image_proj", "ip_adapter")):
        raise ModelError(f"{path.name}: not an IP-Adapter (a dict with `image_proj` and `ip_adapter` expected)")
    return {k: dict(obj[k]) for k in ("image_proj", "ip_adapter")}


def read_ip_adapter(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """`{"image_proj": {...}, "ip_adapter": {...}}`, the dict diffusers' `load_ip_adapter` takes."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        flat = load_file(str(path))
        out: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for key, value in flat.items():
            head, _, rest = key.partition(".")
            if head in out:
                out[head][rest] = value
        if not out["image_proj"] or not out["ip_adapter"]:
            raise ModelError(f"{path.name}: no `image_proj.*` / `ip_adapter.*` tensors (not an IP-Adapter)")
        return out
    return _read_bin(path)


def ip_adapter_file_entry(file: Path, top: Path, top_folder: str) -> ModelEntry | None:
    """An entry for an IP-Adapter weights file (header / dict keys checked) with its `image_encoder/`."""
    from ..models.probe import read_header

    suffix = file.suffix.lower()
    if suffix not in IP_ADAPTER_SUFFIXES or "image_encoder" in file.relative_to(top).parts:
        return None
    refused = None
    if suffix == ".safetensors":
        try:
            heads = {k.split(".", 1)[0] for k in read_header(file).shapes}
        except ModelError as exc:
            heads, refused = set(), str(exc)
        if refused is None and not {"image_proj", "ip_adapter"} <= heads:
            return None  # another kind of file (e.g. a LoRA lying next to it)
    encoder = file.parent / "image_encoder"
    details: dict[str, Any] = {}
    if clip_vision_folder_entry(encoder, "image_encoder", top_folder, "") is None:
        refused = refused or (
            f"{file.name}: no CLIP image encoder at {encoder} (the layout diffusers' load_ip_adapter reads: "
            "`image_encoder/` next to the weights)"
        )
    else:
        details["image_encoder"] = encoder.relative_to(top).as_posix()
    return ModelEntry(
        name=file.stem, path=file, kind="ip_adapter", arch="sd15" if "sdxl" not in file.stem.lower() else "sdxl",
        layout=suffix.lstrip("."), source="folder", folder=top_folder, relpath=file.relative_to(top).as_posix(),
        size=file.stat().st_size, refused=refused, details=details,
    )  # fmt: skip


def scan_ip_adapter(top: Path, folder: str) -> list[ModelEntry]:
    return [e for f in walk_files(top) if (e := ip_adapter_file_entry(f, top, folder)) is not None]


@dataclass
class IPAdapterWeights:
    """An IP-Adapter's tensors and its image encoder, ready for `attach_ip_adapter`."""

    state_dict: dict[str, dict[str, torch.Tensor]]
    image_encoder: Any
    name: str = ""


def load_ip_adapter_entry(entry: ModelEntry, env: LoadEnv) -> IPAdapterWeights:
    assert entry.path is not None
    state = read_ip_adapter(entry.path)
    encoder_dir = entry.path.parent / "image_encoder"
    enc_entry = clip_vision_folder_entry(encoder_dir, "image_encoder", entry.folder or "", "")
    if enc_entry is None or enc_entry.refused:
        raise ModelError(enc_entry.refused if enc_entry else f"no CLIP image encoder at {encoder_dir}")
    encoder = load_clip_vision(enc_entry, env)
    return IPAdapterWeights(state, encoder, entry.name)


def attach_ip_adapter(pipe: Any, weights: IPAdapterWeights, scale: float) -> None:
    """Put the IP-Adapter on `pipe` (its UNet's cross-attention processors and image projection) with
    diffusers' `load_ip_adapter`; undo with `detach_ip_adapter` (the UNet may be shared between jobs)."""
    if getattr(pipe, "image_encoder", None) is None:
        pipe.register_modules(image_encoder=weights.image_encoder)
    try:
        pipe.load_ip_adapter(weights.state_dict, subfolder="", weight_name="", image_encoder_folder=None)
    except (KeyError, RuntimeError, ValueError) as e:
        detach_ip_adapter(pipe)
        raise ModelError(f"IP-Adapter {weights.name!r} does not fit this UNet: {e}") from e
    pipe.set_ip_adapter_scale(scale)


def detach_ip_adapter(pipe: Any) -> None:
    """Remove the IP-Adapter: the UNet's processors back to plain attention, no image projection."""
    pipe.unload_ip_adapter()


def write_tiny_ip_adapter(unet: Any, image_embed_dim: int, path: Path, seed: int = 0, scale: float = 0.2) -> Path:
    """A random IP-Adapter (base layout: `image_proj.proj` / `image_proj.norm`, `ip_adapter.{i}.to_k_ip` /
    `to_v_ip` for every cross-attention layer, numbered as the original) for `unet`, as safetensors. Tests."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    tokens = 4
    tensors = {
        "image_proj.proj.weight": torch.randn(cross * tokens, image_embed_dim, generator=gen) * scale,
        "image_proj.proj.bias": torch.zeros(cross * tokens),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    widths = list(unet.config.block_out_channels)
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = widths[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(widths))[int(name[len("up_blocks.")])]
        else:
            hidden = widths[int(name[len("down_blocks.")])]
        tensors[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross, generator=gen) * scale
        tensors[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross, generator=gen) * scale
        key_id += 2
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


IP_ADAPTER_FAMILY = ModelFamily(
    kind="ip_adapter",
    description="IP-Adapter weights + image_encoder/ (diffusers load_ip_adapter layout)",
    folders=IP_ADAPTER_FOLDERS,
    suffixes=IP_ADAPTER_SUFFIXES,
    scan=scan_ip_adapter,
    load=load_ip_adapter_entry,
    approx_bytes=44_600_000 + 2_530_000_000,
    shared_only=True,
    licence_note="Apache-2.0 (h94/IP-Adapter)",
)
