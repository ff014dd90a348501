"""`toonbooth upscale`: A1111's extras (the `extras` job) from the shell — upscale pictures by a factor or
to a size with Lanczos / Nearest or an ESRGAN-family network (models/ESRGAN, models/RealESRGAN)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import InputError, ToonboothError
from ..core.specs import ExtrasSpec
from .common import echo_summary, fail, read_image_file, run_job, runtime, spec_option, write_outputs

_S = ExtrasSpec


def parse_size(text: str) -> tuple[int, int]:
    """`WxH` -> (W, H)."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit():
        raise typer.BadParameter(f"--to must be WIDTHxHEIGHT, e.g. 1024x768, got {text!r}")
    return int(w), int(h)


def upscale(
    images: Annotated[list[Path], typer.Argument(help="Pictures to upscale (PNG, JPEG, WebP, ...).")],
    upscaler: Annotated[
        str, typer.Option(help="Lanczos, Nearest, or an ESRGAN-family network's name (R-ESRGAN 4x+, a file stem).")
    ] = "Lanczos",
    scale: Annotated[float | None, spec_option(_S, "upscaling_resize", help="Factor")] = None,
    to: Annotated[str | None, typer.Option(help="Upscale to WIDTHxHEIGHT instead of by a factor.")] = None,
    no_crop: Annotated[bool, typer.Option("--no-crop", help="With --to: keep the upscaled size, no canvas.")] = False,
    upscaler_2: Annotated[str | None, spec_option(_S, "upscaler_2")] = None,
    visibility_2: Annotated[float | None, spec_option(_S, "extras_upscaler_2_visibility", help="Blend of upscaler 2")] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the PNGs are written.")] = Path("out"),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Upscale pictures as A1111's Extras tab does (writes <out-dir>/<name>-upscaled.png).

    A factor s gives int(w*s)//8*8 x int(h*s)//8*8 pixels, as A1111 sizes it."""
    from ..core.specs import parse_job_spec

    try:
        models, storage = runtime()
        refs = [storage.put(read_image_file(p, f"images.{i}")) for i, p in enumerate(images)]
        raw: dict[str, Any] = {"kind": "extras", "images": refs, "names": [p.stem for p in images],
                               "upscaler_1": upscaler}  # fmt: skip
        if to is not None:
            w, h = parse_size(to)
            raw.update(resize_mode=1, upscaling_resize_w=w, upscaling_resize_h=h, upscaling_crop=not no_crop)
        optional = {"upscaling_resize": scale, "upscaler_2": upscaler_2, "extras_upscaler_2_visibility": visibility_2}
        raw.update({k: v for k, v in optional.items() if v is not None})
        if upscaler_2 is not None and visibility_2 is None:
            raise InputError("--visibility-2", "give the blend of --upscaler-2 (0..1)", None)
        spec = parse_job_spec(raw)
        result = run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    echo_summary(result)
    stems = {f"image-{i}": p.stem for i, p in enumerate(images)}
    write_outputs(result, storage, out_dir, lambda name: f"{stems.get(name, name)}-upscaled")


def register(app: typer.Typer) -> None:
    """Add the `upscale` command (A1111 extras) to the toonbooth CLI."""
    app.command("upscale")(upscale)
