"""The model families of the toon studio, next to their loaders, and the operator's `models convert` step.

Families (identified by their tensor names, never by file names; `.safetensors` headers are read at scan
time, `.pt` / `.pth` files are listed and only ever read with `torch.load(weights_only=True)`):

| kind        | folder                         | what                                                             |
|-------------|--------------------------------|------------------------------------------------------------------|
| `stylegan2` | `<models>/StyleGAN2/`          | rosinality-layout generators (`g_ema.*`, optional `g.*`, `d.*`, `latent_avg`; or a rosinality `.pt` read with `weights_only` + `argparse.Namespace`); users' toon styles and saved blends live in `<models>/users/<owner>/StyleGAN2/` |
| `psp`       | `<models>/pSp/`                | pSp / e4e encoders (`encoder.*` + `decoder.*` + `latent_avg`)   |
| `vgg16`     | `<models>/VGG16/`              | torchvision VGG16 `features.*` (the projector's perceptual loss) |
| `lpips`     | `<models>/LPIPS/`              | LPIPS linear layers `lin{0..4}.model.1.weight` (`vgg.pth` v0.1)  |
| `ir_se50`   | `<models>/IR-SE50/`            | the IR-SE50 face-recognition net (`model_ir_se50.pth`), identity loss |

`convert_model_file` turns the operator's public downloads into safetensors in the right folder, identified
by content: NVIDIA `stylegan2-ada-pytorch` and legacy TF `.pkl` (through `stylegan2_convert`'s allow-list
unpickler, which never runs embedded code), rosinality `.pt`, pSp / e4e `.pt` (whose decoder is also written
as a StyleGAN2 model: the pSp toonify checkpoint carries the toonify generator), VGG16 / LPIPS / IR-SE50
`.pth`. A toon style (a fine-tuned generator, a saved blend) is written with `save_toon_style`: the
safetensors file plus a manifest in `<models>/[users/<owner>/]styles/<name>/style.json` in the format of
`training.styles` (model kind `stylegan2`), so it is listed, downloaded and deleted like the other styles.

Licences: most FFHQ-derived weights are non-commercial (NVIDIA Source Code License-NC); each family's
`licence_note` says so and `toonbooth models list` shows it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InputError, ModelError, UnsafeModelFormatError
from ..core.fs import atomic_path, atomic_write_text
from ..models.families import LoadEnv, ModelFamily
from ..models.probe import read_header
from ..models.registry import ModelEntry, walk_files
from .psp import (
    PSPInverter,
    encoder_config_from_state_dict,
    load_identity_backbone,
    load_psp,
    load_psp_checkpoint,
    looks_like_identity_backbone,
    looks_like_psp_encoder,
    save_psp_safetensors,
)
from .stylegan2 import (
    Generator,
    StyleGAN2Weights,
    config_from_state_dict,
    convert_rosinality_checkpoint,
    load_generator,
    load_stylegan2_weights,
    looks_like_rosinality_generator,
    save_stylegan2_safetensors,
)
from .vgg import load_lpips_lins, load_vgg16, looks_like_lpips_lins, looks_like_vgg16

__all__ = [
    "FAMILIES",
    "IR_SE50_FAMILY",
    "LPIPS_FAMILY",
    "PSP_FAMILY",
    "STYLEGAN2_FAMILY",
    "VGG16_FAMILY",
    "ConvertedFile",
    "PSPModel",
    "StyleGAN2Model",
    "check_toon_style_name",
    "convert_model_file",
    "save_toon_style",
]

STYLEGAN2_FOLDER = "StyleGAN2"
PSP_FOLDER = "pSp"
VGG16_FOLDER = "VGG16"
LPIPS_FOLDER = "LPIPS"
IR_SE50_FOLDER = "IR-SE50"
STYLES_FOLDER = "styles"  # as training.styles
MANIFEST = "style.json"
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")  # core.specs.STYLE_NAME_RE

FFHQ_NC = (
    "non-commercial when derived from NVIDIA's FFHQ StyleGAN2 (NVIDIA Source Code License-NC): the FFHQ model, "
    "Toonify and other fine-tunes, pSp/e4e decoders and the toon styles trained or blended from them"
)


# ---------------------------------------------------------------------------------------------------
# Loaded objects
# ---------------------------------------------------------------------------------------------------


@dataclass
class StyleGAN2Model:
    """A loaded generator (the EMA copy, eval mode, float32) with its file's `latent_avg` (None if absent)."""

    generator: Generator
    latent_avg: torch.Tensor | None
    name: str
    path: Path

    @property
    def size(self) -> int:
        return self.generator.size


@dataclass
class PSPModel:
    """A loaded pSp / e4e encoder (with `latent_avg`) and the decoder generator it was trained with."""

    inverter: PSPInverter
    decoder: Generator | None
    kind: str
    name: str

    @property
    def n_styles(self) -> int:
        return self.inverter.encoder.config.n_styles


# ---------------------------------------------------------------------------------------------------
# Scanning: identify by content
# ---------------------------------------------------------------------------------------------------


def _meta_tensors(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Shape-only stand-ins (meta device) for the header's tensors: config inference reads shapes only."""
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def _entry(file: Path, top: Path, folder: str, kind: str, **kw: Any) -> ModelEntry:
    return ModelEntry(
        name=file.stem, path=file, kind=kind, source="folder", folder=folder,
        relpath=file.relative_to(top).as_posix(), size=file.stat().st_size, **kw,
    )  # fmt: skip


def _pt_entry(file: Path, top: Path, folder: str, kind: str, what: str) -> ModelEntry:
    note = f"{what}: read with torch.load(weights_only=True) when loaded (refused if it needs more)"
    return _entry(file, top, folder, kind, layout="pt", details={"note": note})


def _header(file: Path) -> tuple[dict[str, tuple[int, ...]] | None, dict[str, str], str | None]:
    try:
        h = read_header(file)
    except (ModelError, UnsafeModelFormatError) as exc:
        return None, {}, str(exc)
    return h.shapes, h.metadata, None


def stylegan2_details(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Size, style width, W+ count and parts of a rosinality StyleGAN2 file, from its tensor shapes."""
    cfg = config_from_state_dict(_meta_tensors(shapes))
    return {
        "size": cfg.size, "style_dim": cfg.style_dim, "n_latent": cfg.n_latent, "n_mlp": cfg.n_mlp,
        "has_d": any(k.startswith("d.") for k in shapes), "has_g": any(k.startswith("g.") for k in shapes),
        "latent_avg": "latent_avg" in shapes,
    }  # fmt: skip


def scan_stylegan2(top: Path, folder: str) -> list[ModelEntry]:
    out = []
    for file in walk_files(top):
        suffix = file.suffix.lower()
        if suffix not in _WEIGHT_SUFFIXES:
            continue
        if suffix != ".safetensors":
            out.append(_pt_entry(file, top, folder, "stylegan2", "rosinality StyleGAN2 checkpoint"))
            continue
        shapes, meta, err = _header(file)
        refused, details = err, {}
        if shapes is not None:
            if looks_like_psp_encoder(set(shapes)):
                refused = f"{file.name}: a pSp/e4e encoder; it belongs in {PSP_FOLDER}/"
            elif not looks_like_rosinality_generator(set(shapes)):
                refused = f"{file.name}: no rosinality StyleGAN2 generator keys (input.input, conv1, to_rgb1, style.1)"
            else:
                try:
                    details = stylegan2_details(shapes)
                except (ModelError, InputError) as exc:
                    refused = f"{file.name}: {exc}"
            for key in ("style_kind", "blend"):
                if key in meta:
                    details[key] = meta[key]
        out.append(_entry(file, top, folder, "stylegan2", layout="safetensors", refused=refused, details=details))
    return out


def scan_psp(top: Path, folder: str) -> list[ModelEntry]:
    out = []
    for file in walk_files(top):
        suffix = file.suffix.lower()
        if suffix not in _WEIGHT_SUFFIXES:
            continue
        if suffix != ".safetensors":
            out.append(_pt_entry(file, top, folder, "psp", "pSp / e4e checkpoint"))
            continue
        shapes, meta, err = _header(file)
        refused, details = err, {}
        if shapes is not None:
            enc = {k[len("encoder.") :]: v for k, v in shapes.items() if k.startswith("encoder.")}
            if not enc or not looks_like_psp_encoder(set(enc)):
                refused = f"{file.name}: no pSp/e4e encoder keys (encoder.input_layer / styles / latlayer)"
            else:
                try:
                    cfg = encoder_config_from_state_dict(_meta_tensors(enc))
                    opts = json.loads(meta.get("psp_opts", "{}"))
                    details = {
                        "n_styles": cfg.n_styles, "input_size": cfg.input_size,
                        "encoder_type": opts.get("encoder_type", "GradualStyleEncoder"),
                        "has_decoder": any(k.startswith("decoder.") for k in shapes),
                    }  # fmt: skip
                except (ModelError, InputError, ValueError) as exc:
                    refused = f"{file.name}: {exc}"
        out.append(_entry(file, top, folder, "psp", layout="safetensors", refused=refused, details=details))
    return out


def _simple_scan(kind: str, test: Any, what: str) -> Any:
    def scan(top: Path, folder: str) -> list[ModelEntry]:
        out = []
        for file in walk_files(top):
            suffix = file.suffix.lower()
            if suffix not in _WEIGHT_SUFFIXES:
                continue
            if suffix != ".safetensors":
                out.append(_pt_entry(file, top, folder, kind, what))
                continue
            shapes, _meta, err = _header(file)
            refused = err
            if shapes is not None and not test(set(shapes)):
                refused = f"{file.name}: not {what} (its tensor names do not match)"
            out.append(_entry(file, top, folder, kind, layout="safetensors", refused=refused))
        return out

    return scan


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


def load_stylegan2_entry(entry: ModelEntry, env: LoadEnv, parts: str = "g_ema") -> StyleGAN2Model | StyleGAN2Weights:
    """`parts="g_ema"`: the EMA generator ready for synthesis (float32 on the manager's device);
    `parts="all"`: the file's state dicts (`g_ema`, `g`, `d`, `latent_avg`) on the CPU, for training."""
    if parts == "all":
        return load_stylegan2_weights(entry.location)
    if parts != "g_ema":
        raise ModelError(f"StyleGAN2 parts must be g_ema or all, got {parts!r}")
    gen, latent_avg = load_generator(entry.location, which="g_ema", device=env.device)
    gen.requires_grad_(False)
    avg = latent_avg.to(env.device).float() if latent_avg is not None else None
    return StyleGAN2Model(gen, avg, entry.name, Path(entry.location))


def load_psp_entry(entry: ModelEntry, env: LoadEnv) -> PSPModel:
    inverter, decoder = load_psp(entry.location, device=env.device)
    inverter.requires_grad_(False)
    if decoder is not None:
        decoder.requires_grad_(False)
    kind = "e4e" if type(inverter.encoder).__name__ == "Encoder4Editing" else "psp"
    return PSPModel(inverter, decoder, kind, entry.name)


def load_vgg16_entry(entry: ModelEntry, env: LoadEnv) -> Any:
    return load_vgg16(entry.location, device=env.device).requires_grad_(False)


def load_lpips_entry(entry: ModelEntry, env: LoadEnv) -> list[torch.Tensor]:
    return load_lpips_lins(entry.location)


def load_ir_se50_entry(entry: ModelEntry, env: LoadEnv) -> Any:
    return load_identity_backbone(entry.location, device=env.device).requires_grad_(False)


STYLEGAN2_FAMILY = ModelFamily(
    kind="stylegan2",
    description="StyleGAN2 generator, rosinality layout (safetensors; rosinality .pt read weights_only)",
    folders=(STYLEGAN2_FOLDER, "stylegan2"),
    suffixes=_WEIGHT_SUFFIXES,
    scan=scan_stylegan2,
    load=load_stylegan2_entry,
    cache_options=("parts",),
    approx_bytes=121_000_000,
    licence_note=FFHQ_NC + ".",
)
PSP_FAMILY = ModelFamily(
    kind="psp",
    description="pSp / e4e encoder (IR-SE50 GradualStyleEncoder / Encoder4Editing) with its decoder",
    folders=(PSP_FOLDER, "psp"),
    suffixes=_WEIGHT_SUFFIXES,
    scan=scan_psp,
    load=load_psp_entry,
    approx_bytes=1_190_000_000,
    shared_only=True,
    licence_note="pSp / e4e code MIT; the released encoders carry NVIDIA's FFHQ StyleGAN2 as decoder: "
    + FFHQ_NC + ".",
)
VGG16_FAMILY = ModelFamily(
    kind="vgg16",
    description="VGG16 features (torchvision key names) for the projector's LPIPS loss",
    folders=(VGG16_FOLDER, "vgg16"),
    suffixes=_WEIGHT_SUFFIXES,
    scan=_simple_scan("vgg16", looks_like_vgg16, "a torchvision VGG16 state dict"),
    load=load_vgg16_entry,
    approx_bytes=528_000_000,
    shared_only=True,
    licence_note="ImageNet VGG16 (Simonyan & Zisserman) as torchvision ships it: BSD-3-Clause code; the "
    "weights' own terms follow the VGG release (CC BY 4.0 per the Oxford VGG page; not verified here).",
)
LPIPS_FAMILY = ModelFamily(
    kind="lpips",
    description="LPIPS linear layers (lin0..4) for the VGG16 perceptual distance",
    folders=(LPIPS_FOLDER, "lpips"),
    suffixes=_WEIGHT_SUFFIXES,
    scan=_simple_scan("lpips", looks_like_lpips_lins, "an LPIPS lin-weights file"),
    load=load_lpips_entry,
    approx_bytes=8_000,
    shared_only=True,
    licence_note="BSD-2-Clause (richzhang/PerceptualSimilarity).",
)
IR_SE50_FAMILY = ModelFamily(
    kind="ir_se50",
    description="IR-SE50 face recognition network (model_ir_se50.pth) for an identity loss",
    folders=(IR_SE50_FOLDER, "ir_se50"),
    suffixes=_WEIGHT_SUFFIXES,
    scan=_simple_scan("ir_se50", looks_like_identity_backbone, "an IR-SE50 identity network"),
    load=load_ir_se50_entry,
    approx_bytes=175_000_000,
    shared_only=True,
    licence_note="TreB1eN/InsightFace_Pytorch code MIT; the weights were trained on MS-Celeb-1M-derived data "
    "and carry no stated licence: research use only (not verified).",
)
FAMILIES = (STYLEGAN2_FAMILY, PSP_FAMILY, VGG16_FAMILY, LPIPS_FAMILY, IR_SE50_FAMILY)


# ---------------------------------------------------------------------------------------------------
# Toon styles: a generator saved as a user's (or the shared) model, with a style manifest
# ---------------------------------------------------------------------------------------------------


def _base(models_dir: Path, owner: str | None) -> Path:
    return Path(models_dir) / "users" / owner if owner else Path(models_dir)


def toon_style_path(models_dir: Path, owner: str | None, name: str) -> Path:
    return _base(models_dir, owner) / STYLEGAN2_FOLDER / f"{name}.safetensors"


def check_toon_style_name(registry: Any, models_dir: Path, owner: str | None, name: str, field: str) -> None:
    """InputError naming `field` when `name` is not a valid style name or the owner already has a style or
    StyleGAN2 model of that name."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise InputError(field, f"must be 1-64 letters, digits or '_.+-', got {name!r}", name)
    base = _base(models_dir, owner)
    if (base / STYLES_FOLDER / name / MANIFEST).exists():
        raise InputError(field, f"you already have a style called {name!r}: delete it or pick another name", name)
    folder = base / STYLEGAN2_FOLDER
    if any((folder / f"{name}{s}").exists() for s in _WEIGHT_SUFFIXES):
        raise InputError(field, f"a StyleGAN2 model called {name!r} already exists in your models", name)
    own = [e for e in registry.list(kind="stylegan2", owner=owner) if e.owner == owner and e.name == name]
    if own:
        raise InputError(field, f"a StyleGAN2 model called {name!r} already exists in your models", name)


def save_toon_style(
    registry: Any,
    models_dir: Path,
    owner: str | None,
    name: str,
    *,
    g_ema: Any,
    latent_avg: torch.Tensor | None,
    facts: dict[str, Any],
    g: Any = None,
    d: Any = None,
    extra_files: dict[str, Path] | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write the generator to `<models>/[users/<owner>/]StyleGAN2/<name>.safetensors` (atomically), copy
    `extra_files` (role -> file, e.g. sample grids) into the style folder, write the manifest (the
    `training.styles.StyleInfo` fields, model kind `stylegan2`) and rescan the registry so the style is usable
    by name at once. `facts`: training_kind, arch, base_model, steps, image_count, resolution, final_loss...
    Returns the manifest."""
    check_toon_style_name(registry, models_dir, owner, name, "style_name")
    base = _base(models_dir, owner)
    target = toon_style_path(models_dir, owner, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    meta = {"style_kind": str(facts.get("training_kind", "")), **(metadata or {})}
    with atomic_path(target) as tmp:
        save_stylegan2_safetensors(tmp, g_ema, latent_avg=latent_avg, g=g, d=d, metadata=meta)
    folder = base / STYLES_FOLDER / name
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for role, src in (extra_files or {}).items():
        dest = folder / Path(src).name
        if Path(src).resolve() != dest.resolve():
            shutil.copyfile(src, dest)
        files[role] = str(dest)
    files["model"] = str(target)
    preview = (extra_files or {}).get("sample_0") or (extra_files or {}).get("samples")
    if preview is not None:
        dest = target.with_name(f"{name}.preview.png")
        shutil.copyfile(folder / Path(preview).name, dest)
        files["preview"] = str(dest)
    manifest = {
        "name": name, "model_kind": "stylegan2", "training_kind": str(facts.get("training_kind", "blend")),
        "arch": str(facts.get("arch", "stylegan2")), "trigger": "",
        "usage": f"toonbooth toon PHOTO --style {name}  (JSON: \"style\": \"{name}\")",
        "base_model": str(facts.get("base_model", "")), "base_model_hash": facts.get("base_model_hash"),
        "preset": None, "steps": int(facts.get("steps", 0)), "image_count": int(facts.get("image_count", 0)),
        "resolution": int(facts.get("resolution", 0)), "stages": None, "created_at": time.time(),
        "final_loss": facts.get("final_loss"), "owner": owner, "files": files,
        "details": {k: v for k, v in facts.items() if k not in ("training_kind", "arch", "base_model")},
    }  # fmt: skip
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, default=str))
    registry.scan()
    return manifest


# ---------------------------------------------------------------------------------------------------
# `toonbooth models convert`: public downloads -> safetensors in the right folder
# ---------------------------------------------------------------------------------------------------


@dataclass
class ConvertedFile:
    kind: str
    path: Path
    source_format: str
    notes: list[str] = field(default_factory=list)


def _load_pt(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UnsafeModelFormatError(
            f"{path.name}: not loadable with torch.load(weights_only=True) (+ argparse.Namespace): "
            f"{type(e).__name__}: {str(e)[:200]}; toonbooth never unpickles anything else"
        ) from e


def _keys_of(obj: Any) -> set[str]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return {k for k, v in obj.items() if isinstance(k, str)} if isinstance(obj, dict) else set()


def identify_weights(path: Path) -> tuple[str, str]:
    """(kind, source format) of a weights file, by content: a `.pkl` is a StyleGAN2 network pickle (checked by
    the allow-list unpickler when converted); `.pt` / `.pth` / `.ckpt` are read with `weights_only`;
    `.safetensors` by their header."""
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        return "stylegan2", "network-pickle"
    if suffix == ".safetensors":
        shapes, _meta, err = _header(path)
        if shapes is None:
            raise ModelError(err or f"{path.name}: unreadable safetensors header")
        keys = set(shapes)
        fmt = "safetensors"
    elif suffix in (".pt", ".pth", ".ckpt"):
        obj = _load_pt(path)
        keys = _keys_of(obj)
        if isinstance(obj, dict) and ("g_ema" in obj or "g" in obj):
            return "stylegan2", "rosinality-pt"
        fmt = "torch-weights-only"
    else:
        raise InputError("file", f"{path.name}: unknown weights format {suffix!r} (.pkl, .pt, .pth, .safetensors)", str(path))
    if any(k.startswith("encoder.") for k in keys) and looks_like_psp_encoder(keys):
        return "psp", fmt
    if looks_like_rosinality_generator(keys):
        return "stylegan2", fmt
    if looks_like_vgg16(keys):
        return "vgg16", fmt
    if looks_like_lpips_lins(keys) or looks_like_lpips_lins({"lin" + k[5:] for k in keys if k.startswith("lins.")}):
        return "lpips", fmt
    if looks_like_identity_backbone(keys):
        return "ir_se50", fmt
    shown = ", ".join(sorted(keys)[:6])
    raise ModelError(
        f"{path.name}: its tensor names match no toon-studio model (StyleGAN2, pSp/e4e, VGG16, LPIPS, IR-SE50); "
        f"first keys: {shown or '(none)'}"
    )


_FOLDERS = {"stylegan2": STYLEGAN2_FOLDER, "psp": PSP_FOLDER, "vgg16": VGG16_FOLDER, "lpips": LPIPS_FOLDER,
            "ir_se50": IR_SE50_FOLDER}  # fmt: skip


def _destination(models_dir: Path, kind: str, name: str) -> Path:
    dest = Path(models_dir) / _FOLDERS[kind] / f"{name}.safetensors"
    if dest.exists():
        raise InputError("name", f"{dest} already exists: pass another --name or remove it first", name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


def convert_model_file(
    src: str | Path, models_dir: str | Path, name: str | None = None, *, decoder: bool = True
) -> list[ConvertedFile]:
    """Identify `src` by content and write it as safetensors into its family's folder of `models_dir` (the
    shared, operator's folder). `name`: the model name (default: the file stem). A pSp / e4e checkpoint with a
    decoder also gives `StyleGAN2/<name>.safetensors` (its decoder) when `decoder`. Nothing half-written is
    left behind (each file is written to a temporary name and renamed)."""
    from .stylegan2_convert import convert_stylegan2_pickle

    src = Path(src).expanduser()
    if not src.is_file():
        raise InputError("file", f"no such file: {str(src)!r}", str(src))
    name = name or src.stem
    if not _NAME_RE.match(name):
        raise InputError("name", f"must be 1-64 letters, digits or '_.+-', got {name!r}", name)
    kind, fmt = identify_weights(src)
    dest = _destination(Path(models_dir), kind, name)
    out: list[ConvertedFile] = []
    if kind == "stylegan2" and fmt == "network-pickle":
        with atomic_path(dest) as tmp:
            report = convert_stylegan2_pickle(src, tmp)
        notes = [f"networks: {', '.join(report.networks)}", *report.notes]
        if report.classes:
            notes.append(f"classes recorded, never executed: {', '.join(report.classes)}")
        out.append(ConvertedFile(kind, dest, report.source_format, notes))
    elif kind == "stylegan2":
        with atomic_path(dest) as tmp:
            if fmt == "safetensors":
                shutil.copyfile(src, tmp)
            else:
                convert_rosinality_checkpoint(src, tmp)
        w = load_stylegan2_weights(dest)
        parts = ["g_ema"] + (["g"] if w.g else []) + (["d"] if w.d else [])
        out.append(ConvertedFile(kind, dest, fmt, [f"networks: {', '.join(parts)}", f"size {config_from_state_dict(w.g_ema).size}"]))
    elif kind == "psp":
        ckpt = load_psp_checkpoint(src)
        g_dest = None
        if decoder and ckpt.decoder:
            g_dest = _destination(Path(models_dir), "stylegan2", name)
        with atomic_path(dest) as tmp:
            save_psp_safetensors(tmp, ckpt)
        out.append(ConvertedFile(kind, dest, fmt, [f"encoder type {ckpt.opts.get('encoder_type', 'GradualStyleEncoder')}"]))
        if g_dest is not None:
            with atomic_path(g_dest) as tmp:
                save_stylegan2_safetensors(tmp, ckpt.decoder, latent_avg=ckpt.latent_avg[0] if (
                    ckpt.latent_avg is not None and ckpt.latent_avg.ndim == 2) else ckpt.latent_avg,
                    metadata={"converted_from": src.name, "source_format": "psp-decoder"})  # fmt: skip
            out.append(ConvertedFile("stylegan2", g_dest, "psp-decoder", ["the generator the encoder was trained with"]))
    else:
        if fmt == "safetensors":
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
        else:
            obj = _load_pt(src)
            if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
                obj = obj["state_dict"]
            tensors = {k: v.detach().contiguous().clone() for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if kind == "vgg16":
                tensors = {k: v for k, v in tensors.items() if k.startswith("features.")}
            elif kind == "lpips":
                tensors = {("lin" + k[5:] if k.startswith("lins.") else k): v for k, v in tensors.items()}
            from safetensors.torch import save_file

            with atomic_path(dest) as tmp:
                save_file(tensors, str(tmp), metadata={"converted_from": src.name})
        out.append(ConvertedFile(kind, dest, fmt))
    return out


# ---------------------------------------------------------------------------------------------------
# A tiny random-weight toon set in the public layouts (tests, `toonbooth models make-tiny-toon`)
# ---------------------------------------------------------------------------------------------------


def write_tiny_toon_set(directory: str | Path, size: int = 64, seed: int = 0) -> dict[str, Path]:
    """Write tiny random models in their *public* file layouts under `directory` (an A1111-style models folder):

    - `StyleGAN2/tiny-ffhq.pt`: a rosinality training checkpoint (`g`, `d`, `g_ema`, `latent_avg`, `args` =
      `argparse.Namespace`, `ada_aug_p`) -- the "FFHQ" base;
    - `StyleGAN2/tiny-toonify.safetensors`: its "cartoon fine-tune" (every weight moved a little), with `d`;
    - `pSp/tiny-e4e.pt`: an e4e checkpoint (`state_dict` = `encoder.*` + `decoder.*` (the base), `opts`,
      `latent_avg`) for the base's W+;
    - `VGG16/tiny-vgg16.pth` (torchvision `features.*` keys) and `LPIPS/tiny-lpips.pth` (`lin{i}.model.1.weight`);
    - `IR-SE50/tiny-ir-se50.pth`: an identity network with the keys of `model_ir_se50.pth`.
    Returns name -> path. Deterministic for a seed."""
    from .psp import EncoderConfig, IdentityBackbone, build_encoder, n_styles_for, tiny_encoder_config
    from .stylegan2 import tiny_discriminator, tiny_generator
    from .vgg import tiny_vgg16

    root = Path(directory)
    style_dim = 32
    base = tiny_generator(size, style_dim=style_dim, n_mlp=2, seed=seed)
    disc = tiny_discriminator(size, seed=seed + 1)
    rng = torch.Generator().manual_seed(seed + 2)
    latent_avg = base.mean_latent(4096, generator=rng)[0]
    toon = Generator(base.config)
    toon.load_state_dict(base.state_dict())
    params = {n for n, _ in toon.named_parameters()}
    with torch.no_grad():
        for name, p in toon.state_dict().items():
            if name in params:
                p.add_(torch.randn(p.shape, generator=rng) * (0.3 * float(p.std()) if p.numel() > 1 else 0.1))
    toon_avg = toon.mean_latent(4096, generator=rng)[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 3)
        enc_cfg = tiny_encoder_config(n_styles=n_styles_for(size), style_dim=style_dim, input_size=64)
        encoder = build_encoder(enc_cfg, "e4e")
    paths = {
        "tiny-ffhq": root / STYLEGAN2_FOLDER / "tiny-ffhq.pt",
        "tiny-toonify": root / STYLEGAN2_FOLDER / "tiny-toonify.safetensors",
        "tiny-e4e": root / PSP_FOLDER / "tiny-e4e.pt",
        "tiny-vgg16": root / VGG16_FOLDER / "tiny-vgg16.pth",
        "tiny-lpips": root / LPIPS_FOLDER / "tiny-lpips.pth",
        "tiny-ir-se50": root / IR_SE50_FOLDER / "tiny-ir-se50.pth",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    torch.save(
        {"g": sd, "d": disc.state_dict(), "g_ema": sd, "latent_avg": latent_avg, "ada_aug_p": 0.0,
         "args": argparse.Namespace(size=size, latent=style_dim, n_mlp=2, channel_multiplier=2, tiny=True)},
        paths["tiny-ffhq"],
    )  # fmt: skip
    save_stylegan2_safetensors(paths["tiny-toonify"], toon, latent_avg=toon_avg, d=disc, metadata={"tiny": "1"})
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in sd.items()})
    opts = {"encoder_type": "Encoder4Editing", "start_from_latent_avg": True, "output_size": size,
            "stylegan_size": size, "tiny": True}  # fmt: skip
    torch.save({"state_dict": state, "opts": opts, "latent_avg": latent_avg}, paths["tiny-e4e"])
    torch.save(tiny_vgg16(seed=seed + 4).state_dict(), paths["tiny-vgg16"])
    widths = tiny_vgg16().config.widths
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=rng) for i, c in enumerate(widths)}
    torch.save(lins, paths["tiny-lpips"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 5)
        ident = IdentityBackbone(EncoderConfig(stage_units=(1, 1, 1, 1), stage_depths=(16, 20, 24, 32), input_size=112))
    torch.save(ident.eval().state_dict(), paths["tiny-ir-se50"])
    return paths
