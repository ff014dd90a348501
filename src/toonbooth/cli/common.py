"""What the commands of the `toonbooth` CLI share: the settings of this run, errors, reading and storing image
files, running a job with a progress bar, writing its outputs, and Typer options derived from JobSpec fields.

`cli/main.py` builds the app and imports the command modules (`anime.py`, `train.py`, `serve.py`); those
import only this module, never `main` (which is `__main__` under `python -m toonbooth.cli.main`, so state kept
there would exist twice). Typer: https://typer.tiangolo.com/tutorial/parameter-types/ (Annotated options).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import annotated_types
import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ..core.artifacts import extension_for
from ..core.errors import InputError
from ..core.fs import atomic_write_bytes
from ..core.settings import Settings

if TYPE_CHECKING:
    from ..core.results import JobOutput, OutputRef
    from ..core.specs import SpecBase
    from ..models.manager import ModelManager
    from ..runtime.storage_base import Storage



# --- settings and errors ----------------------------------------------------------------------------
class State:
    """What the main callback sets up for the command that runs after it (one CLI run = one process)."""

    settings: Settings | None = None
    warned: set[str] = set()  # warnings already printed while the job ran (not repeated in the summary)


STATE = State()


def settings() -> Settings:
    """The settings of this run: those the main callback built from options + environment (or, when a
    command runs without the callback, from the environment alone)."""
    if STATE.settings is None:
        STATE.settings = Settings()
    return STATE.settings


_LIBRARY_WARNINGS = ("diffusers", "transformers", "torch", "huggingface_hub", "accelerate", "peft")


def quiet_libraries(quiet: bool) -> None:
    """By default the command line shows toonbooth's own messages only: diffusers / transformers / hub log
    levels at error, their progress bars off, their Python warnings ignored. `--verbose` keeps them all.
    Set through the libraries' environment variables so nothing heavy is imported for `--help`."""
    if not quiet:
        return
    for var, value in (("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):  # fmt: skip
        os.environ.setdefault(var, value)
    for module in _LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", module=rf"{module}(\..*)?")
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)


def make_app(**kwargs: Any) -> typer.Typer:
    """A Typer app for a command group. Help is plain text (click's formatter, wrapped to the terminal) rather
    than rich panels: rich cuts long option names (`--gradient-check…`) at 80 columns; these never do."""
    return typer.Typer(rich_markup_mode=None, **kwargs)


def fail(error: Exception | str) -> NoReturn:
    """Print `error: ...` in red on stderr and exit with status 2 (bad input / refused)."""
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


# --- runtime ----------------------------------------------------------------------------------------
def runtime() -> tuple[ModelManager, Storage]:
    """The model manager and the local blob storage of this run's settings (no service, no queue)."""
    from ..runtime.families import model_manager
    from ..runtime.storage_local import LocalStorage

    s = settings()
    return model_manager(s), LocalStorage(s.resolved_data_dir)


def run_job(spec: SpecBase, storage: Storage, models: ModelManager, *, quiet: bool = False) -> JobOutput:
    """Run `spec` here, synchronously, through the one execution path, with a progress bar on stderr
    (0-100 % over all passes; warnings the job logs are printed above it). Returns the job's outputs."""
    from tqdm import tqdm

    from ..core.events import LogEvent, ProgressEvent
    from ..runtime.context import JobContext
    from ..runtime.execute import execute

    bar = tqdm(
        total=100,
        unit="%",
        bar_format="{l_bar}{bar}| {n:.0f}/100% [{elapsed}<{remaining}]",
        disable=quiet,
        file=sys.stderr,
    )

    def on_event(event: Any) -> None:
        if isinstance(event, ProgressEvent):
            bar.set_description(event.stage or "working")
            bar.n = event.percent
            bar.refresh()
        elif (
            isinstance(event, LogEvent) and event.level == "warning" and not quiet
            and event.message not in STATE.warned
        ):  # fmt: skip
            STATE.warned.add(event.message)
            tqdm.write(f"warning: {event.message}", file=sys.stderr)

    ctx = JobContext(settings(), models, storage, on_event=on_event, cancel_event=threading.Event())
    try:
        return execute(spec, ctx)
    finally:
        bar.close()


# --- image files in, outputs out ----------------------------------------------------------------------
def read_image_file(path: Path, field: str = "photo") -> bytes:
    """The bytes of an image file, checked by the same safe decoder (and limits) every entry point uses."""
    from ..core.images import load_image

    if not path.is_file():
        raise InputError(field, f"no such file: {path}", str(path))
    data = path.read_bytes()
    s = settings()
    load_image(data, field=field, max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels)
    return data


def read_audio_file(path: Path, field: str = "voice") -> tuple[bytes, str]:
    """(bytes, media type) of a recording, checked by the same safe decoder and limits every entry point
    uses (format by content, bytes, duration)."""
    from ..core.audio import AUDIO_MEDIA_TYPES, decode_audio_bytes
    from ..core.media import read_path

    if not path.is_file():
        raise InputError(field, f"no such file: {path}", str(path))
    s = settings()
    data = read_path(path, field=field, max_bytes=s.max_audio_bytes, kind="audio")
    decoded = decode_audio_bytes(data, field=field, max_duration_s=s.max_audio_seconds, target_rate=None)
    return data, AUDIO_MEDIA_TYPES.get(decoded.source_format, "application/octet-stream")


def store_local_media(raw: dict[str, Any], storage: Storage) -> dict[str, Any]:
    """Local file paths in the media fields of a raw job spec — every field typed `ImageRef` / `AudioRef`
    (found by its marker, in lists and nested units too) — become checked, stored blob references, in place.
    Blob refs, data URLs and base64 pass through; a value that looks like a path but names no file is an error."""
    from ..core.media import media_fields
    from ..core.specs import JOB_SPEC_TYPES

    kind = raw.get("kind")
    spec_type = next((t for t in JOB_SPEC_TYPES if t.model_fields["kind"].default == kind), None)
    if spec_type is None:
        return raw  # the spec parser names the bad kind
    for path, media, value in list(media_fields(spec_type, raw)):
        if value.startswith(("blob:", "data:")):
            continue
        field = ".".join(str(x) for x in path)
        if Path(value).is_file() and media == "audio":
            data, media_type = read_audio_file(Path(value), field)
            stored = storage.put(data, content_type=media_type)
        elif Path(value).is_file():
            stored = storage.put(read_image_file(Path(value), field))
        elif "." in value:  # base64 has no '.': this was meant as a file path
            raise InputError(field, f"no such file: {value}", value)
        else:
            continue
        node: Any = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = stored
    return raw


def free_targets(targets: list[Path], force: bool = False) -> list[Path]:
    """Where to write a job's files without overwriting anything: the targets themselves when none exists (or
    with `force`), else all with the same smallest free suffix `-N` (`avatar.png` -> `avatar-2.png`)."""
    if force or not any(t.exists() for t in targets):
        return targets
    n = 2
    while True:
        moved = [t.with_name(f"{t.stem}-{n}{t.suffix}") for t in targets]
        if not any(t.exists() for t in moved):
            return moved
        n += 1


def write_output(storage: Storage, output: OutputRef, target: Path, *, size: bool = True, force: bool = False) -> Path:
    """Write one stored output to `target` atomically (folders created) and say so. The file extension must
    fit the output's media type (an MP4 is not written as `.png`); an existing file is kept (a `-N` suffix is
    added) unless `force`."""
    want = extension_for(output.media_type)
    if target.suffix.lower() not in (want, ".jpeg" if want == ".jpg" else want):
        fail(InputError("--out", f"the result is {output.media_type}: use a file name ending in {want}, got {target.name!r}",
                        str(target)))  # fmt: skip
    (target,) = free_targets([target], force)
    atomic_write_bytes(target, storage.get(output.ref))
    shown = f" ({output.width}x{output.height})" if size and output.width and output.height else ""
    typer.echo(f"wrote {target}{shown}")
    return target


def write_outputs(
    result: JobOutput, storage: Storage, out_dir: Path, name: Callable[[str], str], *, size: bool = True,
    force: bool = False,
) -> list[Path]:  # fmt: skip
    """Write every output of `result` as `out_dir / (name(output name) + the extension of its media type)`;
    existing files are kept (the job's files all get the same free `-N` suffix) unless `force`."""
    targets = free_targets([out_dir / (name(o.name) + extension_for(o.media_type)) for o in result.outputs], force)
    return [write_output(storage, o, t, size=size, force=True) for o, t in zip(result.outputs, targets, strict=True)]


def echo_summary(result: JobOutput) -> None:
    """Which backend ran and why (per stage where the job has stages), its warnings and the seed used."""
    reason = f" — {result.backend_reason}" if result.backend_reason else ""
    typer.echo(f"backend: {result.backend}{reason}")
    reasons = result.info.get("reasons", {})
    for stage, name in (result.info.get("backends") or {}).items():
        typer.echo(f"  {stage}: {name} ({reasons.get(stage, '')})")
    for w in result.warnings:
        if w not in STATE.warned:  # each warning once, whether shown while running or here
            STATE.warned.add(w)
            typer.secho(f"warning: {w}", fg=typer.colors.YELLOW)
    if "seed" in result.info:
        typer.echo(f"seed: {result.info['seed']}")


def parse_lora(text: str) -> dict[str, Any]:
    """`--lora NAME[:WEIGHT]` -> {"name", "weight"} (weight 1 when left out)."""
    name, _, weight = text.partition(":")
    try:
        return {"name": name, "weight": float(weight) if weight else 1.0}
    except ValueError:
        raise typer.BadParameter(f"--lora must be NAME or NAME:WEIGHT, got {text!r}") from None


# --- options derived from spec fields -------------------------------------------------------------------
_BOUND_SIGNS = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"),
                (annotated_types.Le, "le", "<="), (annotated_types.Lt, "lt", "<"))  # fmt: skip
_LONGEST_SHOWN_DEFAULT = 40


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _choices(annotation: Any) -> list[str]:
    """The values of a Literal field (also inside `X | None`)."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    return [c for arg in typing.get_args(annotation) for c in _choices(arg)]


def _bounds(field: FieldInfo) -> str:
    found = {key: (sign, getattr(m, key)) for m in field.metadata for cls, key, sign in _BOUND_SIGNS
             if isinstance(m, cls)}  # fmt: skip
    if "ge" in found and "le" in found:
        return f"{_number(found['ge'][1])} to {_number(found['le'][1])}"
    return " and ".join(f"{sign} {_number(value)}" for sign, value in found.values())


def _default(field: FieldInfo) -> str | None:
    value = field.default
    if value is PydanticUndefined or value is None or field.default_factory is not None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    text = _number(value)
    return text if len(text) <= _LONGEST_SHOWN_DEFAULT else None


def field_help(field: FieldInfo, help: str | None = None, *, show_default: bool = True) -> str:
    """Help text of an option that mirrors `field`: `help` (else the field's description), then its choices
    (Literal fields), its bounds and its default, e.g. "Denoising strength of the restyle (0 to 1;
    default 0.6)." The bounds are shown only; the spec checks them (errors name the field)."""
    text = (help or field.description or "").strip().rstrip(".")
    extras = []
    choices = _choices(field.annotation)
    if choices and not all(c in text for c in choices):
        extras.append(" | ".join(choices))
    if bounds := _bounds(field):
        extras.append(bounds)
    if show_default and (default := _default(field)) is not None:
        extras.append(f"default {default}")
    if extras:
        joined = "; ".join(extras)
        if not text:
            text = joined
        elif text.endswith(")"):  # no "(...) (...)"
            text = f"{text}, {joined}"
        else:
            text = f"{text} ({joined})"
    return f"{text}." if text else ""


def spec_option(
    spec: type[BaseModel], name: str, *param_decls: str, help: str | None = None, show_default: bool = True
) -> Any:
    """A Typer option (for `Annotated[T | None, spec_option(...)] = None`) that mirrors the field `name` of
    `spec`: its help comes from the field (see `field_help`); `param_decls` rename the flag (e.g.
    "--glasses/--no-glasses"). Leave the option's own default None, so only options the user gives
    override the spec's defaults; `show_default=False` where a preset, not the spec, decides the default."""
    field = spec.model_fields.get(name)
    if field is None:
        raise KeyError(f"{spec.__name__} has no field {name!r} (a CLI option mirrors it)")
    return typer.Option(*param_decls, help=field_help(field, help, show_default=show_default))
