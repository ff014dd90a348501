"""Content-addressed blob storage under a data folder. No user-controlled path ever reaches the disk:
a blob is named by the sha256 of its bytes, written atomically (temp file, fsync, rename)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..core.errors import InputError
from ..core.fs import atomic_write_bytes, atomic_write_text
from .storage_base import Storage, parse_ref

__all__ = ["LocalStorage", "parse_ref"]


class LocalStorage(Storage):
    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / digest

    def put(self, data: bytes, content_type: str | None = None) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if content_type and self.content_type(f"blob:{digest}") != content_type:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self._type_path(digest), content_type)
        if not path.exists():
            atomic_write_bytes(path, data, permissions=0o600)  # uploads are personal photos: owner only
        return f"blob:{digest}"

    def _type_path(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / f".{digest}.type"

    def content_type(self, ref: str) -> str | None:
        path = self._type_path(parse_ref(ref))
        try:
            return path.read_text(encoding="ascii").strip() or None
        except OSError:
            return None

    def get(self, ref: str, field: str = "ref") -> bytes:
        digest = parse_ref(ref, field)
        path = self._path(digest)
        if not path.is_file():
            raise InputError(field, f"no stored blob {ref}", ref)
        return path.read_bytes()

    def exists(self, ref: str) -> bool:
        try:
            return self._path(parse_ref(ref)).is_file()
        except InputError:
            return False

    def delete(self, ref: str) -> bool:
        digest = parse_ref(ref)
        path = self._path(digest)
        self._type_path(digest).unlink(missing_ok=True)
        if path.is_file():
            path.unlink()
            return True
        return False

    def local_path(self, ref: str) -> Path:
        return self._path(parse_ref(ref))
