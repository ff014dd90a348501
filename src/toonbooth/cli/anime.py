"""`toonbooth anime`: the anime-me job (seed 002) from the shell — click points as options, the layers
written as PNGs. Builds an `AnimeSpec` and runs it through the one execution path (runtime.execute)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import ToonboothError
from ..core.specs import AnimeSpec
from .common import echo_summary, fail, read_image_file, run_job, runtime, spec_option, write_outputs

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


_S = AnimeSpec


def anime(
    photo: Annotated[Path, typer.Argument(help="Photo with the person (PNG, JPEG, WebP, BMP, GIF).")],
    point: Annotated[
        list[str] | None,
        typer.Option(help="Click X,Y on the person (repeatable); X,Y:neg marks what is NOT the person."),
    ] = None,
    box: Annotated[str | None, typer.Option(help="Box x0,y0,x1,y1 around the person.")] = None,
    style: Annotated[str | None, spec_option(_S, "style")] = None,
    style_weight: Annotated[float | None, spec_option(_S, "style_weight")] = None,
    trigger: Annotated[str | None, spec_option(_S, "trigger")] = None,
    prompt: Annotated[
        str | None, spec_option(_S, "prompt", help="Prompt after the trigger word (A1111 syntax)")
    ] = None,
    negative_prompt: Annotated[str | None, spec_option(_S, "negative_prompt", help="Negative prompt")] = None,
    strength: Annotated[float | None, spec_option(_S, "strength")] = None,
    steps: Annotated[int | None, spec_option(_S, "steps", help="Sampling steps")] = None,
    cfg: Annotated[float | None, spec_option(_S, "cfg_scale", help="CFG scale")] = None,
    sampler: Annotated[str | None, spec_option(_S, "sampler")] = None,
    seed: Annotated[int | None, spec_option(_S, "seed", help="Seed, -1 = random")] = None,
    checkpoint: Annotated[str | None, spec_option(_S, "checkpoint")] = None,
    controlnet: Annotated[str | None, spec_option(_S, "controlnet")] = None,
    sam_model: Annotated[str | None, spec_option(_S, "sam_model")] = None,
    lama_model: Annotated[str | None, spec_option(_S, "lama_model")] = None,
    backend: Annotated[str | None, spec_option(_S, "backend")] = None,
    mask_only: Annotated[
        bool, typer.Option("--mask-only", help="Only segment: write the mask and an overlay.")
    ] = False,
    feather: Annotated[
        float | None, spec_option(_S, "feather_px", help="Soft edge of the character's mask, px")
    ] = None,
    dilate: Annotated[int | None, spec_option(_S, "dilate_px")] = None,
    harmonize: Annotated[float | None, spec_option(_S, "harmonize")] = None,
    edge_line: Annotated[
        int | None, spec_option(_S, "edge_line_px", help="Outline around the character, px")
    ] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the PNGs are written.")] = Path("out"),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Anime-me: click a person, erase them, redraw them as an anime character, put them back (seed 002).

    Writes <out-dir>/<photo>-anime-{composite,background,character,mask}.png (with --mask-only: mask and
    overlay). Without --point and --box the person under the largest face is used."""
    from ..core.specs import parse_job_spec

    try:
        # 1. Check the photo with the same safe decoder every entry point uses
        data = read_image_file(photo, "photo")
        raw: dict[str, Any] = {
            "kind": "anime",
            "mode": "mask" if mask_only else "full",
            "points": [parse_point(p) for p in point or []],
        }
        if box is not None:
            raw["box"] = parse_box(box)
        optional = {
            "backend": backend, "style": style, "style_weight": style_weight, "trigger": trigger,
            "prompt": prompt, "negative_prompt": negative_prompt, "strength": strength, "steps": steps,
            "cfg_scale": cfg, "sampler": sampler, "seed": seed, "checkpoint": checkpoint,
            "controlnet": controlnet, "sam_model": sam_model, "lama_model": lama_model, "feather_px": feather,
            "dilate_px": dilate, "harmonize": harmonize, "edge_line_px": edge_line,
        }  # fmt: skip
        raw.update({k: v for k, v in optional.items() if v is not None})
        # 2. Store it, build the typed job spec and run it
        models, storage = runtime()
        raw["image"] = storage.put(data)
        spec = parse_job_spec(raw)
        result = run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    # 3. Write every output where the user can find it
    echo_summary(result)
    write_outputs(result, storage, out_dir, lambda name: f"{photo.stem}-anime-{name}")


def register(app: typer.Typer) -> None:
    """Add the `anime` command to the toonbooth CLI."""
    app.command("anime")(anime)
