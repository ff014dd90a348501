"""VGG16 `features` with torchvision's key names, and an LPIPS-style perceptual distance, without torchvision.

- VGG16: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
  (https://arxiv.org/abs/1409.1556). Module indices follow torchvision's `vgg16().features`
  (convs at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28; ReLU after each; max-pools at 4, 9, 16, 23, 30),
  so `vgg16-397923af.pth` (a plain state dict: `torch.load(weights_only=True)`) or a safetensors copy loads
  strictly; its `classifier.*` keys are ignored.
- LPIPS: Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"
  (CVPR 2018, https://github.com/richzhang/PerceptualSimilarity): inputs in [-1, 1] are shifted/scaled by
  the published ImageNet constants, features are taken after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3,
  unit-normalised over channels, squared differences are weighted by the 1x1 "lin" layers
  (`lin{0..4}.model.1.weight`, as in the `v0.1/vgg.pth` file) -- or summed over channels when no lin
  weights are given -- and averaged over space, then summed over the five layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ModelError, ModelNotFoundError, UnsafeModelFormatError

__all__ = [
    "LPIPS",
    "VGG16Features",
    "VGGConfig",
    "load_lpips",
    "load_lpips_lins",
    "load_vgg16",
    "looks_like_lpips_lins",
    "looks_like_vgg16",
    "tiny_vgg16",
    "vgg_config_from_state_dict",
]

# torchvision vgg16 "D" config: conv widths per stage and convs per stage
_STAGE_CONVS = (2, 2, 3, 3, 3)
TAPS = (3, 8, 15, 22, 29)
"""`features` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (the LPIPS slices end there)."""
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


@dataclass(frozen=True)
class VGGConfig:
    """Conv widths per stage (64, 128, 256, 512, 512 for VGG16); narrow ones for tests."""

    widths: tuple[int, int, int, int, int] = (64, 128, 256, 512, 512)


class VGG16Features(nn.Module):
    """`features` of torchvision's VGG16 (same indices); `forward` returns the five LPIPS taps."""

    def __init__(self, config: VGGConfig = VGGConfig()):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_ch = 3
        for n, width in zip(_STAGE_CONVS, config.widths, strict=True):
            for _ in range(n):
                layers += [nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU()]
                in_ch = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """ImageNet-normalised input (B, 3, H, W) -> activations at `TAPS`."""
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAPS:
                taps.append(x)
                if i == TAPS[-1]:
                    break
        return taps


def looks_like_vgg16(keys: set[str]) -> bool:
    """True for a torchvision VGG16 state dict (its `features.{conv}.weight` keys)."""
    return all(f"features.{i}.weight" in keys for i in CONV_INDICES) and "features.30.weight" not in keys


def looks_like_lpips_lins(keys: set[str]) -> bool:
    """True for an LPIPS linear-layer file (`lin{0..4}.model.1.weight`)."""
    return all(f"lin{i}.model.1.weight" in keys for i in range(5))


def vgg_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> VGGConfig:
    if not looks_like_vgg16(set(sd)):
        raise ModelError("not a torchvision VGG16 state dict (features.{0,2,5,...,28}.weight missing)")
    firsts = (0, 5, 10, 17, 24)
    return VGGConfig(widths=tuple(int(sd[f"features.{i}.weight"].shape[0]) for i in firsts))  # type: ignore[arg-type]


def tiny_vgg16(widths: tuple[int, int, int, int, int] = (4, 8, 8, 16, 16), seed: int = 0) -> VGG16Features:
    """A narrow random VGG16 with torchvision's key names, for tests."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VGG16Features(VGGConfig(widths=widths)).eval()


def _read_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelNotFoundError(f"{what} file {str(path)!r} does not exist")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UnsafeModelFormatError(
            f"{path.name}: not loadable with torch.load(weights_only=True) ({type(e).__name__}); "
            "convert it to .safetensors on a trusted machine"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"{path.name}: expected a state dict, got {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_vgg16(path: str | Path, device: str | torch.device = "cpu") -> VGG16Features:
    """VGG16 features from torchvision's `vgg16-*.pth` or a safetensors copy (`classifier.*` ignored)."""
    path = Path(path)
    sd = _read_state(path, "VGG16")
    feats = {k: v for k, v in sd.items() if k.startswith("features.")}
    model = VGG16Features(vgg_config_from_state_dict(feats))
    missing, unexpected = model.load_state_dict(feats, strict=True)
    if missing or unexpected:
        raise ModelError(
            f"{path.name}: VGG16 features mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model.to(device).eval()


def load_lpips_lins(path: str | Path) -> list[torch.Tensor]:
    """The five LPIPS 1x1 lin weights (1, C, 1, 1) from `vgg.pth` (v0.1) or a safetensors copy
    (keys `lin{i}.model.1.weight`, also accepted under `lins.{i}.`)."""
    path = Path(path)
    sd = _read_state(path, "LPIPS lin")
    sd = {("lin" + k[len("lins.") :] if k.startswith("lins.") else k): v for k, v in sd.items()}
    if not looks_like_lpips_lins(set(sd)):
        raise ModelError(f"{path.name}: no LPIPS lin weights (lin0..4.model.1.weight)")
    return [sd[f"lin{i}.model.1.weight"].float() for i in range(5)]


class LPIPS(nn.Module):
    """LPIPS-style distance on VGG16 features; `forward(x, y)` -> (B,) for images in [-1, 1]."""

    def __init__(self, vgg: VGG16Features, lins: Sequence[torch.Tensor] | None = None):
        super().__init__()
        self.vgg = vgg.eval().requires_grad_(False)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).reshape(1, 3, 1, 1))
        self.lins: list[torch.Tensor] | None = None
        if lins is not None:
            widths = vgg.config.widths
            if len(lins) != 5 or any(int(w.shape[1]) != c for w, c in zip(lins, widths, strict=True)):
                raise ModelError(f"LPIPS lin weights do not match the VGG widths {widths}")
            for i, w in enumerate(lins):
                self.register_buffer(f"lin{i}", w.detach().float().reshape(1, -1, 1, 1))
            self.lins = [getattr(self, f"lin{i}") for i in range(5)]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.vgg((x - self.shift) / self.scale)
        fy = self.vgg((y - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for i, (a, b) in enumerate(zip(fx, fy, strict=True)):
            a = a / (torch.sqrt(torch.sum(a * a, dim=1, keepdim=True)) + 1e-10)
            b = b / (torch.sqrt(torch.sum(b * b, dim=1, keepdim=True)) + 1e-10)
            d = (a - b) ** 2
            if self.lins is not None:
                d = F.conv2d(d, getattr(self, f"lin{i}"))
            else:
                d = d.sum(dim=1, keepdim=True)
            total = total + d.mean(dim=(1, 2, 3))
        return total


def load_lpips(
    vgg_path: str | Path, lin_path: str | Path | None = None, device: str | torch.device = "cpu"
) -> LPIPS:
    """An LPIPS module from a VGG16 weights file and (optionally) the LPIPS lin weights file."""
    vgg = load_vgg16(vgg_path)
    lins = load_lpips_lins(lin_path) if lin_path is not None else None
    return LPIPS(vgg, lins).to(device).eval()
