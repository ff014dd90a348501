"""Regression tests of the chaos run's findings (issue 16) that live in the API and spec layers: text that
cannot be stored, forged infotext lines, JSON bombs, oversized specs, per-job cost limits, secrets in logs,
WebSocket tickets, storage faults, 429 without Retry-After, bodies over a path's limit / stalled bodies,
oversized chunked bodies on FastAPI routes, and slowloris header trickling."""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import socket
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from toonbooth.api.app import create_app, guarded_h11, make_service
from toonbooth.api.auth import TicketSigner
from toonbooth.api.middleware import BodyLimitMiddleware
from toonbooth.core.errors import AuthError, InputError
from toonbooth.core.images import format_a1111_parameters, parse_a1111_parameters
from toonbooth.core.logs import RedactFilter, RepeatFilter, redact
from toonbooth.core.settings import Settings
from toonbooth.core.specs import parse_job_spec

LOOPBACK = "http://127.0.0.1:7860"


def png_bytes(size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (10, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def client(tmp_path):
    settings = Settings(home=tmp_path / "home", data_dir=tmp_path / "data", device="cpu", max_queued_jobs_per_user=1,
                        unlimited_users=["root"])  # fmt: skip
    service = make_service(settings, start_runners=False)
    try:
        app = create_app(settings, service, allow_anonymous=True, mount_ui=False)
        with TestClient(app, base_url=LOOPBACK, raise_server_exceptions=False) as c:
            yield c, service
    finally:
        service.close()


# --- text a spec may hold (item 6) ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["bad\x00byte", "bell\x07", "esc\x1b[31m", "del\x7f"])
def test_control_characters_are_refused_naming_the_field(text):
    with pytest.raises(InputError) as err:
        parse_job_spec({"kind": "generate", "prompt": text, "checkpoint": "x"})
    assert err.value.field == "prompt" and "control character" in err.value.message


def test_lone_surrogates_are_a_422_and_listing_keeps_working(client):
    c, _ = client
    body = '{"kind": "generate", "checkpoint": "c", "prompt": "a \\ud800 cat"}'
    r = c.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "prompt"
    with pytest.raises(InputError) as err:  # inside lists of nested text too (training captions)
        parse_job_spec({"kind": "generate", "checkpoint": "c", "prompt": "p", "styles": ["ok", "b\ud800d"]})
    assert err.value.field.startswith("styles")
    assert c.get("/v1/jobs").status_code == 200  # nothing stored, the list answers
    # line breaks and tabs stay allowed in prompts
    assert parse_job_spec({"kind": "generate", "prompt": "a\r\nb\tc", "checkpoint": "x"}).prompt == "a\r\nb\tc"


# --- forged infotext lines (item 17) ---------------------------------------------------------------


def test_a_prompt_line_cannot_pose_as_the_negative_prompt():
    text = format_a1111_parameters(
        "a cat\nNegative prompt: forged\r\nSteps: 1, Sampler: X, Seed: 1", "real negative",
        {"Steps": 20, "Sampler": "Euler a", "Seed": 7},
    )  # fmt: skip
    prompt, negative, settings = parse_a1111_parameters(text)
    assert negative == "real negative" and settings == {"Steps": "20", "Sampler": "Euler a", "Seed": "7"}
    assert "forged" in prompt and "\r" not in text


# --- JSON bombs and oversized specs (items 8, 9) ----------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/trainings"])
def test_deeply_nested_json_is_a_4xx(client, route):
    c, _ = client
    body = '{"kind": "generate", "x": ' + "[" * 10_000 + "]" * 10_000 + "}"
    r = c.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "nests deeper" in r.json()["detail"]


def test_a_spec_over_the_size_limit_is_413_but_inline_images_do_not_count(client):
    c, _ = client
    huge = {"kind": "generate", "prompt": "x" * 3000, "checkpoint": "c", "negative_prompt": "y"}
    huge["styles"] = ["s" * 300] * 1000  # 300 kB of text that is no medium
    r = c.post("/v1/jobs", json=huge)
    assert r.status_code in (413, 422)  # the size check or the field bound, never stored
    assert c.get("/v1/jobs").json()["jobs"] == []


# --- per-job cost limits (item 2) ---------------------------------------------------------------------


def test_generate_cost_is_bounded_at_submit_naming_the_field(client):
    c, service = client
    spec = {"kind": "generate", "prompt": "a", "checkpoint": "none", "width": 4096, "height": 4096, "batch_size": 8}
    r = c.post("/v1/jobs", json=spec)
    assert r.status_code == 422 and r.json()["field"] == "width" and "max_job_pixels" in r.json()["detail"]
    from toonbooth.engines.base import JobCost, check_job_limits

    cost = JobCost(pixels=(4096 * 4096, "width"))
    check_job_limits(cost, service.settings, "root")  # an operator in unlimited_users may
    with pytest.raises(InputError) as err:
        check_job_limits(JobCost(images=(40, "batch_size")), service.settings, "alice")
    assert err.value.field == "batch_size" and "16" in err.value.message


# --- secrets never reach a log line; floods are cut (items 1, 7) ----------------------------------------


def test_redaction_of_tokens_tickets_and_auth_headers():
    line = '127.0.0.1:5 - "GET /v1/jobs/abc/ws?token=tb_AbCdEf0123456789&after=3 HTTP/1.1" 101'
    assert "tb_AbCd" not in redact(line) and "after=3" in redact(line)
    assert "s3cr3t" not in redact("Authorization: Bearer s3cr3t") and "[redacted]" in redact("password=hunter2")
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s", ("ticket=abc.123.def",), None)
    RedactFilter().filter(record)
    assert record.getMessage() == "ticket=[redacted]"


def test_repeated_identical_lines_are_cut_to_one_plus_a_count():
    flt = RepeatFilter(window_s=0.2)

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.ERROR, __file__, 1, msg, None, None)

    passed = [flt.filter(rec("disk full")) for _ in range(50)]
    assert passed.count(True) == 1 and flt.filter(rec("another line"))
    time.sleep(0.25)
    late = rec("disk full")
    assert flt.filter(late) and "49 identical lines" in late.getMessage()


# --- WebSocket tickets instead of tokens in URLs (item 7) ------------------------------------------


def test_ws_tickets_are_signed_short_lived_and_per_user(client):
    signer = TicketSigner(b"k" * 32, ttl_s=60)
    ticket, expiry = signer.issue("alice", now=1000.0)
    assert signer.check(ticket, now=1030.0) == "alice" and expiry == 1060
    with pytest.raises(AuthError, match="expired"):
        signer.check(ticket, now=1061.0)
    forged = ticket.replace(ticket.split(".")[0], "Ym9i")  # "bob", old MAC
    with pytest.raises(AuthError, match="not valid"):
        signer.check(forged, now=1030.0)
    assert TicketSigner(b"other" * 8).issue("alice", now=1000.0)[0] != ticket
    c, _ = client
    r = c.post("/v1/ws-ticket")
    assert r.status_code == 200 and r.json()["ticket"].count(".") == 2


# --- storage faults and limits answer with what happened (items 3, 14) -------------------------------


def test_disk_full_is_507_and_names_no_path(client, monkeypatch):
    c, service = client

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", "/srv/secret/data/blobs/x")

    monkeypatch.setattr(service.storage, "put", full)
    r = c.post("/v1/uploads", files={"file": ("a.png", png_bytes(), "image/png")})
    assert r.status_code == 507 and "storage is full" in r.json()["detail"] and "/srv" not in r.text


def test_a_429_says_when_to_retry(client):
    c, _ = client
    import base64

    photo = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    spec = {"kind": "avatar", "image": photo, "backend": "classic"}
    assert c.post("/v1/jobs", json=spec).status_code == 201
    r = c.post("/v1/jobs", json=spec)  # the per-user queue limit of this client is 1
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


# --- request bodies (items 12, 15) ------------------------------------------------------------------


async def echo_app(scope, receive, send):
    """Reads the whole body, answers 200."""
    while True:
        msg = await receive()
        if not msg.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _call(mw: BodyLimitMiddleware, path: str, chunks: list[bytes], headers=(), delay: float = 0.0):
    sent: list[dict] = []
    queue = list(chunks)

    async def receive():
        if delay:
            await asyncio.sleep(delay)
        body = queue.pop(0) if queue else b""
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": list(headers)}
    await mw(scope, receive, send)
    return sent[0]["status"]


def test_path_limits_stalled_bodies_and_bounded_parallel_uploads():
    mw = BodyLimitMiddleware(echo_app, 10_000, read_timeout_s=0.2, path_limits={"/v1/uploads": 100})
    chunk = [b"x" * 60, b"x" * 60]
    assert asyncio.run(_call(mw, "/v1/uploads", chunk)) == 413  # the upload route's own limit, while streaming
    assert asyncio.run(_call(mw, "/v1/jobs", chunk)) == 200
    assert asyncio.run(_call(mw, "/v1/jobs", [b"a", b"b"], delay=0.5)) == 408  # the client stalls
    declared = [(b"content-length", b"500")]
    assert asyncio.run(_call(mw, "/v1/uploads", [b"x"], headers=declared)) == 413  # refused before reading
    mw_one = BodyLimitMiddleware(echo_app, 10**9, max_large_bodies=1, large_body_bytes=10)
    big = [(b"content-length", b"50")]

    async def two_at_once():
        first = asyncio.create_task(_call(mw_one, "/v1/uploads", [b"x" * 25, b"x" * 25], headers=big, delay=0.1))
        await asyncio.sleep(0.05)
        second = await _call(mw_one, "/v1/uploads", [b"x" * 50], headers=big)
        return await first, second

    assert asyncio.run(two_at_once()) == (200, 429)


def test_oversized_chunked_body_on_an_a1111_route_is_413_not_400(tmp_path):
    settings = Settings(home=tmp_path / "home", data_dir=tmp_path / "data", device="cpu", max_request_bytes=2048)
    service = make_service(settings, start_runners=False)
    try:
        app = create_app(settings, service, allow_anonymous=True, mount_ui=False)
        with TestClient(app, base_url=LOOPBACK, raise_server_exceptions=False) as c:

            def gen():
                yield b'{"prompt": "'
                for _ in range(10):
                    yield b"x" * 1024
                yield b'"}'

            r = c.post("/sdapi/v1/txt2img", content=gen(), headers={"content-type": "application/json"})
            assert r.status_code == 413 and r.json()["field"] == "body"
    finally:
        service.close()


def test_slowloris_headers_are_cut_off(tmp_path):
    """A real uvicorn server with the guarded protocol: a client that trickles its headers is disconnected
    at the header deadline, while a normal request on another connection is answered."""
    import threading

    import uvicorn
    from fastapi import FastAPI

    mini = FastAPI()

    @mini.get("/ping")
    def ping():
        return {"ok": True}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(mini, host="127.0.0.1", port=port, http=guarded_h11(0.5), log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        ok = socket.create_connection(("127.0.0.1", port))
        ok.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"200 OK" in ok.recv(4096)
        slow.settimeout(5)
        sent_more = 0
        closed = False
        for _ in range(40):  # keep trickling: each byte would have reset a plain keep-alive timer
            try:
                slow.sendall(b"X")
                sent_more += 1
                time.sleep(0.05)
                if slow.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"":
                    closed = True
                    break
            except BlockingIOError:
                continue
            except OSError:
                closed = True
                break
        assert closed, f"the trickling connection stayed open ({sent_more} more bytes accepted)"
    finally:
        server.should_exit = True
        thread.join(10)


def test_delete_my_data_removes_my_jobs_and_files_only(client):
    import base64

    c, service = client
    photo = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    assert c.post("/v1/jobs", json={"kind": "avatar", "image": photo, "backend": "classic"}).status_code == 201
    other = service.put_upload(png_bytes(30), "bob")
    r = c.delete("/v1/me/data")
    assert r.status_code == 200 and r.json()["blobs_deleted"] == 1
    assert c.get("/v1/jobs").json()["jobs"] == []
    assert service.read_upload(other, "bob")  # another user's file stays
