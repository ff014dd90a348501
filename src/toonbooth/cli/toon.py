"""`toonbooth toon PHOTO`, `toonbooth train toon --images DIR`, `toonbooth models convert FILE` and
`toonbooth models make-tiny-toon DIR`: the toon studio (seed 003) from the shell.

`toon` and `train toon` build a `ToonSpec` / `TrainToonSpec` and run it through the one execution path
(runtime.execute); `models convert` is the operator's offline step that turns public downloads (NVIDIA / TF
StyleGAN2 `.pkl`, rosinality `.pt`, pSp / e4e `.pt`, VGG16 / LPIPS / IR-SE50 `.pth`) into safetensors in the
right models folder, identified by content; `make-tiny-toon` writes tiny random models in those public layouts
so every command runs without real weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.errors import InputError, ToonboothError
from ..core.specs import ToonSpec, TrainToonSpec
from .common import (
    echo_summary,
    fail,
    read_image_file,
    run_job,
    runtime,
    settings,
    spec_option,
    write_outputs,
)

_S = ToonSpec
_T = TrainToonSpec
NONE_WORDS = {"none", "no", "-", ""}


def _optional_name(value: str | None) -> Any:
    """An option naming a model: `none` switches the model off (JSON null)."""
    if value is None:
        return ...
    return None if value.strip().lower() in NONE_WORDS else value.strip()


def toon(
    photo: Annotated[Path, typer.Argument(help="Photo with a face (PNG, JPEG, WebP, BMP, GIF).")],
    backend: Annotated[str | None, spec_option(_S, "backend")] = None,
    style: Annotated[str | None, spec_option(_S, "style")] = None,
    base_model: Annotated[
        str | None, spec_option(_S, "base_model", help="The FFHQ generator (`none`: invert into the style)")
    ] = None,
    encoder: Annotated[str | None, spec_option(_S, "encoder", help="pSp / e4e encoder (`none`: projector only)")] = None,
    blend: Annotated[
        list[int] | None,
        typer.Option(help="Blend style and base at this resolution (repeatable: compare blends side by side)."),
    ] = None,
    blend_level: Annotated[int | None, spec_option(_S, "blend_level")] = None,
    blend_width: Annotated[float | None, spec_option(_S, "blend_width")] = None,
    mapping_from: Annotated[str | None, spec_option(_S, "mapping_from")] = None,
    save_blend_as: Annotated[str | None, spec_option(_S, "save_blend_as")] = None,
    inversion: Annotated[str | None, spec_option(_S, "inversion")] = None,
    projector_steps: Annotated[int | None, spec_option(_S, "projector_steps")] = None,
    perceptual: Annotated[str | None, spec_option(_S, "perceptual")] = None,
    vgg_model: Annotated[str | None, spec_option(_S, "vgg_model")] = None,
    lpips_model: Annotated[str | None, spec_option(_S, "lpips_model", help="LPIPS lin weights (`none`: unweighted)")] = None,
    identity_model: Annotated[str | None, spec_option(_S, "identity_model")] = None,
    identity_weight: Annotated[float | None, spec_option(_S, "identity_weight")] = None,
    strength: Annotated[float | None, spec_option(_S, "strength")] = None,
    truncation: Annotated[float | None, spec_option(_S, "truncation")] = None,
    output_size: Annotated[int | None, spec_option(_S, "output_size")] = None,
    detector: Annotated[str | None, spec_option(_S, "detector")] = None,
    feather: Annotated[float | None, spec_option(_S, "feather")] = None,
    seed: Annotated[int | None, spec_option(_S, "seed")] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the PNGs are written.")] = Path("out"),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Toon me: the face of PHOTO as a StyleGAN2 toon (Toonify; seed 003), or the classic toon look without
    weights.

    Writes <out-dir>/<photo>-toon-{toon,pasted,sticker,aligned,...}.png: the toon face (FFHQ-aligned), it pasted
    back into the photo, a transparent sticker, the aligned input; with several --blend values one image per
    blend and a side-by-side strip."""
    from ..core.specs import parse_job_spec

    try:
        data = read_image_file(photo, "photo")
        raw: dict[str, Any] = {"kind": "toon"}
        if blend:
            raw["blend_resolutions"] = list(blend)
        optional = {
            "backend": backend, "style": style, "blend_level": blend_level, "blend_width": blend_width,
            "mapping_from": mapping_from, "save_blend_as": save_blend_as, "inversion": inversion,
            "projector_steps": projector_steps, "perceptual": perceptual, "vgg_model": vgg_model,
            "identity_model": identity_model, "identity_weight": identity_weight, "strength": strength,
            "truncation": truncation, "output_size": output_size, "detector": detector, "feather": feather,
            "seed": seed,
        }  # fmt: skip
        raw.update({k: v for k, v in optional.items() if v is not None})
        for key, value in (("base_model", base_model), ("encoder", encoder), ("lpips_model", lpips_model)):
            chosen = _optional_name(value)
            if chosen is not ...:
                raw[key] = chosen
        models, storage = runtime()
        raw["image"] = storage.put(data)
        spec = parse_job_spec(raw)
        result = run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    echo_summary(result)
    write_outputs(result, storage, out_dir, lambda name: f"{photo.stem}-toon-{name}")
    saved = result.info.get("saved_style")
    if isinstance(saved, dict):
        typer.echo(f"blend saved as style {saved['name']!r}: {saved['files']['model']}; use it as --style {saved['name']}")


def train_toon(
    images: Annotated[Path, typer.Option("--images", help="Folder of cartoon face images (at least 16).")],
    name: Annotated[str, typer.Option("--name", help="Name of the new toon style (letters, digits, _ . + -).")],
    base: Annotated[str | None, spec_option(_T, "base")] = None,
    steps: Annotated[int | None, spec_option(_T, "steps")] = None,
    batch_size: Annotated[int | None, spec_option(_T, "batch_size")] = None,
    lr: Annotated[float | None, spec_option(_T, "learning_rate", help="Learning rate")] = None,
    freeze_d: Annotated[int | None, spec_option(_T, "freeze_d")] = None,
    augment: Annotated[bool | None, spec_option(_T, "augment", "--augment/--no-augment")] = None,
    ada_target: Annotated[float | None, spec_option(_T, "ada_target")] = None,
    align: Annotated[bool | None, spec_option(_T, "align", "--align/--no-align")] = None,
    require_faces: Annotated[bool | None, spec_option(_T, "require_faces", "--require-faces/--allow-no-face")] = None,
    remove_background: Annotated[
        bool | None, spec_option(_T, "remove_background", "--remove-background/--keep-background")
    ] = None,
    checkpoint_every: Annotated[int | None, spec_option(_T, "checkpoint_every")] = None,
    sample_every: Annotated[int | None, spec_option(_T, "sample_every")] = None,
    seed: Annotated[int | None, spec_option(_T, "seed")] = None,
    owner: Annotated[str | None, typer.Option(help="Owner of the style (default: shared local models).")] = None,
    delete_images: Annotated[
        bool | None, spec_option(_T, "delete_images_after", "--delete-images/--keep-images")
    ] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the sample grids are written.")] = Path("out"),
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Fine-tune a toon style (StyleGAN2, FreezeD + ADA) on a folder of cartoon faces; then use it with
    `toonbooth toon PHOTO --style NAME` (alone or blended with the base)."""
    from ..core.specs import parse_job_spec
    from ..training.dataset import read_image_folder

    try:
        s = settings()
        found = read_image_folder(images, field="images", max_bytes=s.max_upload_bytes, max_pixels=s.max_pixels)
        models, storage = runtime()
        raw: dict[str, Any] = {
            "kind": "train_toon", "style_name": name, "images": [storage.put(f.data) for f in found],
            "image_names": [f.name for f in found],
        }  # fmt: skip
        optional = {
            "base": base, "steps": steps, "batch_size": batch_size, "learning_rate": lr, "freeze_d": freeze_d,
            "augment": augment, "ada_target": ada_target, "align": align, "require_faces": require_faces,
            "remove_background": remove_background, "checkpoint_every": checkpoint_every,
            "sample_every": sample_every, "seed": seed, "owner": owner, "delete_images_after": delete_images,
        }  # fmt: skip
        raw.update({k: v for k, v in optional.items() if v is not None})
        spec = parse_job_spec(raw)
        result = run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    style = result.info["style"]
    write_outputs(result, storage, out_dir, lambda n: f"{style['name']}-{n}", size=False)
    hist = result.info.get("history", {})
    if hist.get("d_loss"):
        typer.echo(
            f"losses: D {hist['d_loss'][0]:.4f} -> {hist['d_loss'][-1]:.4f}, G {hist['g_loss'][0]:.4f} -> "
            f"{hist['g_loss'][-1]:.4f}; ADA p {result.info['augment_p']:.4f} ({result.info['steps']} steps)"
        )
    typer.echo(f"toon style {style['name']!r}: {style['files']['model']}")
    typer.echo(f"use it as: toonbooth toon PHOTO --style {style['name']}")


def models_make_tiny_toon(
    directory: Annotated[Path, typer.Argument(help="Models folder to write the tiny toon models into.")],
    size: Annotated[int, typer.Option(help="Generator resolution (power of two, 32-256).")] = 64,
) -> None:
    """Write tiny random toon-studio models in their public layouts (StyleGAN2 base + toon, e4e encoder,
    VGG16, LPIPS) so `toonbooth toon` runs neural without real weights (the pictures are noise)."""
    from ..nets.toon_models import write_tiny_toon_set

    if directory.exists() and not directory.is_dir():
        fail(InputError("directory", f"not a folder: {directory}", str(directory)))
    if size not in (32, 64, 128, 256):
        fail(InputError("--size", f"must be 32, 64, 128 or 256, got {size}", size))
    for model, path in write_tiny_toon_set(directory, size=size).items():
        typer.echo(f"{model}: {path}")
    typer.echo(
        f"use them with: toonbooth --models-dir {directory} toon PHOTO --style tiny-toonify --base-model tiny-ffhq "
        "--encoder tiny-e4e --vgg-model tiny-vgg16 --lpips-model tiny-lpips"
    )


def licence_lines(manager: Any, entries: list[Any]) -> list[str]:
    """`models list` lines: the licence of each listed model whose family or catalog entry states one, and the
    landmark models that ship in a pip package."""
    from ..models.catalog import find_entry
    from ..vision.landmarks import LICENCES, packaged_model_files

    lines = []
    for e in entries:
        cat = find_entry(e.catalog_name) if e.catalog_name else None
        fam = manager.families.get(e.kind)
        note = cat.licence if cat is not None else (fam.licence_note if fam is not None else "")
        if note:
            lines.append(f"  {e.kind} {e.name}: {note}")
    files = packaged_model_files()
    if files is not None:
        lines.append("packaged with pip (face_recognition_models), used by the toon studio's face landmarks:")
        for p in (files.predictor_68, files.cnn_detector, files.predictor_5):
            if p is not None:
                lines.append(f"  {p.name}: {LICENCES.get(p.name, 'licence not recorded')}")
    return (["licences:"] + lines) if lines else []


def register(app: typer.Typer, models_app: typer.Typer | None = None) -> None:
    """Add `toon`, `train toon` and `models make-tiny-toon` to the toonbooth CLI."""
    from .train import train_app

    app.command("toon")(toon)
    train_app.command("toon")(train_toon)
    if models_app is not None:
        models_app.command("make-tiny-toon")(models_make_tiny_toon)
