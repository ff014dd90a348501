"""Per-stage seconds of the whole anime-me job (segment, inpaint, generate, composite), printed as JSON.

The job runs through the runtime's one execution path (`runtime.execute`: engine + PNG encoding + storage)
on a ~1-megapixel photo (the shared face photo upscaled to 1024x1024) with a click on the face:
- classic: GrabCut -> Telea -> toon filter -> Lab harmonize + composite, no weights (target: <= 2 s end to
  end on this machine);
- tiny: the neural code paths on tiny random-weight models on CPU: SAM (64 px) from a saved folder,
  LaMa (ngf 8) from a safetensors file, SD1.5 img2img + ControlNet canny + style LoRA at `--gen-size`.
Also `mask_click`: a mask-only job on the same photo after the first (SAM's image embedding cached), what
a new click in the UI costs.

Each figure is the median of `--repeats` runs after one warm-up run (`first` = the cold first run, model
loading included). `stages` come from the job's own timers (`info.timings`); `job` is the whole
`execute` call (stages + PNG encoding + storage).

    .venv/bin/python bench/anime_job.py [--repeats 3] [--only classic|tiny] [--out result.json]
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
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "sample_face.png"
SIDE = 1024
CLICK = {"x": 450, "y": 230}  # the face, at 1024 px
STAGES = ("check", "segment", "inpaint", "generate", "composite")


def _runtime(home: Path, models_dir: Path, extra: list[Path]):
    from toonbooth.core.settings import Settings
    from toonbooth.models.cache import ModelCache
    from toonbooth.runtime.families import model_manager
    from toonbooth.runtime.storage_local import LocalStorage

    settings = Settings(
        home=home, models_dir=models_dir, extra_model_dirs=extra, data_dir=home / "data", device="cpu"
    )
    return settings, model_manager(settings, cache=ModelCache(max_items=6)), LocalStorage(settings.resolved_data_dir)


def _photo_ref(storage) -> str:
    from toonbooth.core.images import image_to_png_bytes

    img = Image.open(PHOTO).convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    return storage.put(image_to_png_bytes(img))


def _time_job(settings, models, storage, spec) -> tuple[float, dict[str, float], Any]:
    from toonbooth.runtime.context import JobContext
    from toonbooth.runtime.execute import execute

    ctx = JobContext(settings, models, storage)
    t0 = time.perf_counter()
    out = execute(spec, ctx)
    return time.perf_counter() - t0, dict(out.info["timings"]), out


def _measure(settings, models, storage, spec, repeats: int) -> dict[str, Any]:
    first_total, first_stages, out = _time_job(settings, models, storage, spec)
    runs = [_time_job(settings, models, storage, spec) for _ in range(repeats)]
    med = {s: round(statistics.median(r[1].get(s, 0.0) for r in runs), 4) for s in STAGES if s in runs[0][1]}
    return {
        "backends": out.info["backends"],
        "backend": out.backend,
        "stages": med,
        "stages_sum": round(sum(med.values()), 4),
        "job": round(statistics.median(r[0] for r in runs), 4),
        "first": {"job": round(first_total, 4), "stages": {k: round(v, 4) for k, v in first_stages.items()}},
        "mask_area": round(out.info["mask_area"], 4),
    }


def bench_classic(repeats: int) -> dict[str, Any]:
    from toonbooth.core.specs import AnimeSpec

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings, models, storage = _runtime(home, home / "models", [])
        ref = _photo_ref(storage)
        spec = AnimeSpec(image=ref, points=[CLICK], backend="classic")
        res = _measure(settings, models, storage, spec, repeats)
        click = [
            _time_job(settings, models, storage, spec.model_copy(update={"mode": "mask"}))[0]
            for _ in range(repeats)
        ]
        res["mask_click"] = round(statistics.median(click), 4)
        res["target_job_s"] = 2.0
        res["meets_target"] = res["job"] <= 2.0
        return res


def bench_tiny(repeats: int, gen_size: int, steps: int) -> dict[str, Any]:
    from safetensors.torch import save_file

    from toonbooth.core.specs import AnimeSpec
    from toonbooth.models.tiny import make_tiny_set
    from toonbooth.nets.lama import LamaConfig, build_lama
    from toonbooth.vision.segment import build_tiny_sam

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        t0 = time.perf_counter()
        make_tiny_set(home / "models")
        extra = home / "extra"
        sam, processor = build_tiny_sam(seed=11)
        sam.save_pretrained(extra / "SAM" / "tiny-sam")
        processor.save_pretrained(extra / "SAM" / "tiny-sam")
        lama = build_lama(LamaConfig.tiny(), seed=0)
        (extra / "LaMa").mkdir(parents=True)
        sd = {f"generator.{k}": v.contiguous() for k, v in lama.generator.state_dict().items()}
        save_file(sd, str(extra / "LaMa" / "tiny-lama.safetensors"))
        setup = time.perf_counter() - t0
        settings, models, storage = _runtime(home, home / "models", [extra])
        ref = _photo_ref(storage)
        spec = AnimeSpec(
            image=ref, points=[CLICK], backend="neural", sam_model="tiny-sam", lama_model="tiny-lama",
            checkpoint="tiny-sd15", controlnet="tiny-sd15-canny", style="tiny-sd15-style", steps=steps,
            gen_size=gen_size, seed=1,
        )  # fmt: skip
        res = _measure(settings, models, storage, spec, repeats)
        click = [
            _time_job(settings, models, storage, spec.model_copy(update={"mode": "mask"}))[0]
            for _ in range(repeats)
        ]
        res.update(
            mask_click=round(statistics.median(click), 4),
            setup_s=round(setup, 2),
            gen_size=gen_size,
            steps=steps,
        )
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["classic", "tiny"], default=None)
    ap.add_argument("--gen-size", type=int, default=64, help="tiny: long side of the redrawn crop")
    ap.add_argument("--steps", type=int, default=10, help="tiny: sampling steps (x strength 0.6 run)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()

    import torch

    result: dict[str, Any] = {
        "bench": "anime_job",
        "photo": f"{PHOTO.name} upscaled to {SIDE}x{SIDE}",
        "click": CLICK,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "cuda": torch.cuda.is_available(),
        },  # fmt: skip
        "repeats": args.repeats,
    }
    if args.only in (None, "classic"):
        result["classic"] = bench_classic(args.repeats)
    if args.only in (None, "tiny"):
        result["tiny_cpu"] = bench_tiny(args.repeats, args.gen_size, args.steps)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
