"""Pose change (`repose`): stage seconds of the job, the reference-attention loop against the plain
denoising loop, and DWPose's per-image time on onnxruntime; printed as JSON.

- `job`: the whole `repose` job through `runtime.execute` on the tiny pose set (tests/pose_models.py: the tiny
  ONNX pair, tiny AnimateAnyone parts, tiny SD1.5 + ControlNet + IP-Adapter), per method, with the job's own
  stage timings (check, pose, render, layers) and the wall time.
- `loop`: `nets.animate_anyone.pose2img` (ours: reference pass at t=0 + reader processors + PoseGuider hook,
  CFG) against the same DDIM loop over the stock UNet with plain attention and no reference pass (what the
  reference attention costs: every self-attention reads twice the keys/values). Same UNet, same steps.
- `dwpose`: per-image seconds of `estimate_wholebody` (letterbox, detector, affine crop, pose model, SimCC
  decode) on a ~1-megapixel photo with the tiny pair: these are the pre/post-processing costs plus two tiny
  networks. Real-size figures need the real ONNX files (yolox_l.onnx 217 MB, dw-ll_ucoco_384.onnx 134 MB):
  pass `--dwpose-dir <folder with the pair>` to time them instead.
- `--full` (for a GPU): the loop at SD1.5 sizes (UNet 320/640/1280/1280, cross-attention 768, PoseGuider
  16/32/96/256 -> 320, CLIP ViT-L/14 stand-in) with random weights, `--size WxH` and `--steps` on `--device`.

Each figure is the median of `--repeats` runs after a warm-up (wall seconds; `cpu` = process CPU seconds).

    .venv/bin/python bench/repose.py [--repeats 3] [--steps 4] [--full --device cuda --size 512x768 --steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
PHOTO = ROOT / "assets" / "sample_face.png"


def timed(fn: Callable[[], Any], repeats: int) -> tuple[dict[str, float], Any]:
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    runs, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"first": round(first, 4), "median": round(statistics.median(runs), 4),
            "cpu": round(statistics.median(cpu), 4)}, out  # fmt: skip


def png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def bench_jobs(root: Path, repeats: int, steps: int) -> dict[str, Any]:
    import pose_models as pm
    from toonbooth.core.settings import Settings
    from toonbooth.core.specs import parse_job_spec
    from toonbooth.runtime.context import JobContext
    from toonbooth.runtime.execute import execute
    from toonbooth.runtime.families import model_manager
    from toonbooth.runtime.storage_local import LocalStorage

    settings = Settings(home=root / "home", models_dir=root / "models", data_dir=root / "data", device="cpu")
    models, storage = model_manager(settings), LocalStorage(settings.resolved_data_dir)
    face = Image.open(PHOTO).convert("RGB")
    character = storage.put(png(face.resize((128, 192))))
    photo = storage.put(png(Image.fromarray(pm.pose_photo())))
    common = {"kind": "repose", "character": character, "pose_image": photo, "size": 192,
              "diffusion": {"checkpoint": "tiny-sd15", "sampler": "DDIM", "steps": steps, "seed": 1}}  # fmt: skip
    specs = {
        "skeleton_preview": {"kind": "repose", "mode": "skeleton", "pose_image": photo, "size": 480},
        "animate_anyone": {**common, "method": "animate_anyone", "image_encoder": "tiny-image-encoder", "vae": "tiny-vae"},
        "controlnet_ip_adapter": {**common, "method": "controlnet", "controlnet": "tiny-sd15-openpose",
                                  "ip_adapter": "tiny-ip-adapter"},
        "animate_anyone_layers": {**common, "method": "animate_anyone", "image_encoder": "tiny-image-encoder",
                                  "vae": "tiny-vae", "background": "remove", "background_image": character},
        "classic": {**common, "backend": "classic"},
    }  # fmt: skip
    out: dict[str, Any] = {}
    for name, raw in specs.items():
        spec = parse_job_spec(raw)
        stages: list[dict[str, float]] = []

        def run(spec=spec, stages=stages) -> Any:
            result = execute(spec, JobContext(settings, models, storage))
            stages.append(result.info["timings"])
            return result

        figures, _ = timed(run, repeats)
        last = stages[-1]
        out[name] = {**figures, "stages": {k: round(v, 4) for k, v in last.items()}}
    return out


def bench_loop(parts: Any, vae: Any, encoder: Any, size: tuple[int, int], steps: int, repeats: int) -> dict[str, Any]:
    """pose2img against the plain loop over the same denoising UNet (no reference pass, no bank, no pose)."""
    from toonbooth.nets.animate_anyone import aa_scheduler, image_embeddings, pose2img

    w, h = size
    reference = Image.open(PHOTO).convert("RGB")
    pose_map = np.zeros((h, w, 3), np.uint8)
    pose_map[h // 4 : 3 * h // 4, w // 2 - 2 : w // 2 + 2] = (255, 0, 0)
    device, dtype = parts.denoising_unet.device, parts.denoising_unet.dtype

    def ours() -> Any:
        return pose2img(parts, vae, encoder, reference, pose_map, steps=steps, guidance_scale=3.5,
                        generator=torch.Generator("cpu").manual_seed(0))  # fmt: skip

    def plain() -> Any:
        cond = image_embeddings(encoder, reference, device, dtype)
        tokens = torch.cat([torch.zeros_like(cond), cond])
        sched = aa_scheduler()
        sched.set_timesteps(steps, device=device)
        latents = torch.randn((1, 4, h // 8, w // 8), generator=torch.Generator("cpu").manual_seed(0)).to(device, dtype)
        with torch.no_grad():
            for t in sched.timesteps:
                pred = parts.denoising_unet(torch.cat([latents] * 2), t, encoder_hidden_states=tokens).sample
                u, c = pred.chunk(2)
                latents = sched.step(u + 3.5 * (c - u), t, latents).prev_sample
            return vae.decode(latents / vae.config.scaling_factor).sample

    def sync() -> None:
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    a, _ = timed(lambda: (ours(), sync()), repeats)
    b, _ = timed(lambda: (plain(), sync()), repeats)
    return {"size": f"{w}x{h}", "steps": steps, "cfg": 3.5, "ours_pose2img": a, "plain_loop": b,
            "ratio": round(a["median"] / b["median"], 3)}  # fmt: skip


def full_size_parts(device: str, dtype: torch.dtype) -> tuple[Any, Any, Any]:
    """SD1.5-size AnimateAnyone parts with random weights (no download): the real cost on a device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from toonbooth.nets.animate_anyone import AnimateAnyoneParts
    from toonbooth.nets.pose_guider import build_pose_guider

    cfg = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
               block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
               down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
               up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)  # fmt: skip
    unets = [UNet2DConditionModel(**cfg).to(device, dtype).eval() for _ in range(2)]
    guider = build_pose_guider().to(device, dtype).eval()
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4).to(device, dtype)  # fmt: skip
    enc = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                         num_attention_heads=16, image_size=224, patch_size=14,
                                                         projection_dim=768)).to(device, dtype).eval()  # fmt: skip
    return AnimateAnyoneParts(unets[0], unets[1], guider), vae.eval(), enc


def bench_dwpose(folder: Path, repeats: int) -> dict[str, Any]:
    from toonbooth.nets import dwpose

    models = dwpose.load_dwpose(folder / "yolox_l.onnx", folder / "dw-ll_ucoco_384.onnx")
    photo = np.asarray(Image.open(PHOTO).convert("RGB").resize((1024, 1024), Image.Resampling.LANCZOS))
    tall = np.ascontiguousarray(np.concatenate([photo, photo[:512]], axis=0))  # 1024 x 1536, a full figure's frame
    figures: dict[str, Any] = {}
    for name, img in (("1024x1024", photo), ("1024x1536", tall)):
        try:
            figures[name], _ = timed(lambda img=img: dwpose.estimate_wholebody(models, img), repeats)
        except Exception as exc:  # the real pair may find nobody in the sample photo's crop
            figures[name] = {"error": str(exc)}
    return {"pair": str(folder), "inputs": {"detector": list(models.detector_input_hw), "pose": list(models.pose_input_hw)},
            "per_image": figures}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--full", action="store_true", help="also the SD1.5-size loop (random weights) on --device")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", default="512x768", help="result size of --full")
    ap.add_argument("--dwpose-dir", type=Path, default=None, help="a folder with the real DWPose ONNX pair")
    args = ap.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))

    import pose_models as pm
    from toonbooth.models.tiny import make_tiny_set

    report: dict[str, Any] = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                          "cpu_threads": torch.get_num_threads()}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_tiny_set(root / "tiny")
        pm.make_pose_models(root / "models", root / "tiny")
        report["job_tiny_cpu"] = bench_jobs(root, args.repeats, args.steps)

        from toonbooth.core.settings import Settings
        from toonbooth.runtime.families import model_manager

        models = model_manager(Settings(home=root / "home", models_dir=root / "models", device="cpu"))
        parts = models.load("animate_anyone", "animate-anyone")
        vae, enc = models.load("vae", "tiny-vae"), models.load("clip_vision", "tiny-image-encoder")
        report["loop_tiny_cpu"] = bench_loop(parts, vae, enc, (128, 192), args.steps, args.repeats)
        report["dwpose_tiny_pair_cpu"] = bench_dwpose(root / "models" / "DWPose", args.repeats)
        report["dwpose_tiny_pair_cpu"]["note"] = (
            "tiny stand-in networks: the figure is the pre/post-processing (letterbox to 640, affine crop to "
            "288x384, SimCC decode, NMS) plus two tiny graphs; real-size figures need the real ONNX files "
            "(--dwpose-dir)"
        )
    if args.dwpose_dir is not None:
        report["dwpose_real_pair"] = bench_dwpose(args.dwpose_dir, args.repeats)
    if args.full:
        w, h = (int(v) for v in args.size.lower().split("x"))
        dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
        parts, vae, enc = full_size_parts(args.device, dtype)
        report["loop_full_random_weights"] = {"device": args.device, "dtype": str(dtype),
                                              **bench_loop(parts, vae, enc, (w, h), args.steps, args.repeats)}  # fmt: skip
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
