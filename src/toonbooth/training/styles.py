"""Trained styles as per-user models: where their files live, listing, deleting.

A style of owner O called N is
  `<models>/users/O/Lora/N.safetensors` (kohya LoRA) or `<models>/users/O/embeddings/N.safetensors`
  (A1111 textual inversion) — the file the registry lists for O only and that `<lora:N:0.8>` loads;
  `<models>/users/O/Lora/N.preview.png` — A1111's preview image convention (the first sample);
  `<models>/users/O/styles/N/` — `style.json` (what was trained, how), the diffusers/PEFT LoRA
  `pytorch_lora_weights.safetensors`, the TI stages `stages.safetensors`, the sample images.
A style without an owner (the local CLI user) lives in the shared folders (`<models>/Lora/N…`,
`<models>/styles/N/`). Listing and deleting only ever see the caller's own styles (a style folder with a
manifest), never shared models or other users' styles: others' names answer "not found".
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..core.errors import InputError, NotFoundError
from ..core.fs import atomic_write_text
from ..core.specs import STYLE_NAME_RE

STYLES_FOLDER = "styles"
MANIFEST = "style.json"
_LOCK = threading.Lock()


class StyleFields(BaseModel):
    """What every view of a trained style shows (the API's `StyleOut` adds download URLs)."""

    name: str
    model_kind: Literal["lora", "embedding", "stylegan2"] = Field(description="Registry kind of the usable file.")
    training_kind: str = Field(description="train_lora | train_dreambooth | train_ti | train_toon | blend")
    arch: str
    trigger: str
    usage: str = Field(description="How to use it in a prompt.")
    base_model: str
    base_model_hash: str | None = None
    preset: str | None = None
    steps: int
    image_count: int
    resolution: int
    stages: int | None = None
    created_at: float
    final_loss: float | None = None


class StyleInfo(StyleFields):
    """One trained style, as listed to its owner."""

    owner: str | None
    files: dict[str, str] = Field(description="role -> path (model, peft, stages, samples, preview).")


def _base(models_dir: Path, owner: str | None) -> Path:
    return models_dir / "users" / owner if owner else models_dir


def style_dir(models_dir: Path, owner: str | None, name: str) -> Path:
    _check_name(name)
    return _base(models_dir, owner) / STYLES_FOLDER / name


def model_path(models_dir: Path, owner: str | None, name: str, model_kind: str) -> Path:
    folder = "Lora" if model_kind == "lora" else "embeddings"
    return _base(models_dir, owner) / folder / f"{name}.safetensors"


def _check_name(name: str) -> None:
    import re

    if not isinstance(name, str) or not re.match(STYLE_NAME_RE, name) or ".." in name:
        raise InputError("style_name", f"must be 1-64 letters, digits or '_.+-', got {name!r}", name)


def check_name_free(registry: Any, models_dir: Path, owner: str | None, name: str) -> None:
    """InputError when the owner already has a style or model of this name."""
    _check_name(name)
    if (style_dir(models_dir, owner, name) / MANIFEST).exists():
        raise InputError(
            "style_name", f"you already have a style called {name!r}: delete it or pick another name", name
        )
    for kind in ("lora", "embedding"):
        if model_path(models_dir, owner, name, kind).exists():
            raise InputError("style_name", f"a {kind} called {name!r} already exists in your models", name)
    own = [
        e
        for e in registry.list(owner=owner)
        if e.owner == owner and e.name == name and e.kind in ("lora", "embedding")
    ]
    if own:
        raise InputError("style_name", f"a {own[0].kind} called {name!r} already exists in your models", name)


def register_style(
    registry: Any,
    models_dir: Path,
    owner: str | None,
    info: StyleInfo,
    model_file: Path,
    extra: dict[str, Path],
) -> StyleInfo:
    """Copy the files into place, add the model to the registry under `owner` and write the manifest."""
    with _LOCK:
        folder = style_dir(models_dir, owner, info.name)
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        for role, src in extra.items():
            dest = folder / src.name
            if src.resolve() != dest.resolve():
                shutil.copyfile(src, dest)
            files[role] = str(dest)
        entry = registry.add(model_file, kind=info.model_kind, owner=owner, name=info.name)
        files["model"] = str(entry.path)
        preview = extra.get("sample_0")
        if preview is not None and entry.path is not None:
            target = entry.path.with_name(f"{info.name}.preview.png")
            shutil.copyfile(folder / preview.name, target)
            files["preview"] = str(target)
        info = info.model_copy(update={"files": files})
        atomic_write_text(folder / MANIFEST, info.model_dump_json(indent=2))
    return info


def list_styles(models_dir: Path, owner: str | None) -> list[StyleInfo]:
    """The owner's styles (read from their manifests; a style whose model file is gone is left out)."""
    root = _base(models_dir, owner) / STYLES_FOLDER
    out = []
    for manifest in sorted(root.glob(f"*/{MANIFEST}")) if root.is_dir() else []:
        try:
            info = StyleInfo.model_validate(json.loads(manifest.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
        if info.owner == owner and Path(info.files.get("model", "")).is_file():
            out.append(info)
    return out


def get_style(models_dir: Path, owner: str | None, name: str) -> StyleInfo:
    for info in list_styles(models_dir, owner):
        if info.name == name:
            return info
    raise NotFoundError(f"you have no style called {name!r}")


def delete_style(registry: Any, models_dir: Path, owner: str | None, name: str) -> StyleInfo:
    """Remove the owner's style: its model file, preview, style folder, and its registry entry."""
    _check_name(name)
    with _LOCK:
        info = get_style(models_dir, owner, name)
        base = _base(models_dir, owner).resolve()
        for role, path in info.files.items():
            p = Path(path)
            if role in ("model", "preview") and p.resolve().is_relative_to(base):
                p.unlink(missing_ok=True)
        shutil.rmtree(style_dir(models_dir, owner, name), ignore_errors=True)
        registry.scan()
    return info
