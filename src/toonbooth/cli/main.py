"""`toonbooth` command line. Every command builds a JobSpec and runs it through the runtime."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from ..core.errors import InputError, ToonboothError
from ..core.settings import Settings

app = typer.Typer(
    name="toonbooth",
    help="Turn photos into personal characters. Run `toonbooth COMMAND --help` for each command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List, add, fetch and fake (tiny) models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


class State:
    settings: Settings


STATE = State()


@app.callback()
def main(
    models_dir: Annotated[
        Path | None, typer.Option(help="Models folder in AUTOMATIC1111 layout (env TOONBOOTH_MODELS_DIR).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (env TOONBOOTH_DATA_DIR).")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")] = None,
) -> None:
    """toonbooth: photos to personal characters (memoji avatar, ...)."""
    overrides = {
        k: v for k, v in {"models_dir": models_dir, "data_dir": data_dir, "device": device}.items() if v
    }
    import re

    from pydantic import ValidationError

    if device is not None and not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        _fail(InputError("device", f"must be auto, cpu, cuda, cuda:N or mps, got {device!r}", device))
    try:
        STATE.settings = Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "settings"
        where = f"--{name.replace('_', '-')}" if name in overrides else f"TOONBOOTH_{name.upper()}"
        _fail(InputError(where, f"{err['msg']}, got {err.get('input')!r}", err.get("input")))


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _runtime():
    from ..runtime.families import model_manager
    from ..runtime.storage_local import LocalStorage

    settings = STATE.settings
    return model_manager(settings), LocalStorage(settings.resolved_data_dir)


def _run_job(spec, storage, models, quiet: bool = False):
    """Run a spec synchronously with a progress bar; return JobOutput."""
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

    def on_event(event):
        if isinstance(event, ProgressEvent):
            bar.set_description(event.stage or "working")
            bar.n = event.percent
            bar.refresh()
        elif isinstance(event, LogEvent) and event.level == "warning" and not quiet:
            tqdm.write(("warning: " if event.level == "warning" else "") + event.message, file=sys.stderr)

    ctx = JobContext(STATE.settings, models, storage, on_event=on_event, cancel_event=threading.Event())
    try:
        return execute(spec, ctx)
    finally:
        bar.close()


def _parse_lora(text: str) -> dict:
    name, _, weight = text.partition(":")
    try:
        return {"name": name, "weight": float(weight) if weight else 1.0}
    except ValueError:
        raise typer.BadParameter(f"--lora must be NAME or NAME:WEIGHT, got {text!r}") from None


@app.command()
def avatar(
    photo: Annotated[Path, typer.Argument(help="Photo of a person (PNG, JPEG, WebP, BMP, GIF).")],
    gender: Annotated[str, typer.Option(help="male | female | unspecified")] = "unspecified",
    expression: Annotated[
        str, typer.Option(help="smiling | crying | neutral | angry | laughing | sad")
    ] = "smiling",
    glasses: Annotated[
        bool, typer.Option("--glasses/--no-glasses", help="Add glasses to the prompt.")
    ] = False,
    backend: Annotated[
        str, typer.Option(help="auto | neural | classic (auto: neural when weights exist).")
    ] = "auto",
    steps: Annotated[int | None, typer.Option(help="Sampling steps (recipe: 50).")] = None,
    strength: Annotated[
        float | None, typer.Option(help="Denoising strength of both passes (recipe: 0.75).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed, -1 = random (recipe: 2968506678).")] = None,
    sampler: Annotated[str | None, typer.Option(help="A1111 sampler name (recipe: DDIM).")] = None,
    cfg: Annotated[float | None, typer.Option(help="CFG scale (recipe: 7).")] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="SDXL checkpoint name (recipe: samaritan-3d-cartoon-sdxl).")
    ] = None,
    second_checkpoint: Annotated[
        str | None, typer.Option(help="Checkpoint of pass 2 (default: same).")
    ] = None,
    controlnet: Annotated[
        str | None, typer.Option(help="SDXL canny ControlNet (recipe: diffusers_xl_canny_full).")
    ] = None,
    lora: Annotated[
        list[str] | None, typer.Option(help="NAME[:WEIGHT], repeatable; replaces the recipe's memoji:1.")
    ] = None,
    upscale: Annotated[float | None, typer.Option(help="Pass-2 / classic upscale (recipe: 1.5).")] = None,
    max_side: Annotated[
        int | None, typer.Option(help="Long-side cap of pass 1 (default: settings, 1024).")
    ] = None,
    second_pass: Annotated[bool, typer.Option("--second-pass/--no-second-pass", help="Run pass 2.")] = True,
    email: Annotated[
        str | None, typer.Option(help="E-mail the result (needs the service's SMTP settings).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output PNG (default: out/<photo>-avatar.png).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Turn a photo into a memoji-like 3D cartoon avatar (seed 000 recipe)."""
    from ..core.images import load_image
    from ..core.specs import parse_job_spec

    try:
        settings = STATE.settings
        # 1. Check the photo with the same safe decoder every entry point uses, then store it
        data = photo.read_bytes() if photo.is_file() else None
        if data is None:
            raise ToonboothError(f"`photo`: no such file: {photo}")
        load_image(data, field="photo", max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
        models, storage = _runtime()
        ref = storage.put(data)
        # 2. Build the typed job spec (only options the user gave override the recipe)
        raw = {
            "kind": "avatar",
            "image": ref,
            "gender": gender,
            "expression": expression,
            "glasses": glasses,
            "backend": backend,
            "second_pass": second_pass,
            "email": email,
        }
        optional = {
            "steps": steps,
            "strength": strength,
            "second_strength": strength,
            "seed": seed,
            "sampler": sampler,
            "cfg_scale": cfg,
            "checkpoint": checkpoint,
            "second_checkpoint": second_checkpoint,
            "controlnet": controlnet,
            "upscale": upscale,
            "max_side": max_side,
        }
        raw.update({k: v for k, v in optional.items() if v is not None})
        if lora is not None:
            raw["loras"] = [_parse_lora(x) for x in lora]
        spec = parse_job_spec(raw)
        # 3. Run it
        result = _run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        _fail(exc)
        return
    # 4. Write the result where the user can find it
    target = out or Path("out") / f"{photo.stem}-avatar.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    final = result.output("avatar")
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(storage.get(final.ref))
    os.replace(tmp, target)
    typer.echo(f"backend: {result.backend} — {result.backend_reason}")
    for w in result.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW)
    if "seed" in result.info:
        typer.echo(f"seed: {result.info['seed']}")
    typer.echo(f"wrote {target} ({final.width}x{final.height})")
    if email:
        typer.secho(
            "note: e-mail delivery runs in the service (`toonbooth serve`); the CLI did not send it",
            fg=typer.colors.YELLOW,
        )


@app.command("run")
def run_job_file(
    job: Annotated[Path, typer.Argument(help="A JobSpec as JSON (the same body as POST /v1/jobs).")],
    out_dir: Annotated[Path, typer.Option(help="Where the outputs are written.")] = Path("out"),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Run any job from a JSON job file (avatar, generate, anime, train_lora, train_dreambooth, train_ti).

    Image fields (image, mask, init_images, images, class_images, a ControlNet unit's image) may hold a
    local file path here (CLI only). Each output is written as <out-dir>/<output name>.png."""
    from ..core.images import load_image
    from ..core.specs import parse_job_spec

    try:
        if not job.is_file():
            raise InputError("job", f"no such file: {job}", str(job))
        try:
            raw = json.loads(job.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError("job", f"{job} is not valid JSON: {exc}", str(job)) from None
        if not isinstance(raw, dict):
            raise InputError("job", f"{job} must hold one JSON object, got a {type(raw).__name__}", str(job))
        models, storage = _runtime()
        settings = STATE.settings

        def stored(value, field: str):
            """A local file path in an image field -> checked, stored blob reference; anything else as is."""
            if not isinstance(value, str) or value.startswith(("blob:", "data:")):
                return value
            if Path(value).is_file():
                data = Path(value).read_bytes()
                load_image(
                    data, field=field, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels
                )
                return storage.put(data)
            if "." in value:  # base64 has no '.': this was meant as a file path
                raise InputError(field, f"no such file: {value}", value)
            return value

        for field in ("image", "mask"):
            if field in raw:
                raw[field] = stored(raw[field], field)
        for field in ("images", "init_images", "class_images"):
            if isinstance(raw.get(field), list):
                raw[field] = [stored(v, f"{field}[{i}]") for i, v in enumerate(raw[field])]
        for i, unit in enumerate(raw.get("controlnet_units") or []):
            if isinstance(unit, dict) and "image" in unit:
                unit["image"] = stored(unit["image"], f"controlnet_units[{i}].image")
        spec = parse_job_spec(raw)
        result = _run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        _fail(exc)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    typer.echo(f"backend: {result.backend} — {result.backend_reason}")
    for w in result.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW)
    for o in result.outputs:
        target = out_dir / f"{o.name}.png"
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(storage.get(o.ref))
        os.replace(tmp, target)
        typer.echo(f"wrote {target} ({o.width}x{o.height})")
    style = result.info.get("style")
    if isinstance(style, dict) and style.get("usage"):
        typer.echo(
            f"style {style.get('name')!r}: {style.get('files', {}).get('model')}; use it as: {style['usage']}"
        )


@models_app.command("list")
def models_list(
    kind: Annotated[
        str | None,
        typer.Option(help="Only this kind: checkpoint | controlnet | lora | embedding | vae | sam | lama"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List the models found in the models folder, and the catalog's recipes."""
    from ..models.catalog import recipes
    from ..runtime.families import model_manager

    manager = model_manager(STATE.settings)
    kinds = manager.families.kinds()
    if kind is not None and kind not in kinds:
        _fail(InputError("kind", f"must be one of {', '.join(kinds)}, got {kind!r}", kind))
    entries = manager.registry.list(kind=kind, include_refused=True)
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    typer.echo(f"models folder: {STATE.settings.resolved_models_dir}")
    usable = [e for e in entries if e.refused is None]
    refused = [e for e in entries if e.refused is not None]
    if not usable:
        typer.echo("  (no models found)")
    for e in usable:
        typer.echo(f"  {e.kind:<11} {e.arch:<8} {e.layout or '':<10} {e.name}  {e.path}")
    if refused:
        typer.echo("refused (not loaded):")
    for e in refused:
        typer.echo(f"  {e.path}: {e.refused}")
    typer.echo("recipes (toonbooth models pull NAME):")
    for name, members in recipes().items():
        typer.echo(f"  {name}: {', '.join(members)}")


@models_app.command("add")
def models_add(
    path: Annotated[
        Path, typer.Argument(help="A .safetensors file (checkpoint, ControlNet, LoRA, embedding).")
    ],
) -> None:
    """Identify a model file by its keys and copy it into the right models subfolder."""
    from ..runtime.families import model_manager

    try:
        entry = model_manager(STATE.settings).registry.add(path)
    except ToonboothError as exc:
        _fail(exc)
        return
    typer.echo(f"added {entry.kind} ({entry.arch}, {entry.layout}) as {entry.name}: {entry.path}")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A catalog entry or recipe (e.g. memoji, sdxl-base-config).")],
) -> None:
    """Download a catalog entry (or every entry of a recipe) from the model hub, verifying hashes."""
    from ..models.catalog import get_entry, recipes
    from ..models.hub import pull

    settings = STATE.settings
    names = recipes().get(name, [name])
    failures = []
    for n in names:
        try:
            paths = pull(
                get_entry(n),
                settings.resolved_models_dir,
                offline=settings.offline or None,
                config_dir=settings.resolved_config_dir,
            )
            for p in paths:
                typer.echo(f"ok {n}: {p}")
        except ToonboothError as exc:
            failures.append(f"{n}: {exc}")
            typer.secho(f"failed {n}: {exc}", fg=typer.colors.RED, err=True)
    if failures:
        raise typer.Exit(code=2)


@models_app.command("make-tiny")
def models_make_tiny(
    directory: Annotated[
        Path, typer.Argument(help="Folder to write the tiny model set into (A1111 layout).")
    ],
) -> None:
    """Write a complete tiny random-weight model set (SDXL + SD1.5 checkpoints, ControlNets, LoRAs,
    embeddings, config folders) so every command and the server run without real weights."""
    from ..models.tiny import make_tiny_set

    if directory.exists() and not directory.is_dir():
        _fail(InputError("directory", f"not a folder: {directory}", str(directory)))
    written = make_tiny_set(directory)
    for name, path in written.items():
        typer.echo(f"{name}: {path}")
    typer.echo(f"tiny model set written to {directory}; use it with --models-dir {directory}")


@app.command()
def version() -> None:
    """Print the toonbooth version."""
    from .. import __version__

    typer.echo(f"toonbooth {__version__}")


# --- server and users commands (cli/serve.py) --- added by the API helper
from .serve import register as _register_serve  # noqa: E402

_register_serve(app)

# --- anime-me command (cli/anime.py) --- added by the anime helper
from .anime import register as _register_anime  # noqa: E402

_register_anime(app)


# --- personalization training commands (cli/train.py) --- added by the training helper
from .train import register as _register_train  # noqa: E402

_register_train(app)


if __name__ == "__main__":  # pragma: no cover
    app()
