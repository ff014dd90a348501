"""Per-stage seconds of the anime-me perception stages (segment, inpaint, composite), printed as JSON.

Backends measured on a ~1-megapixel photo (the shared face photo upscaled to 1024x1024), with a click on
the face:
- classic: GrabCut (+ clean-up) -> Telea -> Lab harmonize + composite (target: <= ~1.5 s together, which
  leaves room for the toon stage in the 2 s end-to-end budget);
- tiny: the neural code paths on tiny random-weight models (SAM 64 px, LaMa ngf 8) on CPU;
- full (`--full`): SAM ViT-B and big-lama configs with random weights (real sizes, no download), on
  `--device` (cuda when available).

The character layer is the photo itself (the toon / diffusion stage is not measured here); compositing
costs the same for any character image. Each figure is the median of `--repeats` runs after one warm-up
run (wall seconds, and `cpu`: process CPU seconds, all threads); `first` is the cold first run (for SAM: with the image embedding, `click` = a second click that
reuses the cached embedding).

    .venv/bin/python bench/anime_stages.py [--repeats 3] [--full] [--device cuda]
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
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "sample_face.png"


def timed(fn: Callable[[], Any], repeats: int) -> tuple[dict[str, float], Any]:
    """Wall seconds of the first run and the median of `repeats` more; `cpu` = median process CPU
    seconds (all threads), less sensitive than wall time to other jobs on a shared machine."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    runs, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "first": round(first, 4),
        "median": round(statistics.median(runs), 4),
        "cpu": round(statistics.median(cpu), 4),
    }, out


def load_photo(side: int) -> Image.Image:
    img = Image.open(PHOTO).convert("RGB")
    return img.resize((side, side), Image.Resampling.LANCZOS)


def face_click(img: Image.Image):
    from toonbooth.vision.faces import largest_face
    from toonbooth.vision.segment import ClickPrompt, Point

    face = largest_face(img)
    if face is None:
        raise SystemExit(f"no face found in {PHOTO}")
    return ClickPrompt(points=[Point(x=(face.x0 + face.x1) // 2, y=(face.y0 + face.y1) // 2)])


def composite_stage(img: Image.Image, restored: Image.Image, mask: np.ndarray, alpha: np.ndarray):
    from toonbooth.vision.composite import composite, harmonize, layers_to_rgba

    char = harmonize(img, restored, mask, band_px=24, strength=0.5)
    out = composite(restored, char, alpha, edge_line_px=2)
    layers_to_rgba(char, alpha)
    return out


def bench_classic(img: Image.Image, prompt, repeats: int) -> dict[str, Any]:
    from toonbooth.vision.inpaint import telea_inpaint
    from toonbooth.vision.segment import clean_mask, grabcut_segment

    def seg():
        res = grabcut_segment(img, prompt)
        return clean_mask(res.mask, prompt.positive_points, dilate_px=0, feather_px=3)

    t_seg, (mask, alpha) = timed(seg, repeats)
    t_inp, restored = timed(lambda: telea_inpaint(img, mask, radius=5, dilate_px=8), repeats)
    t_cmp, _ = timed(lambda: composite_stage(img, restored, mask, alpha), repeats)
    total = t_seg["median"] + t_inp["median"] + t_cmp["median"]
    return {
        "total_cpu_s": round(t_seg["cpu"] + t_inp["cpu"] + t_cmp["cpu"], 4),
        "segment_grabcut": t_seg,
        "inpaint_telea": t_inp,
        "composite": t_cmp,
        "total_median_s": round(total, 4),
        "mask_fraction": round(float(mask.mean()), 4),
    }


def bench_neural(img: Image.Image, prompt, repeats: int, full: bool, device: str) -> dict[str, Any]:
    import torch

    from toonbooth.nets.lama import LamaConfig, build_lama
    from toonbooth.vision.inpaint import LamaInpainter
    from toonbooth.vision.segment import ClickPrompt, Point, SamSegmenter, build_tiny_sam, clean_mask

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    if full:
        from transformers import SamConfig, SamModel, SamProcessor
        from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

        torch.manual_seed(0)
        cfg = SamConfig()  # default sizes = sam-vit-base: ViT hidden 768, 12 layers, 1024 px input
        assert cfg.vision_config.hidden_size == 768 and cfg.vision_config.num_hidden_layers == 12
        model = SamModel(cfg).to(dtype)
        sam = SamSegmenter(model, SamProcessor(image_processor=SamImageProcessorPil()), device=device)
        lama = build_lama(LamaConfig(), seed=0).to(dtype)
    else:
        model, processor = build_tiny_sam(seed=0)
        sam = SamSegmenter(model, processor, device=device)
        lama = build_lama(LamaConfig.tiny(), seed=0)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def seg_new_image():
        sam.clear_cache()
        r = sam.segment(img, prompt)
        sync()
        return r

    t_embed, _ = timed(seg_new_image, repeats)
    p = prompt.points[0]
    second = ClickPrompt(points=[p, Point(x=min(img.width - 1, p.x + 40), y=min(img.height - 1, p.y + 200))])

    def seg_click():
        r = sam.segment(img, second)
        sync()
        return r

    t_click, res = timed(seg_click, repeats)
    # a random-weight SAM gives an arbitrary mask: inpaint a fixed person-sized region instead
    mask = np.zeros((img.height, img.width), bool)
    mask[img.height // 8 :, img.width // 5 : img.width * 4 // 5] = True
    mask, alpha = clean_mask(mask, [], feather_px=3)
    inpainter = LamaInpainter(lama, device=device)

    def inp():
        out = inpainter.inpaint(img, mask)
        sync()
        return out

    t_inp, restored = timed(inp, repeats)
    t_cmp, _ = timed(lambda: composite_stage(img, restored, mask, alpha), repeats)
    return {
        "segment_sam_new_image": t_embed,
        "segment_sam_click_cached": t_click,
        "inpaint_lama": t_inp,
        "composite": t_cmp,
        "total_median_s": round(t_embed["median"] + t_inp["median"] + t_cmp["median"], 4),
        "sam_image_size": sam.image_size,
        "lama_config": {"ngf": lama.config.ngf, "n_blocks": lama.config.n_blocks},
        "dtype": str(dtype).removeprefix("torch."),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=1024, help="photo side in px (1024 -> ~1 MP)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="also SAM ViT-B + big-lama sized random models")
    ap.add_argument(
        "--device", default=None, help="torch device for the neural runs (default: cuda if available)"
    )
    ap.add_argument("--skip-classic", action="store_true")
    args = ap.parse_args(argv)

    import cv2
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    img = load_photo(args.side)
    prompt = face_click(img)
    report: dict[str, Any] = {
        "photo": f"{PHOTO.name} upscaled to {img.width}x{img.height}",
        "click": prompt.points[0].model_dump(),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_avg_1min": round(os.getloadavg()[0], 2),
            "opencv": cv2.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }
    if not args.skip_classic:
        report["classic"] = bench_classic(img, prompt, args.repeats)
    report["tiny_cpu"] = bench_neural(img, prompt, args.repeats, full=False, device="cpu")
    if args.full:
        report[f"full_{device.split(':')[0]}"] = bench_neural(
            img, prompt, args.repeats, full=True, device=device
        )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
