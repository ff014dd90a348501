"""Tiny random-weight models of the pose-change studio in their public layouts, added to a tiny model set
(`toonbooth models make-tiny DIR` calls `make_tiny_pose_set` after `models.tiny.make_tiny_set`), so
`toonbooth pose detect` and `toonbooth repose` run end to end without downloads (the pictures are noise;
the skeleton is a designed standing figure).

Written under the models folder:
- `DWPose/yolox_l.onnx`, `DWPose/dw-ll_ucoco_384.onnx` (only when the `onnx` package is installed): graphs
  with the real signatures — detector (1,3,640,640) -> (1,8400,85) whose raw output is one person anchor
  covering the middle of the letterboxed canvas; pose model (1,3,384,288) -> simcc_x (1,133,576),
  simcc_y (1,133,768) whose one-hot vectors put the 133 whole-body points of a standing figure with raised
  arms in the crop. Both add 0 x mean(input), so onnxruntime runs the real pre/post-processing on them.
- `AnimateAnyone/{reference_unet,denoising_unet,pose_guider}.pth`: the tiny SD1.5 UNet's layout (the
  reference file without conv_norm_out / conv_out) and a tiny PoseGuider, saved with `torch.save`.
- `clip_vision/tiny-image-encoder/`: a CLIPVisionModelWithProjection whose projection is the UNet's
  cross-attention width.
- `diffusers/tiny-vae/`: the tiny SD1.5 VAE as a diffusers folder.
- `ControlNet/tiny-sd15-openpose.safetensors`: a copy of the tiny SD1.5 ControlNet.
- `IP-Adapter/models/tiny-ip-adapter.safetensors` + `IP-Adapter/models/image_encoder/`.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

POSE_IN = (384, 288)
ANCHORS = 8400


def _unet_config(models_dir: Path) -> dict[str, Any]:
    path = models_dir / "configs" / "sd15" / "unet" / "config.json"
    if not path.is_file():
        from ..core.errors import ModelError

        raise ModelError(f"{path} is missing: write the tiny SD set first (models.tiny.make_tiny_set)")
    return json.loads(path.read_text())


def write_animate_anyone(folder: Path, unet_config: dict[str, Any], seed: int = 0) -> Path:
    """Random AnimateAnyone parts in Moore's file layout for a UNet of `unet_config`."""
    import torch
    from diffusers import UNet2DConditionModel

    from .pose_guider import PoseGuiderConfig, build_pose_guider

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    reference = UNet2DConditionModel.from_config(unet_config).state_dict()
    for key in ("conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"):
        reference.pop(key)
    torch.save(reference, folder / "reference_unet.pth")
    torch.manual_seed(seed + 1)
    torch.save(UNet2DConditionModel.from_config(unet_config).state_dict(), folder / "denoising_unet.pth")
    guider = build_pose_guider(PoseGuiderConfig.tiny(out_channels=unet_config["block_out_channels"][0]), seed=seed + 2)
    with torch.no_grad():
        guider.conv_out.weight.normal_(0, 0.05)  # a "trained" head: the pose changes the result
    torch.save(guider.state_dict(), folder / "pose_guider.pth")
    return folder


def write_image_encoder(folder: Path, projection_dim: int, seed: int = 0) -> Path:
    """A tiny CLIPVisionModelWithProjection folder (32 px images, 2 layers)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=16, projection_dim=projection_dim)  # fmt: skip
    CLIPVisionModelWithProjection(cfg).eval().save_pretrained(str(folder), safe_serialization=True)
    return folder


# ---------------------------------------------------------------------------------------------------
# The designed ONNX pair
# ---------------------------------------------------------------------------------------------------


def standing_figure() -> np.ndarray:
    """(133, 2) COCO-WholeBody points of a standing figure with raised arms, in the 288 x 384 pose crop."""
    body = {0: (144, 78), 1: (137, 72), 2: (151, 72), 3: (129, 76), 4: (159, 76), 5: (120, 110), 6: (168, 110),
            7: (96, 84), 8: (192, 84), 9: (84, 50), 10: (204, 50), 11: (128, 200), 12: (160, 200),
            13: (124, 262), 14: (164, 262), 15: (122, 322), 16: (166, 322)}  # fmt: skip
    pts = np.zeros((133, 2))
    for k, v in body.items():
        pts[k] = v
    pts[17:20] = [(112, 334), (106, 332), (124, 330)]  # left foot: big toe, small toe, heel
    pts[20:23] = [(176, 334), (182, 332), (164, 330)]  # right foot
    a = np.linspace(math.pi * 0.1, math.pi * 0.9, 17)  # jaw line
    pts[23:40] = np.stack([144 - 13 * np.cos(a), 80 + 14 * np.sin(a) - 6], axis=1)
    pts[40:45] = [(134 + 2 * i, 70 - (i % 3)) for i in range(5)]  # brows
    pts[45:50] = [(146 + 2 * i, 70 - (i % 3)) for i in range(5)]
    pts[50:59] = [(144, 74 + i) if i < 4 else (140 + 2 * (i - 4), 79) for i in range(9)]  # nose
    pts[59:71] = [(138 + 2 * (i % 3), 74 + (i // 3) % 2) if i < 6 else (148 + 2 * (i % 3), 74 + (i // 3) % 2)
                  for i in range(12)]  # eyes  # fmt: skip
    b = np.linspace(0, 2 * math.pi, 20, endpoint=False)
    pts[71:91] = np.stack([144 + 6 * np.cos(b), 86 + 2.5 * np.sin(b)], axis=1)  # mouth
    for start, (wx, wy), side in ((91, body[9], -1), (112, body[10], 1)):  # hands: wrist + 5 fingers x 4
        pts[start] = (wx, wy)
        for f in range(5):
            ang = -math.pi / 2 + side * (f - 2) * 0.35
            for j in range(4):
                r = 5 + 4 * j
                pts[start + 1 + 4 * f + j] = (wx + r * math.cos(ang) * 0.8, wy + r * math.sin(ang))
    return pts


def write_dwpose_pair(folder: Path) -> bool:
    """The designed ONNX pair (see the module doc); False (nothing written) without the `onnx` package."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return False
    folder.mkdir(parents=True, exist_ok=True)

    def io_(name: str, shape: list[int]):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    def model(nodes, inits, inputs, outputs, name):
        m = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
        m.ir_version = 9
        onnx.checker.check_model(m)
        return m

    # detector: one anchor (stride 32, cell (10, 10) = centre of the canvas) with a 320 x 560 person box
    row = np.zeros(85, np.float32)
    row[:4] = [0.0, 0.0, math.log(320 / 32), math.log(560 / 32)]
    row[4], row[5] = 0.95, 0.95
    index = 80 * 80 + 40 * 40 + 10 * 20 + 10
    det = model(
        [helper.make_node("ConstantOfShape", ["shape"], ["zeros"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
         helper.make_node("ScatterND", ["zeros", "idx", "upd"], ["raw"]),
         helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
         helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
         helper.make_node("Add", ["raw", "nothing"], ["output"])],
        [numpy_helper.from_array(np.array([1, ANCHORS, 85], np.int64), "shape"),
         numpy_helper.from_array(np.array([[0, index]], np.int64), "idx"),
         numpy_helper.from_array(row[None], "upd"), numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
        [io_("images", [1, 3, 640, 640])], [io_("output", [1, ANCHORS, 85])], "tiny-yolox",
    )  # fmt: skip
    (folder / "yolox_l.onnx").write_bytes(det.SerializeToString())

    pts = standing_figure()
    h, w = POSE_IN
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]  # fmt: skip
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array([0.0, 0.9], np.float32), "onoff")]  # fmt: skip
    outputs = []
    for name, coord, depth in (("simcc_x", pts[:, 0], w * 2), ("simcc_y", pts[:, 1], h * 2)):
        idx = np.clip(np.round(coord * 2), 0, depth - 1).astype(np.int64).reshape(1, 133)
        inits += [numpy_helper.from_array(idx, f"{name}_idx"), numpy_helper.from_array(np.array(depth, np.int64), f"{name}_d")]
        nodes += [helper.make_node("OneHot", [f"{name}_idx", f"{name}_d", "onoff"], [f"{name}_hot"], axis=-1),
                  helper.make_node("Add", [f"{name}_hot", "nothing"], [name])]  # fmt: skip
        outputs.append(io_(name, [1, 133, depth]))
    pose = model(nodes, inits, [io_("input", [1, 3, h, w])], outputs, "tiny-rtmpose")
    (folder / "dw-ll_ucoco_384.onnx").write_bytes(pose.SerializeToString())
    return True


# ---------------------------------------------------------------------------------------------------
# The whole set
# ---------------------------------------------------------------------------------------------------


def make_tiny_pose_set(models_dir: str | Path, seed: int = 0, *, dwpose: bool = True) -> dict[str, Path]:
    """Add the pose studio's tiny models to a tiny model set in `models_dir` (see the module doc)."""
    from ..models.tiny import build_tiny_sd15
    from .ip_adapter import write_tiny_ip_adapter

    root = Path(models_dir)
    config = _unet_config(root)
    cross = int(config["cross_attention_dim"])
    out: dict[str, Path] = {}
    if dwpose and write_dwpose_pair(root / "DWPose"):
        out["dwpose"] = root / "DWPose"
    out["animate-anyone"] = write_animate_anyone(root / "AnimateAnyone", config, seed)
    out["image-encoder"] = write_image_encoder(root / "clip_vision" / "tiny-image-encoder", cross, seed + 3)
    vae = root / "diffusers" / "tiny-vae"
    build_tiny_sd15(seed)["vae"].save_pretrained(str(vae), safe_serialization=True)
    out["vae"] = vae
    canny = root / "ControlNet" / "tiny-sd15-canny.safetensors"
    if canny.is_file():
        out["controlnet-sd15-openpose"] = Path(shutil.copyfile(canny, root / "ControlNet" / "tiny-sd15-openpose.safetensors"))
    from diffusers import UNet2DConditionModel

    ip = root / "IP-Adapter" / "models"
    write_image_encoder(ip / "image_encoder", cross, seed + 5)
    out["ip-adapter"] = write_tiny_ip_adapter(UNet2DConditionModel.from_config(config), cross,
                                              ip / "tiny-ip-adapter.safetensors", seed=seed)  # fmt: skip
    return out
