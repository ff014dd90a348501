"""Latency of a job through the runtime: `Service.submit -> wait`, p50/p95 over N jobs.

Two cases in one run: a classic avatar job (128 px photo), and a do-nothing engine that isolates the
runtime's own overhead (queue row, claim, events, storage). Prints JSON.

    .venv/bin/python bench/service_latency.py [N]
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from toonbooth.core.artifacts import ImageArtifact
from toonbooth.core.settings import Settings
from toonbooth.core.specs import AvatarSpec
from toonbooth.engines.avatar import AvatarOutput
from toonbooth.engines.base import Engine
from toonbooth.runtime.engines import default_engines
from toonbooth.runtime.service import Service

ROOT = Path(__file__).resolve().parents[1]


class NoopEngine(Engine):
    """Decodes the photo, reports one step, returns an 8x8 image: the runtime's own overhead."""

    kind, Spec, Output = "avatar", AvatarSpec, AvatarOutput

    def run(self, spec, ctx):
        ctx.load_image(spec.image, field="image")
        ctx.progress(1, 1)
        return AvatarOutput(avatar=ImageArtifact(Image.new("RGB", (8, 8))), backend="classic")


def measure(svc: Service, ref: str, n: int) -> dict:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        job = svc.submit(AvatarSpec(image=ref, backend="classic"), "bench")
        rec = svc.wait(job.id, "bench", timeout=60)
        if rec.state != "completed":
            raise SystemExit(f"job failed: {rec.error}")
        lat.append(time.perf_counter() - t)
    q = statistics.quantiles(lat, n=20)
    return {"n": n, "p50_ms": round(statistics.median(lat) * 1000, 1), "p95_ms": round(q[18] * 1000, 1),
            "max_ms": round(max(lat) * 1000, 1)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    img = Image.open(ROOT / "assets" / "sample_face.png").convert("RGB").resize((128, 128))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    out = {}
    for label in ("classic_avatar_128px", "noop_engine"):
        engines = default_engines().replace(NoopEngine()) if label == "noop_engine" else default_engines()
        home = Path(tempfile.mkdtemp())
        with Service(Settings(home=home, data_dir=home / "data", device="cpu"), engines=engines) as svc:
            ref = svc.put_upload(buf.getvalue(), "bench")
            measure(svc, ref, 3)  # warm-up (imports, OpenCV cascade)
            out[label] = measure(svc, ref, n)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
