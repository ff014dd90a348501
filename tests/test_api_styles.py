"""Personalization over HTTP, through a real `toonbooth serve` process (tiny SD1.5 base): train a LoRA with
`POST /v1/trainings` (multipart, several files), follow its loss in the job's SSE events, find the style in
`/v1/styles` and `/sdapi/v1/loras` of its owner only, download its kohya file, use it by name in a generate
job, delete it (another user gets 404); the training photos are released through blob ownership (a photo
another user also uploaded stays theirs); bad requests get 422 naming the field."""

from __future__ import annotations

import base64
import io
import json
import shutil
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load as load_safetensors

from api_server import add_user, running_server, sse_events

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]


def colour_png(i: int, size: int = 48) -> bytes:
    """A distinct colour per image, with a soft diagonal ramp (so it is not flat)."""
    yy, xx = np.mgrid[0:size, 0:size]
    ramp = 0.6 + 0.4 * (xx + yy)[..., None] / (2 * size)
    arr = (np.array(COLOURS[i], dtype=np.float32)[None, None, :] * ramp).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def srv(tiny_models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("api-styles")
    models = root / "models"  # own copy: trained styles are written under <models>/users/
    shutil.copytree(tiny_models_dir, models)
    data_dir = root / "data"
    data_dir.mkdir()
    tokens = {name: add_user(data_dir, name) for name in ("alice", "bob")}
    with running_server(models, data_dir) as server:
        server.tokens = tokens  # type: ignore[attr-defined]
        server.models_dir = models  # type: ignore[attr-defined]
        yield server


def client(srv, user: str) -> httpx.Client:
    return httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {srv.tokens[user]}"}, timeout=120
    )


def train_spec(name: str, **kw) -> dict:
    spec = {
        "kind": "train_lora", "style_name": name, "base": "tiny-sd15", "arch": "sd15", "resolution": 32,
        "steps": 6, "rank": 4, "learning_rate": 1e-2, "sample_steps": 1, "checkpoint_every": 0, "seed": 0,
        "delete_images_after": True, "optimizer": "adamw",
    }  # fmt: skip
    spec.update(kw)
    return spec


def generate(c: httpx.Client, prompt: str) -> dict:
    spec = {"kind": "generate", "mode": "txt2img", "prompt": prompt, "checkpoint": "tiny-sd15", "width": 32,
            "height": 32, "steps": 2, "seed": 3, "sampler_name": "Euler"}  # fmt: skip
    r = c.post("/v1/jobs", json=spec)
    assert r.status_code == 201, r.text
    return wait_done(c, r.json()["id"])


def wait_done(c: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("completed", "failed", "canceled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not done after {timeout} s")


def pixels(c: httpx.Client, job: dict) -> np.ndarray:
    assert job["state"] == "completed", job
    r = c.get(f"/v1/jobs/{job['id']}/outputs/{job['output']['outputs'][0]['name']}")
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16)


def blob_path(srv, ref: str):
    digest = ref.split(":", 1)[1]
    return srv.data_dir / "blobs" / digest[:2] / digest


def test_train_list_use_download_delete(srv):
    alice, bob = client(srv, "alice"), client(srv, "bob")
    pngs = [colour_png(i) for i in range(3)]
    # bob uploaded the same first photo: it is one blob with two owners
    shared = bob.post("/v1/uploads", files={"file": ("mine.png", pngs[0], "image/png")}).json()["ref"]

    # 1. Start the training: spec + several files in one multipart request
    files = [("images", (f"photo{i}.png", data, "image/png")) for i, data in enumerate(pngs)]
    r = alice.post("/v1/trainings", data={"spec": json.dumps(train_spec("redstyle"))}, files=files)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["kind"] == "train_lora" and job["spec"]["image_names"] == [
        "photo0.png",
        "photo1.png",
        "photo2.png",
    ]
    refs = job["spec"]["images"]
    assert refs[0] == shared and all(ref.startswith("blob:") for ref in refs)
    assert bob.get(f"/v1/jobs/{job['id']}").status_code == 404

    # 2. Follow it: progress events carry the loss, the stream ends with `completed`
    losses = []
    with alice.stream("GET", f"/v1/jobs/{job['id']}/events") as resp:
        for _seq, name, data in sse_events(resp):
            if name == "progress" and " loss " in json.loads(data)["stage"]:
                losses.append(float(json.loads(data)["stage"].split(" loss ")[1].split()[0]))
            if name in ("completed", "failed", "canceled"):
                break
    done = alice.get(f"/v1/jobs/{job['id']}").json()
    assert done["state"] == "completed", done
    assert losses and len(done["output"]["info"]["loss_history"]) == 6

    # 3. The photos are released: alice's own ones are deleted, the one bob also owns stays his
    assert done["output"]["info"]["images_deleted"] == 2
    assert not blob_path(srv, refs[1]).exists() and not blob_path(srv, refs[2]).exists()
    assert blob_path(srv, shared).exists()
    again = bob.post(
        "/v1/jobs", json={"kind": "anime", "image": shared, "mode": "mask", "backend": "classic"}
    )
    assert again.status_code == 201, again.text  # still bob's upload
    for ref in (refs[0], refs[1]):  # neither is alice's any more
        r = alice.post("/v1/trainings", json={**train_spec("other"), "images": [ref]})
        assert r.status_code == 404 and ref in r.json()["detail"]

    # 4. The style is alice's: /v1/styles, /v1/styles/{name}, A1111 /sdapi/v1/loras; bob sees nothing
    mine = alice.get("/v1/styles").json()
    assert [s["name"] for s in mine] == ["redstyle"]
    style = mine[0]
    assert style["model_kind"] == "lora" and style["usage"].startswith("<lora:redstyle:")
    assert style["image_count"] == 3 and style["steps"] == 6 and "/" not in style["base_model"]
    assert bob.get("/v1/styles").json() == []
    assert bob.get("/v1/styles/redstyle").status_code == 404
    assert alice.get("/v1/styles/redstyle").json()["name"] == "redstyle"
    assert "redstyle" in [x["name"] for x in alice.get("/sdapi/v1/loras").json()]
    assert "redstyle" not in [x["name"] for x in bob.get("/sdapi/v1/loras").json()]
    assert "redstyle" not in [m["name"] for m in bob.get("/v1/models", params={"kind": "lora"}).json()]

    # 5. Its kohya file downloads (what A1111 / ComfyUI load); bob cannot
    r = alice.get(style["files"]["model"])
    assert r.status_code == 200
    tensors = load_safetensors(r.content)
    assert tensors and all(k.startswith("lora_unet_") for k in tensors)
    assert bob.get(style["files"]["model"]).status_code == 404

    # 6. A name already taken is refused at once, naming the field
    r = alice.post("/v1/trainings", data={"spec": json.dumps(train_spec("redstyle"))}, files=files[:1])
    assert r.status_code == 422 and r.json()["field"] == "style_name" and "already" in r.json()["detail"]

    # 7. Used by name in a generate job: it changes the picture, weight 0 gives the base picture back
    base = pixels(alice, generate(alice, "a red picture"))
    styled = pixels(alice, generate(alice, "a red picture <lora:redstyle:1>"))
    zero = pixels(alice, generate(alice, "a red picture <lora:redstyle:0>"))
    assert np.abs(styled - base).max() > 0 and np.array_equal(zero, base)
    theirs = bob.post("/v1/jobs", json={"kind": "generate", "prompt": "a red picture <lora:redstyle:1>",
                                        "checkpoint": "tiny-sd15", "width": 32, "height": 32, "steps": 2})
    assert theirs.status_code == 422 and theirs.json()["field"] == "prompt"  # refused at submit, nothing queued
    assert "unknown LoRA 'redstyle'" in theirs.json()["detail"]

    # 8. Delete: bob gets 404 and changes nothing; alice's style is gone everywhere
    assert bob.delete("/v1/styles/redstyle").status_code == 404
    assert alice.get("/v1/styles/redstyle").status_code == 200
    r = alice.delete("/v1/styles/redstyle")
    assert r.status_code == 200 and r.json()["name"] == "redstyle"
    assert alice.get("/v1/styles/redstyle").status_code == 404 and alice.get("/v1/styles").json() == []
    assert "redstyle" not in [x["name"] for x in alice.get("/sdapi/v1/loras").json()]
    assert not list((srv.models_dir / "users" / "alice").rglob("redstyle*"))
    assert alice.delete("/v1/styles/redstyle").status_code == 404
    gone = alice.post("/v1/jobs", json={"kind": "generate", "prompt": "a red picture <lora:redstyle:1>",
                                        "checkpoint": "tiny-sd15", "width": 32, "height": 32, "steps": 2})
    assert gone.status_code == 422 and "unknown LoRA 'redstyle'" in gone.json()["detail"]


def test_presets_and_bad_requests(srv):
    alice = client(srv, "alice")
    presets = alice.get("/v1/trainings/presets").json()
    by_name = {p["name"]: p for p in presets}
    assert set(by_name) == {"portrait-character", "art-style", "one-image-style"}
    assert by_name["portrait-character"]["min_images"] == 8 and by_name["one-image-style"]["max_images"] == 1
    assert httpx.get(srv.url + "/v1/trainings/presets").status_code == 401

    png = colour_png(0)
    r = alice.post("/v1/trainings", json={"kind": "generate", "prompt": "x"})
    assert r.status_code == 422 and r.json()["field"] == "kind"
    r = alice.post("/v1/trainings", json={**train_spec("bad/name"), "images": ["iVBORw0KGgo="]})
    assert r.status_code == 422 and r.json()["field"] == "style_name"
    r = alice.post("/v1/trainings", data={"spec": json.dumps(train_spec("ok"))},
                   files=[("photos", ("a.png", png, "image/png"))])  # fmt: skip
    assert r.status_code == 422 and r.json()["field"] == "photos"
    r = alice.post("/v1/trainings", data={"spec": json.dumps(train_spec("ok", preset="portrait-character"))},
                   files=[("images", ("a.png", png, "image/png"))])  # fmt: skip
    assert r.status_code == 422 and r.json()["field"] == "images" and "8-20 images" in r.json()["detail"]
    r = alice.post("/v1/trainings", data={"spec": json.dumps(train_spec("ok"))},
                   files=[("images", ("a.png", b"not an image", "image/png"))])  # fmt: skip
    assert r.status_code == 422 and r.json()["field"] == "images.0"
    r = alice.post("/v1/trainings", json={**train_spec("ok", owner="bob"), "images": ["x"]})
    assert r.status_code == 422 and r.json()["field"] == "owner"
    assert alice.get("/v1/styles/..").status_code in (404, 422)
    assert alice.delete("/v1/styles/bad name").status_code == 422


def test_training_through_jobs_route_and_cancel(srv):
    """`POST /v1/jobs` takes the same spec with inline images; a running training is canceled with
    `DELETE /v1/jobs/{id}` once its loss shows up."""
    alice = client(srv, "alice")
    images = [colour_png(i, 40) for i in range(3)]
    spec = train_spec("longstyle", steps=5000, delete_images_after=False)
    spec["images"] = ["data:image/png;base64," + base64.b64encode(b).decode() for b in images]
    r = alice.post("/v1/jobs", json=spec)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    asked = False
    with alice.stream("GET", f"/v1/jobs/{job_id}/events") as resp:
        for _seq, name, data in sse_events(resp):
            if not asked and name == "progress" and " loss " in json.loads(data)["stage"]:
                asked = alice.delete(f"/v1/jobs/{job_id}").status_code == 200
            if name in ("completed", "failed", "canceled"):
                break
    job = wait_done(alice, job_id)
    assert asked and job["state"] == "canceled" and alice.get("/v1/styles").json() == []
    assert all(blob_path(srv, ref).exists() for ref in job["spec"]["images"])  # kept: not asked to delete


def test_release_blob_keeps_what_is_still_needed(tmp_path):
    """The queue's rule behind `ctx.release_upload`: another unfinished job of the owner or one of their
    results keeps the ownership; another owner keeps the blob; else it may be deleted."""
    from toonbooth.core.results import JobOutput, OutputRef
    from toonbooth.runtime.queue_sqlite import SqliteQueue

    q = SqliteQueue(tmp_path / "q.db")
    photo, result = "blob:" + "a" * 64, "blob:" + "b" * 64
    q.add_blob(photo, "alice")
    q.add_blob(result, "alice", role="result")
    q.enqueue("train", "alice", "train_lora", {"images": [photo]})
    q.enqueue("other", "alice", "train_lora", {"images": [photo]})
    assert q.claim("w").id == "train"
    assert q.release_blob(photo, "alice", "train") is False and q.owns_blob(
        photo, "alice"
    )  # "other" needs it
    q.request_cancel("other")
    q.add_blob(photo, "bob")
    assert q.release_blob(photo, "alice", "train") is False  # bob's upload of the same bytes
    assert not q.owns_blob(photo, "alice") and q.owns_blob(photo, "bob")
    assert q.release_blob(photo, "bob") is False  # alice's running training still reads it
    out = JobOutput(outputs=[OutputRef(name="image", ref=result)], backend="neural")
    assert q.finish("train", "completed", output=out) is not None
    assert q.release_blob(photo, "bob") is True  # nobody left; the finished jobs keep only the reference
    assert q.release_blob(result, "alice") is False and q.owns_blob(result, "alice")  # one of her results
    q.close()
