"""ASGI middleware: request body limit and the cross-origin guard.

* `BodyLimitMiddleware` refuses a body over the limit with 413 before reading it (from
  `Content-Length`), and stops reading a streamed body as soon as it passes the limit.
* `OriginGuardMiddleware` refuses browser requests that come from another origin (OWASP CSRF
  cheat sheet, "Verifying origin with standard headers"): an `Origin` header that is not this server
  (or a configured allowed origin) — `Origin: null` included — or `Sec-Fetch-Site: cross-site` on
  anything but a top-level navigation. WebSocket handshakes are checked the same way (browsers always
  send `Origin` there). Requests without these headers (curl, httpx, A1111 clients) pass.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.errors import InputError, InputTooLargeError


class BodyTooLargeError(InputTooLargeError):
    """The request body passed the server's limit while it was being read."""


class BodyTimeoutError(InputError):
    """The client stopped sending its request body."""

    http_status = 408


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _send_json(send: Send, status: int, detail: str, field: str | None = None, *,
                     extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:  # fmt: skip
    body = json.dumps({"detail": detail, "field": field}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Request bodies: a limit (per path prefix where given, else `max_bytes`), checked from `Content-Length`
    before reading and with a running count while streaming; a read timeout while the body is incomplete
    (408 when a client stalls); and at most `max_large_bodies` bodies over `large_body_bytes` in flight at
    once (429 with Retry-After beyond), so parallel uploads cannot spool gigabytes to disk."""

    def __init__(self, app: ASGIApp, max_bytes: int, *, read_timeout_s: float = 30.0,
                 path_limits: dict[str, int] | None = None, max_large_bodies: int = 4,
                 large_body_bytes: int = 1 << 20):  # fmt: skip
        self.app = app
        self.max_bytes = int(max_bytes)
        self.read_timeout_s = float(read_timeout_s)
        self.path_limits = dict(path_limits or {})
        self.large_body_bytes = int(large_body_bytes)
        self._large = asyncio.Semaphore(max(1, int(max_large_bodies)))

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.path_limits.items():
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return limit
        return self.max_bytes

    @staticmethod
    def _reason(limit: int, size: int | None) -> str:
        got = f"{size} bytes" if size is not None else "more"
        return f"the request body is over the server's limit of {limit} bytes, got {got}"

    def _message(self, limit: int, size: int | None) -> str:
        return f"`body`: {self._reason(limit, size)}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        headers = _headers(scope)
        length = headers.get("content-length")
        declared: int | None = None
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(
                    send, 400, f"`Content-Length` is not a number: {length[:40]!r}", "Content-Length"
                )
                return
            if declared > limit:
                await _send_json(send, 413, self._message(limit, declared), "body")
                return
        large = (declared or 0) > self.large_body_bytes or (
            declared is None and "chunked" in headers.get("transfer-encoding", "").lower()
        )
        if large and self._large.locked():
            await _send_json(send, 429, "`body`: too many large uploads at once; retry in a few seconds", "body",
                             extra_headers=[(b"retry-after", b"5")])  # fmt: skip
            return
        if large:
            await self._large.acquire()
        try:
            await self._forward(scope, receive, send, limit)
        finally:
            if large:
                self._large.release()

    async def _forward(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = False
        body_done = False
        failure: dict[str, object] = {}

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body: waiting for a disconnect (SSE, WebSocket-like streams) has no limit
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except asyncio.TimeoutError:
                failure["status"] = 408
                failure["detail"] = f"`body`: no request data for {self.read_timeout_s:g} s"
                raise BodyTimeoutError("body", f"no request data for {self.read_timeout_s:g} s", None) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    failure["status"], failure["detail"] = 413, self._message(limit, None)
                    raise BodyTooLargeError("body", self._reason(limit, None), None)
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            # a framework that turns our error inside `receive` into its own answer (FastAPI: 400 "error
            # parsing the body") is overruled: the client gets the 413 / 408 it caused
            nonlocal started
            if failure and not started:
                if message["type"] == "http.response.start":
                    started = True
                    failure["sent"] = True
                    await _send_json(send, int(failure["status"]), str(failure["detail"]), "body")
                return
            if failure and started and message["type"] == "http.response.body" and failure.get("sent"):
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await _send_json(send, 413, self._message(limit, None), "body")
        except BodyTimeoutError as exc:
            if not started:
                await _send_json(send, 408, str(exc), "body")


class OriginGuardMiddleware:
    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()):
        self.app = app
        self.allowed = {o.rstrip("/").lower() for o in allowed_origins}

    def refusal(self, scope: Scope) -> str | None:
        """Why this request is refused, or None when it may pass."""
        headers = _headers(scope)
        origin = headers.get("origin")
        if origin is not None:
            norm = origin.strip().rstrip("/").lower()
            if norm in self.allowed:
                return None
            if norm == "null":
                return "requests from an opaque origin (`Origin: null`) are refused"
            parts = urlsplit(norm)
            host = (headers.get("host") or "").strip().lower()
            if not parts.scheme or not parts.netloc or parts.netloc != host:
                return f"cross-origin request from {origin[:100]!r} refused (this server is {host[:100]!r})"
            return None
        site = headers.get("sec-fetch-site")
        if site == "cross-site":
            navigation = scope["type"] == "http" and scope.get("method") == "GET"
            if not (navigation and headers.get("sec-fetch-mode") == "navigate"):
                return "cross-site request refused"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        why = self.refusal(scope)
        if why is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": why[:120]})
            return
        await _send_json(send, 403, why, "Origin")
