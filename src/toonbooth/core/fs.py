"""Atomic file writes: the one way toonbooth replaces a file (or a folder) on disk.

A reader sees either the old file or the complete new one, never a half-written file: the data goes to a
temporary name in the target's own folder (so the rename stays on one filesystem), is flushed and fsynced,
then `os.replace`d over the target; on POSIX the folder is fsynced too, so the rename itself survives a
power cut. If anything fails before the rename, the temporary file is removed and the old file is left as
it was. The recipe is the one described in the Linux `rename(2)` and `fsync(2)` manual pages and
SQLite's "atomic commit" notes (https://www.sqlite.org/atomiccommit.html), applied to single files.

- `atomic_write_bytes` / `atomic_write_text`: data already in memory.
- `atomic_open`: a writer that wants a file handle (`json.dump`, streaming copies).
- `atomic_path`: a writer that wants a path of its own (safetensors' `save_file`, `shutil.copyfile`).
- `atomic_directory`: a folder filled file by file (training checkpoints), swapped in as a whole.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation on the raw descriptor


def temp_name(target: Path, suffix: str = "tmp") -> Path:
    """A fresh hidden name beside `target`: `.<name>.<random>.<suffix>` (same folder, same filesystem)."""
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}.{suffix}")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (POSIX). A no-op where folders cannot be opened (Windows) and on
    filesystems that refuse to fsync a folder."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. some network filesystems: the data itself is already synced
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | _BINARY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    encoding: str | None = None,
    fsync: bool = True,
    permissions: int = 0o666,
) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path`.

    `mode` is "wb" or "w" (text; `encoding` defaults to UTF-8). `permissions` are those of a new file
    (before the umask), 0o666 like `open()`. If the block raises, the temporary file is removed and
    `path` keeps its old content (or stays absent)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, permissions)
    try:
        try:
            fh = os.fdopen(fd, mode, **({"encoding": encoding or "utf-8"} if mode == "w" else {}))
        except BaseException:
            os.close(fd)
            raise
        with fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(target.parent)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, fsync: bool = True, permissions: int = 0o666
) -> Path:
    """Write `data` to `path` atomically (see the module docstring); returns `path` as a Path."""
    with atomic_open(path, "wb", fsync=fsync, permissions=permissions) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = True
) -> Path:
    """Write `text` to `path` atomically in `encoding`; returns `path` as a Path."""
    with atomic_open(path, "w", encoding=encoding, fsync=fsync) as fh:
        fh.write(text)
    return Path(path)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """A temporary path beside `path` for writers that open the file themselves (e.g.
    `safetensors.torch.save_file(tensors, str(tmp))`); on a clean exit the file the writer made there is
    fsynced and replaces `path`. If the block raises (or writes nothing), the temporary file is removed and
    `path` is left as it was."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic_path: the writer did not create {tmp}")
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    if fsync:
        fsync_dir(target.parent)


@contextmanager
def atomic_directory(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """A fresh temporary folder beside `path`; on a clean exit its files are fsynced and it takes the place
    of `path` (an existing folder there is moved aside first and then deleted). If the block raises, the
    temporary folder is deleted and `path` is left as it was.

    Replacing a folder is two renames (old aside, new in): a crash between them leaves no `path` but a
    complete `.<name>.<random>.old` beside it; a new folder (the usual case) is one rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    tmp.mkdir()
    old: Path | None = None
    try:
        yield tmp
        if fsync:
            for folder, _dirs, files in os.walk(tmp):
                for name in files:
                    _fsync_file(Path(folder) / name)
                fsync_dir(Path(folder))
        if target.exists():
            old = temp_name(target, "old")
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old, target)  # put the old folder back
        raise
    if fsync:
        fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
