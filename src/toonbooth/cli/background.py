"""`toonbooth background`: a webtoon background from a photo or a prompt (Korean welcome), in one or more styles.
Builds a `BackgroundSpec` and runs it through the one execution path (runtime.execute)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import ToonboothError
from ..core.specs import BackgroundSpec
from ..core.specs.diffusion import DiffusionParams
from .common import fail, read_image_file, run_job, runtime, spec_option, write_outputs

_S = BackgroundSpec
_D = DiffusionParams


def parse_style(text: str) -> dict[str, Any]:
    """`NAME[:WEIGHT]` -> {"name", "weight"} (weight 0.8 when left out, the spec's default)."""
    name, sep, weight = text.rpartition(":") if ":" in text else (text, "", "")
    if not sep:
        return {"name": text}
    try:
        return {"name": name, "weight": float(weight)}
    except ValueError:
        raise typer.BadParameter(f"--style must be NAME or NAME:WEIGHT, got {text!r}") from None


def parse_size(text: str) -> dict[str, Any]:
    """`tall` / `wide` / `square`, or `WIDTHxHEIGHT` (multiples of 8)."""
    if "x" in text.lower():
        w, _, h = text.lower().partition("x")
        try:
            return {"width": int(w), "height": int(h)}
        except ValueError:
            raise typer.BadParameter(f"--size must be tall, wide, square or WxH, got {text!r}") from None
    return {"size": text}


def _echo_translations(info: dict[str, Any]) -> None:
    for t in info.get("translations") or []:
        if t.get("source") in ("machine", "edited") and t.get("translated") != t.get("original"):
            label = t["field"].replace("_", " ")
            typer.echo(f"{label} (as written):  {t['original']}")
            typer.echo(f"{label} ({t['source']}): {t['translated']}")
        elif t.get("source") == "off":
            typer.echo(f"{t['field'].replace('_', ' ')}: not translated (translate_prompts=off)")


def background(
    photo: Annotated[
        Path | None, typer.Argument(help="Photo of a place (PNG, JPEG, WebP); leave out to draw from --prompt.")
    ] = None,
    prompt: Annotated[str | None, spec_option(_S, "prompt", help="What to draw (Korean or English)", show_default=False)] = None,
    negative_prompt: Annotated[
        str | None, spec_option(_S, "negative_prompt", help="Negative prompt (default: the preset's)")
    ] = None,
    translated_prompt: Annotated[
        str | None, spec_option(_S, "translated_prompt", help="Your own English version of a Korean prompt")
    ] = None,
    style: Annotated[
        list[str] | None,
        typer.Option(help="Style NAME[:WEIGHT] (LoRA or embedding, yours or shared; weight 0-2, default 0.8); "
                     "repeat to combine."),
    ] = None,  # fmt: skip
    preset: Annotated[str | None, spec_option(_S, "preset", help="Look")] = None,
    size: Annotated[
        str | None, typer.Option(help="Panel size from a prompt: tall (5:8), wide (16:9), square, or WxH.")
    ] = None,
    max_side: Annotated[int | None, spec_option(_S, "max_side", help="Photo: long side of the result")] = None,
    strength: Annotated[float | None, spec_option(_D, "strength", help="Photo: how far from the photo, default 0.6", show_default=False)] = None,
    steps: Annotated[int | None, spec_option(_D, "steps", help="Sampling steps, default 25", show_default=False)] = None,
    cfg: Annotated[float | None, spec_option(_D, "cfg_scale", help="CFG scale")] = None,
    sampler: Annotated[str | None, spec_option(_D, "sampler", help="A1111 sampler (default DPM++ 2M, Karras schedule)", show_default=False)] = None,
    seed: Annotated[int | None, spec_option(_D, "seed", help="Seed, -1 = random")] = None,
    checkpoint: Annotated[
        str | None, spec_option(_D, "checkpoint", help="SD1.5 or SDXL checkpoint (default stable-diffusion-v1-5)")
    ] = None,
    backend: Annotated[str | None, spec_option(_S, "backend")] = None,
    translate_only: Annotated[
        bool, typer.Option("--translate-only", help="Only translate the prompt and print it.")
    ] = False,
    out_dir: Annotated[Path, typer.Option(help="Where the PNG is written.")] = Path("out"),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """A webtoon background from a photo (img2img, the photo's aspect) or a prompt (txt2img, a panel size),
    in your trained styles; Korean prompts are translated first (seed 001).

    Writes <out-dir>/<photo or 'prompt'>-background.png. Without weights a photo runs the classic filter."""
    from ..core.specs import parse_job_spec

    try:
        # 1. Build the raw spec (only options the user gave override the spec's defaults)
        raw: dict[str, Any] = {"kind": "background", "mode": "translate" if translate_only else "full"}
        optional = {
            "prompt": prompt, "negative_prompt": negative_prompt, "translated_prompt": translated_prompt,
            "preset": preset, "max_side": max_side, "backend": backend,
        }  # fmt: skip
        raw.update({k: v for k, v in optional.items() if v is not None})
        if style:
            raw["styles"] = [parse_style(s) for s in style]
        if size is not None:
            raw.update(parse_size(size))
        diffusion = {"strength": strength, "steps": steps, "cfg_scale": cfg, "sampler": sampler, "seed": seed,
                     "checkpoint": checkpoint}  # fmt: skip
        if any(v is not None for v in diffusion.values()):
            raw["diffusion"] = {k: v for k, v in diffusion.items() if v is not None}
        # 2. Check and store the photo, build the typed spec and run it
        models, storage = runtime()
        if photo is not None:
            raw["image"] = storage.put(read_image_file(photo, "image"))
        spec = parse_job_spec(raw)
        result = run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    # 3. Say what was translated and which backend ran; write the picture
    _echo_translations(result.info)
    if translate_only:
        return
    reason = f" — {result.backend_reason}" if result.backend_reason else ""
    typer.echo(f"backend: {result.backend}{reason}")
    for w in result.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW)
    if result.info.get("seed") is not None:
        typer.echo(f"seed: {result.info['seed']}")
    stem = photo.stem if photo is not None else "prompt"
    write_outputs(result, storage, out_dir, lambda name: f"{stem}-{name}")


def register(app: typer.Typer) -> None:
    """Add the `background` command to the toonbooth CLI."""
    app.command("background")(background)
