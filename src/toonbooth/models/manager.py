"""`ctx.models`: the one door through which engines and training find and load models — by family, by
name, for an owner — with one byte-budgeted cache. No module-level singletons: one manager per runtime /
device. Stable Diffusion conveniences (pipelines, samplers, LoRAs, prompt embeddings) are in `models.sd`."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from ..core.errors import ModelError, ModelNotFoundError
from ..core.settings import Settings
from . import loader
from .cache import ModelCache
from .families import SD_FAMILIES, FamilySet, LoadEnv
from .refs import ModelRef


class ModelManager:
    """`ctx.models`: the one door through which engines and training find and load models.

    `load(kind, name, owner)` resolves a name in the registry (the owner's own models first), loads it
    through its family and keeps it in the byte-budgeted cache (keyed by the resolved entry); `path(...)`
    gives an installed model's file or folder; `missing(refs)` says why a job's models are not usable.
    Stable Diffusion conveniences (pipelines, samplers, LoRAs, prompts) are in `models.sd`."""

    def __init__(
        self,
        settings: Settings,
        registry: Any | None = None,
        cache: ModelCache | None = None,
        *,
        allow_paths: bool = True,
        families: FamilySet | None = None,
    ):
        """`allow_paths`: whether model names may be local folder paths (CLI yes; API no, so that a
        user-typed name can never point at a server folder)."""
        self.settings = settings
        self.allow_paths = allow_paths
        self.families = families if families is not None else (
            registry.families if registry is not None else FamilySet(SD_FAMILIES)
        )  # fmt: skip
        self._registry = registry
        self.cache = cache or ModelCache(
            ram_budget=_budget(settings.model_cache_ram_gib, _system_ram_bytes() // 2),
            vram_budget=_budget(settings.model_cache_vram_gib, 64 << 30),
            max_items=settings.model_cache_items,
        )
        self._lock = threading.RLock()
        self._device = None
        self._dtype = None
        # textual-inversion files read so far: (path, mtime_ns, size) -> (embedding, warnings); a few KB each
        self._embeddings: dict[tuple[str, int, int], tuple[Any, list[str]]] = {}

    # --- basics -------------------------------------------------------------------------------
    @property
    def registry(self):
        if self._registry is None:
            from .registry import ModelRegistry

            self._registry = ModelRegistry.from_settings(self.settings, families=self.families)
            self._registry.scan()
        return self._registry

    @property
    def device(self):
        if self._device is None:
            self._device = loader.resolve_device(self.settings)
        return self._device

    @property
    def dtype(self):
        if self._dtype is None:
            self._dtype = loader.resolve_dtype(self.settings, self.device)
        return self._dtype

    def entry(self, name: str, kind: str, owner: str | None = None):
        return self.registry.get(name, kind=kind, owner=owner, allow_paths=self.allow_paths)

    def path(self, kind: str, name: str, owner: str | None = None) -> Path:
        """The installed file or folder of a model (ModelNotFoundError when it is not on this machine)."""
        entry = self.entry(name, kind, owner)
        if entry.path is None:
            raise ModelNotFoundError(f"{kind} {name!r} is not installed on this machine ({entry.location})")
        return Path(entry.path)

    def load_env(self) -> LoadEnv:
        # user requests never make the server download: hub ids load only from the local cache
        return LoadEnv(device=self.device, dtype=self.dtype, offline=True, registry=self.registry)

    def load(self, kind: str, name: str, owner: str | None = None, **options: Any) -> Any:
        """The model `name` of family `kind`, loaded once and cached (LRU within the byte budgets)."""
        return self.load_entry(self.entry(name, kind, owner), **options)

    def load_entry(self, entry: Any, **options: Any) -> Any:
        family = self.families.get(entry.kind)
        if family is None or family.load is None:
            raise ModelError(f"{entry.kind} models are not loaded on their own ({entry.name!r})")
        fixed = tuple((k, repr(options.get(k))) for k in family.cache_options)
        key = (entry.kind, entry.location, str(self.dtype), str(self.device), *fixed)
        env = self.load_env()
        return self.cache.get_or_load(key, lambda: family.load(entry, env, **options))

    def load_uncached(self, entry: Any, *, device: Any = None, dtype: Any = None, **options: Any) -> Any:
        """A private copy of a model (not shared with the cache; e.g. training adds adapters to it), on
        `device` / `dtype` when given."""
        family = self.families.get(entry.kind)
        if family is None or family.load is None:
            raise ModelError(f"{entry.kind} models are not loaded on their own ({entry.name!r})")
        env = self.load_env()
        env = LoadEnv(device=device if device is not None else env.device, dtype=dtype if dtype is not None else env.dtype,
                      offline=env.offline, registry=env.registry)  # fmt: skip
        return family.load(entry, env, **options)

    def missing(self, refs: list[ModelRef], owner: str | None = None) -> list[str]:
        """Readable reasons why models of `refs` cannot be used here; [] = all present.

        For single-file checkpoints the config folder of their architecture must exist too; a model of
        another architecture than `ref.arch` is not usable either; a hub id counts only when its files
        are in the local hub cache (a user's job never downloads)."""
        reasons: list[str] = []
        for ref in refs:
            try:
                entry = self.entry(ref.name, ref.kind, owner)
            except ModelNotFoundError:
                reasons.append(f"{ref.kind} {ref.name!r} not found in {self.settings.resolved_models_dir}")
                continue
            if entry.source == "hub" and not hub_cached(entry.location):
                reasons.append(
                    f"{ref.kind} {ref.name!r} is neither in the models folder nor in the local hub cache "
                    f"(fetch it with `toonbooth models pull`)"
                )
                continue
            if ref.kind == "checkpoint" and entry.source == "folder":
                try:
                    self.registry.config_folder(entry.arch)
                except ModelError as exc:
                    reasons.append(str(exc))
            if ref.arch is not None and entry.arch not in (ref.arch, "unknown"):
                reasons.append(f"{ref.kind} {ref.name!r} is {entry.arch}, this recipe needs {ref.arch}")
        return reasons

    def short_hash(self, entry) -> str | None:
        """A1111's model hash (first 10 hex of the file's sha256); None for folders / hub ids."""
        if entry.source != "folder" or entry.path is None:
            return None
        return self.registry.short_hash(entry)

    # --- textual-inversion embeddings -----------------------------------------------------------
    def load_embedding(self, entry: Any) -> tuple[Any, list[str]]:
        """The registry entry's embedding (`models.embeddings.TextualInversion`, with its stages for a
        multi-stage style) and warnings about it; read once per file version."""
        from .embeddings import load_embedding

        if entry.path is None:
            raise ModelError(f"embedding {entry.name!r} is not a local file")
        stat = entry.path.stat()
        key = (str(entry.path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key not in self._embeddings:
                if len(self._embeddings) >= 512:
                    self._embeddings.pop(next(iter(self._embeddings)))
                self._embeddings[key] = load_embedding(entry.path, entry.name)
            return self._embeddings[key]


def _budget(gib: float, auto: int) -> int:
    return auto if gib <= 0 else int(gib * (1 << 30))


def _system_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 16 << 30


def hub_cached(repo_id: str) -> bool:
    """Whether the local hub cache holds a config and safetensors weights of `repo_id` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(repo_id, "config.json"), str) and not isinstance(
        try_to_load_from_cache(repo_id, "model_index.json"), str
    ):
        return False
    return any(
        isinstance(try_to_load_from_cache(repo_id, f), str)
        for f in ("model.safetensors", "unet/diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors")
    )
