"""LoRA training speed: toonbooth's training loop vs a plain diffusers-style reference loop, same settings.

    python bench/train_lora.py [--size auto|full|tiny] [--steps 20] [--warmup 3] [--rank 16] [--out FILE]

`full` (default on CUDA): SD1.5 at 512² and SDXL at 1024² with the real architectures and random weights
(`models.reference_configs`); `tiny` (default on CPU): the tiny test models at 64². Both loops get fresh
components built from the same seed, LoRA rank/alpha on the UNet attention projections (to_q/k/v/out),
batch 1, AdamW, cached latents and text embeddings, bf16 autocast with fp32 LoRA weights on the GPU (fp32 on
CPU). The reference is the step of diffusers' `examples/text_to_image/train_text_to_image_lora(_sdxl).py`
written out plainly: add_noise, UNet forward, MSE, backward, clip, AdamW step. toonbooth's side is
`training.loop.Trainer` with `training.lora.LoraMethod` (what the `train_lora` job runs per step: its own
generator for noise/timesteps, latent sampling from the cached posterior, min-SNR off, the batch order).
Prints one JSON object (steps/s of each loop and their ratio).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import torch
import torch.nn.functional as F


def components(arch: str, size: str, dtype: torch.dtype) -> dict[str, Any]:
    if size == "full":
        from toonbooth.models.reference_configs import build_full_size

        return build_full_size(arch, seed=0, dtype=dtype)
    from toonbooth.models.tiny import build_tiny_sd15, build_tiny_sdxl

    comps = build_tiny_sdxl(0) if arch == "sdxl" else build_tiny_sd15(0)
    if dtype != torch.float32:
        for k in ("unet", "vae", "text_encoder", "text_encoder_2"):
            if comps.get(k) is not None:
                comps[k].to(dtype)
    return comps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def text_inputs(
    comps: dict[str, Any], arch: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    from toonbooth.training.loop import encode_text

    toks = [comps["tokenizer"]] + ([comps["tokenizer_2"]] if arch == "sdxl" else [])
    encs = [comps["text_encoder"].to(device)] + (
        [comps["text_encoder_2"].to(device)] if arch == "sdxl" else []
    )
    with torch.no_grad():
        emb, pooled = encode_text(arch, toks, encs, ["a picture in the style of zq"], device)
    return emb.float(), (pooled.float() if pooled is not None else None)


def bench_toonbooth(arch: str, size: str, res: int, args: argparse.Namespace, prec: Any) -> float:
    from diffusers import DDPMScheduler
    from PIL import Image

    from toonbooth.training.loop import LoopConfig, TrainData, Trainer, encode_latent_dists
    from toonbooth.training.lora import LoraMethod

    comps = components(arch, size, prec.weight_dtype)
    dev = prec.device
    comps["unet"].to(dev)
    comps["vae"].to(dev)
    tes = [comps["text_encoder"].to(dev)] + ([comps["text_encoder_2"].to(dev)] if arch == "sdxl" else [])
    toks = [comps["tokenizer"]] + ([comps["tokenizer_2"]] if arch == "sdxl" else [])
    img = Image.new("RGB", (res, res), (120, 80, 200))
    lat = encode_latent_dists(comps["vae"], [img], dev)
    comps["vae"].to("cpu")
    method = LoraMethod(
        arch, comps["unet"], tes, toks, rank=args.rank, alpha=float(args.rank),
        target_modules=["to_q", "to_k", "to_v", "to_out.0"], train_text_encoder=False, learning_rate=1e-4,
        text_encoder_lr=None, dropout=0.0, device=dev, seed=0,
    )  # fmt: skip
    comps["unet"].train()
    data = TrainData(latents=lat, captions=["a picture in the style of zq"], buckets=[(res, res)],
                     original_sizes=[(res, res)], crops=[(0, 0)])  # fmt: skip
    total = args.warmup + args.steps
    cfg = LoopConfig(steps=total, learning_rate=1e-4, optimizer="adamw")
    trainer = Trainer(
        arch=arch, unet=comps["unet"], noise_scheduler=DDPMScheduler.from_config(comps["scheduler"].config),
        method=method, data=data, cfg=cfg, precision=prec, vae_scaling=float(comps["vae"].config.scaling_factor),
    )  # fmt: skip
    for _ in range(args.warmup):
        trainer.train_step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    sync(dev)
    return args.steps / (time.perf_counter() - t0)


def bench_reference(arch: str, size: str, res: int, args: argparse.Namespace, prec: Any) -> float:
    """diffusers' LoRA training step, written out plainly."""
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    comps = components(arch, size, prec.weight_dtype)
    dev = prec.device
    unet = comps["unet"].to(dev)
    emb, pooled = text_inputs(comps, arch, dev)
    for k in ("text_encoder", "text_encoder_2"):
        if comps.get(k) is not None:
            comps[k].to("cpu")
    unet.requires_grad_(False)
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))  # fmt: skip
    params = []
    for n, p in unet.named_parameters():
        if "lora_" in n:
            p.data = p.data.float()
            p.requires_grad_(True)
            params.append(p)
    opt = torch.optim.AdamW(
        params, lr=1e-4, weight_decay=1e-2, **({"fused": True} if dev.type == "cuda" else {})
    )
    sched = DDPMScheduler.from_config(comps["scheduler"].config)
    latents = torch.randn(1, 4, res // 8, res // 8, device=dev) * float(comps["vae"].config.scaling_factor)
    time_ids = torch.tensor([[res, res, 0, 0, res, res]], dtype=torch.float32, device=dev)
    unet.train()

    def step() -> None:
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (1,), device=dev)
        noisy = sched.add_noise(latents, noise, t)
        with torch.autocast(
            dev.type, dtype=prec.autocast_dtype or torch.float32, enabled=prec.autocast_dtype is not None
        ):
            kw = (
                {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}} if arch == "sdxl" else {}
            )
            pred = unet(noisy, t, emb, **kw).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(dev)
    return args.steps / (time.perf_counter() - t0)


def main() -> None:
    from toonbooth.training.loop import resolve_precision

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=["auto", "full", "tiny"], default="auto")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--arch", choices=["both", "sd15", "sdxl"], default="both")
    ap.add_argument("--out", default=None, help="Also write the JSON here.")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size if args.size != "auto" else ("full" if dev.type == "cuda" else "tiny")
    prec = resolve_precision("auto", dev)
    results: dict[str, Any] = {}
    for arch in ["sd15", "sdxl"] if args.arch == "both" else [args.arch]:
        res = (1024 if arch == "sdxl" else 512) if size == "full" else 64
        ours = bench_toonbooth(arch, size, res, args, prec)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        ref = bench_reference(arch, size, res, args, prec)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        results[arch] = {
            "resolution": res, "toonbooth_steps_per_s": round(ours, 3), "reference_steps_per_s": round(ref, 3),
            "toonbooth_vs_reference": round(ours / ref, 3),
            "seconds_per_1000_steps_toonbooth": round(1000 / ours, 1),
        }  # fmt: skip
    report = {
        "bench": "train_lora", "size": size, "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else
        platform.processor() or "cpu", "precision": prec.label, "rank": args.rank, "batch": 1,
        "steps_timed": args.steps, "torch_threads": torch.get_num_threads(), "results": results,
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
