"""AnimateAnyone reference attention on stock diffusers `UNet2DConditionModel`s (single image, no motion).

Paper: Hu et al., "Animate Anyone" (CVPR 2024, https://arxiv.org/abs/2311.17117); the recipe and weights are
those of Moore-AnimateAnyone (https://github.com/MooreThreads/Moore-AnimateAnyone,
`src/models/mutual_self_attention.py`, `src/pipelines/pipeline_pose2img.py`; weights
`patrolli/AnimateAnyone`: `reference_unet.pth`, `denoising_unet.pth`, `pose_guider.pth`).

Mechanism, written for diffusers' attention-processor API:
- **writer** (reference UNet): every self-attention `attn1` stores its input — the `norm1`-normalised
  hidden states of its transformer block — in a `ReferenceBank` under the processor's name, then attends
  normally. The reference UNet runs once (timestep 0) per image.
- **reader** (denoising UNet): every `attn1` attends with queries from its own tokens and keys/values over
  `cat([own tokens] + bank[name], dim=1)`, with the same `attn1` weights. With classifier-free guidance the
  batch is `[uncond, cond]` and the uncond half is recomputed with plain self-attention (the bank is ignored
  there), as the original does. An empty bank entry means plain self-attention (bit-identical).
- **pose**: a forward hook on the denoising UNet's `conv_in` adds the PoseGuider features to its output.
Writers and readers are paired by processor name (both UNets share one config), all blocks ("full" fusion).

Checkpoint key sets (checked against stock diffusers, see `check_*_keys`):
- `reference_unet.pth`: stock UNet keys minus `conv_norm_out.*` and `conv_out.*` (Moore's reference UNet
  drops its output head);
- `denoising_unet.pth`: exactly the stock keys (Moore's 3-D UNet without motion modules has the same names);
  motion-module keys (`motion_module.pth`, or a merged video UNet) are refused: with one image they turn the
  result into noise (Moore-AnimateAnyone issues #12 and #59).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from ..core.errors import ModelError
from .pose_guider import read_state_dict

SELF_ATTENTION_SUFFIX = "attn1.processor"
REFERENCE_MISSING_KEYS = frozenset(
    {"conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"}
)
MOTION_KEY_MARKERS = ("motion_modules.", "motion_module.", "temporal_transformer.", "temporal_")


# ---------------------------------------------------------------------------------------------------
# Bank and processors
# ---------------------------------------------------------------------------------------------------


@dataclass
class ReferenceBank:
    """Reference features per self-attention layer, written by the reference UNet and read by the denoiser.

    One bank per generation; `clear()` before writing a new reference. `do_classifier_free_guidance` tells
    readers that the first half of their batch is the unconditional branch.
    """

    features: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    do_classifier_free_guidance: bool = False

    def clear(self) -> None:
        """Forget every stored feature."""
        self.features.clear()

    def store(self, name: str, hidden_states: torch.Tensor) -> None:
        """Append one layer input (B, N, C)."""
        self.features.setdefault(name, []).append(hidden_states.detach())

    def get(self, name: str) -> list[torch.Tensor]:
        """The stored features of one layer (empty list when none)."""
        return self.features.get(name, [])

    def __len__(self) -> int:
        return len(self.features)


class ReferenceWriterProcessor:
    """`attn1` processor of the reference UNet: store the (normalised) input, then run `inner` unchanged."""

    def __init__(self, bank: ReferenceBank, name: str, inner: Any):
        self.bank = bank
        self.name = name
        self.inner = inner

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        self.bank.store(self.name, hidden_states)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


def _batch_match(feature: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if feature.shape[0] == batch:
        return feature
    if feature.shape[0] == 1:
        return feature.expand(batch, *feature.shape[1:])
    if batch % feature.shape[0] == 0:
        return feature.repeat_interleave(batch // feature.shape[0], dim=0)
    raise ModelError(
        f"reference attention {name}: bank batch {feature.shape[0]} does not fit denoising batch {batch}"
    )


class ReferenceReaderProcessor:
    """`attn1` processor of the denoising UNet: keys/values over own tokens + the bank's reference tokens."""

    def __init__(self, bank: ReferenceBank, name: str, inner: Any):
        self.bank = bank
        self.name = name
        self.inner = inner

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        stored = self.bank.get(self.name)
        if not stored or encoder_hidden_states is not None:
            # nothing to read (or a cross-attention call through attn1): plain attention
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if hidden_states.ndim != 3:
            raise ModelError(
                f"reference attention {self.name}: expected (B, N, C) tokens, got {tuple(hidden_states.shape)}"
            )
        if attention_mask is not None:
            raise ModelError(
                f"reference attention {self.name}: an attention mask on self-attention is not supported"
            )
        batch = hidden_states.shape[0]
        bank = [_batch_match(f.to(hidden_states.dtype), batch, self.name) for f in stored]
        if not self.bank.do_classifier_free_guidance:
            context = torch.cat([hidden_states, *bank], dim=1)
            return self.inner(attn, hidden_states, context, None, temb, **kwargs)
        if batch % 2:
            raise ModelError(f"reference attention {self.name}: CFG needs an even batch, got {batch}")
        # uncond rows: plain self-attention; cond rows: own tokens + the bank's rows of the cond half (the
        # original computes the uncond rows with the bank too and then replaces them: same result, less work)
        half = batch // 2
        uncond = self.inner(attn, hidden_states[:half], hidden_states[:half], None, temb, **kwargs)
        cond_h = hidden_states[half:]
        context = torch.cat([cond_h, *(f[half:] for f in bank)], dim=1)
        cond = self.inner(attn, cond_h, context, None, temb, **kwargs)
        return torch.cat([uncond, cond], dim=0)


# ---------------------------------------------------------------------------------------------------
# Install / remove
# ---------------------------------------------------------------------------------------------------


def _install(unet: Any, bank: ReferenceBank, kind: type) -> dict[str, Any]:
    originals = dict(unet.attn_processors)
    if not any(name.endswith(SELF_ATTENTION_SUFFIX) for name in originals):
        raise ModelError("this UNet has no self-attention (`attn1`) layers for reference attention")
    patched = {
        name: kind(bank, name, proc) if name.endswith(SELF_ATTENTION_SUFFIX) else proc
        for name, proc in originals.items()
    }
    unet.set_attn_processor(patched)
    return originals


def install_reference_writer(unet: Any, bank: ReferenceBank) -> dict[str, Any]:
    """Put writer processors on every `attn1` of the reference UNet. Returns the original processors
    (pass them to `restore_processors`)."""
    return _install(unet, bank, ReferenceWriterProcessor)


def install_reference_reader(unet: Any, bank: ReferenceBank) -> dict[str, Any]:
    """Put reader processors on every `attn1` of the denoising UNet. Returns the original processors."""
    return _install(unet, bank, ReferenceReaderProcessor)


def restore_processors(unet: Any, originals: Mapping[str, Any]) -> None:
    """Put back the processors returned by `install_reference_writer` / `install_reference_reader`."""
    unet.set_attn_processor(dict(originals))


@dataclass
class PoseFeatures:
    """Holder of the PoseGuider output the `conv_in` hook adds; set `features` to None to switch it off."""

    features: torch.Tensor | None = None


def install_pose_hook(unet: Any, pose: PoseFeatures) -> RemovableHandle:
    """Forward hook on `unet.conv_in` adding `pose.features` (B or 1, C, h, w) to its output.
    Remove it with `handle.remove()`."""

    def hook(module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        feat = pose.features
        if feat is None:
            return output
        if feat.shape[1:] != output.shape[1:]:
            raise ModelError(
                f"pose features {tuple(feat.shape)} do not match the UNet's conv_in output {tuple(output.shape)}"
                " (PoseGuider width must equal the UNet's first block width; the pose image must have the"
                " latent size x 8)"
            )
        return output + _batch_match(feat.to(output.dtype), output.shape[0], "conv_in")

    return unet.conv_in.register_forward_hook(hook)


# ---------------------------------------------------------------------------------------------------
# Checkpoint key checks
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyReport:
    """Comparison of a checkpoint's keys with a UNet's state dict."""

    missing: tuple[str, ...]
    """Keys the UNet has and the file lacks (beyond those the file is expected to lack)."""
    unexpected: tuple[str, ...]
    """Keys in the file the UNet does not have."""
    mismatched: tuple[str, ...]
    """Keys present on both sides with different shapes (only when tensors were given)."""
    expected_missing: tuple[str, ...] = ()
    """Keys the file legitimately lacks (the reference UNet's output head)."""

    @property
    def ok(self) -> bool:
        """True when the file loads into the UNet with `strict=False` as intended."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """One line for error messages."""
        parts = []
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("wrong shape", self.mismatched),
        ):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        return "; ".join(parts) or "keys match"


def is_motion_key(key: str) -> bool:
    """True for AnimateDiff-style motion-module / temporal-attention keys."""
    return any(marker in key for marker in MOTION_KEY_MARKERS)


def _compare(
    keys: Iterable[str] | Mapping[str, torch.Tensor], unet: Any, allowed_missing: frozenset[str]
) -> KeyReport:
    shapes = {k: tuple(v.shape) for k, v in keys.items()} if isinstance(keys, Mapping) else None
    have = set(keys)
    stock = unet.state_dict()
    stock_keys = set(stock)
    missing = stock_keys - have
    mismatched = (
        sorted(k for k in have & stock_keys if shapes[k] != tuple(stock[k].shape))
        if shapes is not None
        else []
    )
    return KeyReport(
        missing=tuple(sorted(missing - allowed_missing)),
        unexpected=tuple(sorted(have - stock_keys)),
        mismatched=tuple(mismatched),
        expected_missing=tuple(sorted(missing & allowed_missing)),
    )


def _refuse_motion(keys: Iterable[str], what: str) -> None:
    motion = sorted(k for k in keys if is_motion_key(k))
    if motion:
        raise ModelError(
            f"{what} holds {len(motion)} motion-module keys (e.g. {motion[0]}): single-image pose change must "
            "not load motion_module.pth or a video UNet with motion modules (the result would be noise); "
            "use the stage-1 `denoising_unet.pth` alone"
        )


def check_reference_unet_keys(keys: Iterable[str] | Mapping[str, torch.Tensor], unet: Any) -> KeyReport:
    """Compare `reference_unet.pth`'s keys (or tensors) with a stock UNet: conv_norm_out/conv_out may be
    missing (Moore's reference UNet has no output head); anything else missing or extra is reported."""
    _refuse_motion(keys, "reference_unet")
    return _compare(keys, unet, REFERENCE_MISSING_KEYS)


def check_denoising_unet_keys(keys: Iterable[str] | Mapping[str, torch.Tensor], unet: Any) -> KeyReport:
    """Compare `denoising_unet.pth`'s keys (or tensors) with a stock UNet (they must be identical).
    Raises ModelError when motion-module keys are present."""
    _refuse_motion(keys, "denoising_unet")
    return _compare(keys, unet, frozenset())


def _load_into(unet: Any, path: Path, check: Any, what: str) -> KeyReport:
    state = read_state_dict(path)
    report = check(state, unet)
    if not report.ok:
        raise ModelError(f"{Path(path).name} does not fit this UNet as {what}: {report.describe()}")
    unet.load_state_dict(state, strict=False)
    return report


def load_reference_unet_weights(unet: Any, path: Path) -> KeyReport:
    """Load `reference_unet.pth` (weights_only) or its `.safetensors` into a stock UNet after checking keys."""
    return _load_into(unet, path, check_reference_unet_keys, "the reference UNet")


def load_denoising_unet_weights(unet: Any, path: Path) -> KeyReport:
    """Load `denoising_unet.pth` (weights_only) or its `.safetensors` into a stock UNet after checking keys."""
    return _load_into(unet, path, check_denoising_unet_keys, "the denoising UNet")
