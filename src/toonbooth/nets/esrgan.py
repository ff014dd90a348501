"""ESRGAN-family super-resolution networks and AUTOMATIC1111's upscaler semantics, written for toonbooth.

Networks (architecture facts from the papers and the public weight files' key layouts):

* **RRDBNet** (Wang et al., "ESRGAN", ECCVW 2018; Real-ESRGAN, ICCVW 2021): a 3x3 conv, `num_block`
  Residual-in-Residual Dense Blocks (three 5-conv dense blocks each, growth `num_grow_ch`, LeakyReLU 0.2,
  residuals scaled by 0.2), a trunk conv added to the first features, then x2 nearest-upsample + conv +
  LeakyReLU stages, a HR conv and the output conv. Real-ESRGAN's x2 / x1 models first fold the input
  with a pixel-unshuffle of 2 / 4 (input channels 12 / 48). Files seen in A1111's `models/ESRGAN` and
  `models/RealESRGAN`: RealESRGAN_x4plus (23 blocks), RealESRGAN_x4plus_anime_6B (6 blocks),
  RealESRGAN_x2plus, 4x-UltraSharp and other community "old arch" ESRGAN files.
* **SRVGGNetCompact** (Real-ESRGAN's compact net: realesr-general-x4v3, realesr-animevideov3): a conv
  and PReLU, `num_conv` conv + PReLU pairs, a last conv to `3 * scale**2` channels, pixel-shuffle, plus the
  nearest-upsampled input.

Key layouts read (`load_upscaler_state_dict` converts all to the BasicSR names used by the modules here):

* BasicSR / Real-ESRGAN: `conv_first`, `body.{i}.rdb{1..3}.conv{1..5}`, `conv_body`, `conv_up{1,2}`,
  `conv_hr`, `conv_last`; `.pth` files wrap them in `params_ema` (preferred) or `params`.
* Original ESRGAN ("old arch", e.g. 4x-UltraSharp): `model.0` (first conv), `model.1.sub.{i}.RDB{k}.conv{j}.0`,
  `model.1.sub.{num_block}` (trunk conv), then the up-convs, the HR conv and the last conv at increasing
  `model.{n}` indices (4x: 3, 6, 8, 10) — the scale is 2 to the number of up-convs.
* mmsr-era ESRGAN: `RRDB_trunk.{i}.RDB{k}.conv{j}`, `trunk_conv`, `upconv{n}`, `HRconv`, `conv_last`.
* SRVGGNetCompact: `body.{2i}` convs, `body.{2i+1}` PReLU weights.

Weights load from `.safetensors` or through `torch.load(weights_only=True)` (never a full unpickle).

A1111 semantics (`modules/upscaler.py`, `modules/images.resize_image`): an upscaler asked for factor `s`
targets `int(w * s) // 8 * 8` x `int(h * s) // 8 * 8`, runs its network (up to three times) until the
image is at least that large, then Lanczos-resizes to exactly that size; `Lanczos` / `Nearest` resize by
`s` directly; `None` only resizes. Large images run in overlapping tiles whose outputs are blended with
linear ramps over the overlap, so there are no seams; an image that fits one tile runs in one pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..core.errors import InputError, ModelError, ModelNotFoundError, UnsafeModelFormatError
from ..models.families import LoadEnv, ModelFamily
from ..models.probe import read_header
from ..models.registry import ModelEntry, walk_files

# ---------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and all earlier outputs; output = x + 0.2 * conv5."""

    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        for j in range(5):
            cin = num_feat + j * num_grow_ch
            cout = num_feat if j == 4 else num_grow_ch
            setattr(self, f"conv{j + 1}", nn.Conv2d(cin, cout, 3, 1, 1))
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for j in range(4):
            feats.append(self.lrelu(getattr(self, f"conv{j + 1}")(torch.cat(feats, 1))))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Three dense blocks in a row, residual-scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


@dataclass(frozen=True)
class RRDBConfig:
    in_ch: int = 3
    out_ch: int = 3
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    num_up: int = 2  # x2 upsample stages
    unshuffle: int = 1  # pixel-unshuffle of the input (Real-ESRGAN x2: 2, x1: 4)

    @property
    def scale(self) -> int:
        return 2**self.num_up // self.unshuffle


class RRDBNet(nn.Module):
    """ESRGAN / Real-ESRGAN generator (module names = BasicSR's)."""

    def __init__(self, cfg: RRDBConfig):
        super().__init__()
        self.cfg = cfg
        self.conv_first = nn.Conv2d(cfg.in_ch, cfg.num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(cfg.num_feat, cfg.num_grow_ch) for _ in range(cfg.num_block)])
        self.conv_body = nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1)
        for n in range(cfg.num_up):
            setattr(self, f"conv_up{n + 1}", nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(cfg.num_feat, cfg.out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    @property
    def scale(self) -> int:
        return self.cfg.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.cfg.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for n in range(self.cfg.num_up):
            up = F.interpolate(feat, scale_factor=2, mode="nearest")
            feat = self.lrelu(getattr(self, f"conv_up{n + 1}")(up))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


@dataclass(frozen=True)
class SRVGGConfig:
    in_ch: int = 3
    out_ch: int = 3
    num_feat: int = 64
    num_conv: int = 32
    upscale: int = 4

    @property
    def scale(self) -> int:
        return self.upscale


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact VGG-style net with PReLU activations (module names = BasicSR's `body.N`)."""

    def __init__(self, cfg: SRVGGConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_ch, cfg.num_feat, 3, 1, 1), nn.PReLU(cfg.num_feat)]
        for _ in range(cfg.num_conv):
            layers += [nn.Conv2d(cfg.num_feat, cfg.num_feat, 3, 1, 1), nn.PReLU(cfg.num_feat)]
        layers.append(nn.Conv2d(cfg.num_feat, cfg.out_ch * cfg.upscale**2, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    @property
    def scale(self) -> int:
        return self.cfg.upscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = F.pixel_shuffle(out, self.cfg.upscale)
        return out + F.interpolate(x, scale_factor=self.cfg.upscale, mode="nearest")


# ---------------------------------------------------------------------------------------------------
# Key layouts
# ---------------------------------------------------------------------------------------------------

_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_MMSR = [
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$"), r"body.\1.rdb\2.conv\3.\4"),
    (re.compile(r"^trunk_conv\.(weight|bias)$"), r"conv_body.\1"),
    (re.compile(r"^upconv(\d)\.(weight|bias)$"), r"conv_up\1.\2"),
    (re.compile(r"^HRconv\.(weight|bias)$"), r"conv_hr.\1"),
]


def detect_layout(keys: set[str] | list[str]) -> str | None:
    """'basicsr', 'esrgan-old', 'mmsr', 'srvgg' or None (not an ESRGAN-family file), from key names only."""
    keys = set(keys)
    if "conv_first.weight" in keys and "body.0.rdb1.conv1.weight" in keys:
        return "basicsr"
    if "model.0.weight" in keys and any(k.startswith("model.1.sub.0.RDB1.conv1.0.") for k in keys):
        return "esrgan-old"
    if "conv_first.weight" in keys and "RRDB_trunk.0.RDB1.conv1.weight" in keys:
        return "mmsr"
    if "body.0.weight" in keys and "body.1.weight" in keys and not any(k.startswith("body.0.rdb") for k in keys):
        return "srvgg"
    return None


def to_basicsr_keys(sd: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """(layout, state dict with BasicSR module names) for any supported ESRGAN-family layout."""
    layout = detect_layout(sd)
    if layout is None:
        raise ModelError(
            "not an ESRGAN-family state dict: expected BasicSR keys (conv_first, body.0.rdb1...), original "
            "ESRGAN keys (model.0, model.1.sub.0.RDB1...), mmsr keys (RRDB_trunk...) or SRVGG keys (body.N)"
        )
    if layout in ("basicsr", "srvgg"):
        return layout, dict(sd)
    out: dict[str, torch.Tensor] = {}
    if layout == "mmsr":
        for k, v in sd.items():
            for pat, repl in _MMSR:
                if pat.match(k):
                    k = pat.sub(repl, k)
                    break
            out[k] = v
        return layout, out
    # original ESRGAN: the top-level convs after the trunk are the up-convs, then HR conv, then last conv
    top = sorted({int(m.group(1)) for k in sd if (m := _OLD_TOP.match(k))})
    after = [i for i in top if i >= 2]
    if len(after) < 2 or 0 not in top:
        raise ModelError(f"original-layout ESRGAN keys without HR / last convs (model indices {top})")
    names = {0: "conv_first", after[-1]: "conv_last", after[-2]: "conv_hr"}
    for n, i in enumerate(after[:-2]):
        names[i] = f"conv_up{n + 1}"
    trunk_index = max((int(m.group(1)) for k in sd if (m := _OLD_TRUNK.match(k))), default=None)
    for k, v in sd.items():
        if m := _OLD_RDB.match(k):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = v
        elif (m := _OLD_TRUNK.match(k)) and int(m.group(1)) == trunk_index:
            out[f"conv_body.{m.group(2)}"] = v
        elif m := _OLD_TOP.match(k):
            out[f"{names[int(m.group(1))]}.{m.group(2)}"] = v
        else:
            raise ModelError(f"unexpected key {k!r} in an original-layout ESRGAN file")
    return layout, out


def rrdb_config(sd: dict[str, Any]) -> RRDBConfig:
    """RRDBNet hyper-parameters read off a BasicSR-named state dict (tensors or shapes)."""
    shape = _shapes(sd)
    first = shape["conv_first.weight"]
    last = shape["conv_last.weight"]
    blocks = {int(k.split(".")[1]) for k in shape if k.startswith("body.")}
    num_up = len({k.split(".")[0] for k in shape if re.match(r"^conv_up\d+\.weight$", k)})
    in_ch, out_ch = first[1], last[0]
    unshuffle = int(round(math.sqrt(in_ch / out_ch))) if in_ch > out_ch else 1
    if unshuffle * unshuffle * out_ch != in_ch:
        raise ModelError(f"cannot read the input folding of an RRDBNet with {in_ch} in / {out_ch} out channels")
    return RRDBConfig(
        in_ch=in_ch, out_ch=out_ch, num_feat=first[0], num_block=len(blocks),
        num_grow_ch=shape["body.0.rdb1.conv1.weight"][0], num_up=num_up, unshuffle=unshuffle,
    )  # fmt: skip


def srvgg_config(sd: dict[str, Any]) -> SRVGGConfig:
    shape = _shapes(sd)
    indices = sorted({int(k.split(".")[1]) for k in shape if k.startswith("body.")})
    last = indices[-1]
    if last % 2 or any(len(shape.get(f"body.{i}.weight", ())) != 1 for i in range(1, last, 2)):
        raise ModelError("SRVGGNetCompact files are supported with PReLU activations only (body.1.weight, ...)")
    first = shape["body.0.weight"]
    out = shape[f"body.{last}.weight"][0]
    in_ch = first[1]
    upscale = int(round(math.sqrt(out / in_ch)))
    if upscale * upscale * in_ch != out:
        raise ModelError(f"SRVGG last conv has {out} channels: not 3 * scale^2")
    return SRVGGConfig(in_ch=in_ch, out_ch=in_ch, num_feat=first[0], num_conv=(last - 2) // 2, upscale=upscale)


def _shapes(sd: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in sd.items()}


def describe_keys(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any] | None:
    """{'layout', 'net', 'scale', 'blocks'/'convs', 'features'} from names and shapes only; None if not ours."""
    layout = detect_layout(shapes)
    if layout is None:
        return None
    if layout == "srvgg":
        cfg = srvgg_config(shapes)
        return {"layout": layout, "net": "SRVGGNetCompact", "scale": cfg.scale, "convs": cfg.num_conv,
                "features": cfg.num_feat}  # fmt: skip
    _, shaped = to_basicsr_keys(shapes)  # type: ignore[arg-type]  (values pass through: shapes)
    cfg = rrdb_config(shaped)
    return {"layout": layout, "net": "RRDBNet", "scale": cfg.scale, "blocks": cfg.num_block,
            "features": cfg.num_feat}  # fmt: skip


def build_network(sd: dict[str, torch.Tensor]) -> tuple[nn.Module, str]:
    """(network with the weights loaded strictly, source layout) for an ESRGAN-family state dict."""
    layout, named = to_basicsr_keys(sd)
    net: nn.Module
    if layout == "srvgg":
        net = SRVGGNetCompact(srvgg_config(named))
    else:
        net = RRDBNet(rrdb_config(named))
    try:
        net.load_state_dict(named, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"ESRGAN-family weights do not fit the network read off their keys: {exc}") from None
    return net.eval(), layout


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------

UPSCALER_FOLDERS: tuple[str, ...] = ("ESRGAN", "RealESRGAN")
UPSCALER_SUFFIXES: tuple[str, ...] = (".safetensors", ".pth", ".pt")
# A1111's names of the Real-ESRGAN models it knows (modules/realesrgan_model.py), by file stem
A1111_REALESRGAN_NAMES: dict[str, str] = {
    "RealESRGAN_x4plus": "R-ESRGAN 4x+",
    "RealESRGAN_x4plus_anime_6B": "R-ESRGAN 4x+ Anime6B",
    "RealESRGAN_x2plus": "R-ESRGAN 2x+",
    "realesr-general-x4v3": "R-ESRGAN General 4xV3",
    "realesr-general-wdn-x4v3": "R-ESRGAN General WDN 4xV3",
    "realesr-animevideov3": "R-ESRGAN AnimeVideo",
}
# A1111's built-in ESRGAN upscaler (modules/esrgan_model.py downloads RRDB_ESRGAN_x4.pth as "ESRGAN_4x")
A1111_ESRGAN_NAMES: dict[str, str] = {"RRDB_ESRGAN_x4": "ESRGAN_4x", "ESRGAN_x4": "ESRGAN_4x"}


def _unwrap(obj: Any, name: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("params_ema", "params", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{name}: no tensor state dict inside")
    return obj


def load_upscaler_state_dict(path: str | Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of an upscaler file: `.safetensors`, or `.pth` / `.pt` through `torch.load(weights_only=True)`."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as exc:
            raise ModelError(f"{p.name}: not a readable safetensors file ({exc})") from None
    if suffix not in (".pth", ".pt"):
        raise ModelError(f"{p.name}: upscalers load from .safetensors, .pth or .pt, not {suffix!r}")
    try:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if not mmap or "mmap" not in str(exc):
                raise
            obj = torch.load(str(p), map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:
        raise UnsafeModelFormatError(
            f"{p.name}: not loadable with torch.load(weights_only=True) ({type(exc).__name__}); toonbooth "
            "never unpickles model files — convert it to .safetensors on a trusted machine"
        ) from None
    return _unwrap(obj, p.name)


def upscaler_file_entry(file: Path, top: Path, folder: str) -> ModelEntry | None:
    """A registry entry for an upscaler file, identified by its keys and shapes (not its name)."""
    suffix = file.suffix.lower()
    if suffix not in UPSCALER_SUFFIXES:
        return None
    stem = file.stem
    aliases = [a for a in (A1111_REALESRGAN_NAMES.get(stem), A1111_ESRGAN_NAMES.get(stem)) if a]
    common: dict[str, Any] = dict(
        name=stem, path=file, kind="upscaler", source="folder", folder=folder,
        relpath=file.relative_to(top).as_posix(), size=file.stat().st_size, aliases=aliases,
    )  # fmt: skip
    try:
        if suffix == ".safetensors":
            shapes = read_header(file).shapes
        else:
            shapes = {k: tuple(v.shape) for k, v in load_upscaler_state_dict(file, mmap=True).items()}
        details = describe_keys(shapes)
    except (ModelError, KeyError, IndexError, ValueError) as exc:
        return ModelEntry(layout="unknown", refused=f"{file.name}: {exc}", **common)
    if details is None:
        return ModelEntry(
            layout="unknown", refused=f"{file.name}: its tensor names match no ESRGAN-family layout", **common
        )
    return ModelEntry(layout=details["layout"], details=details, **common)


def scan_upscalers(top: Path, folder: str) -> list[ModelEntry]:
    return [e for f in walk_files(top) if (e := upscaler_file_entry(f, top, folder)) is not None]


# ---------------------------------------------------------------------------------------------------
# Running: tiles, A1111 upscale semantics
# ---------------------------------------------------------------------------------------------------

DEFAULT_TILE = 256
DEFAULT_OVERLAP = 32


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(n: int, fade_in: int, fade_out: int) -> torch.Tensor:
    w = torch.ones(n)
    if fade_in > 0:
        w[:fade_in] = torch.minimum(w[:fade_in], (torch.arange(fade_in) + 0.5) / fade_in)
    if fade_out > 0:
        w[n - fade_out :] = torch.minimum(w[n - fade_out :], (torch.arange(fade_out, 0, -1) - 0.5) / fade_out)
    return w


@torch.no_grad()
def tiled_forward(
    net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int, tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP, check: Callable[[], None] | None = None,
) -> torch.Tensor:  # fmt: skip
    """`net(x)` for a (1, C, H, W) batch, in `tile`-pixel tiles overlapping by `overlap` pixels when the
    image is larger than one tile. Each tile's output is weighted by linear ramps over the overlaps it
    shares with its neighbours (weight 1 elsewhere), so tiles blend without seams. `check` runs between
    tiles (cancel)."""
    _, _, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return net(x)
    overlap = max(0, min(overlap, tile // 2))
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    out: torch.Tensor | None = None
    weight = torch.zeros((1, 1, h * scale, w * scale), device=x.device, dtype=torch.float32)
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            if check is not None:
                check()
            th, tw = min(tile, h - y0), min(tile, w - x0)
            piece = net(x[:, :, y0 : y0 + th, x0 : x0 + tw]).float()
            if out is None:
                out = torch.zeros((1, piece.shape[1], h * scale, w * scale), device=x.device)
            # overlap with the previous / next tile on each axis (0 at the image border)
            top = (ys[i - 1] + tile - y0) * scale if i > 0 else 0
            bottom = (y0 + th - ys[i + 1]) * scale if i + 1 < len(ys) else 0
            left = (xs[j - 1] + tile - x0) * scale if j > 0 else 0
            right = (x0 + tw - xs[j + 1]) * scale if j + 1 < len(xs) else 0
            wy = _ramp(th * scale, max(top, 0), max(bottom, 0)).to(x.device)
            wx = _ramp(tw * scale, max(left, 0), max(right, 0)).to(x.device)
            win = (wy[:, None] * wx[None, :])[None, None]
            ys_, xs_ = slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale)
            out[:, :, ys_, xs_] += piece * win
            weight[:, :, ys_, xs_] += win
    assert out is not None
    return out / weight.clamp_min(1e-8)


class NeuralUpscaler:
    """A loaded ESRGAN-family network: `upscale_once(image)` multiplies the size by `scale`."""

    def __init__(self, net: nn.Module, name: str, layout: str, device: Any = "cpu", dtype: Any = torch.float32):
        self.net = net
        self.name = name
        self.layout = layout
        self.device = torch.device(device)
        self.dtype = dtype
        self.scale = int(net.scale)  # type: ignore[attr-defined]

    @torch.no_grad()
    def upscale_once(
        self, image: Image.Image, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
        check: Callable[[], None] | None = None,
    ) -> Image.Image:  # fmt: skip
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        x = torch.from_numpy(arr).permute(2, 0, 1)[None].to(self.device, self.dtype)
        y = tiled_forward(lambda t: self.net(t), x, self.scale, tile, overlap, check)
        out = (y[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
        return Image.fromarray(out, "RGB")


BUILTIN_UPSCALERS: tuple[str, ...] = ("None", "Lanczos", "Nearest")
# A1111 `shared.latent_upscale_modes`: name -> (torch interpolate mode, antialias)
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def upscale_latents(latents: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    """A1111's latent upscale to a width x height image (latents at /8), with the mode's interpolation."""
    interp, antialias = LATENT_UPSCALE_MODES[mode]
    size = (height // 8, width // 8)
    if interp in ("nearest", "nearest-exact"):
        return F.interpolate(latents, size=size, mode=interp)
    return F.interpolate(latents, size=size, mode=interp, antialias=antialias)


@dataclass
class Upscaler:
    """One A1111 upscaler by name: a built-in resize (`None`, `Lanczos`, `Nearest`) or a network."""

    name: str
    network: NeuralUpscaler | None = None
    entry: ModelEntry | None = None

    @property
    def scale(self) -> int:
        return self.network.scale if self.network is not None else 4

    def do_upscale(self, image: Image.Image, scale: float, check: Callable[[], None] | None = None) -> Image.Image:
        if self.network is not None:
            return self.network.upscale_once(image, check=check)
        if self.name == "None":
            return image
        resample = Image.Resampling.NEAREST if self.name == "Nearest" else Image.Resampling.LANCZOS
        return image.resize((int(image.width * scale), int(image.height * scale)), resample=resample)

    def upscale(self, image: Image.Image, scale: float, check: Callable[[], None] | None = None) -> Image.Image:
        """A1111 `Upscaler.upscale`: target `int(w*scale)//8*8` x `int(h*scale)//8*8`; the network runs (up to
        3 times) until the image is at least that size, then a Lanczos resize gives exactly that size."""
        dest_w = int((image.width * scale) // 8 * 8)
        dest_h = int((image.height * scale) // 8 * 8)
        if dest_w < 1 or dest_h < 1:
            raise InputError("upscaling_resize", f"{scale:g}x of {image.width}x{image.height} is under 8 pixels", scale)
        for _ in range(3):
            if image.width >= dest_w and image.height >= dest_h and scale != 1:
                break
            shape = image.size
            image = self.do_upscale(image, scale, check)
            if image.size == shape:
                break
        if image.size != (dest_w, dest_h):
            image = image.resize((dest_w, dest_h), resample=Image.Resampling.LANCZOS)
        return image

    def resize_to(self, image: Image.Image, width: int, height: int, check: Callable[[], None] | None = None) -> Image.Image:
        """A1111 `images.resize_image(0, ...)` with an upscaler: upscale by the larger factor when it is > 1,
        then Lanczos to exactly width x height (hires fix with a pixel upscaler)."""
        if self.name == "None":
            return image.resize((width, height), resample=Image.Resampling.LANCZOS)
        scale = max(width / image.width, height / image.height)
        if scale > 1.0:
            image = self.upscale(image, scale, check)
        if image.size != (width, height):
            image = image.resize((width, height), resample=Image.Resampling.LANCZOS)
        return image


def resolve_upscaler(models: Any, name: str | None, owner: str | None = None, *, field: str = "upscaler") -> Upscaler:
    """The upscaler called `name` (A1111 name): a built-in, or an installed ESRGAN-family network loaded
    through the model manager (cached). Unknown names -> InputError naming `field`."""
    name = (name or "None").strip()
    for builtin in BUILTIN_UPSCALERS:
        if name.lower() == builtin.lower():
            return Upscaler(builtin)
    entry = find_upscaler(models, name, owner, field=field)
    shown = entry.aliases[0] if entry.aliases else entry.name  # A1111's own name for the files it knows
    return Upscaler(shown, models.load_entry(entry), entry)


def find_upscaler(models: Any, name: str, owner: str | None = None, *, field: str = "upscaler") -> ModelEntry:
    """The registry entry of an installed upscaler network (InputError naming `field` if there is none)."""
    if name in LATENT_UPSCALE_MODES:
        raise InputError(field, f"{name!r} is a latent upscale mode: it only applies to hires fix", name)
    try:
        return models.entry(name, "upscaler", owner)
    except (ModelNotFoundError, ModelError) as exc:
        known = list(BUILTIN_UPSCALERS) + [
            e.aliases[0] if e.aliases else e.name for e in models.registry.list("upscaler", owner=owner) if e.usable
        ]
        raise InputError(
            field,
            f"unknown upscaler {name!r} ({exc}); available: {', '.join(known)}. Networks are ESRGAN-family "
            "files (.safetensors / .pth) in the models folder's ESRGAN/ or RealESRGAN/",
            name,
        ) from None


def check_upscaler_name(models: Any, name: str | None, owner: str | None, *, field: str, latent_ok: bool = False) -> None:
    """Refuse an unknown upscaler name without loading anything."""
    if name is None or name.strip().lower() in {b.lower() for b in BUILTIN_UPSCALERS}:
        return
    if latent_ok and name in LATENT_UPSCALE_MODES:
        return
    find_upscaler(models, name, owner, field=field)


def load_upscaler_entry(entry: ModelEntry, env: LoadEnv) -> NeuralUpscaler:
    """Family loader: the network in float32 on CPU, in the manager's dtype on an accelerator."""
    if entry.path is None:
        raise ModelError(f"upscaler {entry.name!r} is not a local file")
    net, layout = build_network(load_upscaler_state_dict(entry.path))
    device = torch.device(env.device)
    dtype = env.dtype if device.type != "cpu" else torch.float32
    return NeuralUpscaler(net.to(device=device, dtype=dtype), entry.name, layout, device, dtype)


UPSCALER_FAMILY = ModelFamily(
    kind="upscaler",
    description="ESRGAN-family upscaler (RRDBNet: ESRGAN / Real-ESRGAN / 4x-UltraSharp-style; SRVGGNetCompact)",
    folders=UPSCALER_FOLDERS,
    suffixes=UPSCALER_SUFFIXES,
    scan=scan_upscalers,
    load=load_upscaler_entry,
    approx_bytes=67_000_000,
    shared_only=True,
    licence_note="Real-ESRGAN weights: BSD-3-Clause; community ESRGAN files carry their own licences.",
)


# ---------------------------------------------------------------------------------------------------
# Tiny networks with the public key layouts (tests, `toonbooth models make-tiny`)
# ---------------------------------------------------------------------------------------------------


def to_layout(sd: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """A BasicSR-named RRDBNet state dict in another public layout ('basicsr', 'esrgan-old', 'mmsr')."""
    if layout == "basicsr":
        return dict(sd)
    num_up = len({k.split(".")[0] for k in sd if re.match(r"^conv_up\d+\.", k)})
    nb = len({int(x.split(".")[1]) for x in sd if x.startswith("body.")})
    index = {"conv_first": 0, "conv_hr": 3 * num_up + 2, "conv_last": 3 * num_up + 4}
    index.update({f"conv_up{n + 1}": 3 + 3 * n for n in range(num_up)})
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        head, _, rest = k.partition(".")
        if layout == "mmsr":
            if head == "body":
                i, rdb, conv, p = rest.split(".")
                out[f"RRDB_trunk.{i}.RDB{rdb[3:]}.{conv}.{p}"] = v
            elif head == "conv_body":
                out[f"trunk_conv.{rest}"] = v
            elif head.startswith("conv_up"):
                out[f"upconv{head[7:]}.{rest}"] = v
            elif head == "conv_hr":
                out[f"HRconv.{rest}"] = v
            else:
                out[k] = v
            continue
        if layout != "esrgan-old":
            raise ValueError(f"unknown layout {layout!r}")
        if head == "body":
            i, rdb, conv, p = rest.split(".")
            out[f"model.1.sub.{i}.RDB{rdb[3:]}.{conv}.0.{p}"] = v
        elif head == "conv_body":
            out[f"model.1.sub.{nb}.{rest}"] = v
        else:
            out[f"model.{index[head]}.{rest}"] = v
    return out


def tiny_rrdb(scale: int = 4, num_block: int = 1, num_feat: int = 8, num_grow_ch: int = 4, seed: int = 0,
              unshuffle: int = 1) -> RRDBNet:  # fmt: skip
    """A small RRDBNet with random weights (scale = 2^num_up / unshuffle)."""
    num_up = int(round(math.log2(scale * unshuffle)))
    torch.manual_seed(seed)
    net = RRDBNet(RRDBConfig(in_ch=3 * unshuffle**2, num_feat=num_feat, num_block=num_block,
                             num_grow_ch=num_grow_ch, num_up=num_up, unshuffle=unshuffle))  # fmt: skip
    return net.eval()


def tiny_srvgg(scale: int = 4, num_conv: int = 2, num_feat: int = 8, seed: int = 0) -> SRVGGNetCompact:
    torch.manual_seed(seed)
    return SRVGGNetCompact(SRVGGConfig(num_feat=num_feat, num_conv=num_conv, upscale=scale)).eval()


def write_upscaler(net: nn.Module, path: str | Path, layout: str = "basicsr") -> Path:
    """Save a network's weights as a public file layout: `.safetensors`, or `.pth` (BasicSR files wrap the
    state dict in `params_ema`, original ESRGAN files are the bare state dict)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    if isinstance(net, RRDBNet):
        sd = to_layout(sd, layout)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save({"params_ema": sd} if layout in ("basicsr", "srvgg") else sd, str(path))
    return path


__all__ = [
    "A1111_REALESRGAN_NAMES",
    "BUILTIN_UPSCALERS",
    "LATENT_UPSCALE_MODES",
    "UPSCALER_FAMILY",
    "NeuralUpscaler",
    "RRDBConfig",
    "RRDBNet",
    "SRVGGConfig",
    "SRVGGNetCompact",
    "Upscaler",
    "build_network",
    "check_upscaler_name",
    "describe_keys",
    "detect_layout",
    "load_upscaler_state_dict",
    "resolve_upscaler",
    "tiled_forward",
    "tiny_rrdb",
    "tiny_srvgg",
    "to_basicsr_keys",
    "upscale_latents",
    "write_upscaler",
]
