"""Per-stage seconds of the toon studio, printed as JSON: detect (dlib), FFHQ align, invert by encoder,
invert by optimisation (per projector step, LPIPS on VGG16), synthesis (per toon image), layer-swap blend,
sticker, paste-back, and StyleGAN2 fine-tuning steps/s (FreezeD + ADA + R1 + path length).

Models: random weights with the real key layouts (no download).
- `--size 64` (default): tiny generator / e4e / VGG16 / discriminator, as in the tests (CPU figures);
- `--size 1024 --full`: config-f generator (30.4 M parameters) and discriminator (29 M), the full IR-SE50 e4e
  encoder (18 styles, 256 px input) and the full VGG16 -- the real costs, on `--device` (cuda when available).

Each figure is the median of `--repeats` runs after one warm-up run (`first` = the cold first run; `cpu` = process
CPU seconds). On CUDA every timed call is synchronised.

    .venv/bin/python bench/toon.py [--size 64] [--repeats 3]
    .venv/bin/python bench/toon.py --size 1024 --full --device cuda --train-batch 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "sample_face.png"


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[dict[str, float], Any]:
    def run() -> Any:
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    t0 = time.perf_counter()
    out = run()
    first = time.perf_counter() - t0
    runs, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = run()
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"first": round(first, 4), "median": round(statistics.median(runs), 4),
            "cpu": round(statistics.median(cpu), 4)}, out  # fmt: skip


def build(size: int, full: bool, device: torch.device) -> dict[str, Any]:
    from toonbooth.nets.psp import (
        EncoderConfig,
        PSPInverter,
        build_encoder,
        n_styles_for,
        tiny_encoder_config,
    )
    from toonbooth.nets.stylegan2 import (
        Discriminator,
        DiscriminatorConfig,
        Generator,
        GeneratorConfig,
        tiny_discriminator,
        tiny_generator,
    )
    from toonbooth.nets.vgg import LPIPS, VGG16Features, tiny_vgg16

    torch.manual_seed(0)
    if full:
        base = Generator(GeneratorConfig(size=size)).eval()
        toon = Generator(GeneratorConfig(size=size)).eval()
        disc = Discriminator(DiscriminatorConfig(size=size))
        enc_cfg = EncoderConfig(n_styles=n_styles_for(size))
        vgg = VGG16Features().eval()
    else:
        base, toon = tiny_generator(size, seed=0), tiny_generator(size, seed=1)
        disc = tiny_discriminator(size, seed=2)
        enc_cfg = tiny_encoder_config(n_styles=n_styles_for(size), style_dim=32, input_size=64)
        vgg = tiny_vgg16()
    for m in (base, toon):
        m.requires_grad_(False)
    encoder = PSPInverter(build_encoder(enc_cfg, "e4e"), base.mean_latent(1000)[0]).eval()
    return {
        "base": base.to(device), "toon": toon.to(device), "disc": disc.to(device), "encoder": encoder.to(device),
        "lpips": LPIPS(vgg).to(device), "params": {
            "generator": sum(p.numel() for p in base.parameters()), "discriminator": sum(p.numel() for p in disc.parameters()),
            "encoder": sum(p.numel() for p in encoder.parameters()), "vgg16": sum(p.numel() for p in vgg.parameters()),
        },
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--full", action="store_true", help="config-f / IR-SE50 / VGG16 at their real widths")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--projector-steps", type=int, default=10)
    ap.add_argument("--train-steps", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from toonbooth.nets import toonify as tf
    from toonbooth.training.toon_gan import ToonGanConfig, ToonGanTrainer
    from toonbooth.vision.ffhq_align import align_face
    from toonbooth.vision.landmarks import packaged_landmarker
    from toonbooth.vision.sticker import sticker_mask, sticker_rgba

    photo = Image.open(PHOTO).convert("RGB")
    res: dict[str, Any] = {
        "size": args.size, "full": args.full, "device": str(device), "torch": torch.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }  # fmt: skip
    t0 = time.perf_counter()
    landmarker = packaged_landmarker()
    res["landmarker_load_s"] = round(time.perf_counter() - t0, 3)
    stages: dict[str, Any] = {}
    stages["detect_hog"], face = timed(lambda: landmarker.main_face(photo, detector="hog"), args.repeats, torch.device("cpu"))
    stages["align"], aligned = timed(lambda: align_face(photo, face, output_size=args.size), args.repeats, torch.device("cpu"))
    m = build(args.size, args.full, device)
    res["params"] = m.pop("params")
    stages["invert_encoder"], codes = timed(
        lambda: tf.invert(aligned.image, m["base"], encoder=m["encoder"]).latent, args.repeats, device
    )
    n = args.projector_steps
    proj, inv = timed(lambda: tf.invert(aligned.image, m["base"], projector_steps=n, perceptual=m["lpips"]), 1, device)
    stages["invert_projector_per_step"] = {k: round(v / n, 4) for k, v in proj.items()}
    stages["invert_projector_per_step"]["steps"] = n
    stages["blend_generators"], blended = timed(lambda: tf.blend_generators(m["toon"], m["base"], 16), args.repeats, device)
    stages["synthesize"], img = timed(lambda: tf.synthesize(blended, codes), args.repeats, device)
    toon = tf.tensor_to_image(img)
    stages["sticker"], _ = timed(lambda: sticker_rgba(toon, sticker_mask(toon, aligned.landmarks)), args.repeats,
                                 torch.device("cpu"))  # fmt: skip
    stages["paste_back"], _ = timed(lambda: aligned.transform.paste_back(toon, photo), args.repeats, torch.device("cpu"))
    res["stages"] = stages
    res["projector_loss_first_last"] = [round(inv.losses[0], 4), round(inv.losses[-1], 4)]

    # fine-tuning: steps/s over `--train-steps` steps after 2 warm-up steps (lazy R1 / path length included)
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.uniform(-1, 1, (3, args.size, args.size)).astype(np.float32)).to(device)
              for _ in range(16)]  # fmt: skip
    g = m["base"].requires_grad_(True)
    trainer = ToonGanTrainer(g, m["disc"], images, ToonGanConfig(batch_size=args.train_batch, freeze_d=2, augment_p=0.2))
    for _ in range(2):
        trainer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(args.train_steps):
        trainer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    res["train"] = {"steps": args.train_steps, "batch": args.train_batch, "seconds": round(dt, 3),
                    "steps_per_s": round(args.train_steps / dt, 3), "images_per_s": round(args.train_steps * args.train_batch / dt, 2),
                    "note": "every 4th step adds path length, every 16th R1 (lazy), as StyleGAN2"}  # fmt: skip
    if device.type == "cuda":
        res["cuda_max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
