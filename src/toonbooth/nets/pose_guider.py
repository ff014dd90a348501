"""AnimateAnyone's PoseGuider in the Moore-AnimateAnyone checkpoint layout (`pose_guider.pth`).

Paper: Hu et al., "Animate Anyone: Consistent and Controllable Image-to-Video Synthesis for Character
Animation", CVPR 2024 (https://arxiv.org/abs/2311.17117). Public weights: the open re-implementation
Moore-AnimateAnyone (https://github.com/MooreThreads/Moore-AnimateAnyone, `src/models/pose_guider.py`,
weights on the hub as `patrolli/AnimateAnyone/pose_guider.pth`), built as
`PoseGuider(320, block_out_channels=(16, 32, 96, 256))`.

Layout (keys `conv_in.*`, `blocks.{0..5}.*`, `conv_out.*`, 4-D Conv2d weights, 1 086 480 parameters):
conv_in 3→16, then per stage a 3x3 conv keeping the width and a stride-2 3x3 conv to the next width
(16→16, 16→32 s2, 32→32, 32→96 s2, 96→96, 96→256 s2), SiLU after each conv, and a zero-initialised 3x3
conv_out 256→320. That is exactly ControlNet's conditioning embedding, so the module *is* diffusers'
`ControlNetConditioningEmbedding` (Moore initialised it from `control_v11p_sd15_openpose`'s
`controlnet_cond_embedding.*`). Input: the pose map in [0, 1] (no [-1, 1] normalisation) at image
resolution; output: (B, 320, H/8, W/8), added to the denoising UNet's `conv_in` output.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import InputError, ModelError, ModelNotFoundError, UnsafeModelFormatError


@dataclass(frozen=True)
class PoseGuiderConfig:
    """PoseGuider hyper-parameters; the defaults are the published Moore-AnimateAnyone ones."""

    conditioning_embedding_channels: int = 320
    conditioning_channels: int = 3
    block_out_channels: tuple[int, ...] = (16, 32, 96, 256)

    @classmethod
    def tiny(cls, out_channels: int = 32) -> PoseGuiderConfig:
        """A few-channel guider for tests (same structure: /8 output for four widths)."""
        return cls(conditioning_embedding_channels=out_channels, block_out_channels=(4, 8, 8, 16))

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> PoseGuiderConfig:
        """Read the config off a PoseGuider state dict (key names and conv shapes)."""
        if not looks_like_pose_guider(set(state_dict)):
            raise ModelError("not a PoseGuider state dict (conv_in / blocks.N / conv_out keys expected)")
        w_in = state_dict["conv_in.weight"]
        widths = [int(w_in.shape[0])]
        n_blocks = _block_count(set(state_dict))
        for i in range(1, n_blocks, 2):
            widths.append(int(state_dict[f"blocks.{i}.weight"].shape[0]))
        return cls(
            conditioning_embedding_channels=int(state_dict["conv_out.weight"].shape[0]),
            conditioning_channels=int(w_in.shape[1]),
            block_out_channels=tuple(widths),
        )


def _block_count(keys: set[str]) -> int:
    n = 0
    while f"blocks.{n}.weight" in keys:
        n += 1
    return n


def expected_pose_guider_keys(config: PoseGuiderConfig | None = None) -> set[str]:
    """The exact key set of a PoseGuider state dict."""
    config = config or PoseGuiderConfig()
    names = ["conv_in", "conv_out"] + [f"blocks.{i}" for i in range(2 * (len(config.block_out_channels) - 1))]
    return {f"{n}.{p}" for n in names for p in ("weight", "bias")}


def looks_like_pose_guider(keys: set[str]) -> bool:
    """True when `keys` is a PoseGuider key set: conv_in, an even number of blocks and conv_out, nothing else."""
    n = _block_count(keys)
    if n == 0 or n % 2:
        return False
    names = ["conv_in", "conv_out"] + [f"blocks.{i}" for i in range(n)]
    return set(keys) == {f"{k}.{p}" for k in names for p in ("weight", "bias")}


def build_pose_guider(config: PoseGuiderConfig | None = None, seed: int | None = None) -> nn.Module:
    """A new PoseGuider — diffusers' `ControlNetConditioningEmbedding`, whose keys and forward are Moore's —
    with conv_out zero-initialised as published; `seed` fixes the other weights."""
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    config = config or PoseGuiderConfig()
    if seed is not None:
        torch.manual_seed(seed)
    return ControlNetConditioningEmbedding(
        conditioning_embedding_channels=config.conditioning_embedding_channels,
        conditioning_channels=config.conditioning_channels,
        block_out_channels=tuple(config.block_out_channels),
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, or of a `.pth/.pt/.bin` through `torch.load(weights_only=True)`."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if suffix in (".pth", ".pt", ".bin"):
        try:
            try:
                # memory-mapped: the AnimateAnyone UNet files are 3.4 GB each
                obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                obj = torch.load(str(path), map_location="cpu", weights_only=True)  # legacy (non-zip) format
        except pickle.UnpicklingError as e:
            if "global" not in str(e).lower():  # not a refused class: a damaged or foreign file
                raise ModelError(f"{path.name}: not a readable PyTorch weights file ({e})") from e
            raise UnsafeModelFormatError(
                f"{path.name}: refused, it needs full unpickling (not only tensors); convert it to "
                ".safetensors on a trusted machine"
            ) from e
        except (RuntimeError, OSError, EOFError, ValueError) as e:
            raise ModelError(f"{path.name}: not a readable PyTorch weights file ({e})") from e
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ModelError(f"{path.name}: expected a state dict of tensors")
        return dict(obj)
    raise ModelError(f"{path.name}: unknown weights format {suffix!r} (.safetensors, .pth, .pt, .bin)")


def load_pose_guider(
    path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    """Load `pose_guider.pth` (weights_only) or a converted `.safetensors`; the config is read off the weights."""
    state = read_state_dict(path)
    if not looks_like_pose_guider(set(state)):
        raise ModelError(
            f"{Path(path).name}: not a PoseGuider (keys {sorted(state)[:4]}...; expected conv_in, blocks.N, conv_out)"
        )
    config = PoseGuiderConfig.from_state_dict(state)
    model = build_pose_guider(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{Path(path).name}: PoseGuider weights do not fit: {e}") from e
    return model.to(device=device, dtype=dtype).eval()


def pose_image_tensor(
    image: np.ndarray, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """An RGB uint8 pose map (H, W, 3) as the guider's input: (1, 3, H, W) in [0, 1]."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError("pose_image", f"expected an RGB uint8 image (H, W, 3), got {arr.dtype} {arr.shape}")
    if arr.shape[0] % 8 or arr.shape[1] % 8:
        raise InputError(
            "pose_image", f"height and width must be multiples of 8, got {arr.shape[1]}x{arr.shape[0]}"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float() / 255.0
    return tensor.to(device=device, dtype=dtype)
