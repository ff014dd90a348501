"""`toonbooth anime`: the anime-me job (seed 002) from the shell — click points as options, the layers
written as PNGs. Builds an `AnimeSpec` and runs it through the one execution path (runtime.execute)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import ToonboothError

_NEG = {"neg", "negative", "-", "n", "0", "bg"}
_POS = {"pos", "positive", "+", "p", "1", "fg"}


def parse_point(text: str) -> dict[str, Any]:
    """`X,Y` (positive) or `X,Y:neg` / `X,Y:pos` -> {"x", "y", "positive"}."""
    coords, _, label = text.partition(":")
    label = label.strip().lower()
    parts = [p.strip() for p in coords.split(",")]
    if len(parts) != 2 or (label and label not in _NEG | _POS):
        raise typer.BadParameter(f"--point must be X,Y or X,Y:neg, got {text!r}")
    try:
        x, y = int(parts[0]), int(parts[1])
    except ValueError:
        raise typer.BadParameter(
            f"--point must be X,Y or X,Y:neg with integer pixels, got {text!r}"
        ) from None
    return {"x": x, "y": y, "positive": label not in _NEG}


def parse_box(text: str) -> list[int]:
    """`x0,y0,x1,y1` (pixels; x1 / y1 exclusive)."""
    try:
        values = [int(v.strip()) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise typer.BadParameter(f"--box must be x0,y0,x1,y1 (integer pixels), got {text!r}")
    return values


def anime(
    photo: Annotated[Path, typer.Argument(help="Photo with the person (PNG, JPEG, WebP, BMP, GIF).")],
    point: Annotated[
        list[str] | None,
        typer.Option(help="Click X,Y on the person (repeatable); X,Y:neg marks what is NOT the person."),
    ] = None,
    box: Annotated[str | None, typer.Option(help="Box x0,y0,x1,y1 around the person.")] = None,
    style: Annotated[
        str | None, typer.Option(help="Style / character LoRA (SD1.5), e.g. a trained style.")
    ] = None,
    style_weight: Annotated[float | None, typer.Option(help="LoRA strength (default 1).")] = None,
    trigger: Annotated[
        str | None, typer.Option(help="The style's trigger word, put first in the prompt.")
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt after the trigger word (A1111 syntax).")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="Negative prompt.")] = None,
    strength: Annotated[
        float | None, typer.Option(help="Denoising strength of the restyle (default 0.6).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Sampling steps (default 25).")] = None,
    cfg: Annotated[float | None, typer.Option(help="CFG scale (default 7).")] = None,
    sampler: Annotated[str | None, typer.Option(help="A1111 sampler name (default DPM++ 2M Karras).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; -1 = random (default).")] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="SD1.5 checkpoint (default stable-diffusion-v1-5).")
    ] = None,
    controlnet: Annotated[str | None, typer.Option(help="SD1.5 canny ControlNet.")] = None,
    sam_model: Annotated[str | None, typer.Option(help="SAM hub id, <models>/SAM/ name or folder.")] = None,
    lama_model: Annotated[str | None, typer.Option(help="LaMa weights name in <models>/LaMa/.")] = None,
    backend: Annotated[
        str, typer.Option(help="auto | neural | classic (per stage; auto: neural where weights exist).")
    ] = "auto",
    mask_only: Annotated[
        bool, typer.Option("--mask-only", help="Only segment: write the mask and an overlay.")
    ] = False,
    feather: Annotated[
        float | None, typer.Option(help="Soft edge of the character's mask, px (default 4).")
    ] = None,
    dilate: Annotated[
        int | None, typer.Option(help="Growth of the erased hole, px (default 1.5% of the long side).")
    ] = None,
    harmonize: Annotated[
        float | None, typer.Option(help="Colour match to the scene 0..1 (default 0.5).")
    ] = None,
    edge_line: Annotated[
        int | None, typer.Option(help="Outline around the character, px (default 0).")
    ] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the PNGs are written.")] = Path("out"),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Anime-me: click a person, erase them, redraw them as an anime character, put them back (seed 002).

    Writes <out-dir>/<photo>-anime-{composite,background,character,mask}.png (with --mask-only: mask and
    overlay). Without --point and --box the person under the largest face is used."""
    from ..core.images import load_image
    from ..core.specs import parse_job_spec
    from . import main as cli

    try:
        settings = cli.STATE.settings
        # 1. Check the photo with the same safe decoder every entry point uses, then store it
        data = photo.read_bytes() if photo.is_file() else None
        if data is None:
            raise ToonboothError(f"`photo`: no such file: {photo}")
        load_image(data, field="photo", max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
        raw: dict[str, Any] = {
            "kind": "anime", "backend": backend, "mode": "mask" if mask_only else "full",
            "points": [parse_point(p) for p in point or []],
        }  # fmt: skip
        if box is not None:
            raw["box"] = parse_box(box)
        optional = {
            "style": style, "style_weight": style_weight, "trigger": trigger, "prompt": prompt,
            "negative_prompt": negative_prompt, "strength": strength, "steps": steps, "cfg_scale": cfg,
            "sampler": sampler, "seed": seed, "checkpoint": checkpoint, "controlnet": controlnet,
            "sam_model": sam_model, "lama_model": lama_model, "feather_px": feather, "dilate_px": dilate,
            "harmonize": harmonize, "edge_line_px": edge_line,
        }  # fmt: skip
        raw.update({k: v for k, v in optional.items() if v is not None})
        models, storage = cli._runtime()
        raw["image"] = storage.put(data)
        # 2. Build the typed job spec and run it
        spec = parse_job_spec(raw)
        result = cli._run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        cli._fail(exc)
        return
    # 3. Write every output where the user can find it
    out_dir.mkdir(parents=True, exist_ok=True)
    typer.echo(f"backend: {result.backend}")
    for stage, name in result.info.get("backends", {}).items():
        typer.echo(f"  {stage}: {name} ({result.info.get('reasons', {}).get(stage, '')})")
    for w in result.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW)
    if "seed" in result.info:
        typer.echo(f"seed: {result.info['seed']}")
    for o in result.outputs:
        target = out_dir / f"{photo.stem}-anime-{o.name}.png"
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(storage.get(o.ref))
        os.replace(tmp, target)
        typer.echo(f"wrote {target} ({o.width}x{o.height})")


def register(app: typer.Typer) -> None:
    """Add the `anime` command to the toonbooth CLI."""
    app.command("anime")(anime)
