"""Identify a model file by its tensor names and shapes, never by its file name; hash it the way
AUTOMATIC1111 does.

Only the safetensors header is read (format: https://github.com/huggingface/safetensors#format —
an 8-byte little-endian header length, then a JSON object mapping tensor names to dtype, shape and
byte offsets, plus an optional `__metadata__` string map). No tensor data is loaded and nothing is
ever unpickled: `.ckpt/.pt/.pth/.bin` files (zip or pickle streams) are refused with
`UnsafeModelFormatError`.

Key families recognised (as documented by diffusers `loaders/single_file_utils.py`, ComfyUI
`model_detection.py`, kohya-ss `networks/lora.py`, and the A1111 textual-inversion format):

- checkpoints, original (SGM / LDM) layout: `model.diffusion_model.*`; the UNet's cross-attention
  context width (`...attn2.to_k.weight` shape `[out, ctx]`) gives the family: 768 = SD1.x,
  1024 = SD2.x, 2048 = SDXL base (with `label_emb`, ADM input 2816), 1280 = SDXL refiner
  (ADM input 2560). Text encoders confirm it: `cond_stage_model.transformer.*` (SD1, CLIP-L),
  `cond_stage_model.model.*` (SD2, OpenCLIP-H), `conditioner.embedders.0.transformer.*` +
  `conditioner.embedders.1.model.*` (SDXL), `conditioner.embedders.0.model.*` alone (refiner).
  Inpainting UNets take 9 input channels (`input_blocks.0.0.weight` shape `[*, 9, 3, 3]`).
- checkpoints, diffusers layout (a UNet saved alone): `conv_in`, `time_embedding`, `down_blocks.*`.
- ControlNet, original layout: `[control_model.]input_hint_block.*` + `zero_convs.*`;
  diffusers layout: `controlnet_cond_embedding.*` + `controlnet_down_blocks.*` (SDXL ones also
  carry `add_embedding.*`).
- LoRA: kohya `lora_unet_* / lora_te[12]_*` with `.lora_down/.lora_up/.alpha` (LyCORIS LoHa /
  LoKr: `.hada_w1_a` / `.lokr_w1`), PEFT / new diffusers `*.lora_A.weight / *.lora_B.weight`, old
  diffusers attention processors `*.to_k_lora.down.weight` / `*.lora.down.weight`. The family comes
  from the in-features of the `attn2.to_k` down matrix, else from which text encoders are present.
- Textual-inversion embeddings: A1111 `emb_params` / `string_to_param.*` (width 768 = SD1,
  1024 = SD2), SDXL `clip_l` + `clip_g`, diffusers `learned_embeds` (one tensor named by its token).
- VAE: `encoder.*` + `decoder.*` (+ `quant_conv`), original or diffusers names.

Hashes (A1111 `modules/hashes.py` and `modules/sd_models.py`):

- `sha256_file`: sha256 of the whole file. A1111's "new" model hash and checkpoint title
  (`name.safetensors [abcdef0123]`) use its first 10 hex digits: `a1111_short_hash`.
- `a1111_legacy_hash`: the old `model_hash` — sha256 of the 0x10000 bytes at offset 0x100000,
  first 8 hex digits. Old infotexts' "Model hash" and sd-webui-controlnet's model names
  (`diffusers_xl_canny_full [2b69fca4]`) use it.
- `addnet_hash`: sha256 of everything after the safetensors header (A1111 "Lora hashes" use its
  first 12 hex digits), so editing metadata does not change it.

`HashCache` keeps computed hashes in a JSON sidecar keyed by (absolute path, size, mtime).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ..core.errors import ModelError, UnsafeModelFormatError
from ..core.fs import atomic_open

ProbeKind = Literal["checkpoint", "controlnet", "lora", "embedding", "vae", "unknown"]
ProbeArch = Literal["sd15", "sd2", "sdxl", "sdxl-refiner", "unknown"]

MAX_HEADER_BYTES = 100 * 1024 * 1024
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
SAFETENSORS_SUFFIXES = frozenset({".safetensors", ".sft"})

_DTYPE_BYTES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1, "F4": 0.5, "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
}  # fmt: skip

CONVERT_HINT = (
    "convert it to .safetensors once, in a trusted environment, e.g. "
    '`python -c "import torch, safetensors.torch as st; '
    "sd = torch.load('x.ckpt', map_location='cpu', weights_only=True); "
    "st.save_file(sd.get('state_dict', sd), 'x.safetensors')\"` "
    "(for a diffusers folder: `pipe.save_pretrained(dir, safe_serialization=True)`), then add the .safetensors file"
)


# --------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SafetensorsHeader:
    """What a safetensors header says: tensor shapes and dtypes, the metadata strings, sizes."""

    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    metadata: dict[str, str]
    header_length: int
    file_size: int


class ProbeResult(BaseModel):
    """What a model file is, decided from its tensor names and shapes."""

    path: Path
    kind: ProbeKind
    arch: ProbeArch
    layout: str = Field(
        description="checkpoint / controlnet: original | diffusers; lora: kohya | lycoris | peft | "
        "diffusers-old; embedding: a1111-sd15 | a1111-sdxl | diffusers; vae: original | diffusers; "
        "unknown when nothing matched"
    )
    inpainting: bool = Field(
        False, description="UNet takes 9 input channels (latents + mask + masked image)."
    )
    tensor_count: int = Field(ge=0)
    size: int = Field(ge=0, description="File size in bytes.")
    metadata: dict[str, str] = Field(default_factory=dict, description="The header's __metadata__ strings.")
    details: dict[str, str | int | bool | None] = Field(
        default_factory=dict,
        description="Facts found on the way (context width, rank, parts present, notes).",
    )


def _corrupt(path: Path, why: str) -> ModelError:
    return ModelError(f"{path} is not a valid .safetensors file: {why}")


def _looks_pickled(head: bytes) -> str | None:
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (PyTorch `torch.save` format, which contains a pickle)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a pickle stream (protocol {head[1]})"
    return None


def unsafe_format_error(path: Path, what: str) -> UnsafeModelFormatError:
    return UnsafeModelFormatError(
        f"{path.name} is {what}. toonbooth never unpickles model files: unpickling runs arbitrary code "
        f"from the file. To use it, {CONVERT_HINT}."
    )


def read_header(path: str | Path, max_header_bytes: int = MAX_HEADER_BYTES) -> SafetensorsHeader:
    """Read and validate the safetensors header of `path` (no tensor data is read).

    Raises `UnsafeModelFormatError` for pickle-based files (by suffix or by content) and
    `ModelError` naming the file for anything short, truncated or malformed."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise unsafe_format_error(path, f"a pickle-based `{path.suffix}` file")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                pickled = _looks_pickled(head)
                if pickled:
                    raise unsafe_format_error(path, pickled)
                raise _corrupt(path, f"only {size} bytes long, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            problem = None
            if n < 2:
                problem = f"header length {n} is too small"
            elif n > max_header_bytes:
                problem = f"header length {n} bytes is over the {max_header_bytes}-byte limit"
            elif 8 + n > size:
                problem = f"header length {n} runs past the end of the {size}-byte file"
            if problem:
                pickled = _looks_pickled(head)
                if pickled:
                    raise unsafe_format_error(path, pickled)
                raise _corrupt(path, problem)
            raw = f.read(n)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        pickled = _looks_pickled(head)
        if pickled:
            raise unsafe_format_error(path, pickled) from exc
        raise _corrupt(path, f"header is not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise _corrupt(path, "header JSON is not an object")
    data_size = size - 8 - n
    meta_raw = obj.pop("__metadata__", None) or {}
    if not isinstance(meta_raw, dict):
        raise _corrupt(path, "__metadata__ is not an object")
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta_raw.items()}
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for name, info in obj.items():
        if not isinstance(info, dict):
            raise _corrupt(path, f"entry {name!r} is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str):
            raise _corrupt(path, f"tensor {name!r} has no dtype")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise _corrupt(path, f"tensor {name!r} has an invalid shape {shape!r}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise _corrupt(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
        if offsets[1] > data_size:
            raise _corrupt(
                path,
                f"truncated: tensor {name!r} ends at byte {offsets[1]} of a {data_size}-byte data section",
            )
        width = _DTYPE_BYTES.get(dtype)
        if width is not None and math.ceil(math.prod(shape) * width) != offsets[1] - offsets[0]:
            raise _corrupt(
                path, f"tensor {name!r}: {dtype}{shape} does not fit its {offsets[1] - offsets[0]} bytes"
            )
        shapes[name] = tuple(shape)
        dtypes[name] = dtype
    return SafetensorsHeader(shapes=shapes, dtypes=dtypes, metadata=metadata, header_length=n, file_size=size)


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------

_CONTEXT_ARCH: dict[int, ProbeArch] = {768: "sd15", 1024: "sd2", 2048: "sdxl", 1280: "sdxl-refiner"}
_ADM_ARCH: dict[int, ProbeArch] = {2816: "sdxl", 2560: "sdxl-refiner"}
_TE_WIDTH_ARCH: dict[int, ProbeArch] = {768: "sd15", 1024: "sd2"}


def _context_dim(shapes: dict[str, tuple[int, ...]], pattern: re.Pattern[str], axis: int = 1) -> int | None:
    """Most common in-feature width of the cross-attention key projections matched by `pattern`."""
    counts: dict[int, int] = {}
    for key, shape in shapes.items():
        if pattern.search(key) and len(shape) >= 2:
            counts[shape[axis]] = counts.get(shape[axis], 0) + 1
    if not counts:
        return None
    return max(counts.items(), key=lambda kv: kv[1])[0]


_ATTN2_TO_K = re.compile(r"attn2\.to_k\.weight$")
_CN_ORIG_PREFIX = re.compile(r"^(control_model\.)?")


def _arch_from(ctx: int | None, adm: int | None = None) -> ProbeArch:
    """Family from the real models' widths: cross-attention context and SDXL's ADM (size/crop) input."""
    if adm in _ADM_ARCH and ctx in (None, 2048, 1280):
        return _ADM_ARCH[adm]
    return _CONTEXT_ARCH.get(ctx, "unknown") if ctx is not None else "unknown"


# Structure, for UNets whose widths are not the released ones (fine-tuned variants, the tiny test models):
# SD1/SD2 UNets have cross-attention at the first resolution (diffusers `down_blocks.0.attentions`,
# SGM `input_blocks.1.1` / `.2.1`); SDXL's first level has none. SD1 projects into its transformers with
# 1x1 convolutions (`proj_in.weight` 4-D), SD2 and SDXL with linear layers (2-D).
_ANY_ATTN = re.compile(
    r"(down_blocks[._]\d+[._]attentions|input_blocks[._]\d+[._]1[._](transformer_blocks|proj_in|norm)"
    r"|middle_block[._]1[._]|mid_block[._]attentions)"
)
_LEVEL0_ATTN = re.compile(r"(down_blocks[._]0[._]attentions|input_blocks[._][12][._]1[._])")


def _structure_arch(shapes: dict[str, tuple[int, ...]], sdxl_conditioning: bool) -> ProbeArch:
    if sdxl_conditioning:
        return "sdxl"
    keys = [k for k in shapes if _ANY_ATTN.search(k)]
    if not keys:
        return "unknown"
    if not any(_LEVEL0_ATTN.search(k) for k in keys):
        return "sdxl"
    proj = [len(s) for k, s in shapes.items() if k.endswith("proj_in.weight") and _ANY_ATTN.search(k)]
    return "sd2" if proj and all(n == 2 for n in proj) else "sd15"


def _decide(ctx: int | None, adm: int | None, shapes: dict[str, tuple[int, ...]], details: dict) -> ProbeArch:
    arch = _arch_from(ctx, adm)
    if arch != "unknown":
        details["arch_basis"] = "context width"
        return arch
    arch = _structure_arch(shapes, sdxl_conditioning=adm is not None)
    if arch != "unknown":
        details["arch_basis"] = "block structure (non-standard widths)"
    return arch


def _classify_checkpoint_original(shapes: dict[str, tuple[int, ...]]) -> tuple[ProbeArch, bool, dict]:
    keys = shapes.keys()
    unet = {
        k[len("model.diffusion_model.") :]: v
        for k, v in shapes.items()
        if k.startswith("model.diffusion_model.")
    }
    ctx = _context_dim(unet, _ATTN2_TO_K)
    label = unet.get("label_emb.0.0.weight")
    adm = label[1] if label and len(label) == 2 else None
    arch = _arch_from(ctx, adm)
    basis = "context width" if arch != "unknown" else None
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    te = "none"
    if has("conditioner.embedders.1.model.") and has("conditioner.embedders.0.transformer."):
        te = "clip-l+openclip-bigg"
    elif has("conditioner.embedders.0.model."):
        te = "openclip-bigg"
    elif has("cond_stage_model.transformer."):
        te = "clip-l"
    elif has("cond_stage_model.model."):
        te = "openclip-h"
    if arch == "unknown":  # non-standard widths: the text encoders say which family
        arch = {
            "clip-l+openclip-bigg": "sdxl",
            "openclip-bigg": "sdxl-refiner",
            "clip-l": "sd15",
            "openclip-h": "sd2",
        }.get(te, "unknown")
        basis = "text encoders" if arch != "unknown" else None
    if arch == "unknown":
        arch = _structure_arch(unet, sdxl_conditioning=label is not None)
        basis = "block structure (non-standard widths)" if arch != "unknown" else None
    conv_in = unet.get("input_blocks.0.0.weight")
    in_ch = conv_in[1] if conv_in and len(conv_in) == 4 else None
    details = {
        "arch_basis": basis,
        "context_dim": ctx,
        "adm_in_channels": adm,
        "unet_in_channels": in_ch,
        "text_encoders": te,
        "has_vae": has("first_stage_model."),
    }
    if arch == "sd2":
        details["note"] = (
            "SD2 768-v and 512-base checkpoints have the same keys: the prediction type is not in the file"
        )
    if in_ch == 8:
        details["note"] = "8 input channels: an InstructPix2Pix-style UNet"
    return arch, in_ch == 9, details


def _classify_lora(shapes: dict[str, tuple[int, ...]]) -> tuple[str, ProbeArch, dict] | None:
    keys = list(shapes)
    kohya = any(k.startswith(("lora_unet_", "lora_te")) for k in keys)
    if kohya and any(".hada_w1_a" in k or ".lokr_w1" in k for k in keys):
        layout = "lycoris"
    elif kohya and any(k.endswith((".lora_down.weight", ".lora_up.weight")) for k in keys):
        layout = "kohya"
    elif any(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys):
        layout = "peft"
    elif any(
        k.endswith((".lora.down.weight", "_lora.down.weight", ".lora_linear_layer.down.weight")) for k in keys
    ):
        layout = "diffusers-old"
    else:
        return None
    # in-features of the cross-attention key projection's down matrix ([rank, in])
    down = re.compile(
        r"attn2[._]"
        r"(to_k\.lora_A\.weight|to_k_lora\.down\.weight|to_k\.lora\.down\.weight|to_k\.lora_linear_layer\.down\.weight"
        r"|processor\.to_k_lora\.down\.weight|to_k\.lora_down\.weight|to_k\.hada_w1_b)$"
    )
    ctx = _context_dim(shapes, down)
    arch = _arch_from(ctx)
    basis = "context width" if arch != "unknown" else None
    te2 = any(k.startswith(("lora_te2_", "text_encoder_2.", "te2.")) for k in keys)
    te1 = any(k.startswith(("lora_te1_", "lora_te_", "text_encoder.", "te1.")) for k in keys)
    if arch == "unknown" and te2:
        arch, basis = "sdxl", "second text encoder"
    if arch == "unknown" and te1:
        q = re.compile(
            r"(self_attn[._]q_proj)[._](lora_down\.weight|lora_A\.weight|lora\.down\.weight|hada_w1_b)$"
        )
        arch = _TE_WIDTH_ARCH.get(_context_dim(shapes, q) or 0, "unknown")
        basis = "text encoder width" if arch != "unknown" else None
    if arch == "unknown":
        arch = _structure_arch(shapes, sdxl_conditioning=False)
        basis = "block structure (non-standard widths)" if arch != "unknown" else None
    ranks = [s[0] for k, s in shapes.items() if k.endswith((".lora_down.weight", ".lora_A.weight")) and s]
    details = {
        "arch_basis": basis,
        "context_dim": ctx,
        "rank": max(set(ranks), key=ranks.count) if ranks else None,
        "unet": any(
            k.startswith(("lora_unet_", "unet.", "down_blocks.", "mid_block.", "up_blocks.")) for k in keys
        ),
        "text_encoder": te1 or te2,
    }
    return layout, arch, details


def _classify_embedding(shapes: dict[str, tuple[int, ...]]) -> tuple[str, ProbeArch, dict] | None:
    keys = set(shapes)
    if {"clip_l", "clip_g"} <= keys:
        width = (shapes["clip_l"][-1] if shapes["clip_l"] else 0) + (shapes["clip_g"][-1] if shapes["clip_g"] else 0)
        return "a1111-sdxl", "sdxl", {"vectors": shapes["clip_l"][0] if shapes["clip_l"] else None, "width": width}
    a1111 = [k for k in keys if k == "emb_params" or k.startswith("string_to_param.")]
    if a1111:
        shape = shapes[a1111[0]]
        width = shape[-1] if shape else 0
        vectors = shape[0] if len(shape) == 2 else 1
        return "a1111-sd15", _TE_WIDTH_ARCH.get(width, "unknown"), {"vectors": vectors, "width": width}
    if len(keys) == 1:
        (key,) = keys
        shape = shapes[key]
        if 1 <= len(shape) <= 2 and shape[-1] in (768, 1024) and (len(shape) == 1 or shape[0] <= 75):
            vectors = shape[0] if len(shape) == 2 else 1
            return (
                "diffusers",
                _TE_WIDTH_ARCH[shape[-1]],
                {"token": key, "vectors": vectors, "width": shape[-1]},
            )
    return None


def _classify_vae(shapes: dict[str, tuple[int, ...]]) -> tuple[str, dict] | None:
    prefix = ""
    if any(k.startswith("first_stage_model.") for k in shapes) and not any(
        k.startswith("model.diffusion_model.") for k in shapes
    ):
        prefix = "first_stage_model."
    enc = shapes.get(prefix + "encoder.conv_in.weight")
    dec = shapes.get(prefix + "decoder.conv_in.weight")
    if not enc or not dec:
        return None
    layout = "diffusers" if any(k.startswith(prefix + "encoder.down_blocks.") for k in shapes) else "original"
    latent = dec[1] if len(dec) == 4 else None
    note = (
        "SD1, SD2 and SDXL VAEs share this architecture: the family is not in the keys"
        if latent == 4
        else None
    )
    return layout, {"latent_channels": latent, "note": note}


def classify(shapes: dict[str, tuple[int, ...]]) -> tuple[ProbeKind, ProbeArch, str, bool, dict]:
    """(kind, arch, layout, inpainting, details) from tensor names and shapes alone."""
    keys = list(shapes)
    # 1. ControlNet, original layout (with or without the `control_model.` prefix)
    stripped = {_CN_ORIG_PREFIX.sub("", k): v for k, v in shapes.items()}
    if any(k.startswith("input_hint_block.") for k in stripped) and any(
        k.startswith("zero_convs.") for k in stripped
    ):
        ctx = _context_dim(
            stripped, re.compile(r"^input_blocks\.\d+\.1\.transformer_blocks\.\d+\.attn2\.to_k\.weight$")
        )
        label = stripped.get("label_emb.0.0.weight")
        hint = stripped.get("input_hint_block.0.weight")
        details = {"context_dim": ctx, "hint_channels": hint[1] if hint and len(hint) == 4 else None}
        arch = _decide(ctx, label[1] if label and len(label) == 2 else None, stripped, details)
        return "controlnet", arch, "original", False, details
    # 2. ControlNet, diffusers layout
    if "controlnet_cond_embedding.conv_in.weight" in shapes or any(
        k.startswith("controlnet_down_blocks.") for k in keys
    ):
        ctx = _context_dim(shapes, _ATTN2_TO_K)
        add = shapes.get("add_embedding.linear_1.weight")
        cond = shapes.get("controlnet_cond_embedding.conv_in.weight")
        details = {
            "context_dim": ctx,
            "hint_channels": cond[1] if cond and len(cond) == 4 else None,
            "has_add_embedding": add is not None,
        }
        arch = _decide(ctx, add[1] if add and len(add) == 2 else None, shapes, details)
        return "controlnet", arch, "diffusers", False, details
    # 3. LoRA family
    lora = _classify_lora(shapes)
    if lora:
        layout, arch, details = lora
        return "lora", arch, layout, False, details
    # 4. Full checkpoint, original layout
    if any(k.startswith("model.diffusion_model.") for k in keys):
        arch, inpainting, details = _classify_checkpoint_original(shapes)
        return "checkpoint", arch, "original", inpainting, details
    # 5. A diffusers-layout UNet saved as one file
    if (
        "conv_in.weight" in shapes
        and "time_embedding.linear_1.weight" in shapes
        and any(k.startswith("down_blocks.") for k in keys)
    ):
        ctx = _context_dim(shapes, _ATTN2_TO_K)
        add = shapes.get("add_embedding.linear_1.weight")
        in_ch = shapes["conv_in.weight"][1] if len(shapes["conv_in.weight"]) == 4 else None
        details = {
            "context_dim": ctx,
            "unet_in_channels": in_ch,
            "note": "UNet weights only (diffusers layout)",
        }
        arch = _decide(ctx, add[1] if add and len(add) == 2 else None, shapes, details)
        return "checkpoint", arch, "diffusers", in_ch == 9, details
    # 6. Textual-inversion embedding
    emb = _classify_embedding(shapes)
    if emb:
        layout, arch, details = emb
        return "embedding", arch, layout, False, details
    # 7. VAE
    vae = _classify_vae(shapes)
    if vae:
        layout, details = vae
        return "vae", "unknown", layout, False, details
    return "unknown", "unknown", "unknown", False, {"note": "no known key family matched"}


def probe_file(path: str | Path) -> ProbeResult:
    """Identify the safetensors file at `path` from its header (kind, family, layout, inpainting).

    Raises `UnsafeModelFormatError` for pickle-based files, `ModelError` for unreadable / corrupt
    ones and for formats that are not safetensors."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} is not a file")
    header = read_header(path)
    kind, arch, layout, inpainting, details = classify(header.shapes)
    return ProbeResult(
        path=path,
        kind=kind,
        arch=arch,
        layout=layout,
        inpainting=inpainting,
        tensor_count=len(header.shapes),
        size=header.file_size,
        metadata=header.metadata,
        details=details,
    )


# --------------------------------------------------------------------------------------------
# Hashes
# --------------------------------------------------------------------------------------------

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 (hex) of the whole file — A1111's "new" model hash, the one model hubs publish."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def a1111_short_hash(path: str | Path) -> str:
    """First 10 hex digits of the file's sha256: the hash in A1111 checkpoint titles `x.safetensors [hash]`."""
    return sha256_file(path)[:10]


def a1111_legacy_hash(path: str | Path) -> str:
    """A1111's old `model_hash`: sha256 of the 0x10000 bytes at offset 0x100000, first 8 hex digits.

    Cheap (reads 64 KiB) but collision-prone; old infotexts' "Model hash" and sd-webui-controlnet's
    model names (`name [8hex]`) use it."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        f.seek(0x100000)
        h.update(f.read(0x10000))
    return h.hexdigest()[:8]


def addnet_hash(path: str | Path) -> str:
    """sha256 of a safetensors file's tensor data (all bytes after the header), as A1111 hashes LoRAs
    ("Lora hashes" in infotexts use the first 12 hex digits). Metadata edits do not change it."""
    path = Path(path)
    header = read_header(path)
    h = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(8 + header.header_length)
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


HashKind = Literal["sha256", "legacy", "addnet"]
_HASHERS = {"sha256": sha256_file, "legacy": a1111_legacy_hash, "addnet": addnet_hash}


def _cache_file(location: Path) -> Path:
    return location if location.suffix == ".json" else location / "hashes.json"


class HashCache:
    """Hashes of files, remembered in a JSON sidecar keyed by (absolute path, size, mtime).

    `location` is the JSON file itself or a cache folder (then `<folder>/hashes.json`); None keeps
    the cache in memory only. A changed size or mtime invalidates a file's entry."""

    def __init__(self, location: str | Path | None = None):
        self.file = _cache_file(Path(location)) if location is not None else None
        self._lock = threading.Lock()
        self._data: dict[str, dict] = {}
        self._dirty = False
        if self.file is not None and self.file.is_file():
            try:
                loaded = json.loads(self.file.read_text(encoding="utf-8"))
                if isinstance(loaded, dict) and isinstance(loaded.get("files"), dict):
                    self._data = loaded["files"]
            except (OSError, ValueError):
                self._data = {}  # a broken cache is only a cache: recompute

    def cached(self, path: str | Path, kind: HashKind = "sha256") -> str | None:
        """The hash if already known for the file as it is now, else None (never computes)."""
        path = Path(path).resolve()
        try:
            st = path.stat()
        except OSError:
            return None
        with self._lock:
            rec = self._data.get(str(path))
        if rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            value = rec.get(kind)
            return value if isinstance(value, str) else None
        return None

    def get(self, path: str | Path, kind: HashKind = "sha256", save: bool = True) -> str:
        """The hash of `path` (computed once per file version, then read from the cache).

        `save=False` defers writing the sidecar until `flush()` (for scans of many files)."""
        if kind not in _HASHERS:
            raise ValueError(f"unknown hash kind {kind!r}; expected one of {sorted(_HASHERS)}")
        path = Path(path).resolve()
        known = self.cached(path, kind)
        if known is not None:
            return known
        try:
            st = path.stat()
            value = _HASHERS[kind](path)
        except OSError as exc:
            raise ModelError(f"cannot hash {path}: {exc}") from exc
        with self._lock:
            rec = self._data.get(str(path))
            if not rec or rec.get("size") != st.st_size or rec.get("mtime_ns") != st.st_mtime_ns:
                rec = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            rec[kind] = value
            self._data[str(path)] = rec
            self._dirty = True
            if save:
                self._save()
        return value

    def flush(self) -> None:
        """Write pending hashes to the sidecar file."""
        with self._lock:
            if self._dirty:
                self._save()

    def _save(self) -> None:
        if self.file is None:
            self._dirty = False
            return
        try:
            with atomic_open(self.file, "w") as f:
                json.dump({"version": 1, "files": self._data}, f, indent=0, sort_keys=True)
            self._dirty = False
        except OSError:
            pass  # cache is best-effort: a read-only cache folder only costs recomputation


def sha256_short(path: str | Path, cache_file: str | Path | None = None) -> str:
    """A1111 short hash (first 10 hex of sha256) through a `HashCache` at `cache_file`."""
    return HashCache(cache_file).get(path, "sha256")[:10]
