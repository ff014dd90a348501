"""AUTOMATIC1111 compatibility through real clients against a real `toonbooth serve` on the tiny set: the
`webuiapi` PyPI client's whole public surface (tests/webuiapi_survey.py: every call right, or the refusal
docs/a1111.md documents), the requests of A1111's own API test files, the seed client's two-pass flow with
the seed's own file names (`memoji-07.safetensors`, `<lora:memoji:1>`), unknown LoRAs (A1111 routes: image
+ warning; `/v1/jobs`: 422), and what an interrupted job leaves (state `canceled`, its partial images)."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import pytest
from PIL import Image

from api_server import add_user, b64, png_bytes, running_server
from webuiapi_survey import GENERATION, LISTS, VAE_FILE, Env, all_calls, extensions, prepare_models, survey

webuiapi = pytest.importorskip("webuiapi")


@pytest.fixture(scope="module")
def srv(tiny_models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("a1111-clients")
    models = prepare_models(tiny_models_dir, root / "models")
    data_dir = root / "data"
    data_dir.mkdir()
    tokens = {name: add_user(data_dir, name) for name in ("webui", "seed", "a1111tests", "other")}
    with running_server(models, data_dir) as server:
        server.tokens = tokens  # type: ignore[attr-defined]
        yield server


def client(srv, user: str):
    api = webuiapi.WebUIApi(baseurl=f"{srv.url}/sdapi/v1", username=user, password=srv.tokens[user], steps=3)
    return api


def photo(size=(64, 64)) -> Image.Image:
    return Image.open(io.BytesIO(png_bytes(size, seed=4))).convert("RGB")


def report(results) -> str:
    return "\n".join(f"{name:45s} {outcome:10s} {detail}" for name, (outcome, detail) in results.items())


def test_webuiapi_sees_controlnet_and_lists_are_right(srv):
    api = client(srv, "webui")
    assert api.has_controlnet, "webuiapi looks for 'controlnet m2m' in /scripts to clear stale units"
    results = survey(api, Env(photo()), LISTS + extensions())
    bad = {k: v for k, v in results.items() if v[0] not in ("right", "documented")}
    assert not bad, report(results)
    assert results["get_artists"][0] == "documented" and results["ext.rembg"][0] == "documented"


def test_webuiapi_generation_surface(srv):
    api = client(srv, "webui")
    env = Env(photo(), vae=VAE_FILE, style="cute")
    results = survey(api, env, GENERATION)
    bad = {k: v for k, v in results.items() if v[0] not in ("right", "documented")}
    assert not bad, report(results)
    assert results["interrogate"][0] == "documented"
    assert "toonbooth has no model family" in results["interrogate"][1]
    # the interrupted job: `canceled`, with the partial image as its output (native semantics)
    bearer = {"Authorization": f"Bearer {srv.tokens['webui']}"}
    jobs = httpx.get(f"{srv.url}/v1/jobs", params={"limit": 100}, headers=bearer).json()["jobs"]
    canceled = [j for j in jobs if j["state"] == "canceled"]
    assert canceled and canceled[0]["output"]["outputs"][0]["name"] == "image-0"
    assert canceled[0]["output"]["info"]["interrupted"] is True


def test_every_webuiapi_call_is_covered():
    """The survey names each public call of the client (a new client release adds calls: add them)."""
    public = {n for n in dir(webuiapi.WebUIApi) if not n.startswith("_")} - {
        "has_controlnet", "has_adetailer", "has_animatediff", "set_auth", "check_extensions",
        "post_and_get_api_result", "async_post", "get_endpoint",
    }  # fmt: skip
    covered = {
        "txt2img", "img2img", "extra_single_image", "extra_batch_images", "png_info", "interrogate", "interrupt",
        "skip", "get_options", "set_options", "get_cmd_flags", "get_progress", "get_samplers", "get_sd_vae",
        "get_upscalers", "get_latent_upscale_modes", "get_loras", "get_sd_models", "get_hypernetworks",
        "get_face_restorers", "get_realesrgan_models", "get_prompt_styles", "get_artist_categories", "get_artists",
        "refresh_checkpoints", "get_scripts", "get_embeddings", "get_memory", "get_schedulers", "custom_get",
        "custom_post", "controlnet_version", "controlnet_model_list", "controlnet_module_list",
        "controlnet_detect", "util_get_model_names", "util_get_sampler_names", "util_get_scheduler_names",
        "util_set_model", "util_get_current_model", "util_wait_for_ready", "list_prompt_gen_models", "prompt_gen",
    }  # fmt: skip
    assert public <= covered, sorted(public - covered)
    assert len(all_calls()) >= 60


def test_seed_client_two_pass_with_seed_file_names(srv, sample_photo_path):
    """The seed's own request: its checkpoint title, `diffusers_xl_canny_full [2b69fca4]`, and
    `<lora:memoji:1>` with `memoji-07.safetensors` in Lora/ (resolved through the catalog's alias)."""
    w, h = 64, 48
    body = {
        "init_images": ["data:image/png;base64," + b64(png_bytes((w, h), sample_photo_path))],
        "prompt": "emoji, male, smiling <lora:memoji:1>", "negative_prompt": "blurry", "seed": 2968506678,
        "sampler_name": "DDIM", "steps": 4, "cfg_scale": 7, "width": w, "height": h,
        "override_settings": {"sd_model_checkpoint": "samaritan3dCartoon_v40SDXL.safetensors [1b8fca3fee]"},
        "alwayson_scripts": {"ControlNet": {"args": [{
            "enabled": "True", "module": "canny", "model": "diffusers_xl_canny_full [2b69fca4]", "weight": 1,
            "threshold_a": 70, "threshold_b": 230, "pixel_perfect": "True", "resize_mode": "Crop and Resize",
            "control_mode": "Balanced", "guidance_start": 0, "guidance_end": 1,
        }]}},
    }  # fmt: skip
    with httpx.Client(base_url=srv.url, auth=("seed", srv.tokens["seed"]), timeout=300) as c:
        loras = {x["name"]: x["alias"] for x in c.get("/sdapi/v1/loras").json()}
        assert loras["memoji-07"] == "memoji"  # the catalog's name, what the seed's client sends
        r1 = c.post("/sdapi/v1/img2img", json=body)
        assert r1.status_code == 200, r1.text
        first = r1.json()
        body2 = {**body, "init_images": [first["images"][0]], "width": 96, "height": 72}
        body2.pop("alwayson_scripts")
        r2 = c.post("/sdapi/v1/img2img", json=body2)
        assert r2.status_code == 200, r2.text
    info1 = json.loads(first["info"])
    assert info1["sd_model_name"] == "samaritan3dCartoon_v40SDXL" and info1["loras"][0]["name"] == "memoji-07"
    assert not [w for w in info1["warnings"] if "LoRA" in w]
    assert "Lora hashes: \"memoji-07:" in info1["infotexts"][0] or "memoji-07:" in info1["infotexts"][0]
    assert Image.open(io.BytesIO(base64.b64decode(r2.json()["images"][0]))).size == (96, 72)


def test_unknown_lora_a1111_warns_native_refuses(srv):
    body = {"prompt": "a cat <lora:no-such-net:0.8>", "steps": 2, "width": 64, "height": 64, "seed": 5,
            "override_settings": {"sd_model_checkpoint": "tiny-sd15"}}  # fmt: skip
    with httpx.Client(base_url=srv.url, auth=("other", srv.tokens["other"]), timeout=300) as c:
        r = c.post("/sdapi/v1/txt2img", json=body)
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert len(r.json()["images"]) == 1
        assert any("unknown LoRA 'no-such-net'" in w and "without it" in w for w in info["warnings"])
        # the same warning is in the job's log
        bearer = {"Authorization": f"Bearer {srv.tokens['other']}"}
        events = httpx.get(f"{srv.url}/v1/jobs/{info['job_id']}/events", headers=bearer, timeout=60).text
        assert "unknown LoRA" in events and '"level": "warning"' in events
        spec = {"kind": "generate", "prompt": body["prompt"], "checkpoint": "tiny-sd15", "steps": 2,
                "width": 64, "height": 64}  # fmt: skip
        r = httpx.post(f"{srv.url}/v1/jobs", json=spec, headers=bearer)
        assert r.status_code == 422 and r.json()["field"] == "prompt" and "no-such-net" in r.json()["detail"]


# A1111's own API test files (test/test_txt2img.py, test_img2img.py, test_extras.py, test_utils.py): the same
# requests, rebuilt from what they send (64 px, 3 steps, the default checkpoint), against this server
_TXT = {"batch_size": 1, "cfg_scale": 7, "denoising_strength": 0, "enable_hr": False, "eta": 0, "firstphase_height": 0,
        "firstphase_width": 0, "height": 64, "n_iter": 1, "negative_prompt": "", "prompt": "example prompt",
        "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0, "sampler_index": "Euler a",
        "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "steps": 3, "styles": [], "subseed": -1,
        "subseed_strength": 0, "tiling": False, "width": 64}  # fmt: skip
_IMG = {**{k: v for k, v in _TXT.items() if k not in ("enable_hr", "firstphase_height", "firstphase_width")},
        "denoising_strength": 0.75, "include_init_images": False, "inpaint_full_res": False,
        "inpaint_full_res_padding": 0, "inpainting_fill": 0, "inpainting_mask_invert": False, "mask": None,
        "mask_blur": 4, "override_settings": {}, "resize_mode": 0}  # fmt: skip
A1111_TESTS = [
    ("txt2img simple", "post", "txt2img", {}),
    ("txt2img negative prompt", "post", "txt2img", {"negative_prompt": "example negative prompt"}),
    ("txt2img complex prompt", "post", "txt2img",
     {"prompt": "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"}),
    ("txt2img not square", "post", "txt2img", {"height": 128}),
    ("txt2img hires fix", "post", "txt2img", {"enable_hr": True}),
    ("txt2img tiling", "post", "txt2img", {"tiling": True}),
    ("txt2img restore faces", "post", "txt2img", {"restore_faces": True}),
    ("txt2img PLMS", "post", "txt2img", {"sampler_index": "PLMS"}),
    ("txt2img DDIM", "post", "txt2img", {"sampler_index": "DDIM"}),
    ("txt2img UniPC", "post", "txt2img", {"sampler_index": "UniPC"}),
    ("txt2img n_iter 2", "post", "txt2img", {"n_iter": 2}),
    ("txt2img batch 2", "post", "txt2img", {"batch_size": 2}),
    ("img2img simple", "post", "img2img", {}),
    ("img2img inpainting", "post", "img2img", {"mask": "MASK"}),
    ("img2img inpainting inverted", "post", "img2img", {"mask": "MASK", "inpainting_mask_invert": True}),
    ("img2img sd upscale script", "post", "img2img", {"script_name": "sd upscale", "script_args": ["", 8, "Lanczos", 2.0]}),
    ("extras upscaling", "post", "extra-single-image", {
        "resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0, "codeformer_visibility": 0,
        "codeformer_weight": 0, "upscaling_resize": 2, "upscaling_resize_w": 128, "upscaling_resize_h": 128,
        "upscaling_crop": True, "upscaler_1": "Lanczos", "upscaler_2": "None", "extras_upscaler_2_visibility": 0}),
    ("extras image only (png info test)", "post", "extra-single-image", {}),
    ("extras image + model (interrogate test)", "post", "extra-single-image", {"model": "clip"}),
    ("options write", "options", "options", {}),
    *[(f"GET {u}", "get", u, {}) for u in ("cmd-flags", "samplers", "upscalers", "sd-models", "hypernetworks",
                                           "face-restorers", "realesrgan-models", "prompt-styles", "embeddings")],
]  # fmt: skip


def test_a1111_own_api_test_requests(srv):
    init = "data:image/png;base64," + b64(png_bytes((64, 64), seed=9))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    mask_b64 = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    assert len(A1111_TESTS) == 29
    failures = []
    with httpx.Client(base_url=f"{srv.url}/sdapi/v1", auth=("a1111tests", srv.tokens["a1111tests"]), timeout=300) as c:
        assert c.post("/options", json={"sd_model_checkpoint": "tiny-sd15"}).status_code == 200
        for name, how, route, changes in A1111_TESTS:
            if how == "get":
                r = c.get(f"/{route}")
            elif how == "options":
                pre = c.get("/options").json()["send_seed"]
                r = c.post("/options", json={"send_seed": not pre})
                ok = r.status_code == 200 and c.get("/options").json()["send_seed"] == (not pre)
                c.post("/options", json={"send_seed": pre})
                if not ok:
                    failures.append(name)
                continue
            elif route == "txt2img":
                r = c.post("/txt2img", json={**_TXT, **changes})
            elif route == "img2img":
                body = {**_IMG, "init_images": [init], **changes}
                if body.get("mask") == "MASK":
                    body["mask"] = mask_b64
                r = c.post("/img2img", json=body)
            else:
                r = c.post(f"/{route}", json={"image": init, **changes})
            if r.status_code != 200:
                failures.append(f"{name}: {r.status_code} {r.text[:200]}")
            elif route == "txt2img" and changes.get("enable_hr"):
                assert Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).size == (128, 128)
            elif route == "extra-single-image" and changes.get("upscaler_1") == "Lanczos":
                assert Image.open(io.BytesIO(base64.b64decode(r.json()["image"]))).size == (128, 128)
    assert not failures, failures


def test_memoji_second_pass_with_a_real_upscaler(srv):
    """The memoji job's option: pass 1 enlarged by an ESRGAN-family network (then Lanczos to 1.5x) before
    the 1.5x img2img; an unknown upscaler is refused at submit, naming the field."""
    bearer = {"Authorization": f"Bearer {srv.tokens['seed']}"}
    photo_ref = "data:image/png;base64," + b64(png_bytes((64, 64), seed=11))
    spec = {"kind": "avatar", "image": photo_ref, "backend": "neural", "checkpoint": "tiny-sdxl",
            "controlnet": "tiny-sdxl-canny", "loras": [{"name": "memoji", "weight": 1}], "steps": 4,
            "max_side": 64, "upscaler": "4x-TinySharp"}  # fmt: skip
    with httpx.Client(base_url=srv.url, headers=bearer, timeout=300) as c:
        bad = c.post("/v1/jobs", json={**spec, "upscaler": "SwinIR_4x"})
        assert bad.status_code == 422 and bad.json()["field"] == "upscaler"
        job = c.post("/v1/jobs", json=spec)
        assert job.status_code in (200, 201, 202), job.text
        job_id = job.json()["id"]
        for _ in range(600):
            record = c.get(f"/v1/jobs/{job_id}").json()
            if record["state"] in ("completed", "failed", "canceled"):
                break
            time.sleep(0.2)
    assert record["state"] == "completed", record
    sizes = {o["name"]: (o["width"], o["height"]) for o in record["output"]["outputs"]}
    assert sizes == {"avatar": (96, 96), "pass1": (64, 64)}
    assert record["output"]["info"]["upscaler"] == "4x-TinySharp"
    assert record["output"]["info"]["loras"][0]["name"] == "memoji-07"  # the catalog name of the seed's file
