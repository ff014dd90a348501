"""Stable-Makeup's makeup ("detail") encoder and SSR cross-attention, in the public checkpoint key layout.

Paper: Y. Zhang et al., "Stable-Makeup: When Real-World Makeup Transfer Meets Diffusion Model"
(arXiv:2403.07764); reference code Xiaojiu-z/Stable-Makeup (`detail_encoder/encoder_plus.py`, `_clip.py`,
`resampler.py`, `attention_processor.py`, `infer_kps.py`, `pipeline_sd15.py`). The SSR attention comes from
SSR-Encoder (Y. Zhang et al., CVPR 2024).

The three public files (`models/stablemakeup/` of the reference README), all plain state dicts:

- `pytorch_model.bin`: the detail encoder (`DetailEncoder`):
  - `image_encoder.vision_model.*`: CLIP ViT-L/14 at 224 px (1024 wide, 24 layers, 257 tokens), the
    transformers `CLIPVisionModel` layout of transformers 4.x, without `post_layernorm` (the reference sets it to
    None). transformers >= 5 names the same tensors without the `vision_model.` level; both are accepted.
  - `SSR_layers.{i}.to_k_SSR.weight`, `SSR_layers.{i}.to_v_SSR.weight`: (hidden, 1024), no bias. The list is
    built from `unet.attn_processors` in its order, so the indices interleave `attn1` (no weights) and `attn2`;
    on SD1.5 the `attn2` layers are 1, 3, ..., 31 in the order down_blocks.0-2, up_blocks.1-3, mid_block (31).
  - `resampler.*`: one pre-norm transformer block on the CLIP tokens (query_dim 1024, 8 heads x 64):
    `norm1`, `attn.to_q/to_k/to_v` (no bias), `attn.to_out.0`, `norm2`, `ff.net.0.proj` (GEGLU 1024 -> 2 x 4096),
    `ff.net.2` (4096 -> 1024); `x + attn(norm1 x)`, then `+ ff(norm2 x)`; 14 694 400 parameters.
- `pytorch_model_1.bin`: the identity ControlNet (input: the source face, RGB in [0, 1]);
- `pytorch_model_2.bin`: the structure ControlNet (input: the landmark drawing, `vision.face_structure`).
  Both are stock diffusers `ControlNetModel.from_unet(sd15_unet)` state dicts.

Trap: once the SSR processors are installed, their weights are registered inside the UNet
(`...attn2.processor.to_k_SSR.weight`), so `unet.state_dict()` and a weight-copying `ControlNetModel.from_unet`
see extra keys. Build ControlNets with `load_weights_from_unet=False` (as `load_makeup_controlnet` does) or
before installing the processors.

How the embedding enters the UNet: CLIP `hidden_states[2::2]` (layers 2, 4, ..., 24: 12 x 257 tokens)
concatenated to (B, 3084, 1024), through the resampler, passed as the UNet's `encoder_hidden_states`. Every
`attn2` runs `SSRAttnProcessor`: query from the UNet's `to_q`, key and value from `to_k_SSR` / `to_v_SSR` of the
makeup tokens (the text `to_k` / `to_v` are unused), scaled dot-product attention, times `scale`, then the
UNet's `to_out`. The negative (unconditional) embedding is the same path applied to an all-zero normalised
image. The ControlNets get the empty-prompt text embedding instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from toonbooth.core.errors import InputError, ModelError
from toonbooth.nets.bisenet import read_state_dict

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224
MAKEUP_CONTEXT_DIM = 1024
"""Width of the makeup tokens (CLIP ViT-L hidden size) that `to_k_SSR` / `to_v_SSR` read."""

_SSR_KEY = re.compile(r"^SSR_layers\.(\d+)\.(to_k_SSR|to_v_SSR)\.weight$")


# ---------------------------------------------------------------------------------------------------
# Resampler
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResamplerConfig:
    query_dim: int = 1024
    heads: int = 8
    dim_head: int = 64

    @classmethod
    def tiny(cls) -> ResamplerConfig:
        return cls(query_dim=32, heads=2, dim_head=16)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], dim_head: int = 64) -> ResamplerConfig:
        """Widths from a `resampler.*`-stripped state dict; the head split is not in the shapes (`dim_head`)."""
        try:
            query_dim = int(sd["norm1.weight"].shape[0])
            inner = int(sd["attn.to_q.weight"].shape[0])
        except KeyError as e:
            raise ModelError(f"not a Stable-Makeup resampler: `{e.args[0]}` is missing") from e
        if inner % dim_head:
            raise ModelError(f"resampler attention width {inner} is not a multiple of dim_head={dim_head}")
        return cls(query_dim=query_dim, heads=inner // dim_head, dim_head=dim_head)


class Resampler(nn.Module):
    """One pre-norm transformer block over the concatenated CLIP tokens (diffusers `Attention` + GEGLU `FeedForward`)."""

    def __init__(self, config: ResamplerConfig | None = None):
        super().__init__()
        from diffusers.models.attention import FeedForward
        from diffusers.models.attention_processor import Attention

        self.config = config or ResamplerConfig()
        c = self.config
        self.attn = Attention(
            query_dim=c.query_dim, heads=c.heads, dim_head=c.dim_head, bias=False, out_bias=True
        )
        self.ff = FeedForward(c.query_dim, mult=4, activation_fn="geglu")
        self.norm1 = nn.LayerNorm(c.query_dim)
        self.norm2 = nn.LayerNorm(c.query_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


# ---------------------------------------------------------------------------------------------------
# SSR attention processors and the index rule
# ---------------------------------------------------------------------------------------------------


class PlainAttnProcessor(nn.Module):
    """`attn1` entry of `SSR_layers`: no weights, runs diffusers' standard SDPA processor."""

    def __init__(self) -> None:
        super().__init__()
        from diffusers.models.attention_processor import AttnProcessor2_0

        self._impl = AttnProcessor2_0()

    def forward(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs
    ):
        return self._impl(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class SSRAttnProcessor(nn.Module):
    """Cross-attention whose keys and values come from the makeup tokens through `to_k_SSR` / `to_v_SSR`.

    `hidden_size`: the attention's inner width (the query width); `context_dim`: the makeup token width.
    As in the reference, the attention mask is not applied to the SSR branch.
    """

    def __init__(self, hidden_size: int, context_dim: int = MAKEUP_CONTEXT_DIM, scale: float = 1.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.context_dim = context_dim
        self.scale = scale
        self.to_k_SSR = nn.Linear(context_dim, hidden_size, bias=False)
        self.to_v_SSR = nn.Linear(context_dim, hidden_size, bias=False)

    def forward(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs
    ):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)
        else:
            context = encoder_hidden_states
        key = self.to_k_SSR(context)
        value = self.to_v_SSR(context)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](self.scale * out))
        if spatial:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@dataclass(frozen=True)
class SsrSlot:
    """One entry of `SSR_layers`: its index, the UNet processor name, and the attention's inner width (attn2)."""

    index: int
    name: str
    hidden_size: int | None
    """None for `attn1` (self-attention: no SSR weights)."""


def ssr_slots(unet: nn.Module) -> list[SsrSlot]:
    """The `SSR_layers` index rule: one slot per entry of `unet.attn_processors`, in that order."""
    slots = []
    for i, name in enumerate(unet.attn_processors.keys()):
        module_name = name[: -len(".processor")] if name.endswith(".processor") else name
        if module_name.endswith("attn2"):
            attn = unet.get_submodule(module_name)
            slots.append(SsrSlot(i, name, int(attn.to_q.out_features)))
        else:
            slots.append(SsrSlot(i, name, None))
    return slots


def expected_ssr_keys(unet: nn.Module) -> set[str]:
    """The `SSR_layers.*` keys a detail-encoder file for this UNet holds."""
    return {
        f"SSR_layers.{s.index}.{p}.weight"
        for s in ssr_slots(unet)
        if s.hidden_size is not None
        for p in ("to_k_SSR", "to_v_SSR")
    }


def install_ssr_processors(
    unet: nn.Module, context_dim: int = MAKEUP_CONTEXT_DIM, scale: float = 1.0
) -> nn.ModuleList:
    """Give every `attn2` an `SSRAttnProcessor` and every other attention a `PlainAttnProcessor`.

    Returns the processors as a ModuleList in `unet.attn_processors` order (the public `SSR_layers`); the same
    module objects sit in the UNet, so loading weights into the list updates the UNet.
    """
    procs: dict[str, nn.Module] = {}
    for slot in ssr_slots(unet):
        if slot.hidden_size is None:
            procs[slot.name] = PlainAttnProcessor()
        else:
            procs[slot.name] = SSRAttnProcessor(slot.hidden_size, context_dim, scale)
    param = next(unet.parameters())
    for p in procs.values():
        p.to(param.device, param.dtype)
    unet.set_attn_processor(procs)
    return nn.ModuleList(list(unet.attn_processors.values()))


def set_ssr_scale(layers: nn.ModuleList, scale: float) -> None:
    """Scale of the makeup attention in every SSR processor (1 = the reference)."""
    for layer in layers:
        if isinstance(layer, SSRAttnProcessor):
            layer.scale = float(scale)


# ---------------------------------------------------------------------------------------------------
# CLIP image encoder
# ---------------------------------------------------------------------------------------------------


def _vision_core(model: nn.Module) -> nn.Module:
    """The module that owns `embeddings` / `encoder` (transformers 4.x nests it under `vision_model`)."""
    return model.vision_model if hasattr(model, "vision_model") else model


def clip_to_public_keys(model: nn.Module) -> dict[str, torch.Tensor]:
    """A `CLIPVisionModel` state dict in the public (transformers 4.x) layout `vision_model.*`, no post_layernorm."""
    sd = _vision_core(model).state_dict()
    return {
        f"vision_model.{k}": v
        for k, v in sd.items()
        if not k.startswith("post_layernorm.") and not k.endswith("position_ids")
    }


def _clip_core_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip `vision_model.` (if present) and drop `position_ids` buffers of old files."""
    out = {}
    for k, v in sd.items():
        key = k[len("vision_model.") :] if k.startswith("vision_model.") else k
        if key.endswith("position_ids"):
            continue
        out[key] = v
    return out


def clip_vision_config_from_state_dict(sd: dict[str, torch.Tensor], num_attention_heads: int | None = None):
    """A transformers `CLIPVisionConfig` read off CLIP vision weights (either layout).

    The head count is not in the shapes: default `hidden_size // 64` (ViT-B/L: 12 / 16 heads).
    """
    from transformers import CLIPVisionConfig

    core = _clip_core_keys(sd)
    try:
        patch = core["embeddings.patch_embedding.weight"]
        positions = int(core["embeddings.position_embedding.weight"].shape[0])
        fc1 = core["encoder.layers.0.mlp.fc1.weight"]
    except KeyError as e:
        raise ModelError(f"not CLIP vision weights: `{e.args[0]}` is missing") from e
    hidden, patch_size = int(patch.shape[0]), int(patch.shape[2])
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ModelError(f"CLIP position embedding has {positions} rows, not a square grid + 1")
    layers = 1 + max(int(m.group(1)) for k in core if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    heads = num_attention_heads or max(1, hidden // 64)
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=int(fc1.shape[0]),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=grid * patch_size,
        patch_size=patch_size,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def load_clip_vision_state(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Load CLIP vision weights in either layout; only `post_layernorm.*` may be missing."""
    core = _vision_core(model)
    result = core.load_state_dict(_clip_core_keys(sd), strict=False)
    missing = [
        k
        for k in result.missing_keys
        if not k.startswith("post_layernorm.") and not k.endswith("position_ids")
    ]
    if missing or result.unexpected_keys:
        raise ModelError(
            f"CLIP image-encoder weights do not fit: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {list(result.unexpected_keys)[:5]} ({len(result.unexpected_keys)})"
        )


def clip_pixel_values(images: Image.Image | Sequence[Image.Image], size: int = CLIP_SIZE) -> torch.Tensor:
    """(B, 3, size, size): `CLIPImageProcessor()` defaults (shortest side to `size` bicubic, centre crop, CLIP mean/std)."""
    imgs = [images] if isinstance(images, Image.Image) else list(images)
    if not imgs:
        raise InputError("images", "no image given", None)
    out = []
    for img in imgs:
        rgb = img.convert("RGB")
        w, h = rgb.size
        k = size / min(w, h)
        rgb = rgb.resize((max(size, round(w * k)), max(size, round(h * k))), Image.BICUBIC)
        w, h = rgb.size
        left, top = (w - size) // 2, (h - size) // 2
        arr = np.asarray(rgb.crop((left, top, left + size, top + size)), np.float32) / 255.0
        arr = (arr - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
        out.append(torch.from_numpy(arr.transpose(2, 0, 1).copy()))
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------------
# Detail encoder
# ---------------------------------------------------------------------------------------------------


class DetailEncoder(nn.Module):
    """CLIP vision tokens (every second hidden state from layer 2) -> Resampler; owns the `SSR_layers`.

    Attribute names are the public key prefixes: `image_encoder`, `SSR_layers`, `resampler`.
    """

    def __init__(self, image_encoder: nn.Module, resampler: Resampler, ssr_layers: nn.ModuleList):
        super().__init__()
        self.image_encoder = image_encoder
        self.SSR_layers = ssr_layers
        self.resampler = resampler

    def clip_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, n_layers / 2 * tokens, hidden): `hidden_states[2::2]` concatenated on the token axis."""
        out = self.image_encoder(pixel_values, output_hidden_states=True)
        return torch.cat(out.hidden_states[2::2], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.resampler(self.clip_tokens(pixel_values))

    @torch.inference_mode()
    def encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(makeup embedding, negative embedding); the negative encodes an all-zero normalised image."""
        return self(pixel_values), self(torch.zeros_like(pixel_values))

    def public_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict in the layout of the public `pytorch_model.bin` (`image_encoder.vision_model.*`, ...)."""
        sd = {f"image_encoder.{k}": v for k, v in clip_to_public_keys(self.image_encoder).items()}
        for k, v in self.SSR_layers.state_dict().items():
            sd[f"SSR_layers.{k}"] = v
        for k, v in self.resampler.state_dict().items():
            sd[f"resampler.{k}"] = v
        return sd


def looks_like_detail_encoder(keys: set[str]) -> bool:
    """Keys of a Stable-Makeup `pytorch_model.bin` (detail encoder)."""
    return any(_SSR_KEY.match(k) for k in keys) and "resampler.norm1.weight" in keys


def looks_like_controlnet(keys: set[str]) -> bool:
    """Keys of a diffusers-layout `ControlNetModel` state dict (`pytorch_model_1/2.bin`)."""
    return {
        "controlnet_cond_embedding.conv_in.weight",
        "controlnet_mid_block.weight",
        "conv_in.weight",
    } <= keys


def identify_stable_makeup_file(keys: set[str]) -> Literal["detail_encoder", "controlnet", "unknown"]:
    """What a Stable-Makeup weight file holds, from its key names."""
    if looks_like_detail_encoder(keys):
        return "detail_encoder"
    if looks_like_controlnet(keys):
        return "controlnet"
    return "unknown"


def split_detail_encoder_state_dict(
    sd: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(CLIP vision weights, `SSR_layers.*` (prefix kept), resampler weights) of a detail-encoder state dict."""
    clip = {k[len("image_encoder.") :]: v for k, v in sd.items() if k.startswith("image_encoder.")}
    ssr = {k: v for k, v in sd.items() if k.startswith("SSR_layers.")}
    res = {k[len("resampler.") :]: v for k, v in sd.items() if k.startswith("resampler.")}
    other = sorted(
        set(sd) - {f"image_encoder.{k}" for k in clip} - set(ssr) - {f"resampler.{k}" for k in res}
    )
    if other:
        raise ModelError(f"unexpected keys in a Stable-Makeup detail encoder: {other[:5]} ({len(other)})")
    return clip, ssr, res


def check_ssr_keys(unet: nn.Module, ssr: dict[str, torch.Tensor], context_dim: int | None = None) -> int:
    """Check `SSR_layers.*` against the UNet's index rule and widths; returns the makeup token width."""
    slots = {s.index: s for s in ssr_slots(unet)}
    expected = expected_ssr_keys(unet)
    found = set(ssr)
    bad = [k for k in found if not _SSR_KEY.match(k)]
    if bad:
        raise ModelError(f"unexpected SSR keys {sorted(bad)[:5]}")
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise ModelError(
            "SSR_layers do not follow this UNet's attention order (attn2 at "
            f"{sorted(s.index for s in slots.values() if s.hidden_size)}): missing {missing[:4]}, extra {extra[:4]}"
        )
    widths = set()
    for key, w in ssr.items():
        m = _SSR_KEY.match(key)
        slot = slots[int(m.group(1))]  # type: ignore[union-attr]
        if w.ndim != 2 or int(w.shape[0]) != slot.hidden_size:
            raise ModelError(
                f"`{key}` has shape {tuple(w.shape)}, the UNet's {slot.name} needs ({slot.hidden_size}, ...)"
            )
        widths.add(int(w.shape[1]))
    if len(widths) != 1:
        raise ModelError(f"SSR layers read different token widths {sorted(widths)}")
    width = widths.pop()
    if context_dim is not None and width != context_dim:
        raise ModelError(f"SSR layers read {width}-wide tokens, the image encoder gives {context_dim}")
    return width


def build_detail_encoder(
    unet: nn.Module,
    clip_config=None,
    resampler_config: ResamplerConfig | None = None,
    *,
    image_encoder: nn.Module | None = None,
    scale: float = 1.0,
) -> DetailEncoder:
    """A detail encoder for `unet` (random resampler / SSR weights); installs the SSR processors into the UNet."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if image_encoder is None:
        image_encoder = CLIPVisionModel(
            clip_config
            or CLIPVisionConfig(
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=24,
                num_attention_heads=16,
                image_size=224,
                patch_size=14,
                hidden_act="quick_gelu",
            )
        )
    hidden = int(image_encoder.config.hidden_size)
    rc = resampler_config or ResamplerConfig(query_dim=hidden)
    if rc.query_dim != hidden:
        raise ModelError(f"resampler width {rc.query_dim} != image-encoder width {hidden}")
    layers = install_ssr_processors(unet, context_dim=hidden, scale=scale)
    enc = DetailEncoder(image_encoder.eval(), Resampler(rc), layers)
    param = next(unet.parameters())
    return enc.to(param.device).eval()


def tiny_clip_vision_config():
    """4 layers x 32 wide, 32 px images in 8 px patches (17 tokens): `hidden_states[2::2]` gives 2 x 17 tokens."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        hidden_act="quick_gelu",
    )


def load_detail_encoder(
    path: Path | str,
    unet: nn.Module,
    *,
    image_encoder: nn.Module | None = None,
    num_attention_heads: int | None = None,
    resampler_dim_head: int = 64,
    scale: float = 1.0,
) -> DetailEncoder:
    """The detail encoder from `pytorch_model.bin` (weights_only) or a `.safetensors` copy, wired into `unet`.

    The CLIP config is read off the weights (heads: `num_attention_heads` or width / 64). A file without
    `image_encoder.*` needs `image_encoder` (e.g. `CLIPVisionModel.from_pretrained(<image_encoder_l folder>)`).
    """
    from transformers import CLIPVisionModel

    sd = read_state_dict(path, "Stable-Makeup detail encoder")
    if not looks_like_detail_encoder(set(sd)):
        raise ModelError(
            f"{Path(path).name}: not a Stable-Makeup detail encoder (no `SSR_layers.*` / `resampler.*` keys)"
        )
    clip_sd, ssr_sd, res_sd = split_detail_encoder_state_dict(sd)
    if clip_sd:
        if image_encoder is None:
            image_encoder = CLIPVisionModel(clip_vision_config_from_state_dict(clip_sd, num_attention_heads))
        load_clip_vision_state(image_encoder, clip_sd)
    elif image_encoder is None:
        raise ModelError(
            f"{Path(path).name} has no `image_encoder.*` weights: pass the CLIP ViT-L image encoder"
        )
    hidden = int(image_encoder.config.hidden_size)
    check_ssr_keys(unet, ssr_sd, hidden)
    rc = ResamplerConfig.from_state_dict(res_sd, dim_head=resampler_dim_head)
    enc = build_detail_encoder(unet, resampler_config=rc, image_encoder=image_encoder, scale=scale)
    enc.resampler.load_state_dict(res_sd, strict=True)
    result = enc.SSR_layers.load_state_dict(
        {k[len("SSR_layers.") :]: v for k, v in ssr_sd.items()}, strict=False
    )
    if result.missing_keys or result.unexpected_keys:  # check_ssr_keys makes this unreachable; keep it loud
        raise ModelError(
            f"SSR layers did not load: missing {result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]}"
        )
    param = next(unet.parameters())
    return enc.to(param.device, param.dtype).eval()


# ---------------------------------------------------------------------------------------------------
# ControlNets (stock diffusers)
# ---------------------------------------------------------------------------------------------------


def load_makeup_controlnet(path: Path | str, unet: nn.Module):
    """`pytorch_model_1.bin` (identity) or `_2.bin` (structure): `ControlNetModel.from_unet(unet)` + the file's weights.

    The key set must equal the stock model's exactly (the reference loads with strict=False; a mismatch here
    means a different base or layout, and is refused with the differing keys named).
    """
    from diffusers import ControlNetModel

    sd = read_state_dict(path, "Stable-Makeup ControlNet")
    if not looks_like_controlnet(set(sd)):
        raise ModelError(f"{Path(path).name}: not a diffusers ControlNet state dict")
    # the UNet's weights are not copied: the file replaces all of them, and a UNet with SSR processors installed
    # carries their weights in its state dict, which `from_unet`'s weight copy would refuse
    controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    own = set(controlnet.state_dict())
    missing, extra = sorted(own - set(sd)), sorted(set(sd) - own)
    if missing or extra:
        raise ModelError(
            f"{Path(path).name} does not fit ControlNetModel.from_unet: missing {missing[:4]}, extra {extra[:4]}"
        )
    own_sd = controlnet.state_dict()
    for key, tensor in sd.items():
        want = own_sd[key].shape
        if tuple(tensor.shape) != tuple(want):
            raise ModelError(
                f"{Path(path).name}: `{key}` is {tuple(tensor.shape)}, the UNet's ControlNet needs {tuple(want)}"
            )
    controlnet.load_state_dict(sd, strict=True)
    param = next(unet.parameters())
    controlnet = controlnet.to(param.device)
    if param.dtype != next(controlnet.parameters()).dtype:
        controlnet = controlnet.to(dtype=param.dtype)
    return controlnet.eval()
