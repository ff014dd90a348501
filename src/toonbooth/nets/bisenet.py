"""BiSeNet face parsing (19 CelebAMask-HQ classes), in the key layout of the public `79999_iter.pth`.

Network: C. Yu et al., "BiSeNet: Bilateral Segmentation Network for Real-time Semantic Segmentation"
(ECCV 2018), as trained for faces in zllrunning/face-parsing.PyTorch (`model.py`, `resnet.py`, `test.py`;
MIT licence; weights `79999_iter.pth`, a plain `torch.save(state_dict)` distributed from the README's
Google-Drive link, trained on CelebAMask-HQ [C.-H. Lee et al., "MaskGAN", CVPR 2020]).

Architecture (written here; no torchvision): a ResNet-18 backbone (`cp.resnet.conv1/bn1/layer1..4`, basic
blocks with a 1x1 conv + BN `downsample` where the shape changes) giving 1/8, 1/16, 1/32 features; the context
path (`cp.*`): global average of the 1/32 features through a 1x1 ConvBNReLU (`conv_avg`), attention refinement
modules on the 1/32 (`arm32`) and 1/16 (`arm16`) features (3x3 ConvBNReLU, then a sigmoid channel attention
from a 1x1 conv + BN of the pooled features), nearest upsampling and 3x3 ConvBNReLU heads (`conv_head32/16`);
the 1/8 ResNet features stand in for the spatial path; the feature fusion module (`ffm`: 1x1 ConvBNReLU over
the concatenation, then a squeeze-excite style `x * sigmoid(conv2(relu(conv1(pool x)))) + x`); three output
heads (`conv_out`, `conv_out16`, `conv_out32`: 3x3 ConvBNReLU + 1x1 conv, no bias), upsampled bilinearly
(align_corners=True) to the input size. Inference uses the first head: `out[0].argmax(1)`.

Input: RGB resized to 512 x 512 (bilinear), ImageNet mean/std. Public model: width 64, 191 state-dict keys,
13 300 416 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from toonbooth.core.errors import InputError, ModelError, ModelNotFoundError

FACE_PARSING_CLASSES: tuple[str, ...] = (
    "background",
    "skin",
    "l_brow",
    "r_brow",
    "l_eye",
    "r_eye",
    "eye_g",
    "l_ear",
    "r_ear",
    "ear_r",
    "nose",
    "mouth",
    "u_lip",
    "l_lip",
    "neck",
    "neck_l",
    "cloth",
    "hair",
    "hat",
)
"""Label index -> CelebAMask-HQ class name (`eye_g` glasses, `ear_r` earring, `neck_l` necklace)."""
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(FACE_PARSING_CLASSES)}

PARSING_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BiSeNetConfig:
    """`width` is the ResNet stem width (64 in the public model); every other width follows from it."""

    n_classes: int = 19
    width: int = 64

    @classmethod
    def tiny(cls, width: int = 8, n_classes: int = 19) -> BiSeNetConfig:
        return cls(n_classes=n_classes, width=width)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> BiSeNetConfig:
        """Read width and class count off a state dict in the public layout."""
        try:
            width = int(state_dict["cp.resnet.conv1.weight"].shape[0])
            n_classes = int(state_dict["conv_out.conv_out.weight"].shape[0])
        except KeyError as e:
            raise ModelError(f"not a BiSeNet face-parsing state dict: `{e.args[0]}` is missing") from e
        return cls(n_classes=n_classes, width=width)


def looks_like_bisenet(keys: set[str]) -> bool:
    """Whether a state dict's key names are those of the face-parsing BiSeNet."""
    needed = {
        "cp.resnet.conv1.weight",
        "cp.resnet.layer4.1.bn2.weight",
        "cp.arm16.conv_atten.weight",
        "cp.arm32.bn_atten.weight",
        "cp.conv_avg.conv.weight",
        "ffm.convblk.conv.weight",
        "conv_out.conv_out.weight",
        "conv_out16.conv_out.weight",
        "conv_out32.conv_out.weight",
    }
    return needed <= keys


# ---------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Sequential | None = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


def _layer(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))


class ResNet18(nn.Module):
    """ResNet-18 trunk returning the 1/8, 1/16 and 1/32 feature maps."""

    def __init__(self, width: int = 64):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _layer(w, w, 1)
        self.layer2 = _layer(w, 2 * w, 2)
        self.layer3 = _layer(2 * w, 4 * w, 2)
        self.layer4 = _layer(4 * w, 8 * w, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


class AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3, 1, 1)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * atten


class ContextPath(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        mid = 2 * width
        self.resnet = ResNet18(width)
        self.arm16 = AttentionRefinement(4 * width, mid)
        self.arm32 = AttentionRefinement(8 * width, mid)
        self.conv_head32 = ConvBNReLU(mid, mid, 3, 1, 1)
        self.conv_head16 = ConvBNReLU(mid, mid, 3, 1, 1)
        self.conv_avg = ConvBNReLU(8 * width, mid, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))
        feat32_sum = self.arm32(feat32) + F.interpolate(avg, feat32.shape[2:], mode="nearest")
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, feat16.shape[2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, feat8.shape[2:], mode="nearest"))
        return feat8, feat16_up, feat32_up


class FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1, 1, 0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat * atten + feat


class OutputHead(nn.Module):
    def __init__(self, cin: int, mid: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3, 1, 1)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face-parsing BiSeNet. `forward(x)` -> (main, aux16, aux32) logits at the input size."""

    def __init__(self, config: BiSeNetConfig | None = None):
        super().__init__()
        self.config = config or BiSeNetConfig()
        w, n = self.config.width, self.config.n_classes
        self.cp = ContextPath(w)
        self.ffm = FeatureFusion(4 * w, 4 * w)
        self.conv_out = OutputHead(4 * w, 4 * w, n)
        self.conv_out16 = OutputHead(2 * w, w, n)
        self.conv_out32 = OutputHead(2 * w, w, n)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = x.shape[2:]
        feat8, cp8, cp16 = self.cp(x)
        fused = self.ffm(feat8, cp8)
        outs = (self.conv_out(fused), self.conv_out16(cp8), self.conv_out32(cp16))
        return tuple(F.interpolate(o, size, mode="bilinear", align_corners=True) for o in outs)  # type: ignore[return-value]


def build_bisenet(config: BiSeNetConfig | None = None, seed: int | None = None) -> BiSeNet:
    """A BiSeNet in eval mode (random weights; `seed` makes them reproducible)."""
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = BiSeNet(config)
    else:
        model = BiSeNet(config)
    return model.eval()


def tiny_bisenet(seed: int = 0) -> BiSeNet:
    """A width-8 BiSeNet with the public key layout, for tests."""
    return build_bisenet(BiSeNetConfig.tiny(), seed=seed)


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


def read_state_dict(path: Path | str, what: str) -> dict[str, torch.Tensor]:
    """A tensor state dict from `.safetensors`, or from a `.pth/.pt/.bin/.ckpt` that `torch.load(weights_only=True)`
    accepts (plain tensor dicts; a `{"state_dict": ...}` wrapper is unwrapped). Nothing else is unpickled."""
    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"{what} weights not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as e:
            raise ModelError(f"{p.name}: unreadable safetensors file ({e})") from e
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelError(
                f"{p.name}: not loadable with torch.load(weights_only=True) ({type(e).__name__}: {e}); "
                "toonbooth never unpickles arbitrary objects: convert it to .safetensors on a trusted machine"
            ) from e
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ModelError(f"{p.name}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
        return obj
    raise ModelError(f"{p.name}: unknown {what} weights format {suffix!r} (.safetensors, .pth, .pt, .bin)")


def _strip_module_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def load_bisenet_state_dict(model: BiSeNet, state_dict: dict[str, torch.Tensor]) -> BiSeNet:
    """Load a public-layout state dict strictly (a DataParallel `module.` prefix is dropped)."""
    sd = _strip_module_prefix(dict(state_dict))
    if not looks_like_bisenet(set(sd)):
        raise ModelError(
            "not a BiSeNet face-parsing state dict (expected keys `cp.resnet.*`, `cp.arm16.*`, `ffm.*`, ...)"
        )
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ModelError(
            f"BiSeNet weights do not match the network: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    return model


def load_bisenet(path: Path | str, *, device: str | torch.device = "cpu") -> BiSeNet:
    """BiSeNet from `79999_iter.pth` (weights_only) or a `.safetensors` copy; the config is read off the weights."""
    sd = _strip_module_prefix(read_state_dict(path, "BiSeNet face-parsing"))
    model = BiSeNet(BiSeNetConfig.from_state_dict(sd))
    load_bisenet_state_dict(model, sd)
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------------


def preprocess(image: Image.Image | np.ndarray, size: int = PARSING_SIZE) -> torch.Tensor:
    """(1, 3, size, size) float tensor: RGB resized (bilinear), ImageNet-normalised."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(_rgb_array(image))
    img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())[None]


@torch.inference_mode()
def parse_face(
    image: Image.Image | np.ndarray,
    model: BiSeNet,
    *,
    size: int = PARSING_SIZE,
    output_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Label map (H, W) uint8 of `FACE_PARSING_CLASSES` indices, at the image's size (or `output_size`, (w, h)).

    The image (best: a face crop with some margin, as in CelebAMask-HQ) is parsed at `size` x `size`; the main
    head's logits are resized bilinearly to the output size before the argmax.
    """
    if not (32 <= size <= 2048) or size % 32:
        raise InputError("size", f"must be a multiple of 32 in [32, 2048], got {size!r}", size)
    w, h = (
        image.size
        if isinstance(image, Image.Image)
        else (np.asarray(image).shape[1], np.asarray(image).shape[0])
    )
    if output_size is not None:
        w, h = int(output_size[0]), int(output_size[1])
    if w < 1 or h < 1:
        raise InputError("image", f"is empty ({w}x{h})", (w, h))
    param = next(model.parameters())
    x = preprocess(image, size).to(param.device, param.dtype)
    logits = model(x)[0]
    logits = F.interpolate(logits.float(), (h, w), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def _rgb_array(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InputError("image", f"expected an RGB uint8 array (H, W, 3), got {a.dtype} {a.shape}", a.shape)
    return a
