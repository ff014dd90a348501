"""`toonbooth train lora|dreambooth|ti --images DIR ...`: personalization training from the shell, plus
`toonbooth train list|delete|presets`. Builds a `TrainLoraSpec` / `TrainDreamBoothSpec` / `TrainTISpec` and
runs it through the one execution path (runtime.execute) with a progress bar (step, loss, lr, ETA).

Images are read from a folder (captions from a `.txt` beside each image, as kohya-ss folders have them),
checked by the safe decoder and stored as blobs; with `--delete-images` (default for the portrait preset)
the stored copies are deleted after training — the files in your folder are never touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from ..core.errors import ToonboothError
from ..core.specs import TrainDreamBoothSpec, TrainLoraSpec, TrainTISpec
from .common import fail, make_app, run_job, runtime, settings, spec_option, write_outputs

train_app = make_app(
    help="Train personal styles: LoRA, DreamBooth-LoRA, textual inversion.", no_args_is_help=True
)

KINDS = {"lora": "train_lora", "dreambooth": "train_dreambooth", "ti": "train_ti"}

ImagesOpt = Annotated[
    Path, typer.Option("--images", help="Folder of training images (+ optional NAME.txt captions).")
]
BaseOpt = Annotated[
    str, typer.Option("--base", help="Base checkpoint: registry name, diffusers folder or hub id.")
]
NameOpt = Annotated[
    str,
    typer.Option(
        "--name",
        help="Style name: letters, digits, _ . + - (LoRA: `<lora:NAME:0.8>` in prompts; "
        "TI: the embedding file, prompts use the trigger).",
    ),
]


def _common(
    kind: str, images: Path, base: str, name: str, options: dict[str, Any], class_images: Path | None = None
) -> dict[str, Any]:
    """Read the folders, store the images, build the raw spec (only options given override the preset)."""
    from ..training.dataset import read_image_folder

    s = settings()
    limits = {"max_bytes": s.max_upload_bytes, "max_pixels": s.max_pixels}
    found = read_image_folder(images, field="images", **limits)
    _models, storage = runtime()
    raw: dict[str, Any] = {
        "kind": KINDS[kind], "style_name": name, "base": base,
        "images": [storage.put(f.data) for f in found], "image_names": [f.name for f in found],
    }  # fmt: skip
    if any(f.caption for f in found):
        raw["captions"] = [f.caption for f in found]
    if class_images is not None:
        raw["class_images"] = [
            storage.put(f.data) for f in read_image_folder(class_images, field="class_images", **limits)
        ]
    raw.update({k: v for k, v in options.items() if v is not None and v != []})
    return raw


def _run(raw: dict[str, Any], quiet: bool, out_dir: Path) -> None:
    from ..core.specs import parse_job_spec

    try:
        spec = parse_job_spec(raw)
        models, storage = runtime()
        result = run_job(spec, storage, models, quiet=quiet)
    except ToonboothError as exc:
        fail(exc)
    style = result.info["style"]
    write_outputs(result, storage, out_dir, lambda name: f"{style['name']}-{name}", size=False)
    losses = result.info.get("loss_history") or []
    if losses:
        typer.echo(f"loss: first {losses[0]:.4f}, last {losses[-1]:.4f} ({result.info['steps']} steps)")
    typer.echo(f"style {style['name']!r} ({style['model_kind']}, {style['arch']}): {style['files']['model']}")
    typer.echo(f"use it as: {style['usage']}")


def _options(**kw: Any) -> dict[str, Any]:
    rename = {"lr": "learning_rate", "grad_accum": "gradient_accumulation_steps", "sample_prompt": "sample_prompts",
              "target_module": "target_modules"}  # fmt: skip
    out = {rename.get(k, k): v for k, v in kw.items()}
    if out.get("delete_images") is not None:
        out["delete_images_after"] = out.pop("delete_images")
    else:
        out.pop("delete_images", None)
    return out


# shared option annotations: help from the spec fields (defaults mostly not shown: a preset may set them)
_T = TrainLoraSpec


def _opt(
    name: str, *decls: str, help: str | None = None, spec: type[BaseModel] = _T, show_default: bool = False
) -> Any:
    return spec_option(spec, name, *decls, help=help, show_default=show_default)


Preset = Annotated[str | None, _opt("preset")]
Arch = Annotated[str | None, _opt("arch")]
Steps = Annotated[int | None, _opt("steps")]
Epochs = Annotated[int | None, _opt("epochs")]
Res = Annotated[int | None, _opt("resolution")]
Lr = Annotated[float | None, _opt("learning_rate", help="Learning rate")]
Trigger = Annotated[str | None, _opt("trigger")]
Owner = Annotated[str | None, typer.Option(help="Owner of the style (default: shared local models).")]
Seed = Annotated[int | None, _opt("seed", help="Seed (same seed + same settings = same weights)")]
Batch = Annotated[int | None, _opt("batch_size", help="Batch size")]
Accum = Annotated[int | None, _opt("gradient_accumulation_steps", help="Gradient accumulation steps")]
Precision = Annotated[str | None, _opt("mixed_precision")]
Buckets = Annotated[bool | None, _opt("buckets", "--buckets/--no-buckets")]
FaceCrop = Annotated[bool | None, _opt("face_crop", "--face-crop/--no-face-crop")]
GradCkpt = Annotated[
    bool | None, _opt("gradient_checkpointing", "--gradient-checkpointing/--no-gradient-checkpointing")
]
Snr = Annotated[float | None, _opt("snr_gamma")]
NoiseOff = Annotated[float | None, _opt("noise_offset")]
CkptEvery = Annotated[int | None, _opt("checkpoint_every")]
SamplePrompt = Annotated[
    list[str] | None, typer.Option(help="Sample prompt, repeatable ({trigger} filled in).")
]
SampleSteps = Annotated[int | None, _opt("sample_steps", help="Sampling steps of the samples")]
Delete = Annotated[bool | None, _opt("delete_images_after", "--delete-images/--keep-images")]
Caption = Annotated[str | None, typer.Option(help="Caption template for images without a .txt.")]
# LoRA and DreamBooth-LoRA
Rank = Annotated[int | None, _opt("rank")]
Alpha = Annotated[float | None, _opt("alpha", help="LoRA alpha; scale = alpha/rank (default: the rank)")]
TextEncoder = Annotated[
    bool | None, _opt("train_text_encoder", "--train-text-encoder/--no-train-text-encoder")
]
# DreamBooth-LoRA
NumClass = Annotated[int | None, _opt("num_class_images", spec=TrainDreamBoothSpec)]
PriorWeight = Annotated[
    float | None,
    _opt("prior_loss_weight", help="Weight of the prior-preservation loss", spec=TrainDreamBoothSpec),
]
Prior = Annotated[
    bool | None,
    _opt("prior_preservation", "--prior/--no-prior", spec=TrainDreamBoothSpec, show_default=True),
]
# textual inversion
InitToken = Annotated[str | None, _opt("initializer_token", spec=TrainTISpec)]
NumVectors = Annotated[int | None, _opt("num_vectors", spec=TrainTISpec)]
Stages = Annotated[
    int | None,
    _opt("stages", help="Timestep stages (DreamStyler multi-stage; 1 = classic)", spec=TrainTISpec),
]
OutDir = Annotated[
    Path,
    typer.Option(help="Where the sample images are written (the style itself goes to the models folder)."),
]
Quiet = Annotated[bool, typer.Option(help="No progress bar.")]


@train_app.command("lora")
def train_lora(
    images: ImagesOpt, base: BaseOpt, name: NameOpt, preset: Preset = None, arch: Arch = None, steps: Steps = None,
    epochs: Epochs = None, resolution: Res = None, lr: Lr = None, trigger: Trigger = None, owner: Owner = None,
    seed: Seed = None, batch_size: Batch = None, grad_accum: Accum = None, mixed_precision: Precision = None,
    buckets: Buckets = None, face_crop: FaceCrop = None, gradient_checkpointing: GradCkpt = None,
    snr_gamma: Snr = None, noise_offset: NoiseOff = None, checkpoint_every: CkptEvery = None,
    sample_prompt: SamplePrompt = None, sample_steps: SampleSteps = None, delete_images: Delete = None,
    caption_template: Caption = None,
    rank: Rank = None, alpha: Alpha = None, train_text_encoder: TextEncoder = None,
    out_dir: OutDir = Path("out"), quiet: Quiet = False,
) -> None:  # fmt: skip
    """Train a LoRA (UNet attention; optionally text encoders) on a folder of images."""
    kw = _options(
        **{k: v for k, v in locals().items() if k not in ("images", "base", "name", "out_dir", "quiet")}
    )
    try:
        raw = _common("lora", images, base, name, kw)
    except ToonboothError as exc:
        fail(exc)
    _run(raw, quiet, out_dir)


@train_app.command("dreambooth")
def train_dreambooth(
    images: ImagesOpt, base: BaseOpt, name: NameOpt, preset: Preset = None, arch: Arch = None, steps: Steps = None,
    epochs: Epochs = None, resolution: Res = None, lr: Lr = None, trigger: Trigger = None, owner: Owner = None,
    seed: Seed = None, batch_size: Batch = None, grad_accum: Accum = None, mixed_precision: Precision = None,
    buckets: Buckets = None, face_crop: FaceCrop = None, gradient_checkpointing: GradCkpt = None,
    snr_gamma: Snr = None, noise_offset: NoiseOff = None, checkpoint_every: CkptEvery = None,
    sample_prompt: SamplePrompt = None, sample_steps: SampleSteps = None, delete_images: Delete = None,
    caption_template: Caption = None,
    class_word: Annotated[str | None, typer.Option(help="Class word: `a photo of <trigger> <class>`.")] = None,
    class_prompt: Annotated[str | None, typer.Option(help="Prompt of the class images.")] = None,
    class_images: Annotated[Path | None, typer.Option(help="Folder of own class images (else generated).")] = None,
    num_class_images: NumClass = None, prior_loss_weight: PriorWeight = None, prior_preservation: Prior = None,
    rank: Rank = None, alpha: Alpha = None,
    out_dir: OutDir = Path("out"), quiet: Quiet = False,
) -> None:  # fmt: skip
    """DreamBooth-LoRA on photos of a subject, with prior preservation (class images cached and reused)."""
    skip = ("images", "base", "name", "out_dir", "quiet", "class_images", "skip")  # `skip` is a local too
    kw = _options(**{k: v for k, v in locals().items() if k not in skip})
    try:
        raw = _common("dreambooth", images, base, name, kw, class_images=class_images)
    except ToonboothError as exc:
        fail(exc)
    _run(raw, quiet, out_dir)


@train_app.command("ti")
def train_ti(
    images: ImagesOpt, base: BaseOpt, name: NameOpt, preset: Preset = None, arch: Arch = None, steps: Steps = None,
    epochs: Epochs = None, resolution: Res = None, lr: Lr = None, trigger: Trigger = None, owner: Owner = None,
    seed: Seed = None, batch_size: Batch = None, grad_accum: Accum = None, mixed_precision: Precision = None,
    buckets: Buckets = None, gradient_checkpointing: GradCkpt = None, snr_gamma: Snr = None,
    checkpoint_every: CkptEvery = None, sample_prompt: SamplePrompt = None, sample_steps: SampleSteps = None,
    delete_images: Delete = None, caption_template: Caption = None,
    initializer_token: InitToken = None, num_vectors: NumVectors = None, stages: Stages = None,
    out_dir: OutDir = Path("out"), quiet: Quiet = False,
) -> None:  # fmt: skip
    """Textual inversion: a new token (one embedding per timestep stage with --stages > 1)."""
    kw = _options(
        **{k: v for k, v in locals().items() if k not in ("images", "base", "name", "out_dir", "quiet")}
    )
    try:
        raw = _common("ti", images, base, name, kw)
    except ToonboothError as exc:
        fail(exc)
    _run(raw, quiet, out_dir)


@train_app.command("list")
def train_list(
    owner: Owner = None, as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False
) -> None:
    """List your trained styles."""
    from ..training.styles import list_styles

    models, _ = runtime()
    styles = list_styles(Path(models.registry.models_dirs[0]), owner)
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in styles], indent=2))
        return
    if not styles:
        typer.echo("(no trained styles)")
    for s in styles:
        typer.echo(f"  {s.name:<24} {s.model_kind:<9} {s.arch:<5} {s.training_kind:<16} use: {s.usage}")


@train_app.command("delete")
def train_delete(name: Annotated[str, typer.Argument(help="Style name.")], owner: Owner = None) -> None:
    """Delete one of your styles (its files and its registry entry)."""
    from ..training.styles import delete_style

    models, _ = runtime()
    try:
        info = delete_style(models.registry, Path(models.registry.models_dirs[0]), owner, name)
    except ToonboothError as exc:
        fail(exc)
    typer.echo(f"deleted style {info.name!r} ({len(info.files)} files)")


@train_app.command("presets")
def train_presets() -> None:
    """Show the training presets."""
    from ..training.presets import list_presets

    for p in list_presets():
        typer.echo(f"{p.name}: {p.label} — {p.description}")
        typer.echo(
            f"    kinds: {', '.join(p.kinds)}; images {p.min_images}-{p.max_images}; defaults {p.defaults}"
        )


def register(app: typer.Typer) -> None:
    """Add `toonbooth train ...` to the main app."""
    app.add_typer(train_app, name="train")
