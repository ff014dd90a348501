"""Makeup studio timings, printed as JSON.

- `classic`: a ~1-megapixel face (the shared photo upscaled to 1024 x 1024) and a made-up reference of the same
  size (`assets/sample_makeup_reference.png`: purple lips, blue eye shadow, pink blush on the mirrored photo):
  - `transfer_s`: the per-region Lab transfer alone (`vision.makeup_classic.transfer_makeup`, regions given);
  - `job_cold_s`: the whole classic job through `runtime.execute` (landmarks + regions of both photos, transfer,
    change report, PNG encoding and storage of result / before-after / overlay), first run of a fresh engine;
  - `job_warm_s`: the same job again (the engine keeps both photos' landmarks and regions: the UI's preview on a
    slider change), median of `--repeats`. `*_cpu_s`: process CPU seconds of the same (one torch / OpenCV
    thread mostly), for busy machines where the wall clock waits for other processes.
- `neural_tiny`: the Stable-Makeup loop on the tiny random-weight set (CPU, one torch thread): ours
  (`nets.stable_makeup.run_stable_makeup`) against the same loop written with plain diffusers calls
  (`tests/makeup_plain_loop.py`), same inputs and seed (`pixels_equal`), 30 steps at strength 0.6 (18 run) at
  `--size`; medians of `--repeats` alternating runs and their ratio (target <= 1.02; `ratio_cpu`: of the process
  CPU times, less sensitive to a busy machine); and the whole neural job
  through `runtime.execute` (`job_s`, warm).

The GPU time against the seed's 8.2-9.8 s per image needs real weights on a device machine (not measured here).

    .venv/bin/python bench/makeup.py [--repeats 5] [--size 64] [--only classic|neural] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
PHOTO = ROOT / "assets" / "sample_face.png"
REFERENCE = ROOT / "assets" / "sample_makeup_reference.png"


def made_up_reference(photo: Image.Image) -> Image.Image:
    """`assets/sample_makeup_reference.png` (the mirrored sample with makeup painted in) at `photo`'s size."""
    return Image.open(REFERENCE).convert("RGB").resize(photo.size, Image.Resampling.LANCZOS)


def _runtime(home: Path, models_dir: Path):
    from toonbooth.core.settings import Settings
    from toonbooth.runtime.families import model_manager
    from toonbooth.runtime.storage_local import LocalStorage

    settings = Settings(home=home, models_dir=models_dir, data_dir=home / "data", device="cpu")
    return settings, model_manager(settings), LocalStorage(settings.resolved_data_dir)


def _job(settings, models, storage, engines, raw: dict) -> tuple[float, object]:
    from toonbooth.core.specs import parse_job_spec
    from toonbooth.runtime.context import JobContext
    from toonbooth.runtime.execute import execute

    ctx = JobContext(settings, models, storage, cancel_event=threading.Event())
    t = time.perf_counter()
    out = execute(parse_job_spec(raw), ctx, engines)
    return time.perf_counter() - t, out


def bench_classic(tmp: Path, repeats: int) -> dict:
    from toonbooth.core.images import image_to_png_bytes
    from toonbooth.engines.base import EngineRegistry
    from toonbooth.engines.makeup import MakeupEngine
    from toonbooth.vision.face_regions import regions_from_landmarks
    from toonbooth.vision.makeup_classic import transfer_makeup
    from toonbooth.vision.makeup_faces import packaged_landmarker

    photo = Image.open(PHOTO).convert("RGB").resize((1024, 1024), Image.Resampling.LANCZOS)
    reference = made_up_reference(photo)
    lm = packaged_landmarker()
    src_r = regions_from_landmarks(lm.main_face(photo), (1024, 1024))
    ref_r = regions_from_landmarks(lm.main_face(reference), (1024, 1024))
    transfer, transfer_cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        transfer_makeup(photo, src_r, reference, ref_r)
        transfer.append(time.perf_counter() - t)
        transfer_cpu.append(time.process_time() - c)
    (tmp / "empty").mkdir()
    settings, models, storage = _runtime(tmp / "classic", tmp / "empty")
    raw = {"kind": "makeup", "source": storage.put(image_to_png_bytes(photo)),
           "reference": storage.put(image_to_png_bytes(reference)), "backend": "classic"}  # fmt: skip
    engines = EngineRegistry([MakeupEngine()])
    c = time.process_time()
    cold, out = _job(settings, models, storage, engines, raw)
    cold_cpu = time.process_time() - c
    warm, warm_cpu = [], []
    for _ in range(repeats):
        c = time.process_time()
        warm.append(_job(settings, models, storage, engines, raw)[0])
        warm_cpu.append(time.process_time() - c)
    return {
        "size": [1024, 1024], "transfer_s": round(statistics.median(transfer), 4),
        "transfer_cpu_s": round(statistics.median(transfer_cpu), 4), "job_cold_s": round(cold, 3),
        "job_cold_cpu_s": round(cold_cpu, 3), "job_warm_s": round(statistics.median(warm), 3),
        "job_warm_cpu_s": round(statistics.median(warm_cpu), 3), "stages_cold": out.info.get("timings"),
        "changed": out.info.get("changed"),
    }  # fmt: skip


def bench_neural(tmp: Path, repeats: int, size: int) -> dict:
    import torch

    from makeup_plain_loop import plain_makeup_loop
    from toonbooth.core.images import image_to_png_bytes
    from toonbooth.engines.base import EngineRegistry
    from toonbooth.engines.makeup import MakeupEngine
    from toonbooth.models import sd
    from toonbooth.models.samplers import make_scheduler
    from toonbooth.models.tiny import make_tiny_set
    from toonbooth.nets.face_parsing import write_tiny_face_parser
    from toonbooth.nets.makeup_encoder import clip_pixel_values
    from toonbooth.nets.stable_makeup import run_stable_makeup, write_tiny_stable_makeup

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    models_dir = tmp / "tiny"
    make_tiny_set(models_dir)
    write_tiny_stable_makeup(models_dir / "StableMakeup" / "stable-makeup")
    write_tiny_face_parser(models_dir / "FaceParsing" / "79999_iter.pth")
    settings, models, storage = _runtime(tmp / "neural", models_dir)
    base = sd.base_pipeline(models, "tiny-sd15", "sd15")[0]
    bundle = models.load_entry(models.entry("stable-makeup", "stable_makeup"), unet=base.unet, unet_key="tiny")
    photo = Image.open(PHOTO).convert("RGB")
    src, ref = photo.resize((size, size)), made_up_reference(photo).resize((size, size))
    struct = ref.transpose(Image.Transpose.ROTATE_90)
    steps, strength, seed = 30, 0.6, 1

    def ours():
        return run_stable_makeup(
            bundle, unet=base.unet, vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
            scheduler=make_scheduler("DDIM", base._toonbooth_scheduler_config), source=src, structure=struct,
            reference=ref, steps=steps, strength=strength, cfg_scale=1.6, generator=torch.Generator().manual_seed(seed),
        ).image  # fmt: skip

    def plain():
        enc = bundle.detail_encoder
        return plain_makeup_loop(
            unet=base.unet, vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
            scheduler=make_scheduler("DDIM", base._toonbooth_scheduler_config), identity_cn=bundle.identity,
            structure_cn=bundle.structure, image_encoder=enc.image_encoder, resampler=enc.resampler,
            ssr_processors=dict(zip(bundle.processor_names, enc.SSR_layers, strict=True)), source=src,
            structure=struct, reference_pixels=clip_pixel_values(ref, size=bundle.clip_size), steps=steps,
            strength=strength, cfg=1.6, seed=seed,
        )[0]  # fmt: skip

    equal = np.array_equal(np.asarray(ours()), np.asarray(plain()))  # also the warm-up
    t_ours, t_plain, c_ours, c_plain = [], [], [], []
    for _ in range(repeats):
        for fn, acc, cpu in ((ours, t_ours, c_ours), (plain, t_plain, c_plain)):
            t, c = time.perf_counter(), time.process_time()
            fn()
            acc.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    raw = {"kind": "makeup", "source": storage.put(image_to_png_bytes(photo)),
           "reference": storage.put(image_to_png_bytes(made_up_reference(photo))), "backend": "neural", "size": size,
           "diffusion": {"checkpoint": "tiny-sd15", "sampler": "DDIM", "steps": steps, "strength": strength,
                         "cfg_scale": 1.6, "seed": seed}}  # fmt: skip
    engines = EngineRegistry([MakeupEngine()])
    _job(settings, models, storage, engines, raw)  # warm-up: landmarks, parsing, loads
    jobs = [_job(settings, models, storage, engines, raw) for _ in range(repeats)]
    m_ours, m_plain = statistics.median(t_ours), statistics.median(t_plain)
    return {
        "size": size, "steps": steps, "strength": strength, "steps_run": int(steps * strength),
        "ours_s": round(m_ours, 4), "plain_diffusers_s": round(m_plain, 4), "ratio": round(m_ours / m_plain, 4),
        "ratio_cpu": round(statistics.median(c_ours) / statistics.median(c_plain), 4),
        "pixels_equal": bool(equal), "job_s": round(statistics.median(j[0] for j in jobs), 3),
        "job_stages": jobs[-1][1].info.get("timings"),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=64, help="Face crop of the tiny neural loop (multiple of 64).")
    ap.add_argument("--only", choices=["classic", "neural"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result: dict = {"machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                                "threads": int(os.environ["OMP_NUM_THREADS"]),
                                "load_avg_1m": round(os.getloadavg()[0], 2)}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tb-bench-makeup-") as tmp:
        if args.only in (None, "classic"):
            result["classic"] = bench_classic(Path(tmp), args.repeats)
        if args.only in (None, "neural"):
            result["neural_tiny"] = bench_neural(Path(tmp), args.repeats, args.size)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
