"""LaMa inpainting generator: the FFC ResNet of Suvorov et al., "Resolution-robust Large Mask Inpainting
with Fourier Convolutions" (WACV 2022), https://github.com/advimman/lama, written for toonbooth.

Architecture of the public "big-lama" generator (`configs/training/big-lama.yaml`, kind `ffc_resnet`):
input 4 channels (RGB with the hole zeroed, plus the mask), ReflectionPad(3) + 7x7 conv, three stride-2
3x3 downsampling convs (the last one splits the output into a local and a 75 % global branch), 18 FFC
ResNet blocks (ratio_gin = ratio_gout = 0.75; the global branch runs a SpectralTransform whose
FourierUnit convolves the real 2-D FFT of the features), concatenation of the two branches, three
transposed-conv upsampling steps, ReflectionPad(3) + 7x7 conv and a sigmoid. Every FFC conv pads with
reflection; BatchNorm + ReLU follow each conv.

Module names follow the public checkpoint's key layout (`generator.model.<index>.<...>`, e.g.
`generator.model.5.conv1.ffc.convg2g.fu.conv_layer.weight`), so `load_lama_state_dict` loads the
original weights strictly, with or without the `generator.` prefix.

Weights, in order of preference:
- `.safetensors` holding the generator's state dict: loaded with safetensors, anywhere.
- `big-lama.pt`, the TorchScript export that IOPaint uses (`model(image, mask)`): TorchScript is code
  (a serialized program), so `load_lama_torchscript` only loads it from a path inside the operator's
  models folder, never from an upload.
- the original PyTorch-Lightning `best.ckpt`: only through `torch.load(weights_only=True)`; a file
  that needs full unpickling is refused (convert it to safetensors on a trusted machine instead).

`LamaInpaintModel(generator)` has the same call interface as the TorchScript export:
`forward(image, mask) -> inpainted`, image RGB in [0, 1] (B,3,H,W), mask {0, 1} (B,1,H,W), H and W
multiples of 8; the output keeps the known pixels and fills the hole with the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toonbooth.core.errors import ModelError, ModelNotFoundError, UnsafeModelFormatError
from toonbooth.models.families import LoadEnv, ModelFamily
from toonbooth.models.probe import read_header
from toonbooth.models.registry import ModelEntry, walk_files

# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LamaConfig:
    """Generator hyper-parameters; the defaults are big-lama's."""

    input_nc: int = 4
    output_nc: int = 3
    ngf: int = 64
    n_downsampling: int = 3
    n_blocks: int = 18
    max_features: int = 1024
    ratio_g: float = 0.75
    """Global (spectral) share of the channels in the ResNet blocks (ratio_gin = ratio_gout)."""
    native_size: int = 512
    """Resolution the public weights were trained at; the inpainter works at most at this size."""

    @classmethod
    def tiny(cls, ngf: int = 8, n_blocks: int = 2) -> LamaConfig:
        """A few-channel, two-block generator for tests (the same code path as big-lama)."""
        return cls(ngf=ngf, n_blocks=n_blocks)

    def channels(self, level: int) -> int:
        """Feature channels after `level` downsamplings."""
        return min(self.max_features, self.ngf * 2**level)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> LamaConfig:
        """Read the hyper-parameters off a generator state dict (keys with or without `generator.`)."""
        sd = _generator_keys(state_dict)
        try:
            w0 = sd["model.1.ffc.convl2l.weight"]
        except KeyError as e:
            raise ModelError(
                "not a LaMa generator state dict: `model.1.ffc.convl2l.weight` is missing"
            ) from e
        ngf, input_nc = int(w0.shape[0]), int(w0.shape[1])
        n_down = 0
        while f"model.{2 + n_down}.ffc.convl2l.weight" in sd:
            n_down += 1
        first_block = 2 + n_down
        n_blocks = 0
        while f"model.{first_block + n_blocks}.conv1.ffc.convl2l.weight" in sd:
            n_blocks += 1
        if n_down == 0 or n_blocks == 0:
            raise ModelError(f"not a LaMa FFC generator: {n_down} downsampling layers, {n_blocks} FFC blocks")
        blk = f"model.{first_block}.conv1.ffc."
        local_c = int(sd[blk + "convl2l.weight"].shape[0])
        global_c = int(sd[blk + "convg2g.conv2.weight"].shape[0])
        bottleneck = local_c + global_c
        out_idx = first_block + n_blocks + 1 + 3 * n_down + 1
        out_w = sd.get(f"model.{out_idx}.weight")
        if out_w is None:
            raise ModelError(f"not a LaMa FFC generator: output conv `model.{out_idx}.weight` is missing")
        cfg = cls(
            input_nc=input_nc,
            output_nc=int(out_w.shape[0]),
            ngf=ngf,
            n_downsampling=n_down,
            n_blocks=n_blocks,
            max_features=1024 if bottleneck == ngf * 2**n_down else bottleneck,
            ratio_g=global_c / bottleneck,
        )
        if cfg.channels(n_down) != bottleneck:
            raise ModelError(
                f"unexpected LaMa bottleneck width {bottleneck} for ngf={ngf}, {n_down} downsamplings"
            )
        return cfg


# ---------------------------------------------------------------------------------------------------
# Fast Fourier convolution parts
# ---------------------------------------------------------------------------------------------------


class FourierUnit(nn.Module):
    """1x1 conv + BN + ReLU on the real 2-D FFT (real and imaginary parts interleaved per channel)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_layer = nn.Conv2d(2 * channels, 2 * channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(2 * channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # FFT in float32: half-precision FFTs only exist for power-of-two sizes
        spec = torch.fft.rfft2(x.float(), norm="ortho")  # (b, c, h, w//2+1) complex
        spec = torch.view_as_real(spec).permute(0, 1, 4, 2, 3).reshape(b, 2 * c, h, -1)
        spec = self.relu(self.bn(self.conv_layer(spec.to(x.dtype))))
        spec = spec.float().reshape(b, c, 2, h, -1).permute(0, 1, 3, 4, 2).contiguous()
        out = torch.fft.irfft2(torch.view_as_complex(spec), s=(h, w), norm="ortho")
        return out.to(x.dtype)


class SpectralTransform(nn.Module):
    """Global branch of an FFC: 1x1 reduce (BN, ReLU) -> FourierUnit (+ residual) -> 1x1 expand."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        half = out_channels // 2
        self.downsample = nn.AvgPool2d(kernel_size=2, stride=2) if stride == 2 else nn.Identity()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, half, kernel_size=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(half)
        self.conv2 = nn.Conv2d(half, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.downsample(x))
        return self.conv2(x + self.fu(x))


Branches = tuple[torch.Tensor, torch.Tensor | None]


class FFC(nn.Module):
    """Fast Fourier Convolution (Chi et al., NeurIPS 2020): local and global channel groups with the four
    cross paths l->l, l->g, g->l (reflect-padded convs) and g->g (SpectralTransform). Absent paths
    (a group with zero channels) hold no module, as in the public checkpoint."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_gin: float,
        ratio_gout: float,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
    ):
        super().__init__()
        in_g = int(in_channels * ratio_gin)
        out_g = int(out_channels * ratio_gout)
        in_l, out_l = in_channels - in_g, out_channels - out_g
        self.out_channels_local, self.out_channels_global = out_l, out_g

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(
                cin, cout, kernel_size, stride, padding, dilation, bias=False, padding_mode="reflect"
            )

        self.convl2l = conv(in_l, out_l) if in_l and out_l else None
        self.convl2g = conv(in_l, out_g) if in_l and out_g else None
        self.convg2l = conv(in_g, out_l) if in_g and out_l else None
        self.convg2g = SpectralTransform(in_g, out_g, stride) if in_g and out_g else None

    def forward(self, x: torch.Tensor | Branches) -> Branches:
        x_l, x_g = x if isinstance(x, tuple) else (x, None)
        out_l: torch.Tensor | None = None
        out_g: torch.Tensor | None = None
        if self.out_channels_local:
            out_l = self.convl2l(x_l) if self.convl2l is not None else None
            if self.convg2l is not None and x_g is not None:
                out_l = self.convg2l(x_g) if out_l is None else out_l + self.convg2l(x_g)
        if self.out_channels_global:
            out_g = self.convl2g(x_l) if self.convl2g is not None else None
            if self.convg2g is not None and x_g is not None:
                out_g = self.convg2g(x_g) if out_g is None else out_g + self.convg2g(x_g)
        assert out_l is not None
        return out_l, out_g


class FFCBnAct(nn.Module):
    """FFC followed by BatchNorm + ReLU on each non-empty branch (public name: FFC_BN_ACT)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float, ratio_gout: float, **kw
    ):
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, **kw)
        out_g = self.ffc.out_channels_global
        out_l = self.ffc.out_channels_local
        self.bn_l = nn.BatchNorm2d(out_l) if out_l else None
        self.bn_g = nn.BatchNorm2d(out_g) if out_g else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor | Branches) -> Branches:
        x_l, x_g = self.ffc(x)
        x_l = self.act(self.bn_l(x_l)) if self.bn_l is not None else x_l
        if x_g is not None and self.bn_g is not None:
            x_g = self.act(self.bn_g(x_g))
        return x_l, x_g


class FFCResnetBlock(nn.Module):
    """Two 3x3 FFC_BN_ACT layers with identity shortcuts on both branches."""

    def __init__(self, dim: int, ratio_g: float):
        super().__init__()
        self.conv1 = FFCBnAct(dim, dim, 3, ratio_g, ratio_g, padding=1)
        self.conv2 = FFCBnAct(dim, dim, 3, ratio_g, ratio_g, padding=1)

    def forward(self, x: Branches) -> Branches:
        x_l, x_g = x
        y_l, y_g = self.conv2(self.conv1((x_l, x_g)))
        out_g = y_g if x_g is None else (x_g if y_g is None else x_g + y_g)
        return x_l + y_l, out_g


class ConcatBranches(nn.Module):
    """Local then global channels, concatenated (public name: ConcatTupleLayer)."""

    def forward(self, x: Branches) -> torch.Tensor:
        x_l, x_g = x
        return x_l if x_g is None else torch.cat([x_l, x_g], dim=1)


# ---------------------------------------------------------------------------------------------------
# Generator and inpainting wrapper
# ---------------------------------------------------------------------------------------------------


class LamaGenerator(nn.Module):
    """FFCResNetGenerator: `self.model` is one `nn.Sequential` with the public layer indices."""

    def __init__(self, config: LamaConfig | None = None):
        super().__init__()
        cfg = config or LamaConfig()
        self.config = cfg
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            FFCBnAct(cfg.input_nc, cfg.ngf, 7, 0.0, 0.0),
        ]
        for i in range(cfg.n_downsampling):
            ratio_gout = cfg.ratio_g if i == cfg.n_downsampling - 1 else 0.0
            layers.append(
                FFCBnAct(cfg.channels(i), cfg.channels(i + 1), 3, 0.0, ratio_gout, stride=2, padding=1)
            )
        bottleneck = cfg.channels(cfg.n_downsampling)
        layers += [FFCResnetBlock(bottleneck, cfg.ratio_g) for _ in range(cfg.n_blocks)]
        layers.append(ConcatBranches())
        for i in range(cfg.n_downsampling):
            level = cfg.n_downsampling - i
            cin = cfg.channels(level)
            cout = min(cfg.max_features, int(cfg.ngf * 2**level / 2))
            layers += [
                nn.ConvTranspose2d(cin, cout, kernel_size=3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(cfg.ngf, cfg.output_nc, kernel_size=7), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LamaInpaintModel(nn.Module):
    """`forward(image, mask)`, the interface of the public TorchScript `big-lama.pt`: image in [0, 1]
    (B,3,H,W), mask {0,1} (B,1,H,W), H and W multiples of 2**n_downsampling; returns the image with the
    hole filled by the generator's prediction (known pixels passed through)."""

    def __init__(self, generator: LamaGenerator):
        super().__init__()
        self.generator = generator

    @property
    def config(self) -> LamaConfig:
        return self.generator.config

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = (mask > 0.5).to(image.dtype)
        masked = image * (1 - mask)
        pred = self.generator(torch.cat([masked, mask], dim=1))
        return mask * pred + (1 - mask) * image


def build_lama(config: LamaConfig | None = None, seed: int | None = None) -> LamaInpaintModel:
    """A LaMa inpainting model with fresh (random) weights, in eval mode."""
    if seed is not None:
        torch.manual_seed(seed)
    return LamaInpaintModel(LamaGenerator(config)).eval()


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


def _generator_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Generator weights with keys relative to the generator (`model.N...`).

    Accepts the Lightning layout (`generator.model.N...`, next to discriminator / loss weights, which are
    dropped), the TorchScript wrapper's (`model.generator.model.N...`) and the bare layout."""
    for prefix in ("generator.", "model.generator."):
        sub = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if sub:
            return sub
    return dict(state_dict)


def load_lama_state_dict(
    model: LamaInpaintModel | LamaGenerator, state_dict: dict[str, torch.Tensor]
) -> None:
    """Load public-layout LaMa weights into `model`, strictly (every generator key, exact shapes)."""
    gen = model.generator if isinstance(model, LamaInpaintModel) else model
    sd = _generator_keys(state_dict)
    missing, unexpected = gen.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"LaMa weights do not match the generator: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def _check_file(path: Path) -> Path:
    if not path.is_file():
        raise ModelNotFoundError(f"LaMa weights file {str(path)!r} does not exist")
    return path


def load_lama(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: LamaConfig | None = None,
) -> LamaInpaintModel:
    """Our generator with weights from `.safetensors`, or from the original Lightning `.ckpt` when
    `torch.load(weights_only=True)` accepts it. The config is read off the weights unless given."""
    path = _check_file(Path(path))
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    elif suffix in (".ckpt", ".pth"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle content beyond plain tensors / containers
            raise UnsafeModelFormatError(
                f"{path.name}: this checkpoint needs full unpickling (it stores Python objects next to the "
                "weights), which toonbooth never does. Convert the generator weights to .safetensors on a "
                f"trusted machine, or use the TorchScript big-lama.pt from the models folder. ({type(e).__name__})"
            ) from e
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(sd, dict):
            raise ModelError(f"{path.name}: no state dict inside (got {type(obj).__name__})")
    elif suffix == ".pt":
        raise UnsafeModelFormatError(
            f"{path.name}: a .pt LaMa file is the TorchScript export; load it with load_lama_torchscript "
            "from the operator's models folder"
        )
    else:
        raise ModelError(f"{path.name}: unknown LaMa weights format {suffix!r} (.safetensors, .ckpt)")
    cfg = config or LamaConfig.from_state_dict(sd)
    model = LamaInpaintModel(LamaGenerator(cfg))
    load_lama_state_dict(model, sd)
    return model.to(device=device, dtype=dtype).eval()


def load_lama_torchscript(
    path: str | Path, models_dir: str | Path, device: str | torch.device = "cpu"
) -> torch.jit.ScriptModule:
    """The public TorchScript `big-lama.pt` (as IOPaint uses it: `module(image, mask)`).

    TorchScript is code: this loads it only from a file inside `models_dir`, the operator's models
    folder (symlinks resolved), never from a user upload.
    """
    root = Path(models_dir).resolve()
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(root):
        raise UnsafeModelFormatError(
            f"TorchScript LaMa {str(path)!r} is outside the models folder {str(root)!r}; TorchScript is code "
            "and is only loaded from the operator's models folder"
        )
    _check_file(resolved)
    try:
        module = torch.jit.load(str(resolved), map_location=torch.device(device))
    except RuntimeError as e:
        raise ModelError(f"{resolved.name} is not a TorchScript archive: {e}") from e
    return module.eval()


# ---------------------------------------------------------------------------------------------------
# The LaMa model family: `<models>/LaMa/<name>.safetensors|.pt|.ckpt|.pth`
# ---------------------------------------------------------------------------------------------------

LAMA_FOLDERS: tuple[str, ...] = ("LaMa", "lama")
LAMA_SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".ckpt", ".pth")
_LAMA_MARKER = "model.1.ffc.convl2l.weight"
_LAMA_PREFIXES = ("", "generator.", "model.generator.")


def lama_file_entry(file: Path, top: Path, top_folder: str = "LaMa") -> ModelEntry | None:
    """An entry for a LaMa weights file in `<models>/LaMa/`; None for other suffixes. A `.safetensors` is
    checked by its header (FFC generator keys, with or without the `generator.` / TorchScript-wrapper
    prefix); `.pt` (TorchScript) and `.ckpt` / `.pth` are listed by suffix and checked when loaded."""
    file = Path(file)
    suffix = file.suffix.lower()
    if suffix not in LAMA_SUFFIXES:
        return None
    common: dict[str, Any] = dict(
        name=file.stem, path=file, kind="lama", source="folder", folder=top_folder,
        relpath=file.relative_to(top).as_posix(), size=file.stat().st_size,
    )  # fmt: skip
    if suffix == ".safetensors":
        try:
            shapes = read_header(file).shapes
        except ModelError as exc:
            return ModelEntry(layout="safetensors", refused=str(exc), **common)
        ok = any(p + _LAMA_MARKER in shapes for p in _LAMA_PREFIXES)
        refused = None if ok else f"{file.name}: no LaMa FFC generator keys (`{_LAMA_MARKER}`) in its tensors"
        return ModelEntry(layout="safetensors", refused=refused, **common)
    if suffix == ".pt":
        note = "TorchScript export (code): loaded only because it lies in the operator's models folder"
        return ModelEntry(layout="torchscript", details={"note": note}, **common)
    note = (
        "Lightning checkpoint: read with torch.load(weights_only=True); refused at load time if it needs more"
    )
    return ModelEntry(layout="ckpt", details={"note": note}, **common)


def scan_lama(top: Path, folder: str) -> list[ModelEntry]:
    return [e for f in walk_files(top) if (e := lama_file_entry(f, top, folder)) is not None]


def load_lama_entry(entry: ModelEntry, env: LoadEnv) -> Any:
    """LaMa in float32 (the FFT of half tensors is limited to power-of-two sizes on CUDA). A `.pt` is the
    TorchScript export, loaded only from inside the operator's models folders."""
    if entry.layout == "torchscript":
        assert entry.path is not None
        root = next(
            (d for d in env.registry.models_dirs if entry.path.resolve().is_relative_to(d.resolve())),
            env.registry.models_dirs[0],
        )
        return load_lama_torchscript(entry.location, root, device=env.device)
    return load_lama(entry.location, device=env.device)


LAMA_FAMILY = ModelFamily(
    kind="lama",
    description="LaMa inpainting generator (FFC ResNet; safetensors, or the TorchScript big-lama.pt)",
    folders=LAMA_FOLDERS,
    suffixes=LAMA_SUFFIXES,
    scan=scan_lama,
    load=load_lama_entry,
    approx_bytes=205_000_000,
    shared_only=True,
)
