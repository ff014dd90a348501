"""Typed job specs: one pydantic model per job kind, a discriminated union on `kind`, versioned.

The same JSON is the REST body, the CLI's job file, the queue row and the OpenAPI schema.
Bounds live on the fields, so a bad value is refused before any heavy work starts. One module per
studio; this package's namespace re-exports them all.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from ..errors import InputError
from .anime import ANIME_NEGATIVE_PROMPT, ANIME_PROMPT, AnimePoint, AnimeSpec
from .avatar import MEMOJI_NEGATIVE_PROMPT, MEMOJI_SEED, AvatarSpec, Expression, Gender
from .background import (
    BACKGROUND_PRESETS,
    PANEL_SIZES,
    BackgroundSpec,
    ClassicBackgroundParams,
    StyleRef,
)
from .base import AudioRef, Backend, ImageRef, LoraRef, SpecBase, VideoRef, validate_email
from .extras import ExtrasSpec
from .generate import (
    CONTROLNET_CONTROL_MODES,
    CONTROLNET_MODULES,
    CONTROLNET_RESIZE_MODES,
    ControlNetUnit,
    GenerateSpec,
)
from .makeup import MakeupIntensity, MakeupSpec
from .repose import ControlDetectSpec, ReposeSpec
from .talk import TALK_FPS, TalkSpec
from .toon import TOON_MIN_IMAGES, TOON_STYLE_RE, ToonSpec, TrainToonSpec
from .training import (
    STYLE_NAME_RE,
    TRAIN_PRESETS,
    TRAIN_SPEC_TYPES,
    TRIGGER_RE,
    TrainDreamBoothSpec,
    TrainLoraSpec,
    TrainTISpec,
)

__all__ = [
    "ANIME_NEGATIVE_PROMPT",
    "BACKGROUND_PRESETS",
    "PANEL_SIZES",
    "BackgroundSpec",
    "ClassicBackgroundParams",
    "StyleRef",
    "ANIME_PROMPT",
    "CONTROLNET_CONTROL_MODES",
    "CONTROLNET_MODULES",
    "CONTROLNET_RESIZE_MODES",
    "JOB_SPEC_TYPES",
    "MEMOJI_NEGATIVE_PROMPT",
    "MEMOJI_SEED",
    "STYLE_NAME_RE",
    "TRAIN_PRESETS",
    "TRAIN_SPEC_TYPES",
    "TALK_FPS",
    "TRIGGER_RE",
    "TOON_MIN_IMAGES",
    "TOON_STYLE_RE",
    "AnimePoint",
    "AnimeSpec",
    "AudioRef",
    "AvatarSpec",
    "Backend",
    "ControlDetectSpec",
    "ControlNetUnit",
    "Expression",
    "ExtrasSpec",
    "Gender",
    "GenerateSpec",
    "ImageRef",
    "JobSpec",
    "LoraRef",
    "ReposeSpec",
    "MakeupIntensity",
    "MakeupSpec",
    "SpecBase",
    "TalkSpec",
    "TrainDreamBoothSpec",
    "TrainLoraSpec",
    "TrainTISpec",
    "TrainToonSpec",
    "ToonSpec",
    "VideoRef",
    "input_error_from_validation",
    "job_kinds",
    "parse_job_spec",
    "validate_email",
]

# Add a kind: define its spec in its own module here and append it to this tuple.
JOB_SPEC_TYPES: tuple[type[SpecBase], ...] = (AvatarSpec, GenerateSpec, *TRAIN_SPEC_TYPES, AnimeSpec)
JOB_SPEC_TYPES += (TalkSpec,)  # talking emoticon
JOB_SPEC_TYPES += (ReposeSpec, ControlDetectSpec)  # webtoon: pose change + ControlNet preprocessing
JOB_SPEC_TYPES += (MakeupSpec,)  # makeup
JOB_SPEC_TYPES += (ToonSpec, TrainToonSpec)  # toon studio
JOB_SPEC_TYPES += (BackgroundSpec,)  # webtoon backgrounds
JOB_SPEC_TYPES += (ExtrasSpec,)  # A1111 extras (upscaling)

JobSpec = Annotated[Union[JOB_SPEC_TYPES], Field(discriminator="kind")]  # type: ignore[valid-type]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(JobSpec)


def job_kinds() -> list[str]:
    return [t.model_fields["kind"].default for t in JOB_SPEC_TYPES]


def parse_job_spec(data: dict[str, Any] | str | bytes) -> SpecBase:
    """Validate a job spec from a dict or JSON; errors become an InputError naming the field."""
    try:
        if isinstance(data, (str, bytes)):
            return _ADAPTER.validate_json(data)
        kind = data.get("kind") if isinstance(data, dict) else None
        if isinstance(data, dict) and kind is None and len(JOB_SPEC_TYPES) > 1:
            raise InputError("kind", f"is required; known: {', '.join(job_kinds())}", None)
        if kind is not None and kind not in job_kinds():
            raise InputError("kind", f"unknown job kind {kind!r}; known: {', '.join(job_kinds())}", kind)
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise input_error_from_validation(exc) from None


def input_error_from_validation(exc: ValidationError) -> InputError:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    if len(JOB_SPEC_TYPES) > 1 and loc and loc[0] in job_kinds():  # the union's tag is not a field
        loc = loc[1:]
    field = ".".join(str(p) for p in loc) or "body"
    value = err.get("input")
    if err.get("type") == "missing":
        return InputError(field, "is required", None)
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, InputError):  # a validator that already said what it got: its message as it is
        return InputError(field, inner.message, inner.value)
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if isinstance(value, (dict, list)):
        # a validator's own message usually says what it got (e.g. "takes 8-20 images, got 3")
        got = "" if " got " in msg else f", got a {type(value).__name__} of {len(value)}"
    else:
        shown = repr(value[:80] + "...") if isinstance(value, str) and len(value) > 80 else repr(value)
        got = "" if " got " in msg else f", got {shown}"
    return InputError(field, f"{msg}{got}", value)
