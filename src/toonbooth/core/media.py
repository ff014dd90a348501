"""Media references in job specs and the byte readers every medium shares.

A spec field that takes a picture, a voice recording or a video is typed `ImageRef`, `AudioRef` or
`VideoRef`: a string that is a stored upload (`blob:<sha256>`), a `data:<type>/...;base64,` URL or raw
base64. Each carries a `MediaRef` marker in its `Annotated` metadata (and `x-toonbooth-media` in the JSON
schema), which is how the service finds every media field of any spec (`media_fields`) — never by reading
descriptions.

`read_media_bytes` turns a source (bytes, a `pathlib.Path`, base64 / a data URL, a binary file object)
into size-checked bytes without decoding them; the decoders (`core.images.load_image`,
`core.audio.load_audio`) take it from there. A `str` is never opened as a path.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import typing
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, Field

from .errors import InputError, InputTooLargeError

MediaKind = Literal["image", "audio", "video"]


@dataclass(frozen=True)
class MediaRef:
    """Marker of a media field in a spec (in `Annotated[str, MediaRef(...), Field(...)]`)."""

    kind: MediaKind


_REF_TEXT = (
    "`blob:<sha256>` of a stored upload, a `data:{kind}/...;base64,` URL, or raw base64. Local file paths are "
    "accepted only by the CLI, which stores the file first."
)

ImageRef = Annotated[
    str,
    MediaRef("image"),
    Field(min_length=1, description="An input image: " + _REF_TEXT.format(kind="image"),
          json_schema_extra={"x-toonbooth-media": "image"}),
]  # fmt: skip
AudioRef = Annotated[
    str,
    MediaRef("audio"),
    Field(min_length=1, description="An input recording (wav, mp3, ogg, webm/opus, m4a/aac, flac): "
          + _REF_TEXT.format(kind="audio"), json_schema_extra={"x-toonbooth-media": "audio"}),
]  # fmt: skip
VideoRef = Annotated[
    str,
    MediaRef("video"),
    Field(min_length=1, description="An input video: " + _REF_TEXT.format(kind="video"),
          json_schema_extra={"x-toonbooth-media": "video"}),
]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Finding media fields in a spec
# --------------------------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def _marker(annotation: Any, metadata: list[Any] | None = None) -> MediaKind | None:
    for item in metadata or ():
        if isinstance(item, MediaRef):
            return item.kind
    for arg in typing.get_args(annotation):
        if isinstance(arg, MediaRef):
            return arg.kind
        found = _marker(arg)
        if found is not None:
            return found
    return None


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in typing.get_args(annotation):
        found += _model_classes(arg)
    return found


def media_fields(cls: type[BaseModel], data: dict[str, Any], prefix: Path_ = ()) -> Iterator[tuple[Path_, MediaKind, str]]:
    """(path, kind, value) of every media value in a spec's JSON: top-level fields, lists of them, and
    fields of nested models (ControlNet units, ...)."""
    for name, info in cls.model_fields.items():
        value = data.get(name)
        if value is None:
            continue
        path = (*prefix, name)
        kind = _marker(info.annotation, info.metadata)
        if kind is not None:
            if isinstance(value, str):
                yield path, kind, value
            elif isinstance(value, list):
                yield from (((*path, i), kind, v) for i, v in enumerate(value) if isinstance(v, str))
            continue
        for sub in _model_classes(info.annotation):
            if isinstance(value, dict):
                yield from media_fields(sub, value, path)
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        yield from media_fields(sub, item, (*path, i))
            break


# --------------------------------------------------------------------------------------------------
# Byte readers shared by every medium
# --------------------------------------------------------------------------------------------------

_BASE64_RE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_BASE64URL_RE = re.compile(rb"[A-Za-z0-9_-]*={0,2}")
_WHITESPACE_RE = re.compile(r"\s+")
PATH_HINT = " (a string is read as base64 or a data URL, never as a file path; pass a pathlib.Path)"
_PATHLIKE_RE = re.compile(r"(~|\.{1,2})?[/\\]|[A-Za-z]:[/\\]")


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def looks_like_path(text: str) -> bool:
    text = text.strip()
    return len(text) < 1024 and (_PATHLIKE_RE.match(text) is not None or "." in text[-6:])


def short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check_bytes(size: int, *, field: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise InputTooLargeError(field, f"the file is {size:,} bytes, over the limit of {max_bytes:,} bytes", size)


def read_media_bytes(source: object, *, field: str, max_bytes: int, kind: MediaKind = "image") -> bytes:
    """The raw bytes of a media source (bytes, Path, base64 / data URL str, binary file object),
    size-checked but not decoded. A data URL must declare a `<kind>/...` media type."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        check_bytes(len(data), field=field, max_bytes=max_bytes)
        return data
    if isinstance(source, Path):
        return read_path(source, field=field, max_bytes=max_bytes, kind=kind)
    if isinstance(source, str):
        return decode_text(source, field=field, max_bytes=max_bytes, kind=kind)
    read = getattr(source, "read", None)
    if callable(read):
        chunk = read(max_bytes + 1)
        if isinstance(chunk, str):
            raise InputError(field, "the file object is open in text mode; open it in binary mode ('rb')")
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise InputError(field, f"the file object's read() returned {type(chunk).__name__}, not bytes")
        data = bytes(chunk)
        if len(data) > max_bytes:
            raise InputTooLargeError(
                field, f"the file is over the limit of {max_bytes:,} bytes (read {len(data):,} and more)"
            )
        return data
    raise InputError(
        field,
        f"expected {kind} bytes, a pathlib.Path, a base64 string / data URL or a binary file object, "
        f"got {type(source).__name__}",
        type(source).__name__,
    )


def read_path(path: Path, *, field: str, max_bytes: int, kind: MediaKind = "image") -> bytes:
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            check_bytes(size, field=field, max_bytes=max_bytes)
            data = fh.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise InputError(field, f"file not found: {path}", str(path)) from exc
    except IsADirectoryError as exc:
        article = "an" if kind[0] in "aeiou" else "a"
        raise InputError(field, f"{path} is a folder, not {article} {kind} file", str(path)) from exc
    except PermissionError as exc:
        raise InputError(field, f"no permission to read {path}", str(path)) from exc
    check_bytes(len(data), field=field, max_bytes=max_bytes)  # the file grew while we read it
    return data


def decode_text(text: str, *, field: str, max_bytes: int, kind: MediaKind = "image") -> bytes:
    """A str is base64 or a data URL, never a file path."""
    stripped = text.strip()
    if stripped[:5].lower() == "data:":
        return decode_data_url(stripped, field=field, max_bytes=max_bytes, kind=kind)
    return decode_base64(stripped, field=field, max_bytes=max_bytes, original=text, kind=kind)


def decode_data_url(url: str, *, field: str, max_bytes: int, kind: MediaKind = "image") -> bytes:
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise InputError(field, f"the data URL has no ',' before its data, got {short(url)!r}", short(url))
    parts = [p.strip() for p in header.split(";")]
    media_type = parts[0].lower() or "text/plain"
    if not media_type.startswith(f"{kind}/"):
        raise InputError(field, f"the data URL's media type must be {kind}/..., got {media_type!r}", short(url))
    if any(p.lower() == "base64" for p in parts[1:]):
        return decode_base64(payload, field=field, max_bytes=max_bytes, original=url, kind=kind)
    data = urllib.parse.unquote_to_bytes(payload)
    check_bytes(len(data), field=field, max_bytes=max_bytes)
    return data


def decode_base64(text: str, *, field: str, max_bytes: int, original: str, kind: MediaKind = "image") -> bytes:
    compact = _WHITESPACE_RE.sub("", text)
    if not compact:
        raise InputError(field, f"got an empty string, expected base64 {kind} data or a data URL", "")
    # Refuse before decoding a string that would be too large.
    check_bytes(len(compact) * 3 // 4 - compact.count("="), field=field, max_bytes=max_bytes)
    try:
        raw = compact.encode("ascii")
    except UnicodeEncodeError:
        raw = b""
    urlsafe = _BASE64URL_RE.fullmatch(raw) is not None and (b"-" in raw or b"_" in raw)
    if not raw or not (_BASE64_RE.fullmatch(raw) or urlsafe) or len(raw.rstrip(b"=")) % 4 == 1:
        hint = PATH_HINT if looks_like_path(original) else ""
        raise InputError(field, f"not valid base64{hint}, got {short(original)!r}", short(original))
    padded = raw.rstrip(b"=") + b"=" * (-len(raw.rstrip(b"=")) % 4)
    try:
        data = base64.urlsafe_b64decode(padded) if urlsafe else base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(field, f"not valid base64 ({exc}), got {short(original)!r}", short(original)) from exc
    check_bytes(len(data), field=field, max_bytes=max_bytes)
    return data
