"""Typed job events. Progress and cancel ride one per-step callback; events leave to pluggable sinks."""

from __future__ import annotations

import time
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field


class _Event(BaseModel):
    job_id: str = ""
    at: float = Field(default_factory=time.time, description="Unix time of the event.")


class QueuedEvent(_Event):
    type: Literal["queued"] = "queued"
    position: int = 0


class StartedEvent(_Event):
    type: Literal["started"] = "started"
    backend: str | None = None


class ProgressEvent(_Event):
    type: Literal["progress"] = "progress"
    percent: float = Field(ge=0.0, le=100.0, description="0..100 over the whole job (all passes).")
    step: int = Field(ge=0)
    total: int = Field(ge=0)
    stage: str = ""
    preview_png: bytes | None = Field(None, description="Optional small preview image (PNG bytes).")


class LogEvent(_Event):
    type: Literal["log"] = "log"
    level: Literal["info", "warning"] = "info"
    message: str


class CompletedEvent(_Event):
    type: Literal["completed"] = "completed"
    outputs: list[str] = Field(default_factory=list, description="Stored result references.")


class FailedEvent(_Event):
    type: Literal["failed"] = "failed"
    message: str
    error_type: str = ""


class CanceledEvent(_Event):
    type: Literal["canceled"] = "canceled"


JobEvent = Annotated[
    Union[QueuedEvent, StartedEvent, ProgressEvent, LogEvent, CompletedEvent, FailedEvent, CanceledEvent],
    Field(discriminator="type"),
]
