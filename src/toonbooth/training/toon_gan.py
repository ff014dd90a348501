"""Fine-tuning a StyleGAN2 generator on a small cartoon set: ADA augmentation, FreezeD, StyleGAN2 losses.

Sources (facts and published constants; the code is toonbooth's own):
- StyleGAN2 training (Karras et al., CVPR 2020, https://arxiv.org/abs/1912.04958; rosinality's
  `train.py`, https://github.com/rosinality/stylegan2-pytorch): non-saturating logistic loss; lazy R1 on
  reals every `d_reg_every` = 16 steps, weighted `r1/2 * d_reg_every` (r1 = 10); lazy path-length
  regularisation every `g_reg_every` = 4 steps on a batch shrunk by 2, weight `2 * g_reg_every`, running
  mean with decay 0.01; Adam lr 0.002 with betas (0, 0.99) and both lr and betas adjusted by the lazy
  ratio `c = every / (every + 1)` (lr*c, betas**c); style mixing with probability 0.9; an EMA copy `g_ema`
  with half-life `ema_kimg` = 10 k images (beta = 0.5 ** (batch / 10 000)).
- ADA (Karras et al., "Training Generative Adversarial Networks with Limited Data", NeurIPS 2020,
  https://github.com/NVlabs/stylegan2-ada-pytorch `training/augment.py`, `training/training_loop.py`):
  the 'bgc' pipeline -- xflip, rotate90, integer translation (0.125), isotropic scale (lognormal, std 0.2),
  rotation (probability 1 - sqrt(1 - p) before and after), anisotropic scale (0.2), fractional
  translation (0.125), brightness (0.2), contrast (lognormal 0.5), luma flip, hue rotation (full circle),
  saturation (lognormal 1) -- each applied per image with probability p, to every image D sees (reals,
  fakes, and fakes in the G loss). Every `ada_interval` = 4 steps, `p += sign(E[sign(D(real))] - 0.6) *
  (images seen) / (ada_kimg * 1000)`, clamped to [0, 1]; `ada_kimg` = 500 (100 for transfer learning).
  Geometric transforms are composed as one inverse 3x3 matrix and applied by a bilinear sampler with
  reflection padding (written here with gathers, so R1's double backward works through it); NVIDIA's
  2x-oversampled anti-aliased resampling is not reproduced.
- FreezeD (Mo et al., "Freeze the Discriminator", https://arxiv.org/abs/2002.10964; ADA `--freezed`):
  the first k entries of `D.convs` (FromRGB, then ResBlocks from the highest resolution) are frozen:
  `requires_grad = False` and kept out of the optimizer.

Resumable: `ToonGanTrainer.state_dict()` returns tensors (G, D, g_ema, both Adam states, the RNG state,
the path-length mean) and JSON (step, ADA p and statistics, config, optimizer hyper-parameters);
`save(dir)` writes `toon_gan.safetensors` + `toon_gan.json`, and a trainer that `load(dir)`s continues
bit-exactly like an uninterrupted run. Every random draw goes through the trainer's own `torch.Generator`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..core.errors import InputError, ModelError
from ..nets.stylegan2 import Discriminator, Generator, save_stylegan2_safetensors
from .dataset import MAX_UPSCALE, check_duplicates

__all__ = [
    "AdaController",
    "AugmentConfig",
    "StepStats",
    "ToonGanConfig",
    "ToonGanTrainer",
    "ada_augment",
    "check_toon_images",
    "d_logistic_loss",
    "d_r1_loss",
    "freeze_d",
    "g_nonsaturating_loss",
    "g_path_regularize",
    "images_to_tensors",
]

# ---------------------------------------------------------------------------------------------------
# ADA augmentation
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """Per-transform probability multipliers and strengths of ADA's 'bgc' pipeline (published defaults)."""

    xflip: float = 1.0
    rotate90: float = 1.0
    xint: float = 1.0
    scale: float = 1.0
    rotate: float = 1.0
    aniso: float = 1.0
    xfrac: float = 1.0
    brightness: float = 1.0
    contrast: float = 1.0
    lumaflip: float = 1.0
    hue: float = 1.0
    saturation: float = 1.0
    xint_max: float = 0.125
    scale_std: float = 0.2
    rotate_max: float = 1.0
    aniso_std: float = 0.2
    xfrac_std: float = 0.125
    brightness_std: float = 0.2
    contrast_std: float = 0.5
    hue_max: float = 1.0
    saturation_std: float = 1.0


def _eye(batch: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, device=device).unsqueeze(0).repeat(batch, 1, 1)


def _mat3(rows: list[list[torch.Tensor | float]], batch: int, device: torch.device) -> torch.Tensor:
    out = torch.empty(batch, len(rows), len(rows[0]), device=device)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            out[:, i, j] = v
    return out


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    b, d = tx.shape[0], tx.device
    return _mat3([[1, 0, tx], [0, 1, ty], [0, 0, 1]], b, d)


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    b, d = sx.shape[0], sx.device
    return _mat3([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], b, d)


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    b, d = theta.shape[0], theta.device
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat3([[c, -s, 0], [s, c, 0], [0, 0, 1]], b, d)


def _gate(values: torch.Tensor, neutral: float, prob: float, rng: torch.Generator | None) -> torch.Tensor:
    keep = torch.rand(values.shape[0], device=values.device, generator=rng) < prob
    return torch.where(keep, values, torch.full_like(values, neutral))


def _reflect(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect pixel-index coordinates into [0, size-1] about the half-pixel borders (as
    grid_sample's `padding_mode='reflection'` with `align_corners=False`)."""
    period = 2.0 * size
    u = torch.remainder(coord + 0.5, period)
    u = torch.where(u > size, period - u, u)
    return (u - 0.5).clamp(0.0, size - 1.0)


def _sample_bilinear_reflect(img: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling of `img` (B, C, H, W) at pixel coordinates `sx`, `sy` (B, H, W), built from
    gathers so that it is twice differentiable with respect to `img`."""
    b, c, h, w = img.shape
    sx, sy = _reflect(sx, w), _reflect(sy, h)
    x0, y0 = sx.floor(), sy.floor()
    wx, wy = (sx - x0).unsqueeze(1), (sy - y0).unsqueeze(1)
    x0l, y0l = x0.long(), y0.long()
    x1l, y1l = (x0l + 1).clamp(max=w - 1), (y0l + 1).clamp(max=h - 1)
    flat = img.reshape(b, c, h * w)

    def take(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        idx = (yy * w + xx).reshape(b, 1, h * w).expand(b, c, h * w)
        return flat.gather(2, idx).reshape(b, c, h, w)

    top = take(y0l, x0l) * (1 - wx) + take(y0l, x1l) * wx
    bottom = take(y1l, x0l) * (1 - wx) + take(y1l, x1l) * wx
    return top * (1 - wy) + bottom * wy


def ada_augment(
    images: torch.Tensor,
    p: float,
    config: AugmentConfig = AugmentConfig(),
    rng: torch.Generator | None = None,
) -> torch.Tensor:
    """Augment a batch (B, 3, H, W) in [-1, 1] with ADA's pipeline at probability `p`. Differentiable (twice)
    in `images`. At p = 0 (or when no transform fires) the input tensor itself is returned."""
    b, c, h, w = images.shape
    dev = images.device
    # ---- geometric: inverse transform in pixel coordinates centred on the image centre
    g_inv = _eye(b, 3, dev)
    ones = torch.ones(b, device=dev)
    if config.xflip > 0:
        i = torch.floor(torch.rand(b, device=dev, generator=rng) * 2)
        i = _gate(i, 0.0, config.xflip * p, rng)
        g_inv = g_inv @ _scale2d(1 - 2 * i, ones)
    if config.rotate90 > 0:
        i = torch.floor(torch.rand(b, device=dev, generator=rng) * 4)
        i = _gate(i, 0.0, config.rotate90 * p, rng)
        g_inv = g_inv @ _rotate2d(-math.pi / 2 * i)
    if config.xint > 0:
        t = (torch.rand(b, 2, device=dev, generator=rng) * 2 - 1) * config.xint_max
        keep = torch.rand(b, device=dev, generator=rng) < config.xint * p
        t = torch.where(keep.unsqueeze(1), t, torch.zeros_like(t))
        g_inv = g_inv @ _translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h))
    if config.scale > 0:
        s = torch.exp2(torch.randn(b, device=dev, generator=rng) * config.scale_std)
        s = _gate(s, 1.0, config.scale * p, rng)
        g_inv = g_inv @ _scale2d(1 / s, 1 / s)
    p_rot = 1 - math.sqrt(min(max(1 - config.rotate * p, 0.0), 1.0))
    if config.rotate > 0:
        theta = (torch.rand(b, device=dev, generator=rng) * 2 - 1) * math.pi * config.rotate_max
        theta = _gate(theta, 0.0, p_rot, rng)
        g_inv = g_inv @ _rotate2d(-theta)
    if config.aniso > 0:
        s = torch.exp2(torch.randn(b, device=dev, generator=rng) * config.aniso_std)
        s = _gate(s, 1.0, config.aniso * p, rng)
        g_inv = g_inv @ _scale2d(1 / s, s)
    if config.rotate > 0:
        theta = (torch.rand(b, device=dev, generator=rng) * 2 - 1) * math.pi * config.rotate_max
        theta = _gate(theta, 0.0, p_rot, rng)
        g_inv = g_inv @ _rotate2d(-theta)
    if config.xfrac > 0:
        t = torch.randn(b, 2, device=dev, generator=rng) * config.xfrac_std
        keep = torch.rand(b, device=dev, generator=rng) < config.xfrac * p
        t = torch.where(keep.unsqueeze(1), t, torch.zeros_like(t))
        g_inv = g_inv @ _translate2d(-t[:, 0] * w, -t[:, 1] * h)

    out = images
    if not torch.equal(g_inv, _eye(b, 3, dev)):
        ys, xs = torch.meshgrid(
            torch.arange(h, device=dev, dtype=torch.float32),
            torch.arange(w, device=dev, dtype=torch.float32),
            indexing="ij",
        )
        cx, cy = (w - 1) / 2, (h - 1) / 2
        pts = torch.stack([xs - cx, ys - cy, torch.ones_like(xs)], 0).reshape(1, 3, h * w)
        src = g_inv @ pts  # (B, 3, HW): source coordinate of every output pixel
        sx = (src[:, 0] + cx).reshape(b, h, w)
        sy = (src[:, 1] + cy).reshape(b, h, w)
        out = _sample_bilinear_reflect(out, sx.to(out.dtype), sy.to(out.dtype))

    # ---- colour: 4x4 matrix on homogeneous RGB
    m = _eye(b, 4, dev)
    v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev) / math.sqrt(3)
    vv = torch.outer(v, v).unsqueeze(0)
    if config.brightness > 0:
        bb = _gate(
            torch.randn(b, device=dev, generator=rng) * config.brightness_std, 0.0, config.brightness * p, rng
        )
        tr = _eye(b, 4, dev)
        tr[:, :3, 3] = bb.unsqueeze(1)
        m = tr @ m
    if config.contrast > 0:
        cc = _gate(
            torch.exp2(torch.randn(b, device=dev, generator=rng) * config.contrast_std),
            1.0,
            config.contrast * p,
            rng,
        )
        sc = _eye(b, 4, dev)
        sc[:, 0, 0] = sc[:, 1, 1] = sc[:, 2, 2] = cc
        m = sc @ m
    if config.lumaflip > 0:
        i = _gate(torch.floor(torch.rand(b, device=dev, generator=rng) * 2), 0.0, config.lumaflip * p, rng)
        m = (_eye(b, 4, dev) - 2 * vv * i.reshape(b, 1, 1)) @ m
    if config.hue > 0:
        theta = (torch.rand(b, device=dev, generator=rng) * 2 - 1) * math.pi * config.hue_max
        theta = _gate(theta, 0.0, config.hue * p, rng)
        m = _rotate3d_about(v[:3], theta) @ m
    if config.saturation > 0:
        s = _gate(
            torch.exp2(torch.randn(b, device=dev, generator=rng) * config.saturation_std),
            1.0,
            config.saturation * p,
            rng,
        )
        m = (vv + (_eye(b, 4, dev) - vv) * s.reshape(b, 1, 1)) @ m
    if c == 3 and not torch.equal(m, _eye(b, 4, dev)):
        flat = out.reshape(b, 3, h * w)
        flat = m[:, :3, :3].to(out.dtype) @ flat + m[:, :3, 3:].to(out.dtype)
        out = flat.reshape(b, 3, h, w)
    return out


def _rotate3d_about(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) rotation by `theta` about the unit 3-vector `axis` (Rodrigues)."""
    b = theta.shape[0]
    x, y, z = (float(a) for a in axis)
    k = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], device=theta.device)
    kk = k @ k
    cos, sin = torch.cos(theta).reshape(b, 1, 1), torch.sin(theta).reshape(b, 1, 1)
    r = torch.eye(3, device=theta.device) + sin * k + (1 - cos) * kk
    out = _eye(b, 4, theta.device)
    out[:, :3, :3] = r
    return out


@dataclass
class AdaController:
    """ADA's p controller: accumulate sign(D(real)); every `interval` observations move p by
    `sign(r_t - target) * n / (kimg * 1000)` (n = images observed), clamped to [0, 1]."""

    p: float = 0.0
    target: float = 0.6
    interval: int = 4
    kimg: float = 500.0
    sign_sum: float = 0.0
    count: int = 0
    calls: int = 0
    last_rt: float | None = None

    def observe(self, real_logits: torch.Tensor) -> float | None:
        """Record one batch of real logits; returns r_t when p was updated at this call."""
        self.sign_sum += float(torch.sign(real_logits.detach()).sum())
        self.count += int(real_logits.numel())
        self.calls += 1
        if self.calls % self.interval:
            return None
        rt = self.sign_sum / max(1, self.count)
        adjust = float(np.sign(rt - self.target)) * self.count / (self.kimg * 1000.0)
        self.p = float(min(1.0, max(0.0, self.p + adjust)))
        self.sign_sum, self.count, self.last_rt = 0.0, 0, rt
        return rt


# ---------------------------------------------------------------------------------------------------
# Losses and regularisers
# ---------------------------------------------------------------------------------------------------


def d_logistic_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic D loss: softplus(-D(real)) + softplus(D(fake))."""
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: softplus(-D(fake))."""
    return F.softplus(-fake_pred).mean()


def d_r1_loss(real_pred: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """R1: E ||grad_x D(x)||^2 over reals (graph kept for the backward)."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real_img, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def g_path_regularize(
    fake_img: torch.Tensor,
    latents: torch.Tensor,
    mean_path_length: torch.Tensor,
    decay: float = 0.01,
    rng: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Path-length penalty; returns (penalty, updated running mean (detached), per-sample lengths)."""
    noise = torch.randn(fake_img.shape, device=fake_img.device, generator=rng) / math.sqrt(
        fake_img.shape[2] * fake_img.shape[3]
    )
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), latents, create_graph=True)
    lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
    path_mean = mean_path_length + decay * (lengths.mean() - mean_path_length)
    penalty = (lengths - path_mean).pow(2).mean()
    return penalty, path_mean.detach(), lengths


def freeze_d(discriminator: Discriminator, k: int) -> list[nn.Parameter]:
    """FreezeD: `requires_grad_(False)` on `D.convs[:k]`; returns the parameters that stay trainable."""
    if not 0 <= k <= len(discriminator.convs):
        raise InputError("freeze_d", f"must be in [0, {len(discriminator.convs)}], got {k}", k)
    for block in list(discriminator.convs)[:k]:
        block.requires_grad_(False)
    frozen = {id(p) for block in list(discriminator.convs)[:k] for p in block.parameters()}
    return [p for p in discriminator.parameters() if id(p) not in frozen]


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def check_toon_images(
    images: Sequence[Image.Image],
    names: Sequence[str],
    size: int,
    min_images: int = 16,
    field: str = "images",
) -> None:
    """Refuse a training set with an `InputError` naming the file: too few images, an image too small for
    `size` (more than 2x upscaling), exact or near duplicates."""
    if len(images) != len(names):
        raise ValueError("images and names differ in length")
    if len(images) < min_images:
        raise InputError(
            field,
            f"need at least {min_images} images to fine-tune a StyleGAN2, got {len(images)}",
            len(images),
        )
    for i, (im, name) in enumerate(zip(images, names, strict=True)):
        short = min(im.size)
        if short * MAX_UPSCALE < size:
            raise InputError(
                f"{field}[{i}]",
                f"{name} is {im.size[0]}x{im.size[1]}: too small for {size} px "
                f"(more than {MAX_UPSCALE:g}x upscaling)",
                name,
            )
    check_duplicates(list(images), list(names), field=field)


def images_to_tensors(images: Sequence[Image.Image], size: int) -> list[torch.Tensor]:
    """Centre-crop each image to a square, resize (Lanczos) to `size`, as (3, size, size) in [-1, 1]."""
    out = []
    for im in images:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.LANCZOS)
        arr = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1)
        out.append(arr / 127.5 - 1.0)
    return out


# ---------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToonGanConfig:
    """Fine-tuning settings (published StyleGAN2 / ADA defaults unless noted)."""

    batch_size: int = 4
    lr: float = 0.002
    r1: float = 10.0
    path_regularize: float = 2.0
    path_batch_shrink: int = 2
    d_reg_every: int = 16
    g_reg_every: int = 4
    mixing: float = 0.9
    ema_kimg: float = 10.0
    freeze_d: int = 0
    augment: bool = True
    ada: bool = True
    """Adapt p (else p stays at `augment_p`)."""
    augment_p: float = 0.0
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 100.0
    """500 from scratch; 100 when fine-tuning from a pretrained model, as ADA does on resume."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "d_reg_every", "g_reg_every", "ada_interval", "path_batch_shrink"):
            if getattr(self, name) < 1:
                raise InputError(name, f"must be >= 1, got {getattr(self, name)}", getattr(self, name))
        if not 0.0 <= self.augment_p <= 1.0:
            raise InputError("augment_p", f"must be in [0, 1], got {self.augment_p}", self.augment_p)

    @property
    def ema_beta(self) -> float:
        return 0.5 ** (self.batch_size / (self.ema_kimg * 1000.0)) if self.ema_kimg > 0 else 0.0


@dataclass
class StepStats:
    step: int
    d_loss: float
    g_loss: float
    r1: float | None
    path: float | None
    augment_p: float
    rt: float | None
    real_sign: float
    """Mean sign of D(real) in this step's D pass."""
    extra: dict[str, float] = field(default_factory=dict)


def _flatten_optimizer(
    prefix: str, opt: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{idx}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                plain.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def _unflatten_optimizer(
    prefix: str, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    head = prefix + ".state."
    for name, value in tensors.items():
        if name.startswith(head):
            idx, key = name[len(head) :].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    for idx, entries in info["plain"].items():
        state.setdefault(int(idx), {}).update(entries)
    return {"state": state, "param_groups": info["param_groups"]}


class ToonGanTrainer:
    """One StyleGAN2 fine-tuning run: `step()` does a D pass (+ lazy R1), a G pass (+ lazy path length),
    the EMA update and the ADA bookkeeping, on a batch drawn from `images`.

    `images`: (3, S, S) tensors in [-1, 1] (S = the generator size), e.g. from `images_to_tensors`.
    The models are trained in place; `g_ema` is the EMA copy (starts as a copy of `generator` unless given)."""

    def __init__(
        self,
        generator: Generator,
        discriminator: Discriminator,
        images: Sequence[torch.Tensor],
        config: ToonGanConfig = ToonGanConfig(),
        g_ema: Generator | None = None,
        augment: AugmentConfig = AugmentConfig(),
    ):
        if not images:
            raise InputError("images", "no training images", 0)
        size = generator.size
        if discriminator.config.size != size:
            raise ModelError(f"discriminator is {discriminator.config.size} px, generator {size} px")
        bad = [i for i, im in enumerate(images) if tuple(im.shape) != (3, size, size)]
        if bad:
            raise InputError(
                f"images[{bad[0]}]",
                f"expected a (3, {size}, {size}) tensor, got {tuple(images[bad[0]].shape)}",
                tuple(images[bad[0]].shape),
            )
        self.config = config
        self.augment_config = augment
        self.G = generator.train()
        self.D = discriminator.train()
        self.device = next(generator.parameters()).device
        if g_ema is None:
            g_ema = Generator(generator.config).to(self.device)
            g_ema.load_state_dict(generator.state_dict())
        self.g_ema = g_ema.eval().requires_grad_(False)
        self.images = list(images)
        self.rng = torch.Generator(device=self.device).manual_seed(config.seed)
        self.step_count = 0
        self.mean_path_length = torch.zeros((), device=self.device)
        self.ada = AdaController(
            p=config.augment_p, target=config.ada_target, interval=config.ada_interval, kimg=config.ada_kimg
        )
        self.d_trainable = freeze_d(self.D, config.freeze_d)
        self._frozen = {id(p) for p in self.D.parameters()} - {id(p) for p in self.d_trainable}
        g_ratio = config.g_reg_every / (config.g_reg_every + 1)
        d_ratio = config.d_reg_every / (config.d_reg_every + 1)
        self.g_optim = torch.optim.Adam(
            self.G.parameters(), lr=config.lr * g_ratio, betas=(0.0**g_ratio, 0.99**g_ratio)
        )
        self.d_optim = torch.optim.Adam(
            self.d_trainable, lr=config.lr * d_ratio, betas=(0.0**d_ratio, 0.99**d_ratio)
        )

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def augment_p(self) -> float:
        return self.ada.p

    def _set_grads(self, g: bool, d: bool) -> None:
        self.G.requires_grad_(g)
        for p in self.D.parameters():
            p.requires_grad_(d and id(p) not in self._frozen)

    def _real_batch(self) -> torch.Tensor:
        idx = torch.randint(
            len(self.images), (self.config.batch_size,), generator=self.rng, device=self.device
        )
        return torch.stack([self.images[int(i)] for i in idx.tolist()]).to(self.device)

    def _fake(self, batch: int, return_latents: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        g = self.G
        mix = float(torch.rand((), generator=self.rng, device=self.device)) < self.config.mixing
        n_z = 2 if self.config.mixing > 0 and mix else 1
        zs = [torch.randn(batch, g.style_dim, generator=self.rng, device=self.device) for _ in range(n_z)]
        inject = (
            int(torch.randint(1, g.n_latent, (1,), generator=self.rng, device=self.device))
            if n_z == 2
            else None
        )
        noise = g.make_noise(batch, generator=self.rng)
        return g(zs, inject_index=inject, noise=noise, return_latents=return_latents)

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        if not self.config.augment:
            return x
        return ada_augment(x, self.ada.p, self.augment_config, rng=self.rng)

    # -- one step --------------------------------------------------------------------------------

    def step(self) -> StepStats:
        """One training iteration; returns its losses and the ADA state."""
        cfg = self.config
        i = self.step_count
        batch = cfg.batch_size
        real = self._real_batch()

        # D: logistic loss
        self._set_grads(False, True)
        fake, _ = self._fake(batch)
        fake_pred = self.D(self._aug(fake.detach()))
        real_pred = self.D(self._aug(real))
        d_loss = d_logistic_loss(real_pred, fake_pred)
        self.d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optim.step()
        real_sign = float(torch.sign(real_pred.detach()).mean())
        rt = self.ada.observe(real_pred) if cfg.augment and cfg.ada else None

        # D: lazy R1
        r1_value = None
        if i % cfg.d_reg_every == 0:
            real_req = real.detach().requires_grad_(True)
            pred = self.D(self._aug(real_req))
            r1 = d_r1_loss(pred, real_req)
            self.d_optim.zero_grad(set_to_none=True)
            (cfg.r1 / 2 * r1 * cfg.d_reg_every + 0 * pred[0]).sum().backward()
            self.d_optim.step()
            r1_value = float(r1.detach())

        # G: non-saturating loss
        self._set_grads(True, False)
        fake, _ = self._fake(batch)
        g_loss = g_nonsaturating_loss(self.D(self._aug(fake)))
        self.g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optim.step()

        # G: lazy path-length regularisation
        path_value = None
        if i % cfg.g_reg_every == 0 and cfg.path_regularize > 0:
            pb = max(1, batch // cfg.path_batch_shrink)
            fake, latents = self._fake(pb, return_latents=True)
            assert latents is not None
            penalty, self.mean_path_length, _ = g_path_regularize(
                fake, latents, self.mean_path_length, rng=self.rng
            )
            weighted = cfg.path_regularize * cfg.g_reg_every * penalty + 0 * fake[0, 0, 0, 0]
            self.g_optim.zero_grad(set_to_none=True)
            weighted.backward()
            self.g_optim.step()
            path_value = float(penalty.detach())

        # EMA of G
        self._set_grads(False, False)
        with torch.no_grad():
            beta = cfg.ema_beta
            for pe, p in zip(self.g_ema.parameters(), self.G.parameters(), strict=True):
                pe.mul_(beta).add_(p.detach(), alpha=1 - beta)
            for be, b in zip(self.g_ema.buffers(), self.G.buffers(), strict=True):
                be.copy_(b)
        self.step_count += 1
        return StepStats(
            step=self.step_count,
            d_loss=float(d_loss.detach()),
            g_loss=float(g_loss.detach()),
            r1=r1_value,
            path=path_value,
            augment_p=self.ada.p,
            rt=rt,
            real_sign=real_sign,
        )

    # -- samples and export ----------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int = 4, seed: int = 0, truncation: float = 1.0) -> torch.Tensor:
        """`n` images (n, 3, S, S) in [-1, 1] from `g_ema` for fixed latents (`seed`) and the stored noise
        buffers, so successive progress grids are comparable. Does not touch the training RNG."""
        rng = torch.Generator(device=self.device).manual_seed(seed)
        z = torch.randn(n, self.g_ema.style_dim, generator=rng, device=self.device)
        mean = self.g_ema.mean_latent(4096, generator=rng) if truncation < 1 else None
        img, _ = self.g_ema([z], truncation=truncation, truncation_latent=mean, randomize_noise=False)
        return img

    def export(self, path: str | Path, n_mean_latent: int = 4096, include_d: bool = True) -> Path:
        """Write the fine-tuned model as rosinality-layout safetensors (`g_ema.*`, `g.*`, optionally `d.*`,
        and `latent_avg` = mean of `n_mean_latent` mapped samples, seeded)."""
        rng = torch.Generator(device=self.device).manual_seed(self.config.seed)
        latent_avg = self.g_ema.mean_latent(n_mean_latent, generator=rng)[0]
        return save_stylegan2_safetensors(
            path,
            self.g_ema,
            latent_avg=latent_avg,
            g=self.G,
            d=self.D if include_d else None,
            metadata={"trained_steps": str(self.step_count), "augment_p": repr(self.ada.p)},
        )

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON-able meta) that `load_state_dict` restores exactly."""
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in (("g", self.G), ("d", self.D), ("g_ema", self.g_ema)):
            for k, v in module.state_dict().items():
                tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous().clone()
        g_t, g_info = _flatten_optimizer("g_optim", self.g_optim)
        d_t, d_info = _flatten_optimizer("d_optim", self.d_optim)
        tensors.update(g_t)
        tensors.update(d_t)
        tensors["rng_state"] = self.rng.get_state().clone()
        tensors["mean_path_length"] = self.mean_path_length.detach().cpu().reshape(())
        meta = {
            "format": "toonbooth-toon-gan-1",
            "step": self.step_count,
            "ada": asdict(self.ada),
            "config": asdict(self.config),
            "augment": asdict(self.augment_config),
            "g_optim": g_info,
            "d_optim": d_info,
            "generator_config": json.loads(self.G.config.to_json()),
        }
        return tensors, meta

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Restore weights, optimizers, RNG, step and ADA state saved by `state_dict`."""
        if meta.get("format") != "toonbooth-toon-gan-1":
            raise ModelError(f"not a toon-GAN training state (format {meta.get('format')!r})")
        if meta.get("config", {}).get("freeze_d") != self.config.freeze_d:
            raise ModelError("the saved run froze a different number of D layers than this trainer")
        for prefix, module in (("g", self.G), ("d", self.D), ("g_ema", self.g_ema)):
            sd = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            missing, unexpected = module.load_state_dict(sd, strict=True)
            if missing or unexpected:
                raise ModelError(
                    f"saved `{prefix}` does not match: missing {missing[:3]}, unexpected {unexpected[:3]}"
                )
        self.g_optim.load_state_dict(_unflatten_optimizer("g_optim", tensors, meta["g_optim"]))
        self.d_optim.load_state_dict(_unflatten_optimizer("d_optim", tensors, meta["d_optim"]))
        self.rng.set_state(tensors["rng_state"].clone())
        self.mean_path_length = tensors["mean_path_length"].to(self.device).clone()
        self.ada = AdaController(**meta["ada"])
        self.step_count = int(meta["step"])

    def save(self, directory: str | Path) -> Path:
        """Write `toon_gan.safetensors` + `toon_gan.json` (JSON last, each via a temporary file)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors, meta = self.state_dict()
        tmp = directory / "toon_gan.safetensors.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, directory / "toon_gan.safetensors")
        tmpj = directory / "toon_gan.json.tmp"
        tmpj.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(tmpj, directory / "toon_gan.json")
        return directory

    def load(self, directory: str | Path) -> None:
        """Resume from a folder written by `save`."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path, tensor_path = directory / "toon_gan.json", directory / "toon_gan.safetensors"
        if not meta_path.is_file() or not tensor_path.is_file():
            raise ModelError(f"no toon-GAN training state in {str(directory)!r}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tensors = load_file(str(tensor_path), device="cpu")
        self.load_state_dict(tensors, meta)
