"""JoyVASA audio -> facial motion: a diffusion transformer over LivePortrait motion, written for toonbooth.

Follows Cao et al., "JoyVASA: Portrait and Animal Image Animation with Diffusion-Based Audio-Driven Facial
Dynamics and Head Motion Generation" (arXiv:2411.09209), reference implementation
https://github.com/jdh-algo/JoyVASA (MIT; read at commit 74290f6: `src/modules/dit_talking_head.py`,
`src/modules/common.py`, `src/modules/hubert.py`, `src/live_portrait_wmg_wrapper.py`,
`src/live_portrait_wmg_pipeline.py`, `src/utils/helper.py`, `src/utils/filter.py`,
`src/prepare_data/04_gen_template.py`, `src/dataset/talkinghead_dataset_hungry.py`). Research notes:
studios.md B7 / B9.

What the released generator (`motion_generator_hubert_chinese.pt`) is, per the reference code:

- `DitTalkingHead` with module names `audio_feature_map` (768 -> 512), `start_audio_feat` (1, 10, 512),
  `start_motion_feat` (1, 10, 76), `null_audio_feat` (1, 1, 512), `denoising_net` and `diffusion_sched`; the
  HuBERT encoder lives in the same module as `audio_encoder` (a transformers `HubertModel`).
- `denoising_net`: sinusoidal step embedding `TE` -> `diff_step_map` (Linear, GELU, Linear); `feature_proj`
  (76 -> 512); fixed sinusoidal positions `PE`; an 8-layer `nn.TransformerDecoder` (8 heads, FFN 4x, GELU,
  post-norm) whose memory is the audio features, with an alignment mask letting motion frame i attend to audio
  frame i only; `motion_dec` (512 -> 256 -> 76). The network predicts the clean sample (`target="sample"`).
- a 500-step cosine DDPM schedule; sampling is ancestral with classifier-free guidance on the audio
  (null audio = `null_audio_feat`); the inference CLI's default guidance scale is 2.8.
- windows of 100 frames at 25 fps conditioned on the previous window's last 10 motion / audio frames.
- HuBERT features: the window (reflect-padded to whole 20 ms units + 80 samples), conv features resampled to
  2 frames per video frame, the transformer run, then linearly resampled to one feature per video frame.
- the 76-d motion: 63 expression deltas (normalised with mean/std), scale, t (3), pitch, yaw, roll
  (normalised with min/max) — the template stats; the last 6 dims are not used by the reference inference.

UNVERIFIED (no checkpoint was opened, only the code read; see the report / studios.md "not found"):
- whether the released `model` state dict holds `audio_encoder.*` HuBERT weights (the reference loads it with
  `strict=False` over a `from_pretrained` chinese-hubert-base, so either works); `load_joyvasa` takes them when
  present and otherwise needs a separately loaded HuBERT;
- the type of the checkpoint's `args` (read as an `argparse.Namespace`; `torch.load(weights_only=True)` is
  given exactly that class as an allowed global, anything else is refused);
- the meaning of motion dims 70-75 (returned raw in `MotionSequence.extra`);
- fewer sampling steps than the 500 of the reference: `steps` < `n_diff_steps` respaces the same schedule
  (the DDPM posterior between the kept steps); quality at the default of 100 steps is not measured.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import InputError, ModelError, ModelNotFoundError, UnsafeModelFormatError
from ..models.families import ModelFamily
from .liveportrait import rotation_matrix

__all__ = [
    "DEFAULT_SAMPLING_STEPS",
    "DEFAULT_CFG_SCALE",
    "LIP_KEYPOINTS",
    "JoyVASAConfig",
    "DiffusionSchedule",
    "PositionalEncoding",
    "DenoisingNetwork",
    "DitTalkingHead",
    "MotionTemplate",
    "MotionSequence",
    "tiny_hubert_config",
    "hubert_config_from_state_dict",
    "build_hubert",
    "load_hubert",
    "pad_audio_units",
    "hubert_window_features",
    "respaced_timesteps",
    "posterior_coefficients",
    "sample_window",
    "window_plan",
    "generate_motion",
    "driving_keypoints",
    "looks_like_joyvasa",
    "read_joyvasa_checkpoint",
    "load_joyvasa",
    "save_joyvasa",
    "build_joyvasa",
    "convert_motion_template_pickle",
    "read_motion_template",
    "LoadedJoyVASA",
    "JOYVASA_FAMILY",
    "HUBERT_FAMILY",
]

DEFAULT_SAMPLING_STEPS = 100
"""Denoising steps per window by default (the reference runs all 500; 100 respaced steps are 5x faster)."""
DEFAULT_CFG_SCALE = 2.8
"""Audio guidance scale of the reference inference CLI (`argument_config.py`)."""
LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)
"""LivePortrait keypoints whose expression the reference pipeline takes from the driving motion as is."""
AUDIO_RATE = 16000

# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JoyVASAConfig:
    """Motion generator hyper-parameters; defaults = the released hubert-chinese generator."""

    motion_feat_dim: int = 76
    n_motions: int = 100
    n_prev_motions: int = 10
    feature_dim: int = 512
    audio_dim: int = 768
    n_heads: int = 8
    n_layers: int = 8
    mlp_ratio: int = 4
    n_diff_steps: int = 500
    diff_schedule: str = "cosine"
    align_mask_width: int = 1
    use_learnable_pe: bool = False
    use_indicator: bool = False
    target: str = "sample"
    guide_audio: bool = True
    fps: int = 25
    pad_mode: str = "zero"
    """How the last window's audio is padded: `zero` or `replicate` (the checkpoint's `args.pad_mode`)."""

    @property
    def window_samples(self) -> int:
        """Audio samples (16 kHz) per window of `n_motions` frames."""
        return round(AUDIO_RATE / self.fps * self.n_motions)

    @classmethod
    def tiny(cls) -> JoyVASAConfig:
        """Narrow, shallow, short-window generator for tests (same code path and key pattern)."""
        return cls(
            n_motions=20,
            n_prev_motions=4,
            feature_dim=32,
            audio_dim=32,
            n_heads=2,
            n_layers=2,
            mlp_ratio=2,
            n_diff_steps=20,
        )

    @classmethod
    def from_state_dict(
        cls, sd: Mapping[str, torch.Tensor], args: Mapping[str, Any] | None = None
    ) -> JoyVASAConfig:
        """Hyper-parameters from the weights' names and shapes, completed by the checkpoint's `args`."""
        args = dict(args or {})
        afm = _need(sd, "audio_feature_map.weight")
        smf = _need(sd, "start_motion_feat")
        feature_dim, audio_dim = int(afm.shape[0]), int(afm.shape[1])
        n_prev, motion_dim = int(smf.shape[1]), int(smf.shape[2])
        n_layers = 0
        while f"denoising_net.transformer.layers.{n_layers}.linear1.weight" in sd:
            n_layers += 1
        if n_layers == 0:
            raise ModelError("not a JoyVASA generator: no `denoising_net.transformer.layers.N` weights")
        ffn = int(sd["denoising_net.transformer.layers.0.linear1.weight"].shape[0])
        proj_in = int(_need(sd, "denoising_net.feature_proj.weight").shape[1])
        learnable = "denoising_net.PE" in sd
        mask = sd.get("denoising_net.alignment_mask")
        if mask is not None:
            n_motions = int(mask.shape[0]) - n_prev
            row = mask[mask.shape[0] // 2]
            width = (int((~row.bool()).sum()) + 1) // 2
        else:
            width = int(args.get("align_mask_width", 0))
            n_motions = (
                int(sd["denoising_net.PE"].shape[1]) - 1 - n_prev
                if learnable
                else int(args.get("n_motions", cls.n_motions))
            )
        betas = sd.get("diffusion_sched.betas")
        n_steps = int(betas.shape[0]) - 1 if betas is not None else int(args.get("n_diff_steps", 500))
        return cls(
            motion_feat_dim=motion_dim,
            n_motions=n_motions,
            n_prev_motions=n_prev,
            feature_dim=feature_dim,
            audio_dim=audio_dim,
            n_heads=int(args.get("n_heads", 8)),
            n_layers=n_layers,
            mlp_ratio=ffn // feature_dim,
            n_diff_steps=n_steps,
            diff_schedule=str(args.get("diff_schedule", "cosine")),
            align_mask_width=width,
            use_learnable_pe=learnable,
            use_indicator=proj_in == motion_dim + 1,
            guide_audio="null_audio_feat" in sd,
            fps=int(args.get("fps", 25)),
            pad_mode=str(args.get("pad_mode", "zero")),
        )


def _need(sd: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    try:
        return sd[key]
    except KeyError as e:
        raise ModelError(f"not a JoyVASA motion generator state dict: `{key}` is missing") from e


# ---------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------


class DiffusionSchedule(nn.Module):
    """DDPM schedule buffers (index 0 is a padding step with beta = 0): betas, alphas, cumulative
    alpha_bars, and the two sigma choices (sqrt(beta) and the posterior's)."""

    def __init__(self, num_steps: int, mode: str = "cosine", beta_1: float = 1e-4, beta_t: float = 0.02):
        super().__init__()
        if mode == "linear":
            betas = torch.linspace(beta_1, beta_t, num_steps)
        elif mode == "quadratic":
            betas = torch.linspace(beta_1**0.5, beta_t**0.5, num_steps) ** 2
        elif mode == "sigmoid":
            betas = torch.sigmoid(torch.linspace(-5, 5, num_steps)) * (beta_t - beta_1) + beta_1
        elif mode == "cosine":
            s = 0.008
            x = torch.linspace(0, num_steps, num_steps + 1)
            ab = torch.cos(((x / num_steps) + s) / (1 + s) * torch.pi * 0.5) ** 2
            ab = ab / ab[0]
            betas = torch.clip(1 - ab[1:] / ab[:-1], 0.0001, 0.999)
        else:
            raise InputError("diff_schedule", f"expected linear/quadratic/sigmoid/cosine, got {mode!r}", mode)
        betas = torch.cat([torch.zeros(1, dtype=betas.dtype, device=betas.device), betas])
        alphas = 1 - betas
        log_ab = torch.log(alphas)
        for i in range(1, log_ab.shape[0]):  # sequential float32 accumulation, as the reference
            log_ab[i] += log_ab[i - 1]
        alpha_bars = log_ab.exp()
        sigmas_flex = torch.sqrt(betas)
        inflex = torch.zeros_like(betas)
        inflex[1:] = (1 - alpha_bars[:-1]) / (1 - alpha_bars[1:]) * betas[1:]
        self.num_steps = num_steps
        self.register_buffer("betas", betas)
        self.register_buffer("alphas", alphas)
        self.register_buffer("alpha_bars", alpha_bars)
        self.register_buffer("sigmas_flex", sigmas_flex)
        self.register_buffer("sigmas_inflex", torch.sqrt(inflex))


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal table `pe` (1, max_len, d): sin on even, cos on odd channels."""

    def __init__(self, d_model: int, max_len: int = 600, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1]])


def alignment_mask(length: int, width: int) -> torch.Tensor:
    """Boolean memory mask (True = blocked): frame i sees audio frames i-(width-1) .. i+(width-1)."""
    mask = torch.ones(length, length, dtype=torch.bool)
    e = width - 1
    for i in range(length):
        mask[i, max(0, i - e) : i + e + 1] = False
    return mask


class DenoisingNetwork(nn.Module):
    """Transformer decoder over [previous motion, noisy motion] with audio features as memory."""

    def __init__(self, config: JoyVASAConfig):
        super().__init__()
        c = self.config = config
        d = c.feature_dim
        self.TE = PositionalEncoding(d, max_len=c.n_diff_steps + 1)
        self.diff_step_map = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        if c.use_learnable_pe:
            self.PE = nn.Parameter(torch.randn(1, 1 + c.n_prev_motions + c.n_motions, d))
        else:
            self.PE = PositionalEncoding(d)
        self.feature_proj = nn.Linear(c.motion_feat_dim + (1 if c.use_indicator else 0), d)
        layer = nn.TransformerDecoderLayer(
            d_model=d, nhead=c.n_heads, dim_feedforward=c.mlp_ratio * d, activation="gelu", batch_first=True
        )
        self.transformer = nn.TransformerDecoder(layer, num_layers=c.n_layers)
        if c.align_mask_width > 0:
            self.register_buffer(
                "alignment_mask", alignment_mask(c.n_prev_motions + c.n_motions, c.align_mask_width)
            )
        else:
            self.alignment_mask = None
        self.motion_dec = nn.Sequential(nn.Linear(d, d // 2), nn.GELU(), nn.Linear(d // 2, c.motion_feat_dim))

    def forward(
        self,
        motion_feat: torch.Tensor,
        audio_feat: torch.Tensor,
        prev_motion_feat: torch.Tensor,
        prev_audio_feat: torch.Tensor,
        step: torch.Tensor,
        indicator: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(N, L, D) noisy motion, (N, L, d) audio, (N, Lp, D) / (N, Lp, d) context, (N,) steps
        -> (N, Lp + L, D) predicted clean motion (or noise, per `target`)."""
        c = self.config
        step_emb = self.diff_step_map(self.TE.pe[0, step]).unsqueeze(1)
        feats = torch.cat([prev_motion_feat, motion_feat], dim=1)
        if c.use_indicator:
            if indicator is None:
                indicator = torch.ones(motion_feat.shape[:2], device=motion_feat.device)
            ind = torch.cat([indicator.new_zeros(indicator.shape[0], c.n_prev_motions), indicator], dim=1)
            feats = torch.cat([feats, ind.unsqueeze(-1).to(feats.dtype)], dim=-1)
        feats = self.feature_proj(feats)
        feats = (feats + self.PE if c.use_learnable_pe else self.PE(feats)) + step_emb
        memory = torch.cat([prev_audio_feat, audio_feat], dim=1)
        out = self.transformer(feats, memory, memory_mask=self.alignment_mask)
        return self.motion_dec(out)


class DitTalkingHead(nn.Module):
    """The JoyVASA motion generator; `audio_encoder` (a transformers `HubertModel`) is optional here so
    the same class holds the public checkpoint with or without HuBERT weights."""

    def __init__(self, config: JoyVASAConfig | None = None, audio_encoder: nn.Module | None = None):
        super().__init__()
        c = self.config = config or JoyVASAConfig()
        self.audio_encoder = audio_encoder
        self.audio_feature_map = nn.Linear(c.audio_dim, c.feature_dim)
        self.start_audio_feat = nn.Parameter(torch.randn(1, c.n_prev_motions, c.feature_dim))
        self.start_motion_feat = nn.Parameter(torch.randn(1, c.n_prev_motions, c.motion_feat_dim))
        self.denoising_net = DenoisingNetwork(c)
        self.diffusion_sched = DiffusionSchedule(c.n_diff_steps, c.diff_schedule)
        if c.guide_audio:
            self.null_audio_feat = nn.Parameter(torch.randn(1, 1, c.feature_dim))
        else:
            self.null_audio_feat = None

    @property
    def device(self) -> torch.device:
        return self.audio_feature_map.weight.device

    def audio_features(self, audio: torch.Tensor) -> torch.Tensor:
        """16 kHz window(s) (N, window_samples) -> mapped audio features (N, n_motions, feature_dim)."""
        if self.audio_encoder is None:
            raise ModelError("this JoyVASA generator has no HuBERT audio encoder attached")
        hidden = hubert_window_features(self.audio_encoder, audio, self.config.n_motions, self.config.fps)
        return self.audio_feature_map(hidden.to(self.audio_feature_map.weight.dtype))


def build_joyvasa(
    config: JoyVASAConfig | None = None, hubert: nn.Module | None = None, seed: int | None = None
) -> DitTalkingHead:
    """A generator with fresh (optionally seeded) random weights, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return DitTalkingHead(config, hubert).eval()


# ---------------------------------------------------------------------------------------------------
# HuBERT (transformers) and the audio front-end
# ---------------------------------------------------------------------------------------------------


def tiny_hubert_config(hidden_size: int = 32, conv_width: int = 16):
    """A 2-layer HuBERT with narrow convs but the real conv strides/kernels (320-sample hop, 400 window)."""
    from transformers import HubertConfig

    return HubertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        conv_dim=(conv_width,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )


def build_hubert(config=None, seed: int | None = None):
    """A transformers `HubertModel` (random weights) from a `HubertConfig` (default: hubert-base)."""
    from transformers import HubertConfig, HubertModel

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return HubertModel(config or HubertConfig()).eval()


def load_hubert(path: str | Path, device: str | torch.device = "cpu"):
    """A local HuBERT folder (e.g. TencentGameMate/chinese-hubert-base) through `HubertModel.from_pretrained`,
    offline; transformers reads safetensors or `pytorch_model.bin` with weights_only."""
    from transformers import HubertModel

    path = Path(path)
    if not path.is_dir():
        raise ModelNotFoundError(f"HuBERT folder {str(path)!r} does not exist")
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the CLI's output or the server log
    try:
        model = HubertModel.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path.name}: not a loadable HuBERT model folder ({e})") from e
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return model.to(device).eval()


def hubert_config_from_state_dict(sd: Mapping[str, torch.Tensor]):
    """A `HubertConfig` matching HuBERT weights (keys relative to the model, e.g. `encoder.layers.0...`).

    Conv strides and `do_stable_layer_norm` cannot be read off the weights: the base model's are assumed;
    the attention head count is taken as hidden / 64 (base 12, large 16)."""
    from transformers import HubertConfig

    q = sd.get("encoder.layers.0.attention.q_proj.weight")
    if q is None:
        raise ModelError("not a HuBERT state dict: `encoder.layers.0.attention.q_proj.weight` is missing")
    hidden = int(q.shape[0])
    n_layers = 0
    while f"encoder.layers.{n_layers}.attention.q_proj.weight" in sd:
        n_layers += 1
    n_conv = 0
    while f"feature_extractor.conv_layers.{n_conv}.conv.weight" in sd:
        n_conv += 1
    convs = [sd[f"feature_extractor.conv_layers.{i}.conv.weight"] for i in range(n_conv)]
    pos = next(
        (sd[k] for k in _POS_CONV_KEYS if k in sd),
        None,
    )
    kw: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": n_layers,
        "num_attention_heads": max(1, hidden // 64),
        "intermediate_size": int(sd["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0]),
        "conv_dim": tuple(int(w.shape[0]) for w in convs),
        "conv_kernel": tuple(int(w.shape[2]) for w in convs),
        "conv_bias": "feature_extractor.conv_layers.0.conv.bias" in sd,
        "feat_extract_norm": "layer"
        if "feature_extractor.conv_layers.1.layer_norm.weight" in sd
        else "group",
        "feat_proj_layer_norm": "feature_projection.layer_norm.weight" in sd,
    }
    if n_conv == 7:
        kw["conv_stride"] = (5, 2, 2, 2, 2, 2, 2)
    if pos is not None:
        kw["num_conv_pos_embeddings"] = int(pos.shape[2])
        kw["num_conv_pos_embedding_groups"] = hidden // int(pos.shape[1])
    return HubertConfig(**kw)


_POS_CONV_KEYS = (
    "encoder.pos_conv_embed.conv.weight_v",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    "encoder.pos_conv_embed.conv.weight",
)


def _hubert_keys_for(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the positional conv's weight-norm tensors between the old (`weight_g`/`weight_v`) and the
    parametrization (`parametrizations.weight.original0/1`) layouts, whichever `model` uses."""
    own = set(model.state_dict())
    old_g, old_v = "encoder.pos_conv_embed.conv.weight_g", "encoder.pos_conv_embed.conv.weight_v"
    new_g = "encoder.pos_conv_embed.conv.parametrizations.weight.original0"
    new_v = "encoder.pos_conv_embed.conv.parametrizations.weight.original1"
    out = dict(sd)
    if new_g in own and old_g in out:
        out[new_g], out[new_v] = out.pop(old_g), out.pop(old_v)
    elif old_g in own and new_g in out:
        out[old_g], out[old_v] = out.pop(new_g), out.pop(new_v)
    return out


def pad_audio_units(audio: torch.Tensor, unit: int = 320, threshold: int = 80) -> torch.Tensor:
    """The reference's HuBERT input padding: (N, S) -> both sides extended so the length is about a whole
    number of 20 ms units plus 80 samples (reflect padding applied twice, then one replicated sample)."""
    n = audio.shape[1]
    side = math.ceil((unit * (n // unit) + threshold - n) / 2)
    if side >= 0:
        reflect, rep = side // 2, side % 2
        if reflect > 0:
            audio = F.pad(audio[:, None], (reflect, reflect), mode="reflect")[:, 0]
            audio = F.pad(audio[:, None], (reflect, reflect), mode="reflect")[:, 0]
        if rep > 0:
            audio = F.pad(audio[:, None], (1, 1), mode="replicate")[:, 0]
    return audio


def hubert_window_features(
    hubert: nn.Module, audio: torch.Tensor, n_frames: int, fps: int = 25
) -> torch.Tensor:
    """HuBERT `last_hidden_state` per video frame, (N, n_frames, hidden), as JoyVASA computes it: conv
    features (50 per second) truncated / resampled to 2 * n_frames, projection and transformer, then linear
    resampling to n_frames."""
    x = pad_audio_units(audio.to(next(hubert.parameters()).dtype))
    feats = hubert.feature_extractor(x)  # (N, C, L) at 50 per second
    two = 2 * n_frames
    feats = feats[:, :, : round(two * 50 / fps)]
    feats = F.interpolate(feats, size=two, mode="linear", align_corners=False).transpose(1, 2)
    hidden = hubert.feature_projection(feats)
    if isinstance(hidden, tuple):  # older transformers return (hidden, normed)
        hidden = hidden[0]
    out = hubert.encoder(hidden)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return F.interpolate(hidden.transpose(1, 2), size=n_frames, mode="linear", align_corners=False).transpose(
        1, 2
    )


# ---------------------------------------------------------------------------------------------------
# Motion template and sequences
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotionTemplate:
    """Normalisation stats of the motion features (the reference's `motion_template.pkl`, as JSON)."""

    mean_exp: np.ndarray
    std_exp: np.ndarray
    min_scale: np.ndarray
    max_scale: np.ndarray
    min_t: np.ndarray
    max_t: np.ndarray
    min_pitch: np.ndarray
    max_pitch: np.ndarray
    min_yaw: np.ndarray
    max_yaw: np.ndarray
    min_roll: np.ndarray
    max_roll: np.ndarray

    _SIZES = {"scale": 1, "t": 3, "pitch": 1, "yaw": 1, "roll": 1}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MotionTemplate:
        """From a mapping of stat name -> list/array (extra keys such as `mean_R` are ignored)."""
        vals: dict[str, np.ndarray] = {}
        for f in fields(cls):
            if f.name not in data:
                raise InputError("motion_template", f"missing `{f.name}`", sorted(data))
            arr = np.asarray(data[f.name], dtype=np.float32).reshape(-1)
            vals[f.name] = arr
        k = vals["mean_exp"].size
        if k % 3 or vals["std_exp"].size != k:
            raise InputError("motion_template", f"`mean_exp`/`std_exp` must have 3K values, got {k}", k)
        for name, size in cls._SIZES.items():
            for stat in ("min", "max"):
                if vals[f"{stat}_{name}"].size != size:
                    raise InputError(
                        "motion_template",
                        f"`{stat}_{name}` must have {size} value(s), got {vals[f'{stat}_{name}'].size}",
                        vals[f"{stat}_{name}"].size,
                    )
        return cls(**vals)

    @classmethod
    def from_json(cls, path: str | Path) -> MotionTemplate:
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"motion template {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ModelError(f"{path.name}: not JSON ({e})") from e
        if not isinstance(data, dict):
            raise ModelError(f"{path.name}: expected a JSON object of stats, got {type(data).__name__}")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, list[float]]:
        return {f.name: [float(v) for v in getattr(self, f.name)] for f in fields(self)}

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    @property
    def num_kp(self) -> int:
        return self.mean_exp.size // 3

    @classmethod
    def identity(cls, num_kp: int = 21) -> MotionTemplate:
        """Stats that leave the normalised values unchanged (mean 0, std 1, min 0, max 1)."""
        z = {n: np.zeros(s, np.float32) for n, s in cls._SIZES.items()}
        o = {n: np.ones(s, np.float32) for n, s in cls._SIZES.items()}
        return cls(
            np.zeros(3 * num_kp, np.float32),
            np.ones(3 * num_kp, np.float32),
            *(x for n in cls._SIZES for x in (z[n], o[n])),
        )


@dataclass
class MotionSequence:
    """Per-frame LivePortrait motion at `fps`: expression deltas (T, K, 3), scale (T, 1), translation
    (T, 3), head pose in degrees (T,) each, and the raw unused feature dims (T, n_extra)."""

    exp: np.ndarray
    scale: np.ndarray
    t: np.ndarray
    pitch: np.ndarray
    yaw: np.ndarray
    roll: np.ndarray
    extra: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    fps: int = 25

    @property
    def n_frames(self) -> int:
        return int(self.exp.shape[0])

    def rotation(self) -> np.ndarray:
        """(T, 3, 3) LivePortrait rotation matrices (keypoints as row vectors: x @ R)."""
        r = rotation_matrix(
            *(torch.from_numpy(np.asarray(a, np.float32)) for a in (self.pitch, self.yaw, self.roll))
        )
        return r.numpy()

    def smoothed_pose(self, alpha: float) -> MotionSequence:
        """Exponential moving average of scale, translation and pose (the reference applies alpha 0.01)."""
        if not 0 < alpha <= 1:
            raise InputError("pose_ema_alpha", f"expected 0 < alpha <= 1, got {alpha}", alpha)
        pose = np.concatenate(
            [self.scale, self.t, self.pitch[:, None], self.yaw[:, None], self.roll[:, None]], 1
        )
        out = pose.copy()
        for i in range(1, len(out)):
            out[i] = alpha * pose[i] + (1 - alpha) * out[i - 1]
        return replace(
            self,
            scale=out[:, :1],
            t=out[:, 1:4],
            pitch=out[:, 4].copy(),
            yaw=out[:, 5].copy(),
            roll=out[:, 6].copy(),
        )

    def trimmed(self, n: int) -> MotionSequence:
        """The first `n` frames (the last frame repeated when there are fewer)."""
        idx = np.minimum(np.arange(n), self.n_frames - 1)
        extra = self.extra[idx] if self.extra.size else self.extra
        return replace(
            self,
            exp=self.exp[idx],
            scale=self.scale[idx],
            t=self.t[idx],
            pitch=self.pitch[idx],
            yaw=self.yaw[idx],
            roll=self.roll[idx],
            extra=extra,
        )


def denormalize_motion(coef: np.ndarray, template: MotionTemplate, fps: int = 25) -> MotionSequence:
    """(T, D) normalised features -> motion: exp = c * std + mean; scale, t, pitch, yaw, roll = c * (max - min)
    + min, in the order exp (3K), scale, t (3), pitch, yaw, roll; dims after those are `extra`."""
    k3 = template.mean_exp.size
    if coef.shape[1] < k3 + 7:
        raise InputError(
            "template", f"motion has {coef.shape[1]} dims, the template needs {k3 + 7}", coef.shape
        )
    tm = template

    def mm(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return x * (hi - lo) + lo

    exp = coef[:, :k3] * tm.std_exp + tm.mean_exp
    return MotionSequence(
        exp=exp.reshape(len(coef), k3 // 3, 3).astype(np.float32),
        scale=mm(coef[:, k3 : k3 + 1], tm.min_scale, tm.max_scale).astype(np.float32),
        t=mm(coef[:, k3 + 1 : k3 + 4], tm.min_t, tm.max_t).astype(np.float32),
        pitch=mm(coef[:, k3 + 4], tm.min_pitch[0], tm.max_pitch[0]).astype(np.float32),
        yaw=mm(coef[:, k3 + 5], tm.min_yaw[0], tm.max_yaw[0]).astype(np.float32),
        roll=mm(coef[:, k3 + 6], tm.min_roll[0], tm.max_roll[0]).astype(np.float32),
        extra=coef[:, k3 + 7 :].astype(np.float32),
        fps=fps,
    )


# ---------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------


def respaced_timesteps(n_diff_steps: int, steps: int) -> list[int]:
    """`steps` distinct schedule indices from n_diff_steps down to 1 (all of them when steps >= n)."""
    if steps < 1:
        raise InputError("steps", f"expected at least 1 sampling step, got {steps}", steps)
    if steps >= n_diff_steps:
        return list(range(n_diff_steps, 0, -1))
    ts = np.round(np.linspace(n_diff_steps, 1, steps)).astype(int)
    return sorted({int(t) for t in ts}, reverse=True)


def posterior_coefficients(
    sched: DiffusionSchedule, t: int, t_prev: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alpha, alpha_bar, alpha_bar_prev, sigma) of the DDPM step t -> t_prev (t_prev < t; t_prev = t - 1
    uses the stored per-step values, as the reference sampler does)."""
    ab, ab_prev = sched.alpha_bars[t], sched.alpha_bars[t_prev]
    if t_prev == t - 1:
        return sched.alphas[t], ab, ab_prev, sched.sigmas_inflex[t]
    alpha = ab / ab_prev
    sigma = torch.sqrt((1 - ab_prev) / (1 - ab) * (1 - alpha))
    return alpha, ab, ab_prev, sigma


def sample_window(
    model: DitTalkingHead,
    audio_feat: torch.Tensor,
    prev_motion_feat: torch.Tensor | None,
    prev_audio_feat: torch.Tensor | None,
    motion_init: torch.Tensor,
    *,
    steps: int = DEFAULT_SAMPLING_STEPS,
    cfg_scale: float = DEFAULT_CFG_SCALE,
    generator: torch.Generator | None = None,
    indicator: torch.Tensor | None = None,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Ancestral DDPM over one window with classifier-free audio guidance -> (N, n_motions, D) clean motion.

    `on_step()` runs after every denoising step; an exception raised there stops sampling (cancel)."""
    c = model.config
    sched = model.diffusion_sched
    n = audio_feat.shape[0]
    if prev_motion_feat is None:
        prev_motion_feat = model.start_motion_feat.expand(n, -1, -1)
    if prev_audio_feat is None:
        prev_audio_feat = model.start_audio_feat.expand(n, -1, -1)
    guided = model.null_audio_feat is not None
    if guided:
        null = model.null_audio_feat.expand(n, c.n_motions, -1)
        audio_in = torch.cat([null, audio_feat])
        prev_m, prev_a = torch.cat([prev_motion_feat] * 2), torch.cat([prev_audio_feat] * 2)
        ind = torch.cat([indicator] * 2) if indicator is not None else None
    else:
        audio_in, prev_m, prev_a, ind = audio_feat, prev_motion_feat, prev_audio_feat, indicator
    ts = respaced_timesteps(c.n_diff_steps, steps)
    x = motion_init
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else 0
        alpha, ab, ab_prev, sigma = posterior_coefficients(sched, t, t_prev)
        step = torch.full((audio_in.shape[0],), t, dtype=torch.long, device=x.device)
        x_in = torch.cat([x, x]) if guided else x
        res = model.denoising_net(x_in, audio_in, prev_m, prev_a, step, ind)[:, -c.n_motions :]
        if guided:
            uncond, cond = res.chunk(2)
            target = uncond + cfg_scale * (cond - uncond)
        else:
            target = res
        if c.target == "sample":
            c0 = (1 - ab_prev) * torch.sqrt(alpha) / (1 - ab)
            c1 = (1 - alpha) * torch.sqrt(ab_prev) / (1 - ab)
            mean = c0 * x + c1 * target
        else:  # predicted noise: x0 = (x - sqrt(1 - ab) eps) / sqrt(ab), same posterior
            x0 = (x - torch.sqrt(1 - ab) * target) / torch.sqrt(ab)
            c0 = (1 - ab_prev) * torch.sqrt(alpha) / (1 - ab)
            c1 = (1 - alpha) * torch.sqrt(ab_prev) / (1 - ab)
            mean = c0 * x + c1 * x0
        if t_prev > 0:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = mean + sigma * z
        else:
            x = mean
        if on_step is not None:
            on_step()
    return x


@dataclass(frozen=True)
class WindowPlan:
    """How an utterance is cut into windows (the reference's `gen_motion_sequence` arithmetic)."""

    n_windows: int
    padded_samples: int
    n_padding_frames: int
    n_output_frames: int
    """ceil(duration * fps): the frames returned."""


def window_plan(
    n_samples: int, config: JoyVASAConfig, pad_left: int = 1280, pad_right: int = 640
) -> WindowPlan:
    """Windows for `n_samples` of 16 kHz audio: the audio is zero-padded by (pad_left, pad_right) samples as
    in the reference, cut into windows of n_motions frames, the last one padded."""
    total = n_samples + pad_left + pad_right
    clip_len = int(total / AUDIO_RATE * config.fps)
    n_windows = 1 if clip_len <= config.n_motions else math.ceil(clip_len / config.n_motions)
    pad = config.window_samples * n_windows - total
    unit = AUDIO_RATE / config.fps
    return WindowPlan(
        n_windows=n_windows,
        padded_samples=total,
        n_padding_frames=max(0, math.ceil(pad / unit)),
        n_output_frames=-(-n_samples * config.fps // AUDIO_RATE),
    )


def _resample_to_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate == AUDIO_RATE:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(int(sample_rate), AUDIO_RATE)
    return resample_poly(audio, AUDIO_RATE // g, int(sample_rate) // g).astype(np.float32)


@torch.no_grad()
def generate_motion(
    model: DitTalkingHead,
    audio: np.ndarray,
    sample_rate: int,
    template: MotionTemplate,
    *,
    steps: int = DEFAULT_SAMPLING_STEPS,
    cfg_scale: float = DEFAULT_CFG_SCALE,
    seed: int = 0,
    pose_ema_alpha: float | None = 0.01,
    on_step: Callable[[int, int], None] | None = None,
) -> MotionSequence:
    """Audio (float mono at `sample_rate`) -> per-frame motion at the model's fps (25), ceil(duration * fps)
    frames. `model.audio_encoder` must be set (HuBERT).

    `steps` denoising steps per window (`DEFAULT_SAMPLING_STEPS`; the reference runs all n_diff_steps = 500);
    `cfg_scale` audio guidance; `seed` fixes the noise; `pose_ema_alpha` smooths scale / t / pose like the
    reference (0.01: nearly still head; None: raw). `on_step(done, total)` is called after every denoising
    step of every window; raising in it cancels the generation (the exception propagates)."""
    x = np.asarray(audio)
    if x.ndim != 1 or x.size == 0:
        raise InputError("audio", f"expected non-empty mono samples (1-D), got shape {x.shape}", x.shape)
    if not np.all(np.isfinite(x)):
        raise InputError("audio", "samples must be finite numbers (found NaN or inf)", None)
    if sample_rate <= 0:
        raise InputError("sample_rate", f"expected a positive rate, got {sample_rate}", sample_rate)
    c = model.config
    x16 = _resample_to_16k(x.astype(np.float32), sample_rate)
    plan = window_plan(len(x16), c)
    dev = model.device
    wav = torch.from_numpy(np.ascontiguousarray(x16)).to(dev)
    wav = F.pad(wav, (1280, 640))
    extra = c.window_samples * plan.n_windows - wav.shape[0]
    if extra > 0:
        fill = wav[-1] if c.pad_mode == "replicate" else torch.zeros((), device=dev)
        wav = torch.cat([wav, fill.expand(extra)])
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    dtype = model.audio_feature_map.weight.dtype
    motion_init = torch.randn((1, c.n_motions, c.motion_feat_dim), generator=gen, device=dev).to(dtype)
    total = plan.n_windows * len(respaced_timesteps(c.n_diff_steps, steps))
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_step is not None:
            on_step(done, total)

    prev_motion = prev_audio = None
    chunks = []
    unit = AUDIO_RATE / c.fps
    for w in range(plan.n_windows):
        a0, a1 = round(w * c.n_motions * unit), round((w + 1) * c.n_motions * unit)
        audio_feat = model.audio_features(wav[a0:a1][None])
        indicator = None
        if c.use_indicator:
            indicator = torch.ones((1, c.n_motions), device=dev, dtype=dtype)
            if w == plan.n_windows - 1 and plan.n_padding_frames > 0:
                indicator[:, -plan.n_padding_frames :] = 0
        motion = sample_window(
            model,
            audio_feat,
            prev_motion,
            prev_audio,
            motion_init,
            steps=steps,
            cfg_scale=cfg_scale,
            generator=gen,
            indicator=indicator,
            on_step=tick,
        )
        prev_motion = motion[:, -c.n_prev_motions :].clone()
        prev_audio = audio_feat[:, -c.n_prev_motions :]
        chunks.append(motion[0])
    coef = torch.cat(chunks).float().cpu().numpy()
    seq = denormalize_motion(coef, template, fps=c.fps)
    if pose_ema_alpha is not None:
        seq = seq.smoothed_pose(pose_ema_alpha)
    return seq.trimmed(plan.n_output_frames)


# ---------------------------------------------------------------------------------------------------
# Motion -> LivePortrait driving keypoints
# ---------------------------------------------------------------------------------------------------


def _hull_volume(points: np.ndarray) -> float:
    from scipy.spatial import ConvexHull, QhullError

    try:
        return float(ConvexHull(points).volume)
    except (QhullError, ValueError):
        return 0.0


def driving_keypoints(
    source: Mapping[str, torch.Tensor],
    motion: MotionSequence,
    *,
    expression_scale: float = 1.0,
    head_motion_scale: float = 1.0,
    still: bool = False,
    expression_friendly: bool = True,
    lip_keypoints: tuple[int, ...] = LIP_KEYPOINTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source keypoint info (LivePortrait `get_kp_info`, batch 1, pose in degrees) + generated motion
    -> (x_s (1, K, 3), x_d (T, K, 3)) driving keypoints, the reference pipeline's relative recipe:

    R = R_d,i R_d,0^T R_s; exp = exp_s + (exp_d,i - exp_d,0) with the lip keypoints taken from exp_d,i;
    scale = s_s * s_d,i / s_d,0; t = t_s + (t_d,i - t_d,0) with z = 0; x_d = scale (x_c R + exp) + t.
    `expression_friendly` (the CLI default) then rescales the motion relative to frame 0 by
    sqrt(hull volume of x_s / hull volume of x_d,0). `expression_scale` scales the expression change
    (lips: blend from the source's to the driving value), `head_motion_scale` the pose / scale / translation
    change; `still` keeps the source pose. Apply the renderer's `stitch(x_s, x_d)` afterwards."""
    from .liveportrait import transform_keypoint

    dev = source["kp"].device
    f32 = dict(dtype=torch.float32, device=dev)
    h = 0.0 if still else float(head_motion_scale)
    e = float(expression_scale)
    kp_c = source["kp"].reshape(1, -1, 3).float()
    k = kp_c.shape[1]
    if motion.exp.shape[1] != k:
        raise InputError(
            "motion", f"motion has {motion.exp.shape[1]} keypoints, the source {k}", motion.exp.shape
        )
    x_s = transform_keypoint(
        {n: source[n].float() for n in ("kp", "exp", "pitch", "yaw", "roll", "scale", "t")}
    ).reshape(1, k, 3)
    r_s = rotation_matrix(source["pitch"], source["yaw"], source["roll"]).float()
    ang = {n: torch.as_tensor(getattr(motion, n), **f32) for n in ("pitch", "yaw", "roll")}
    ang = {n: v[:1] + h * (v - v[:1]) for n, v in ang.items()}
    r_d = rotation_matrix(ang["pitch"], ang["yaw"], ang["roll"])
    r_new = r_d @ r_d[:1].transpose(1, 2) @ r_s
    exp_d = torch.as_tensor(motion.exp, **f32)
    exp_s = source["exp"].reshape(1, k, 3).float()
    delta = exp_s + e * (exp_d - exp_d[:1])
    lips = list(lip_keypoints)
    delta[:, lips] = exp_s[:, lips] + e * (exp_d[:, lips] - exp_s[:, lips])
    sc = torch.as_tensor(motion.scale, **f32).reshape(-1, 1, 1)
    scale = source["scale"].reshape(1, 1, 1).float() * (sc / sc[:1]) ** h
    td = torch.as_tensor(motion.t, **f32).reshape(-1, 1, 3)
    t = source["t"].reshape(1, 1, 3).float() + h * (td - td[:1])
    t = torch.cat([t[..., :2], torch.zeros_like(t[..., 2:])], dim=-1)
    x_d = scale * (kp_c @ r_new + delta) + t
    if expression_friendly:
        v_s = _hull_volume(x_s[0].cpu().numpy())
        v_0 = _hull_volume(x_d[0].cpu().numpy())
        mult = math.sqrt(v_s) / math.sqrt(v_0) if v_s > 0 and v_0 > 0 else 1.0
        x_d = x_s + (x_d - x_d[:1]) * mult
    return x_s, x_d


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------


def looks_like_joyvasa(keys: set[str]) -> bool:
    return {"audio_feature_map.weight", "start_motion_feat", "denoising_net.feature_proj.weight"} <= keys


# deterministic buffers: rebuilt from the config, taken from the file when it has them
_DETERMINISTIC = ("denoising_net.TE.pe", "denoising_net.PE.pe", "denoising_net.alignment_mask")


def read_joyvasa_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, args) of a JoyVASA generator file.

    `.pt`/`.pth`: the reference's `{'model': state_dict, 'args': Namespace, ...}` through
    `torch.load(weights_only=True)` with `argparse.Namespace` as the only extra allowed class;
    `.safetensors`: the flat state dict, args as JSON in the metadata key `args`."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"JoyVASA generator {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        try:
            args = json.loads(meta.get("args", "{}"))
        except json.JSONDecodeError as e:
            raise ModelError(f"{path.name}: metadata `args` is not JSON ({e})") from e
        return load_file(str(path), device="cpu"), dict(args)
    if suffix not in (".pt", ".pth", ".bin", ".ckpt"):
        raise ModelError(f"{path.name}: unknown JoyVASA weights format {suffix!r} (.pt, .safetensors)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UnsafeModelFormatError(
            f"{path.name}: torch.load(weights_only=True) refused it ({e}); toonbooth only unpickles tensors and "
            "argparse.Namespace. Convert it to .safetensors on a trusted machine."
        ) from e
    if not isinstance(obj, dict):
        raise ModelError(f"{path.name}: expected a dict checkpoint, got {type(obj).__name__}")
    sd = obj.get("model", obj)
    if not isinstance(sd, dict):
        raise ModelError(f"{path.name}: `model` is not a state dict ({type(sd).__name__})")
    raw_args = obj.get("args")
    args = vars(raw_args) if isinstance(raw_args, argparse.Namespace) else dict(raw_args or {})
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}, args


def load_joyvasa(
    path: str | Path,
    hubert: nn.Module | None = None,
    config: JoyVASAConfig | None = None,
    device: str | torch.device = "cpu",
) -> DitTalkingHead:
    """The generator from its file, with its HuBERT attached.

    HuBERT weights inside the file (`audio_encoder.*`) are loaded into `hubert` when given, else into a
    HuBERT built from their shapes; without them in the file, `hubert` (e.g. `load_hubert(chinese-hubert-base)`)
    is required. The config is read off the weights and args unless given."""
    sd, args = read_joyvasa_checkpoint(path)
    name = Path(path).name
    if not looks_like_joyvasa(set(sd)):
        raise ModelError(
            f"{name} is not a JoyVASA motion generator (no audio_feature_map / denoising_net keys)"
        )
    audio = {k[len("audio_encoder.") :]: v for k, v in sd.items() if k.startswith("audio_encoder.")}
    main = {k: v for k, v in sd.items() if not k.startswith("audio_encoder.")}
    main.pop("denoising_net.TE.pe", None)  # the reference drops it too: rebuilt from n_diff_steps
    if audio:
        if hubert is None:
            hub_cfg = args.get("audio_encoder_config")
            if isinstance(hub_cfg, dict):
                from transformers import HubertConfig

                hubert = build_hubert(HubertConfig.from_dict(hub_cfg))
            else:
                hubert = build_hubert(hubert_config_from_state_dict(audio))
        audio = _hubert_keys_for(hubert, audio)
        missing, unexpected = hubert.load_state_dict(audio, strict=False)
        missing = [m for m in missing if m != "masked_spec_embed"]
        if missing or unexpected:
            raise ModelError(
                f"{name}: HuBERT weights do not fit the audio encoder: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
    elif hubert is None:
        raise ModelError(
            f"{name} holds no HuBERT weights: load the HuBERT model (chinese-hubert-base) and pass it"
        )
    cfg = config or JoyVASAConfig.from_state_dict(main, args)
    model = DitTalkingHead(cfg, hubert)
    own = model.state_dict()
    bad = [k for k, v in main.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ModelError(f"{name}: shape mismatch for {bad[:3]} (config {cfg})")
    missing, unexpected = model.load_state_dict(main, strict=False)
    missing = [m for m in missing if not m.startswith("audio_encoder.") and m not in _DETERMINISTIC]
    missing = [m for m in missing if not m.startswith("diffusion_sched.")]
    if missing or unexpected:
        raise ModelError(
            f"{name}: weights do not match the generator: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model.to(device).eval()


def save_joyvasa(model: DitTalkingHead, path: str | Path, args: Mapping[str, Any] | None = None) -> None:
    """Write the generator (with its HuBERT as `audio_encoder.*` when attached): `.pt` in the reference's
    layout `{'model': state_dict, 'args': Namespace}`, or `.safetensors` with args as JSON metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = model.config
    a = {
        "motion_feat_dim": c.motion_feat_dim,
        "n_motions": c.n_motions,
        "n_prev_motions": c.n_prev_motions,
        "feature_dim": c.feature_dim,
        "n_heads": c.n_heads,
        "n_diff_steps": c.n_diff_steps,
        "diff_schedule": c.diff_schedule,
        "fps": c.fps,
        "pad_mode": c.pad_mode,
        "use_indicator": c.use_indicator,
        "audio_model": "hubert_zh",
    }
    if model.audio_encoder is not None and hasattr(model.audio_encoder, "config"):
        # head count and strides are not readable off the weights: keep the HuBERT config with them
        a["audio_encoder_config"] = json.loads(model.audio_encoder.config.to_json_string(use_diff=False))
    a.update(args or {})
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path), metadata={"args": json.dumps(a)})
    else:
        torch.save({"model": sd, "args": argparse.Namespace(**a)}, str(path))


class _TemplateUnpickler(pickle.Unpickler):
    """Allow-list unpickler for `motion_template.pkl`: dicts of numpy arrays / scalars, nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a motion template")


def convert_motion_template_pickle(pkl_path: str | Path, json_path: str | Path) -> MotionTemplate:
    """Convert the reference's `motion_template.pkl` (numpy arrays in a dict) to toonbooth's JSON once,
    with an allow-list unpickler (numpy array reconstruction only; object arrays refused)."""
    pkl_path = Path(pkl_path)
    if pkl_path.suffix.lower() == ".json":
        raise InputError("pkl_path", f"expected the reference's .pkl, got {pkl_path.name}", str(pkl_path))
    template = read_motion_template(pkl_path)
    template.to_json(json_path)
    return template


def read_motion_template(path: str | Path) -> MotionTemplate:
    """The motion template from `motion_template.json` or, read in memory with the allow-list unpickler
    (numpy arrays only), the reference's `motion_template.pkl`."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return MotionTemplate.from_json(path)
    if not path.is_file():
        raise ModelNotFoundError(f"motion template {str(path)!r} does not exist")
    try:
        with open(path, "rb") as fh:
            data = _TemplateUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
        raise UnsafeModelFormatError(f"{path.name}: not a plain numpy motion template ({e})") from e
    if not isinstance(data, dict):
        raise ModelError(f"{path.name}: expected a dict of stats, got {type(data).__name__}")
    if any(isinstance(v, np.ndarray) and v.dtype == object for v in data.values()):
        raise UnsafeModelFormatError(f"{path.name}: holds an object array")
    return MotionTemplate.from_dict(data)


# ---------------------------------------------------------------------------------------------------
# Model families: <models>/JoyVASA/ (generator + template) and <models>/HuBERT/ (transformers folders)
# ---------------------------------------------------------------------------------------------------

JOYVASA_FOLDERS: tuple[str, ...] = ("JoyVASA", "joyvasa")
JOYVASA_SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".pth")
TEMPLATE_NAMES: tuple[str, ...] = ("motion_template.json", "motion_template.pkl")
HUBERT_FOLDERS: tuple[str, ...] = ("HuBERT", "hubert")


def generator_file_keys(path: str | Path) -> tuple[frozenset[str], dict[str, Any]]:
    """(tensor names, args) of a JoyVASA generator file without reading its tensors (safetensors header;
    `.pt`: `torch.load(weights_only=True, mmap=True)` with `argparse.Namespace` as the one extra class)."""
    from ..models.probe import read_header

    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        header = read_header(path)
        try:
            args = json.loads((header.metadata or {}).get("args", "{}"))
        except json.JSONDecodeError:
            args = {}
        return frozenset(header.shapes), dict(args) if isinstance(args, dict) else {}
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UnsafeModelFormatError(
            f"{path.name}: torch.load(weights_only=True) refused it ({type(e).__name__}); toonbooth only "
            "unpickles tensors and argparse.Namespace"
        ) from e
    if not isinstance(obj, dict):
        return frozenset(), {}
    sd = obj.get("model", obj)
    raw_args = obj.get("args")
    args = vars(raw_args) if isinstance(raw_args, argparse.Namespace) else {}
    keys = frozenset(k for k, v in sd.items() if isinstance(v, torch.Tensor)) if isinstance(sd, dict) else frozenset()
    return keys, args


def find_motion_template(generator: Path, top: Path) -> Path | None:
    """The template of a generator file: `motion_template.json|.pkl` next to it, in a sibling
    `motion_template/` folder (the public tree: `motion_generator/*.pt` + `motion_template/*.pkl`), or at
    the top of the JoyVASA folder (JSON preferred)."""
    places = [generator.parent, generator.parent.parent / "motion_template", top, top / "motion_template"]
    for folder in places:
        for name in TEMPLATE_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def scan_joyvasa(top: Path, folder: str) -> list:
    """JoyVASA generator files under `top`, identified by their tensor names (`looks_like_joyvasa`), each
    with its motion template; one without a template is listed as refused."""
    from ..models.registry import ModelEntry, walk_files

    out = []
    for file in walk_files(top):
        if file.suffix.lower() not in JOYVASA_SUFFIXES:
            continue
        common: dict[str, Any] = dict(
            name=file.stem, path=file, kind="joyvasa", source="folder", folder=folder,
            relpath=file.relative_to(top).as_posix(), size=file.stat().st_size,
            layout="safetensors" if file.suffix.lower() == ".safetensors" else "pt",
        )  # fmt: skip
        try:
            keys, args = generator_file_keys(file)
        except ModelError as e:
            out.append(ModelEntry(refused=str(e), **common))
            continue
        if not looks_like_joyvasa(set(keys)):
            continue
        template = find_motion_template(file, top)
        refused = (
            None if template is not None else
            f"{file.name}: no motion template ({' / '.join(TEMPLATE_NAMES)}) next to it, in ../motion_template/ "
            f"or in {top}"
        )  # fmt: skip
        details = {
            "template": template.relative_to(top).as_posix() if template else None,
            "has_hubert": any(k.startswith("audio_encoder.") for k in keys),
            "audio_model": args.get("audio_model"),
        }
        out.append(ModelEntry(refused=refused, details=details, **common))
    return out


@dataclass
class LoadedJoyVASA:
    """A loaded generator (with its HuBERT attached) and its motion template."""

    model: DitTalkingHead
    template: MotionTemplate


def load_joyvasa_entry(entry, env, *, hubert_path: str | None = None) -> LoadedJoyVASA:
    """Generator + template of a scanned entry, float32 on the manager's device. `hubert_path`: a HuBERT
    folder (from the `hubert` family) the generator uses; HuBERT weights inside the file override it."""
    path = Path(entry.location)
    top = next((p for p in path.parents if p.name in JOYVASA_FOLDERS), path.parent)
    template_rel = entry.details.get("template")
    if not template_rel:
        raise ModelNotFoundError(f"{path.name}: no motion template found next to it")
    hubert = load_hubert(hubert_path, device="cpu") if hubert_path else None
    model = load_joyvasa(path, hubert=hubert, device=env.device)
    return LoadedJoyVASA(model.float(), read_motion_template(top / template_rel))


def hubert_folder_entry(folder: Path, name: str, top_folder: str):
    """An entry for a transformers HuBERT folder (config.json with model_type `hubert` + weights); only
    JSON is read. `pytorch_model.bin` is accepted: transformers reads it with torch.load(weights_only=True)."""
    from ..models.registry import ModelEntry, read_json

    cfg = read_json(folder / "config.json") or {}
    refused = None
    if cfg.get("model_type") != "hubert":
        refused = f"{folder}: config.json has model_type {cfg.get('model_type')!r}, not 'hubert'"
    elif not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        refused = f"{folder} has no model.safetensors or pytorch_model.bin"
    details = {k: cfg[k] for k in ("hidden_size", "num_hidden_layers") if k in cfg}
    return ModelEntry(
        name=name, path=folder, kind="hubert", layout="transformers", source="folder", folder=top_folder,
        relpath=name, refused=refused, details=details,
    )  # fmt: skip


def scan_hubert(top: Path, folder: str) -> list:
    """HuBERT folders under `top`: `<name>/` or `<org>/<name>/` holding a config.json."""
    out = []
    for child in sorted(d for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")):
        subs = [child] if (child / "config.json").is_file() else sorted(
            d for d in child.iterdir() if d.is_dir() and (d / "config.json").is_file()
        )  # fmt: skip
        out += [hubert_folder_entry(d, d.relative_to(top).as_posix(), folder) for d in subs]
    return out


def load_hubert_entry(entry, env):
    return load_hubert(entry.location, device=env.device)


JOYVASA_FAMILY = ModelFamily(
    kind="joyvasa",
    description="JoyVASA audio-to-motion diffusion transformer (+ motion template JSON / allow-listed .pkl)",
    folders=JOYVASA_FOLDERS,
    suffixes=JOYVASA_SUFFIXES,
    scan=scan_joyvasa,
    load=load_joyvasa_entry,
    cache_options=("hubert_path",),
    approx_bytes=140_000_000,  # 34.3 M denoiser parameters + maps, float32, without HuBERT
    shared_only=True,
    licence_note="JoyVASA code: MIT (jdh-algo/JoyVASA LICENSE); the weights' licence is not stated there.",
)
HUBERT_FAMILY = ModelFamily(
    kind="hubert",
    description="HuBERT speech encoder (transformers HubertModel folder), e.g. chinese-hubert-base",
    folders=HUBERT_FOLDERS,
    suffixes=("/",),
    scan=scan_hubert,
    load=load_hubert_entry,
    approx_bytes=380_000_000,  # HuBERT base: about 95 M parameters in float32
    shared_only=True,
    licence_note="chinese-hubert-base: see its model card (TencentGameMate/chinese-hubert-base).",
)
