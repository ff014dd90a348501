"""The denoising training loop shared by LoRA, DreamBooth-LoRA and textual inversion.

Follows diffusers' training examples (`examples/text_to_image/train_text_to_image_lora{,_sdxl}.py`,
`examples/dreambooth/train_dreambooth_lora{,_sdxl}.py`, `examples/textual_inversion/textual_inversion.py`):
DDPM forward noising from the base model's scheduler config (Ho et al. 2020), epsilon or v-prediction
targets (Salimans & Ho 2022), SDXL size/crop time ids and pooled text embeddings (Podell et al. 2023),
min-SNR-gamma loss weights (Hang et al. 2023, arXiv:2303.09556), offset noise (Lin et al. 2023 /
crosslabs), DreamBooth prior preservation (Ruiz et al. 2023), gradient accumulation and clipping, AdamW
(or bitsandbytes' 8-bit AdamW), constant / cosine / linear schedules with linear warm-up as in
`diffusers.optimization`. Mixed precision as accelerate does it: frozen weights in bf16/fp16, trained
tensors in fp32, forward under `torch.autocast`, a GradScaler for fp16.

All randomness (latent sampling, noise, timesteps) comes from one CPU `torch.Generator` that is saved in
the checkpoints, and the batch order is a pure function of (seed, micro-step): a resumed run continues
exactly where the interrupted one stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from ..core.errors import InputError
from .dataset import BatchOrder

CLIP_MAX_LENGTH = 77


# --------------------------------------------------------------------------------------------------
# Precision and optimizer
# --------------------------------------------------------------------------------------------------


@dataclass
class Precision:
    device: torch.device
    weight_dtype: torch.dtype  # frozen weights
    autocast_dtype: torch.dtype | None  # None = fp32 throughout
    label: str  # "fp32" | "bf16" | "fp16"


def resolve_precision(mixed_precision: str, device: torch.device) -> Precision:
    """bf16 (else fp16) on a CUDA GPU for "auto"; fp32 on CPU / MPS. fp16/bf16 asked off-GPU is refused."""
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if mixed_precision == "bf16" and not bf16_ok:
            raise InputError(
                "mixed_precision", f"bf16 is not supported by this GPU, got {mixed_precision!r}", "bf16"
            )
        if mixed_precision == "no":
            return Precision(device, torch.float32, None, "fp32")
        if mixed_precision == "fp16" or (mixed_precision == "auto" and not bf16_ok):
            return Precision(device, torch.float16, torch.float16, "fp16")
        return Precision(device, torch.bfloat16, torch.bfloat16, "bf16")
    if mixed_precision in ("fp16", "bf16"):
        raise InputError(
            "mixed_precision",
            f"{mixed_precision} training needs a CUDA GPU; this job runs on {device.type} (use 'auto' or 'no'), "
            f"got {mixed_precision!r}",
            mixed_precision,
        )
    return Precision(device, torch.float32, None, "fp32")


def make_optimizer(
    param_groups: list[dict[str, Any]],
    *,
    lr: float,
    weight_decay: float,
    want_8bit: bool,
    device: torch.device,
) -> tuple[torch.optim.Optimizer, str, str | None]:
    """(optimizer, its name, a log note when 8-bit Adam was asked for but cannot run here)."""
    note = None
    if want_8bit:
        try:
            import bitsandbytes as bnb  # type: ignore[import-not-found]
        except ImportError:
            bnb = None
            note = "bitsandbytes is not installed: using torch AdamW instead of 8-bit AdamW"
        if bnb is not None and device.type != "cuda":
            bnb, note = None, f"8-bit AdamW needs a CUDA GPU (device is {device.type}): using torch AdamW"
        if bnb is not None:
            opt = bnb.optim.AdamW8bit(
                param_groups, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, eps=1e-8
            )
            return opt, "AdamW8bit", None
    kwargs: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(
        param_groups, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, eps=1e-8, **kwargs
    )
    return opt, "AdamW", note


def lr_lambda(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step `step` (diffusers.optimization's curves)."""

    def factor(step: int) -> float:
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if kind == "constant":
            return 1.0
        progress = float(step - warmup) / float(max(1, total - warmup))
        if kind == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return max(0.0, 1.0 - progress)  # linear

    return factor


# --------------------------------------------------------------------------------------------------
# Text encoding (as the SD1.5 / SDXL pipelines encode a prompt, no A1111 emphasis)
# --------------------------------------------------------------------------------------------------


def tokenize(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def too_long(tokenizer: Any, captions: list[str]) -> list[str]:
    """Captions longer than the CLIP context (they are truncated, as the pipelines do)."""
    limit = tokenizer.model_max_length
    return [c for c in captions if len(tokenizer(c, truncation=False).input_ids) > limit]


def encode_text(
    arch: str, tokenizers: list[Any], text_encoders: list[Any], captions: list[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prompt_embeds, pooled) — SD1.5: last hidden state; SDXL: penultimate hidden states of both encoders
    concatenated, pooled = encoder 2's projected EOS embedding."""
    if arch == "sd15":
        ids = tokenize(tokenizers[0], captions).to(device)
        return text_encoders[0](ids)[0], None
    states = []
    pooled = None
    for tok, enc in zip(tokenizers, text_encoders, strict=True):
        out = enc(tokenize(tok, captions).to(device), output_hidden_states=True)
        states.append(out.hidden_states[-2])
        pooled = out[0]
    return torch.cat(states, dim=-1), pooled


# --------------------------------------------------------------------------------------------------
# Latents
# --------------------------------------------------------------------------------------------------


def image_tensor(image: Any) -> torch.Tensor:
    import numpy as np

    arr = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()) / 127.5 - 1.0
    return arr.permute(2, 0, 1)


@torch.no_grad()
def encode_latent_dists(
    vae: Any, images: list[Any], device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, std) of the VAE posterior of each image, in fp32 (SDXL's VAE overflows in fp16), kept on CPU."""
    dtype = next(vae.parameters()).dtype
    if dtype != torch.float32:
        vae.to(torch.float32)
    out = []
    try:
        for img in images:
            dist = vae.encode(image_tensor(img)[None].to(device)).latent_dist
            out.append((dist.mean[0].float().cpu(), dist.std[0].float().cpu()))
    finally:
        if dtype != torch.float32:
            vae.to(dtype)
    return out


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


class Method(Protocol):
    """What a training method (LoRA, textual inversion) gives the loop."""

    def param_groups(self) -> list[dict[str, Any]]: ...

    def trainables(self) -> dict[str, torch.Tensor]: ...

    def encode(
        self, captions: list[str], timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


@dataclass
class LoopConfig:
    steps: int
    batch_size: int = 1
    grad_accum: int = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    snr_gamma: float | None = None
    noise_offset: float = 0.0
    prediction_type: str = "epsilon"
    optimizer: str = "adamw"
    seed: int = 0
    prior_loss_weight: float = 1.0


@dataclass
class TrainData:
    """Prepared data: latent posteriors, captions and SDXL size conditions per example."""

    latents: list[tuple[torch.Tensor, torch.Tensor]]
    captions: list[str]
    buckets: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    crops: list[tuple[int, int]]
    # prior preservation: class latents per bucket (computed on demand), class captions
    class_latents: Callable[[int, tuple[int, int]], tuple[torch.Tensor, torch.Tensor]] | None = None
    class_count: int = 0
    class_caption: str = ""


@dataclass
class StepResult:
    step: int
    loss: float
    lr: float
    seconds: float


@dataclass
class Trainer:
    arch: str
    unet: Any
    noise_scheduler: Any
    method: Method
    data: TrainData
    cfg: LoopConfig
    precision: Precision
    vae_scaling: float
    vae_shift: float | None = None
    losses: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        dev = self.precision.device
        self.order = BatchOrder(self.data.buckets, self.cfg.batch_size, self.cfg.seed)
        self.generator = torch.Generator(device="cpu").manual_seed(self.cfg.seed)
        groups = self.method.param_groups()
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer, self.optimizer_name, self.optimizer_note = make_optimizer(
            groups, lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay,
            want_8bit=self.cfg.optimizer == "adamw8bit", device=dev,
        )  # fmt: skip
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.cfg.lr_scheduler, self.cfg.lr_warmup_steps, self.cfg.steps)
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.autocast_dtype == torch.float16 else None
        self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(dev, torch.float32)
        self.num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        self.step = 0

    # --- one micro-batch -------------------------------------------------------------------------
    def _sample_latents(self, dists: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        lat = torch.stack([m + s * torch.randn(m.shape, generator=self.generator) for m, s in dists])
        if self.vae_shift is not None:
            lat = lat - self.vae_shift
        return lat * self.vae_scaling

    def _time_ids(self, idx: list[int], bucket: tuple[int, int]) -> torch.Tensor:
        rows = [[*self.data.original_sizes[i], *self.data.crops[i], bucket[1], bucket[0]] for i in idx]
        return torch.tensor(rows, dtype=torch.float32)

    def micro_batch(self, k: int) -> torch.Tensor:
        """Forward + backward of micro-batch `k`; returns the (unscaled) loss."""
        dev, data = self.precision.device, self.data
        idx = self.order.batch(k)
        bucket = data.buckets[idx[0]]
        dists = [data.latents[i] for i in idx]
        captions = [data.captions[i] for i in idx]
        time_ids = self._time_ids(idx, bucket) if self.arch == "sdxl" else None
        n_inst = len(idx)
        if data.class_latents is not None and data.class_count:
            cls_idx = [(k * self.cfg.batch_size + j) % data.class_count for j in range(n_inst)]
            dists += [data.class_latents(c, bucket) for c in cls_idx]
            captions += [data.class_caption] * n_inst
            if time_ids is not None:
                h, w = bucket[1], bucket[0]
                time_ids = torch.cat(
                    [time_ids, torch.tensor([[h, w, 0, 0, h, w]] * n_inst, dtype=torch.float32)]
                )
        latents = self._sample_latents(dists)
        noise = torch.randn(latents.shape, generator=self.generator)
        if self.cfg.noise_offset:
            noise = noise + self.cfg.noise_offset * torch.randn(
                (latents.shape[0], latents.shape[1], 1, 1), generator=self.generator
            )
        timesteps = torch.randint(0, self.num_train_timesteps, (latents.shape[0],), generator=self.generator)
        latents, noise, timesteps = latents.to(dev), noise.to(dev), timesteps.to(dev)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)

        autocast = self.precision.autocast_dtype is not None
        with torch.autocast(dev.type, dtype=self.precision.autocast_dtype or torch.float32, enabled=autocast):
            embeds, pooled = self.method.encode(captions, timesteps)
            kwargs: dict[str, Any] = {}
            if self.arch == "sdxl":
                kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids.to(dev)}
            pred = self.unet(noisy, timesteps, embeds, **kwargs).sample
        if self.cfg.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if self.cfg.snr_gamma is not None:
            a = self.alphas_cumprod[timesteps]
            snr = a / (1.0 - a)
            clipped = torch.clamp(snr, max=self.cfg.snr_gamma)
            weights = clipped / (snr + 1.0) if self.cfg.prediction_type == "v_prediction" else clipped / snr
            per_sample = per_sample * weights
        loss = per_sample[:n_inst].mean()
        if per_sample.shape[0] > n_inst:
            loss = loss + self.cfg.prior_loss_weight * per_sample[n_inst:].mean()
        scaled = loss / self.cfg.grad_accum
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return loss.detach()

    # --- one optimizer step ----------------------------------------------------------------------
    def train_step(self) -> StepResult:
        t0 = time.perf_counter()
        total = torch.zeros((), device=self.precision.device)
        for j in range(self.cfg.grad_accum):
            total += self.micro_batch(self.step * self.cfg.grad_accum + j)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        lr = float(self.optimizer.param_groups[0]["lr"])
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss = float(total.item()) / self.cfg.grad_accum
        self.losses.append(loss)
        return StepResult(self.step, loss, lr, time.perf_counter() - t0)

    # --- evaluation on fixed noise -----------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, timesteps_per_image: int = 4) -> float:
        """Mean denoising loss of the training images at fixed timesteps and fixed noise (posterior means, own
        generator): the same number before and after training measures learning without sampling noise."""
        dev, data = self.precision.device, self.data
        gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed + 7919)
        span = self.num_train_timesteps
        t = torch.tensor([int((j + 0.5) * span / timesteps_per_image) for j in range(timesteps_per_image)])
        total = 0.0
        autocast = self.precision.autocast_dtype is not None
        for i, (mean, _std) in enumerate(data.latents):
            lat = mean[None].repeat(timesteps_per_image, 1, 1, 1)
            lat = ((lat - self.vae_shift) if self.vae_shift is not None else lat) * self.vae_scaling
            noise = torch.randn(lat.shape, generator=gen)
            lat, noise, tt = lat.to(dev), noise.to(dev), t.to(dev)
            noisy = self.noise_scheduler.add_noise(lat, noise, tt)
            with torch.autocast(
                dev.type, dtype=self.precision.autocast_dtype or torch.float32, enabled=autocast
            ):
                embeds, pooled = self.method.encode([data.captions[i]] * timesteps_per_image, tt)
                kwargs: dict[str, Any] = {}
                if self.arch == "sdxl":
                    bucket = data.buckets[i]
                    ids = self._time_ids([i], bucket).repeat(timesteps_per_image, 1).to(dev)
                    kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": ids}
                pred = self.unet(noisy, tt, embeds, **kwargs).sample
            target = (
                self.noise_scheduler.get_velocity(lat, noise, tt)
                if self.cfg.prediction_type == "v_prediction"
                else noise
            )
            total += float(F.mse_loss(pred.float(), target.float()).item())
        return total / max(1, len(data.latents))

    # --- checkpoint state ------------------------------------------------------------------------
    def position(self) -> dict[str, int]:
        return self.order.position(self.step * self.cfg.grad_accum)
