"""Who is calling: API tokens (`Authorization: Bearer tb_...`), HTTP Basic like AUTOMATIC1111's
`--api-auth` (user name + token as the password, A1111 routes and the web UI), and the local
single-user mode.

Local mode (no token needed, every request acts as the user `local`) is on only when the server was
started bound to a loopback address *and* no token exists yet; `toonbooth serve` refuses to bind
anywhere else without users. In local mode the `Host` header must be a loopback name too, so a web
page cannot reach the server through DNS rebinding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import time

from fastapi import Request, WebSocket

from ..core.errors import AuthError

LOCAL_USER = "local"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost (a `Host` header may carry a port; IPv6 in brackets)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class AuthPolicy:
    """Resolves a request's credentials to a user name; `users` is `runtime.users.Users`."""

    def __init__(self, users, allow_anonymous: bool):
        self.users = users
        self.allow_anonymous = allow_anonymous

    def anonymous_active(self) -> bool:
        """Local mode: asked for at start, and still no token exists (a user added later turns it off)."""
        return self.allow_anonymous and not self.users.has_users()

    def resolve(self, authorization: str | None, host: str | None, *, allow_basic: bool) -> str:
        """The user the `Authorization` header names; AuthError (401) when it is missing or wrong."""
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            scheme = scheme.lower()
            value = value.strip()
            if scheme == "bearer":
                user = self.users.authenticate(value)
                if user is None:
                    raise AuthError(
                        "the bearer token is not valid (create one with `toonbooth users add NAME`)"
                    )
                return user
            if scheme == "basic" and allow_basic:
                name, password = _decode_basic(value)
                user = self.users.authenticate_basic(name, password)
                if user is None:
                    raise AuthError("HTTP Basic: wrong user name or token")
                return user
            allowed = "Bearer or Basic" if allow_basic else "Bearer"
            raise AuthError(f"unsupported Authorization scheme {scheme!r}; use {allowed}")
        if self.anonymous_active():
            if host is not None and not is_loopback_host(host):
                raise AuthError(
                    f"local mode answers only requests addressed to a loopback host, not {host[:80]!r}"
                )
            return LOCAL_USER
        raise AuthError("authentication required: send `Authorization: Bearer <token>`")

    def check_password(self, name: str, password: str) -> bool:
        """For the web UI's login form (Gradio `auth=`): user name + one of the user's tokens."""
        return self.users.authenticate_basic(name, password) is not None


def _decode_basic(value: str) -> tuple[str, str]:
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AuthError("HTTP Basic credentials are not valid base64 of `user:token`") from None
    name, sep, password = text.partition(":")
    if not sep:
        raise AuthError("HTTP Basic credentials must be `user:token`")
    return name, password


def current_user(request: Request) -> str:
    """Dependency of the native routes: Bearer token (or local mode)."""
    policy: AuthPolicy = request.app.state.auth
    return policy.resolve(
        request.headers.get("authorization"), request.headers.get("host"), allow_basic=False
    )


def current_user_a1111(request: Request) -> str:
    """Dependency of the AUTOMATIC1111 routes: Bearer, or HTTP Basic like `--api-auth user:token`."""
    policy: AuthPolicy = request.app.state.auth
    return policy.resolve(request.headers.get("authorization"), request.headers.get("host"), allow_basic=True)


class TicketSigner:
    """Short-lived WebSocket tickets (browsers cannot set headers on a WebSocket, and a token in a URL ends up in
    access logs): `POST /v1/ws-ticket` gives the authenticated caller `<user>.<expiry>.<hmac>`, good for
    `ttl_s` seconds, for `?ticket=` on the WebSocket. Stateless (an HMAC with the server's secret), so any API
    process that shares `ticket_secret` accepts it."""

    def __init__(self, secret: bytes, ttl_s: float = 60.0):
        self.secret = secret
        self.ttl_s = ttl_s

    def _mac(self, body: str) -> str:
        return hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()[:32]

    def issue(self, user: str, now: float | None = None) -> tuple[str, int]:
        expiry = int((now if now is not None else time.time()) + self.ttl_s)
        body = f"{base64.urlsafe_b64encode(user.encode()).decode().rstrip('=')}.{expiry}"
        return f"{body}.{self._mac(body)}", expiry

    def check(self, ticket: str, now: float | None = None) -> str:
        parts = ticket.split(".")
        if len(parts) != 3:
            raise AuthError("the WebSocket ticket is malformed; get one from POST /v1/ws-ticket")
        body = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._mac(body), parts[2]):
            raise AuthError("the WebSocket ticket is not valid; get one from POST /v1/ws-ticket")
        try:
            expiry = int(parts[1])
            user = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)).decode()
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise AuthError("the WebSocket ticket is malformed; get one from POST /v1/ws-ticket") from None
        if (now if now is not None else time.time()) > expiry:
            raise AuthError("the WebSocket ticket has expired; get a new one from POST /v1/ws-ticket")
        return user


def websocket_user(websocket: WebSocket) -> str:
    """WebSockets: the Authorization header, a `?ticket=` from POST /v1/ws-ticket (preferred from browsers),
    or `?token=` (accepted; redacted from every log line)."""
    policy: AuthPolicy = websocket.app.state.auth
    header = websocket.headers.get("authorization")
    ticket = websocket.query_params.get("ticket")
    if not header and ticket:
        return websocket.app.state.tickets.check(ticket)
    token = websocket.query_params.get("token")
    if not header and token:
        header = f"Bearer {token}"
    return policy.resolve(header, websocket.headers.get("host"), allow_basic=True)
