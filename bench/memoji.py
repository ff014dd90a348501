"""Memoji recipe: toonbooth's engine vs the same two passes written as plain diffusers calls.

Both run in one process on the same components, same sizes, steps, seed. Prints JSON:
seconds per stage for both, the ratio ours/stock, peak memory.

    .venv/bin/python bench/memoji.py --size tiny            # CPU, tiny configs as in the tests
    .venv/bin/python bench/memoji.py --size full --steps 50 # real SDXL configs, random weights (GPU)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--steps", type=int, default=None, help="default: 20 tiny, 50 full")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--photo-side", type=int, default=None, help="pass-1 long side (default 128 tiny, 1024 full)")
    args = ap.parse_args()

    import torch
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline
    from PIL import Image

    from toonbooth.core.settings import Settings
    from toonbooth.core.specs import AvatarSpec, LoraRef
    from toonbooth.models.manager import ModelManager
    from toonbooth.models.tiny import make_tiny_set
    from toonbooth.runtime.context import JobContext
    from toonbooth.runtime.execute import execute
    from toonbooth.runtime.storage_local import LocalStorage
    from toonbooth.vision.edges import canny_control_image

    steps = args.steps or (20 if args.size == "tiny" else 50)
    side = args.photo_side or (128 if args.size == "tiny" else 1024)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tmp = Path(tempfile.mkdtemp(prefix="tb-bench-"))
    if args.size == "tiny":
        make_tiny_set(tmp / "models")
        checkpoint, controlnet, lora = "tiny-sdxl", "tiny-sdxl-canny", "tiny-memoji"
    else:
        from toonbooth.models.reference_configs import make_full_size_sdxl_set  # real configs, random weights

        make_full_size_sdxl_set(tmp / "models", dtype=torch.float16)
        checkpoint, controlnet, lora = "full-sdxl", "full-sdxl-canny", "full-memoji"
    settings = Settings(home=tmp, models_dir=tmp / "models", device=device, max_side=side)
    models = ModelManager(settings)
    storage = LocalStorage(settings.resolved_data_dir)
    photo = Image.open(ROOT / "assets" / "sample_face.png").convert("RGB").resize((side, side))
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    ref = storage.put(buf.getvalue())
    # The tiny set's tokenizer has one token per character, so the recipe's 250-character negative prompt
    # would be 4 chunks (308 tokens) on our A1111-style path and truncated to 77 by stock diffusers: not the
    # same work. With CLIP's real tokenizer it is one chunk; keep it one chunk here too.
    negative = spec_negative = AvatarSpec.model_fields["negative_prompt"].default
    if args.size == "tiny":
        spec_negative = negative[:60]
    spec = AvatarSpec(image=ref, backend="neural", checkpoint=checkpoint, controlnet=controlnet,
                      loras=[LoraRef(name=lora, weight=1.0)], steps=steps, max_side=side,
                      negative_prompt=spec_negative)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    # ours: the engine through the runtime, stage times from progress events
    def ours():
        marks: dict[str, float] = {}

        def on_event(e):
            if getattr(e, "type", "") == "progress":
                marks.setdefault(e.stage, time.perf_counter())

        t0 = time.perf_counter()
        execute(spec, JobContext(settings, models, storage, on_event=on_event))
        sync()
        t1 = time.perf_counter()
        p2 = marks.get("pass 2", t1)
        return {"pass1_s": p2 - t0, "pass2_s": t1 - p2, "total_s": t1 - t0}

    # stock: the same two passes as plain diffusers calls on the same (already loaded) modules
    from toonbooth.models import sd

    base, _ = sd.base_pipeline(models, checkpoint, "sdxl")
    cn, _ = sd.controlnet(models, controlnet, base, "sdxl")
    sd.apply_loras(models, base, [(lora, 1.0)])
    from toonbooth.models.samplers import make_scheduler

    stock1 = StableDiffusionXLControlNetImg2ImgPipeline(**{k: v for k, v in base.components.items()}, controlnet=cn)
    stock2 = StableDiffusionXLImg2ImgPipeline(**base.components)
    for p in (stock1, stock2):
        p.scheduler = make_scheduler("DDIM", base._toonbooth_scheduler_config)
        p.set_progress_bar_config(disable=True)
    from toonbooth.engines.avatar import working_size

    w1, h1 = working_size(side, side, side)

    def stock():
        t0 = time.perf_counter()
        g = torch.Generator("cpu").manual_seed(spec.seed)
        init = photo.resize((w1, h1))
        control = canny_control_image(init, 70, 230)
        out1 = stock1(prompt=spec.build_prompt(), negative_prompt=spec.negative_prompt, image=init,
                      control_image=control, strength=0.75, num_inference_steps=steps, guidance_scale=7.0,
                      controlnet_conditioning_scale=1.0, generator=g, height=h1, width=w1).images[0]
        sync()
        t1 = time.perf_counter()
        up = out1.resize((int(w1 * 1.5) // 8 * 8, int(h1 * 1.5) // 8 * 8))
        stock2(prompt=spec.build_prompt(), negative_prompt=spec.negative_prompt, image=up, strength=0.75,
               num_inference_steps=steps, guidance_scale=7.0, generator=torch.Generator("cpu").manual_seed(spec.seed),
               height=up.height, width=up.width).images[0].tobytes()
        sync()
        t2 = time.perf_counter()
        return {"pass1_s": t1 - t0, "pass2_s": t2 - t1, "total_s": t2 - t0}

    ours()
    stock()  # warm-up both
    runs_ours, runs_stock = [], []
    for _ in range(args.repeats):  # interleaved so drift hits both equally
        runs_ours.append(ours())
        runs_stock.append(stock())

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    result = {
        "bench": "memoji", "size": args.size, "device": device, "steps": steps, "pass1_size": [w1, h1],
        "repeats": args.repeats, "torch": torch.__version__, "negative_prompt_chars": len(spec.negative_prompt),
        "ours": {k: round(med(runs_ours, k), 4) for k in ("pass1_s", "pass2_s", "total_s")},
        "stock_diffusers": {k: round(med(runs_stock, k), 4) for k in ("pass1_s", "pass2_s", "total_s")},
    }
    result["ratio_ours_over_stock"] = round(result["ours"]["total_s"] / result["stock_diffusers"]["total_s"], 4)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if device == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
