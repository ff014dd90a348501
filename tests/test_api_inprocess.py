"""The app in-process (Starlette TestClient): the job WebSocket and local single-user mode.

The real-server tests cover everything else; this one also runs where uvicorn has no WebSocket
implementation installed (`websockets` / `wsproto`), since TestClient speaks ASGI directly."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from toonbooth.api.app import create_app, make_service

LOOPBACK = {"host": "127.0.0.1:7860"}


@pytest.fixture()
def local_app(tiny_settings):
    service = make_service(tiny_settings, start_runners=True)
    try:
        app = create_app(tiny_settings, service, allow_anonymous=True, mount_ui=False)
        with TestClient(app, base_url="http://127.0.0.1:7860") as client:
            yield client, service
    finally:
        service.close()


def test_websocket_events_and_local_mode(local_app):
    client, service = local_app
    spec = {"kind": "generate", "mode": "txt2img", "prompt": "a", "checkpoint": "tiny-sd15", "width": 64,
            "height": 64, "steps": 3, "seed": 1}  # fmt: skip
    job = client.post("/v1/jobs", json=spec)
    assert job.status_code == 201 and job.json()["owner"] == "local"  # no token: local mode on loopback
    job_id = job.json()["id"]
    messages = []
    with (
        client.websocket_connect(f"/v1/jobs/{job_id}/ws", headers=LOOPBACK) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        while True:
            messages.append(ws.receive_json())
    assert closed.value.code == 1000
    types = [m["event"]["type"] for m in messages]
    assert types[:2] == ["queued", "started"] and types[-1] == "completed" and "progress" in types
    assert [m["seq"] for m in messages] == sorted(m["seq"] for m in messages)
    # resume after the `started` event
    with client.websocket_connect(f"/v1/jobs/{job_id}/ws?after={messages[1]['seq']}", headers=LOOPBACK) as ws:
        first = ws.receive_json()
    assert first["event"]["type"] != "queued" and first["seq"] > messages[1]["seq"]
    for path, headers, code in (
        ("/v1/jobs/nope/ws", LOOPBACK, 1008),  # unknown job
        (f"/v1/jobs/{job_id}/ws", {**LOOPBACK, "origin": "http://evil.example"}, 1008),  # other origin
        (f"/v1/jobs/{job_id}/ws", {"host": "rebound.example"}, 1008),  # DNS rebinding in local mode
    ):
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect(path, headers=headers) as ws,
        ):
            ws.receive_json()
        assert refused.value.code == code
    # local mode ends as soon as a token exists
    token = service.users.add_user("erin")
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).json()["jobs"] == []
