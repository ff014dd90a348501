"""Write trained styles in the formats other tools load, with their training facts in the header.

* LoRA, diffusers/PEFT layout: what `<Pipeline>.save_lora_weights` writes (`unet.<module>.lora_A.weight`,
  the LoraConfig in `lora_adapter_metadata`), loadable with `load_lora_weights`.
* LoRA, kohya-ss layout (`lora_unet_…​.lora_down.weight` + `.alpha`, `lora_te[1|2]_…`): what AUTOMATIC1111's
  built-in Lora extension and ComfyUI's LoraLoader read; names from `models.convert.peft_lora_to_kohya`.
  Header keys follow kohya-ss `sd-scripts` `train_network.py` (`ss_network_module`, `ss_network_dim`,
  `ss_network_alpha`, `ss_base_model_version`, `ss_sd_model_name`, `ss_sd_model_hash`, `ss_resolution`,
  `ss_num_train_images`, `ss_max_train_steps`, `ss_learning_rate`, `ss_output_name`, `ss_tag_frequency`…)
  plus `modelspec.*` (Stability AI's model-spec) and `toonbooth.*`.
* Textual inversion in AUTOMATIC1111's safetensors layouts: `emb_params` (n, 768) or `string_to_param.*`
  for SD1.5, `clip_l` (n, 768) + `clip_g` (n, 1280) for SDXL; the DreamStyler stages as (stages, n, width)
  tensors under the same keys in a separate file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..core.fs import atomic_path
from ..models.convert import peft_lora_to_kohya

BASE_MODEL_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}
MODELSPEC_ARCH = {"sd15": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base"}


def read_metadata(path: Path | str) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _write(tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]) -> Path:
    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=dict(metadata)
        )
    return path


def add_metadata(path: Path, extra: Mapping[str, str]) -> None:
    """Merge `extra` into a safetensors file's header (rewrites the file)."""
    meta = read_metadata(path)
    meta.update({k: str(v) for k, v in extra.items()})
    _write(load_file(str(path)), path, meta)


def style_metadata(facts: Mapping[str, Any]) -> dict[str, str]:
    """`toonbooth.*` and `modelspec.*` header keys from the training facts (strings only)."""
    arch = facts["arch"]
    res = int(facts["resolution"])
    meta = {
        "toonbooth.kind": str(facts["kind"]),
        "toonbooth.arch": arch,
        "toonbooth.base_model": str(facts["base_model"]),
        "toonbooth.base_model_hash": str(facts.get("base_model_hash") or ""),
        "toonbooth.trigger": str(facts["trigger"]),
        "toonbooth.trigger_words": json.dumps(facts.get("trigger_words", [facts["trigger"]])),
        "toonbooth.preset": str(facts.get("preset") or ""),
        "toonbooth.steps": str(facts["steps"]),
        "toonbooth.image_count": str(facts["image_count"]),
        "toonbooth.resolution": str(res),
        "toonbooth.seed": str(facts.get("seed", "")),
        "toonbooth.owner": str(facts.get("owner") or ""),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{MODELSPEC_ARCH[arch]}/{'lora' if facts['kind'] != 'train_ti' else 'textual-inversion'}",
        "modelspec.title": str(facts["style_name"]),
        "modelspec.resolution": f"{res}x{res}",
        "modelspec.trigger_phrase": str(facts["trigger"]),
        "modelspec.date": str(facts.get("finished_at", "")),
    }
    if facts.get("stages"):
        meta["toonbooth.stages"] = str(facts["stages"])
        meta["toonbooth.num_train_timesteps"] = str(facts.get("num_train_timesteps", 1000))
    return meta


def kohya_metadata(facts: Mapping[str, Any], rank: int, alpha: float) -> dict[str, str]:
    """kohya-ss `ss_*` keys where they are meaningful for this run."""
    res = int(facts["resolution"])
    tags: dict[str, int] = {}
    for caption in facts.get("captions", []):
        for tag in (t.strip() for t in caption.split(",")):
            if tag:
                tags[tag] = tags.get(tag, 0) + 1
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": f"{alpha:g}",
        "ss_base_model_version": BASE_MODEL_VERSION[facts["arch"]],
        "ss_v2": "False",
        "ss_sd_model_name": str(facts["base_model"]),
        "ss_sd_model_hash": str(facts.get("base_model_hash") or ""),
        "ss_resolution": f"({res}, {res})",
        "ss_num_train_images": str(facts["image_count"]),
        "ss_max_train_steps": str(facts["steps"]),
        "ss_steps": str(facts["steps"]),
        "ss_learning_rate": f"{facts['learning_rate']:g}",
        "ss_lr_scheduler": str(facts["lr_scheduler"]),
        "ss_lr_warmup_steps": str(facts["lr_warmup_steps"]),
        "ss_batch_size_per_device": str(facts["batch_size"]),
        "ss_gradient_accumulation_steps": str(facts["grad_accum"]),
        "ss_optimizer": str(facts["optimizer"]),
        "ss_mixed_precision": str(facts["precision"]),
        "ss_min_snr_gamma": str(facts.get("snr_gamma")),
        "ss_noise_offset": str(facts.get("noise_offset")),
        "ss_seed": str(facts.get("seed", "")),
        "ss_output_name": str(facts["style_name"]),
        "ss_training_comment": f"toonbooth {facts['kind']}; trigger: {facts['trigger']}",
        "ss_network_args": json.dumps({"target_modules": facts.get("target_modules", [])}),
        "ss_prior_loss_weight": str(facts.get("prior_loss_weight", "")),
        "ss_tag_frequency": json.dumps({"images": tags}),
        "ss_training_finished_at": str(facts.get("finished_at", "")),
    }


def save_peft_lora(
    path: Path, arch: str, layers: Mapping[str, Mapping[str, torch.Tensor]], metas: Mapping[str, Mapping[str, Any]],
    metadata: Mapping[str, str],
) -> Path:  # fmt: skip
    """diffusers/PEFT LoRA file (`save_lora_weights`) with `metadata` merged into its header."""
    import diffusers

    cls = diffusers.StableDiffusionXLPipeline if arch == "sdxl" else diffusers.StableDiffusionPipeline
    kwargs: dict[str, Any] = {}
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        if comp in layers:
            kwargs[f"{comp}_lora_layers"] = dict(layers[comp])
            kwargs[f"{comp}_lora_adapter_metadata"] = dict(metas[comp])
    path.parent.mkdir(parents=True, exist_ok=True)
    cls.save_lora_weights(str(path.parent), weight_name=path.name, **kwargs)
    add_metadata(path, metadata)
    return path


def save_kohya_lora(
    path: Path, arch: str, unet_config: Any, layers: Mapping[str, Mapping[str, torch.Tensor]], alpha: float,
    metadata: Mapping[str, str],
) -> Path:  # fmt: skip
    """kohya-ss / A1111 LoRA file."""
    flat = {f"{comp}.{k}": v for comp, sd in layers.items() for k, v in sd.items()}
    return _write(peft_lora_to_kohya(flat, unet_config, arch, alphas=alpha), path, metadata)


def a1111_embedding(
    vectors: Mapping[str, torch.Tensor], arch: str, layout: str = "emb_params"
) -> dict[str, torch.Tensor]:
    """Stage-less A1111 tensors: (n, width) per key, the mean over stages when there are several."""
    flat = {k: (v.mean(0) if v.dim() == 3 else v).float().contiguous() for k, v in vectors.items()}
    if arch == "sd15" and layout == "string_to_param":
        return {"string_to_param.*": flat["emb_params"]}
    return flat


def save_ti(
    path: Path,
    arch: str,
    vectors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    layout: str = "emb_params",
) -> Path:
    """A1111 textual-inversion file: SD1.5 `emb_params` / `string_to_param.*`, SDXL `clip_l` + `clip_g`."""
    return _write(a1111_embedding(vectors, arch, layout), path, metadata)


def save_ti_stages(path: Path, vectors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Path:
    """All stages, (stages, n, width) under the A1111 keys (read by `StagedEmbedding.from_file`)."""
    return _write({k: v.float() for k, v in vectors.items()}, path, metadata)
