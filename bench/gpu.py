"""The prepared GPU run (issue 18): every figure in one script, one lease, JSON out.

Real SD1.5 / SDXL architectures with random weights (`models/reference_configs.py`), ours (the engines
through `execute`) against stock diffusers on the same loaded components, FLOP floors counted with
`torch.utils.flop_counter` (UNet + ControlNet per denoising step, times the steps) at a peak of
`--peak-tflops` (790 bf16 measured on an H200), peak VRAM per figure, and the same jobs under emulated
small-GPU memory caps. Written and dry-run on the CPU (`--size tiny`); NO GPU figure has been taken yet.

    .venv/bin/python bench/gpu.py --size tiny --device cpu          # dry run of every path (minutes, CPU)
    .venv/bin/python bench/gpu.py --size full --dtype bfloat16      # on the GPU: the real figures
    .venv/bin/python bench/gpu.py --size full --only sdxl_txt2img,sd15_txt2img --caps 8,12

Figures (each: ours_s, stock_s, ratio, floor_s, ratio_to_floor, peak_vram_mb):
  sdxl_txt2img   SDXL 1024², 30 steps, CFG 7                      target <= 0.7 s
  sd15_txt2img   SD1.5 512², 30 steps, batch 1 (and img/s at --batch) target <= 150 ms, >= 20 img/s
  memoji         the seed's two passes (pass 1 ControlNet canny img2img at 1024², pass 2 1.5x), DDIM 50 x 0.75
  caps           sdxl_txt2img and memoji under 8 / 12 GiB (torch.cuda.set_per_process_memory_fraction)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (first call pays allocation, cudnn / kernel selection)
    sync(device)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def unet_step_flops(pipe, height: int, width: int, batch: int, controlnet=None) -> int:
    """FLOPs of one denoising step (UNet, + ControlNet when given) at `batch` (2 = CFG), counted, not guessed."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet = pipe.unet
    lat = torch.zeros(batch, unet.config.in_channels, height // 8, width // 8, device=unet.device, dtype=unet.dtype)
    ctx_dim = unet.config.cross_attention_dim
    ctx = torch.zeros(batch, 77, ctx_dim, device=unet.device, dtype=unet.dtype)
    t = torch.tensor([500] * batch, device=unet.device)
    kwargs = {}
    if unet.config.addition_embed_type == "text_time":
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.zeros(batch, 1280, device=unet.device, dtype=unet.dtype),
            "time_ids": torch.zeros(batch, 6, device=unet.device, dtype=unet.dtype),
        }
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        extra = {}
        if controlnet is not None:
            cond = torch.zeros(batch, 3, height, width, device=unet.device, dtype=unet.dtype)
            down, mid = controlnet(lat, t, ctx, controlnet_cond=cond, return_dict=False, **kwargs)
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        unet(lat, t, ctx, **kwargs, **extra)
    return int(counter.get_total_flops())


def figure(ours_s: float, stock_s: float | None, flops: int | None, peak_tflops: float, device: str) -> dict:
    import torch

    out = {"ours_s": round(ours_s, 4)}
    if stock_s is not None:
        out.update(stock_s=round(stock_s, 4), ratio_ours_over_stock=round(ours_s / stock_s, 4))
    if flops:
        floor = flops / (peak_tflops * 1e12)
        out.update(tflop=round(flops / 1e12, 2), floor_s=round(floor, 4), ratio_to_floor=round(ours_s / floor, 2))
    if device.startswith("cuda"):
        out["peak_vram_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        torch.cuda.reset_peak_memory_stats()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="batch for the SD1.5 throughput figure")
    ap.add_argument("--peak-tflops", type=float, default=790.0)
    ap.add_argument("--only", default="", help="comma list of figures to run (default: all)")
    ap.add_argument("--caps", default="8,12", help="GiB caps for the small-GPU figures ('' = none)")
    args = ap.parse_args()

    import torch

    from toonbooth.core.settings import Settings
    from toonbooth.core.specs import AvatarSpec, GenerateSpec, LoraRef
    from toonbooth.models import sd
    from toonbooth.runtime.context import JobContext
    from toonbooth.runtime.execute import execute
    from toonbooth.runtime.families import model_manager
    from toonbooth.runtime.storage_local import LocalStorage

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    full = args.size == "full"
    only = {x for x in args.only.split(",") if x}
    tmp = Path(tempfile.mkdtemp(prefix="tb-gpu-"))
    if full:
        from toonbooth.models.reference_configs import make_full_size_sdxl_set

        make_full_size_sdxl_set(tmp / "models", dtype=getattr(torch, dtype))
        names = {"sdxl": "full-sdxl", "canny": "full-sdxl-canny", "lora": "full-memoji", "sd15": None}
    else:
        from toonbooth.models.tiny import make_tiny_set

        make_tiny_set(tmp / "models")
        names = {"sdxl": "tiny-sdxl", "canny": "tiny-sdxl-canny", "lora": "tiny-memoji", "sd15": "tiny-sd15"}
    settings = Settings(home=tmp, models_dir=tmp / "models", device=device, dtype=dtype, max_side=1024 if full else 128)
    models = model_manager(settings)
    storage = LocalStorage(settings.resolved_data_dir)
    ctx = JobContext(settings, models, storage)
    side = 1024 if full else 64
    steps = 30 if full else 4
    result: dict = {"bench": "gpu", "size": args.size, "device": device, "dtype": dtype, "torch": torch.__version__,
                    "peak_tflops": args.peak_tflops, "figures": {}}  # fmt: skip
    if device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(0)

    def want(name: str) -> bool:
        return not only or name in only

    # 1. SDXL txt2img: the generate engine vs StableDiffusionXLPipeline on the same modules
    if want("sdxl_txt2img"):
        from diffusers import StableDiffusionXLPipeline

        spec = GenerateSpec(prompt="a castle on a hill", negative_prompt="blurry", checkpoint=names["sdxl"],
                            width=side, height=side, steps=steps, cfg_scale=7.0, seed=1, sampler_name="Euler")  # fmt: skip
        base, _ = sd.base_pipeline(models, names["sdxl"], "sdxl")
        stock = sd.compose(StableDiffusionXLPipeline, base)

        def run_stock():
            stock(prompt=spec.prompt, negative_prompt=spec.negative_prompt, width=side, height=side,
                  num_inference_steps=steps, guidance_scale=7.0, generator=torch.Generator("cpu").manual_seed(1))

        ours = timed(lambda: execute(spec, ctx), device, args.repeats)
        ref = timed(run_stock, device, args.repeats)
        flops = unet_step_flops(base, side, side, 2) * steps
        result["figures"]["sdxl_txt2img"] = figure(ours, ref, flops, args.peak_tflops, device)

    # 2. SD1.5 512², batch 1 and batched (full size: built from reference_configs when present)
    if want("sd15_txt2img") and names["sd15"]:
        spec = GenerateSpec(prompt="a cat", checkpoint=names["sd15"], width=side, height=side, steps=steps, seed=1)
        ours = timed(lambda: execute(spec, ctx), device, args.repeats)
        base, _ = sd.base_pipeline(models, names["sd15"], "sd15")
        flops = unet_step_flops(base, side, side, 2) * steps
        batched = spec.model_copy(update={"batch_size": min(args.batch, 8)})
        tb = timed(lambda: execute(batched, ctx), device, 1)
        fig = figure(ours, None, flops, args.peak_tflops, device)
        fig["images_per_s_batched"] = round(batched.batch_size / tb, 2)
        result["figures"]["sd15_txt2img"] = fig

    # 3. The memoji job (both passes)
    if want("memoji"):
        from PIL import Image

        photo = Image.open(ROOT / "assets" / "sample_face.png").convert("RGB").resize((side, side))
        buf = io.BytesIO()
        photo.save(buf, "PNG")
        ref = storage.put(buf.getvalue())
        spec = AvatarSpec(image=ref, backend="neural", checkpoint=names["sdxl"], controlnet=names["canny"],
                          loras=[LoraRef(name=names["lora"], weight=1.0)], steps=50 if full else 4,
                          max_side=side)  # fmt: skip
        ours = timed(lambda: execute(spec, ctx), device, max(1, args.repeats - 1))
        base, _ = sd.base_pipeline(models, names["sdxl"], "sdxl")
        cn, _ = sd.controlnet(models, names["canny"], base, "sdxl")
        s1 = int(spec.steps * spec.strength)
        s2 = int(spec.steps * spec.second_strength)
        up = int(side * 1.5) // 8 * 8
        flops = unet_step_flops(base, side, side, 2, controlnet=cn) * s1 + unet_step_flops(base, up, up, 2) * s2
        result["figures"]["memoji"] = figure(ours, None, flops, args.peak_tflops, device)
        result["figures"]["memoji"]["note"] = "stock diffusers side: bench/memoji.py --size full (same components)"

    # 4. Small GPUs: the same jobs under a memory cap (CUDA only)
    caps = [float(c) for c in args.caps.split(",") if c] if device.startswith("cuda") else []
    if caps and want("caps"):
        total = torch.cuda.get_device_properties(0).total_memory
        for gib in caps:
            torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total))
            models.cache.clear()
            torch.cuda.empty_cache()
            spec = GenerateSpec(prompt="a castle", checkpoint=names["sdxl"], width=side, height=side, steps=steps, seed=1)
            key = f"sdxl_txt2img_cap_{gib:g}gib"
            try:
                result["figures"][key] = figure(timed(lambda s=spec: execute(s, ctx), device, 1), None, None,
                                                args.peak_tflops, device)  # fmt: skip
            except torch.cuda.OutOfMemoryError as exc:
                result["figures"][key] = {"error": f"out of memory: {str(exc)[:200]}"}
        with contextlib.suppress(Exception):
            torch.cuda.set_per_process_memory_fraction(1.0)

    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
