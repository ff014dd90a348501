"""Write diffusers-layout weights into the original single-file checkpoint layouts.

Layouts produced (the inverse of what diffusers' `loaders/single_file_utils.py` reads; written here from the
key names, not copied):

* SD 1.x (CompVis LDM, `v1-inference.yaml`): `model.diffusion_model.*` UNet (`input_blocks` / `middle_block` /
  `output_blocks`, `time_embed`, `out`), `first_stage_model.*` VAE (`encoder.down.N.block.M`, `mid.attn_1`
  with 1x1-conv q/k/v), `cond_stage_model.transformer.text_model.*` CLIP ViT-L text encoder.
* SDXL (Stability generative-models "SGM" layout of `sd_xl_base_1.0.safetensors`): the same UNet and VAE
  layouts plus `label_emb` for the size/crop embedding, `conditioner.embedders.0.transformer.text_model.*`
  (CLIP ViT-L) and `conditioner.embedders.1.model.*` (OpenCLIP ViT-bigG: `transformer.resblocks.N` with a
  fused `attn.in_proj_weight`, `positional_embedding`, `ln_final`, `text_projection` stored as hidden x proj).
* ControlNet (lllyasviel ControlNet 1.0/1.1, `cldm_v15.yaml`): `control_model.*` with `input_hint_block`,
  `zero_convs.N.0`, `middle_block_out.0`; or the diffusers key names in one file (the layout of
  `diffusers_xl_canny_full.safetensors`).
* LoRA in kohya-ss / AUTOMATIC1111 naming (`lora_unet_<module path with _>.lora_down.weight`,
  `.lora_up.weight`, `.alpha`), SDXL with SGM block names, SD 1.x with diffusers block names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from toonbooth.core.errors import InputError

Arch = Literal["sdxl", "sd15"]
ARCHS: tuple[str, ...] = ("sdxl", "sd15")

# diffusers ResnetBlock2D sub-module -> LDM ResBlock sub-module
_UNET_RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
# diffusers VAE attention sub-module -> LDM AttnBlock sub-module
_VAE_ATTN_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

SD15_PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.transformer.",
}
SDXL_PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "conditioner.embedders.0.transformer.",
    "text_encoder_2": "conditioner.embedders.1.model.",
}
CONTROLNET_PREFIX = "control_model."


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise InputError("arch", f"must be one of {list(ARCHS)}, got {arch!r}", arch)


# ---------------------------------------------------------------------------------------------------------
# UNet (shared by the UNet and the ControlNet encoder half)
# ---------------------------------------------------------------------------------------------------------


def _cfg(config: Any, name: str) -> Any:
    return config[name] if isinstance(config, Mapping) else getattr(config, name)


def _resnet_tail(tail: str) -> str:
    """`norm1.weight` -> `in_layers.0.weight`."""
    head, _, rest = tail.partition(".")
    return f"{_UNET_RESNET_NAMES.get(head, head)}.{rest}"


def unet_block_name_to_original(name: str, config: Any) -> str | None:
    """Map a diffusers UNet module path (no parameter suffix needed) to the LDM/SGM path.

    `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q` -> `input_blocks.4.1.transformer_blocks.0...`
    for `layers_per_block=2`. Resnet sub-module names are renamed too. Returns None for a path outside the
    block structure (time / class / addition embeddings, conv_in, conv_out are handled by the caller).
    """
    per = int(_cfg(config, "layers_per_block"))
    up_types = list(_cfg(config, "up_block_types"))
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)$", name)
    if m:
        b, kind, j, tail = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return f"input_blocks.{1 + b * (per + 1) + per}.0.op.{tail.removeprefix('conv.')}"
        idx = 1 + b * (per + 1) + j
        if kind == "resnets":
            return f"input_blocks.{idx}.0.{_resnet_tail(tail)}"
        return f"input_blocks.{idx}.1.{tail}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", name)
    if m:
        kind, j, tail = m[1], int(m[2]), m[3]
        if kind == "attentions":
            return f"middle_block.{2 * j + 1}.{tail}"
        return f"middle_block.{2 * j}.{_resnet_tail(tail)}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)$", name)
    if m:
        b, kind, j, tail = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "upsamplers":
            # the upsampler sits after the attention if the block has one
            slot = 2 if "CrossAttn" in up_types[b] else 1
            return f"output_blocks.{b * (per + 1) + per}.{slot}.{tail}"
        idx = b * (per + 1) + j
        if kind == "resnets":
            return f"output_blocks.{idx}.0.{_resnet_tail(tail)}"
        return f"output_blocks.{idx}.1.{tail}"
    return None


_UNET_TOP_LEVEL = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "class_embedding.linear_1.": "label_emb.0.0.",
    "class_embedding.linear_2.": "label_emb.0.2.",
}


def unet_to_original(state_dict: Mapping[str, Any], config: Any) -> dict[str, Any]:
    """Diffusers UNet2DConditionModel state dict -> LDM/SGM `diffusion_model` keys (without prefix)."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = None
        for src, dst in _UNET_TOP_LEVEL.items():
            if key.startswith(src):
                new = dst + key[len(src) :]
                break
        if new is None:
            new = unet_block_name_to_original(key, config)
        if new is None:
            raise ValueError(f"UNet key {key!r} has no original-layout counterpart")
        out[new] = value
    return out


# ---------------------------------------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------------------------------------


def vae_to_original(state_dict: Mapping[str, Any], config: Any) -> dict[str, Any]:
    """Diffusers AutoencoderKL state dict -> LDM `first_stage_model` keys (without prefix).

    The decoder's up blocks are numbered in reverse in LDM (`up.0` is the last, full-resolution one) and the
    mid-block attention's q/k/v/proj_out are 1x1 convolutions there.
    """
    n_up = len(_cfg(config, "up_block_types"))
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = key
        m = re.match(r"(encoder|decoder)\.conv_norm_out\.(.*)$", key)
        if m:
            new = f"{m[1]}.norm_out.{m[2]}"
        m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", key)
        if m:
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)$", key)
        if m:
            new = f"encoder.down.{m[1]}.downsample.{m[2]}"
        m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", key)
        if m:
            new = f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)$", key)
        if m:
            new = f"decoder.up.{n_up - 1 - int(m[1])}.upsample.{m[2]}"
        m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)$", key)
        if m:
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        m = re.match(
            r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)$", key
        )
        if m:
            new = f"{m[1]}.mid.attn_1.{_VAE_ATTN_NAMES[m[2]]}.{m[3]}"
            if m[3] == "weight" and m[2] != "group_norm" and value.ndim == 2:
                value = value[:, :, None, None]
        out[new] = value
    return out


# ---------------------------------------------------------------------------------------------------------
# Text encoders
# ---------------------------------------------------------------------------------------------------------


def clip_text_to_original(text_encoder: Any) -> dict[str, Any]:
    """CLIPTextModel(/WithProjection) -> `text_model.*` keys as in the original checkpoints (no prefix).

    transformers >= 5.6 flattened `CLIPTextModel`, so its own state dict has no `text_model.` level; the
    original checkpoints (and diffusers' single-file loader) use `...transformer.text_model.*`. The level is
    put back here. A projection (CLIPTextModelWithProjection) has no place in the CLIP-L layout and is dropped.
    """
    out: dict[str, Any] = {}
    for key, value in text_encoder.state_dict().items():
        if key.startswith("text_projection."):
            continue
        if key.endswith("position_ids"):
            continue
        out[key if key.startswith("text_model.") else f"text_model.{key}"] = value
    return out


def open_clip_text_to_original(text_encoder: Any) -> dict[str, Any]:
    """CLIPTextModelWithProjection -> OpenCLIP text tower keys (no prefix), as SDXL's second encoder."""
    import torch

    sd = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    out: dict[str, Any] = {
        "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
        # nn.Linear stores (proj, hidden); OpenCLIP multiplies x @ text_projection with (hidden, proj)
        "text_projection": sd["text_projection.weight"].T.contiguous(),
    }
    n_layers = int(text_encoder.config.num_hidden_layers)
    for i in range(n_layers):
        src = f"encoder.layers.{i}."
        dst = f"transformer.resblocks.{i}."
        attn = src + "self_attn."
        out[dst + "attn.in_proj_weight"] = torch.cat(
            [sd[attn + f"{p}_proj.weight"] for p in ("q", "k", "v")], dim=0
        ).contiguous()
        out[dst + "attn.in_proj_bias"] = torch.cat(
            [sd[attn + f"{p}_proj.bias"] for p in ("q", "k", "v")]
        ).contiguous()
        for p in ("weight", "bias"):
            out[dst + f"attn.out_proj.{p}"] = sd[attn + f"out_proj.{p}"]
            out[dst + f"ln_1.{p}"] = sd[src + f"layer_norm1.{p}"]
            out[dst + f"ln_2.{p}"] = sd[src + f"layer_norm2.{p}"]
            out[dst + f"mlp.c_fc.{p}"] = sd[src + f"mlp.fc1.{p}"]
            out[dst + f"mlp.c_proj.{p}"] = sd[src + f"mlp.fc2.{p}"]
    return out


# ---------------------------------------------------------------------------------------------------------
# Whole checkpoints
# ---------------------------------------------------------------------------------------------------------


def _contiguous(sd: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def components_to_original(components: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """One original-layout state dict (UNet + VAE + text encoders) from diffusers components."""
    _check_arch(arch)
    for name in ("unet", "vae", "text_encoder") + (("text_encoder_2",) if arch == "sdxl" else ()):
        if components.get(name) is None:
            raise InputError(
                "components", f"missing component {name!r} for arch {arch!r}", sorted(components)
            )
    prefixes = SDXL_PREFIXES if arch == "sdxl" else SD15_PREFIXES
    unet, vae = components["unet"], components["vae"]
    out: dict[str, Any] = {}
    for k, v in unet_to_original(unet.state_dict(), unet.config).items():
        out[prefixes["unet"] + k] = v
    for k, v in vae_to_original(vae.state_dict(), vae.config).items():
        out[prefixes["vae"] + k] = v
    for k, v in clip_text_to_original(components["text_encoder"]).items():
        out[prefixes["text_encoder"] + k] = v
    if arch == "sdxl":
        for k, v in open_clip_text_to_original(components["text_encoder_2"]).items():
            out[prefixes["text_encoder_2"] + k] = v
    return _contiguous(out)


def write_single_file(
    components: Mapping[str, Any], path: str | Path, arch: str, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write SDXL (SGM) or SD1.5 (LDM) components as one `.safetensors` checkpoint like A1111 uses."""
    from safetensors.torch import save_file

    path = Path(path)
    sd = components_to_original(components, arch)
    meta = {
        "format": "pt",
        "modelspec.architecture": "stable-diffusion-xl-v1-base" if arch == "sdxl" else "stable-diffusion-v1",
        "toonbooth.layout": "sgm" if arch == "sdxl" else "ldm",
    }
    meta.update(metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata=meta)
    return path


# ---------------------------------------------------------------------------------------------------------
# ControlNet
# ---------------------------------------------------------------------------------------------------------


def controlnet_to_original(state_dict: Mapping[str, Any], config: Any) -> dict[str, Any]:
    """Diffusers ControlNetModel state dict -> lllyasviel `control_model` keys (without prefix).

    The hint encoder is `input_hint_block.{0,2,...,14}` (convs between SiLUs): conv_in -> 0, blocks.k ->
    2(k+1), conv_out -> 14; this only lines up for 4 `conditioning_embedding_out_channels` entries (x8).
    """
    n_emb = len(_cfg(config, "conditioning_embedding_out_channels"))
    if n_emb != 4:
        raise InputError(
            "conditioning_embedding_out_channels",
            f"the original ControlNet layout needs 4 entries (x8 hint encoder), got {n_emb}",
            n_emb,
        )
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        m = re.match(r"controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))\.(.*)$", key)
        if m:
            slot = 0 if m[1] == "conv_in" else 14 if m[1] == "conv_out" else 2 * (int(m[2]) + 1)
            out[f"input_hint_block.{slot}.{m[3]}"] = value
            continue
        m = re.match(r"controlnet_down_blocks\.(\d+)\.(.*)$", key)
        if m:
            out[f"zero_convs.{m[1]}.0.{m[2]}"] = value
            continue
        if key.startswith("controlnet_mid_block."):
            out["middle_block_out.0." + key.removeprefix("controlnet_mid_block.")] = value
            continue
        new = None
        for src, dst in _UNET_TOP_LEVEL.items():
            if key.startswith(src):
                new = dst + key[len(src) :]
                break
        if new is None:
            # a ControlNet is the UNet's encoder half: no up blocks
            new = unet_block_name_to_original(key, {**dict(config), "up_block_types": ()})
        if new is None:
            raise ValueError(f"ControlNet key {key!r} has no original-layout counterpart")
        out[new] = value
    return out


ControlNetLayout = Literal["diffusers", "original"]


def write_controlnet_single_file(controlnet: Any, path: str | Path, layout: str = "diffusers") -> Path:
    """One `.safetensors` ControlNet: diffusers key names ("diffusers", like `diffusers_xl_canny_full`) or
    lllyasviel's `control_model.*` ("original", like `control_v11p_sd15_canny`)."""
    from safetensors.torch import save_file

    if layout not in ("diffusers", "original"):
        raise InputError("layout", f"must be 'diffusers' or 'original', got {layout!r}", layout)
    sd = controlnet.state_dict()
    if layout == "original":
        sd = {CONTROLNET_PREFIX + k: v for k, v in controlnet_to_original(sd, controlnet.config).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        _contiguous(sd), str(path), metadata={"format": "pt", "toonbooth.layout": f"controlnet-{layout}"}
    )
    return path


_CONTROLNET_FROM_UNET_KEYS = (
    "in_channels",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "only_cross_attention",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "attention_head_dim",
    "num_attention_heads",
    "use_linear_projection",
    "class_embed_type",
    "addition_embed_type",
    "addition_time_embed_dim",
    "num_class_embeds",
    "upcast_attention",
    "resnet_time_scale_shift",
    "projection_class_embeddings_input_dim",
    "mid_block_type",
)


_CN_TRANSFORMER_KEY = re.compile(r"^down_blocks\.(\d+)\.attentions\.\d+\.transformer_blocks\.(\d+)\.")


def controlnet_config_from_state_dict(
    keys_shapes: Mapping[str, Iterable[int]], base_unet_config: Mapping[str, Any]
) -> dict[str, Any]:
    """A `ControlNetModel(**config)` config for a diffusers-layout ControlNet file.

    `keys_shapes` maps each key of the file to its shape (read from the safetensors header, no tensors);
    `base_unet_config` is the config of the UNet the ControlNet was trained for (what `ControlNetModel.from_unet`
    copies). The hint encoder's channels and the input channels are read from the shapes. Only full-size
    ControlNets (the UNet's encoder half) are covered, not the "mid"/"small" SDXL variants with fewer blocks.
    """
    shapes = {k: tuple(int(s) for s in v) for k, v in keys_shapes.items()}
    if "controlnet_cond_embedding.conv_in.weight" not in shapes:
        raise InputError(
            "keys_shapes",
            "not a diffusers-layout ControlNet (no controlnet_cond_embedding.conv_in.weight)",
            None,
        )
    cfg = {k: base_unet_config[k] for k in _CONTROLNET_FROM_UNET_KEYS if k in base_unet_config}
    conv_in = shapes["controlnet_cond_embedding.conv_in.weight"]
    channels = [conv_in[0]]
    i = 1
    while f"controlnet_cond_embedding.blocks.{i}.weight" in shapes:
        channels.append(shapes[f"controlnet_cond_embedding.blocks.{i}.weight"][0])
        i += 2
    # transformer depth per down block, as the keys say (the "mid"/"small" SDXL variants are shallower)
    depth: dict[int, int] = {}
    for key in shapes:
        m = _CN_TRANSFORMER_KEY.match(key)
        if m:
            block, layer = int(m.group(1)), int(m.group(2))
            depth[block] = max(depth.get(block, 0), layer + 1)
    if depth and "down_block_types" in cfg:
        cfg["transformer_layers_per_block"] = [max(depth.get(i, 1), 1) for i in range(len(cfg["down_block_types"]))]
    cfg["conditioning_channels"] = conv_in[1]
    cfg["conditioning_embedding_out_channels"] = tuple(channels)
    cfg["in_channels"] = shapes["conv_in.weight"][1]
    if "add_embedding.linear_1.weight" in shapes:
        cfg["projection_class_embeddings_input_dim"] = shapes["add_embedding.linear_1.weight"][1]
    else:
        cfg["addition_embed_type"] = None
    return cfg


# ---------------------------------------------------------------------------------------------------------
# LoRA: PEFT (diffusers) names -> kohya / A1111 names
# ---------------------------------------------------------------------------------------------------------


def peft_lora_to_kohya(
    state_dict: Mapping[str, Any],
    unet_config: Any,
    arch: str,
    alphas: Mapping[str, float] | float | None = None,
) -> dict[str, Any]:
    """Convert a diffusers/PEFT LoRA state dict (`unet.<module>.lora_A.weight`, `text_encoder.…`) to kohya names.

    UNet modules become `lora_unet_<path with _>`; SDXL uses SGM block names (`input_blocks_4_1_…`), SD1.5
    diffusers block names (`down_blocks_0_attentions_0_…`). Text encoders become `lora_te_…` (SD1.5) or
    `lora_te1_…` / `lora_te2_…` (SDXL), always with the `text_model_` level the original layout has.
    `alphas` (one float, or per PEFT module path) is written as each module's `.alpha`; None writes the rank
    (scale 1).
    """
    _check_arch(arch)
    te_names = (
        {"text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}
        if arch == "sdxl"
        else {"text_encoder": "lora_te"}
    )
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        m = re.match(r"(unet|text_encoder|text_encoder_2)\.(.*)\.(lora_A|lora_B)\.weight$", key)
        if not m:
            raise ValueError(f"not a PEFT LoRA key: {key!r}")
        component, module, ab = m[1], m[2], m[3]
        if component == "unet":
            path = module
            if arch == "sdxl":
                mapped = unet_block_name_to_original(module + ".", unet_config)
                if mapped is None:
                    for src, dst in _UNET_TOP_LEVEL.items():
                        if (module + ".").startswith(src):
                            mapped = dst + (module + ".")[len(src) :]
                            break
                path = (mapped or module).rstrip(".")
            name = "lora_unet_" + path.replace(".", "_")
        else:
            if component not in te_names:
                raise ValueError(f"{component} has no kohya name for arch {arch!r}")
            path = module if module.startswith("text_model.") else "text_model." + module
            name = te_names[component] + "_" + path.replace(".", "_")
        out[f"{name}.{'lora_down' if ab == 'lora_A' else 'lora_up'}.weight"] = value
        if ab == "lora_A":
            rank = int(value.shape[0])
            if alphas is None:
                alpha = float(rank)
            elif isinstance(alphas, (int, float)):
                alpha = float(alphas)
            else:
                alpha = float(alphas.get(f"{component}.{module}", rank))
            import torch

            out[f"{name}.alpha"] = torch.tensor(alpha)
    return _contiguous(out)
