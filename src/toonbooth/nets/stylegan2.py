"""StyleGAN2 generator and discriminator in the rosinality key layout, written for toonbooth in pure torch.

Follows Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020,
https://arxiv.org/abs/1912.04958) as re-implemented in PyTorch by rosinality
(https://github.com/rosinality/stylegan2-pytorch, `model.py`). Module and buffer names match that
repository's state dicts, so its `.pt` files (and files converted by `stylegan2_convert`) load strictly:

- mapping MLP `style.{1..n_mlp}` (EqualLinear, lr multiplier 0.01, leaky-ReLU x sqrt 2; `style.0` is the
  parameter-free PixelNorm);
- `input.input` (1, C4, 4, 4) constant, `conv1` + `to_rgb1` at 4x4;
- `convs.{2k}` upsampling StyledConv (with the `conv.blur.kernel` buffer), `convs.{2k+1}` plain StyledConv and
  `to_rgbs.{k}` (with the `upsample.kernel` buffer) for each resolution 8 ... size;
- `noises.noise_{i}` fixed noise buffers (1, 1, r, r).

The CUDA ops of the reference (`upfirdn2d`, `fused_leaky_relu`) are written here in plain torch (a
depthwise convolution with zero insertion / padding / striding), so everything runs on CPU, CUDA and MPS.

Checkpoint formats read here:
- rosinality `.pt` (`{"g_ema", "latent_avg"}` from its converter, or a training checkpoint with `g`, `d`,
  `g_optim`, `d_optim`, `args` = `argparse.Namespace`, `ada_aug_p`): loaded with
  `torch.load(weights_only=True)` and exactly one extra allowed global, `argparse.Namespace`;
- safetensors in toonbooth's layout: `g_ema.*` (and optionally `g.*`, `d.*`) plus `latent_avg`, or the bare
  generator keys plus `latent_avg` (`save_stylegan2_safetensors` writes the prefixed form).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import InputError, ModelError, ModelNotFoundError, UnsafeModelFormatError

__all__ = [
    "Discriminator",
    "DiscriminatorConfig",
    "Generator",
    "GeneratorConfig",
    "StyleGAN2Weights",
    "config_from_state_dict",
    "convert_rosinality_checkpoint",
    "default_channels",
    "discriminator_config_from_state_dict",
    "generator_state_dict",
    "load_discriminator",
    "load_generator",
    "load_rosinality_checkpoint",
    "load_stylegan2_weights",
    "looks_like_rosinality_discriminator",
    "looks_like_rosinality_generator",
    "make_kernel",
    "save_stylegan2_safetensors",
    "tiny_discriminator",
    "tiny_generator",
    "upfirdn2d",
]

SQRT2 = math.sqrt(2.0)

# ---------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------


def default_channels(size: int, channel_multiplier: int = 2) -> tuple[int, ...]:
    """Channels per resolution 4, 8, ..., `size` of config-f: 512 up to 32 px, then 256, 128, 64, 32, 16
    (times `channel_multiplier`) for 64 ... 1024 px, halving again above that."""
    cm = channel_multiplier
    table = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * cm,
        128: 128 * cm,
        256: 64 * cm,
        512: 32 * cm,
        1024: 16 * cm,
        2048: 8 * cm,
    }
    out = []
    for log_res in range(2, _log2_size(size) + 1):
        out.append(table.get(2**log_res, max(1, 8 * cm // 2 ** (log_res - 11))))
    return tuple(out)


def _log2_size(size: int) -> int:
    log = int(round(math.log2(size))) if size > 0 else 0
    if size < 8 or 2**log != size:
        raise InputError("size", f"StyleGAN2 resolution must be a power of two >= 8, got {size}", size)
    return log


@dataclass(frozen=True)
class GeneratorConfig:
    """Hyper-parameters of a rosinality `Generator(size, style_dim, n_mlp, channel_multiplier)`.

    `channels` overrides the channel table (one entry per resolution 4, 8, ..., size) so tests can build a
    narrow generator with the same key pattern as config-f."""

    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channels: tuple[int, ...] | None = None
    lr_mlp: float = 0.01
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)

    def __post_init__(self) -> None:
        _log2_size(self.size)
        if self.channels is not None and len(self.channels) != self.log_size - 1:
            raise InputError(
                "channels",
                f"expected {self.log_size - 1} entries (resolutions 4..{self.size}), got {len(self.channels)}",
                self.channels,
            )

    @property
    def log_size(self) -> int:
        return _log2_size(self.size)

    @property
    def n_latent(self) -> int:
        """Number of W+ style vectors: 2 * log2(size) - 2 (18 at 1024 px)."""
        return self.log_size * 2 - 2

    @property
    def num_layers(self) -> int:
        """Number of noise inputs / styled convs: 2 * (log2(size) - 2) + 1."""
        return (self.log_size - 2) * 2 + 1

    def channel_table(self) -> dict[int, int]:
        chans = self.channels or default_channels(self.size, self.channel_multiplier)
        return {2 ** (i + 2): int(c) for i, c in enumerate(chans)}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GeneratorConfig:
        raw = json.loads(text)
        raw["channels"] = tuple(raw["channels"]) if raw.get("channels") else None
        raw["blur_kernel"] = tuple(raw.get("blur_kernel", (1, 3, 3, 1)))
        return cls(**raw)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Hyper-parameters of a rosinality `Discriminator(size, channel_multiplier)` (resnet architecture,
    minibatch-stddev group 4 with 1 feature)."""

    size: int = 1024
    channel_multiplier: int = 2
    channels: tuple[int, ...] | None = None
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)
    stddev_group: int = 4
    stddev_feat: int = 1

    def __post_init__(self) -> None:
        _log2_size(self.size)
        if self.channels is not None and len(self.channels) != self.log_size - 1:
            raise InputError(
                "channels",
                f"expected {self.log_size - 1} entries (resolutions 4..{self.size}), got {len(self.channels)}",
                self.channels,
            )

    @property
    def log_size(self) -> int:
        return _log2_size(self.size)

    def channel_table(self) -> dict[int, int]:
        chans = self.channels or default_channels(self.size, self.channel_multiplier)
        return {2 ** (i + 2): int(c) for i, c in enumerate(chans)}

    @property
    def num_blocks(self) -> int:
        """ResBlocks after the FromRGB layer (`convs.1 .. convs.{n}`), one per halving down to 4x4."""
        return self.log_size - 2


# ---------------------------------------------------------------------------------------------------
# upfirdn2d and the small layers
# ---------------------------------------------------------------------------------------------------


def make_kernel(k: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """A 2-D FIR kernel normalised to sum 1 (the outer product when `k` is 1-D)."""
    t = torch.as_tensor(k, dtype=torch.float32)
    if t.ndim == 1:
        t = t[None, :] * t[:, None]
    return t / t.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), FIR-filter, then downsample by striding.

    `x` is (N, C, H, W); `pad = (before, after)` applies to both axes. The output size is
    `(H * up + before + after - kernel_h + down) // down` (as the reference's native path)."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    out = x.reshape(n * c, 1, h, w)
    if up > 1:
        out = out.reshape(n * c, 1, h, 1, w, 1)
        out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])
        out = out.reshape(n * c, 1, h * up, w * up)
    p0, p1 = pad
    out = F.pad(out, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = out.shape[2], out.shape[3]
        out = out[:, :, max(-p0, 0) : hh - max(-p1, 0), max(-p0, 0) : ww - max(-p1, 0)]
    weight = torch.flip(kernel, [0, 1]).reshape(1, 1, kh, kw).to(dtype=out.dtype, device=out.device)
    out = F.conv2d(out, weight)
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out.reshape(n, c, out.shape[2], out.shape[3])


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2) -> torch.Tensor:
    """Bias add + leaky ReLU + gain sqrt 2 (the reference's `fused_leaky_relu`)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.reshape(shape).to(x.dtype), negative_slope) * SQRT2


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias, leaky ReLU 0.2, gain sqrt 2 (`activate.bias`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class Upsample(nn.Module):
    """x2 FIR upsampling (`kernel` buffer = normalised kernel x factor^2)."""

    def __init__(self, kernel: Sequence[int], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Blur(nn.Module):
    """FIR filter with padding (`kernel` buffer; x factor^2 when it follows a transposed conv)."""

    def __init__(self, kernel: Sequence[int], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor**2
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv2d with the equalised learning rate (weight ~ N(0,1), scaled by 1/sqrt(fan_in) at run time)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size**2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear layer with the equalised learning rate and an optional fused leaky ReLU.

    Weight stored as N(0, 1)/lr_mul and scaled by lr_mul/sqrt(in) at run time; bias scaled by lr_mul."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str | None = None,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = (1.0 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return fused_leaky_relu(out, bias) if bias is not None else F.leaky_relu(out, 0.2) * SQRT2
        return F.linear(x, self.weight * self.scale, bias=bias)


class ModulatedConv2d(nn.Module):
    """Style-modulated conv with weight demodulation, computed as one grouped conv over the batch."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        downsample: bool = False,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
    ):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.upsample, self.downsample, self.demodulate = upsample, downsample, demodulate
        factor = 2
        if upsample:
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_ch, h, w = x.shape
        s = self.modulation(style).reshape(batch, 1, in_ch, 1, 1)
        weight = self.scale * self.weight * s
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.reshape(batch, self.out_ch, 1, 1, 1)
        k = self.kernel_size
        if self.upsample:
            x = x.reshape(1, batch * in_ch, h, w)
            weight = weight.transpose(1, 2).reshape(batch * in_ch, self.out_ch, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = out.reshape(batch, self.out_ch, out.shape[2], out.shape[3])
            return self.blur(out)
        weight = weight.reshape(batch * self.out_ch, in_ch, k, k)
        if self.downsample:
            x = self.blur(x)
            h, w = x.shape[2], x.shape[3]
            out = F.conv2d(x.reshape(1, batch * in_ch, h, w), weight, padding=0, stride=2, groups=batch)
        else:
            out = F.conv2d(x.reshape(1, batch * in_ch, h, w), weight, padding=self.padding, groups=batch)
        return out.reshape(batch, self.out_ch, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    """Adds per-pixel noise scaled by a learned scalar (`noise.weight`, shape (1,))."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = image.shape
            noise = image.new_empty(b, 1, h, w).normal_()
        return image + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
        demodulate: bool = True,
    ):
        super().__init__()
        self.conv = ModulatedConv2d(
            in_ch,
            out_ch,
            kernel_size,
            style_dim,
            demodulate=demodulate,
            upsample=upsample,
            blur_kernel=blur_kernel,
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) + bias, adding the upsampled skip image."""

    def __init__(
        self, in_ch: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[int] = (1, 3, 3, 1)
    ):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# ---------------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------------


class Generator(nn.Module):
    """StyleGAN2 config-f generator (skip outputs) with rosinality's module names."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.size = config.size
        self.style_dim = config.style_dim
        self.n_latent = config.n_latent
        self.num_layers = config.num_layers
        self.log_size = config.log_size
        blur = list(config.blur_kernel)
        ch = config.channel_table()

        layers: list[nn.Module] = [PixelNorm()]
        for _ in range(config.n_mlp):
            layers.append(
                EqualLinear(
                    config.style_dim, config.style_dim, lr_mul=config.lr_mlp, activation="fused_lrelu"
                )
            )
        self.style = nn.Sequential(*layers)

        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, config.style_dim, blur_kernel=blur)
        self.to_rgb1 = ToRGB(ch[4], config.style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, 2**res, 2**res))
        in_ch = ch[4]
        for i in range(3, self.log_size + 1):
            out_ch = ch[2**i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, config.style_dim, upsample=True, blur_kernel=blur))
            self.convs.append(StyledConv(out_ch, out_ch, 3, config.style_dim, blur_kernel=blur))
            self.to_rgbs.append(ToRGB(out_ch, config.style_dim, blur_kernel=blur))
            in_ch = out_ch

    # -- latents ---------------------------------------------------------------------------------

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Map Z (B, style_dim) to W through the mapping network."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of W over `n` random Z samples, shape (1, style_dim) (the truncation centre)."""
        device = self.input.input.device
        z = torch.randn(n, self.style_dim, device=device, generator=generator)
        return self.style(z).mean(0, keepdim=True)

    def make_noise(self, batch: int = 1, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh N(0,1) noise maps for every layer, (batch, 1, r, r)."""
        device = self.input.input.device
        out = []
        for layer_idx in range(self.num_layers):
            r = 2 ** ((layer_idx + 5) // 2)
            out.append(torch.randn(batch, 1, r, r, device=device, generator=generator))
        return out

    def fixed_noise(self) -> list[torch.Tensor]:
        """The stored `noises.noise_i` buffers (what `randomize_noise=False` uses)."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    # -- forward ---------------------------------------------------------------------------------

    def forward(
        self,
        styles: Sequence[torch.Tensor] | torch.Tensor,
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1.0,
        truncation_latent: torch.Tensor | None = None,
        input_is_latent: bool = False,
        noise: Sequence[torch.Tensor | None] | None = None,
        randomize_noise: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Synthesise images in [-1, 1] (roughly), shape (B, 3, size, size).

        `styles`: a list of one or two Z (or, with `input_is_latent`, W (B, D) or W+ (B, n_latent, D))
        tensors; two give style mixing at `inject_index` (random in [1, n_latent) when None).
        `truncation` < 1 pulls each style toward `truncation_latent`. `noise`: per-layer noise maps;
        when None, fresh random noise (`randomize_noise`) or the stored buffers.
        Returns `(image, latent)` with the (B, n_latent, D) W+ latent when `return_latents`, else None."""
        if isinstance(styles, torch.Tensor):
            styles = [styles]
        styles = list(styles)
        if not styles or len(styles) > 2:
            raise InputError("styles", f"expected one or two style tensors, got {len(styles)}", len(styles))
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else self.fixed_noise()
        elif len(noise) != self.num_layers:
            raise InputError("noise", f"expected {self.num_layers} noise maps, got {len(noise)}", len(noise))
        if truncation < 1:
            if truncation_latent is None:
                raise InputError("truncation_latent", "needed when truncation < 1 (use mean_latent())", None)
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        if len(styles) == 1:
            s = styles[0]
            latent = s.unsqueeze(1).repeat(1, self.n_latent, 1) if s.ndim < 3 else s
        else:
            if inject_index is None:
                inject_index = int(torch.randint(1, self.n_latent, (1,)).item())
            if not 0 <= inject_index <= self.n_latent:
                raise InputError("inject_index", f"must be in [0, {self.n_latent}]", inject_index)
            a, b = styles
            first = a[:, :inject_index] if a.ndim == 3 else a.unsqueeze(1).repeat(1, inject_index, 1)
            rest = self.n_latent - inject_index
            second = b[:, inject_index:] if b.ndim == 3 else b.unsqueeze(1).repeat(1, rest, 1)
            latent = torch.cat([first, second], 1)
        if latent.shape[1] != self.n_latent:
            raise InputError(
                "styles",
                f"W+ latent must have {self.n_latent} vectors, got {latent.shape[1]}",
                tuple(latent.shape),
            )

        out = self.input(latent.shape[0])
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, noise_up, noise_plain, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs, strict=True
        ):
            out = conv_up(out, latent[:, i], noise=noise_up)
            out = conv(out, latent[:, i + 1], noise=noise_plain)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip, (latent if return_latents else None)


# ---------------------------------------------------------------------------------------------------
# Discriminator
# ---------------------------------------------------------------------------------------------------


class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d + [FusedLeakyReLU]: keys `.0.weight`/`.1.bias`, or with downsampling
    `.0.kernel`/`.1.weight`/`.2.bias`."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
        bias: bool = True,
        activate: bool = True,
    ):
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(
            EqualConv2d(
                in_ch, out_ch, kernel_size, padding=padding, stride=stride, bias=bias and not activate
            )
        )
        if activate:
            layers.append(FusedLeakyReLU(out_ch))
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(
            in_ch, out_ch, 1, downsample=True, activate=False, bias=False, blur_kernel=blur_kernel
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class Discriminator(nn.Module):
    """StyleGAN2 resnet discriminator: `convs.0` FromRGB, `convs.1..n` ResBlocks (highest resolution
    first), minibatch stddev, `final_conv`, `final_linear`."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        blur = list(config.blur_kernel)
        ch = config.channel_table()
        log_size = config.log_size
        convs: list[nn.Module] = [ConvLayer(3, ch[config.size], 1)]
        in_ch = ch[config.size]
        for i in range(log_size, 2, -1):
            out_ch = ch[2 ** (i - 1)]
            convs.append(ResBlock(in_ch, out_ch, blur))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        self.stddev_group = config.stddev_group
        self.stddev_feat = config.stddev_feat
        self.final_conv = ConvLayer(in_ch + 1, ch[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"),
            EqualLinear(ch[4], 1),
        )

    def _group(self, batch: int) -> int:
        group = min(batch, self.stddev_group)
        while batch % group:
            group -= 1
        return group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1) for images (B, 3, size, size)."""
        out = self.convs(x)
        batch, c, h, w = out.shape
        group = self._group(batch)
        f = self.stddev_feat
        std = out.reshape(group, -1, f, c // f, h, w)
        std = torch.sqrt(std.var(0, unbiased=False) + 1e-8)
        std = std.mean([2, 3, 4], keepdim=True).squeeze(2)
        std = std.repeat(group, 1, h, w)
        out = self.final_conv(torch.cat([out, std], 1))
        return self.final_linear(out.reshape(batch, -1))


# ---------------------------------------------------------------------------------------------------
# Key layouts, config inference
# ---------------------------------------------------------------------------------------------------

_G_REQUIRED = ("input.input", "conv1.conv.weight", "to_rgb1.conv.weight", "style.1.weight")
_D_REQUIRED = ("convs.0.0.weight", "final_conv.0.weight", "final_linear.0.weight", "final_linear.1.weight")


def _strip(keys: set[str] | Mapping[str, Any], prefix: str) -> set[str]:
    return {k[len(prefix) :] for k in keys if k.startswith(prefix)}


def looks_like_rosinality_generator(keys: set[str]) -> bool:
    """True for a rosinality generator state dict: bare keys, or under `g_ema.` / `g.`. (A pSp/e4e checkpoint
    keeps one under `decoder.` next to `encoder.*`: that is `psp.looks_like_psp_encoder`'s.)"""
    keys = set(keys)
    for prefix in ("", "g_ema.", "g."):
        sub = keys if not prefix else _strip(keys, prefix)
        if all(k in sub for k in _G_REQUIRED):
            return True
    return False


def looks_like_rosinality_discriminator(keys: set[str]) -> bool:
    """True for a rosinality discriminator state dict (bare keys or under `d.`)."""
    keys = set(keys)
    return any(all(k in sub for k in _D_REQUIRED) for sub in (keys, _strip(keys, "d.")))


def generator_state_dict(
    state: Mapping[str, torch.Tensor], prefix: str | None = None
) -> dict[str, torch.Tensor]:
    """The bare generator keys of `state`: those under `prefix` (default: `g_ema.`, then `decoder.`, then
    the bare keys themselves, dropping `latent_avg` and `g.`/`d.` entries)."""
    prefixes = [prefix] if prefix is not None else ["g_ema.", "decoder."]
    for p in prefixes:
        sub = {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}
        if sub:
            return sub
    if prefix is not None:
        raise ModelError(f"no generator weights under `{prefix}` in this state dict")
    return {k: v for k, v in state.items() if k != "latent_avg" and not k.startswith(("g.", "d.", "g_ema."))}


def config_from_state_dict(state: Mapping[str, torch.Tensor]) -> GeneratorConfig:
    """Read size, style_dim, n_mlp and the channel table off a rosinality generator state dict
    (bare keys or under `g_ema.`/`decoder.`). `lr_mlp` is not stored in weights: 0.01 is assumed."""
    sd = generator_state_dict(state)
    missing = [k for k in _G_REQUIRED if k not in sd]
    if missing:
        raise ModelError(f"not a rosinality StyleGAN2 generator: missing {missing}")
    style_idx = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    n_mlp = len(style_idx)
    if style_idx != list(range(1, n_mlp + 1)):
        raise ModelError(f"mapping layers are not style.1..style.{n_mlp}: {style_idx}")
    style_dim = int(sd["style.1.weight"].shape[1])
    n_rgbs = len({m.group(1) for k in sd if (m := re.match(r"to_rgbs\.(\d+)\.", k))})
    size = 2 ** (n_rgbs + 2)
    channels = [int(sd["input.input"].shape[1])]
    for k in range(n_rgbs):
        key = f"convs.{2 * k}.conv.weight"
        if key not in sd:
            raise ModelError(f"generator with {n_rgbs} to_rgbs is missing `{key}`")
        channels.append(int(sd[key].shape[1]))
    channels_t = tuple(channels)
    cm = next((m for m in (2, 1, 4) if default_channels(size, m) == channels_t), None)
    return GeneratorConfig(
        size=size,
        style_dim=style_dim,
        n_mlp=n_mlp,
        channel_multiplier=cm or 2,
        channels=None if cm else channels_t,
    )


def discriminator_config_from_state_dict(state: Mapping[str, torch.Tensor]) -> DiscriminatorConfig:
    """Size and channel table of a rosinality discriminator state dict (bare or under `d.`)."""
    sd = {k[2:]: v for k, v in state.items() if k.startswith("d.")} or dict(state)
    missing = [k for k in _D_REQUIRED if k not in sd]
    if missing:
        raise ModelError(f"not a rosinality StyleGAN2 discriminator: missing {missing}")
    n_blocks = len({m.group(1) for k in sd if (m := re.match(r"convs\.(\d+)\.conv1\.", k))})
    size = 2 ** (n_blocks + 2)
    by_res = {size: int(sd["convs.0.0.weight"].shape[0])}
    for b in range(1, n_blocks + 1):
        by_res[size // 2**b] = int(sd[f"convs.{b}.conv2.1.weight"].shape[0])
    channels_t = tuple(by_res[2**i] for i in range(2, n_blocks + 3))
    cm = next((m for m in (2, 1, 4) if default_channels(size, m) == channels_t), None)
    return DiscriminatorConfig(size=size, channel_multiplier=cm or 2, channels=None if cm else channels_t)


def tiny_generator(
    size: int = 32, style_dim: int = 32, n_mlp: int = 2, channels: Sequence[int] | None = None, seed: int = 0
) -> Generator:
    """A narrow random generator for tests: same key pattern as config-f, a few channels."""
    log = _log2_size(size)
    chans = (
        tuple(channels) if channels else tuple(max(8, 32 // 2 ** max(0, i - 3)) for i in range(2, log + 1))
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Generator(GeneratorConfig(size=size, style_dim=style_dim, n_mlp=n_mlp, channels=chans)).eval()


def tiny_discriminator(size: int = 32, channels: Sequence[int] | None = None, seed: int = 0) -> Discriminator:
    """A narrow random discriminator for tests (same key pattern as the 1024-px one)."""
    log = _log2_size(size)
    chans = (
        tuple(channels) if channels else tuple(max(8, 32 // 2 ** max(0, i - 3)) for i in range(2, log + 1))
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Discriminator(DiscriminatorConfig(size=size, channels=chans))


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------


@dataclass
class StyleGAN2Weights:
    """What a StyleGAN2 weights file holds, as state dicts (bare keys)."""

    g_ema: dict[str, torch.Tensor]
    latent_avg: torch.Tensor | None = None
    g: dict[str, torch.Tensor] | None = None
    d: dict[str, torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Other entries of a rosinality training checkpoint (`args` as a dict, `ada_aug_p`, optimizer states)."""


def _check_file(path: Path) -> Path:
    if not path.is_file():
        raise ModelNotFoundError(f"StyleGAN2 weights file {str(path)!r} does not exist")
    return path


def load_rosinality_checkpoint(path: str | Path) -> dict[str, Any]:
    """A rosinality `.pt` as a dict, read with `torch.load(weights_only=True)` allowing exactly one extra
    global, `argparse.Namespace` (the `args` entry of training checkpoints)."""
    path = _check_file(Path(path))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UnsafeModelFormatError(
            f"{path.name}: not loadable with torch.load(weights_only=True) (+ argparse.Namespace): "
            f"{type(e).__name__}: {str(e)[:300]}. NVIDIA .pkl files go through `stylegan2_convert`."
        ) from e
    if not isinstance(obj, dict):
        raise ModelError(f"{path.name}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def load_stylegan2_weights(path: str | Path) -> StyleGAN2Weights:
    """Read a rosinality `.pt`/`.pth` or a toonbooth `.safetensors` StyleGAN2 file (see module docstring)."""
    path = _check_file(Path(path))
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        flat = load_file(str(path), device="cpu")
        latent_avg = flat.get("latent_avg")
        g = {k[2:]: v for k, v in flat.items() if k.startswith("g.")} or None
        d = {k[2:]: v for k, v in flat.items() if k.startswith("d.")} or None
        g_ema = generator_state_dict(flat)
        if not g_ema and g:
            g_ema = dict(g)
        return StyleGAN2Weights(g_ema=g_ema, latent_avg=latent_avg, g=g, d=d)
    if suffix not in (".pt", ".pth"):
        raise ModelError(
            f"{path.name}: unknown StyleGAN2 weights format {suffix!r} (.pt, .pth, .safetensors)"
        )
    obj = load_rosinality_checkpoint(path)
    if "g_ema" in obj or "g" in obj:
        g_ema = obj.get("g_ema") or obj.get("g")
    elif looks_like_rosinality_generator(set(obj)):
        g_ema = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor) and k != "latent_avg"}
    else:
        raise ModelError(
            f"{path.name}: no `g_ema` (or `g`) generator in this checkpoint (keys {sorted(obj)[:8]})"
        )
    extra = {}
    for k, v in obj.items():
        if k in ("g_ema", "g", "d", "latent_avg"):
            continue
        extra[k] = vars(v) if isinstance(v, argparse.Namespace) else v
    return StyleGAN2Weights(
        g_ema=dict(g_ema), latent_avg=obj.get("latent_avg"), g=obj.get("g"), d=obj.get("d"), extra=extra
    )


def load_generator(
    path: str | Path,
    which: str = "g_ema",
    config: GeneratorConfig | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Generator, torch.Tensor | None]:
    """Build a Generator from a weights file (`which` = `g_ema` or `g`), strictly; returns it (eval mode)
    with the file's `latent_avg` (None when the file has none)."""
    w = load_stylegan2_weights(path)
    sd = w.g_ema if which == "g_ema" else w.g
    if sd is None:
        raise ModelError(f"{Path(path).name}: has no `{which}` generator")
    gen = Generator(config or config_from_state_dict(sd))
    _load_strict(gen, sd, f"{Path(path).name} ({which})")
    return gen.to(device).eval(), w.latent_avg


def load_discriminator(
    path: str | Path, config: DiscriminatorConfig | None = None, device: str | torch.device = "cpu"
) -> Discriminator:
    """The discriminator `d` of a weights file, strictly."""
    w = load_stylegan2_weights(path)
    if not w.d:
        raise ModelError(f"{Path(path).name}: has no discriminator (`d`)")
    disc = Discriminator(config or discriminator_config_from_state_dict(w.d))
    _load_strict(disc, w.d, f"{Path(path).name} (d)")
    return disc.to(device)


def _load_strict(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shape = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or bad_shape:
        raise ModelError(
            f"{what}: weights do not match the network: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(bad_shape)} of another shape "
            f"(e.g. {bad_shape[:3]})"
        )
    module.load_state_dict(dict(sd), strict=True)


def _as_state(x: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(x.state_dict()) if isinstance(x, nn.Module) else dict(x)


def save_stylegan2_safetensors(
    path: str | Path,
    g_ema: nn.Module | Mapping[str, torch.Tensor],
    latent_avg: torch.Tensor | None = None,
    g: nn.Module | Mapping[str, torch.Tensor] | None = None,
    d: nn.Module | Mapping[str, torch.Tensor] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write `g_ema.*` (+ `g.*`, `d.*`) and `latent_avg` to one safetensors file. The generator config is
    stored in the metadata (`stylegan2_config`), informative only: loaders infer it from the keys."""
    from safetensors.torch import save_file

    path = Path(path)
    flat: dict[str, torch.Tensor] = {}
    for prefix, part in (("g_ema.", g_ema), ("g.", g), ("d.", d)):
        if part is None:
            continue
        for k, v in _as_state(part).items():
            flat[prefix + k] = v.detach().to("cpu").contiguous().clone()
    if latent_avg is not None:
        flat["latent_avg"] = (
            latent_avg.detach().to("cpu").reshape(-1, latent_avg.shape[-1]).squeeze(0).contiguous()
        )
    meta = {"format": "toonbooth-stylegan2-rosinality"}
    with contextlib.suppress(ModelError):
        meta["stylegan2_config"] = config_from_state_dict(_as_state(g_ema)).to_json()
    meta.update(dict(metadata or {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(flat, str(path), metadata=meta)
    return path


def convert_rosinality_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Rewrite a rosinality `.pt` (read with weights_only + Namespace) as toonbooth safetensors, keeping
    `g_ema`, `g`, `d` and `latent_avg` (optimizer states and `args` are dropped)."""
    w = load_stylegan2_weights(src)
    return save_stylegan2_safetensors(
        dst, w.g_ema, latent_avg=w.latent_avg, g=w.g, d=w.d, metadata={"converted_from": Path(src).name}
    )
