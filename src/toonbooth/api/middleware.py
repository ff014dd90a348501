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

import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.errors import InputTooLargeError


class BodyTooLargeError(InputTooLargeError):
    """The request body passed the server's limit while it was being read."""


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _send_json(send: Send, status: int, detail: str, field: str | None = None) -> None:
    body = json.dumps({"detail": detail, "field": field}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    def _reason(self, size: int | None) -> str:
        got = f"{size} bytes" if size is not None else "more"
        return f"the request body is over the server's limit of {self.max_bytes} bytes, got {got}"

    def _message(self, size: int | None) -> str:
        return f"`body`: {self._reason(size)}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _headers(scope).get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(
                    send, 400, f"`Content-Length` is not a number: {length[:40]!r}", "Content-Length"
                )
                return
            if declared > self.max_bytes:
                await _send_json(send, 413, self._message(declared), "body")
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError("body", self._reason(None), None)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await _send_json(send, 413, self._message(None), "body")


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
