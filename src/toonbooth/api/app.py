"""The FastAPI application: native REST API (`/v1/*`), the AUTOMATIC1111-compatible API (`/sdapi/v1/*`,
`/controlnet/*`), the web UI (Gradio, mounted at `/ui`), OpenAPI at `/docs`.

`create_app(settings)` builds everything on the embedded defaults (SQLite queue, local or S3 storage,
runner threads in this process); pass a `Service` to share one (tests, embedding).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse
from pydantic import TypeAdapter

from .. import __version__
from ..core.errors import AuthError
from ..core.logs import install_log_filters
from ..core.settings import Settings
from ..core.specs import JobSpec
from .a1111_options import OptionsStore
from .auth import LOCAL_USER, AuthPolicy, TicketSigner
from .deps import ApiState
from .errors import ErrorBody, install_error_handlers
from .middleware import BodyLimitMiddleware, OriginGuardMiddleware
from .routes import a1111, jobs
from .routes import styles as styles_routes  # issue 5: trainings and styles routes

log = logging.getLogger(__name__)
UI_PATH = "/ui"
BODY_SLACK_BYTES = 1024 * 1024  # JSON fields around the images


def max_body_bytes(settings: Settings, images: int = 3) -> int:
    """Largest request body: the `max_request_bytes` setting, else `images` images of `max_upload_bytes`
    as base64 (4/3) plus 1 MiB."""
    if settings.max_request_bytes is not None:
        return settings.max_request_bytes
    return images * (settings.max_upload_bytes * 4 // 3 + 4) + BODY_SLACK_BYTES


def make_service(settings: Settings, start_runners: bool = False):
    """The embedded service, with a model manager that never takes a user-typed name as a server path."""
    from ..runtime.families import model_manager
    from ..runtime.service import Service

    return Service(settings, models=model_manager(settings, allow_paths=False), start_runners=start_runners)


def _document_errors(schema: dict[str, Any]) -> None:
    """Document the error answers as they are sent (`errors.ErrorBody`): FastAPI's default 422 schema
    (`HTTPValidationError`, a list) is not what `errors.install_error_handlers` answers, and the 4xx
    answers every route can give (401, 404, 409, 413, ...) were undocumented."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {"description": "Invalid request (names the field)", "content": body}
            responses.setdefault("4XX", {"description": "Refused request", "content": body})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def _install_openapi(app: FastAPI) -> None:
    """OpenAPI with the JobSpec union (every job kind) as the `POST /v1/jobs` body schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        spec_schema = TypeAdapter(JobSpec).json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(spec_schema.pop("$defs", {}))
        components["JobSpec"] = spec_schema
        _document_errors(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    settings: Settings,
    service: Any | None = None,
    *,
    allow_anonymous: bool = False,
    allowed_origins: Iterable[str] = (),
    mount_ui: bool = True,
) -> FastAPI:
    """Build the server app.

    `service`: a `runtime.service.Service` to use (its lifecycle stays the caller's); None = build
    one from `settings` and start / stop its runners with the app. `allow_anonymous`: local
    single-user mode (only for a server bound to loopback, and only while no token exists).
    `allowed_origins`: other browser origins allowed to call the API (CORS); none by default."""
    owned = service is None
    svc = make_service(settings) if owned else service
    origins = [o.rstrip("/") for o in allowed_origins]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if owned:
            svc.start()
        try:
            yield
        finally:
            if owned:
                svc.close()

    app = FastAPI(
        title="toonbooth",
        version=__version__,
        description="Photos to personal characters. Native job API (`/v1`), AUTOMATIC1111-compatible API "
        "(`/sdapi/v1`, `/controlnet`), web UI at `/ui`. Authenticate with `Authorization: Bearer <token>` "
        "(`toonbooth users add NAME`); A1111 routes also take HTTP Basic `user:token`.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _install_offline_docs(app)
    policy = AuthPolicy(svc.users, allow_anonymous=allow_anonymous)
    options = OptionsStore(settings.resolved_data_dir / "a1111_options.json")
    app.state.api = ApiState(settings=settings, service=svc, auth=policy, options=options)
    app.state.begin_shutdown = svc.begin_stop if owned else (lambda: None)
    app.state.auth = policy
    secret = settings.ticket_secret.get_secret_value().encode() if settings.ticket_secret else secrets.token_bytes(32)
    app.state.tickets = TicketSigner(secret)
    install_error_handlers(app)
    app.include_router(jobs.router)
    app.include_router(a1111.router)
    app.include_router(styles_routes.router)  # issue 5: trainings and styles routes
    _install_openapi(app)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(UI_PATH + "/" if mount_ui else "/docs")

    if mount_ui:
        _mount_ui(app, settings, svc, policy)
    # outermost last: origin guard, then CORS for configured origins, then the body limit
    upload_limit = max(settings.max_upload_bytes, settings.max_audio_bytes) + 256 * 1024  # + multipart framing
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=max_body_bytes(settings), read_timeout_s=settings.request_body_timeout_s,
        path_limits={"/v1/uploads": upload_limit}, max_large_bodies=settings.max_concurrent_uploads,
    )  # fmt: skip
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials=False,
        )
    app.add_middleware(OriginGuardMiddleware, allowed_origins=origins)
    return app


DOCS_ASSETS = "/docs-assets"


def _install_offline_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI 5) and `/redoc`, served from the assets inside the `fastapi-offline` wheel (no CDN),
    so the API docs work on an air-gapped server."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title="toonbooth API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )  # fmt: skip

    @app.get("/redoc", include_in_schema=False)
    def redoc():
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json", title="toonbooth API",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js", redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )  # fmt: skip


def guarded_h11(header_timeout_s: float):
    """uvicorn's h11 protocol with a request-header deadline: a connection whose request line and headers
    have not all arrived `header_timeout_s` after it opened (or after the previous response) is closed —
    trickling bytes (slowloris) no longer keeps it open. Bodies have their own read timeout (the body-limit
    middleware)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._tb_cycle = None
            self._tb_timer = self.loop.call_later(header_timeout_s, self._tb_headers_late)

        def _tb_headers_late(self) -> None:
            self._tb_timer = None
            if self.cycle is self._tb_cycle and not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not self._tb_cycle and self._tb_timer is not None:  # headers of a request arrived
                self._tb_timer.cancel()
                self._tb_timer = None
                self._tb_cycle = self.cycle

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._tb_timer is None and not self.transport.is_closing():
                self._tb_cycle = self.cycle
                self._tb_timer = self.loop.call_later(header_timeout_s, self._tb_headers_late)

        def connection_lost(self, exc) -> None:  # type: ignore[override]
            if self._tb_timer is not None:
                self._tb_timer.cancel()
                self._tb_timer = None
            super().connection_lost(exc)

    return GuardedH11Protocol


def run_server(
    app: FastAPI, *, host: str, port: int, log_level: str = "info", timeout_graceful_shutdown: float = 10
) -> None:
    """Serve `app` with uvicorn until SIGINT / SIGTERM (`docker stop`, systemd).

    On shutdown the app's service is told to stop first (`Service.begin_stop`: the running job is put
    back in the queue without counting an attempt, event streams end) and only then does uvicorn wait
    for open connections. Plain `uvicorn.run` waits for connections first, so one open SSE stream or
    waiting A1111 request held the shutdown for the whole grace time, long enough for `docker stop`
    (10 s) to SIGKILL the process before the job was put back."""
    import uvicorn

    begin_shutdown = getattr(app.state, "begin_shutdown", lambda: None)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            try:
                begin_shutdown()
            except Exception:  # stopping must go on whatever the service says
                log.exception("could not begin stopping the service")
            await super().shutdown(sockets=sockets)

    api = getattr(app.state, "api", None)
    settings: Settings | None = api.settings if api is not None else None
    header_timeout = settings.request_header_timeout_s if settings is not None else 10.0
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=timeout_graceful_shutdown,
        http=guarded_h11(header_timeout), timeout_keep_alive=5,
        limit_concurrency=settings.max_connections if settings is not None else None,
        h11_max_incomplete_event_size=64 * 1024,
    )  # fmt: skip
    install_log_filters()
    server = Server(config)
    server.run()
    if not server.started:  # e.g. the port is taken: fail like `uvicorn.run` does
        raise SystemExit(3)


def _mount_ui(app: FastAPI, settings: Settings, svc: Any, policy: AuthPolicy) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: never phone home
    import gradio as gr

    from ..ui.app import build_ui

    def ui_user(username: str | None) -> str:
        if username:
            return username
        if policy.anonymous_active():
            return LOCAL_USER
        raise AuthError("sign in again: this server now requires a token (a user was added)")

    blocks = build_ui(svc, settings, user_for=ui_user)
    auth = None if policy.anonymous_active() else policy.check_password
    gr.mount_gradio_app(
        app,
        blocks,
        path=UI_PATH,
        auth=auth,
        auth_message="Sign in with your user name and API token (`toonbooth users add NAME`).",
        max_file_size=settings.max_upload_bytes,
        ssr_mode=False,
        footer_links=[],
    )
