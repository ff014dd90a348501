"""A model family: one kind of model toonbooth can find, identify and load.

Each family says where its files live (A1111-layout folder names), which suffixes it takes, how a file or
folder is identified (by its keys, shapes, metadata, config or ONNX inputs/outputs — never by its name),
how it loads (safetensors, ONNX, or `torch.load(weights_only=True)` for public formats on an allow-list)
and what a loaded copy costs. Families are plain objects listed where the program is put together
(`runtime.families.default_families`): the registry scans their folders and the model manager loads
through them, so adding a family is one module plus its catalog entries.

Families whose files are SD-style `.safetensors` (checkpoints, LoRAs, ControlNets, embeddings, VAEs) share
one key-based classifier (`models.probe.classify`: those kinds compete for the same files, so they are told
apart together); every other family identifies its own files (`scan`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..registry import ModelEntry, ModelRegistry


@dataclass(frozen=True)
class LoadEnv:
    """What a family's loader may use: the device and dtype of this manager, whether the hub may be
    contacted (never for user requests), and the registry (config folders, the operator's models dirs)."""

    device: Any
    dtype: Any
    offline: bool
    registry: ModelRegistry


# (file or folder, top folder it was found under, that folder's name) -> entry or None (not ours)
ScanFn = Callable[[Path, Path, str], "ModelEntry | None"]
LoadFn = Callable[..., Any]


@dataclass(frozen=True)
class ModelFamily:
    """One family. `kind` is the registry kind its entries get; `folders` the A1111-layout folders it is
    looked for in (shared and per-user); `suffixes` the file suffixes it takes (`"/"` = folders);
    `scan` identifies one file/folder (None: the SD safetensors probe does); `load(entry, env, **options)`
    loads an entry; `cache_options` names the load options that change the loaded object (part of the
    cache key); `approx_bytes` is the usual size of a real model (shown in listings and the catalog)."""

    kind: str
    description: str
    folders: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    scan: ScanFn | None = None
    load: LoadFn | None = None
    cache_options: tuple[str, ...] = ()
    approx_bytes: int = 0
    shared_only: bool = False  # per-user folders are not scanned for it
    licence_note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def add_folder(self) -> str | None:
        """Where `models add` puts a file of this family."""
        return self.folders[0] if self.folders else None


class FamilySet:
    """The families of one program, by kind."""

    def __init__(self, families: Iterable[ModelFamily]):
        self._by_kind: dict[str, ModelFamily] = {}
        for fam in families:
            if fam.kind in self._by_kind:
                raise ValueError(f"two model families of kind {fam.kind!r}")
            self._by_kind[fam.kind] = fam

    def __contains__(self, kind: object) -> bool:
        return kind in self._by_kind

    def __iter__(self):
        return iter(self._by_kind.values())

    def get(self, kind: str) -> ModelFamily | None:
        return self._by_kind.get(kind)

    def kinds(self) -> list[str]:
        return list(self._by_kind)

    def kind_folders(self, scanned_by_probe: bool) -> dict[str, tuple[str, ...]]:
        """kind -> folders, for the families the SD probe identifies (True) or that scan themselves."""
        return {
            f.kind: f.folders for f in self._by_kind.values() if (f.scan is None) == scanned_by_probe and f.folders
        }
