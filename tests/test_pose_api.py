"""The pose studio through a real `toonbooth serve` process on the tiny pose set: sd-webui-controlnet's
`/controlnet/detect` (dw_openpose_full: maps + OpenPose JSON with the designed keypoints; canny), the module
list, an A1111 txt2img with a `dw_openpose_full` unit, and the REST `repose` job (a run, bad skeleton JSON
answered 422 naming the field)."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image

import pose_models as pm
from api_server import add_user, b64, running_server
from toonbooth.nets import dwpose
from toonbooth.vision.pose_draw import draw_openpose


@pytest.fixture(scope="module")
def srv(tiny_models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pose-api")
    models = pm.make_pose_models(root / "models", tiny_models_dir, animate_anyone=True, light=False)
    data_dir = root / "data"
    data_dir.mkdir()
    token = add_user(data_dir, "artist")
    with running_server(models, data_dir, extra_args=("--no-ui",)) as server:
        server.token = token  # type: ignore[attr-defined]
        yield server


def a1111(srv) -> httpx.Client:
    return httpx.Client(base_url=srv.url, auth=("artist", srv.token), timeout=180)


def rest(srv) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=180)


def photo_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pm.pose_photo()).save(buf, "PNG")
    return buf.getvalue()


def decode(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def test_detect_dw_openpose_full_returns_maps_and_poses(srv):
    with a1111(srv) as c:
        r = c.post("/controlnet/detect", json={
            "controlnet_module": "dw_openpose_full", "controlnet_input_images": [b64(photo_png())],
            "controlnet_processor_res": 320,
        })  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["info"] == "Success" and len(body["images"]) == 1 and len(body["poses"]) == 1
    pose = body["poses"][0]
    assert (pose["canvas_width"], pose["canvas_height"]) == (pm.POSE_W, pm.POSE_H)
    want = dwpose.wholebody_to_openpose(pm.designed_keypoints())
    got = dwpose.parse_openpose_json(pose).people[0]
    visible = want.body[:, 2] > 0
    assert np.abs(got.body[visible, :2] - want.body[visible, :2]).max() < 1.0
    assert np.array_equal(decode(body["images"][0]), draw_openpose(dwpose.parse_openpose_json(pose)))


def test_detect_canny_module_list_and_bad_requests(srv, sample_photo_path):
    face = io.BytesIO()
    Image.open(sample_photo_path).convert("RGB").resize((96, 64)).save(face, "PNG")
    with a1111(srv) as c:
        r = c.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_processor_res": 64,
                                               "controlnet_input_images": [b64(face.getvalue())]})  # fmt: skip
        assert r.status_code == 200, r.text
        edges = decode(r.json()["images"][0])
        assert edges.shape == (64, 96, 3) and set(np.unique(edges)) <= {0, 255} and "poses" not in r.json()
        modules = c.get("/controlnet/module_list").json()
        for m in ("openpose", "openpose_full", "dw_openpose_full"):
            assert m in modules["module_list"] and modules["module_detail"][m]["sliders"]
        bad = c.post("/controlnet/detect", json={"controlnet_module": "depth_zoe", "controlnet_input_images": ["x"]})
        assert bad.status_code == 422 and "controlnet_module" in bad.text
        empty = c.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": []})
        assert empty.status_code == 422 and "controlnet_input_images" in empty.text


def test_txt2img_with_a_dw_openpose_full_unit(srv):
    with a1111(srv) as c:
        r = c.post("/sdapi/v1/txt2img", json={
            "prompt": "a dancer", "steps": 2, "width": 64, "height": 96, "seed": 4, "sampler_name": "Euler",
            "override_settings": {"sd_model_checkpoint": "tiny-sd15"},
            "alwayson_scripts": {"ControlNet": {"args": [{
                "enabled": True, "module": "dw_openpose_full", "model": "tiny-sd15-canny",
                "image": b64(photo_png()), "resize_mode": "Resize and Fill", "processor_res": 240,
            }]}},
        })  # fmt: skip
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
    assert decode(r.json()["images"][0]).shape == (96, 64, 3)
    assert "Module: dw_openpose_full" in info["extra_generation_params"]["ControlNet 0"]


def test_rest_repose_job_and_bad_skeleton(srv, sample_photo_path):
    face = io.BytesIO()
    Image.open(sample_photo_path).convert("RGB").resize((64, 96)).save(face, "PNG")
    with rest(srv) as c:
        spec = {"kind": "repose", "character": b64(face.getvalue()), "pose_image": b64(photo_png()),
                "method": "animate_anyone", "image_encoder": "tiny-image-encoder", "vae": "tiny-vae", "size": 96,
                "diffusion": {"checkpoint": "tiny-sd15", "steps": 2, "seed": 1}}  # fmt: skip
        r = c.post("/v1/jobs", json=spec)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 180
        while (job := c.get(f"/v1/jobs/{job_id}").json())["state"] not in ("completed", "failed", "canceled"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert job["state"] == "completed", job
        names = [o["name"] for o in job["output"]["outputs"]]
        assert names == ["image", "skeleton_image", "skeleton"]
        skel = c.get(f"/v1/jobs/{job_id}/outputs/skeleton")
        assert skel.headers["content-type"].startswith("application/json") and skel.json()["canvas_width"] == 64
        bad = c.post("/v1/jobs", json={**spec, "pose_image": None, "skeleton": {"people": "x", "canvas_width": 64,
                                                                                  "canvas_height": 96}})  # fmt: skip
        assert bad.status_code == 422 and "skeleton" in bad.json()["detail"]
