"""Latency of a classic avatar job through Service.submit -> wait (p50/p95 over N jobs), plus the
runtime's own overhead measured with an engine that does nothing. Prints JSON."""
import io, json, os, statistics, sys, tempfile, textwrap, time
from pathlib import Path
from PIL import Image
from toonbooth.core.settings import Settings
from toonbooth.core.specs import AvatarSpec
from toonbooth.runtime import execute
from toonbooth.runtime.service import Service

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
photo = Path(__file__).resolve().parent / "sample_face.png" if len(sys.argv) < 3 else Path(sys.argv[2])

def measure(svc, ref, n):
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        job = svc.submit(AvatarSpec(image=ref, backend="classic"), "bench")
        rec = svc.wait(job.id, "bench", timeout=60)
        assert rec.state == "completed", rec.error
        lat.append(time.perf_counter() - t)
    q = statistics.quantiles(lat, n=20)
    return {"n": n, "p50_ms": round(statistics.median(lat) * 1000, 1), "p95_ms": round(q[18] * 1000, 1),
            "max_ms": round(max(lat) * 1000, 1)}

img = Image.open(photo).convert("RGB").resize((128, 128))
buf = io.BytesIO(); img.save(buf, "PNG")
out = {}
for label in ("classic_avatar_128px", "noop_engine"):
    if label == "noop_engine":
        d = Path(tempfile.mkdtemp()); (d / "tb_noop.py").write_text(textwrap.dedent('''
            from PIL import Image
            from toonbooth.engines.base import EngineResult, NamedImage
            def run(spec, ctx):
                ctx.load_image(spec.image, field="image"); ctx.progress(1, 1)
                return EngineResult(images=[NamedImage("avatar", Image.new("RGB", (8, 8)))], backend="classic")'''))
        sys.path.insert(0, str(d)); execute.ENGINES["avatar"] = "tb_noop"
    home = Path(tempfile.mkdtemp())
    with Service(Settings(home=home, data_dir=home / "data", device="cpu")) as svc:
        ref = svc.put_upload(buf.getvalue(), "bench")
        measure(svc, ref, 3)  # warm-up (imports, OpenCV cascade)
        out[label] = measure(svc, ref, N)
print(json.dumps(out))
