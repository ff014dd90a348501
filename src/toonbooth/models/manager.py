"""`ctx.models`: what engines ask for models through. Resolves names in the registry, loads with
the loader, keeps pipelines in the cache, applies LoRAs by name with weights, builds schedulers
from A1111 sampler names. No module-level singletons: one manager per runtime / device."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from typing import Any

from ..core.errors import ModelError, ModelNotFoundError
from ..core.settings import Settings
from . import loader
from .cache import ModelCache


@dataclass
class LoadedLora:
    name: str
    adapter: str
    weight: float
    short_hash: str | None


def _adapter_name(name: str, location: str) -> str:
    """A stable PEFT adapter name: readable stem + a short digest of where the file lives."""
    digest = hashlib.sha1(location.encode("utf-8")).hexdigest()[:8]
    return "tb_" + re.sub(r"[^0-9A-Za-z_]", "_", name)[:40] + "_" + digest


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        registry: Any | None = None,
        cache: ModelCache | None = None,
        *,
        allow_paths: bool = True,
    ):
        """`allow_paths`: whether model names may be local folder paths (CLI yes; API no, so that a
        user-typed name can never point at a server folder)."""
        self.settings = settings
        self.allow_paths = allow_paths
        self._registry = registry
        self.cache = cache or ModelCache(settings.model_cache_items)
        # small perception models (SAM, LaMa, ...) live apart so big pipelines do not push them out
        self.aux_cache = ModelCache(4)
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

            dirs = [self.settings.resolved_models_dir, *self.settings.extra_model_dirs]
            self._registry = ModelRegistry(
                models_dirs=dirs,
                config_dir=self.settings.resolved_config_dir,
                hash_cache=self.settings.resolved_data_dir / "cache" / "hashes.json",
            )
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

    def missing(self, wanted: list[tuple[str, str]], arch: str | None = None, owner: str | None = None) -> list[str]:
        """Names (kind, name) that cannot be resolved here, as readable reasons; [] = all present.

        For single-file checkpoints the config folder of their architecture must exist too."""
        reasons: list[str] = []
        for kind, name in wanted:
            try:
                entry = self.entry(name, kind, owner)
            except ModelNotFoundError:
                reasons.append(f"{kind} {name!r} not found in {self.settings.resolved_models_dir}")
                continue
            if kind == "checkpoint" and entry.source == "folder":
                try:
                    self.registry.config_folder(entry.arch)
                except ModelError as exc:
                    reasons.append(str(exc))
            if arch is not None and entry.arch not in (arch, "unknown") and kind != "config":
                reasons.append(f"{kind} {name!r} is {entry.arch}, this recipe needs {arch}")
        return reasons

    def short_hash(self, entry) -> str | None:
        """A1111's model hash (first 10 hex of the file's sha256); None for folders / hub ids."""
        if entry.source != "folder" or entry.path is None:
            return None
        return self.registry.short_hash(entry)

    # --- pipelines ---------------------------------------------------------------------------
    def base_pipeline(self, checkpoint: str, arch: str, owner: str | None = None):
        """The img2img pipeline of a checkpoint (cached). Other pipelines are composed from its parts."""
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline

        entry = self._checkpoint_entry(checkpoint, arch, owner)
        cls = StableDiffusionXLImg2ImgPipeline if arch == "sdxl" else StableDiffusionImg2ImgPipeline
        return self._cached_pipeline(cls, entry, arch), entry

    def inpaint_base_pipeline(self, checkpoint: str, arch: str, owner: str | None = None):
        """The inpaint pipeline of an inpainting checkpoint (UNet with 9 input channels: latents + mask +
        masked-image latents), cached. Single files need the config folder `<config_dir>/<arch>-inpainting`
        (a diffusers inpainting pipeline's configs). Other pipelines are composed from its parts."""
        from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

        entry = self._checkpoint_entry(checkpoint, arch, owner)
        if not entry.inpainting:
            raise ModelError(f"checkpoint {checkpoint!r} is not an inpainting checkpoint: use base_pipeline")
        cls = StableDiffusionXLInpaintPipeline if arch == "sdxl" else StableDiffusionInpaintPipeline
        return self._cached_pipeline(cls, entry, f"{arch}-inpainting"), entry

    def _checkpoint_entry(self, checkpoint: str, arch: str, owner: str | None):
        entry = self.entry(checkpoint, "checkpoint", owner)
        if entry.arch not in (arch, "unknown"):
            raise ModelError(f"checkpoint {checkpoint!r} is {entry.arch}, this job needs {arch}")
        return entry

    def _cached_pipeline(self, cls: Any, entry: Any, config_name: str):
        key = ("pipe", cls.__name__, entry.location, str(self.dtype), str(self.device))

        def load():
            config = self.registry.config_folder(config_name) if entry.source == "folder" else None
            pipe = loader.load_pipeline(
                cls, source=entry.source, path=entry.location, config_folder=config,
                torch_dtype=self.dtype, offline=loader.is_offline(self.settings),
            )
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
            pipe._toonbooth_scheduler_config = dict(pipe.scheduler.config)
            pipe._toonbooth_loras = {}
            return pipe

        return self.cache.get_or_load(key, load)

    def controlnet(self, name: str, base_pipe: Any, arch: str, owner: str | None = None):
        entry = self.entry(name, "controlnet", owner)
        if entry.arch not in (arch, "unknown"):
            raise ModelError(f"ControlNet {name!r} is {entry.arch}, the checkpoint is {arch}")
        key = ("controlnet", entry.location, str(self.dtype), str(self.device))

        def load():
            config = None
            subfolder: str | None = "unet"
            if entry.source == "folder" and entry.layout != "diffusers":
                # a ControlNet config folder `<config_dir>/controlnet-<arch>` (config.json) wins over the
                # pipeline's UNet config (whose hint-encoder defaults are the standard ones)
                own = self.registry.config_dir / f"controlnet-{arch}"
                if (own / "config.json").is_file():
                    config, subfolder = own, None
                else:
                    config = self.registry.config_folder(arch)
            model = loader.load_controlnet(
                source=entry.source, path=entry.location, layout=entry.layout,
                unet_config=loader.read_unet_config(None, base_pipe), config_folder=config,
                torch_dtype=self.dtype, offline=loader.is_offline(self.settings), config_subfolder=subfolder,
            )
            return model.to(self.device)

        return self.cache.get_or_load(key, load), entry

    @staticmethod
    def compose(pipeline_cls: Any, base_pipe: Any, **extra: Any) -> Any:
        """A pipeline of another class over the same (cached) modules; cheap, no copies."""
        accepted = set(pipeline_cls._get_signature_keys(pipeline_cls)[0]) | set(
            pipeline_cls._get_signature_keys(pipeline_cls)[1]
        )
        parts = {k: v for k, v in base_pipe.components.items() if k in accepted}
        parts.update(extra)
        pipe = pipeline_cls(**parts)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def set_sampler(self, pipe: Any, base_pipe: Any, sampler: str, schedule_type: str | None = None) -> None:
        """Give `pipe` the scheduler of A1111 sampler `sampler` (+ A1111 >= 1.9 `schedule_type`)."""
        from .samplers import make_scheduler

        pipe.scheduler = make_scheduler(sampler, base_pipe._toonbooth_scheduler_config, schedule_type)

    def apply_loras(self, base_pipe: Any, loras: list[tuple[str, float]], owner: str | None = None) -> list[LoadedLora]:
        """Activate exactly these LoRAs (name, weight) on the pipeline's modules; others are switched off.
        Files stay loaded as adapters between jobs so switching is cheap."""
        loaded: dict[str, str] = base_pipe._toonbooth_loras
        out: list[LoadedLora] = []
        with self._lock:
            for name, weight in loras:
                entry = self.entry(name, "lora", owner)
                adapter = _adapter_name(entry.name, entry.location)
                if adapter not in loaded:
                    try:
                        base_pipe.load_lora_weights(entry.location, adapter_name=adapter)
                    except Exception as exc:
                        raise ModelError(f"cannot load LoRA {name!r} ({entry.location}): {exc}") from exc
                    loaded[adapter] = entry.location
                out.append(LoadedLora(entry.name, adapter, float(weight), self.short_hash(entry)))
            if out:
                base_pipe.enable_lora()
                base_pipe.set_adapters([x.adapter for x in out], adapter_weights=[x.weight for x in out])
            elif loaded:
                base_pipe.disable_lora()
        return out

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

    def prompt_embeddings(self, texts: list[str], pipe: Any, arch: str, owner: str | None = None):
        """The textual-inversion embeddings named in `texts` that fit `pipe`'s text encoders, resolved for
        `owner` (shared files and the owner's own styles): a `models.embeddings.PromptEmbeddings`."""
        from .embeddings import resolve_prompt_embeddings, text_encoder_widths

        return resolve_prompt_embeddings(self, texts, text_encoder_widths(pipe, arch), owner)
