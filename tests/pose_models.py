"""Test helper: a models folder for the pose-change studio, built in the test run.

It links the shared tiny SD set (checkpoints, ControlNets, LoRAs, configs) and adds, in the public layouts:
- `DWPose/yolox_l.onnx` + `DWPose/dw-ll_ucoco_384.onnx`: the tiny ONNX pair of `test_dwpose` (real signatures,
  designed outputs: the keypoints of a 320 x 480 pose photo are known);
- `AnimateAnyone/{reference_unet,denoising_unet,pose_guider}.pth`: random weights of the tiny SD1.5 UNet (the
  reference file without conv_norm_out / conv_out, as Moore's) and a tiny PoseGuider, saved with torch.save
  (`nets.tiny_pose`, which `toonbooth models make-tiny` uses too);
- `clip_vision/tiny-image-encoder/`: a tiny CLIPVisionModelWithProjection (projection = the UNet's
  cross-attention width);
- `diffusers/tiny-vae/`: the tiny SD1.5 VAE as a diffusers folder;
- `ControlNet/tiny-sd15-openpose.safetensors`: a copy of the tiny SD1.5 ControlNet (a ControlNet does not know
  what it was trained on);
- `IP-Adapter/models/tiny-ip-adapter.safetensors` + `IP-Adapter/models/image_encoder/`: a random IP-Adapter in
  the layout diffusers' `load_ip_adapter` reads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

SHARED = ("Stable-diffusion", "Lora", "embeddings", "configs", "diffusers")
POSE_W, POSE_H = 320, 480  # test_dwpose's IMG_W, IMG_H: the detector's designed box is for this size


def pose_photo() -> np.ndarray:
    """A 320 x 480 'photo': the tiny detector ignores the pixels and finds the designed person."""
    return np.random.default_rng(0).integers(0, 255, (POSE_H, POSE_W, 3), dtype=np.uint8)


def designed_keypoints() -> np.ndarray:
    """(133, 3) keypoints the tiny pair gives for `pose_photo()`: designed positions and scores."""
    import test_dwpose as tdw

    xy = tdw.OFFSET + np.stack([tdw.M, tdw.N], axis=1) * 5.0
    return np.concatenate([xy, tdw.SCORES[:, None].astype(np.float64)], axis=1)


def add_dwpose(root: Path) -> Path:
    import test_dwpose as tdw

    folder = root / "DWPose"
    folder.mkdir(parents=True, exist_ok=True)
    tdw.make_detector(folder / "yolox_l.onnx", tdw.DET_ROWS)
    tdw.make_pose(folder / "dw-ll_ucoco_384.onnx")
    return folder


def tiny_unet_config(tiny_models_dir: Path) -> dict:
    return json.loads((tiny_models_dir / "configs" / "sd15" / "unet" / "config.json").read_text())


def add_animate_anyone(root: Path, tiny_models_dir: Path, seed: int = 0) -> Path:
    from toonbooth.nets.tiny_pose import write_animate_anyone

    return write_animate_anyone(root / "AnimateAnyone", tiny_unet_config(tiny_models_dir), seed)


def add_image_encoder(folder: Path, projection_dim: int, seed: int = 0) -> Path:
    from toonbooth.nets.tiny_pose import write_image_encoder

    return write_image_encoder(folder, projection_dim, seed)


def add_vae(root: Path) -> Path:
    from toonbooth.models.tiny import build_tiny_sd15

    folder = root / "diffusers" / "tiny-vae"
    build_tiny_sd15(0)["vae"].save_pretrained(str(folder), safe_serialization=True)
    return folder


def add_ip_adapter(root: Path, tiny_models_dir: Path, projection_dim: int) -> Path:
    from diffusers import UNet2DConditionModel

    from toonbooth.nets.ip_adapter import write_tiny_ip_adapter

    unet = UNet2DConditionModel.from_config(tiny_unet_config(tiny_models_dir))
    models = root / "IP-Adapter" / "models"
    add_image_encoder(models / "image_encoder", projection_dim, seed=5)
    return write_tiny_ip_adapter(unet, projection_dim, models / "tiny-ip-adapter.safetensors")


def make_pose_models(root: Path, tiny_models_dir: Path, *, animate_anyone: bool = True, dwpose: bool = True,
                     light: bool = True) -> Path:  # fmt: skip
    """The pose-change models folder under `root` (see the module doc)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "diffusers").mkdir(exist_ok=True)
    for name in SHARED:
        if name == "diffusers":
            for sub in (tiny_models_dir / "diffusers").iterdir():
                (root / "diffusers" / sub.name).symlink_to(sub, target_is_directory=True)
        else:
            (root / name).symlink_to(tiny_models_dir / name, target_is_directory=True)
    (root / "ControlNet").mkdir(exist_ok=True)
    for f in (tiny_models_dir / "ControlNet").iterdir():
        (root / "ControlNet" / f.name).symlink_to(f)
    cross = tiny_unet_config(tiny_models_dir)["cross_attention_dim"]
    if dwpose:
        add_dwpose(root)
    if animate_anyone:
        add_animate_anyone(root, tiny_models_dir)
        add_image_encoder(root / "clip_vision" / "tiny-image-encoder", cross, seed=3)
        add_vae(root)
    if light:
        shutil.copyfile(tiny_models_dir / "ControlNet" / "tiny-sd15-canny.safetensors",
                        root / "ControlNet" / "tiny-sd15-openpose.safetensors")  # fmt: skip
        add_ip_adapter(root, tiny_models_dir, cross)
    return root
