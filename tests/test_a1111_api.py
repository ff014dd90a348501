"""AUTOMATIC1111-compatible API through a real `toonbooth serve` process: the My Memoji client's exact
two-pass sequence with /progress polled from another thread, txt2img / inpainting, options, every list
route, interrupt, bad requests (4xx naming the field, nothing stored)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import pytest
from PIL import Image

from api_server import add_user, b64, blob_count, png_bytes, running_server

SECRET = "s3cr3t-smtp-password-value"


@pytest.fixture(scope="module")
def srv(tiny_models_dir, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("a1111") / "data"
    data_dir.mkdir()
    tokens = {name: add_user(data_dir, name) for name in ("memoji", "other")}
    env = {"TOONBOOTH_SMTP_PASSWORD": SECRET, "TOONBOOTH_S3_SECRET_ACCESS_KEY": SECRET}
    with running_server(tiny_models_dir, data_dir, env=env) as server:
        server.tokens = tokens  # type: ignore[attr-defined]
        yield server


def basic(srv, user: str = "memoji") -> httpx.Client:
    """Like an A1111 client started against `--api-auth user:token`."""
    return httpx.Client(base_url=srv.url, auth=(user, srv.tokens[user]), timeout=180)


def decode(image_b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(image_b64)))


def seed_pass1(photo_b64: str, w: int, h: int, steps: int = 6) -> dict:
    """The My Memoji React client's first request (seed 000), on the tiny models."""
    return {
        "init_images": [photo_b64],
        "prompt": "emoji, male, smiling, glasses <lora:tiny-memoji:1>",
        "negative_prompt": "Pixelated design, distorted facial features, blurry rendering",
        "seed": 2968506678, "sampler_name": "DDIM", "steps": steps, "cfg_scale": 7,
        "width": w, "height": h, "strength": 0.3,
        "override_settings": {"sd_model_checkpoint": "tiny-sdxl"},
        "alwayson_scripts": {"ControlNet": {"args": [{
            "enabled": "True", "module": "canny", "model": "tiny-sdxl-canny [434df90c]", "weight": 1,
            "threshold_a": 70, "threshold_b": 230, "pixel_perfect": "True",
            "resize_mode": "Crop and Resize", "control_mode": "Balanced", "guidance_start": 0, "guidance_end": 1,
        }]}},
    }  # fmt: skip


def test_seed_client_two_pass_with_progress_polling(srv, sample_photo_path):
    w, h = 64, 48
    photo = "data:image/png;base64," + b64(png_bytes((w, h), sample_photo_path))
    seen: list[dict] = []
    stop = threading.Event()

    def poll() -> None:
        with basic(srv) as c:
            while not stop.is_set():
                seen.append(c.get("/sdapi/v1/progress", params={"skip_current_image": "true"}).json())
                time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        with basic(srv) as c:
            body = seed_pass1(photo, w, h, steps=24)
            r1 = c.post("/sdapi/v1/img2img", json=body)
            assert r1.status_code == 200, r1.text
            first = r1.json()
            pass1 = decode(first["images"][0])
            body2 = {
                **body,
                "init_images": [first["images"][0]],
                "width": int(w * 1.5),
                "height": int(h * 1.5),
            }
            body2.pop("alwayson_scripts")
            r2 = c.post("/sdapi/v1/img2img", json=body2)
            assert r2.status_code == 200, r2.text
            second = r2.json()
    finally:
        stop.set()
        poller.join(10)
    assert pass1.size == (w, h)
    assert decode(second["images"][0]).size == (96, 72)
    info1, info2 = json.loads(first["info"]), json.loads(second["info"])
    assert info1["seed"] == 2968506678 and info1["job_id"] != info2["job_id"]
    assert (
        "strength" in info1["ignored"] and info1["denoising_strength"] == 0.75
    )  # A1111 default, as the seed got
    assert (
        "ControlNet 0" in info1["extra_generation_params"]
        and "ControlNet 0" not in info2["extra_generation_params"]
    )
    assert "Module: canny" in pass1.info["parameters"] and "Lora hashes" in pass1.info["parameters"]
    assert first["parameters"]["init_images"] is None and first["parameters"]["prompt"] == body["prompt"]
    inside = [p for p in seen if 0 < p["progress"] < 1]
    assert inside, f"progress never strictly inside (0, 1): {sorted({p['progress'] for p in seen})}"
    mid = inside[len(inside) // 2]
    assert (
        mid["state"]["sampling_steps"] > 0
        and 0 < mid["state"]["sampling_step"] <= mid["state"]["sampling_steps"]
    )
    assert mid["state"]["job_count"] >= 1 and mid["eta_relative"] >= 0 and mid["current_image"] is None
    idle = httpx.get(srv.url + "/sdapi/v1/progress", auth=("memoji", srv.tokens["memoji"])).json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


def test_txt2img_batch_random_seed_and_bearer(srv):
    with httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {srv.tokens['memoji']}"}, timeout=120
    ) as c:
        body = {"prompt": "a (red:1.2) cat", "seed": -1, "sampler_index": "Euler a", "steps": 3, "width": 64,
                "height": 64, "batch_size": 2, "n_iter": 1, "restore_faces": True,
                "override_settings": {"sd_model_checkpoint": "tiny-sd15"}}  # fmt: skip
        r = c.post("/sdapi/v1/txt2img", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        info = json.loads(data["info"])
        assert len(data["images"]) == 2 and all(decode(i).size == (64, 64) for i in data["images"])
        assert info["seed"] != -1 and info["all_seeds"] == [info["seed"], info["seed"] + 1]
        assert info["sampler_name"] == "Euler a" and "restore_faces" in info["ignored"]
        assert any("restore_faces" in w for w in info["warnings"])
        r = c.post("/sdapi/v1/txt2img", json={**body, "batch_size": 1, "send_images": "False"})
        assert r.status_code == 200 and r.json()["images"] == []


def test_img2img_inpainting_mask(srv):
    init = png_bytes((64, 64), seed=3)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    with basic(srv) as c:
        r = c.post("/sdapi/v1/img2img", json={
            "init_images": [b64(init)], "mask": "data:image/png;base64," + b64(buf.getvalue()), "mask_blur": 2,
            "inpainting_fill": 1, "inpaint_full_res": "False", "inpainting_mask_invert": 0, "denoising_strength": 0.6,
            "steps": 4, "width": 64, "height": 64, "prompt": "x", "seed": 7,
            "override_settings": {"sd_model_checkpoint": "tiny-sd15-inpainting"},
        })  # fmt: skip
        assert r.status_code == 200, r.text
        out = decode(r.json()["images"][0]).convert("RGB")
        orig = Image.open(io.BytesIO(init)).convert("RGB")
        assert out.size == (64, 64)
        assert out.getpixel((2, 2)) == orig.getpixel((2, 2))  # outside the mask: the original is kept
        assert json.loads(r.json()["info"])["is_using_inpainting_conditioning"] is True


def test_options_persist_per_user(srv):
    with basic(srv) as c, basic(srv, "other") as o:
        before = c.get("/sdapi/v1/options").json()
        assert before["sd_model_checkpoint"] and before["send_seed"] is True
        r = c.post(
            "/sdapi/v1/options",
            json={"sd_model_checkpoint": "tiny-sdxl", "send_seed": False, "my_client_key": [1]},
        )
        assert r.status_code == 200, r.text
        after = c.get("/sdapi/v1/options").json()
        assert (
            after["sd_model_checkpoint"].startswith("tiny-sdxl.safetensors [") and after["send_seed"] is False
        )
        assert after["my_client_key"] == [1]
        assert o.get("/sdapi/v1/options").json()["send_seed"] is True  # per user
        stored = json.loads((srv.data_dir / "a1111_options.json").read_text())
        assert stored["memoji"]["send_seed"] is False
        r = c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model"})
        assert r.status_code == 422 and r.json()["field"] == "sd_model_checkpoint"
        r = c.post("/sdapi/v1/options", json={"send_seed": "maybe"})
        assert r.status_code == 422 and r.json()["field"] == "send_seed"
        # the stored checkpoint is used when a request names none
        r = c.post(
            "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1}
        )
        assert r.status_code == 200 and json.loads(r.json()["info"])["sd_model_name"] == "tiny-sdxl"


def test_list_routes(srv):
    with basic(srv) as c:
        models = c.get("/sdapi/v1/sd-models").json()
        assert {"tiny-sdxl", "tiny-sd15"} <= {m["model_name"] for m in models}
        assert all({"title", "model_name", "hash", "sha256", "filename", "config"} <= set(m) for m in models)
        samplers = c.get("/sdapi/v1/samplers").json()
        assert {"Euler a", "DDIM", "DPM++ 2M"} <= {s["name"] for s in samplers}
        assert all({"name", "aliases", "options"} <= set(s) for s in samplers)
        assert "Karras" in {s["label"] for s in c.get("/sdapi/v1/schedulers").json()}
        assert "tiny-memoji" in {x["name"] for x in c.get("/sdapi/v1/loras").json()}
        emb = c.get("/sdapi/v1/embeddings").json()
        assert "tiny-sd15-emb" in emb["loaded"] and emb["skipped"] == {}
        assert c.get("/sdapi/v1/upscalers").json()[0]["name"] == "None"
        flags = c.get("/sdapi/v1/cmd-flags")
        assert flags.status_code == 200 and flags.json()["api"] is True and SECRET not in flags.text
        for route in ("prompt-styles", "face-restorers", "realesrgan-models", "hypernetworks"):
            assert c.get(f"/sdapi/v1/{route}").json() == []
        for route in ("refresh-checkpoints", "refresh-loras"):
            assert c.post(f"/sdapi/v1/{route}").status_code == 200
        cn = c.get("/controlnet/model_list").json()["model_list"]
        assert "tiny-sdxl-canny [434df90c]" in cn
        modules = c.get("/controlnet/module_list").json()
        assert "canny" in modules["module_list"] and modules["module_detail"]["canny"]["sliders"]
        assert c.get("/controlnet/version").json()["version"] >= 2
        assert httpx.get(srv.url + "/sdapi/v1/sd-models").status_code == 401
        assert httpx.get(srv.url + "/sdapi/v1/sd-models", auth=("memoji", "wrong")).status_code == 401


def test_interrupt_stops_running_request(srv):
    result: dict = {}
    body = {"prompt": "x", "steps": 150, "width": 64, "height": 64, "seed": 3,
            "override_settings": {"sd_model_checkpoint": "tiny-sd15"}}  # fmt: skip

    def run() -> None:
        with basic(srv) as c:
            result["r"] = c.post("/sdapi/v1/txt2img", json=body)

    t = threading.Thread(target=run)
    t.start()
    with basic(srv) as c:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and c.get("/sdapi/v1/progress").json()["progress"] <= 0:
            time.sleep(0.05)
        with basic(srv, "other") as o:
            assert o.post("/sdapi/v1/interrupt").json()["canceled"] == []  # not someone else's job
        assert len(c.post("/sdapi/v1/interrupt").json()["canceled"]) == 1
    t.join(60)
    r = result["r"]  # as A1111: what was made so far (the current latents decoded)
    assert r.status_code == 200 and len(r.json()["images"]) == 1
    assert json.loads(r.json()["info"])["interrupted"] is True
    with basic(srv) as c:
        assert c.post("/sdapi/v1/skip").json() == {"skipped": []}


BAD = [
    ("steps not a number", "txt2img", {"steps": "many"}, "steps"),
    ("width not a multiple of 8", "txt2img", {"width": 65}, "width"),
    ("unknown checkpoint", "txt2img", {"override_settings": {"sd_model_checkpoint": "nope"}}, "override_settings.sd_model_checkpoint"),
    ("unknown sampler", "txt2img", {"sampler_name": "Nope++"}, "sampler_name"),
    ("bad LoRA weight", "txt2img", {"prompt": "x <lora:tiny-memoji:heavy>"}, "prompt"),
    ("no init image", "img2img", {}, "init_images"),
    ("init image not an image", "img2img", {"init_images": [b64(b"not an image, really")]}, "init_images.0"),
    ("ControlNet model unknown", "img2img", {"alwayson_scripts": {"ControlNet": {"args": [{"module": "canny", "model": "nope"}]}}}, "alwayson_scripts.ControlNet.args.0.model"),
    ("ControlNet bool garbage", "img2img", {"alwayson_scripts": {"ControlNet": {"args": [{"enabled": "perhaps", "model": "tiny-sdxl-canny"}]}}}, "alwayson_scripts.ControlNet.args.0.enabled"),
    ("ControlNet module unknown", "img2img", {"alwayson_scripts": {"ControlNet": {"args": [{"module": "depth_zoe", "model": "tiny-sdxl-canny"}]}}}, "alwayson_scripts.ControlNet.args.0.module"),
    ("denoising out of range", "img2img", {"denoising_strength": 1.5}, "denoising_strength"),
    ("body not an object", "txt2img", None, "body"),
]  # fmt: skip


@pytest.mark.parametrize("what,route,changes,field", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_4xx_naming_field(srv, what, route, changes, field):
    base = {"prompt": "x", "steps": 2, "width": 64, "height": 64,
            "override_settings": {"sd_model_checkpoint": "tiny-sdxl"}}  # fmt: skip
    if route == "img2img":
        base["init_images"] = [b64(png_bytes(seed=5))]
    body = [1, 2] if changes is None else {**base, **changes}
    if (
        changes is not None
        and "init_images" not in changes
        and route == "img2img"
        and what == "no init image"
    ):
        body.pop("init_images")
    bearer = {"Authorization": f"Bearer {srv.tokens['other']}"}

    def jobs() -> int:
        return len(httpx.get(srv.url + "/v1/jobs", params={"limit": 200}, headers=bearer).json()["jobs"])

    with basic(srv, "other") as c:
        blobs, before = blob_count(srv.data_dir), jobs()
        r = c.post(f"/sdapi/v1/{route}", json=body)
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["field"] == field and r.json()["detail"], r.json()
        assert blob_count(srv.data_dir) == blobs
        assert jobs() == before
