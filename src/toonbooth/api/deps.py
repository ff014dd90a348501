"""What routes share: the app state (service, options, auth) and small helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from ..core import errors as errors_mod
from ..core.errors import ToonboothError
from ..core.settings import Settings
from .a1111_options import OptionsStore
from .auth import AuthPolicy


@dataclass
class ApiState:
    settings: Settings
    service: Any  # runtime.service.Service
    auth: AuthPolicy
    options: OptionsStore


def api_state(request: Request) -> ApiState:
    return request.app.state.api


class JobFailedError(ToonboothError):
    """A job ended failed; carries the HTTP status of the error that failed it."""

    def __init__(self, message: str, http_status: int):
        super().__init__(message)
        self.http_status = http_status


def job_failure(record: Any) -> JobFailedError:
    """The HTTP error for a failed job: the status of its error class (InputError 422, ...), else 500."""
    cls = getattr(errors_mod, str(record.error_type or ""), None)
    status = cls.http_status if isinstance(cls, type) and issubclass(cls, ToonboothError) else 500
    return JobFailedError(f"job {record.id} failed: {record.error or 'unknown error'}", status)
