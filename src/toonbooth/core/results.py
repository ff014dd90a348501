"""Typed job outputs, as stored in the queue row and returned by the API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class OutputRef(BaseModel):
    name: str = Field(description="Role of the result: avatar, pass1, composite, mask, video, sticker, ...")
    ref: str = Field(description="Stored blob reference `blob:<sha256>`.")
    media_type: str = Field("image/png", description="image/png, video/mp4, image/webp, image/gif, ...")
    primary: bool = Field(False, description="The job's main result (declared by its studio).")
    width: int | None = None
    height: int | None = None
    frames: int | None = Field(None, description="Frames of a video or animated image.")
    duration_s: float | None = Field(None, description="Length of a video or animated image in seconds.")


class JobOutput(BaseModel):
    outputs: list[OutputRef] = Field(default_factory=list)
    backend: str = Field(description="Which backend ran: neural or classic.")
    backend_reason: str = ""
    warnings: list[str] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)

    def primary(self) -> OutputRef | None:
        """The studio's main result (the first output of older records, which had no flag)."""
        return next((o for o in self.outputs if o.primary), self.outputs[0] if self.outputs else None)

    def output(self, name: str) -> OutputRef:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(f"no output named {name!r}; have {[o.name for o in self.outputs]}")
