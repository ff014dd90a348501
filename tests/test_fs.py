"""`core.fs`: atomic writes leave either the old file or the complete new one, never a temp file; the file and
(on POSIX) its folder are fsynced; folders are swapped as a whole."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from toonbooth.core import fs
from toonbooth.core.fs import (
    atomic_directory,
    atomic_open,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
)

POSIX = os.name == "posix"


def listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture()
def fsyncs(monkeypatch):
    """Every fsync as 'file' or 'dir' (the kind of the descriptor at the moment it is synced)."""
    calls: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(fs.os, "fsync", spy)
    return calls


def test_write_bytes_creates_and_replaces(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    assert atomic_write_bytes(target, b"first") == target  # the missing folder is created
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert listing(target.parent) == ["out.bin"]


def test_write_text_round_trips_the_encoding(tmp_path):
    target = tmp_path / "opts.json"
    atomic_write_text(target, '{"name": "Zoë ✓"}')
    assert target.read_bytes() == '{"name": "Zoë ✓"}'.encode()
    atomic_write_text(target, "é", encoding="latin-1")
    assert target.read_bytes() == b"\xe9"


def test_crash_while_writing_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "state.json"
    target.write_bytes(b"old complete content")
    with pytest.raises(RuntimeError, match="power cut"), atomic_open(target, "wb") as fh:
        fh.write(b"new but ha")
        raise RuntimeError("power cut")
    assert target.read_bytes() == b"old complete content"
    assert listing(tmp_path) == ["state.json"]


def test_failed_rename_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "a.png"
    target.write_bytes(b"old")

    def refuse(src, dst):
        raise OSError("rename refused")

    monkeypatch.setattr(fs.os, "replace", refuse)
    with pytest.raises(OSError, match="rename refused"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and listing(tmp_path) == ["a.png"]


def test_crash_before_any_old_file_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_open(tmp_path / "new.txt", "w") as fh:
        fh.write("half")
        raise KeyboardInterrupt
    assert listing(tmp_path) == []


@pytest.mark.skipif(not POSIX, reason="folders are fsynced on POSIX only")
def test_file_then_folder_are_fsynced(tmp_path, fsyncs):
    atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert fsyncs == ["file", "dir"]
    fsyncs.clear()
    atomic_write_bytes(tmp_path / "y.bin", b"data", fsync=False)
    assert fsyncs == []


@pytest.mark.skipif(not POSIX, reason="POSIX permission bits")
def test_permissions_of_the_new_file(tmp_path):
    private = atomic_write_bytes(tmp_path / "blob", b"photo", permissions=0o600)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_only_write_modes(tmp_path):
    with pytest.raises(ValueError, match="'wb' or 'w'"), atomic_open(tmp_path / "x", "ab"):
        pass
    assert listing(tmp_path) == []


def test_atomic_path_for_writers_that_open_the_file_themselves(tmp_path, fsyncs):
    target = tmp_path / "weights.safetensors"
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".weights.safetensors.")
        save_file(tensors, str(tmp))
    assert np.array_equal(load_file(str(target))["w"], tensors["w"])
    assert listing(tmp_path) == ["weights.safetensors"]
    if POSIX:
        assert fsyncs == ["file", "dir"]


def test_atomic_path_crash_and_missing_output_keep_the_old_file(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old model")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a model")
        raise RuntimeError("disk full")
    with pytest.raises(FileNotFoundError, match="did not create"), atomic_path(target):
        pass  # the writer wrote nothing
    assert target.read_bytes() == b"old model" and listing(tmp_path) == ["model.safetensors"]


def test_atomic_directory_new_replace_and_crash(tmp_path):
    final = tmp_path / "checkpoint-5"
    # 1. A new folder appears whole
    with atomic_directory(final) as tmp:
        assert not final.exists()
        (tmp / "a.txt").write_text("one")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "b.txt").write_text("two")
    assert (final / "a.txt").read_text() == "one" and (final / "nested" / "b.txt").read_text() == "two"
    # 2. Replacing it: only the new content, no old or temp folder beside it
    with atomic_directory(final) as tmp:
        (tmp / "c.txt").write_text("three")
    assert listing(final) == ["c.txt"] and listing(tmp_path) == ["checkpoint-5"]
    # 3. A crash while filling it keeps the previous folder as it was
    with pytest.raises(RuntimeError), atomic_directory(final) as tmp:
        (tmp / "d.txt").write_text("partial")
        raise RuntimeError("killed")
    assert listing(final) == ["c.txt"] and listing(tmp_path) == ["checkpoint-5"]


def test_atomic_directory_failed_swap_restores_the_old_folder(tmp_path, monkeypatch):
    final = tmp_path / "ckpt"
    final.mkdir()
    (final / "old.txt").write_text("old")
    real = os.replace

    def second_rename_fails(src, dst):  # new folder -> ckpt fails; moving the old one back works
        if os.fspath(dst) == os.fspath(final) and os.fspath(src).endswith(".tmp"):
            raise OSError("no space")
        real(src, dst)

    monkeypatch.setattr(fs.os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="no space"), atomic_directory(final) as tmp:
        (tmp / "new.txt").write_text("new")
    monkeypatch.setattr(fs.os, "replace", real)
    assert listing(final) == ["old.txt"] and listing(tmp_path) == ["ckpt"]
