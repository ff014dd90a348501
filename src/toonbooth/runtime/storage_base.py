"""Blob storage base: content-addressed bytes, named `blob:<sha256>` (DESIGN.md habit 7: x_base / x_<tech>).

No user-controlled name ever reaches a path or an object key: a blob's name is the sha256 of its bytes.
Implementations: `storage_local.LocalStorage` (a data folder), `storage_s3.S3Storage` (any S3 API).
"""

from __future__ import annotations

import abc
import hashlib
import re
from pathlib import Path

from ..core.errors import InputError

_REF = re.compile(r"^blob:([0-9a-f]{64})$")


def parse_ref(ref: str, field: str = "ref") -> str:
    """The sha256 hex digest of a `blob:<sha256>` reference; InputError naming `field` otherwise."""
    m = _REF.match(ref or "") if isinstance(ref, str) else None
    if not m:
        shown = ref[:80] if isinstance(ref, str) else type(ref).__name__
        raise InputError(field, f"not a blob reference `blob:<sha256>`: {shown!r}", ref)
    return m.group(1)


def is_ref(value: object) -> bool:
    return isinstance(value, str) and _REF.match(value) is not None


def ref_of(data: bytes) -> str:
    return "blob:" + hashlib.sha256(data).hexdigest()


class Storage(abc.ABC):
    """Content-addressed blob store."""

    @abc.abstractmethod
    def put(self, data: bytes, content_type: str | None = None) -> str:
        """Store `data` (idempotent) and return its reference `blob:<sha256>`; `content_type` (a media type
        such as `video/mp4`) is recorded with the blob and served with it."""

    @abc.abstractmethod
    def content_type(self, ref: str) -> str | None:
        """The media type recorded when the blob was stored (None when none was given)."""

    def presigned_url(self, ref: str, *, filename: str, content_type: str, expires_s: int = 3600) -> str | None:
        """A time-limited URL a client can download the blob from directly (object stores), or None when
        the blob is only served through the API (local storage)."""
        return None

    @abc.abstractmethod
    def get(self, ref: str, field: str = "ref") -> bytes:
        """The bytes of a stored blob; InputError naming `field` when the reference is bad or unknown."""

    @abc.abstractmethod
    def exists(self, ref: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, ref: str) -> bool:
        """Remove a blob; True when it existed."""

    def local_path(self, ref: str) -> Path | None:
        """A file holding the blob on this machine, or None when the store is remote."""
        return None
