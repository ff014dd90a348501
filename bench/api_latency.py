"""Latency of tiny jobs through the HTTP API (p50 / p95), printed as JSON.

For each job: POST /v1/jobs -> follow its Server-Sent Events to `completed` -> download the PNG, timed on
the client; `run_s` is the server's own started -> finished time, so `total - run` is what the API,
queue and storage add. Two job kinds: a classic avatar (OpenCV, no weights) and a tiny neural
txt2img (`generate`, tiny SD1.5, 64x64, 4 steps).

    python bench/api_latency.py --jobs 50                 # starts a server over a fresh tiny model set
    python bench/api_latency.py --url http://127.0.0.1:7860 --token tb_...   # an already running server
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(models_dir: Path | None):
    """A `toonbooth serve` process on loopback (local mode) over a temporary data folder."""
    with tempfile.TemporaryDirectory(prefix="tb-bench-") as tmp:
        if models_dir is None:
            from toonbooth.models.tiny import make_tiny_set

            models_dir = Path(tmp) / "models"
            make_tiny_set(models_dir)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOONBOOTH_")}
        env.update(
            HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", TOONBOOTH_HOME=str(Path(tmp) / "home")
        )
        cmd = [sys.executable, "-m", "toonbooth.cli.main", "--models-dir", str(models_dir), "--data-dir",
               str(Path(tmp) / "data"), "serve", "--port", str(port), "--log-level", "warning", "--no-ui"]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                time.sleep(0.25)
            else:
                raise RuntimeError("server did not start")
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _photo_b64() -> str:
    from PIL import Image

    img = Image.open(ROOT / "assets" / "sample_face.png").convert("RGB").resize((128, 128))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _specs(photo: str) -> dict[str, dict]:
    return {
        "classic_avatar": {"kind": "avatar", "backend": "classic", "image": photo},
        "tiny_neural_txt2img": {"kind": "generate", "mode": "txt2img", "prompt": "a cat", "checkpoint": "tiny-sd15",
                                "width": 64, "height": 64, "steps": 4, "seed": 1},
    }  # fmt: skip


def _one(c: httpx.Client, spec: dict) -> dict[str, float]:
    t0 = time.perf_counter()
    r = c.post("/v1/jobs", json=spec)
    r.raise_for_status()
    job = r.json()
    t_submit = time.perf_counter() - t0
    with c.stream("GET", f"/v1/jobs/{job['id']}/events") as resp:
        last = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                last = line[7:]
    done = c.get(f"/v1/jobs/{job['id']}").json()
    if last != "completed" or done["state"] != "completed":
        raise RuntimeError(f"job {job['id']} ended {done['state']}: {done.get('error')}")
    name = done["output"]["outputs"][-1]["name"]
    c.get(f"/v1/jobs/{job['id']}/outputs/{name}").raise_for_status()
    total = time.perf_counter() - t0
    return {"total_s": total, "submit_s": t_submit, "run_s": done["finished_at"] - done["started_at"]}


def _summary(rows: list[dict[str, float]]) -> dict[str, float]:
    def pct(values: list[float], q: float) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]

    totals = [r["total_s"] for r in rows]
    return {
        "n": len(rows),
        "p50_s": round(pct(totals, 0.50), 4),
        "p95_s": round(pct(totals, 0.95), 4),
        "mean_s": round(statistics.fmean(totals), 4),
        "max_s": round(max(totals), 4),
        "submit_p50_s": round(pct([r["submit_s"] for r in rows], 0.5), 4),
        "server_run_p50_s": round(pct([r["run_s"] for r in rows], 0.5), 4),
        "overhead_p50_s": round(pct([r["total_s"] - r["run_s"] for r in rows], 0.5), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=50, help="Jobs per kind (measured, after 2 warm-up jobs).")
    ap.add_argument("--url", help="Use a running server instead of starting one.")
    ap.add_argument("--token", help="Bearer token for --url (omit in local mode).")
    ap.add_argument(
        "--models-dir", type=Path, help="Tiny (or real) models folder; default: a fresh tiny set."
    )
    args = ap.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    ctx = contextlib.nullcontext(args.url) if args.url else _server(args.models_dir)
    with ctx as url, httpx.Client(base_url=url, headers=headers, timeout=300) as c:
        results = {}
        for kind, spec in _specs(_photo_b64()).items():
            for _ in range(2):
                _one(c, spec)  # warm-up: model loading and caches are not what is measured
            results[kind] = _summary([_one(c, spec) for _ in range(args.jobs)])
    print(json.dumps({"bench": "api_latency", "url": "started" if not args.url else args.url,
                      "cpu_count": os.cpu_count(), "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
