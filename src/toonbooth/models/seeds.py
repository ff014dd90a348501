"""AUTOMATIC1111 seeds and start noise (`modules/processing.py`): image i of a job uses seed + i (and
subseed + i), each image's noise from its own CPU generator (an image does not depend on its batch), and
variation seeds mixed in by A1111's `slerp` along dim 1 of the C x H x W noise."""

from __future__ import annotations

import random


def job_seeds(seed: int, count: int) -> list[int]:
    """A1111: image i of the job uses seed + i; -1 picks a random base seed first."""
    base = random.randint(0, 2**32 - 1) if seed == -1 else seed
    return [base + i for i in range(count)]


def slerp(val: float, low, high, dim: int = 1):
    """Spherical interpolation of two noise tensors along `dim` (A1111 `processing.slerp`, which uses
    dim 1 of its C x H x W noise); falls back to linear interpolation for nearly parallel inputs."""
    import torch

    low_n = low / torch.norm(low, dim=dim, keepdim=True)
    high_n = high / torch.norm(high, dim=dim, keepdim=True)
    dot = (low_n * high_n).sum(dim)
    if dot.mean() > 0.9995:
        return low * (1.0 - val) + high * val
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(dim) * low + (
        torch.sin(val * omega) / so
    ).unsqueeze(dim) * high


def variation_noise(shape: tuple[int, ...], seeds: list[int], subseeds: list[int], strength: float):
    """Start noise (B, C, H, W) of a batch: each image's seeded noise, slerped towards its subseed's."""
    import torch

    out = []
    for s, sub in zip(seeds, subseeds, strict=True):
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s))
        if strength > 0:
            other = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(sub))
            noise = slerp(strength, noise, other)
        out.append(noise)
    return torch.stack(out)
