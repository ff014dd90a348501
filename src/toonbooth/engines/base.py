"""The engine contract: what a studio is to the runtime (InvokeAI's invocation + invocation-context habit).

An engine has a `kind` (the JobSpec discriminator), its `Spec` type and a typed `Output` model, says
which models a spec needs (`required_models`), refuses bad input cheaply before any heavy work
(`check_inputs`, errors name the spec field and value) and runs (`run(spec, ctx) -> Output`). The
runtime finds engines in an `EngineRegistry` built once at the composition root (`runtime.engines`) —
there is no module-level table. Engines see only the narrow `EngineContext`.

Adding a studio: a spec module in `core/specs/`, an engine module here with its `Output`, the families
of the models it loads in `models/families/`, an entry in `runtime.engines.default_engines`, a CLI
command and a UI tab (see docs/architecture.md).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from ..core.artifacts import ARTIFACT_TYPES, Artifact, ImageArtifact
from ..core.errors import BackendUnavailableError, InputError, ModelNotFoundError
from ..core.settings import Settings
from ..core.specs import SpecBase
from ..models.refs import ModelRef

if TYPE_CHECKING:
    import numpy as np

    from ..models.manager import ModelManager


class EngineContext(Protocol):
    """Everything an engine may touch. Implemented by the runtime (`runtime.context.JobContext`) for the
    CLI, the server's runners and workers alike."""

    settings: Settings
    models: ModelManager
    storage: Any
    owner: str | None
    job_id: str

    def load_image(self, ref: str, field: str) -> Image.Image:
        """Resolve an ImageRef (stored blob / data URL / base64) through the safe decoder."""
        ...

    def load_audio(self, ref: str, field: str, sample_rate: int) -> np.ndarray:
        """Resolve an AudioRef through the safe audio decoder: float32 mono at `sample_rate`."""
        ...

    def progress(self, step: int, total: int, *, stage: str = "", preview: Image.Image | None = None) -> None:
        """Report progress over the whole job; also the place where cancel is noticed."""
        ...

    def wants_preview(self, step: int, steps: int) -> bool:
        """Whether to pass a live preview to `progress` after denoising step `step` (1-based) of `steps`."""
        ...

    def step_callback(self, *, offset: int, total: int, stage: str, arch: str | None) -> Callable[..., dict]:
        """A diffusers `callback_on_step_end`: progress `offset + i + 1` of `total`, a live latent preview
        when due (`arch` picks the preview matrix; None: no previews), and cancel — in one place."""
        ...

    def check_canceled(self) -> None:
        """Raise JobCanceledError if the job was canceled."""
        ...

    def take_skip(self) -> bool:
        """Whether A1111's `/skip` asked to skip the current image of a batch (consumed when read)."""
        ...

    def log(self, message: str, *, warning: bool = False) -> None: ...

    def release_upload(self, ref: str) -> bool:
        """Give up the job owner's claim on an uploaded blob (training photos after training)."""
        ...


class EngineOutput(BaseModel):
    """What an engine returns: its artifacts (fields typed as an artifact or a list of them), which one is
    the primary result (`primary`, a field name, declared per studio), the backend that ran and why,
    warnings, and `info` (free-form details; typed fields of a subclass that are not artifacts are stored
    next to them in the job's `info`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    primary: ClassVar[str]
    # list fields: how item i is named in the job's outputs (`{i}` is the index)
    item_names: ClassVar[dict[str, str]] = {}

    backend: str = Field(description="Which backend ran: neural, classic or mixed.")
    backend_reason: str = ""
    warnings: list[str] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)

    def artifacts(self) -> list[tuple[str, Artifact, bool]]:
        """(output name, artifact, is_primary), the primary first, then in field order."""
        out: list[tuple[str, Artifact, bool]] = []
        primary = self.primary_field()
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, ARTIFACT_TYPES):
                out.append((name, value, name == primary))
            elif isinstance(value, list) and value and all(isinstance(v, ARTIFACT_TYPES) for v in value):
                pattern = self.item_names.get(name, name + "-{i}")
                out += [(pattern.format(i=i), v, name == primary and i == 0) for i, v in enumerate(value)]
        out.sort(key=lambda t: not t[2])
        return out

    def primary_field(self) -> str | None:
        """The declared primary field when it holds a result; else the first field that does (a studio
        whose mode leaves the primary out, e.g. anime-me's mask-only mode, falls to its next result)."""
        names = [self.primary] + [n for n in type(self).model_fields if n != self.primary]
        for name in names:
            value = getattr(self, name, None)
            if isinstance(value, ARTIFACT_TYPES) or (isinstance(value, list) and value and isinstance(value[0], ARTIFACT_TYPES)):
                return name
        return None

    def details(self) -> dict[str, Any]:
        """`info` plus the subclass's typed non-artifact fields (JSON-ready), as stored with the job."""
        typed = {
            name for name, f in type(self).model_fields.items()
            if name not in EngineOutput.model_fields and not _holds_artifacts(f.annotation)
        }  # fmt: skip
        return {**self.info, **(self.model_dump(mode="json", include=typed) if typed else {})}


def _holds_artifacts(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, ARTIFACT_TYPES):
        return True
    return any(_holds_artifacts(arg) for arg in typing.get_args(annotation))


class ImagesOutput(EngineOutput):
    """An engine whose result is a list of images (`images`, named image-0, image-1, ...)."""

    primary: ClassVar[str] = "images"
    item_names: ClassVar[dict[str, str]] = {"images": "image-{i}"}
    images: list[ImageArtifact]


@dataclass(frozen=True)
class JobCost:
    """What one job may cost, per quantity: (value, the spec field that drives it). Checked at submit against
    the settings' per-job limits (`check_job_limits`); a studio reports what applies to it."""

    pixels: tuple[int, str] | None = None  # the largest image it makes (width * height)
    images: tuple[int, str] | None = None  # images it makes
    pixel_steps: tuple[int, str] | None = None  # sum over denoising steps of the pixels denoised
    frames: tuple[int, str] | None = None  # video / animation frames
    train_pixel_steps: tuple[int, str] | None = None  # training steps x resolution^2


_LIMITS = {
    "pixels": ("max_job_pixels", "pixels per image"),
    "images": ("max_job_images", "images per job"),
    "pixel_steps": ("max_job_pixel_steps", "pixel-steps (width x height x denoising steps, summed)"),
    "frames": ("max_job_frames", "frames per job"),
    "train_pixel_steps": ("max_train_pixel_steps", "training pixel-steps (steps x resolution^2)"),
}


def check_job_limits(cost: JobCost | None, settings: Settings, owner: str | None) -> None:
    """Refuse a job over a per-job limit of the settings (operators listed in `unlimited_users` are exempt),
    naming the spec field and the limit (422)."""
    if cost is None or (owner is not None and owner in settings.unlimited_users):
        return
    for name, (setting, what) in _LIMITS.items():
        entry = getattr(cost, name)
        limit = getattr(settings, setting)
        if entry is not None and limit > 0 and entry[0] > limit:
            value, field = entry
            raise InputError(
                field, f"this job would need {value:,} {what}, over this server's limit of {limit:,} "
                f"(setting {setting})", value,
            )  # fmt: skip


SpecT = TypeVar("SpecT", bound=SpecBase)
OutT = TypeVar("OutT", bound=EngineOutput)


class Engine(Generic[SpecT, OutT]):
    """One studio / job kind. Subclasses set `kind`, `Spec`, `Output` and implement `run`."""

    kind: str
    Spec: type[SpecBase]
    Output: type[EngineOutput]
    queue: str = "infer"  # "infer" or "train": which workers take it (long jobs apart)

    def required_models(self, spec: SpecT) -> list[ModelRef]:
        """The models a neural run of `spec` loads (an `auto` job runs classic when one is missing)."""
        return []

    def check_inputs(self, spec: SpecT, models: ModelManager, owner: str | None) -> None:
        """Refuse what can be refused without loading weights or decoding images (errors name the field)."""

    def cost(self, spec: SpecT, settings: Settings) -> JobCost | None:
        """What the job may cost (sizes, images, steps, frames), for the per-job limits; None = nothing to bound."""
        return None

    def run(self, spec: SpecT, ctx: EngineContext) -> OutT:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind!r}>"


class EngineRegistry(Mapping[str, Engine]):
    """Engines by kind; built once where the program is put together and handed to the runtime."""

    def __init__(self, engines: Iterable[Engine]):
        self._by_kind: dict[str, Engine] = {}
        for engine in engines:
            if engine.kind in self._by_kind:
                raise ValueError(f"two engines for job kind {engine.kind!r}")
            self._by_kind[engine.kind] = engine

    def __getitem__(self, kind: str) -> Engine:
        return self._by_kind[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_kind)

    def __len__(self) -> int:
        return len(self._by_kind)

    def engine(self, kind: str) -> Engine:
        """The engine of `kind`; InputError naming `kind` when there is none."""
        if kind not in self._by_kind:
            known = ", ".join(sorted(self._by_kind))
            raise InputError("kind", f"no engine for job kind {kind!r}; known: {known}", kind)
        return self._by_kind[kind]

    def replace(self, *engines: Engine) -> EngineRegistry:
        """A copy with these engines in place of those of the same kinds (tests swap in fakes)."""
        merged = dict(self._by_kind)
        for engine in engines:
            merged[engine.kind] = engine
        return EngineRegistry(merged.values())


def check_neural_available(engine: Engine, spec: Any, backend: str, models: ModelManager, owner: str | None) -> None:
    """With `backend="neural"` every required model must be installed (BackendUnavailableError, 409)."""
    if backend == "neural":
        missing = models.missing(engine.required_models(spec), owner=owner)
        if missing:
            raise BackendUnavailableError("neural weights missing: " + "; ".join(missing))


def check_model_names(refs: list[ModelRef], models: ModelManager) -> None:
    """Where names must not be paths (the API's manager), a name that looks like one is refused, naming
    its field — before anything looks at the disk."""
    if models.allow_paths:
        return
    for ref in refs:
        name = ref.name.strip()
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "~", ".")) or ".." in parts or "\\" in name or len(parts) > 3:
            raise InputError(ref.field, f"must be a model name or a hub id `org/name`, got {name!r}", ref.name)


def resolve_or_field_error(models: ModelManager, ref: ModelRef, owner: str | None):
    """The registry entry of `ref`, or an InputError naming `ref.field` (unknown model name)."""
    try:
        return models.entry(ref.name, ref.kind, owner)
    except ModelNotFoundError as exc:
        raise InputError(ref.field, str(exc), ref.name) from None
