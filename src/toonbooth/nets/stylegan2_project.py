"""Optimisation-based GAN inversion ("projection") of an image into a StyleGAN2 generator's W or W+ space.

Follows the projector of Karras et al., StyleGAN2 (CVPR 2020, Appendix D / `projector.py`), with the
published defaults of rosinality's `projector.py` (https://github.com/rosinality/stylegan2-pytorch):

- Adam on the latent (W, or W+ with `w_plus`) and on every per-layer noise map, `lr` 0.1;
- learning-rate schedule over t = step/steps: `lr * ramp`, ramp = min(1, t/0.05) * (0.5 - 0.5 cos(pi *
  min(1, (1 - t)/0.25)))` (cosine ramp-down over the last 25 %, linear ramp-up over the first 5 %);
- the latent is perturbed by Gaussian noise of std `latent_std * 0.05 * max(0, 1 - t/0.75)^2`, where
  `latent_std` is the RMS spread of 10 000 mapped samples around their mean (the start point);
- loss = perceptual (LPIPS-VGG) + 1e5 * noise regularisation (squared autocorrelation of every noise map
  at all octaves down to 8x8) + `mse` * MSE (default 0); noise maps re-normalised to zero mean, unit std
  after each step; generated images larger than the target are box-downsampled to its size (256 there);
- 1000 steps.

Here the perceptual term is `nets.vgg.LPIPS` (own VGG16, no torchvision). Without one, pixel MSE is the main
term. An optional identity term (1 - cosine of IR-SE50 embeddings, as pSp's ID loss) can be added.
`on_step(step, total, loss)` is called after every step; it may raise (e.g. a cancel) to stop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import InputError
from .stylegan2 import Generator

__all__ = [
    "ProjectionConfig",
    "ProjectionResult",
    "image_loss",
    "noise_normalize_",
    "noise_regularize",
    "project",
    "projector_lr",
]


@dataclass(frozen=True)
class ProjectionConfig:
    """Projector settings; defaults are the published ones."""

    steps: int = 1000
    lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    noise: float = 0.05
    noise_ramp: float = 0.75
    noise_regularize: float = 1e5
    mse: float = 0.0
    w_plus: bool = False
    n_mean_latent: int = 10000
    identity: float = 0.0
    """Weight of the identity term (needs an `identity` network)."""
    keep_path_every: int = 100
    """Keep a copy of the latent every this many steps (the reference's `latent_path`)."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InputError("steps", f"must be >= 1, got {self.steps}", self.steps)
        if self.lr <= 0:
            raise InputError("lr", f"must be > 0, got {self.lr}", self.lr)


@dataclass
class ProjectionResult:
    latent: torch.Tensor
    """(B, D) for W, (B, n_latent, D) for W+."""
    noises: list[torch.Tensor]
    image: torch.Tensor
    """The generator's output for the final latent and noises (full resolution)."""
    losses: list[float] = field(default_factory=list)
    """Total loss per step."""
    terms: list[dict[str, float]] = field(default_factory=list)
    """Per step: perceptual, noise, mse, identity terms."""
    latent_path: list[torch.Tensor] = field(default_factory=list)


def projector_lr(t: float, initial_lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """The learning rate at progress `t` in [0, 1] (cosine ramp-down, linear ramp-up)."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / rampup)
    return initial_lr * ramp


def noise_regularize(noises: list[torch.Tensor]) -> torch.Tensor:
    """Sum over noise maps and octaves (down to 8x8) of the squared one-pixel autocorrelations."""
    loss = noises[0].new_zeros(())
    for noise in noises:
        size = noise.shape[2]
        while True:
            loss = loss + (noise * torch.roll(noise, shifts=1, dims=3)).mean().pow(2)
            loss = loss + (noise * torch.roll(noise, shifts=1, dims=2)).mean().pow(2)
            if size <= 8:
                break
            noise = noise.reshape(-1, 1, size // 2, 2, size // 2, 2).mean([3, 5])
            size //= 2
    return loss


@torch.no_grad()
def noise_normalize_(noises: list[torch.Tensor]) -> None:
    """In place: zero mean, unit std for every noise map."""
    for noise in noises:
        mean = noise.mean()
        std = noise.std()
        noise.sub_(mean).div_(std)


def _downsample_to(img: torch.Tensor, size: int) -> torch.Tensor:
    h = img.shape[2]
    if h == size:
        return img
    if h % size:
        raise InputError("target", f"generator size {h} is not a multiple of the target size {size}", size)
    f = h // size
    b, c, _, w = img.shape
    return img.reshape(b, c, h // f, f, w // f, f).mean([3, 5])


def project(
    generator: Generator,
    target: torch.Tensor,
    config: ProjectionConfig = ProjectionConfig(),
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    identity: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    rng: torch.Generator | None = None,
    init_latent: torch.Tensor | None = None,
) -> ProjectionResult:
    """Find the latent (and noise maps) whose image matches `target` (B, 3, S, S) in [-1, 1].

    `perceptual(x, y) -> (B,)`: e.g. `nets.vgg.LPIPS`; None = pixel MSE as the main term. `identity(x) ->
    (B, E)` embeddings for the identity term (weight `config.identity`). `rng` makes the run reproducible.
    `init_latent`: start here instead of the mean W (e.g. an encoder's W+ to refine: (B, n_latent, D) with
    `w_plus`, else (B, D)). The generator's own parameters are not changed (their `requires_grad` flags are
    restored)."""
    if target.ndim != 4 or target.shape[1] != 3:
        raise InputError(
            "target", f"expected (B, 3, S, S) in [-1, 1], got {tuple(target.shape)}", tuple(target.shape)
        )
    if generator.size % target.shape[-1] or target.shape[-1] != target.shape[-2]:
        raise InputError(
            "target",
            f"square target whose size divides {generator.size} needed, got {tuple(target.shape[-2:])}",
            tuple(target.shape),
        )
    if config.identity > 0 and identity is None:
        raise InputError("identity", "config.identity > 0 needs an identity network", None)
    device = next(generator.parameters()).device
    target = target.to(device)
    batch = target.shape[0]
    flags = [p.requires_grad for p in generator.parameters()]
    generator.requires_grad_(False)
    try:
        with torch.no_grad():
            z = torch.randn(config.n_mean_latent, generator.style_dim, device=device, generator=rng)
            w_samples = generator.style(z)
            latent_mean = w_samples.mean(0)
            latent_std = float(((w_samples - latent_mean).pow(2).sum() / config.n_mean_latent) ** 0.5)
            target_id = identity(target).detach() if identity is not None and config.identity > 0 else None

        noises = [n.repeat(batch, 1, 1, 1) for n in generator.make_noise(1, generator=rng)]
        for n in noises:
            n.requires_grad_(True)
        latent_in = latent_mean.detach().clone().unsqueeze(0).repeat(batch, 1)
        if config.w_plus:
            latent_in = latent_in.unsqueeze(1).repeat(1, generator.n_latent, 1)
        if init_latent is not None:
            if tuple(init_latent.shape) != tuple(latent_in.shape):
                raise InputError(
                    "init_latent",
                    f"expected shape {tuple(latent_in.shape)}, got {tuple(init_latent.shape)}",
                    tuple(init_latent.shape),
                )
            latent_in = init_latent.detach().to(device=device, dtype=latent_in.dtype).clone()
        latent_in.requires_grad_(True)
        optimizer = torch.optim.Adam([latent_in, *noises], lr=config.lr)

        result = ProjectionResult(latent=latent_in, noises=noises, image=target)
        for i in range(config.steps):
            t = i / config.steps
            lr = projector_lr(t, config.lr, config.lr_rampdown, config.lr_rampup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            strength = latent_std * config.noise * max(0.0, 1.0 - t / config.noise_ramp) ** 2
            latent_n = latent_in + torch.randn(latent_in.shape, device=device, generator=rng) * strength
            img, _ = generator([latent_n], input_is_latent=True, noise=noises)
            img = _downsample_to(img, target.shape[-1])

            mse = F.mse_loss(img, target)
            main = perceptual(img, target).sum() if perceptual is not None else mse
            n_loss = noise_regularize(noises)
            loss = main + config.noise_regularize * n_loss + config.mse * mse
            id_term = img.new_zeros(())
            if target_id is not None and identity is not None:
                id_term = (1.0 - F.cosine_similarity(identity(img), target_id, dim=1)).mean()
                loss = loss + config.identity * id_term

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            noise_normalize_(noises)

            value = float(loss.detach())
            result.losses.append(value)
            result.terms.append(
                {
                    "perceptual": float(main.detach()) if perceptual is not None else 0.0,
                    "noise": float(n_loss.detach()),
                    "mse": float(mse.detach()),
                    "identity": float(id_term.detach()),
                }
            )
            if config.keep_path_every and (i + 1) % config.keep_path_every == 0:
                result.latent_path.append(latent_in.detach().clone())
            if on_step is not None:
                on_step(i + 1, config.steps, value)

        with torch.no_grad():
            final = [n.detach().clone() for n in noises]
            image, _ = generator([latent_in.detach()], input_is_latent=True, noise=final)
        result.latent = latent_in.detach().clone()
        result.noises = final
        result.image = image
        return result
    finally:
        for p, flag in zip(generator.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def image_loss(img: torch.Tensor, target: torch.Tensor, perceptual: nn.Module | None = None) -> torch.Tensor:
    """The projector's main term for one pair (perceptual when given, else pixel MSE), without gradients."""
    with torch.no_grad():
        img = _downsample_to(img, target.shape[-1])
        return perceptual(img, target).sum() if perceptual is not None else F.mse_loss(img, target)
