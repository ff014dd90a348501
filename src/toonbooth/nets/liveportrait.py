"""LivePortrait renderer: implicit-keypoint portrait animation, written for toonbooth.

Follows Guo et al., "LivePortrait: Efficient Portrait Animation with Stitching and Retargeting Control"
(arXiv:2407.03168), reference implementation https://github.com/KwaiVGI/LivePortrait (MIT; read at commit
1986663, `src/modules/*.py`, `src/config/models.yaml`, `src/utils/camera.py`, `src/live_portrait_wrapper.py`).
Facts in toonbooth's research notes: studios.md B7 / B9.

Parts (module names = the public checkpoints' key layout, so the released files load strictly):

- F  `AppearanceFeatureExtractor` (`base_models/appearance_feature_extractor.pth`): SameBlock2d, two
  DownBlock2d, 1x1 conv to 512 channels reshaped to a 32 x 16 x H/4 x W/4 volume, six ResBlock3d.
- M  `MotionExtractor` (`motion_extractor.pth`): a ConvNeXtV2 backbone (`detector.*`, tiny = depths
  3-3-9-3, dims 96-192-384-768) with heads `fc_kp` (canonical keypoints, 21 x 3), `fc_pitch/yaw/roll`
  (66 bins each), `fc_t` (3), `fc_exp` (21 x 3 expression deltas), `fc_scale` (1).
- W  `WarpingNetwork` (`warping_module.pth`): `DenseMotionNetwork` (3-D hourglass over keypoint
  Gaussian heatmaps and sparse-motion-deformed features, softmax masks, occlusion map), 3-D grid_sample
  of the feature volume, then `third` / `fourth` 2-D convs.
- G  `SPADEDecoder` (`spade_generator.pth`): SPADE residual blocks with spectral-normalised convs
  (`weight_orig` / `weight_u` / `weight_v`), two x2 upsamplings and a PixelShuffle x2 (256 -> 512).
- S  stitching / lip / eye retargeting MLPs (`retargeting_models/stitching_retargeting_module.pth`,
  a dict `{retarget_shoulder, retarget_mouth, retarget_eye}` of state dicts with a DDP `module.` prefix).

Keypoints: ``x = s * (x_c @ R + exp) + t`` with t's z dropped (paper Eqn. 2); head-pose bins become
degrees by the softmax expectation ``sum(softmax(bins) * idx) * 3 - 97.5``.

Weight files: the original `.pth` files only hold tensors (they load with ``torch.load(weights_only=True)``);
safetensors re-uploads with the same keys (Kijai/LivePortrait_safetensors; the retargeting file flattened
to ``retarget_shoulder_module.mlp.*`` etc.) load too. Every network's width and depth can be set in its
config, so tests build tiny networks with the same key pattern.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import InputError, ModelError, ModelNotFoundError, UnsafeModelFormatError
from ..models.families import ModelFamily

__all__ = [
    "AppearanceConfig",
    "MotionConfig",
    "WarpingConfig",
    "SpadeConfig",
    "MlpConfig",
    "StitchingConfig",
    "LivePortraitConfig",
    "AppearanceFeatureExtractor",
    "MotionExtractor",
    "WarpingNetwork",
    "DenseMotionNetwork",
    "SPADEDecoder",
    "StitchingRetargetingNetwork",
    "StitchingRetargeting",
    "LivePortrait",
    "LivePortraitFiles",
    "headpose_bins_to_degrees",
    "rotation_matrix",
    "refine_kp_info",
    "transform_keypoint",
    "image_to_tensor",
    "tensor_to_image",
    "crop_matrix_from_landmarks68",
    "paste_back",
    "looks_like_appearance_feature_extractor",
    "looks_like_motion_extractor",
    "looks_like_warping_module",
    "looks_like_spade_generator",
    "looks_like_stitching_retargeting",
    "liveportrait_part",
    "read_state_dict",
    "load_appearance_feature_extractor",
    "load_motion_extractor",
    "load_warping_module",
    "load_spade_generator",
    "load_stitching_retargeting",
    "load_liveportrait",
    "save_liveportrait",
    "build_liveportrait",
    "LIVEPORTRAIT_FAMILY",
    "scan_liveportrait",
    "weight_file_keys",
]

# ---------------------------------------------------------------------------------------------------
# Configs (defaults = the public `models.yaml`)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppearanceConfig:
    """F: 2-D encoder to a 3-D feature volume of `reshape_channel` x `reshape_depth` x H/4 x W/4."""

    image_channel: int = 3
    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6

    @classmethod
    def tiny(cls) -> AppearanceConfig:
        return cls(block_expansion=8, max_features=32, reshape_channel=4, reshape_depth=8, num_resblocks=1)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> AppearanceConfig:
        first = _need(sd, "first.conv.weight", "appearance feature extractor")
        second = _need(sd, "second.weight", "appearance feature extractor")
        res = _need(sd, "resblocks_3d.3dr0.conv1.weight", "appearance feature extractor")
        max_features, reshape_channel = int(second.shape[0]), int(res.shape[0])
        return cls(
            image_channel=int(first.shape[1]),
            block_expansion=int(first.shape[0]),
            num_down_blocks=_count(sd, "down_blocks.{}.conv.weight"),
            max_features=max_features,
            reshape_channel=reshape_channel,
            reshape_depth=max_features // reshape_channel,
            num_resblocks=_count(sd, "resblocks_3d.3dr{}.conv1.weight"),
        )


@dataclass(frozen=True)
class MotionConfig:
    """M: ConvNeXtV2 stages and the keypoint / pose / expression heads."""

    in_chans: int = 3
    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)
    num_kp: int = 21
    num_bins: int = 66

    @classmethod
    def tiny(cls, num_kp: int = 21) -> MotionConfig:
        return cls(depths=(1, 1, 1, 1), dims=(8, 16, 16, 32), num_kp=num_kp)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> MotionConfig:
        stem = _need(sd, "detector.downsample_layers.0.0.weight", "motion extractor")
        n_stages = _count(sd, "detector.stages.{}.0.dwconv.weight")
        dims = [int(stem.shape[0])] + [
            int(_need(sd, f"detector.downsample_layers.{i}.1.weight", "motion extractor").shape[0])
            for i in range(1, n_stages)
        ]
        depths = [_count(sd, f"detector.stages.{i}.{{}}.dwconv.weight") for i in range(n_stages)]
        return cls(
            in_chans=int(stem.shape[1]),
            depths=tuple(depths),
            dims=tuple(dims),
            num_kp=int(_need(sd, "detector.fc_kp.weight", "motion extractor").shape[0]) // 3,
            num_bins=int(_need(sd, "detector.fc_pitch.weight", "motion extractor").shape[0]),
        )


@dataclass(frozen=True)
class WarpingConfig:
    """W and its dense-motion network (`dm_*`)."""

    num_kp: int = 21
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    estimate_occlusion_map: bool = True
    dm_block_expansion: int = 32
    dm_max_features: int = 1024
    dm_num_blocks: int = 5
    dm_reshape_depth: int = 16
    dm_compress: int = 4

    @property
    def out_channels(self) -> int:
        return self.block_expansion * 2**self.num_down_blocks

    @classmethod
    def tiny(cls, num_kp: int = 21) -> WarpingConfig:
        return cls(
            num_kp=num_kp,
            block_expansion=8,
            max_features=32,
            reshape_channel=4,
            dm_block_expansion=8,
            dm_max_features=32,
            dm_num_blocks=2,
            dm_reshape_depth=8,
            dm_compress=2,
        )

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> WarpingConfig:
        p = "dense_motion_network."
        what = "warping module"
        mask = _need(sd, p + "mask.weight", what)
        compress = _need(sd, p + "compress.weight", what)
        third = _need(sd, "third.conv.weight", what)
        num_kp = int(mask.shape[0]) - 1
        dm_compress, reshape_channel = int(compress.shape[0]), int(compress.shape[1])
        in_features = (num_kp + 1) * (dm_compress + 1)
        out_filters = int(_need(sd, p + "hourglass.decoder.conv.weight", what).shape[0])
        n_blocks = _count(sd, p + "hourglass.encoder.down_blocks.{}.conv.weight")
        widths = [
            int(sd[f"{p}hourglass.encoder.down_blocks.{i}.conv.weight"].shape[0]) for i in range(n_blocks)
        ]
        occl = sd.get(p + "occlusion.weight")
        out_ch = int(third.shape[0])
        return cls(
            num_kp=num_kp,
            block_expansion=out_ch // 4,
            max_features=int(third.shape[1]),
            num_down_blocks=2,
            reshape_channel=reshape_channel,
            estimate_occlusion_map=occl is not None,
            dm_block_expansion=out_filters - in_features,
            dm_max_features=max(widths),
            dm_num_blocks=n_blocks,
            dm_reshape_depth=int(occl.shape[1]) // out_filters if occl is not None else 16,
            dm_compress=dm_compress,
        )


@dataclass(frozen=True)
class SpadeConfig:
    """G: SPADE decoder; `upscale` > 1 adds the PixelShuffle x2 head (256 -> 512)."""

    upscale: int = 2
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    out_channels: int = 64
    spade_hidden: int = 128
    """Hidden width of every SPADE modulation MLP (fixed at 128 in the public model)."""

    @property
    def input_channels(self) -> int:
        return min(self.max_features, self.block_expansion * 2**self.num_down_blocks)

    @classmethod
    def tiny(cls) -> SpadeConfig:
        return cls(block_expansion=8, max_features=32, out_channels=8, spade_hidden=16)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> SpadeConfig:
        fc = _need(sd, "fc.weight", "SPADE generator")
        cin = int(fc.shape[1])
        return cls(
            upscale=2 if "conv_img.0.weight" in sd else 1,
            block_expansion=cin // 4,
            max_features=cin,
            num_down_blocks=2,
            out_channels=int(_need(sd, "up_1.conv_1.weight_orig", "SPADE generator").shape[0]),
            spade_hidden=int(_need(sd, "G_middle_0.norm_0.mlp_shared.0.weight", "SPADE generator").shape[0]),
        )


@dataclass(frozen=True)
class MlpConfig:
    input_size: int
    hidden_sizes: tuple[int, ...]
    output_size: int


@dataclass(frozen=True)
class StitchingConfig:
    """S: stitching (source + driving keypoints -> keypoint delta + tx, ty), lip and eye retargeting."""

    stitching: MlpConfig = MlpConfig(126, (128, 128, 64), 65)
    lip: MlpConfig = MlpConfig(65, (128, 128, 64), 63)
    eye: MlpConfig = MlpConfig(66, (256, 256, 128, 128, 64), 63)

    @classmethod
    def tiny(cls, num_kp: int = 21) -> StitchingConfig:
        k = 3 * num_kp
        return cls(
            stitching=MlpConfig(2 * k, (16, 8), k + 2),
            lip=MlpConfig(k + 2, (16, 8), k),
            eye=MlpConfig(k + 3, (16, 8), k),
        )

    @classmethod
    def from_state_dicts(cls, parts: dict[str, dict[str, torch.Tensor]]) -> StitchingConfig:
        return cls(**{name: _mlp_config(sd) for name, sd in parts.items()})


@dataclass(frozen=True)
class LivePortraitConfig:
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    warping: WarpingConfig = field(default_factory=WarpingConfig)
    spade: SpadeConfig = field(default_factory=SpadeConfig)
    stitching: StitchingConfig | None = field(default_factory=StitchingConfig)

    @classmethod
    def tiny(cls, num_kp: int = 21) -> LivePortraitConfig:
        """Few-channel networks with the public key pattern (feature volume 4 x 8, 2-block hourglass)."""
        return cls(
            appearance=AppearanceConfig.tiny(),
            motion=MotionConfig.tiny(num_kp),
            warping=WarpingConfig.tiny(num_kp),
            spade=SpadeConfig.tiny(),
            stitching=StitchingConfig.tiny(num_kp),
        )


def _need(sd: dict[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
    try:
        return sd[key]
    except KeyError as e:
        raise ModelError(f"not a LivePortrait {what} state dict: `{key}` is missing") from e


def _count(sd: dict[str, torch.Tensor], pattern: str) -> int:
    n = 0
    while pattern.format(n) in sd:
        n += 1
    return n


def _mlp_config(sd: dict[str, torch.Tensor]) -> MlpConfig:
    idx = sorted(int(k.split(".")[1]) for k in sd if k.startswith("mlp.") and k.endswith(".weight"))
    if not idx:
        raise ModelError("not a LivePortrait retargeting MLP state dict: no `mlp.N.weight` keys")
    shapes = [tuple(sd[f"mlp.{i}.weight"].shape) for i in idx]
    return MlpConfig(int(shapes[0][1]), tuple(int(s[0]) for s in shapes[:-1]), int(shapes[-1][0]))


# ---------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------


class SameBlock2d(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU (or LeakyReLU), resolution kept."""

    def __init__(self, cin: int, cout: int, lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm2d(cout, affine=True)
        self.ac = nn.LeakyReLU() if lrelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> 2x2 average pooling."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm2d(cout, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class ResBlock3d(nn.Module):
    """Pre-activation 3-D residual block (BN -> ReLU -> conv, twice)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels, affine=True)
        self.norm2 = nn.BatchNorm3d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(h)))


class DownBlock3d(nn.Module):
    """conv 3x3x3 -> BN -> ReLU -> average pooling over (H, W) only."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm3d(cout, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), (1, 2, 2))


class UpBlock3d(nn.Module):
    """nearest x2 upsampling over (H, W) -> conv 3x3x3 -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm3d(cout, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0))
        return F.relu(self.norm(self.conv(x)))


class _HourglassEncoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        widths = [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        ins = [in_features] + widths[:-1]
        self.down_blocks = nn.ModuleList(DownBlock3d(a, b) for a, b in zip(ins, widths, strict=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class _HourglassDecoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            width = min(max_features, block_expansion * 2 ** (i + 1))
            cin = width if i == num_blocks - 1 else 2 * width
            blocks.append(UpBlock3d(cin, min(max_features, block_expansion * 2**i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, 3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1]), strict=True):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3-D U-Net (downsampling H and W only) whose output concatenates the input (skip at full size)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = _HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = _HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def coordinate_grid(d: int, h: int, w: int, ref: torch.Tensor) -> torch.Tensor:
    """(d, h, w, 3) grid of normalised (x, y, z) in [-1, 1] (x right, y down, z inwards)."""

    def axis(n: int) -> torch.Tensor:
        return 2 * (torch.arange(n, dtype=ref.dtype, device=ref.device) / (n - 1)) - 1

    z, y, x = torch.meshgrid(axis(d), axis(h), axis(w), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, d: int, h: int, w: int, variance: float = 0.01) -> torch.Tensor:
    """(B, K, 3) keypoints -> (B, K, d, h, w) Gaussian heatmaps on the normalised grid."""
    grid = coordinate_grid(d, h, w, kp)
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


# ---------------------------------------------------------------------------------------------------
# F: appearance feature extractor
# ---------------------------------------------------------------------------------------------------


class AppearanceFeatureExtractor(nn.Module):
    """Image (B, 3, H, W) in [0, 1] -> feature volume (B, C, D, H/2^n, W/2^n)."""

    def __init__(self, config: AppearanceConfig | None = None):
        super().__init__()
        c = self.config = config or AppearanceConfig()
        if c.reshape_channel * c.reshape_depth != c.max_features:
            raise InputError(
                "config",
                f"reshape_channel x reshape_depth must equal max_features, got {c.reshape_channel} x "
                f"{c.reshape_depth} != {c.max_features}",
                c,
            )
        self.first = SameBlock2d(c.image_channel, c.block_expansion)
        widths = [min(c.max_features, c.block_expansion * 2**i) for i in range(c.num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.second = nn.Conv2d(widths[-1], c.max_features, 1)
        self.resblocks_3d = nn.Sequential(
            OrderedDict((f"3dr{i}", ResBlock3d(c.reshape_channel)) for i in range(c.num_resblocks))
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.first(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        b, _, h, w = x.shape
        return self.resblocks_3d(x.view(b, self.config.reshape_channel, self.config.reshape_depth, h, w))


# ---------------------------------------------------------------------------------------------------
# M: motion extractor (ConvNeXtV2 backbone + heads)
# ---------------------------------------------------------------------------------------------------


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt V2) on channels-last tensors."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Depthwise 7x7 conv -> LayerNorm -> 4x MLP with GELU and GRN, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).permute(0, 2, 3, 1)
        h = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(h)))))
        return x + h.permute(0, 3, 1, 2)


class ConvNeXtV2Keypoints(nn.Module):
    """ConvNeXtV2 backbone with LivePortrait's implicit-keypoint heads; returns raw head outputs."""

    def __init__(self, config: MotionConfig):
        super().__init__()
        c = config
        if len(c.dims) != len(c.depths):
            raise InputError("config", f"dims and depths differ in length: {c.dims} vs {c.depths}", c)
        layers = [
            nn.Sequential(nn.Conv2d(c.in_chans, c.dims[0], 4, stride=4), ChannelsFirstLayerNorm(c.dims[0]))
        ]
        for i in range(len(c.dims) - 1):
            layers.append(
                nn.Sequential(
                    ChannelsFirstLayerNorm(c.dims[i]), nn.Conv2d(c.dims[i], c.dims[i + 1], 2, stride=2)
                )
            )
        self.downsample_layers = nn.ModuleList(layers)
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtV2Block(dim) for _ in range(depth)])
            for dim, depth in zip(c.dims, c.depths, strict=True)
        )
        d = c.dims[-1]
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.fc_kp = nn.Linear(d, 3 * c.num_kp)
        self.fc_scale = nn.Linear(d, 1)
        self.fc_pitch = nn.Linear(d, c.num_bins)
        self.fc_yaw = nn.Linear(d, c.num_bins)
        self.fc_roll = nn.Linear(d, c.num_bins)
        self.fc_t = nn.Linear(d, 3)
        self.fc_exp = nn.Linear(d, 3 * c.num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        feat = self.norm(x.mean(dim=(-2, -1)))
        return {
            "pitch": self.fc_pitch(feat),
            "yaw": self.fc_yaw(feat),
            "roll": self.fc_roll(feat),
            "t": self.fc_t(feat),
            "exp": self.fc_exp(feat),
            "scale": self.fc_scale(feat),
            "kp": self.fc_kp(feat),
        }


class MotionExtractor(nn.Module):
    """Image (B, 3, H, W) in [0, 1] -> raw head outputs (pose bins, t, exp, scale, canonical kp)."""

    def __init__(self, config: MotionConfig | None = None):
        super().__init__()
        self.config = config or MotionConfig()
        self.detector = ConvNeXtV2Keypoints(self.config)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector(image)


# ---------------------------------------------------------------------------------------------------
# W: warping network with dense motion
# ---------------------------------------------------------------------------------------------------


class DenseMotionNetwork(nn.Module):
    """Dense 3-D flow (and occlusion map) from source / driving keypoints over a feature volume."""

    def __init__(self, config: WarpingConfig):
        super().__init__()
        c = config
        self.num_kp = c.num_kp
        in_features = (c.num_kp + 1) * (c.dm_compress + 1)
        self.hourglass = Hourglass(c.dm_block_expansion, in_features, c.dm_num_blocks, c.dm_max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, c.num_kp + 1, 7, padding=3)
        self.compress = nn.Conv3d(c.reshape_channel, c.dm_compress, 1)
        self.norm = nn.BatchNorm3d(c.dm_compress, affine=True)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * c.dm_reshape_depth, 1, 7, padding=3)
            if c.estimate_occlusion_map
            else None
        )

    def sparse_motions(self, shape: tuple[int, int, int], kp_driving: torch.Tensor, kp_source: torch.Tensor):
        """(B, K+1, d, h, w, 3): identity (background) plus one translation per keypoint, driving -> source."""
        d, h, w = shape
        b = kp_source.shape[0]
        grid = coordinate_grid(d, h, w, kp_source).view(1, 1, d, h, w, 3)
        per_kp = (
            grid - kp_driving.view(b, self.num_kp, 1, 1, 1, 3) + kp_source.view(b, self.num_kp, 1, 1, 1, 3)
        )
        return torch.cat([grid.expand(b, 1, d, h, w, 3), per_kp], dim=1)

    def forward(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        b, _, d, h, w = feature.shape
        k1 = self.num_kp + 1
        feat = F.relu(self.norm(self.compress(feature)))  # (B, c, d, h, w)
        motions = self.sparse_motions((d, h, w), kp_driving, kp_source)
        rep = feat.unsqueeze(1).expand(b, k1, *feat.shape[1:]).reshape(b * k1, -1, d, h, w)
        deformed = F.grid_sample(rep, motions.reshape(b * k1, d, h, w, 3), align_corners=False)
        deformed = deformed.view(b, k1, -1, d, h, w)
        heat = keypoint_gaussians(kp_driving, d, h, w) - keypoint_gaussians(kp_source, d, h, w)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2)
        prediction = self.hourglass(torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w))
        mask = F.softmax(self.mask(prediction), dim=1)
        deformation = (
            (motions.permute(0, 1, 5, 2, 3, 4) * mask.unsqueeze(2)).sum(dim=1).permute(0, 2, 3, 4, 1)
        )
        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return out


class WarpingNetwork(nn.Module):
    """Warps the source feature volume to the driving keypoints; output (B, C_out, h, w) for the decoder."""

    def __init__(self, config: WarpingConfig | None = None, use_occlusion_map: bool = True):
        super().__init__()
        c = self.config = config or WarpingConfig()
        self.use_occlusion_map = use_occlusion_map
        self.dense_motion_network = DenseMotionNetwork(c)
        self.third = SameBlock2d(c.max_features, c.out_channels, lrelu=True)
        self.fourth = nn.Conv2d(c.out_channels, c.out_channels, 1)

    def forward(
        self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        dense = self.dense_motion_network(feature_3d, kp_driving=kp_driving, kp_source=kp_source)
        deformation = dense["deformation"]
        out = F.grid_sample(feature_3d, deformation, align_corners=False)
        b, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(b, c * d, h, w)))
        occlusion = dense.get("occlusion_map")
        if self.use_occlusion_map and occlusion is not None:
            out = out * occlusion
        return {"out": out, "deformation": deformation, "occlusion_map": occlusion}


# ---------------------------------------------------------------------------------------------------
# G: SPADE decoder
# ---------------------------------------------------------------------------------------------------


class SPADE(nn.Module):
    """Parameter-free instance norm modulated by a conv MLP of the (resized) conditioning map."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128):
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, 3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        actv = self.mlp_shared(F.interpolate(segmap, size=x.shape[2:], mode="nearest"))
        return self.param_free_norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """SPADE residual block with spectral-normalised convs (keys `conv_*.weight_orig/_u/_v`)."""

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int = 128):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        sn = nn.utils.spectral_norm
        self.conv_0 = sn(nn.Conv2d(fin, fmid, 3, padding=1))
        self.conv_1 = sn(nn.Conv2d(fmid, fout, 3, padding=1))
        if self.learned_shortcut:
            self.conv_s = sn(nn.Conv2d(fin, fout, 1, bias=False))
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmid, label_nc, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return skip + dx


class SPADEDecoder(nn.Module):
    """Warped features (B, C, h, w) -> RGB (B, 3, 4h, 4w) in [0, 1], or 8h x 8w with `upscale` 2."""

    def __init__(self, config: SpadeConfig | None = None):
        super().__init__()
        c = self.config = config or SpadeConfig()
        cin, hid = c.input_channels, c.spade_hidden
        self.fc = nn.Conv2d(cin, 2 * cin, 3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResnetBlock(2 * cin, 2 * cin, cin, hid))
        self.up_0 = SPADEResnetBlock(2 * cin, cin, cin, hid)
        self.up_1 = SPADEResnetBlock(cin, c.out_channels, cin, hid)
        if c.upscale is None or c.upscale <= 1:
            self.conv_img = nn.Conv2d(c.out_channels, 3, 3, padding=1)
        else:
            self.conv_img = nn.Sequential(nn.Conv2d(c.out_channels, 3 * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        seg = feature
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2.0), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2.0), seg)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


# ---------------------------------------------------------------------------------------------------
# S: stitching and retargeting MLPs
# ---------------------------------------------------------------------------------------------------


class StitchingRetargetingNetwork(nn.Module):
    """Plain MLP (Linear + ReLU ..., Linear) under `mlp.*`."""

    def __init__(self, config: MlpConfig):
        super().__init__()
        sizes = [config.input_size, *config.hidden_sizes]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], config.output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


# public checkpoint entry -> our attribute
_STITCH_PARTS = {"retarget_shoulder": "stitching", "retarget_mouth": "lip", "retarget_eye": "eye"}


class StitchingRetargeting(nn.Module):
    """The three MLPs: `stitching` (public `retarget_shoulder`), `lip` (`retarget_mouth`), `eye`."""

    def __init__(self, config: StitchingConfig | None = None):
        super().__init__()
        c = self.config = config or StitchingConfig()
        self.stitching = StitchingRetargetingNetwork(c.stitching)
        self.lip = StitchingRetargetingNetwork(c.lip)
        self.eye = StitchingRetargetingNetwork(c.eye)

    def stitch(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """Driving keypoints corrected so the animated crop pastes back seamlessly: the MLP's first 3K
        outputs are added to the keypoints, the last two to their x and y."""
        b, k = kp_source.shape[:2]
        delta = self.stitching(torch.cat([kp_source.reshape(b, -1), kp_driving.reshape(b, -1)], dim=1))
        out = kp_driving + delta[:, : 3 * k].reshape(b, k, 3)
        return torch.cat([out[..., :2] + delta[:, 3 * k : 3 * k + 2].reshape(b, 1, 2), out[..., 2:]], dim=-1)

    def retarget_lip(self, kp_source: torch.Tensor, lip_ratio: torch.Tensor) -> torch.Tensor:
        """Keypoint delta (B, K, 3) from source keypoints and [source, target] lip-open ratios (B, 2)."""
        b, k = kp_source.shape[:2]
        return self.lip(torch.cat([kp_source.reshape(b, -1), lip_ratio], dim=1)).reshape(b, k, 3)

    def retarget_eye(self, kp_source: torch.Tensor, eye_ratio: torch.Tensor) -> torch.Tensor:
        """Keypoint delta (B, K, 3) from source keypoints and eye-open ratios (B, 3)."""
        b, k = kp_source.shape[:2]
        return self.eye(torch.cat([kp_source.reshape(b, -1), eye_ratio], dim=1)).reshape(b, k, 3)

    def public_state_dict(self) -> dict[str, OrderedDict]:
        """The public `.pth` layout: `{retarget_shoulder: {module.mlp.N.*}, retarget_mouth: ..., ...}`."""
        out: dict[str, OrderedDict] = {}
        for public, ours in _STITCH_PARTS.items():
            sd = getattr(self, ours).state_dict()
            out[public] = OrderedDict((f"module.{k}", v) for k, v in sd.items())
        return out


# ---------------------------------------------------------------------------------------------------
# Keypoint maths
# ---------------------------------------------------------------------------------------------------


def headpose_bins_to_degrees(
    pred: torch.Tensor, bin_width: float = 3.0, offset: float = 97.5
) -> torch.Tensor:
    """Pose logits (B, n_bins) -> degrees (B,) as the softmax expectation ``sum(p_i * i) * 3 - 97.5``.

    Tensors that are not (B, n_bins > 1) logits are taken as degrees already and returned flattened to (B,).
    """
    if pred.ndim == 2 and pred.shape[1] > 1:
        idx = torch.arange(pred.shape[1], dtype=pred.dtype, device=pred.device)
        return (F.softmax(pred, dim=1) * idx).sum(dim=1) * bin_width - offset
    return pred.reshape(pred.shape[0])


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (B,) or (B, 1) -> (B, 3, 3), the transpose of ``Rz(roll) @ Ry(yaw) @ Rx(pitch)``: keypoints
    are row vectors rotated as ``x @ R``."""
    p, y, r = (torch.as_tensor(a).reshape(-1) * (math.pi / 180.0) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    rx = mat([[one, zero, zero], [zero, p.cos(), -p.sin()], [zero, p.sin(), p.cos()]])
    ry = mat([[y.cos(), zero, y.sin()], [zero, one, zero], [-y.sin(), zero, y.cos()]])
    rz = mat([[r.cos(), -r.sin(), zero], [r.sin(), r.cos(), zero], [zero, zero, one]])
    return (rz @ ry @ rx).transpose(1, 2)


def refine_kp_info(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Motion-extractor output -> pose in degrees (B, 1), `kp` and `exp` as (B, K, 3)."""
    b = raw["kp"].shape[0]
    out = dict(raw)
    for k in ("pitch", "yaw", "roll"):
        out[k] = headpose_bins_to_degrees(raw[k])[:, None]
    out["kp"] = raw["kp"].reshape(b, -1, 3)
    out["exp"] = raw["exp"].reshape(b, -1, 3)
    return out


def transform_keypoint(kp_info: dict[str, torch.Tensor]) -> torch.Tensor:
    """Implicit keypoints ``s * (x_c @ R + exp) + t`` (B, K, 3), with t's z ignored (paper Eqn. 2).

    `kp_info` holds `kp` (canonical, (B, K, 3) or (B, 3K)), `pitch`/`yaw`/`roll` (bin logits or degrees),
    `exp` ((B, K, 3) or (B, 3K)), `scale` (B, 1) and `t` (B, 3).
    """
    kp = kp_info["kp"]
    b = kp.shape[0]
    kp = kp.reshape(b, -1, 3)
    k = kp.shape[1]
    rot = rotation_matrix(*(headpose_bins_to_degrees(kp_info[n]) for n in ("pitch", "yaw", "roll")))
    x = kp @ rot.to(kp.dtype) + kp_info["exp"].reshape(b, k, 3)
    x = x * kp_info["scale"].reshape(b, 1, 1)
    t = kp_info["t"].reshape(b, 3)
    return torch.cat([x[..., :2] + t[:, None, :2], x[..., 2:]], dim=-1)


# ---------------------------------------------------------------------------------------------------
# The renderer
# ---------------------------------------------------------------------------------------------------


class LivePortrait(nn.Module):
    """F, M, W, G and (optionally) S together; inputs are (B, 3, H, W) images in [0, 1]."""

    def __init__(self, config: LivePortraitConfig | None = None):
        super().__init__()
        c = self.config = config or LivePortraitConfig()
        if c.warping.out_channels != c.spade.input_channels:
            raise InputError(
                "config",
                f"warping output channels ({c.warping.out_channels}) must equal the decoder input channels "
                f"({c.spade.input_channels})",
                c,
            )
        self.appearance_feature_extractor = AppearanceFeatureExtractor(c.appearance)
        self.motion_extractor = MotionExtractor(c.motion)
        self.warping_module = WarpingNetwork(c.warping)
        self.spade_generator = SPADEDecoder(c.spade)
        self.stitching_retargeting_module = StitchingRetargeting(c.stitching) if c.stitching else None

    @classmethod
    def from_parts(
        cls,
        appearance_feature_extractor: AppearanceFeatureExtractor,
        motion_extractor: MotionExtractor,
        warping_module: WarpingNetwork,
        spade_generator: SPADEDecoder,
        stitching_retargeting_module: StitchingRetargeting | None = None,
    ) -> LivePortrait:
        """A renderer around already built (e.g. loaded) networks; their configs must fit together."""
        s = stitching_retargeting_module
        config = LivePortraitConfig(
            appearance_feature_extractor.config,
            motion_extractor.config,
            warping_module.config,
            spade_generator.config,
            s.config if s is not None else None,
        )
        if warping_module.config.out_channels != spade_generator.config.input_channels:
            raise ModelError(
                f"warping module output ({warping_module.config.out_channels} ch) does not feed the SPADE "
                f"generator ({spade_generator.config.input_channels} ch)"
            )
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.config = config
        model.appearance_feature_extractor = appearance_feature_extractor
        model.motion_extractor = motion_extractor
        model.warping_module = warping_module
        model.spade_generator = spade_generator
        model.stitching_retargeting_module = s
        return model

    @torch.no_grad()
    def extract_feature_3d(self, image: torch.Tensor) -> torch.Tensor:
        """F(image): the source feature volume."""
        return self.appearance_feature_extractor(image).float()

    @torch.no_grad()
    def get_kp_info(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """M(image), refined: pose in degrees (B, 1), `kp`/`exp` (B, K, 3), `t` (B, 3), `scale` (B, 1)."""
        return refine_kp_info({k: v.float() for k, v in self.motion_extractor(image).items()})

    @torch.no_grad()
    def stitch(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """Stitching correction of the driving keypoints (identity when S is absent)."""
        if self.stitching_retargeting_module is None:
            return kp_driving
        return self.stitching_retargeting_module.stitch(kp_source, kp_driving)

    @torch.no_grad()
    def warp_decode(
        self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        """G(W(f_s; x_s, x_d)): `out` RGB in [0, 1], plus `deformation` and `occlusion_map`."""
        ret = self.warping_module(feature_3d, kp_driving=kp_driving, kp_source=kp_source)
        ret["out"] = self.spade_generator(ret["out"])
        return ret

    @torch.no_grad()
    def animate(
        self,
        feature_3d: torch.Tensor,
        kp_source: torch.Tensor,
        kp_driving: torch.Tensor,
        batch_size: int = 4,
        stitch: bool = True,
    ) -> Iterator[np.ndarray]:
        """Rendered frames (H, W, 3) uint8 for driving keypoints (T, K, 3), `batch_size` at a time, each
        stitched to the source first (when S is loaded and `stitch`). Stop iterating to cancel."""
        for i in range(0, kp_driving.shape[0], batch_size):
            x_d = kp_driving[i : i + batch_size]
            b = x_d.shape[0]
            x_s = kp_source.expand(b, -1, -1)
            if stitch:
                x_d = self.stitch(x_s, x_d)
            out = self.warp_decode(feature_3d.expand(b, -1, -1, -1, -1), x_s, x_d)["out"]
            yield from tensor_to_image(out)


def build_liveportrait(config: LivePortraitConfig | None = None, seed: int | None = None) -> LivePortrait:
    """A renderer with fresh (PyTorch-default, optionally seeded) random weights, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return LivePortrait(config).eval()


# ---------------------------------------------------------------------------------------------------
# Images and the crop
# ---------------------------------------------------------------------------------------------------


def image_to_tensor(rgb: np.ndarray, size: int | None = 256) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, size, size) float in [0, 1] (antialiased resize when needed)."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise InputError(
            "image", f"expected an RGB uint8 array (H, W, 3), got {arr.dtype} {arr.shape}", arr.shape
        )
    x = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1)[None].float() / 255.0
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0)


def tensor_to_image(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) or (3, H, W) in [0, 1] -> uint8 (B, H, W, 3) or (H, W, 3)."""
    arr = x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    return (arr.permute(0, 2, 3, 1) if arr.ndim == 4 else arr.permute(1, 2, 0)).numpy()


def crop_matrix_from_landmarks68(
    landmarks: np.ndarray,
    dsize: int = 512,
    scale: float = 2.3,
    vx_ratio: float = 0.0,
    vy_ratio: float = -0.125,
) -> np.ndarray:
    """2x3 affine (image -> square crop of side `dsize`) LivePortrait takes its source crop with, from
    68-point landmarks (x, y): the crop axis runs from the eye centre to the mouth centre (roll removed);
    its side is `scale` times the landmarks' extent in that frame, shifted by `vy_ratio` x side along it
    (negative = towards the forehead). Defaults: LivePortrait's `crop_config.py`."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2):
        raise InputError("landmarks", f"expected 68 (x, y) points, got shape {pts.shape}", pts.shape)
    eye = pts[[36, 39, 42, 45]].mean(axis=0)
    mouth = pts[[48, 54]].mean(axis=0)
    uy = mouth - eye
    n = np.linalg.norm(uy)
    uy = uy / n if n > 1e-3 else np.array([0.0, 1.0])
    ux = np.array([uy[1], -uy[0]])
    rot = np.stack([ux, uy])
    c0 = pts.mean(axis=0)
    local = (pts - c0) @ rot.T
    lo, hi = local.min(axis=0), local.max(axis=0)
    side = float((hi - lo).max()) * scale
    centre = c0 + rot.T @ ((lo + hi) / 2) + ux * (vx_ratio * side) + uy * (vy_ratio * side)
    s = dsize / side
    # rows: crop x along ux, crop y along uy, centred at dsize / 2
    m = np.zeros((2, 3))
    m[0, :2], m[1, :2] = s * ux, s * uy
    m[:, 2] = dsize / 2 - m[:, :2] @ centre
    return m


def paste_back(
    crop: np.ndarray, crop_matrix: np.ndarray, image: np.ndarray, feather: float = 0.08
) -> np.ndarray:
    """The animated crop put back into the full image: warped with the inverse of `crop_matrix`
    (image -> crop, 2x3) and blended through a mask that fades out over `feather` x crop side at the
    crop's border. `image` may be RGB or RGBA (alpha kept)."""
    import cv2

    crop = np.asarray(crop)
    img = np.asarray(image)
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise InputError("crop", f"expected an RGB uint8 crop, got {crop.dtype} {crop.shape}", crop.shape)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise InputError("image", f"expected an RGB(A) uint8 image, got {img.dtype} {img.shape}", img.shape)
    h, w = img.shape[:2]
    side = crop.shape[0]
    m = np.vstack([np.asarray(crop_matrix, np.float64), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)[:2]
    ramp = np.clip(np.minimum(np.arange(side), side - 1 - np.arange(side)) / max(1.0, feather * side), 0, 1)
    mask = (ramp[:, None] * ramp[None, :]).astype(np.float32)
    back = cv2.warpAffine(crop, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(mask, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[
        ..., None
    ]
    out = img.copy()
    rgb = img[..., :3].astype(np.float32)
    out[..., :3] = np.clip(rgb + (back.astype(np.float32) - rgb) * alpha + 0.5, 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------------
# Key-layout checks
# ---------------------------------------------------------------------------------------------------


def looks_like_appearance_feature_extractor(keys: set[str]) -> bool:
    return {"first.conv.weight", "second.weight", "resblocks_3d.3dr0.conv1.weight"} <= keys


def looks_like_motion_extractor(keys: set[str]) -> bool:
    return {
        "detector.fc_kp.weight",
        "detector.fc_pitch.weight",
        "detector.downsample_layers.0.0.weight",
    } <= keys


def looks_like_warping_module(keys: set[str]) -> bool:
    return {"dense_motion_network.mask.weight", "third.conv.weight", "fourth.weight"} <= keys


def looks_like_spade_generator(keys: set[str]) -> bool:
    return {"fc.weight", "G_middle_0.conv_0.weight_orig", "up_1.conv_1.weight_orig"} <= keys


def _stitch_parts(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split a flattened retargeting file (`retarget_shoulder_module.mlp.0.weight`,
    `retarget_shoulder.module.mlp.0.weight`, ...) into our three MLP state dicts."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for public, ours in _STITCH_PARTS.items():
        sub = {}
        for k, v in flat.items():
            if not k.startswith(public):
                continue
            rest = k[len(public) :].lstrip("._")
            if rest.startswith("module."):
                rest = rest[len("module.") :]
            sub[rest] = v
        if sub:
            parts[ours] = sub
    return parts


def looks_like_stitching_retargeting(keys: set[str]) -> bool:
    return all(any(k.startswith(p) and k.endswith("mlp.0.weight") for k in keys) for p in _STITCH_PARTS)


def liveportrait_part(keys: set[str]) -> str | None:
    """Which LivePortrait file a (flattened) key set is: `appearance_feature_extractor`,
    `motion_extractor`, `warping_module`, `spade_generator`, `stitching_retargeting_module` or None."""
    checks = {
        "appearance_feature_extractor": looks_like_appearance_feature_extractor,
        "motion_extractor": looks_like_motion_extractor,
        "warping_module": looks_like_warping_module,
        "spade_generator": looks_like_spade_generator,
        "stitching_retargeting_module": looks_like_stitching_retargeting,
    }
    for name, check in checks.items():
        if check(keys):
            return name
    return None


# ---------------------------------------------------------------------------------------------------
# Loading and saving
# ---------------------------------------------------------------------------------------------------


def _flatten(obj: object, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or of a `.pth`/`.pt` that `torch.load(weights_only=True)` accepts;
    nested dicts (the retargeting file) are flattened with `.`."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"LivePortrait weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise UnsafeModelFormatError(
                f"{path.name}: torch.load(weights_only=True) refused it ({type(e).__name__}); toonbooth does not "
                "unpickle Python objects. Convert it to .safetensors on a trusted machine."
            ) from e
        if not isinstance(obj, dict):
            raise ModelError(f"{path.name}: expected a state dict, got {type(obj).__name__}")
        return _flatten(obj)
    raise ModelError(f"{path.name}: unknown LivePortrait weights format {suffix!r} (.safetensors, .pth)")


def _load_strict(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    bad = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if bad:
        raise ModelError(f"LivePortrait {what}: shape mismatch (file vs network) for {bad[:3]}")
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"LivePortrait {what} weights do not match the network: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def _strip_module(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def load_appearance_feature_extractor(
    path: str | Path, config: AppearanceConfig | None = None
) -> AppearanceFeatureExtractor:
    """F from `appearance_feature_extractor.pth` / `.safetensors` (config read off the weights unless given)."""
    sd = _strip_module(read_state_dict(path))
    if not looks_like_appearance_feature_extractor(set(sd)):
        raise ModelError(f"{Path(path).name} is not a LivePortrait appearance feature extractor")
    model = AppearanceFeatureExtractor(config or AppearanceConfig.from_state_dict(sd))
    _load_strict(model, sd, "appearance feature extractor")
    return model.eval()


def load_motion_extractor(path: str | Path, config: MotionConfig | None = None) -> MotionExtractor:
    """M from `motion_extractor.pth` / `.safetensors`."""
    sd = _strip_module(read_state_dict(path))
    if not looks_like_motion_extractor(set(sd)):
        raise ModelError(f"{Path(path).name} is not a LivePortrait motion extractor")
    model = MotionExtractor(config or MotionConfig.from_state_dict(sd))
    _load_strict(model, sd, "motion extractor")
    return model.eval()


def load_warping_module(path: str | Path, config: WarpingConfig | None = None) -> WarpingNetwork:
    """W from `warping_module.pth` / `.safetensors`."""
    sd = _strip_module(read_state_dict(path))
    if not looks_like_warping_module(set(sd)):
        raise ModelError(f"{Path(path).name} is not a LivePortrait warping module")
    model = WarpingNetwork(config or WarpingConfig.from_state_dict(sd))
    _load_strict(model, sd, "warping module")
    return model.eval()


def load_spade_generator(path: str | Path, config: SpadeConfig | None = None) -> SPADEDecoder:
    """G from `spade_generator.pth` / `.safetensors`."""
    sd = _strip_module(read_state_dict(path))
    if not looks_like_spade_generator(set(sd)):
        raise ModelError(f"{Path(path).name} is not a LivePortrait SPADE generator")
    model = SPADEDecoder(config or SpadeConfig.from_state_dict(sd))
    _load_strict(model, sd, "SPADE generator")
    return model.eval()


def load_stitching_retargeting(
    path: str | Path, config: StitchingConfig | None = None
) -> StitchingRetargeting:
    """S from `stitching_retargeting_module.pth` (nested `{retarget_shoulder: {module.mlp...}}`) or a
    flattened safetensors file (`retarget_shoulder_module.mlp...` and similar)."""
    parts = _stitch_parts(read_state_dict(path))
    if set(parts) != set(_STITCH_PARTS.values()):
        raise ModelError(
            f"{Path(path).name} is not a LivePortrait stitching/retargeting file: expected entries "
            f"{sorted(_STITCH_PARTS)}, found MLPs for {sorted(parts)}"
        )
    model = StitchingRetargeting(config or StitchingConfig.from_state_dicts(parts))
    for name, sd in parts.items():
        _load_strict(getattr(model, name), sd, f"{name} MLP")
    return model.eval()


@dataclass(frozen=True)
class LivePortraitFiles:
    """Paths of the five public files; `stitching` may be None (no stitching / retargeting)."""

    appearance_feature_extractor: Path
    motion_extractor: Path
    warping_module: Path
    spade_generator: Path
    stitching_retargeting_module: Path | None = None

    @classmethod
    def public_layout(cls, root: str | Path, suffix: str = ".pth") -> LivePortraitFiles:
        """The HF KwaiVGI/LivePortrait `liveportrait/` tree: `base_models/*.pth` and
        `retargeting_models/stitching_retargeting_module.pth` (names only; nothing is searched)."""
        r = Path(root)
        b = r / "base_models"
        return cls(
            b / f"appearance_feature_extractor{suffix}",
            b / f"motion_extractor{suffix}",
            b / f"warping_module{suffix}",
            b / f"spade_generator{suffix}",
            r / "retargeting_models" / f"stitching_retargeting_module{suffix}",
        )

    @classmethod
    def flat_layout(cls, root: str | Path, suffix: str = ".safetensors") -> LivePortraitFiles:
        """One folder with the five files side by side (Kijai/LivePortrait_safetensors)."""
        r = Path(root)
        return cls(
            r / f"appearance_feature_extractor{suffix}",
            r / f"motion_extractor{suffix}",
            r / f"warping_module{suffix}",
            r / f"spade_generator{suffix}",
            r / f"stitching_retargeting_module{suffix}",
        )


def load_liveportrait(
    files: LivePortraitFiles, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LivePortrait:
    """The whole renderer from its files; each network's config is read off its weights."""
    f = load_appearance_feature_extractor(files.appearance_feature_extractor)
    m = load_motion_extractor(files.motion_extractor)
    w = load_warping_module(files.warping_module)
    g = load_spade_generator(files.spade_generator)
    s = (
        load_stitching_retargeting(files.stitching_retargeting_module)
        if files.stitching_retargeting_module
        else None
    )
    return LivePortrait.from_parts(f, m, w, g, s).to(device=device, dtype=dtype).eval()


def save_liveportrait(model: LivePortrait, files: LivePortraitFiles) -> None:
    """Write the renderer in the public layout: `.pth` files exactly like the released ones (tensors
    only; the retargeting file nested with `module.` prefixes) or `.safetensors` (the retargeting file
    flattened as `retarget_shoulder_module.mlp.*`)."""
    from safetensors.torch import save_file

    def write(sd: dict[str, torch.Tensor], path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
        if path.suffix.lower() == ".safetensors":
            save_file(sd, str(path))
        else:
            torch.save(OrderedDict(sd), str(path))

    write(model.appearance_feature_extractor.state_dict(), Path(files.appearance_feature_extractor))
    write(model.motion_extractor.state_dict(), Path(files.motion_extractor))
    write(model.warping_module.state_dict(), Path(files.warping_module))
    write(model.spade_generator.state_dict(), Path(files.spade_generator))
    s, target = model.stitching_retargeting_module, files.stitching_retargeting_module
    if s is None or target is None:
        return
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    public = s.public_state_dict()
    if target.suffix.lower() == ".safetensors":
        flat = {f"{p}_{k}": v.detach().cpu().contiguous() for p, sd in public.items() for k, v in sd.items()}
        save_file(flat, str(target))
    else:
        torch.save(
            {p: OrderedDict((k, v.detach().cpu()) for k, v in sd.items()) for p, sd in public.items()},
            str(target),
        )


# ---------------------------------------------------------------------------------------------------
# Model family: <models>/LivePortrait/<set>/ (the registry finds and loads renderers through it)
# ---------------------------------------------------------------------------------------------------

LIVEPORTRAIT_FOLDERS: tuple[str, ...] = ("LivePortrait", "liveportrait")
LIVEPORTRAIT_SUFFIXES: tuple[str, ...] = (".safetensors", ".pth", ".pt")
RENDERER_SETTINGS_FILE = "renderer.json"
"""Optional JSON next to a set's parts: `{"input_size": N}` for a renderer trained at another input size
than the released one (256; the tiny test set uses 32). The released weights have none."""
DEFAULT_INPUT_SIZE = 256
LIVEPORTRAIT_PARTS: tuple[str, ...] = (
    "appearance_feature_extractor",
    "motion_extractor",
    "warping_module",
    "spade_generator",
    "stitching_retargeting_module",
)
_PART_FOLDERS = ("base_models", "retargeting_models")
_KEY_CACHE: dict[tuple[str, int, int], frozenset[str]] = {}


def weight_file_keys(path: str | Path) -> frozenset[str]:
    """Tensor names of a weights file without reading its tensors: the safetensors header, or a
    `torch.load(weights_only=True, mmap=True)` of a `.pth` (legacy non-zip files: a plain weights_only
    load); nested dicts are flattened with `.`. Cached by (path, size, mtime). ModelError /
    UnsafeModelFormatError when the file cannot be read that way."""
    from ..models.probe import read_header

    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key in _KEY_CACHE:
        return _KEY_CACHE[key]
    if p.suffix.lower() == ".safetensors":
        keys = frozenset(read_header(p).shapes)
    else:
        try:
            try:
                obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:
            raise UnsafeModelFormatError(
                f"{p.name}: torch.load(weights_only=True) refused it ({type(e).__name__}); toonbooth does not "
                "unpickle Python objects"
            ) from e
        keys = frozenset(_flatten(obj)) if isinstance(obj, dict) else frozenset()
    _KEY_CACHE[key] = keys
    return keys


def _set_root(file: Path) -> Path:
    """The folder a part belongs to: the parent of `base_models/` / `retargeting_models/` (the public tree),
    else the file's own folder (a flat layout)."""
    return file.parent.parent if file.parent.name in _PART_FOLDERS else file.parent


def read_renderer_settings(root: Path) -> dict[str, int]:
    """`renderer.json` of a set (input size), validated; the released defaults without it."""
    import json

    path = Path(root) / RENDERER_SETTINGS_FILE
    if not path.is_file():
        return {"input_size": DEFAULT_INPUT_SIZE}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not JSON ({e})") from e
    size = data.get("input_size", DEFAULT_INPUT_SIZE) if isinstance(data, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or not 32 <= size <= 1024 or size % 32:
        raise ModelError(f"{path}: `input_size` must be a multiple of 32 in [32, 1024], got {size!r}")
    return {"input_size": size}


def scan_liveportrait(top: Path, folder: str) -> list:
    """One entry per renderer set under `top`: the public tree (`<set>/base_models/*.pth` +
    `<set>/retargeting_models/stitching_retargeting_module.pth`) or a flat folder of the five files. Parts
    are identified by their tensor names (`liveportrait_part`), never by file name; a set without F, M, W
    and G is listed as refused, naming what is missing. A set in `top` itself is called `liveportrait`."""
    from ..models.registry import ModelEntry, walk_files

    groups: dict[Path, dict[str, Path]] = {}
    notes: dict[Path, list[str]] = {}
    rank = {s: i for i, s in enumerate(LIVEPORTRAIT_SUFFIXES)}
    for file in walk_files(top):
        suffix = file.suffix.lower()
        if suffix not in LIVEPORTRAIT_SUFFIXES:
            continue
        root = _set_root(file)
        try:
            part = liveportrait_part(set(weight_file_keys(file)))
        except (ModelError, OSError) as e:
            notes.setdefault(root, []).append(f"{file.name}: {e}")
            continue
        if part is None:
            continue
        have = groups.setdefault(root, {})
        if part not in have or rank[suffix] < rank[have[part].suffix.lower()]:
            have[part] = file  # safetensors preferred over .pth when both are there
    entries = []
    for root, parts in sorted(groups.items()):
        name = "liveportrait" if root == top else root.relative_to(top).as_posix()
        missing = [p for p in LIVEPORTRAIT_PARTS[:4] if p not in parts]
        refused = f"{root}: LivePortrait parts missing: {', '.join(missing)}" if missing else None
        settings: dict[str, int] = {}
        try:
            settings = read_renderer_settings(root)
        except ModelError as e:
            refused = refused or str(e)
        suffixes = {f.suffix.lower() for f in parts.values()}
        details = {
            "parts": {p: f.relative_to(root).as_posix() for p, f in parts.items()},
            "stitching": "stitching_retargeting_module" in parts,
            **settings,
        }
        if notes.get(root):
            details["skipped"] = notes[root]
        entries.append(ModelEntry(
            name=name, path=root, kind="liveportrait", layout="safetensors" if suffixes == {".safetensors"}
            else "pth" if ".safetensors" not in suffixes else "mixed", source="folder", folder=folder,
            relpath=name, size=sum(f.stat().st_size for f in parts.values()), refused=refused, details=details,
        ))  # fmt: skip
    return entries


def load_liveportrait_entry(entry, env) -> LivePortrait:
    """The renderer of a scanned set, in float32 on the manager's device, with `input_size` set."""
    root = Path(entry.location)
    parts = {p: root / rel for p, rel in entry.details.get("parts", {}).items()}
    files = LivePortraitFiles(
        parts["appearance_feature_extractor"],
        parts["motion_extractor"],
        parts["warping_module"],
        parts["spade_generator"],
        parts.get("stitching_retargeting_module"),
    )
    model = load_liveportrait(files, device=env.device, dtype=torch.float32)
    model.input_size = int(entry.details.get("input_size", DEFAULT_INPUT_SIZE))
    return model


LIVEPORTRAIT_FAMILY = ModelFamily(
    kind="liveportrait",
    description="LivePortrait renderer (F, M, W, G + stitching MLPs; .pth weights_only or safetensors)",
    folders=LIVEPORTRAIT_FOLDERS,
    suffixes=("/",),
    scan=scan_liveportrait,
    load=load_liveportrait_entry,
    approx_bytes=520_000_000,  # 130.1 M parameters in float32
    shared_only=True,
    licence_note="LivePortrait: MIT (KwaiVGI/LivePortrait LICENSE); its InsightFace detector is not used.",
)
