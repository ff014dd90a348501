"""`toonbooth` command line. Every command builds a JobSpec and runs it through the runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..core.errors import InputError, ToonboothError
from ..core.settings import Settings
from ..core.specs import AvatarSpec
from .common import (
    STATE,
    echo_summary,
    fail,
    make_app,
    parse_lora,
    quiet_libraries,
    read_image_file,
    run_job,
    runtime,
    settings,
    spec_option,
    store_local_media,
    write_output,
    write_outputs,
)

app = make_app(
    name="toonbooth",
    help="Turn photos into personal characters. Run `toonbooth COMMAND --help` for each command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = make_app(help="List, add, fetch and fake (tiny) models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@app.callback()
def main(
    models_dir: Annotated[
        Path | None, typer.Option(help="Models folder in AUTOMATIC1111 layout (env TOONBOOTH_MODELS_DIR).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (env TOONBOOTH_DATA_DIR).")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the libraries' own warnings and loading bars.")
    ] = False,
) -> None:
    """toonbooth: photos to personal characters (memoji avatar, ...)."""
    quiet_libraries(not verbose)
    overrides = {
        k: v for k, v in {"models_dir": models_dir, "data_dir": data_dir, "device": device}.items() if v
    }
    import re

    from pydantic import ValidationError

    if device is not None and not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        fail(InputError("device", f"must be auto, cpu, cuda, cuda:N or mps, got {device!r}", device))
    try:
        STATE.settings = Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "settings"
        where = f"--{name.replace('_', '-')}" if name in overrides else f"TOONBOOTH_{name.upper()}"
        fail(InputError(where, f"{err['msg']}, got {err.get('input')!r}", err.get("input")))


_A = AvatarSpec


@app.command()
def avatar(
    photo: Annotated[Path, typer.Argument(help="Photo of a person (PNG, JPEG, WebP, BMP, GIF).")],
    gender: Annotated[str | None, spec_option(_A, "gender")] = None,
    expression: Annotated[str | None, spec_option(_A, "expression")] = None,
    glasses: Annotated[bool | None, spec_option(_A, "glasses", "--glasses/--no-glasses")] = None,
    backend: Annotated[str | None, spec_option(_A, "backend")] = None,
    steps: Annotated[int | None, spec_option(_A, "steps", help="Sampling steps")] = None,
    strength: Annotated[
        float | None, spec_option(_A, "strength", help="Denoising strength of both passes")
    ] = None,
    seed: Annotated[int | None, spec_option(_A, "seed", help="Seed, -1 = random")] = None,
    sampler: Annotated[str | None, spec_option(_A, "sampler")] = None,
    cfg: Annotated[float | None, spec_option(_A, "cfg_scale", help="CFG scale")] = None,
    checkpoint: Annotated[str | None, spec_option(_A, "checkpoint")] = None,
    second_checkpoint: Annotated[str | None, spec_option(_A, "second_checkpoint")] = None,
    controlnet: Annotated[str | None, spec_option(_A, "controlnet")] = None,
    lora: Annotated[
        list[str] | None, typer.Option(help="NAME[:WEIGHT], repeatable; replaces the recipe's memoji:1.")
    ] = None,
    upscale: Annotated[float | None, spec_option(_A, "upscale")] = None,
    max_side: Annotated[int | None, spec_option(_A, "max_side")] = None,
    second_pass: Annotated[
        bool | None, spec_option(_A, "second_pass", "--second-pass/--no-second-pass")
    ] = None,
    email: Annotated[
        str | None, typer.Option(help="E-mail the result (needs the service's SMTP settings).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output PNG (default: out/<photo>-avatar.png).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Turn a photo into a memoji-like 3D cartoon avatar (seed 000 recipe)."""
    from ..core.specs import parse_job_spec

    try:
        # 1. Check the photo with the same safe decoder every entry point uses, then store it
        data = read_image_file(photo, "photo")
        models, storage = runtime()
        # 2. Build the typed job spec (only options the user gave override the recipe)
        raw = {"kind": "avatar", "image": storage.put(data)}
        optional = {
            "gender": gender, "expression": expression, "glasses": glasses, "backend": backend,
            "second_pass": second_pass, "email": email, "steps": steps, "strength": strength,
            "second_strength": strength, "seed": seed, "sampler": sampler, "cfg_scale": cfg,
            "checkpoint": checkpoint, "second_checkpoint": second_checkpoint, "controlnet": controlnet,
            "upscale": upscale, "max_side": max_side,
        }  # fmt: skip
        raw.update({k: v for k, v in optional.items() if v is not None})
        if lora is not None:
            raw["loras"] = [parse_lora(x) for x in lora]
        spec = parse_job_spec(raw)
        # 3. Run it
        result = run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    # 4. Write the result where the user can find it
    echo_summary(result)
    write_output(storage, result.output("avatar"), out or Path("out") / f"{photo.stem}-avatar.png", force=force)
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
    """Run any job from a JSON job file (every job kind: avatar, generate, anime, background, repose, toon,
    talk, makeup, extras, train_*).

    Media fields (images, recordings: anywhere the spec takes one) may hold a local file path here (CLI only).
    Each output is written as <out-dir>/<output name> with the extension of its media type (.png, .mp4, ...)."""
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
        models, storage = runtime()
        spec = parse_job_spec(store_local_media(raw, storage))
        result = run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    echo_summary(result)
    write_outputs(result, storage, out_dir, lambda name: name)
    style = result.info.get("style")
    if isinstance(style, dict) and style.get("usage"):
        typer.echo(
            f"style {style.get('name')!r}: {style.get('files', {}).get('model')}; use it as: {style['usage']}"
        )


@models_app.command("list")
def models_list(
    kind: Annotated[
        str | None,
        typer.Option(help="Only this kind, e.g. checkpoint | controlnet | lora | sam | lama | stylegan2 | psp"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """List the models found in the models folder, and the catalog's recipes."""
    from ..models.catalog import recipes
    from ..runtime.families import model_manager

    manager = model_manager(settings())
    kinds = manager.families.kinds()
    if kind is not None and kind not in kinds:
        fail(InputError("kind", f"must be one of {', '.join(kinds)}, got {kind!r}", kind))
    entries = manager.registry.list(kind=kind, include_refused=True)
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    typer.echo(f"models folder: {settings().resolved_models_dir}")
    usable = [e for e in entries if e.refused is None]
    refused = [e for e in entries if e.refused is not None]
    if not usable:
        typer.echo("  (no models found)")
    from collections import Counter

    taken = Counter((e.kind, e.name) for e in usable)
    for e in usable:
        name = e.name
        if taken[(e.kind, e.name)] > 1:  # two models answer to this name: say how to pick each
            name = f"{e.name} (select with {manager.registry.unique_name(e)!r})"
        typer.echo(f"  {e.kind:<11} {e.arch:<8} {e.layout or '':<10} {name}  {e.path}")
    if refused:
        typer.echo("refused (not loaded):")
    for e in refused:
        typer.echo(f"  {e.path}: {e.refused}")
    from .toon import licence_lines  # toon studio: licences of the listed models and the packaged ones

    for line in licence_lines(manager, usable):
        typer.echo(line)
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
        entry = model_manager(settings()).registry.add(path)
    except ToonboothError as exc:
        fail(exc)
    typer.echo(f"added {entry.kind} ({entry.arch}, {entry.layout}) as {entry.name}: {entry.path}")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A catalog entry or recipe (e.g. memoji, sdxl-base-config).")],
) -> None:
    """Download a catalog entry (or every entry of a recipe) from the model hub, verifying hashes."""
    from ..models.catalog import get_entry, recipes
    from ..models.hub import pull

    s = settings()
    names = recipes().get(name, [name])
    failures = []
    for n in names:
        try:
            paths = pull(
                get_entry(n),
                s.resolved_models_dir,
                offline=s.offline or None,
                config_dir=s.resolved_config_dir,
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
    seed_names: Annotated[
        bool,
        typer.Option(
            "--seed-names",
            help="Also write the seed's own file names (samaritan3dCartoon_v40SDXL, diffusers_xl_canny_full, "
            "memoji-07) so the seed's client runs on the tiny weights.",
        ),
    ] = False,
) -> None:
    """Write a complete tiny random-weight model set (SDXL + SD1.5 checkpoints, ControlNets, LoRAs,
    embeddings, config folders) so every command and the server run without real weights."""
    from ..models.tiny import make_tiny_set
    from ..nets.tiny_pose import make_tiny_pose_set

    if directory.exists() and not directory.is_dir():
        fail(InputError("directory", f"not a folder: {directory}", str(directory)))
    written = make_tiny_set(directory, seed_names=seed_names)
    from ..nets.talk_tiny import write_tiny_talk_set  # talking emoticon: LivePortrait, JoyVASA, HuBERT

    written.update(write_tiny_talk_set(directory))
    written.update(make_tiny_pose_set(directory))  # the pose studio: DWPose pair, AnimateAnyone, IP-Adapter
    from ..nets.translate import save_tiny_marian  # webtoon: a tiny Korean -> English translator

    written["translate-ko-en"] = save_tiny_marian(directory / "MarianMT" / "tiny-marian-ko-en")
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

# --- makeup command + models convert (cli/makeup.py) --- added by the makeup helper
from .makeup import register as _register_makeup  # noqa: E402

_register_makeup(app, models_app)


# --- talking emoticon command (cli/talk.py) --- added by the talk helper
from .talk import register as _register_talk  # noqa: E402

_register_talk(app)

# --- pose change: repose, pose detect, models convert (cli/repose.py) --- added by the webtoon-pose helper
from .repose import register as _register_repose  # noqa: E402

_register_repose(app, models_app)

# --- personalization training commands (cli/train.py) --- added by the training helper
from .train import register as _register_train  # noqa: E402

_register_train(app)

# --- toon studio commands (cli/toon.py): toon, train toon, models convert / make-tiny-toon --- toonify helper
from .toon import register as _register_toon  # noqa: E402

_register_toon(app, models_app)
# --- webtoon background command (cli/background.py) --- added by the webtoon helper
from .background import register as _register_background  # noqa: E402

_register_background(app)
# --- upscale command (cli/extras.py: A1111 extras) --- added by the a1111 helper
from .extras import register as _register_extras  # noqa: E402

_register_extras(app)


if __name__ == "__main__":  # pragma: no cover
    app()

# --- models convert: one operator command for every family (cli/convert.py) ---
from .convert import register as _register_convert  # noqa: E402

_register_convert(models_app)
