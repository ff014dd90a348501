"""`toonbooth repose` and `toonbooth pose detect`: the pose-change job (webtoon
seed 001) from the shell. Builds a `ReposeSpec` and runs it through the one execution path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import InputError, ToonboothError
from ..core.specs import ReposeSpec
from .common import (
    echo_summary,
    fail,
    parse_lora,
    read_image_file,
    run_job,
    runtime,
    settings,
    spec_option,
    write_outputs,
)

_S = ReposeSpec
pose_app = typer.Typer(help="Pose tools: detect a skeleton in a photo.", no_args_is_help=True)


def read_skeleton(path: Path) -> Any:
    """An OpenPose JSON file, parsed (the job checks its contents; errors name `skeleton`)."""
    if not path.is_file():
        raise InputError("skeleton", f"no such file: {path}", str(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError("skeleton", f"{path.name} is not JSON: {exc}", str(path)) from None


def repose(
    character: Annotated[Path, typer.Argument(help="The character to re-pose (PNG, JPEG, WebP, ...).")],
    pose: Annotated[Path | None, typer.Option(help="Photo of the wanted pose (DWPose finds the person).")] = None,
    skeleton: Annotated[
        Path | None, typer.Option(help="The wanted pose as an OpenPose JSON file (e.g. from `pose detect`).")
    ] = None,
    method: Annotated[str | None, spec_option(_S, "method", help="Re-rendering method")] = None,
    backend: Annotated[str | None, spec_option(_S, "backend", help="neural, classic or auto")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (20-30 suit AnimateAnyone).")] = None,
    cfg: Annotated[float | None, typer.Option(help="CFG scale (3.5 for AnimateAnyone).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed, -1 = random.")] = None,
    size: Annotated[int | None, spec_option(_S, "size", help="Long side of the result, px")] = None,
    width: Annotated[int | None, spec_option(_S, "width", help="Result width, px")] = None,
    height: Annotated[int | None, spec_option(_S, "height", help="Result height, px")] = None,
    people: Annotated[str | None, spec_option(_S, "people", help="Which people of the pose")] = None,
    hands: Annotated[bool | None, spec_option(_S, "hands", "--hands/--no-hands")] = None,
    face: Annotated[bool | None, spec_option(_S, "face", "--face/--no-face")] = None,
    remove_background: Annotated[
        bool, typer.Option("--remove-background", help="Also write the character mask and an RGBA layer.")
    ] = False,
    background: Annotated[
        Path | None, typer.Option(help="Composite the result onto this background picture.")
    ] = None,
    lora: Annotated[
        list[str] | None, typer.Option(help="Style LoRA NAME[:WEIGHT] for the controlnet method (repeatable).")
    ] = None,
    prompt: Annotated[str | None, spec_option(_S, "prompt", help="Prompt (controlnet method)")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="SD1.5 checkpoint (controlnet method).")] = None,
    controlnet: Annotated[str | None, spec_option(_S, "controlnet", show_default=False)] = None,
    ip_adapter: Annotated[str | None, spec_option(_S, "ip_adapter", show_default=False)] = None,
    animate_anyone: Annotated[
        str | None, spec_option(_S, "animate_anyone", help="AnimateAnyone folder name", show_default=False)
    ] = None,
    image_encoder: Annotated[str | None, spec_option(_S, "image_encoder", show_default=False)] = None,
    vae: Annotated[str | None, spec_option(_S, "vae", show_default=False)] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the results are written.")] = Path("out"),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Re-pose a character: from a pose photo (DWPose) or an OpenPose JSON skeleton.

    Writes <out-dir>/<character>-repose-<output>: image (the re-posed character), skeleton_image and skeleton (the drawing and its JSON: edit it, pass it back with --skeleton), mask / layer / composite when asked. Without re-rendering weights only the skeleton and an overlay are written, and the reason is printed."""
    from ..core.specs import parse_job_spec

    try:
        if (pose is None) == (skeleton is None):
            raise InputError("--pose", "give the pose as --pose PHOTO or --skeleton JSON (one of them)")
        raw: dict[str, Any] = {"kind": "repose", "character": None}
        models, storage = runtime()
        raw["character"] = storage.put(read_image_file(character, "character"))
        if pose is not None:
            raw["pose_image"] = storage.put(read_image_file(pose, "pose_image"))
        else:
            assert skeleton is not None
            raw["skeleton"] = read_skeleton(skeleton)
        if background is not None:
            raw["background_image"] = storage.put(read_image_file(background, "background_image"))
        optional = {
            "method": method, "backend": backend, "size": size, "width": width, "height": height, "people": people,
            "hands": hands, "face": face, "prompt": prompt, "controlnet": controlnet, "ip_adapter": ip_adapter,
            "animate_anyone": animate_anyone, "image_encoder": image_encoder, "vae": vae,
        }  # fmt: skip
        raw.update({k: v for k, v in optional.items() if v is not None})
        if remove_background:
            raw["background"] = "remove"
        diffusion = _S.model_fields["diffusion"].default_factory().model_dump()  # type: ignore[misc]
        extra = {"steps": steps, "cfg_scale": cfg, "seed": seed, "checkpoint": checkpoint}
        diffusion.update({k: v for k, v in extra.items() if v is not None})
        if lora:
            diffusion["loras"] = [parse_lora(x) for x in lora]
        raw["diffusion"] = diffusion
        spec = parse_job_spec(raw)
        result = run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    echo_summary(result)
    write_outputs(result, storage, out_dir, lambda name: f"{character.stem}-repose-{name}")


@pose_app.command("detect")
def pose_detect(
    photo: Annotated[Path, typer.Argument(help="Photo with a person (PNG, JPEG, WebP, ...).")],
    people: Annotated[str | None, spec_option(_S, "people", help="Which people (default all)", show_default=False)] = None,
    hands: Annotated[bool | None, spec_option(_S, "hands", "--hands/--no-hands")] = None,
    face: Annotated[bool | None, spec_option(_S, "face", "--face/--no-face")] = None,
    pose_model: Annotated[str | None, spec_option(_S, "pose_model", show_default=False)] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the skeleton PNG and JSON are written.")] = Path("out"),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Detect the pose in a photo with DWPose.

    Writes <out-dir>/<photo>-pose.png (the ControlNet-openpose drawing) and <photo>-pose.json (OpenPose JSON; edit it and give it to `toonbooth repose --skeleton`)."""
    from ..core.specs import parse_job_spec

    try:
        models, storage = runtime()
        data = read_image_file(photo, "pose_image")
        from ..core.images import load_image

        s = settings()
        size = max(load_image(data, field="pose_image", max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels).size)
        raw: dict[str, Any] = {"kind": "repose", "mode": "skeleton", "pose_image": storage.put(data),
                               "size": max(64, min(1024, size // 8 * 8))}  # fmt: skip
        optional = {"people": people if people else "all", "hands": hands, "face": face, "pose_model": pose_model}
        raw.update({k: v for k, v in optional.items() if v is not None})
        result = run_job(parse_job_spec(raw), storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    echo_summary(result)
    names = {"skeleton_image": "pose", "skeleton": "pose"}
    write_outputs(result, storage, out_dir, lambda name: f"{photo.stem}-{names.get(name, name)}")


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add `repose` and `pose detect` to the toonbooth CLI (`models convert` is cli/convert.py)."""
    app.command("repose")(repose)
    app.add_typer(pose_app, name="pose")
