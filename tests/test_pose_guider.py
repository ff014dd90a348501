"""PoseGuider in the Moore-AnimateAnyone `pose_guider.pth` layout: keys, size, zero output head, load-back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toonbooth.core.errors import InputError, ModelError, UnsafeModelFormatError
from toonbooth.nets import pose_guider as pg

PUBLIC_KEYS = {
    "conv_in.weight", "conv_in.bias", "conv_out.weight", "conv_out.bias",
    *(f"blocks.{i}.{p}" for i in range(6) for p in ("weight", "bias")),
}  # fmt: skip


def test_published_layout_and_size():
    guider = pg.build_pose_guider()
    state = guider.state_dict()
    assert set(state) == PUBLIC_KEYS == pg.expected_pose_guider_keys()
    assert sum(v.numel() for v in state.values()) == 1_086_480
    assert state["conv_in.weight"].shape == (16, 3, 3, 3)
    assert state["blocks.1.weight"].shape == (32, 16, 3, 3)
    assert state["blocks.5.weight"].shape == (256, 96, 3, 3)
    assert state["conv_out.weight"].shape == (320, 256, 3, 3)
    assert pg.looks_like_pose_guider(set(state))
    assert pg.PoseGuiderConfig.from_state_dict(state) == pg.PoseGuiderConfig()


def test_zero_initialised_output_at_latent_resolution():
    guider = pg.build_pose_guider(pg.PoseGuiderConfig.tiny(), seed=0)
    assert torch.count_nonzero(guider.conv_out.weight) == 0 and torch.count_nonzero(guider.conv_out.bias) == 0
    pose = pg.pose_image_tensor(np.full((64, 48, 3), 255, np.uint8))
    assert float(pose.max()) == 1.0 and float(pose.min()) == 1.0  # [0, 1], not [-1, 1]
    out = guider(pose)
    assert out.shape == (1, 32, 8, 6)
    assert torch.count_nonzero(out) == 0


def test_looks_like_rejects_other_layouts():
    keys = set(PUBLIC_KEYS)
    assert not pg.looks_like_pose_guider(keys - {"blocks.5.weight", "blocks.5.bias"})
    assert not pg.looks_like_pose_guider(keys | {"controlnet_cond_embedding.conv_in.weight"})
    assert not pg.looks_like_pose_guider({"conv_in.weight", "conv_in.bias"})


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_load_back_identical(tmp_path, suffix):
    config = pg.PoseGuiderConfig.tiny()
    guider = pg.build_pose_guider(config, seed=1)
    with torch.no_grad():
        guider.conv_out.weight.normal_()  # a trained head, so outputs are not all zero
    path = tmp_path / f"pose_guider{suffix}"
    if suffix == ".pth":
        torch.save(guider.state_dict(), path)
    elif suffix == ".pt":  # the legacy (non-zip) torch format: read without mmap
        torch.save(guider.state_dict(), path, _use_new_zipfile_serialization=False)
    else:
        from safetensors.torch import save_file

        save_file(guider.state_dict(), str(path))
    loaded = pg.load_pose_guider(path)
    assert not loaded.training
    for key, value in guider.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(loaded(x), guider.eval()(x))


class _Payload:
    pass


def test_unsafe_and_foreign_files_are_refused(tmp_path):
    evil = tmp_path / "pose_guider.pth"
    torch.save({"conv_in.weight": _Payload()}, evil)
    with pytest.raises(UnsafeModelFormatError):
        pg.load_pose_guider(evil)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(ModelError, match="not a PoseGuider"):
        pg.load_pose_guider(other)
    with pytest.raises(ModelError, match="format"):
        pg.load_pose_guider(_touch(tmp_path / "pose_guider.ckpt"))
    with pytest.raises(ModelError, match="not a readable"):
        pg.load_pose_guider(_touch(tmp_path / "truncated.pth"))


def _touch(path):
    path.write_bytes(b"x")
    return path


def test_pose_image_tensor_validates():
    with pytest.raises(InputError, match="multiples of 8"):
        pg.pose_image_tensor(np.zeros((30, 32, 3), np.uint8))
    with pytest.raises(InputError, match="RGB uint8"):
        pg.pose_image_tensor(np.zeros((32, 32), np.uint8))
