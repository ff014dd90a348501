"""Shared pieces of every job spec: media references (re-exported from `core.media`), the spec base class,
LoRA references."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InputError
from ..media import AudioRef, ImageRef, VideoRef

__all__ = ["AudioRef", "Backend", "ImageRef", "LoraRef", "SpecBase", "VideoRef", "validate_email"]

Backend = Literal["auto", "neural", "classic"]
_EMAIL_FORBIDDEN = set("\r\n\t ,;<>\"'()[]\\")


def validate_email(value: str | None, field: str = "email") -> str | None:
    """Plain address `local@domain.tld`; no display names, no header-injection characters."""
    if value is None or value == "":
        return None
    if len(value) > 254 or any(c in _EMAIL_FORBIDDEN for c in value) or value.count("@") != 1:
        raise InputError(field, f"not a plain e-mail address: {value!r}", value)
    local, domain = value.split("@")
    if not local or "." not in domain or domain.startswith(".") or domain.endswith(".") or ".." in domain:
        raise InputError(field, f"not a plain e-mail address: {value!r}", value)
    return value


class SpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraRef(SpecBase):
    name: str = Field(min_length=1, max_length=200, description="LoRA name in the registry (file stem).")
    weight: float = Field(1.0, ge=-4.0, le=4.0, description="Strength; 0 leaves the base model unchanged.")


