"""How fast the cheap paths and the refusals act: the timings the unit tests no longer assert.

The tests assert what these paths do (no pixel decoded for a refused image bomb, no VAE decode for a
preview, no network attempt for an offline pull, no step after the one under way when a job is
canceled); this script measures how long they take, printed as JSON (median of `--repeats` runs after
one warm-up, milliseconds):

- `preview_128_ms`: `latents_to_preview` of a (2, 4, 128, 128) fp16 SDXL latent (target < 5 ms);
- `bomb_refusal_ms`: `load_image` refusing a 20000x20000 PNG (~50 KB, 400 M pixels) (target < 500 ms);
- `offline_pull_ms`: `hub.pull` of every entry of the anime recipe with HF_HUB_OFFLINE=1 (target < 5 s);
- `unreachable_hub_ms`: `hub.pull` against a closed loopback port, probe timeout 2 s (target < 5 s);
- `cancel_ms`: `Service.cancel` of a running tiny txt2img job (150 steps, 64 px) until its record is
  `canceled` (target < 2 s), with `steps_after_cancel` (expected 0 or 1).

    .venv/bin/python bench/guards.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

MB = 1024 * 1024


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (imports, caches)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return round(statistics.median(runs) * 1000, 2)


def bomb_png(side: int = 20000) -> bytes:
    """A valid 1-bit grey PNG of side x side zero pixels, written chunk by chunk (~50 KB for 20000)."""

    def chunk(ctype: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def preview_case(repeats: int) -> float:
    import torch

    from toonbooth.models.preview import latents_to_preview

    lat = torch.randn(2, 4, 128, 128).half()
    return median_ms(lambda: latents_to_preview(lat, "sdxl"), repeats)


def bomb_case(repeats: int) -> float:
    from toonbooth.core.errors import InputTooLargeError
    from toonbooth.core.images import load_image

    data = bomb_png()

    def refuse() -> None:
        try:
            load_image(data, field="photo", max_bytes=MB, max_pixels=40_000_000)
        except InputTooLargeError:
            return
        raise SystemExit("the bomb was not refused")

    return median_ms(refuse, repeats)


def pull_cases(repeats: int) -> dict[str, float]:
    import huggingface_hub.constants

    from toonbooth.core.errors import OfflineError
    from toonbooth.models import catalog, hub

    folder = Path(tempfile.mkdtemp()) / "models"

    def offline() -> None:
        for entry in catalog.recipe_entries("anime"):
            try:
                hub.pull(entry, folder, offline=True)
            except OfflineError:
                continue
            raise SystemExit(f"{entry.name} was pulled offline")

    def unreachable() -> None:
        try:
            hub.pull("stable-diffusion-v1-5", folder, offline=False, endpoint="http://127.0.0.1:9", timeout=2)
        except OfflineError:
            return
        raise SystemExit("the closed port answered")

    out = {"offline_pull_ms": median_ms(offline, repeats)}
    was = huggingface_hub.constants.HF_HUB_OFFLINE, huggingface_hub.constants.ENDPOINT
    huggingface_hub.constants.HF_HUB_OFFLINE = False
    huggingface_hub.constants.ENDPOINT = "http://127.0.0.1:9"  # its agent-registry fetch stays local too
    try:
        out["unreachable_hub_ms"] = median_ms(unreachable, repeats)
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, huggingface_hub.constants.ENDPOINT = was
    return out


def cancel_case(repeats: int) -> dict[str, float]:
    from toonbooth.core.settings import Settings
    from toonbooth.core.specs import GenerateSpec
    from toonbooth.models.tiny import make_tiny_set
    from toonbooth.runtime.service import Service

    home = Path(tempfile.mkdtemp())
    make_tiny_set(home / "models")
    settings = Settings(home=home, models_dir=home / "models", data_dir=home / "data", device="cpu")
    spec = GenerateSpec(checkpoint="tiny-sd15", prompt="a cat", steps=150, width=64, height=64, seed=1,
                        sampler_name="Euler")  # fmt: skip
    took, after = [], []
    with Service(settings) as svc:
        for _ in range(repeats + 1):
            job = svc.submit(spec, "bench")
            deadline = time.monotonic() + 120
            while svc.get(job.id, "bench").step < 3:
                if time.monotonic() > deadline:
                    raise SystemExit("the job did not start")
                time.sleep(0.005)
            t0 = time.perf_counter()
            step = svc.cancel(job.id, "bench").step
            rec = svc.wait(job.id, "bench", timeout=60)
            took.append(time.perf_counter() - t0)
            after.append(rec.step - step)
            if rec.state != "canceled":
                raise SystemExit(f"job ended {rec.state}")
    return {
        "cancel_ms": round(statistics.median(took[1:]) * 1000, 1),
        "cancel_max_ms": round(max(took[1:]) * 1000, 1),
        "steps_after_cancel": max(after[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    out: dict[str, object] = {
        "preview_128_ms": preview_case(args.repeats),
        "bomb_refusal_ms": bomb_case(args.repeats),
    }
    out.update(pull_cases(args.repeats))
    out.update(cancel_case(args.repeats))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
