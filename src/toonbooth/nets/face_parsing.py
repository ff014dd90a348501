"""The face-parsing model family: BiSeNet weights (`nets.bisenet`) in `<models>/FaceParsing/`.

The public file is zllrunning/face-parsing.PyTorch's `79999_iter.pth` (a plain state dict, read with
`torch.load(weights_only=True)`; 53.3 MB, 191 tensors), or a `.safetensors` copy of it (`toonbooth models convert
79999_iter`). Files are identified by their tensor names (`looks_like_bisenet`), never by their names; a weight
file of anything else in that folder is listed as refused.

Also here: `state_dict_keys` (the tensor names of a `.safetensors` header or of a `weights_only` torch file,
memory-mapped so a 1.4 GB file is not read) and `convert_to_safetensors`, shared with the Stable-Makeup family.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import ModelError
from ..core.fs import atomic_path
from ..models.families.base import LoadEnv, ModelFamily
from ..models.registry import ModelEntry, walk_files

if TYPE_CHECKING:
    from .bisenet import BiSeNet

FACE_PARSING_FOLDERS: tuple[str, ...] = ("FaceParsing", "face_parsing")
WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".pth", ".pt", ".bin")
"""Preference order when one name has several files (safetensors first)."""
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")

_KEYS_LOCK = threading.Lock()
_KEYS_MEMO: dict[tuple[str, int, int], frozenset[str] | str] = {}


def state_dict_keys(path: Path) -> frozenset[str]:
    """Tensor names of a weights file: the `.safetensors` header, or a torch file opened with
    `torch.load(weights_only=True, mmap=True)` (only the pickle's index is read; legacy non-zip files are
    loaded whole). Remembered per (path, size, mtime). ModelError when the file is no plain tensor dict."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _KEYS_LOCK:
        hit = _KEYS_MEMO.get(key)
    if hit is None:
        try:
            hit = frozenset(_read_keys(path))
        except ModelError as exc:
            hit = str(exc)
        with _KEYS_LOCK:
            if len(_KEYS_MEMO) > 256:
                _KEYS_MEMO.clear()
            _KEYS_MEMO[key] = hit
    if isinstance(hit, str):
        raise ModelError(hit)
    return hit


def _read_keys(path: Path) -> set[str]:
    if path.suffix.lower() == ".safetensors":
        from ..models.probe import read_header

        return set(read_header(path).shapes)
    import torch

    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) serialization cannot be memory-mapped
            if "mmap" not in str(exc).lower() and "zip" not in str(exc).lower():
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{path.name}: not loadable with torch.load(weights_only=True) ({type(exc).__name__}); toonbooth never "
            "unpickles arbitrary objects: convert it to .safetensors on a trusted machine"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path.name}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    return set(obj)


def convert_to_safetensors(path: Path, *, overwrite: bool = False) -> Path:
    """Write `<stem>.safetensors` next to a `weights_only` torch file (tensors made contiguous; the file is
    replaced atomically). Returns the new path; an existing one is kept unless `overwrite`."""
    from safetensors.torch import save_file

    from .bisenet import read_state_dict

    target = path.with_suffix(".safetensors")
    if path.suffix.lower() == ".safetensors":
        return path
    if target.exists() and not overwrite:
        return target
    sd = read_state_dict(path, path.name)
    with atomic_path(target) as tmp:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp))
    return target


# ---------------------------------------------------------------------------------------------------
# The family
# ---------------------------------------------------------------------------------------------------


def face_parsing_entry(file: Path, top: Path, folder: str) -> ModelEntry | None:
    """An entry for a weights file in `<models>/FaceParsing/` (None for other suffixes): usable when its keys
    are BiSeNet's (`cp.resnet.*`, `ffm.*`, `conv_out*`), refused otherwise."""
    from .bisenet import looks_like_bisenet

    suffix = file.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        return None
    refused = None
    try:
        if not looks_like_bisenet(set(state_dict_keys(file))):
            refused = f"{file.name}: not BiSeNet face-parsing weights (no `cp.resnet.*` / `ffm.*` / `conv_out.*` keys)"
    except ModelError as exc:
        refused = str(exc)
    return ModelEntry(
        name=file.stem, path=file, kind="face_parsing", source="folder", folder=folder,
        layout="safetensors" if suffix == ".safetensors" else "torch-weights-only",
        relpath=file.relative_to(top).as_posix(), size=file.stat().st_size, refused=refused,
    )  # fmt: skip


def scan_face_parsing(top: Path, folder: str) -> list[ModelEntry]:
    return [e for f in walk_files(top) if (e := face_parsing_entry(f, top, folder)) is not None]


def load_face_parsing(entry: ModelEntry, env: LoadEnv) -> BiSeNet:
    """BiSeNet in float32 on the manager's device (13 M parameters: half precision buys nothing here)."""
    from .bisenet import load_bisenet

    if entry.path is None:
        raise ModelError(f"face-parsing model {entry.name!r} is not a local file")
    return load_bisenet(entry.path, device=env.device).eval()


def convert_face_parsing(entry: ModelEntry) -> list[Path]:
    if entry.path is None:
        raise ModelError(f"face-parsing model {entry.name!r} is not a local file")
    return [convert_to_safetensors(entry.path)]


FACE_PARSING_FAMILY = ModelFamily(
    kind="face_parsing",
    description="BiSeNet face parsing, 19 CelebAMask-HQ classes (79999_iter.pth or .safetensors)",
    folders=FACE_PARSING_FOLDERS,
    suffixes=WEIGHT_SUFFIXES,
    scan=scan_face_parsing,
    load=load_face_parsing,
    approx_bytes=53_289_463,
    shared_only=True,
    licence_note="code MIT (zllrunning/face-parsing.PyTorch); weights trained on CelebAMask-HQ (non-commercial "
    "research data set)",
    extra={"convert": convert_face_parsing},
)



def write_tiny_face_parser(path: Path, seed: int = 0) -> Path:
    """A width-8 BiSeNet (random weights, the public key layout) saved as a plain `torch.save` state dict, like
    `79999_iter.pth` (a `.safetensors` path writes safetensors): the face-parsing weights of the tiny set."""
    import torch

    from .bisenet import tiny_bisenet

    sd = {k: v.contiguous() for k, v in tiny_bisenet(seed).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return path
