"""Shared pieces of every job spec: media references (re-exported from `core.media`), the spec base class,
LoRA references."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


# control characters refused in any text of a spec (line breaks and tab are fine: prompts have lines)
_CONTROL = {chr(c) for c in range(32)} - {"\n", "\r", "\t"} | {chr(127)}


def check_text(value: str) -> str:
    """Text a spec may hold: valid Unicode (no lone surrogates: they cannot be stored as UTF-8) and no control
    characters but line breaks and tab."""
    for i, ch in enumerate(value):
        if "\ud800" <= ch <= "\udfff":
            raise ValueError(f"contains a lone surrogate (U+{ord(ch):04X}) at character {i}: not valid Unicode text")
        if ch in _CONTROL:
            raise ValueError(f"contains the control character U+{ord(ch):04X} at character {i}")
    return value


def _check_texts(value: Any) -> Any:
    if isinstance(value, str):
        return check_text(value)
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_texts(key)
            _check_texts(item)
    return value


class SpecBase(BaseModel):
    """Every spec (and its nested parts): unknown fields refused, frozen, and all text valid (`check_text`) —
    a stored record always serialises, so one bad string can never break a user's job list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_text(cls, value: Any) -> Any:
        return _check_texts(value)


class LoraRef(SpecBase):
    name: str = Field(min_length=1, max_length=200, description="LoRA name in the registry (file stem).")
    weight: float = Field(1.0, ge=-4.0, le=4.0, description="Strength; 0 leaves the base model unchanged.")


