"""`toonbooth models convert`: the one operator step that turns public PyTorch / pickle downloads into safetensors.

Run time loads safetensors (or reads tensors with `torch.load(weights_only=True)`); this command is where
formats that need more are handled once, by an operator, on files identified by their content:

* an installed model name whose family can convert itself (Stable-Makeup's `.bin` set, the face parser): its
  files get `.safetensors` copies next to them, which the folder then prefers;
* a toon-studio file (NVIDIA / TF StyleGAN2 `.pkl` through an allow-list unpickler that never runs embedded code,
  rosinality `.pt`, pSp / e4e `.pt`, VGG16 / LPIPS / IR-SE50 `.pth`): written as safetensors into its folder;
* any other PyTorch weights file or folder of them (AnimateAnyone `.pth`, LivePortrait `.pth`, ...): read as
  tensors only and written next to it as `<name>.safetensors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core.errors import InputError, ModelError, ToonboothError
from .common import fail, settings

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def _convert_installed(name: str) -> bool:
    """A model name of a family that converts itself; False when none knows it."""
    from ..runtime.families import model_manager

    manager = model_manager(settings())
    done = False
    for family in manager.families:
        if "convert" not in family.extra:
            continue
        try:
            entry = manager.registry.get(name, kind=family.kind)
        except ToonboothError:
            continue
        for path in family.extra["convert"](entry):
            typer.echo(f"wrote {path}")
        done = True
    if done:
        manager.registry.scan()
    return done


def _convert_toon(file: Path, name: str | None, decoder: bool) -> bool:
    """A toon-studio file, into its family's folder; False when its content is not one."""
    from ..nets.toon_models import convert_model_file, identify_weights

    try:
        identify_weights(file)
    except (ModelError, InputError):
        return False
    for f in convert_model_file(file, settings().resolved_models_dir, name, decoder=decoder):
        notes = f" ({'; '.join(f.notes)})" if f.notes else ""
        typer.echo(f"{f.kind} from {f.source_format}: {f.path}{notes}")
    return True


def _convert_tensors(file: Path) -> None:
    """Tensors only, next to the file (the model folders prefer the `.safetensors`)."""
    from safetensors.torch import save_file

    from ..core.fs import atomic_path
    from ..nets.pose_guider import read_state_dict

    state = read_state_dict(file)
    target = file.with_suffix(".safetensors")
    tensors = {k: v.contiguous() for k, v in state.items()}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "converted_from": file.name})
    typer.echo(f"wrote {target} ({len(tensors)} tensors)")


def models_convert(
    targets: Annotated[list[str], typer.Argument(help="Weight files, folders of them, or installed model names.")],
    name: Annotated[str | None, typer.Option(help="Toon-studio files: the model name (default: the file stem).")] = None,
    decoder: Annotated[
        bool, typer.Option("--decoder/--no-decoder", help="pSp / e4e: also write its decoder as a StyleGAN2 model.")
    ] = True,
) -> None:
    """Convert public PyTorch / pickle downloads to safetensors (an operator step; files identified by content)."""
    try:
        for target in targets:
            path = Path(target).expanduser()
            if not path.exists():
                if _convert_installed(target):
                    continue
                fail(InputError("targets", f"no such file or folder, and no installed convertible model: {target!r}", target))
            files = sorted(f for f in path.iterdir() if f.suffix.lower() in (*TORCH_SUFFIXES, ".pkl")) if path.is_dir() else [path]
            if not files:
                fail(InputError("targets", f"no .pth / .pt / .bin / .ckpt / .pkl file in {path}", target))
            for f in files:
                if _convert_toon(f, name, decoder):
                    continue
                if f.suffix.lower() in (".pkl", ".pickle"):
                    fail(InputError("targets", f"{f.name}: not a StyleGAN2 network pickle", str(f)))
                if f.suffix.lower() not in TORCH_SUFFIXES:
                    fail(InputError("targets", f"{f.name}: not a PyTorch weights file ({', '.join(TORCH_SUFFIXES)})", str(f)))
                _convert_tensors(f)
    except ToonboothError as exc:
        fail(exc)


def register(models_app: typer.Typer) -> None:
    models_app.command("convert")(models_convert)
