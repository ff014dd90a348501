"""What A1111 clients get from a `toonbooth serve`: the `webuiapi` PyPI client's whole public surface
(tests/webuiapi_survey.py, call by call: right / documented refusal / wrong / missing) and the requests of
A1111's own API test files (tests/test_a1111_webuiapi.py: passed / failed), printed and written as JSON.

The server runs from a source tree you choose, so the same survey measures before and after a change:

    .venv/bin/python bench/a1111_clients.py --src src                 # this checkout
    .venv/bin/python bench/a1111_clients.py --src /path/to/other/src  # e.g. the main branch

Models: the tiny set (`toonbooth models make-tiny`) plus the seed's file names, tiny ESRGAN-family upscalers,
a VAE file and a styles.csv (`webuiapi_survey.prepare_models`).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def a1111_own_tests(url: str, auth: tuple[str, str]) -> dict[str, str]:
    import httpx
    from PIL import Image

    from api_server import b64, png_bytes
    from test_a1111_webuiapi import _IMG, _TXT, A1111_TESTS

    init = "data:image/png;base64," + b64(png_bytes((64, 64), seed=9))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    mask_b64 = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    out: dict[str, str] = {}
    with httpx.Client(base_url=f"{url}/sdapi/v1", auth=auth, timeout=300) as c:
        c.post("/options", json={"sd_model_checkpoint": "tiny-sd15"})
        for name, how, route, changes in A1111_TESTS:
            if how == "get":
                r = c.get(f"/{route}")
            elif how == "options":
                pre = c.get("/options").json()["send_seed"]
                r = c.post("/options", json={"send_seed": not pre})
                c.post("/options", json={"send_seed": pre})
            elif route == "txt2img":
                r = c.post("/txt2img", json={**_TXT, **changes})
            elif route == "img2img":
                body = {**_IMG, "init_images": [init], **changes}
                if body.get("mask") == "MASK":
                    body["mask"] = mask_b64
                r = c.post("/img2img", json=body)
            else:
                r = c.post(f"/{route}", json={"image": init, **changes})
            out[name] = "passed" if r.status_code == 200 else f"failed ({r.status_code})"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="Source tree the server runs from.")
    parser.add_argument("--out", type=Path, default=None, help="Write the JSON here too.")
    args = parser.parse_args()

    import webuiapi
    from PIL import Image

    from api_server import add_user, png_bytes, running_server
    from toonbooth.models.tiny import make_tiny_set
    from webuiapi_survey import Env, all_calls, counts, prepare_models, survey

    with tempfile.TemporaryDirectory(prefix="a1111-clients-") as tmp:
        base = Path(tmp)
        make_tiny_set(base / "tiny")
        models = prepare_models(base / "tiny", base / "models")
        data = base / "data"
        data.mkdir()
        token = add_user(data, "bench")
        env = {"PYTHONPATH": str(args.src.resolve())}
        started = time.monotonic()
        with running_server(models, data, env=env) as server:
            api = webuiapi.WebUIApi(baseurl=f"{server.url}/sdapi/v1", username="bench", password=token, steps=3)
            photo = Image.open(io.BytesIO(png_bytes((64, 64), seed=4))).convert("RGB")
            results = survey(api, Env(photo, vae="tiny-sdxl-vae.safetensors", style="cute"), all_calls())
            own = a1111_own_tests(server.url, ("bench", token))
        seconds = time.monotonic() - started
    report = {
        "src": str(args.src.resolve()),
        "webuiapi": {"version": getattr(webuiapi, "__version__", "?"), "calls": len(results), **counts(results),
                     "results": {k: {"outcome": o, "detail": d} for k, (o, d) in results.items()}},
        "a1111_own_tests": {"requests": len(own), "passed": sum(v == "passed" for v in own.values()),
                            "failed": {k: v for k, v in own.items() if v != "passed"}},
        "seconds": round(seconds, 1),
    }  # fmt: skip
    for name, (outcome, detail) in results.items():
        print(f"{name:45s} {outcome:10s} {detail[:100]}")
    summary = {k: v for k, v in report["webuiapi"].items() if k != "results"}
    print(json.dumps({"webuiapi": summary, "a1111_own_tests": report["a1111_own_tests"]}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
