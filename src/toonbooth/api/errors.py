"""Error answers of the HTTP API: one JSON shape `{"detail": message, "field": name | null}`.

`ToonboothError` subclasses carry their HTTP status (`core/errors.py`); FastAPI / pydantic request
validation becomes 422 naming the field (the A1111 clients get the same shape, which is FastAPI's own
`detail` key, so their error display keeps working). Anything unexpected is a 500 with a generic
message and a server log line (never a traceback to the client).
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import AuthError, InputError, LimitError, ToonboothError
from ..core.specs import input_error_from_validation

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """What every refused request gets back."""

    detail: str = Field(description="What was wrong, naming the field and the value received.")
    field: str | None = Field(None, description="The request field at fault (dotted path), if one is.")


def error_response(status: int, detail: str, field: str | None = None, headers: dict[str, str] | None = None):
    return JSONResponse(
        ErrorBody(detail=detail, field=field).model_dump(), status_code=status, headers=headers
    )


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "form", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_detail(errors: list[dict[str, Any]]) -> tuple[str, str]:
    """(field, message) of the first error of a FastAPI / pydantic validation error list."""
    err = errors[0] if errors else {}
    field = _field_of(tuple(err.get("loc", ())))
    value = err.get("input")
    if isinstance(value, (dict, list)):
        shown = type(value).__name__
    else:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:80] + "..."
    msg = err.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return field, f"`{field}`: {msg}, got {shown}{more}"


RETRY_AFTER_S = 10


def storage_error(exc: OSError) -> tuple[int, str]:
    """(status, message) for a disk fault: full -> 507, read-only -> 503, anything else -> 500; the message
    names the condition, never a server path."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return 507, "the server's storage is full; try again later (the operator has been told in the log)"
    if exc.errno == errno.EROFS:
        return 503, "the server's storage is read-only at the moment; try again later"
    return 500, f"internal storage error ({type(exc).__name__}); see the server log"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ToonboothError)
    async def _toonbooth(_request: Request, exc: ToonboothError):
        field = exc.field if isinstance(exc, InputError) else None
        headers: dict[str, str] | None = None
        if isinstance(exc, AuthError):
            headers = {"WWW-Authenticate": 'Bearer, Basic realm="toonbooth"'}
        elif isinstance(exc, LimitError):
            headers = {"Retry-After": str(RETRY_AFTER_S)}
        return error_response(exc.http_status, str(exc), field, headers)

    @app.exception_handler(RecursionError)
    async def _too_deep(_request: Request, _exc: RecursionError):
        return error_response(422, "`body`: the JSON is nested too deeply", "body")

    @app.exception_handler(OSError)
    async def _storage(request: Request, exc: OSError):
        status, detail = storage_error(exc)
        log.error("storage error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return error_response(status, detail, None, {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_request: Request, exc: RequestValidationError):
        field, detail = validation_detail(list(exc.errors()))
        return error_response(422, detail, field)

    @app.exception_handler(ValidationError)
    async def _pydantic_validation(_request: Request, exc: ValidationError):
        err = input_error_from_validation(exc)
        return error_response(422, str(err), err.field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")
