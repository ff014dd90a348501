"""pSp and e4e encoders (IR-SE50 backbone) in their public key layout, written for toonbooth.

- pSp: Richardson et al., "Encoding in Style: a StyleGAN Encoder for Image-to-Image Translation"
  (CVPR 2021, https://github.com/eladrich/pixel2style2pixel): `GradualStyleEncoder(50, 'ir_se')` -- an
  IR-SE50 body, a feature pyramid (`latlayer1`, `latlayer2`) and one `GradualStyleBlock` per W+ style
  (3 coarse from the 16x16 map, 4 middle from 32x32, the rest from 64x64 at 256-px input).
- e4e: Tov et al., "Designing an Encoder for StyleGAN Image Manipulation" (SIGGRAPH 2021,
  https://github.com/omertov/encoder4editing): `Encoder4Editing` -- the same modules, but style 0 is a base
  W repeated over all styles and styles 1.. add deltas (inference stage: all deltas).
- IR-SE50 body (ArcFace-style "improved residual" units with squeeze-excitation, from TreB1eN's
  InsightFace_Pytorch as used by pSp's `helpers.py`): units `body.{i}.res_layer.{0..5}` /
  `body.{i}.shortcut_layer.{0,1}`; stages of 3, 4, 14, 3 units with depths 64, 128, 256, 512.
  `IdentityBackbone` adds the `output_layer` of the 112-px face-recognition model (`model_ir_se50.pth`)
  for an identity loss.

Checkpoints (pSp `training/coach.py`): `{'state_dict': net.state_dict(), 'opts': vars(opts), 'latent_avg'}`
with keys `encoder.*` and `decoder.*` (the decoder is a rosinality Generator). Loaded with
`torch.load(weights_only=True)` (an `argparse.Namespace` in `opts` is also allowed), or from toonbooth's
safetensors conversion (`encoder.*`, `decoder.*`, `latent_avg`, opts as JSON metadata).
Inference: input 256x256 in [-1, 1]; `codes = encoder(x) + latent_avg` (when `start_from_latent_avg`).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import InputError, ModelError, ModelNotFoundError, UnsafeModelFormatError
from .stylegan2 import EqualLinear, Generator, config_from_state_dict

__all__ = [
    "EncoderConfig",
    "Encoder4Editing",
    "GradualStyleEncoder",
    "IdentityBackbone",
    "PSPCheckpoint",
    "PSPInverter",
    "encoder_config_from_state_dict",
    "load_identity_backbone",
    "load_psp",
    "load_psp_checkpoint",
    "looks_like_identity_backbone",
    "looks_like_psp_encoder",
    "save_psp_safetensors",
    "build_encoder",
    "n_styles_for",
    "split_psp_state",
    "tiny_encoder_config",
]

EncoderKind = Literal["psp", "e4e"]


@dataclass(frozen=True)
class EncoderConfig:
    """IR-SE body and style heads. Defaults: pSp/e4e at 1024-px StyleGAN (18 styles), 256-px input."""

    stage_units: tuple[int, ...] = (3, 4, 14, 3)
    stage_depths: tuple[int, ...] = (64, 128, 256, 512)
    n_styles: int = 18
    input_size: int = 256
    input_nc: int = 3
    se_reduction: int = 16
    use_se: bool = True
    coarse_ind: int = 3
    middle_ind: int = 7

    def __post_init__(self) -> None:
        if len(self.stage_units) != 4 or len(self.stage_depths) != 4:
            raise InputError("stage_units", "IR-SE bodies here have exactly four stages", self.stage_units)
        if self.input_size % 16:
            raise InputError(
                "input_size", f"must be a multiple of 16, got {self.input_size}", self.input_size
            )

    @property
    def style_dim(self) -> int:
        return self.stage_depths[-1]

    @property
    def tap_indices(self) -> tuple[int, int, int]:
        """Body indices after which c1 (end of stage 2), c2 (stage 3) and c3 (stage 4) are taken:
        (6, 20, 23) for IR-SE50."""
        ends = [sum(self.stage_units[: i + 1]) - 1 for i in range(4)]
        return ends[1], ends[2], ends[3]

    def spatial(self, i: int) -> int:
        """Feature-map size the style block `i` reads (16 / 32 / 64 at 256-px input)."""
        base = self.input_size // 16
        return base if i < self.coarse_ind else base * 2 if i < self.middle_ind else base * 4


def tiny_encoder_config(n_styles: int = 8, style_dim: int = 32, input_size: int = 64) -> EncoderConfig:
    """One unit per stage, narrow depths (>= 16 for the SE reduction, rising from stage to stage as in
    IR-SE50 so the stages can be read back off the keys), for tests. `style_dim` must be > 24."""
    if style_dim <= 24:
        raise InputError("style_dim", f"tiny encoder style width must be > 24, got {style_dim}", style_dim)
    return EncoderConfig(
        stage_units=(1, 1, 1, 1),
        stage_depths=(16, 20, 24, style_dim),
        n_styles=n_styles,
        input_size=input_size,
    )


# ---------------------------------------------------------------------------------------------------
# IR-SE body
# ---------------------------------------------------------------------------------------------------


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, padding=0, bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """IR(-SE) unit: BN, 3x3 conv, PReLU, 3x3 conv (stride), BN, [SE]; shortcut max-pool or 1x1 conv + BN."""

    def __init__(self, in_ch: int, depth: int, stride: int, use_se: bool = True, se_reduction: int = 16):
        super().__init__()
        if in_ch == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if use_se:
            layers.append(SEModule(depth, se_reduction))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def _body(config: EncoderConfig) -> nn.Sequential:
    units = []
    in_ch = 64
    for n, depth in zip(config.stage_units, config.stage_depths, strict=True):
        units.append(BottleneckIRSE(in_ch, depth, 2, config.use_se, config.se_reduction))
        units += [BottleneckIRSE(depth, depth, 1, config.use_se, config.se_reduction) for _ in range(n - 1)]
        in_ch = depth
    return nn.Sequential(*units)


def _input_layer(input_nc: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(input_nc, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))


class GradualStyleBlock(nn.Module):
    """log2(spatial) stride-2 3x3 convs with leaky ReLU (0.01) down to 1x1, then an EqualLinear."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        self.out_c = out_c
        n_down = int(math.log2(spatial))
        layers: list[nn.Module] = [nn.Conv2d(in_c, out_c, 3, stride=2, padding=1), nn.LeakyReLU()]
        for _ in range(n_down - 1):
            layers += [nn.Conv2d(out_c, out_c, 3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_c))


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class _PyramidEncoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        d = config.stage_depths
        self.input_layer = _input_layer(config.input_nc)
        self.body = _body(config)
        self.styles = nn.ModuleList(
            GradualStyleBlock(d[3], d[3], config.spatial(i)) for i in range(config.n_styles)
        )
        self.latlayer1 = nn.Conv2d(d[2], d[3], 1, 1, 0)
        self.latlayer2 = nn.Conv2d(d[1], d[3], 1, 1, 0)
        self.style_count = config.n_styles
        self.coarse_ind = config.coarse_ind
        self.middle_ind = config.middle_ind

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i1, i2, i3 = self.config.tap_indices
        x = self.input_layer(x)
        c1 = c2 = c3 = x
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == i1:
                c1 = x
            elif i == i2:
                c2 = x
            elif i == i3:
                c3 = x
        return c1, c2, c3


class GradualStyleEncoder(_PyramidEncoder):
    """pSp encoder: image (B, 3, 256, 256) in [-1, 1] -> W+ offsets (B, n_styles, 512)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.features(x)
        latents = [self.styles[j](c3) for j in range(self.coarse_ind)]
        p2 = _upsample_add(c3, self.latlayer1(c2))
        latents += [self.styles[j](p2) for j in range(self.coarse_ind, self.middle_ind)]
        p1 = _upsample_add(p2, self.latlayer2(c1))
        latents += [self.styles[j](p1) for j in range(self.middle_ind, self.style_count)]
        return torch.stack(latents, dim=1)


class Encoder4Editing(_PyramidEncoder):
    """e4e encoder: base W from style 0 repeated, plus deltas from styles 1..`stage` (all at inference)."""

    def __init__(self, config: EncoderConfig):
        super().__init__(config)
        self.progressive_stage = config.n_styles  # inference: every delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.features(x)
        w0 = self.styles[0](c3)
        w = w0.unsqueeze(1).repeat(1, self.style_count, 1)
        features = c3
        p2 = c3
        deltas = [torch.zeros_like(w0)]
        for i in range(1, min(self.progressive_stage + 1, self.style_count)):
            if i == self.coarse_ind:
                p2 = _upsample_add(c3, self.latlayer1(c2))
                features = p2
            elif i == self.middle_ind:
                features = _upsample_add(p2, self.latlayer2(c1))
            deltas.append(self.styles[i](features))
        deltas += [torch.zeros_like(w0)] * (self.style_count - len(deltas))
        return w + torch.stack(deltas, dim=1)


class IdentityBackbone(nn.Module):
    """IR-SE50 face-recognition network (112-px input, 512-d L2-normalised embedding) with the keys of
    `model_ir_se50.pth` (`input_layer`, `body`, `output_layer.{0,3,4}`)."""

    def __init__(self, config: EncoderConfig | None = None, embedding: int = 512):
        super().__init__()
        config = config or EncoderConfig(input_size=112)
        self.config = config
        d = config.stage_depths[-1]
        self.input_layer = _input_layer(config.input_nc)
        self.body = _body(config)
        side = config.input_size // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(d),
            nn.Dropout(0.6),
            nn.Flatten(),
            nn.Linear(d * side * side, embedding),
            nn.BatchNorm1d(embedding),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(out, dim=1)

    def embed_face(self, image: torch.Tensor) -> torch.Tensor:
        """pSp's ID-loss input: for a 256-px aligned face crop [35:223, 32:220], pool to the input size."""
        if image.shape[-1] == 256 and image.shape[-2] == 256:
            image = image[:, :, 35:223, 32:220]
        size = self.config.input_size
        return self(F.adaptive_avg_pool2d(image, (size, size)))


# ---------------------------------------------------------------------------------------------------
# Key layout, config inference
# ---------------------------------------------------------------------------------------------------


def looks_like_psp_encoder(keys: set[str]) -> bool:
    """True for pSp/e4e encoder keys (bare, or under `encoder.` in a full checkpoint)."""
    keys = set(keys)
    sub = {k[len("encoder.") :] for k in keys if k.startswith("encoder.")} or keys
    return {"input_layer.0.weight", "styles.0.linear.weight", "latlayer1.weight", "latlayer2.weight"} <= sub


def looks_like_identity_backbone(keys: set[str]) -> bool:
    """True for the IR-SE50 face-recognition `model_ir_se50.pth` keys."""
    return {"input_layer.0.weight", "output_layer.3.weight", "output_layer.4.running_mean"} <= set(keys)


def _body_config(sd: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], tuple[int, ...], bool, int]:
    n_units = len({int(k.split(".")[1]) for k in sd if k.startswith("body.")})
    if not n_units:
        raise ModelError("no `body.*` units in this IR-SE state dict")
    depths_per_unit = [int(sd[f"body.{i}.res_layer.1.weight"].shape[0]) for i in range(n_units)]
    # a stage starts at unit 0 and wherever the depth changes (stages 2-4 widen in IR-SE 50/100/152; the
    # stride-2 max-pool shortcut of an unchanged depth has no weights to tell it apart)
    starts = [0] + [i for i in range(1, n_units) if depths_per_unit[i] != depths_per_unit[i - 1]]
    if len(starts) != 4:
        raise ModelError(f"IR-SE body with {len(starts)} stages (expected 4)")
    units = tuple((starts + [n_units])[i + 1] - starts[i] for i in range(4))
    depths = tuple(depths_per_unit[s] for s in starts)
    use_se = "body.0.res_layer.5.fc1.weight" in sd
    red = int(depths[0] // sd["body.0.res_layer.5.fc1.weight"].shape[0]) if use_se else 16
    return units, depths, use_se, red


def encoder_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> EncoderConfig:
    """Body stages, style count and style width of a pSp/e4e encoder state dict (bare keys). The conv count
    of style block 0 gives the size of the map it reads (input / 16), hence the input size."""
    if not looks_like_psp_encoder(set(sd)):
        raise ModelError("not a pSp/e4e encoder state dict (input_layer/styles/latlayer keys missing)")
    units, depths, use_se, red = _body_config(sd)
    n_styles = len({int(k.split(".")[1]) for k in sd if k.startswith("styles.")})
    n_convs0 = len(
        {int(k.split(".")[3]) for k in sd if k.startswith("styles.0.convs.") and k.endswith("weight")}
    )
    input_size = 16 * 2**n_convs0  # style 0 reads the input/16 map down to 1x1
    return EncoderConfig(
        stage_units=units,
        stage_depths=depths,
        n_styles=n_styles,
        input_size=input_size,
        input_nc=int(sd["input_layer.0.weight"].shape[1]),
        se_reduction=red,
        use_se=use_se,
    )


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------


@dataclass
class PSPCheckpoint:
    """A pSp / e4e checkpoint split into encoder and decoder state dicts."""

    encoder: dict[str, torch.Tensor]
    decoder: dict[str, torch.Tensor]
    latent_avg: torch.Tensor | None
    opts: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> EncoderKind:
        enc_type = str(self.opts.get("encoder_type", ""))
        return "e4e" if enc_type == "Encoder4Editing" else "psp"


def split_psp_state(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(`encoder.*`, `decoder.*`) of a pSp/e4e `state_dict`, prefixes removed."""
    enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    dec = {k[len("decoder.") :]: v for k, v in state.items() if k.startswith("decoder.")}
    if not enc:
        raise ModelError("no `encoder.*` keys in this pSp/e4e state dict")
    return enc, dec


def _plain(value: Any) -> Any:
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def load_psp_checkpoint(path: str | Path) -> PSPCheckpoint:
    """Read a pSp/e4e `.pt` (`torch.load(weights_only=True)`, `argparse.Namespace` allowed) or a
    safetensors conversion (`encoder.*`, `decoder.*`, `latent_avg`; opts in metadata `psp_opts`)."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"pSp/e4e checkpoint {str(path)!r} does not exist")
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            flat = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        opts = json.loads(meta.get("psp_opts", "{}"))
        enc, dec = split_psp_state(flat)
        return PSPCheckpoint(enc, dec, flat.get("latent_avg"), opts)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UnsafeModelFormatError(
            f"{path.name}: not loadable with torch.load(weights_only=True) ({type(e).__name__}: {str(e)[:200]})"
        ) from e
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), Mapping):
        raise ModelError(
            f"{path.name}: expected {{'state_dict', 'opts', 'latent_avg'}} (a pSp/e4e checkpoint)"
        )
    enc, dec = split_psp_state(obj["state_dict"])
    opts = _plain(obj.get("opts") or {})
    return PSPCheckpoint(enc, dec, obj.get("latent_avg"), opts if isinstance(opts, dict) else {})


def save_psp_safetensors(path: str | Path, ckpt: PSPCheckpoint) -> Path:
    """Write a checkpoint as safetensors (`encoder.*`, `decoder.*`, `latent_avg`; opts as JSON metadata)."""
    from safetensors.torch import save_file

    flat = {f"encoder.{k}": v.detach().contiguous().clone() for k, v in ckpt.encoder.items()}
    flat.update({f"decoder.{k}": v.detach().contiguous().clone() for k, v in ckpt.decoder.items()})
    if ckpt.latent_avg is not None:
        flat["latent_avg"] = ckpt.latent_avg.detach().contiguous().clone()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        flat, str(path), metadata={"format": "toonbooth-psp", "psp_opts": json.dumps(_plain(ckpt.opts))}
    )
    return path


class PSPInverter(nn.Module):
    """Encoder + `latent_avg`: `encode(image) -> W+` (B, n_styles, style_dim) for images in [-1, 1]."""

    def __init__(
        self,
        encoder: GradualStyleEncoder | Encoder4Editing,
        latent_avg: torch.Tensor | None,
        start_from_latent_avg: bool = True,
    ):
        super().__init__()
        self.encoder = encoder
        n, d = encoder.config.n_styles, encoder.config.style_dim
        avg = torch.zeros(n, d) if latent_avg is None else latent_avg.detach().float().reshape(-1, d)
        if avg.shape[0] not in (1, n):
            raise ModelError(f"latent_avg has {avg.shape[0]} rows; expected 1 or {n}")
        self.register_buffer("latent_avg", avg.expand(n, d).clone())
        self.start_from_latent_avg = start_from_latent_avg and latent_avg is not None

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Resize to the encoder's input size (bilinear, antialiased) and predict the W+ code."""
        size = self.encoder.config.input_size
        if image.ndim != 4 or image.shape[1] != 3:
            raise InputError(
                "image",
                f"expected (B, 3, H, W) in [-1, 1], got shape {tuple(image.shape)}",
                tuple(image.shape),
            )
        if image.shape[-2:] != (size, size):
            image = F.interpolate(
                image, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        codes = self.encoder(image)
        if self.start_from_latent_avg:
            codes = codes + self.latent_avg.unsqueeze(0)
        return codes

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encode(image)


def _strict(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    missing, unexpected = module.load_state_dict(dict(sd), strict=True)
    if missing or unexpected:
        raise ModelError(
            f"{what}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def load_psp(
    path: str | Path,
    kind: EncoderKind | None = None,
    with_decoder: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[PSPInverter, Generator | None]:
    """Build the inverter (and the decoder Generator when the checkpoint has one and `with_decoder`) from
    a pSp/e4e checkpoint; `kind` overrides `opts['encoder_type']`. Everything loads strictly."""
    ckpt = load_psp_checkpoint(path)
    kind = kind or ckpt.kind
    cfg = encoder_config_from_state_dict(ckpt.encoder)
    enc_cls = Encoder4Editing if kind == "e4e" else GradualStyleEncoder
    encoder = enc_cls(cfg)
    _strict(encoder, ckpt.encoder, f"{Path(path).name} encoder")
    start = bool(ckpt.opts.get("start_from_latent_avg", True))
    inverter = PSPInverter(encoder, ckpt.latent_avg, start_from_latent_avg=start).to(device).eval()
    decoder = None
    if with_decoder and ckpt.decoder:
        decoder = Generator(config_from_state_dict(ckpt.decoder))
        _strict(decoder, ckpt.decoder, f"{Path(path).name} decoder")
        decoder = decoder.to(device).eval()
    return inverter, decoder


def load_identity_backbone(path: str | Path, device: str | torch.device = "cpu") -> IdentityBackbone:
    """The IR-SE50 identity network from `model_ir_se50.pth` (weights_only) or a safetensors copy."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"identity network file {str(path)!r} does not exist")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise UnsafeModelFormatError(
                f"{path.name}: not loadable with weights_only=True ({type(e).__name__})"
            ) from e
    if not isinstance(sd, dict) or not looks_like_identity_backbone(set(sd)):
        raise ModelError(f"{path.name}: not an IR-SE50 identity network (model_ir_se50.pth layout)")
    units, depths, use_se, red = _body_config(sd)
    lin_in = int(sd["output_layer.3.weight"].shape[1])
    side = int(round(math.sqrt(lin_in // depths[-1])))
    cfg = EncoderConfig(
        stage_units=units,
        stage_depths=depths,
        input_size=side * 16,
        use_se=use_se,
        se_reduction=red,
        input_nc=int(sd["input_layer.0.weight"].shape[1]),
    )
    net = IdentityBackbone(cfg, embedding=int(sd["output_layer.3.weight"].shape[0]))
    _strict(net, sd, path.name)
    return net.to(device).eval()


def build_encoder(config: EncoderConfig, kind: EncoderKind = "psp") -> GradualStyleEncoder | Encoder4Editing:
    """A fresh (random) encoder of either kind."""
    return (Encoder4Editing if kind == "e4e" else GradualStyleEncoder)(config)


def n_styles_for(size: int) -> int:
    """W+ styles of a generator of `size` px: 2 * log2(size) - 2."""
    return 2 * int(round(math.log2(size))) - 2
