"""Native REST API: jobs (any JobSpec kind), their events (Server-Sent Events and WebSocket), cancel,
result download, uploads, models, health.

Events follow the SSE format of the HTML Living Standard (`id:` = the event's sequence number in the
job's durable log, so a client that reconnects with `Last-Event-ID` misses nothing). Every route is
`def` (run in the threadpool) or awaits only non-blocking work: no model or image work runs on the
event loop.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ... import __version__
from ...core.artifacts import extension_for
from ...core.errors import InputError, InputTooLargeError, ToonboothError
from ...core.events import JobEvent
from ...core.media import media_fields
from ...core.specs import job_kinds, parse_job_spec
from ...models.cache import CacheStats
from ...runtime.queue_base import JobRecord
from ..auth import current_user, websocket_user
from ..deps import ApiState, api_state

router = APIRouter()
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_SPEC_CHARS = 200_000


class JobList(BaseModel):
    jobs: list[JobRecord]
    offset: int
    limit: int


class UploadResult(BaseModel):
    ref: str = Field(description="`blob:<sha256>`: use it as an image field of a JobSpec.")
    size: int


class ModelInfo(BaseModel):
    name: str
    title: str
    kind: str
    arch: str
    layout: str
    source: str
    inpainting: bool
    usable: bool
    refused: str | None = None
    mine: bool = Field(description="A model of the caller's own (trained styles), not shared.")


class Health(BaseModel):
    status: str
    version: str
    queued: int
    running: int
    runners: int


class Status(Health):
    kinds: list[str] = Field(description="Job kinds this server runs.")
    model_families: list[str] = Field(description="Model families it can find and load.")
    model_cache: list[CacheStats] = Field(description="Loaded-model cache of each runner: items, bytes, hits, loads, evictions.")


def event_json(event: JobEvent) -> dict[str, Any]:
    """An event as JSON; a progress preview (PNG bytes) becomes base64."""
    data = event.model_dump(mode="python", exclude={"preview_png"})
    preview = getattr(event, "preview_png", None)
    if preview:
        data["preview_png"] = base64.b64encode(preview).decode("ascii")
    return data


# --------------------------------------------------------------------------------------------------
# submitting
# --------------------------------------------------------------------------------------------------


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Put a value at a spec path like `image`, `init_images.0`, `controlnet_units.1.image`."""
    parts = dotted.split(".")
    if not dotted or any(not p for p in parts) or len(parts) > 6:
        raise InputError(
            dotted or "file", f"a file field must be named by its spec path, got {dotted!r}", dotted
        )
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        nxt: Any = value if last else ([] if parts[i + 1].isdigit() else {})
        if isinstance(node, list):
            if not part.isdigit():
                raise InputError(dotted, f"`{part}` must be a list index", dotted)
            idx = int(part)
            if idx < len(node):
                if last:
                    node[idx] = value
                node = node[idx]
            elif idx == len(node):
                node.append(nxt)
                node = node[idx]
            else:
                raise InputError(dotted, f"list index {idx} skips entries (the list has {len(node)})", dotted)
        elif isinstance(node, dict):
            if last or part not in node or node[part] is None:
                node[part] = nxt
            node = node[part]
        else:
            raise InputError(dotted, f"cannot place a file under `{part}`", dotted)


async def _spec_from_request(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=16, max_fields=64)
        raw = form.get("spec")
        if raw is None:
            raise InputError("spec", "multipart jobs need a `spec` field holding the JobSpec JSON", None)
        if not isinstance(raw, str):
            raw = (await raw.read()).decode("utf-8", "replace")
        data = json_object(raw, "spec")
        for key, item in form.multi_items():
            if key == "spec":
                continue
            if isinstance(item, str):
                raise InputError(
                    key, "extra multipart fields must be files (images, recordings) named by their spec path", item
                )
            content = await item.read()
            _set_dotted(data, key, base64.b64encode(content).decode("ascii"))
        return data
    if ctype not in ("application/json", ""):
        raise InputError(
            "content-type", f"send application/json or multipart/form-data, got {ctype!r}", ctype
        )
    body = await request.body()
    return json_object(body.decode("utf-8", "replace"), "body")


MAX_JSON_DEPTH = 32


def _depth_ok(text: str, limit: int) -> bool:
    """Whether brackets nest at most `limit` deep (counted outside strings), without parsing."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def check_spec_size(spec: Any, field: str = "body") -> None:
    """The spec as it will be stored (inline images and recordings become `blob:` refs) must stay under
    MAX_SPEC_CHARS: long prompts and captions are fine, megabytes of text are not (413 naming the field)."""
    data = spec.model_dump(mode="json")
    inline = sum(len(v) for _, _, v in media_fields(type(spec), data) if not v.startswith("blob:"))
    size = len(spec.model_dump_json()) - inline
    if size > MAX_SPEC_CHARS:
        raise InputTooLargeError(
            field, f"the job spec holds {size:,} characters besides its media, over the limit of {MAX_SPEC_CHARS:,}",
            size,
        )  # fmt: skip


def json_object(text: str, field: str, what: str = "a JobSpec") -> dict[str, Any]:
    """Parse a request's JSON object; errors name the field (shared by the jobs and trainings routes). JSON
    nested deeper than MAX_JSON_DEPTH is refused before parsing."""
    if not _depth_ok(text, MAX_JSON_DEPTH):
        raise InputError(field, f"the JSON nests deeper than {MAX_JSON_DEPTH} levels", None)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(field, f"not valid JSON ({exc})", None) from None
    if not isinstance(data, dict):
        raise InputError(field, f"{what} must be a JSON object, got {type(data).__name__}", None)
    return data


@router.post(
    "/v1/jobs",
    response_model=JobRecord,
    status_code=201,
    tags=["jobs"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {"spec": {"type": "string", "description": "JobSpec JSON"}},
                        "additionalProperties": {"type": "string", "format": "binary"},
                        "description": "Image files are named by their spec path: `image`, `init_images.0`, ...",
                    }
                },
            },
        }
    },
)
async def create_job(
    request: Request, state: ApiState = Depends(api_state), user: str = Depends(current_user)
):
    """Queue a job of any kind (`kind`: avatar, generate, ...). Images: `blob:` refs from `/v1/uploads`,
    base64 / data URLs inline, or multipart files named by their spec path. Answers 201 with the job."""
    data = await _spec_from_request(request)
    spec = await run_in_threadpool(parse_job_spec, data)
    check_spec_size(spec)
    # every kind's engine refuses unknown model / sampler / LoRA names here (422), not when it runs
    return await run_in_threadpool(state.service.submit, spec, user)


@router.post("/v1/uploads", response_model=UploadResult, status_code=201, tags=["jobs"])
def upload(
    file: UploadFile = File(..., description="An image (PNG, JPEG, WebP, BMP, GIF) or, with kind=audio, a "
                        "recording (wav, mp3, ogg, webm/opus, m4a/aac, flac)."),
    kind: Literal["image", "audio"] = Query("image", description="What the file is: image or audio."),
    state: ApiState = Depends(api_state),
    user: str = Depends(current_user),
) -> UploadResult:
    """Store an upload for later jobs, validated by its decoder (format; bytes, pixels or duration limits);
    only its owner can use it."""
    limit = state.settings.max_audio_bytes if kind == "audio" else state.settings.max_upload_bytes
    data = file.file.read(limit + 1)
    ref = state.service.put_upload(data, user, field="file", kind=kind)
    return UploadResult(ref=ref, size=len(data))


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


@router.get("/v1/jobs", response_model=JobList, tags=["jobs"])
def list_jobs(
    offset: int = Query(0, ge=0),
    limit: int = Query(20, ge=1, le=200),
    kind: str | None = Query(None, description=f"One of: {', '.join(job_kinds())}"),
    state: ApiState = Depends(api_state),
    user: str = Depends(current_user),
) -> JobList:
    """My jobs, newest first."""
    if kind is not None and kind not in job_kinds():
        raise InputError("kind", f"unknown job kind {kind!r}; known: {', '.join(job_kinds())}", kind)
    return JobList(
        jobs=state.service.list(user, offset=offset, limit=limit, kind=kind), offset=offset, limit=limit
    )


@router.get("/v1/jobs/{job_id}", response_model=JobRecord, tags=["jobs"])
def get_job(
    job_id: str, state: ApiState = Depends(api_state), user: str = Depends(current_user)
) -> JobRecord:
    return state.service.get(job_id, user)


@router.delete("/v1/jobs/{job_id}", response_model=JobRecord, tags=["jobs"])
def cancel_job(
    job_id: str, state: ApiState = Depends(api_state), user: str = Depends(current_user)
) -> JobRecord:
    """Cancel: a queued job at once, a running one at its next step (`cancel_requested` meanwhile)."""
    return state.service.cancel(job_id, user)


@router.get(
    "/v1/jobs/{job_id}/outputs/{name}",
    tags=["jobs"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "video/mp4": {}, "image/webp": {}, "image/gif": {}},
                     "description": "The result: a PNG (with A1111 `parameters`), an MP4, an animated sticker, ..."}},
)  # fmt: skip
def download_output(
    job_id: str, name: str, state: ApiState = Depends(api_state), user: str = Depends(current_user)
) -> Response:
    """Download one result by its output name (see the job's `output.outputs`), with its media type."""
    out, data = state.service.read_output_with_type(job_id, user, name)
    filename = _SAFE_NAME.sub("_", f"{job_id[:32]}-{name[:64]}") + extension_for(out.media_type)
    return Response(
        data, media_type=out.media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


class DownloadLink(BaseModel):
    url: str = Field(description="Where to GET the result: a presigned object-store URL, or this API's path.")
    media_type: str
    filename: str
    expires_s: int | None = Field(None, description="Seconds the presigned URL stays valid; None for API paths.")


@router.get("/v1/jobs/{job_id}/outputs/{name}/link", response_model=DownloadLink, tags=["jobs"])
def output_link(
    job_id: str, name: str, state: ApiState = Depends(api_state), user: str = Depends(current_user)
) -> DownloadLink:
    """A download link for one result: with S3 storage a presigned URL (the client fetches the object
    directly, with its content type and file name); with local storage the API's download path."""
    out = state.service.output_ref(job_id, user, name)
    filename = _SAFE_NAME.sub("_", f"{job_id[:32]}-{name[:64]}") + extension_for(out.media_type)
    expires = 3600
    url = state.service.storage.presigned_url(out.ref, filename=filename, content_type=out.media_type, expires_s=expires)
    if url is None:
        return DownloadLink(url=f"/v1/jobs/{job_id}/outputs/{name}", media_type=out.media_type, filename=filename)
    return DownloadLink(url=url, media_type=out.media_type, filename=filename, expires_s=expires)


def _after(last_event_id: str | None, after: int | None) -> int:
    if after is not None:
        return after
    if last_event_id:
        try:
            return max(0, int(last_event_id.strip()))
        except ValueError:
            raise InputError(
                "Last-Event-ID", f"must be an event id (integer), got {last_event_id[:40]!r}"
            ) from None
    return 0


@router.get(
    "/v1/jobs/{job_id}/events",
    tags=["jobs"],
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events until the end."}
    },
)
async def job_events(
    job_id: str,
    request: Request,
    after: int | None = Query(None, ge=0, description="Only events after this sequence number."),
    state: ApiState = Depends(api_state),
    user: str = Depends(current_user),
):
    """Server-Sent Events: `queued`, `started`, `progress`..., then `completed` / `failed` / `canceled`.
    Each has `id:` = its sequence number; reconnect with `Last-Event-ID` (or `?after=`) to resume."""
    start = _after(request.headers.get("last-event-id"), after)
    await run_in_threadpool(state.service.get, job_id, user)  # 404 before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        async for seq, event in state.service.aevents(job_id, user, after=start):
            payload = json.dumps(event_json(event), default=str)
            yield f"id: {seq}\nevent: {event.type}\ndata: {payload}\n\n".encode()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.websocket("/v1/jobs/{job_id}/ws")
async def job_websocket(websocket: WebSocket, job_id: str, after: int = 0):
    """The same events as `/events`, as JSON messages `{"seq": n, "event": {...}}`; closes after the last."""
    state: ApiState = websocket.app.state.api
    try:
        user = await run_in_threadpool(websocket_user, websocket)
        await run_in_threadpool(state.service.get, job_id, user)
    except ToonboothError as exc:
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    await websocket.accept()
    try:
        async for seq, event in state.service.aevents(job_id, user, after=max(0, after)):
            await websocket.send_text(json.dumps({"seq": seq, "event": event_json(event)}, default=str))
        await websocket.close(code=1000)
    except WebSocketDisconnect:
        return


# --------------------------------------------------------------------------------------------------
# models and health
# --------------------------------------------------------------------------------------------------


@router.get("/v1/models", response_model=list[ModelInfo], tags=["models"])
def list_models(
    kind: str | None = Query(None, description="checkpoint | controlnet | lora | embedding"),
    state: ApiState = Depends(api_state),
    user: str = Depends(current_user),
) -> list[ModelInfo]:
    """Models visible to me (shared ones and my own), refused files with the reason."""
    entries = state.service.models.registry.list(kind=kind, owner=user, include_refused=True)
    return [
        ModelInfo(name=e.name, title=e.title, kind=e.kind, arch=e.arch, layout=e.layout, source=e.source,
                  inpainting=e.inpainting, usable=e.usable, refused=e.refused, mine=e.owner is not None)
        for e in entries
    ]  # fmt: skip


@router.post("/v1/models/rescan", tags=["models"])
def rescan_models(state: ApiState = Depends(api_state), user: str = Depends(current_user)) -> dict[str, int]:
    """Scan the models folders again (after adding files)."""
    entries = state.service.models.registry.scan()
    return {"models": len([e for e in entries if e.owner is None or e.owner == user])}


@router.get("/healthz", response_model=Health, tags=["service"])
def healthz(state: ApiState = Depends(api_state)) -> Health:
    """Liveness and queue depth (no authentication)."""
    service = state.service
    return Health(
        status="ok", version=__version__, queued=service.queued_count(), running=len(service.running()),
        runners=len(service.runners),
    )  # fmt: skip


@router.get("/v1/status", response_model=Status, tags=["service"])
def status(state: ApiState = Depends(api_state), user: str = Depends(current_user)) -> Status:
    """Queue depth, job kinds, model families, and each runner's model cache (what is loaded, its bytes,
    hits / loads / evictions)."""
    service = state.service
    caches = [r.models.cache.stats() for r in service.runners] or [service.models.cache.stats()]
    return Status(
        status="ok", version=__version__, queued=service.queued_count(), running=len(service.running()),
        runners=len(service.runners), kinds=sorted(service.engines), model_families=service.models.families.kinds(),
        model_cache=caches,
    )  # fmt: skip


class WsTicket(BaseModel):
    ticket: str = Field(description="Use as `?ticket=` on /v1/jobs/{id}/ws (instead of a token in the URL).")
    expires_at: int = Field(description="Unix time after which it is refused.")


@router.post("/v1/ws-ticket", response_model=WsTicket, tags=["jobs"])
def ws_ticket(request: Request, user: str = Depends(current_user)) -> WsTicket:
    """A short-lived ticket for a browser's WebSocket (browsers cannot send an Authorization header there, and
    a token in a URL would land in access logs)."""
    ticket, expiry = request.app.state.tickets.issue(user)
    return WsTicket(ticket=ticket, expires_at=expiry)


class DeletedData(BaseModel):
    blobs_deleted: int = Field(description="Stored files (uploads, results) removed.")


@router.delete("/v1/me/data", response_model=DeletedData, tags=["jobs"])
def delete_my_data(state: ApiState = Depends(api_state), user: str = Depends(current_user)) -> DeletedData:
    """Delete everything of mine: my unfinished jobs are canceled, then my jobs, uploads and results are removed
    (a file another user also uploaded stays theirs). Trained styles are deleted with `DELETE /v1/styles/{name}`."""
    return DeletedData(blobs_deleted=state.service.delete_user_data(user))
