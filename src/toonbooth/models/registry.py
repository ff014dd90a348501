"""The model registry: every model toonbooth can use, found in AUTOMATIC1111-layout folders, local
diffusers folders, hub repo ids and the catalog, each identified by its keys (see `probe.py`).

Folder layout (the A1111 `models/` folder can be pointed at as is; see A1111 `modules/paths.py`,
`extensions-builtin/Lora`, sd-webui-controlnet):

    <models_dir>/Stable-diffusion/**.safetensors   checkpoints
    <models_dir>/Lora/**, LyCORIS/**               LoRA / LyCORIS
    <models_dir>/ControlNet/**, controlnet/**      ControlNets
    <models_dir>/embeddings/**                     textual-inversion embeddings
    <models_dir>/VAE/**                            VAEs
    <models_dir>/diffusers/<name>/                 diffusers folders (model_index.json, or one model's config.json)
    <models_dir>/SAM/<name>/, SAM/<org>/<name>/     Segment Anything, transformers `save_pretrained` folders
    <models_dir>/LaMa/<name>.safetensors|.pt|.ckpt  LaMa inpainting generators (`.pt` = TorchScript, see below)
    <models_dir>/*.safetensors                     loose files: kind from their keys
    <models_dir>/users/<owner>/<same folders>      per-user models (trained styles): visible to that owner only

Names follow A1111: a model is found by its file stem, its file name, its path relative to its kind
folder, or an A1111 title `name [hash]` (the hash — new 10-hex short hash or legacy 8-hex — is
ignored when the name matches, and used to find the file when it does not). LoRAs also answer to
the `ss_output_name` their trainer stored (A1111's LoRA alias). Pickle files are listed as refused
and never loaded. Folders are walked recursively, following symlinks but never twice into the same
directory, so link loops end.

SAM and LaMa entries (kinds "sam" and "lama", shared folders only) are what the anime studio's
`locate_sam` / `locate_lama` find: a SAM folder is usable when its config.json says `model_type: "sam"`,
it has a processor config and `*.safetensors` weights (a `.bin`-only folder is refused as pickle); a LaMa
`.safetensors` must hold FFC generator keys; a `.pt` is IOPaint's TorchScript export, which is code and is
therefore only ever loaded from these operator-controlled folders; a `.ckpt` / `.pth` is only read with
`torch.load(weights_only=True)` at load time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from ..core.errors import InputError, ModelError, ModelNotFoundError, UnsafeModelFormatError
from ..core.fs import atomic_path
from . import catalog
from .families import SD_FAMILIES, FamilySet
from .probe import (
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    HashCache,
    ProbeArch,
    ProbeResult,
    probe_file,
    unsafe_format_error,
)

EntryKind = str  # a model family's kind (models/families), or "unknown"
EntrySource = Literal["folder", "diffusers-folder", "hub", "catalog"]

# the SD safetensors families (identified by `probe.classify`): kind -> A1111 folders
KIND_FOLDERS: dict[str, tuple[str, ...]] = {f.kind: f.folders for f in SD_FAMILIES}
ADD_FOLDER: dict[str, str] = {k: v[0] for k, v in KIND_FOLDERS.items()}
DIFFUSERS_FOLDER = "diffusers"
"""In the order the anime studio prefers them when several files share a name."""
USERS_FOLDER = "users"
CONFIG_CATALOG = {
    "sdxl": "sdxl-base-config",
    "sd15": "sd15-config",
    "sd15-inpainting": "sd15-inpainting-config",
}

_OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_TITLE_RE = re.compile(r"^(?P<name>.*?)\s*(?:\[(?P<h1>[0-9A-Fa-f]{8,64})\]|\((?P<h2>[0-9A-Fa-f]{8,12})\))$")


class ModelEntry(BaseModel):
    """One usable (or refused) model as the registry knows it."""

    name: str = Field(description="File stem (folder name for diffusers folders, repo id for hub entries).")
    path: Path | None = Field(None, description="File or folder on disk; None for hub / catalog entries.")
    kind: EntryKind
    arch: ProbeArch = "unknown"
    layout: str = "unknown"
    source: EntrySource
    owner: str | None = Field(None, description="None = shared; else only this user sees it.")
    folder: str | None = Field(
        None, description="A1111 folder it was found in ('' = loose in the models folder)."
    )
    relpath: str | None = Field(
        None, description="Path relative to its kind folder (posix), as A1111 names it."
    )
    inpainting: bool = False
    size: int | None = None
    legacy_hash: str | None = Field(None, description="A1111 legacy model_hash (8 hex).")
    sha256: str | None = Field(
        None, description="Full sha256 once computed (lazy; see ModelRegistry.sha256)."
    )
    aliases: list[str] = Field(default_factory=list)
    repo_id: str | None = None
    catalog_name: str | None = None
    refused: str | None = Field(
        None, description="Why this entry cannot be used (pickle, corrupt, unknown keys)."
    )
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.refused is None and self.source != "catalog"

    @property
    def short_hash(self) -> str | None:
        """A1111 short hash (first 10 hex of sha256) if the sha256 is known."""
        return self.sha256[:10] if self.sha256 else None

    @property
    def location(self) -> str:
        """What a loader opens: the path on disk, or the hub repo id."""
        if self.path is not None:
            return str(self.path)
        if self.repo_id:
            return self.repo_id
        raise ModelError(f"{self.kind} {self.name!r} has no local path and no repo id")

    @property
    def title(self) -> str:
        """A1111-style title: checkpoints `rel/path.safetensors [sha10]`, ControlNets `name [legacy8]`."""
        if self.source != "folder":
            return self.name
        if self.kind == "checkpoint":
            base = self.relpath or self.name
            return f"{base} [{self.short_hash}]" if self.short_hash else base
        if self.kind == "controlnet" and self.legacy_hash:
            return f"{self.name} [{self.legacy_hash}]"
        return self.name


def _check_owner(owner: str | None) -> None:
    if owner is not None and not _OWNER_RE.match(owner):
        raise InputError("owner", f"must be 1-64 letters, digits, '_', '.', '@' or '-', got {owner!r}", owner)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _first_int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value and isinstance(value[0], int):
        return value[0]
    return None


def _arch_from_unet_config(cfg: dict[str, Any] | None) -> ProbeArch:
    if not cfg:
        return "unknown"
    ctx = _first_int(cfg.get("cross_attention_dim"))
    if cfg.get("addition_embed_type") == "text_time":
        return "sdxl-refiner" if ctx == 1280 else "sdxl"
    return {768: "sd15", 1024: "sd2"}.get(ctx or 0, "unknown")


def weights_state(folder: Path) -> str:
    """'safetensors', 'pickle' or 'none' for the weight files directly in `folder`."""
    names = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    if any(n.endswith(".safetensors") for n in names):
        return "safetensors"
    if any(Path(n).suffix in PICKLE_SUFFIXES for n in names):
        return "pickle"
    return "none"


def diffusers_folder_entry(
    folder: Path, name: str | None = None, owner: str | None = None
) -> ModelEntry | None:
    """An entry for a local diffusers folder (pipeline with model_index.json, or one model's config.json);
    None if `folder` is neither. Only JSON configs are read."""
    folder = Path(folder)
    name = name or folder.name
    index = folder / "model_index.json"
    if index.is_file():
        mi = read_json(index) or {}
        cls = str(mi.get("_class_name", ""))
        unet_cfg = read_json(folder / "unet" / "config.json")
        arch = _arch_from_unet_config(unet_cfg)
        if arch == "unknown" and "XL" in cls:
            arch = "sdxl"
        in_ch = _first_int((unet_cfg or {}).get("in_channels"))
        weights = weights_state(folder / "unet")
        refused = None
        if weights == "pickle":
            refused = str(
                unsafe_format_error(folder / "unet", "a diffusers UNet saved only as pickle (.bin)")
            )
        elif weights == "none":
            refused = f"{folder} has no UNet weights (unet/*.safetensors): a config-only folder"
        return ModelEntry(
            name=name, path=folder, kind="checkpoint", arch=arch, layout="diffusers", source="diffusers-folder",
            owner=owner, folder=DIFFUSERS_FOLDER, relpath=name, inpainting=in_ch == 9, refused=refused,
            details={"class_name": cls},
        )  # fmt: skip
    config = folder / "config.json"
    if config.is_file():
        cfg = read_json(config) or {}
        cls = str(cfg.get("_class_name", ""))
        kind: EntryKind
        if cls in ("ControlNetModel", "ControlNetXSAdapter", "ControlNetUnionModel"):
            kind = "controlnet"
        elif cls == "UNet2DConditionModel":
            kind = "checkpoint"
        elif cls in ("AutoencoderKL", "AutoencoderTiny"):
            kind = "vae"
        else:
            return None
        arch = _arch_from_unet_config(cfg) if kind != "vae" else "unknown"
        weights = weights_state(folder)
        refused = None
        if weights == "pickle":
            refused = str(unsafe_format_error(folder, f"a diffusers {cls} saved only as pickle (.bin)"))
        elif weights == "none":
            refused = f"{folder} has no weights (*.safetensors)"
        in_ch = _first_int(cfg.get("in_channels"))
        return ModelEntry(
            name=name, path=folder, kind=kind, arch=arch, layout="diffusers", source="diffusers-folder",
            owner=owner, folder=DIFFUSERS_FOLDER, relpath=name, inpainting=kind == "checkpoint" and in_ch == 9,
            refused=refused, details={"class_name": cls},
        )  # fmt: skip
    return None


def walk_files(top: Path):
    """Files under `top`, recursively, following symlinks; each real directory is entered once."""
    if not top.is_dir():
        return
    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.startswith("."):
                yield Path(dirpath) / fn


class ModelRegistry:
    """Index of the models in `models_dirs` (A1111 layout), their per-user parts, and the catalog.

    `models_dirs[0]` is where `add()` and pulls write. `config_dir` holds the diffusers config
    folders single-file loading needs (`<config_dir>/sdxl`, `<config_dir>/sd15`). `hash_cache` is
    the hash sidecar JSON file or a folder for it (None: hashes are kept in memory only)."""

    def __init__(
        self,
        models_dirs: list[Path],
        config_dir: Path,
        hash_cache: Path | None = None,
        families: FamilySet | None = None,
    ):
        if not models_dirs:
            raise ModelError("ModelRegistry needs at least one models folder")
        self.models_dirs = [Path(d).expanduser() for d in models_dirs]
        self.config_dir = Path(config_dir).expanduser()
        self.hashes = HashCache(hash_cache)
        self.families = families if families is not None else FamilySet(SD_FAMILIES)
        self._lock = threading.RLock()
        self._entries: list[ModelEntry] = []
        self._scanned = False
        self._probe_cache: dict[tuple[str, int, int], ProbeResult | Exception] = {}

    @classmethod
    def from_settings(cls, settings: Any, families: FamilySet | None = None) -> ModelRegistry:
        """The registry a `core.settings.Settings` describes."""
        return cls(
            models_dirs=[settings.resolved_models_dir, *settings.extra_model_dirs],
            config_dir=settings.resolved_config_dir,
            hash_cache=settings.resolved_data_dir / "cache" / "hashes.json",
            families=families,
        )

    # --- scanning -------------------------------------------------------------------------------
    def scan(self) -> list[ModelEntry]:
        """(Re)build the index from disk. Returns every entry, refused ones included."""
        found: list[ModelEntry] = []
        seen: set[tuple[str, str | None]] = set()
        for root in self.models_dirs:
            if not root.is_dir():
                continue
            found += self._scan_base(root, None, seen)
            users = root / USERS_FOLDER
            if users.is_dir():
                for udir in sorted(users.iterdir()):
                    if udir.is_dir() and _OWNER_RE.match(udir.name):
                        found += self._scan_base(udir, udir.name, seen)
        with self._lock:
            self._entries = found
            self._scanned = True
        return list(found)

    def _scan_base(
        self, base: Path, owner: str | None, seen: set[tuple[str, str | None]]
    ) -> list[ModelEntry]:
        out: list[ModelEntry] = []
        for kind, folders in self.families.kind_folders(scanned_by_probe=True).items():
            for folder in folders:
                top = base / folder
                for file in self._walk_files(top):
                    entry = self._file_entry(file, top, folder, kind, owner, seen)
                    if entry is not None:
                        out.append(entry)
        for file in sorted(p for p in base.iterdir() if p.is_file() and not p.name.startswith(".")):
            entry = self._file_entry(file, base, "", None, owner, seen)
            if entry is not None:
                out.append(entry)
        out += self._scan_diffusers(base / DIFFUSERS_FOLDER, owner, seen)
        out += self._scan_families(base, owner, seen)
        self.hashes.flush()
        return out

    def _scan_families(self, base: Path, owner: str | None, seen: set[tuple[str, str | None]]) -> list[ModelEntry]:
        """Entries of the families that identify their own files / folders (SAM folders, LaMa files, ONNX
        pairs, ...), in their folders under `base`."""
        out: list[ModelEntry] = []
        roots: set[tuple[int, int]] = set()  # SAM/ and sam/ are one folder on case-insensitive disks
        for fam in self.families:
            if fam.scan is None or (owner is not None and fam.shared_only):
                continue
            for folder in fam.folders:
                top = base / folder
                if not top.is_dir() or not self._first_visit(top, roots):
                    continue
                for entry in fam.scan(top, folder):
                    real = str(entry.path.resolve()) if entry.path is not None else entry.name
                    if (real, owner) in seen:
                        continue
                    seen.add((real, owner))
                    entry.owner = owner
                    stem = entry.path.stem if entry.path is not None and entry.path.is_file() else entry.name
                    cat = catalog.find_entry(stem) or catalog.find_entry(Path(entry.name).name)
                    entry.catalog_name = cat.name if cat is not None and cat.kind == entry.kind else None
                    out.append(entry)
        return out

    @staticmethod
    def _first_visit(folder: Path, visited: set[tuple[int, int]]) -> bool:
        st = folder.stat()
        key = (st.st_dev, st.st_ino)
        if key in visited:
            return False
        visited.add(key)
        return True

    @staticmethod
    def _walk_files(top: Path):
        return walk_files(top)

    def _probe(self, path: Path) -> ProbeResult | Exception:
        try:
            st = path.stat()
        except OSError as exc:
            return ModelError(f"cannot read {path}: {exc}")
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        cached = self._probe_cache.get(key)
        if cached is None:
            try:
                cached = probe_file(path)
            except ModelError as exc:
                cached = exc
            self._probe_cache[key] = cached
        return cached

    def _file_entry(
        self,
        file: Path,
        top: Path,
        folder: str,
        folder_kind: str | None,
        owner: str | None,
        seen: set[tuple[str, str | None]],
    ) -> ModelEntry | None:
        suffix = file.suffix.lower()
        if suffix not in SAFETENSORS_SUFFIXES and suffix not in PICKLE_SUFFIXES:
            return None  # previews, notes, yaml configs, partial downloads
        real = str(file.resolve())
        if (real, owner) in seen:
            return None
        seen.add((real, owner))
        relpath = file.relative_to(top).as_posix()
        common: dict[str, Any] = dict(
            name=file.stem, path=file, source="folder", owner=owner, folder=folder, relpath=relpath
        )
        if suffix in PICKLE_SUFFIXES:
            return ModelEntry(
                kind=folder_kind or "unknown", layout="pickle", refused=str(unsafe_format_error(file, f"a pickle-based `{suffix}` file")),
                size=file.stat().st_size, **common,
            )  # fmt: skip
        result = self._probe(file)
        if isinstance(result, Exception):
            return ModelEntry(kind=folder_kind or "unknown", refused=str(result), **common)
        details: dict[str, Any] = dict(result.details)
        if folder_kind and result.kind not in (folder_kind, "unknown"):
            details["misplaced"] = f"found in {folder}/ but its keys say {result.kind}"
        aliases: list[str] = []
        alias = result.metadata.get("ss_output_name")
        if result.kind == "lora" and alias and alias != file.stem:
            aliases.append(alias)
        cat = catalog.find_entry(file.name)
        refused = None
        if result.kind == "unknown":
            refused = (
                f"{file.name}: its tensor names match no known model family ({result.tensor_count} tensors)"
            )
        try:
            legacy = self.hashes.get(file, "legacy", save=False)
        except ModelError:
            legacy = None
        return ModelEntry(
            kind=result.kind, arch=result.arch, layout=result.layout, inpainting=result.inpainting,
            size=result.size, legacy_hash=legacy, sha256=self.hashes.cached(file, "sha256"), aliases=aliases,
            catalog_name=cat.name if cat is not None and cat.kind == result.kind else None,
            refused=refused, details=details, **common,
        )  # fmt: skip

    def _scan_diffusers(
        self, top: Path, owner: str | None, seen: set[tuple[str, str | None]]
    ) -> list[ModelEntry]:
        out: list[ModelEntry] = []
        if not top.is_dir():
            return out
        visited: set[tuple[int, int]] = set()
        for dirpath, dirnames, _files in os.walk(top, followlinks=True):
            d = Path(dirpath)
            try:
                st = d.stat()
            except OSError:
                dirnames[:] = []
                continue
            if (st.st_dev, st.st_ino) in visited:
                dirnames[:] = []
                continue
            visited.add((st.st_dev, st.st_ino))
            dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
            if d == top:
                continue
            rel = d.relative_to(top).as_posix()
            entry = diffusers_folder_entry(d, name=rel, owner=owner)
            if entry is not None:
                dirnames[:] = []  # a model folder: its sub-folders are its components
                real = str(d.resolve())
                if (real, owner) not in seen:
                    seen.add((real, owner))
                    cat = catalog.find_entry(d.name)
                    if cat is not None and cat.a1111_folder == DIFFUSERS_FOLDER:
                        entry.catalog_name = cat.name
                    out.append(entry)
        return out

    def _all(self) -> list[ModelEntry]:
        with self._lock:
            if not self._scanned:
                self.scan()
            return list(self._entries)

    # --- queries --------------------------------------------------------------------------------
    def list(
        self,
        kind: str | None = None,
        owner: str | None = None,
        include_refused: bool = False,
        include_catalog: bool = False,
    ) -> list[ModelEntry]:
        """Entries visible to `owner` (shared ones plus the owner's own; owner None = shared only).

        `include_refused` adds unusable files with the reason; `include_catalog` adds catalog models
        that are not installed yet (source "catalog")."""
        _check_owner(owner)
        out = [
            e
            for e in self._all()
            if (e.owner is None or e.owner == owner)
            and (kind is None or e.kind == kind)
            and (include_refused or e.refused is None)
        ]
        if include_catalog:
            installed = {e.catalog_name for e in out if e.catalog_name}
            for ce in catalog.entries():
                if ce.kind == "config" or ce.name in installed or (kind is not None and ce.kind != kind):
                    continue
                out.append(
                    ModelEntry(
                        name=ce.name,
                        kind=ce.kind,
                        arch=ce.arch if ce.arch in get_args(ProbeArch) else "unknown",
                        source="catalog",
                        repo_id=ce.repo_id,
                        catalog_name=ce.name,
                        aliases=list(ce.aliases),
                        details={
                            "install": f"toonbooth models pull {ce.name}" if ce.repo_id else ce.source_note
                        },
                    )  # fmt: skip
                )
        return sorted(out, key=lambda e: (e.kind, e.owner is not None, e.name.lower(), e.relpath or ""))

    def names(self, kind: str | None = None, owner: str | None = None) -> list[str]:
        return sorted({e.name for e in self.list(kind=kind, owner=owner)}, key=str.lower)

    @staticmethod
    def unique_name(entry: ModelEntry) -> str:
        """A name that selects exactly this entry: diffusers folders also answer to `diffusers/<name>` (a single
        file of the same name wins the plain name, as in A1111)."""
        if entry.source == "diffusers-folder" and entry.relpath:
            return f"{DIFFUSERS_FOLDER}/{entry.relpath}"
        return entry.name

    @staticmethod
    def _keys(entry: ModelEntry) -> set[str]:
        keys = {entry.name, ModelRegistry.unique_name(entry)}
        if entry.path is not None and entry.source == "folder":
            keys.add(entry.path.name)
        if entry.relpath:
            keys.add(entry.relpath)
            keys.add(str(Path(entry.relpath).with_suffix("")) if entry.source == "folder" else entry.relpath)
        return keys

    def _match(self, query: str, entries: list[ModelEntry]) -> list[ModelEntry]:
        for fold in (False, True):
            norm = (lambda s: s.lower()) if fold else (lambda s: s)
            q = norm(query)
            hits = [e for e in entries if q in {norm(k) for k in self._keys(e)}]
            if not hits:
                hits = [e for e in entries if q in {norm(a) for a in e.aliases}]
            if hits:
                return hits
        return []

    def _pick(self, query: str, hits: list[ModelEntry], owner: str | None) -> ModelEntry:
        kinds = {e.kind for e in hits}
        if len(kinds) > 1:
            listing = "; ".join(f"{e.kind} {e.path}" for e in hits)
            raise ModelError(f"{query!r} names models of several kinds ({listing}): say which kind you mean")
        # the owner's own first, then single files (A1111 semantics) before diffusers folders, LaMa formats in
        # the anime studio's order, then shortest path
        hits = sorted(
            hits,
            key=lambda e: (
                e.owner != owner or owner is None,
                e.source != "folder",
                self._suffix_rank(e),
                len(e.relpath or ""),
                str(e.path),
            ),
        )
        chosen = hits[0]
        if chosen.refused:
            if chosen.layout == "pickle" or "never unpickles" in chosen.refused:
                raise UnsafeModelFormatError(chosen.refused)
            raise ModelError(chosen.refused)
        return chosen

    def _suffix_rank(self, entry: ModelEntry) -> int:
        """Preference among files of one name: the order of the family's suffixes (LaMa: safetensors first)."""
        fam = self.families.get(entry.kind)
        if fam is None or fam.scan is None or entry.path is None:
            return 0
        suffix = entry.path.suffix.lower()
        return fam.suffixes.index(suffix) if suffix in fam.suffixes else len(fam.suffixes)

    def get(
        self, name: str, kind: str | None = None, owner: str | None = None, allow_paths: bool = True
    ) -> ModelEntry:
        """Resolve `name` to one model visible to `owner`.

        Accepted, in this order: a file stem / file name / relative path / LoRA alias; an A1111
        title `name [hash]`; a catalog name or alias (resolved to its installed file); a hash alone
        matching a scanned or catalog file; a local diffusers folder path (if `allow_paths`; the API
        should pass False for user-typed strings); a hub repo id `owner/name` (no network access here)."""
        if not isinstance(name, str) or not name.strip():
            raise InputError("model", f"a model name is required, got {name!r}", name)
        _check_owner(owner)
        query = name.strip()
        visible = [
            e
            for e in self._all()
            if (e.owner is None or e.owner == owner) and (kind is None or e.kind == kind)
        ]
        # 1. stem / file name / relpath / alias, as given
        hits = self._match(query, visible)
        if hits:
            return self._pick(query, hits, owner)
        # 2. A1111 title: "name [hash]" or "name(hash)"
        want_hash: str | None = None
        m = _TITLE_RE.match(query)
        if m:
            query = m.group("name").strip()
            want_hash = (m.group("h1") or m.group("h2")).lower()
            hits = self._match(query, visible) if query else []
            if hits:
                return self._pick(query, hits, owner)
        elif re.fullmatch(r"[0-9A-Fa-f]{8,64}", query):
            want_hash = query.lower()
        # 3. catalog name / alias -> its installed file or folder
        ce = catalog.find_entry(query) if query else None
        if ce is not None and ce.kind != "config" and (kind is None or ce.kind == kind):
            found = self._installed(ce, visible)
            if found is not None:
                return found
            how = (
                f"run `toonbooth models pull {ce.name}`"
                if ce.repo_id
                else f"it is not on the model hub ({ce.source_note}); then `toonbooth models add PATH`"
            )
            raise ModelNotFoundError(f"{ce.kind} {ce.name!r} is in the catalog but not installed: {how}")
        # 4. hash alone (or a title whose name did not match)
        if want_hash:
            by_hash = [
                e
                for e in visible
                if e.refused is None
                and (
                    (e.legacy_hash and e.legacy_hash == want_hash)
                    or (e.sha256 and e.sha256.startswith(want_hash))
                )
            ]
            if len({e.path for e in by_hash}) > 1:
                listing = ", ".join(str(e.path) for e in by_hash[:5])
                raise ModelError(f"hash {want_hash} matches several files ({listing}): use the model's name")
            if by_hash:
                return self._pick(want_hash, by_hash, owner)
            found_cat = catalog.find_by_hash(want_hash)
            if found_cat is not None:
                found = self._installed(found_cat[0], visible)
                if found is not None:
                    return found
        # 5. a local diffusers folder
        if allow_paths and query and ("/" in query or os.sep in query or query.startswith(("~", "."))):
            p = Path(query).expanduser()
            if p.is_dir():
                entry = diffusers_folder_entry(p)
                if entry is None:
                    raise ModelError(
                        f"{p} is a folder but not a diffusers model (no model_index.json or config.json)"
                    )
                if kind is not None and entry.kind != kind:
                    raise ModelError(f"{p} is a diffusers {entry.kind}, not a {kind}")
                if entry.refused:
                    raise (UnsafeModelFormatError if "never unpickles" in entry.refused else ModelError)(
                        entry.refused
                    )
                return entry
        # 6. a hub repo id (resolved later by the loader; no network access here)
        if _REPO_RE.match(query) and not query.lower().endswith(
            tuple(SAFETENSORS_SUFFIXES | PICKLE_SUFFIXES)
        ):
            by_repo = next((c for c in catalog.entries() if c.repo_id == query and c.kind != "config"), None)
            hub_kind: EntryKind = kind or (by_repo.kind if by_repo else "checkpoint")  # type: ignore[assignment]
            return ModelEntry(
                name=query, kind=hub_kind, arch=by_repo.arch if by_repo else "unknown", layout="diffusers",
                source="hub", repo_id=query, catalog_name=by_repo.name if by_repo else None,
            )  # fmt: skip
        known = sorted({e.name for e in visible if e.refused is None}, key=str.lower)
        shown = ", ".join(known[:40]) + (f" … and {len(known) - 40} more" if len(known) > 40 else "")
        what = kind or "model"
        raise ModelNotFoundError(
            f"no {what} called {name!r}. Known {what} names: {shown or '(none)'}. "
            f"Catalog: {', '.join(c.name for c in catalog.entries() if kind is None or c.kind == kind)}."
        )

    def _installed(self, ce: catalog.CatalogEntry, visible: list[ModelEntry]) -> ModelEntry | None:
        """The scanned entry holding catalog entry `ce`, if installed."""
        if ce.kind == "sam" and ce.install_subdir:
            wanted = ce.install_subdir.lower()
            hits = [
                e
                for e in visible
                if e.kind == "sam"
                and e.path is not None
                and e.path.name.lower() == wanted
                and e.refused is None
            ]
            return self._pick(ce.name, hits, None) if hits else None
        if ce.kind == "lama" and ce.primary_file is not None:
            stem = Path(ce.primary_file.filename).stem.lower()
            hits = [
                e
                for e in visible
                if e.kind == "lama"
                and e.path is not None
                and e.path.stem.lower() == stem
                and e.refused is None
            ]
            hits.sort(key=self._suffix_rank)
            return hits[0] if hits else None
        if ce.a1111_folder == DIFFUSERS_FOLDER and ce.install_subdir:
            wanted = ce.install_subdir
            hits = [
                e
                for e in visible
                if e.source == "diffusers-folder" and e.name == wanted and e.refused is None
            ]
        elif ce.primary_file is not None:
            fname = ce.primary_file.filename.lower()
            hits = [
                e
                for e in visible
                if e.source == "folder"
                and e.path is not None
                and e.path.name.lower() == fname
                and e.kind == ce.kind
            ]
        else:
            hits = []
        if not hits:
            return None
        return self._pick(ce.name, hits, None)

    # --- hashes ---------------------------------------------------------------------------------
    def sha256(self, entry: ModelEntry) -> str:
        """Full sha256 of a file entry (computed once, then cached); also stored on the entry."""
        if entry.path is None or not entry.path.is_file():
            raise ModelError(f"{entry.kind} {entry.name!r} is not a single file: it has no file hash")
        value = self.hashes.get(entry.path, "sha256")
        entry.sha256 = value
        return value

    def short_hash(self, entry: ModelEntry) -> str:
        """A1111 short hash (first 10 hex of the sha256) of a file entry."""
        return self.sha256(entry)[:10]

    # --- adding ---------------------------------------------------------------------------------
    def add(
        self,
        path: str | Path,
        kind: str | None = None,
        owner: str | None = None,
        name: str | None = None,
        link: bool = False,
    ) -> ModelEntry:
        """Copy (or, with `link`, hard-link when possible) a `.safetensors` file into its A1111 folder
        of `models_dirs[0]` (under `users/<owner>/` for a per-user model), after checking its keys.

        Refuses pickle files (`UnsafeModelFormatError`), files whose keys match no known family
        (`ModelError`), a `kind` that contradicts the keys and an existing different file of the
        same name (`InputError`)."""
        src = Path(path).expanduser()
        if not src.is_file():
            raise InputError("path", f"no such file: {str(src)!r}", str(path))
        _check_owner(owner)
        if kind is not None and kind not in ADD_FOLDER:
            raise InputError("kind", f"must be one of {sorted(ADD_FOLDER)}, got {kind!r}", kind)
        if src.suffix.lower() in PICKLE_SUFFIXES:
            raise unsafe_format_error(src, f"a pickle-based `{src.suffix}` file")
        if src.suffix.lower() not in SAFETENSORS_SUFFIXES:
            raise InputError("path", f"only .safetensors files can be added, got {src.name!r}", str(path))
        result = probe_file(src)  # raises on pickle content / corrupt header
        if result.kind == "unknown":
            raise ModelError(
                f"{src.name}: its tensor names match no known model family ({result.tensor_count} tensors); "
                f"toonbooth can add checkpoints, LoRAs, ControlNets, embeddings and VAEs"
            )
        if kind is not None and kind != result.kind:
            raise InputError("kind", f"{src.name} is a {result.kind} by its tensor names, not a {kind}", kind)
        filename = src.name
        if name is not None:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.+-]{0,127}", name) or ".." in name:
                raise InputError(
                    "name", f"must be a plain file name (letters, digits, ' _.+-'), got {name!r}", name
                )
            filename = name if name.lower().endswith(".safetensors") else name + ".safetensors"
        base = self.models_dirs[0] / USERS_FOLDER / owner if owner else self.models_dirs[0]
        folder = ADD_FOLDER[result.kind]
        dest_dir = base / folder
        dest = dest_dir / filename
        with self._lock:
            if dest.exists():
                same = dest.resolve() == src.resolve() or (
                    dest.stat().st_size == src.stat().st_size
                    and self.hashes.get(dest, "sha256") == self.hashes.get(src, "sha256")
                )
                if not same:
                    raise InputError(
                        "name", f"{dest} already exists and is a different file; pass another name", filename
                    )
            else:
                dest_dir.mkdir(parents=True, exist_ok=True)
                linked = False
                if link:
                    try:
                        os.link(src, dest)
                        linked = True
                    except OSError:
                        linked = False
                if not linked:
                    try:
                        with atomic_path(dest) as tmp:
                            shutil.copyfile(src, tmp)
                    except OSError as exc:
                        raise ModelError(f"cannot copy {src} to {dest}: {exc}") from exc
            self._all()  # make sure the index exists before inserting
            seen: set[tuple[str, str | None]] = set()
            entry = self._file_entry(dest, dest_dir, folder, result.kind, owner, seen)
            if entry is None:  # pragma: no cover - dest always has a safetensors suffix
                raise ModelError(f"cannot index {dest}")
            self._entries = [e for e in self._entries if not (e.path == dest and e.owner == owner)] + [entry]
            self.hashes.flush()
        return entry

    # --- configs --------------------------------------------------------------------------------
    def config_folder(self, arch: str) -> Path:
        """`<config_dir>/<arch>` if it holds a diffusers pipeline config (model_index.json)."""
        folder = self.config_dir / arch
        if (folder / "model_index.json").is_file():
            return folder
        if arch in CONFIG_CATALOG:
            hint = (
                f"run `toonbooth models pull {CONFIG_CATALOG[arch]}` (configs and tokenizers only, a few MB)"
            )
        else:
            hint = (
                f"no catalog entry provides {arch!r} configs; copy a diffusers pipeline folder of that family "
                f"(model_index.json, */config.json, tokenizers) there"
            )
        raise ModelError(
            f"single-file {arch} models need a local diffusers config folder at {folder} "
            f"(model_index.json is missing): {hint}"
        )
