"""Native REST API through a real `toonbooth serve` process on loopback (httpx): jobs, SSE, WebSocket,
cancel, downloads, uploads, models, users isolation, limits, bad input, CORS, restart."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import socket
import struct
import subprocess
import time

import httpx
import pytest
from PIL import Image

from api_server import (
    add_user,
    b64,
    blob_count,
    cli_command,
    png_bytes,
    running_server,
    server_env,
    sse_events,
    start_server,
    stop_server,
)

MAX_UPLOAD = 300_000
MAX_PIXELS = 1_000_000
MAX_QUEUED = 3


@pytest.fixture(scope="module")
def srv(tiny_models_dir, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("api-jobs") / "data"
    data_dir.mkdir()
    tokens = {name: add_user(data_dir, name) for name in ("alice", "bob")}
    env = {
        "TOONBOOTH_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "TOONBOOTH_MAX_PIXELS": str(MAX_PIXELS),
        "TOONBOOTH_MAX_QUEUED_JOBS_PER_USER": str(MAX_QUEUED),
    }
    with running_server(tiny_models_dir, data_dir, env=env) as server:
        server.tokens = tokens  # type: ignore[attr-defined]
        server.env = env  # type: ignore[attr-defined]
        yield server


def client(srv, user: str = "alice") -> httpx.Client:
    return httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {srv.tokens[user]}"}, timeout=120
    )


def generate_spec(steps: int = 6, seed: int = 1) -> dict:
    return {"kind": "generate", "mode": "txt2img", "prompt": "a cat", "checkpoint": "tiny-sd15", "width": 64,
            "height": 64, "steps": steps, "seed": seed, "sampler_name": "Euler"}  # fmt: skip


def wait_done(c: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("completed", "failed", "canceled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not done after {timeout} s")


def wait_state(c: httpx.Client, job_id: str, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["state"] == state:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {state}")


def test_health_docs_openapi(srv):
    health = httpx.get(srv.url + "/healthz").json()
    assert health["status"] == "ok" and health["runners"] == 1
    assert httpx.get(srv.url + "/docs").status_code == 200
    schema = httpx.get(srv.url + "/openapi.json").json()
    assert "/v1/jobs" in schema["paths"] and "/sdapi/v1/img2img" in schema["paths"]
    assert {"AvatarSpec", "GenerateSpec", "JobSpec"} <= set(schema["components"]["schemas"])
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/JobSpec"}
    assert "multipart/form-data" in body


def test_auth_required(srv):
    r = httpx.get(srv.url + "/v1/jobs")
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    assert (
        httpx.get(
            srv.url + "/v1/jobs", headers={"Authorization": "Bearer tb_000000000000_" + "x" * 40}
        ).status_code
        == 401
    )
    basic = "Basic " + base64.b64encode(f"alice:{srv.tokens['alice']}".encode()).decode()
    assert (
        httpx.get(srv.url + "/v1/jobs", headers={"Authorization": basic}).status_code == 401
    )  # Bearer only here
    with client(srv) as c:
        assert c.get("/v1/jobs").status_code == 200


def test_json_job_sse_order_download_and_resume(srv):
    with client(srv) as c:
        r = c.post("/v1/jobs", json=generate_spec(steps=8))
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["state"] == "queued" and job["owner"] == "alice"
        with c.stream("GET", f"/v1/jobs/{job['id']}/events") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = list(sse_events(resp))
        kinds = [e[1] for e in events]
        assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "completed", kinds
        progress = [json.loads(e[2]) for e in events if e[1] == "progress"]
        assert len(progress) >= 3 and all(e[1] == "progress" for e in events[2:-1])
        percents = [p["percent"] for p in progress]
        assert percents == sorted(percents) and 0 < percents[len(percents) // 2] < 100 and percents[-1] == 100
        ids = [e[0] for e in events]
        assert ids == sorted(ids) and ids[0] >= 1
        # resume after the `started` event: nothing before it comes again
        with c.stream("GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": str(ids[1])}) as resp:
            resumed = list(sse_events(resp))
        assert resumed[0][1] == "progress" and resumed[-1][1] == "completed"
        assert all(i > ids[1] for i, _, _ in resumed if _ != "progress") and resumed[0][0] > ids[1]
        # the record and the PNG
        done = c.get(f"/v1/jobs/{job['id']}").json()
        assert done["state"] == "completed" and done["percent"] == 100
        out = done["output"]["outputs"][0]
        png = c.get(f"/v1/jobs/{job['id']}/outputs/{out['name']}")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert "attachment" in png.headers["content-disposition"]
        img = Image.open(io.BytesIO(png.content))
        assert img.size == (64, 64) and "Steps: 8" in img.info["parameters"]
        assert c.get(f"/v1/jobs/{job['id']}/outputs/nope").status_code == 404
        listing = c.get("/v1/jobs", params={"limit": 50}).json()
        assert job["id"] in [j["id"] for j in listing["jobs"]]
        assert c.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_multipart_job_and_upload(srv, sample_photo_path):
    photo = png_bytes((96, 96), sample_photo_path)
    with client(srv) as c:
        spec = {"kind": "avatar", "backend": "classic", "gender": "female", "expression": "laughing"}
        r = c.post(
            "/v1/jobs", data={"spec": json.dumps(spec)}, files={"image": ("face.png", photo, "image/png")}
        )
        assert r.status_code == 201, r.text
        job = wait_done(c, r.json()["id"])
        assert job["state"] == "completed", job
        assert job["spec"]["image"].startswith("blob:") and job["output"]["backend"] == "classic"
        # upload first, then refer to it
        up = c.post("/v1/uploads", files={"file": ("face.png", photo, "image/png")})
        assert up.status_code == 201
        ref = up.json()["ref"]
        assert ref == "blob:" + hashlib.sha256(photo).hexdigest()
        r = c.post("/v1/jobs", json={**spec, "image": ref})
        assert r.status_code == 201
        done = wait_done(c, r.json()["id"])
        assert done["state"] == "completed"
        avatar = Image.open(io.BytesIO(c.get(f"/v1/jobs/{done['id']}/outputs/avatar").content))
        assert avatar.width > 0


@pytest.mark.skipif(
    importlib.util.find_spec("websockets") is None and importlib.util.find_spec("wsproto") is None,
    reason="uvicorn serves WebSockets only with the `websockets` (or `wsproto`) package: install the server extra",
)
def test_websocket_events(srv):
    with client(srv) as c:
        job = c.post("/v1/jobs", json=generate_spec(steps=4, seed=5)).json()
    messages = _ws_messages(srv.port, f"/v1/jobs/{job['id']}/ws?token={srv.tokens['alice']}")
    types = [m["event"]["type"] for m in messages]
    assert types[0] == "queued" and "started" in types and types[-1] == "completed"
    assert "progress" in types
    # another user's job: closed with policy violation, nothing sent
    assert _ws_messages(srv.port, f"/v1/jobs/{job['id']}/ws?token={srv.tokens['bob']}") == []


def _ws_messages(port: int, path: str) -> list[dict]:
    """A minimal RFC 6455 client (text frames, server frames unmasked) to read a job's messages."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(
        (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    )  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            return []
        head += chunk
    if b" 101 " not in head.split(b"\r\n")[0]:
        sock.close()
        return []
    out = []

    def read(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    try:
        while True:
            b1, b2 = read(2)
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack(">H", read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", read(8))[0]
            payload = read(n)
            opcode = b1 & 0x0F
            if opcode == 0x8:  # close
                break
            if opcode == 0x1:
                out.append(json.loads(payload))
    except ConnectionError:
        pass
    finally:
        sock.close()
    return out


def test_cancel_queued_and_running(srv):
    with client(srv) as c:
        running = c.post("/v1/jobs", json=generate_spec(steps=150, seed=2)).json()
        queued = c.post("/v1/jobs", json=generate_spec(steps=4, seed=3)).json()
        wait_state(c, running["id"], "running")
        r = c.delete(f"/v1/jobs/{queued['id']}")
        assert r.status_code == 200 and r.json()["state"] == "canceled"
        r = c.delete(f"/v1/jobs/{running['id']}")
        assert r.status_code == 200 and r.json()["cancel_requested"]
        done = wait_done(c, running["id"])
        # a generate job canceled mid-way keeps what it made so far (A1111's interrupt; docs/a1111.md)
        assert done["state"] == "canceled"
        assert done["output"] is None or done["output"]["info"]["interrupted"] is True
        assert c.get(f"/v1/jobs/{queued['id']}").json()["output"] is None
        with c.stream("GET", f"/v1/jobs/{queued['id']}/events") as resp:
            assert [e[1] for e in sse_events(resp)] == ["queued", "canceled"]


def test_users_are_isolated(srv):
    with client(srv, "alice") as alice, client(srv, "bob") as bob:
        job = alice.post("/v1/jobs", json={**generate_spec(steps=2), "seed": 9}).json()
        done = wait_done(alice, job["id"])
        name = done["output"]["outputs"][0]["name"]
        for method, path in (
            ("GET", f"/v1/jobs/{job['id']}"),
            ("GET", f"/v1/jobs/{job['id']}/events"),
            ("GET", f"/v1/jobs/{job['id']}/outputs/{name}"),
            ("DELETE", f"/v1/jobs/{job['id']}"),
        ):
            r = bob.request(method, path)
            assert r.status_code == 404, (method, path, r.text)
        assert job["id"] not in [j["id"] for j in bob.get("/v1/jobs", params={"limit": 200}).json()["jobs"]]
        # alice's upload cannot be used by bob
        ref = alice.post("/v1/uploads", files={"file": ("a.png", png_bytes(seed=11), "image/png")}).json()[
            "ref"
        ]
        r = bob.post("/v1/jobs", json={"kind": "avatar", "backend": "classic", "image": ref})
        assert r.status_code == 404 and "image" in r.json()["detail"]
        # and bob's result reference cannot be used by alice... nor alice's by bob
        out_ref = done["output"]["outputs"][0]["ref"]
        assert (
            bob.post("/v1/jobs", json={"kind": "avatar", "backend": "classic", "image": out_ref}).status_code
            == 404
        )


BAD_INPUTS = [
    # (what, request kwargs, status, field)
    ("unknown kind", {"json": {"kind": "nope"}}, 422, "kind"),
    ("missing kind", {"json": {"image": "x"}}, 422, "kind"),
    ("value out of range", {"json": {**generate_spec(), "steps": 0}}, 422, "steps"),
    ("wrong type", {"json": {**generate_spec(), "width": "wide"}}, 422, "width"),
    ("unknown field", {"json": {**generate_spec(), "bogus": 1}}, 422, "bogus"),
    ("not JSON", {"content": b"{nope", "headers": {"content-type": "application/json"}}, 422, "body"),
    ("JSON list", {"json": [1, 2]}, 422, "body"),
    ("not an image", {"json": {"kind": "avatar", "image": b64(b"hello, not an image at all")}}, 422, "image"),
    ("bad data URL", {"json": {"kind": "avatar", "image": "data:image/png;base64,!!!"}}, 422, "image"),
    ("server path", {"json": {"kind": "avatar", "image": "/etc/passwd"}}, 422, "image"),
    ("unknown blob", {"json": {"kind": "avatar", "image": "blob:" + "0" * 64}}, 404, None),
    ("bad e-mail", {"json": {"kind": "avatar", "image": "blob:" + "1" * 64, "email": "a@b.c\r\nBcc: x@y.z"}}, 422, "email"),
    ("multipart without spec", {"files": {"image": ("a.png", b"x", "image/png")}}, 422, "spec"),
    ("wrong content type", {"content": b"kind=avatar", "headers": {"content-type": "text/plain"}}, 422, "content-type"),
]  # fmt: skip


@pytest.mark.parametrize("what,kwargs,status,field", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_refused_nothing_stored(srv, what, kwargs, status, field):
    with client(srv, "bob") as c:
        blobs, jobs = blob_count(srv.data_dir), len(c.get("/v1/jobs", params={"limit": 200}).json()["jobs"])
        r = c.post("/v1/jobs", **kwargs)
        assert r.status_code == status, r.text
        body = r.json()
        assert body["detail"] and (field is None or body["field"] == field), body
        assert blob_count(srv.data_dir) == blobs
        assert len(c.get("/v1/jobs", params={"limit": 200}).json()["jobs"]) == jobs


def test_size_and_pixel_limits(srv):
    with client(srv, "bob") as c:
        blobs = blob_count(srv.data_dir)
        big = os.urandom(MAX_UPLOAD + 10)  # over the upload limit, under the body limit
        r = c.post("/v1/uploads", files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        huge_body = b"x" * (4 * MAX_UPLOAD + 2 * 1024 * 1024)  # over the request body limit
        r = c.post("/v1/jobs", content=huge_body, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["field"] == "body"
        flat = io.BytesIO()  # 1.1 Mpx, over the pixel limit, but a small file
        Image.new("RGB", (1100, 1000), (200, 10, 10)).save(flat, "PNG")
        assert len(flat.getvalue()) < MAX_UPLOAD
        r = c.post("/v1/uploads", files={"file": ("flat.png", flat.getvalue(), "image/png")})
        assert r.status_code == 413 and "pixels" in r.json()["detail"]
        r = c.post("/v1/jobs", json={"kind": "avatar", "backend": "classic", "image": b64(flat.getvalue())})
        assert r.status_code == 413 and r.json()["field"] == "image"
        assert blob_count(srv.data_dir) == blobs


def test_queued_jobs_limit(srv):
    with client(srv, "bob") as c:
        first = c.post("/v1/jobs", json=generate_spec(steps=150, seed=20)).json()
        wait_state(c, first["id"], "running")
        queued = [
            c.post("/v1/jobs", json=generate_spec(steps=2, seed=21 + i)).json() for i in range(MAX_QUEUED)
        ]
        assert all(q["state"] == "queued" for q in queued)
        blobs = blob_count(srv.data_dir)
        r = c.post(
            "/v1/jobs", json={"kind": "avatar", "backend": "classic", "image": b64(png_bytes(seed=99))}
        )
        assert r.status_code == 429 and str(MAX_QUEUED) in r.json()["detail"]
        assert blob_count(srv.data_dir) == blobs
        for job in [first, *queued]:
            c.delete(f"/v1/jobs/{job['id']}")
        assert wait_done(c, first["id"])["state"] == "canceled"


def test_cross_origin_refused(srv):
    token = {"Authorization": f"Bearer {srv.tokens['alice']}"}
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{srv.port + 1}"):
        r = httpx.get(srv.url + "/v1/jobs", headers={**token, "Origin": origin})
        assert r.status_code == 403 and r.json()["field"] == "Origin", origin
        assert "access-control-allow-origin" not in r.headers
    pre = httpx.options(
        srv.url + "/v1/jobs",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    r = httpx.get(
        srv.url + "/v1/jobs", headers={**token, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
    )
    assert r.status_code == 403
    same = httpx.get(srv.url + "/v1/jobs", headers={**token, "Origin": srv.url})
    assert same.status_code == 200
    assert httpx.get(srv.url + "/ui/", headers={"Origin": srv.url}).status_code == 200


def test_models_and_rescan(srv):
    with client(srv) as c:
        models = c.get("/v1/models").json()
        names = {(m["kind"], m["name"]) for m in models}
        assert {
            ("checkpoint", "tiny-sdxl"),
            ("controlnet", "tiny-sdxl-canny"),
            ("lora", "tiny-memoji"),
        } <= names
        assert all("path" not in m for m in models)
        loras = c.get("/v1/models", params={"kind": "lora"}).json()
        assert loras and all(m["kind"] == "lora" for m in loras)
        r = c.post("/v1/models/rescan")
        assert r.status_code == 200 and r.json()["models"] >= len(models) - 1


def test_killed_server_restarted_serves_finished_job(srv, tiny_models_dir):
    """Last test on the module server: SIGKILL it, start a new process over the same data folder."""
    with client(srv, "alice") as c:
        job = c.post(
            "/v1/jobs", json={"kind": "avatar", "backend": "classic", "image": b64(png_bytes(seed=4))}
        ).json()
        done = wait_done(c, job["id"])
        assert done["state"] == "completed"
        first_png = c.get(f"/v1/jobs/{job['id']}/outputs/avatar").content
    srv.kill()
    server = start_server(tiny_models_dir, srv.data_dir, env=srv.env)
    try:
        headers = {"Authorization": f"Bearer {srv.tokens['alice']}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
            again = c.get(f"/v1/jobs/{job['id']}").json()
            assert again["state"] == "completed" and again["output"] == done["output"]
            assert c.get(f"/v1/jobs/{job['id']}/outputs/avatar").content == first_png
            listed = [j["id"] for j in c.get("/v1/jobs", params={"limit": 200}).json()["jobs"]]
            assert job["id"] in listed
    finally:
        stop_server(server)


def test_serve_refuses_public_bind_without_users(tiny_models_dir, tmp_path):
    cmd = cli_command(tiny_models_dir, tmp_path / "data", "serve", "--host", "0.0.0.0", "--port", "1")
    out = subprocess.run(
        cmd, env=server_env({"TOONBOOTH_HOME": str(tmp_path)}), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert "refusing to bind 0.0.0.0" in out.stderr and "users add" in out.stderr


def test_users_add_prints_token_once(tiny_models_dir, tmp_path):
    cmd = cli_command(tiny_models_dir, tmp_path / "data", "users", "add", "dave")
    out = subprocess.run(
        cmd, env=server_env({"TOONBOOTH_HOME": str(tmp_path)}), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("tb_") and "shown only this once" in out.stderr
    from toonbooth.runtime.users import Users

    users = Users(tmp_path / "data" / "toonbooth.db")
    try:
        assert users.authenticate(token) == "dave"
        assert token.encode() not in (tmp_path / "data" / "toonbooth.db").read_bytes()  # stored hashed
    finally:
        users.close()
    again = subprocess.run(
        cmd, env=server_env({"TOONBOOTH_HOME": str(tmp_path)}), capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 2 and "already exists" in again.stderr
