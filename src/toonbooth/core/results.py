"""Typed job outputs, as stored in the queue row and returned by the API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class OutputRef(BaseModel):
    name: str = Field(description="Role of the image: avatar, pass1, background, character, mask, ...")
    ref: str = Field(description="Stored blob reference `blob:<sha256>`.")
    media_type: str = "image/png"
    width: int | None = None
    height: int | None = None


class JobOutput(BaseModel):
    outputs: list[OutputRef] = Field(default_factory=list)
    backend: str = Field(description="Which backend ran: neural or classic.")
    backend_reason: str = ""
    warnings: list[str] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)

    def output(self, name: str) -> OutputRef:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(f"no output named {name!r}; have {[o.name for o in self.outputs]}")
