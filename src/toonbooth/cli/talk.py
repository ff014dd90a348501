"""`toonbooth talk FACE --voice FILE`: the talking emoticon (seed 003, part 2) from the shell — the face speaks
the recording; writes the MP4, the WebP and GIF stickers and a still frame. Builds a `TalkSpec` and runs it
through the one execution path (runtime.execute)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import InputError, ToonboothError
from ..core.specs import TalkSpec
from .common import (
    echo_summary,
    fail,
    read_audio_file,
    read_image_file,
    run_job,
    runtime,
    spec_option,
    write_outputs,
)

_S = TalkSpec


def read_landmarks(path: Path) -> list[list[float]]:
    """68 (x, y) points from a JSON file: `[[x, y], ...]` or `{"landmarks": [[x, y], ...]}`."""
    if not path.is_file():
        raise InputError("landmarks", f"no such file: {path}", str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError("landmarks", f"{path} is not valid JSON: {exc}", str(path)) from None
    if isinstance(data, dict):
        data = data.get("landmarks")
    if not isinstance(data, list):
        raise InputError("landmarks", f"{path} must hold a list of 68 [x, y] pairs", str(path))
    return data


def talk(
    face: Annotated[Path, typer.Argument(help="Face image: a photo or a toon (PNG, JPEG, WebP; RGBA kept).")],
    voice: Annotated[Path, typer.Option(help="Recording: wav, mp3, ogg, webm/opus, m4a/aac or flac.")],
    backend: Annotated[str | None, spec_option(_S, "backend")] = None,
    toon: Annotated[str | None, spec_option(_S, "toon")] = None,
    framing: Annotated[str | None, spec_option(_S, "framing")] = None,
    size: Annotated[int | None, spec_option(_S, "size")] = None,
    landmarks: Annotated[
        Path | None, typer.Option(help="JSON file with the face's 68 [x, y] landmarks (else detected).")
    ] = None,
    seed: Annotated[int | None, spec_option(_S, "seed")] = None,
    steps: Annotated[int | None, spec_option(_S, "sampling_steps", "--steps")] = None,
    cfg: Annotated[float | None, spec_option(_S, "cfg_scale", "--cfg")] = None,
    expression: Annotated[float | None, spec_option(_S, "expression_scale", "--expression")] = None,
    head_motion: Annotated[float | None, spec_option(_S, "head_motion")] = None,
    head_smoothing: Annotated[float | None, spec_option(_S, "head_smoothing")] = None,
    still: Annotated[bool | None, spec_option(_S, "still", "--still/--no-still")] = None,
    mouth_open: Annotated[float | None, spec_option(_S, "mouth_open")] = None,
    blink: Annotated[bool | None, spec_option(_S, "blink", "--blink/--no-blink")] = None,
    cutout: Annotated[bool | None, spec_option(_S, "cutout", "--cutout/--no-cutout")] = None,
    sticker_size: Annotated[int | None, spec_option(_S, "sticker_size")] = None,
    gif_size: Annotated[int | None, spec_option(_S, "gif_size")] = None,
    sticker_fps: Annotated[float | None, spec_option(_S, "sticker_fps")] = None,
    sticker_seconds: Annotated[float | None, spec_option(_S, "sticker_seconds")] = None,
    liveportrait: Annotated[
        str | None, spec_option(_S, "liveportrait_model", "--liveportrait", help="LivePortrait renderer")
    ] = None,
    joyvasa: Annotated[
        str | None, spec_option(_S, "joyvasa_model", "--joyvasa", help="JoyVASA motion generator")
    ] = None,
    hubert: Annotated[str | None, spec_option(_S, "hubert_model", "--hubert", help="HuBERT folder")] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the outputs are written.")] = Path("out"),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Talking emoticon: the face speaks the recording (seed 003).

    Writes <face>-talk-video.mp4, -sticker_webp.webp, -sticker_gif.gif and -still.png into --out-dir.

    Neural (LivePortrait + JoyVASA) after `toonbooth models pull talk`, else classic (no weights)."""
    from ..core.specs import parse_job_spec

    try:
        # 1. Check the face and the recording with the decoders every entry point uses, then store them
        image = read_image_file(face, "face")
        audio, audio_type = read_audio_file(voice, "voice")
        raw: dict[str, Any] = {"kind": "talk"}
        if landmarks is not None:
            raw["landmarks"] = read_landmarks(landmarks)
        optional = {
            "backend": backend, "toon": toon, "framing": framing, "size": size, "seed": seed,
            "sampling_steps": steps, "cfg_scale": cfg, "expression_scale": expression, "head_motion": head_motion,
            "head_smoothing": head_smoothing, "still": still, "mouth_open": mouth_open, "blink": blink,
            "cutout": cutout, "sticker_size": sticker_size, "gif_size": gif_size, "sticker_fps": sticker_fps,
            "sticker_seconds": sticker_seconds, "liveportrait_model": liveportrait, "joyvasa_model": joyvasa,
            "hubert_model": hubert,
        }  # fmt: skip
        raw.update({k: v for k, v in optional.items() if v is not None})
        models, storage = runtime()
        raw["face"] = storage.put(image)
        raw["voice"] = storage.put(audio, content_type=audio_type)
        # 2. Build the typed job spec and run it
        spec = parse_job_spec(raw)
        result = run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    # 3. Say what ran and how long it took, write every output
    echo_summary(result)
    info = result.info
    sampling = info.get("sampling")
    if sampling:
        typer.echo(
            f"motion: {sampling['steps']} steps x {sampling['windows']} window(s) in {sampling['seconds']:.1f} s "
            f"({sampling['ms_per_step']:.0f} ms per step)"
        )
    typer.echo(f"frames: {info.get('frames')} at {info.get('fps'):g} fps, rendered at {info.get('render_fps', 0):.1f} "
               f"frames/s")  # fmt: skip
    write_outputs(result, storage, out_dir, lambda name: f"{face.stem}-talk-{name}")


def register(app: typer.Typer) -> None:
    """Add the `talk` command to the toonbooth CLI."""
    app.command("talk")(talk)
