"""`toonbooth makeup`: the makeup studio (seed 004) from the shell — a source photo, a reference photo with the
makeup, per-region intensities as options; the result, before/after, the changed regions and (neural) the
neural layer written as PNGs. Builds a `MakeupSpec` and runs it through the one execution path.

`toonbooth models convert NAME` (cli/convert.py) converts (torch `.bin` / `.pth` weights of a Stable-Makeup set or a face-parsing
model -> `.safetensors` next to them, read with `weights_only`) and `toonbooth models make-tiny-makeup DIR` (the
tiny random-weight Stable-Makeup set and face parser, added to a tiny model set)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import InputError, ToonboothError
from ..core.specs import MakeupIntensity, MakeupSpec
from .common import (
    echo_summary,
    fail,
    read_image_file,
    run_job,
    runtime,
    spec_option,
    write_outputs,
)

_S = MakeupSpec
_I = MakeupIntensity
_D = MakeupSpec.model_fields["diffusion"].default_factory()  # type: ignore[misc]


def _sd(name: str, help: str) -> Any:
    return typer.Option(help=f"{help} (default {getattr(_D, name)}).")


def makeup(
    source: Annotated[Path, typer.Argument(help="Your photo (PNG, JPEG, WebP, BMP, GIF).")],
    reference: Annotated[
        Path | None, typer.Option("--reference", "-r", help="Photo of a made-up face whose makeup is copied.")
    ] = None,
    lips: Annotated[float | None, spec_option(_I, "lips")] = None,
    eyes: Annotated[float | None, spec_option(_I, "eyes", help="Eye-shadow strength")] = None,
    brows: Annotated[float | None, spec_option(_I, "brows")] = None,
    skin: Annotated[float | None, spec_option(_I, "skin", help="Skin / base strength")] = None,
    blush: Annotated[float | None, spec_option(_I, "blush")] = None,
    backend: Annotated[str | None, spec_option(_S, "backend")] = None,
    regions: Annotated[str | None, spec_option(_S, "regions", help="Face regions from")] = None,
    align_reference: Annotated[
        bool, typer.Option("--align-reference", help="Warp the reference onto your face's position first.")
    ] = False,
    reblend_from: Annotated[
        Path | None,
        typer.Option(help="The *-neural_layer.png of an earlier neural run on this photo: re-blend it with the "
                     "intensities given here, no diffusion (no --reference needed)."),
    ] = None,  # fmt: skip
    strength: Annotated[float | None, _sd("strength", "img2img strength: int(steps * strength) steps run")] = None,
    steps: Annotated[int | None, _sd("steps", "Denoising steps of the full schedule")] = None,
    cfg: Annotated[float | None, _sd("cfg_scale", "CFG scale")] = None,
    sampler: Annotated[str | None, _sd("sampler", "A1111 sampler name")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed, -1 = random (default -1).")] = None,
    checkpoint: Annotated[str | None, _sd("checkpoint", "SD1.5 checkpoint")] = None,
    makeup_model: Annotated[str | None, spec_option(_S, "makeup_model", help="Stable-Makeup set")] = None,
    face_parser: Annotated[str | None, spec_option(_S, "face_parser", help="Face-parsing weights")] = None,
    size: Annotated[int | None, spec_option(_S, "size", help="Face crop side of the neural backend")] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the PNGs are written.")] = Path("out"),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Copy the makeup of a reference photo onto your face (seed 004).

    Writes <out-dir>/<source>-makeup-{result,comparison,overlay}.png, and
    -neural_layer.png after a neural (Stable-Makeup) run. Intensities are
    0 (untouched) to 1.5; 1 = as the reference. Without Stable-Makeup
    weights the classic backend (Lab colour transfer per region) runs."""
    from ..core.specs import parse_job_spec

    try:
        # 1. Check the photos with the same safe decoder every entry point uses
        if reference is None and reblend_from is None:
            raise InputError("--reference", "give the photo whose makeup is copied (or --reblend-from)")
        models, storage = runtime()
        raw: dict[str, Any] = {"kind": "makeup", "source": storage.put(read_image_file(source, "source"))}
        if reference is not None:
            raw["reference"] = storage.put(read_image_file(reference, "reference"))
        if reblend_from is not None:
            raw["reblend_from"] = storage.put(read_image_file(reblend_from, "reblend_from"))
        levels = {"lips": lips, "eyes": eyes, "brows": brows, "skin": skin, "blush": blush}
        raw["intensity"] = {k: v for k, v in levels.items() if v is not None}
        diffusion = {"strength": strength, "steps": steps, "cfg_scale": cfg, "sampler": sampler, "seed": seed,
                     "checkpoint": checkpoint}  # fmt: skip
        raw["diffusion"] = {k: v for k, v in diffusion.items() if v is not None}  # over the recipe's defaults
        optional = {"backend": backend, "regions": regions, "makeup_model": makeup_model, "face_parser": face_parser,
                    "size": size, "align_reference": align_reference or None}  # fmt: skip
        raw.update({k: v for k, v in optional.items() if v is not None})
        # 2. Build the typed job spec and run it
        spec = parse_job_spec(raw)
        result = run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    # 3. Say what happened, write every output
    echo_summary(result)
    changed = result.info.get("changed") or []
    typer.echo(f"changed regions: {', '.join(changed) if changed else 'none'}")
    write_outputs(result, storage, out_dir, lambda name: f"{source.stem}-makeup-{name}")


def models_make_tiny_makeup(
    directory: Annotated[Path, typer.Argument(help="A tiny model set (toonbooth models make-tiny DIR).")],
) -> None:
    """Add the tiny random-weight Stable-Makeup set and face parser to a tiny model set (for tests and demos)."""
    from ..nets.face_parsing import write_tiny_face_parser
    from ..nets.stable_makeup import write_tiny_stable_makeup

    if directory.exists() and not directory.is_dir():
        fail(InputError("directory", f"not a folder: {directory}", str(directory)))
    for role, path in write_tiny_stable_makeup(directory / "StableMakeup" / "stable-makeup").items():
        typer.echo(f"stable-makeup {role}: {path}")
    typer.echo(f"face parsing: {write_tiny_face_parser(directory / 'FaceParsing' / '79999_iter.pth')}")
    typer.echo("use it with: toonbooth --models-dir DIR makeup SOURCE -r REF --checkpoint tiny-sd15 --size 64")


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add `makeup` and `models make-tiny-makeup` to the toonbooth CLI."""
    app.command("makeup")(makeup)
    models_app.command("make-tiny-makeup")(models_make_tiny_makeup)
