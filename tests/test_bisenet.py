"""BiSeNet face parsing (nets.bisenet): public key layout, loading, and the label map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from toonbooth.core.errors import ModelError, ModelNotFoundError
from toonbooth.nets.bisenet import (
    CLASS_INDEX,
    FACE_PARSING_CLASSES,
    BiSeNet,
    BiSeNetConfig,
    build_bisenet,
    load_bisenet,
    looks_like_bisenet,
    parse_face,
    tiny_bisenet,
)


@pytest.fixture(scope="module")
def tiny() -> BiSeNet:
    return tiny_bisenet(seed=0)


@pytest.fixture(scope="module")
def full_keys() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = BiSeNet()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_public_layout_counts(full_keys) -> None:
    # 79999_iter.pth: 191 keys (BN num_batches_tracked included), 13 300 416 parameters
    assert len(full_keys) == 191
    params = sum(
        int(np.prod(s))
        for k, s in full_keys.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert params == 13_300_416
    assert full_keys["cp.resnet.conv1.weight"] == (64, 3, 7, 7)
    assert full_keys["cp.resnet.layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert full_keys["cp.arm16.conv.conv.weight"] == (128, 256, 3, 3)
    assert full_keys["cp.arm32.conv_atten.weight"] == (128, 128, 1, 1)
    assert full_keys["ffm.conv1.weight"] == (64, 256, 1, 1)
    assert full_keys["conv_out.conv_out.weight"] == (19, 256, 1, 1)
    assert full_keys["conv_out16.conv_out.weight"] == (19, 64, 1, 1)
    assert looks_like_bisenet(set(full_keys))


def test_tiny_has_the_same_keys_and_runs_at_64(tiny: BiSeNet, full_keys) -> None:
    assert set(tiny.state_dict()) == set(full_keys)
    with torch.no_grad():
        outs = tiny(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 19, 64, 64)] * 3


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_back(tiny: BiSeNet, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"79999_iter{suffix}"
    sd = {k: v.contiguous() for k, v in tiny.state_dict().items()}
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        save_file(sd, str(path))
    loaded = load_bisenet(path)
    assert loaded.config == BiSeNetConfig(n_classes=19, width=8)
    assert set(loaded.state_dict()) == set(sd)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], tiny(x)[0])


def test_loader_refusals(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        load_bisenet(tmp_path / "nope.pth")
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ModelError, match="BiSeNet"):
        load_bisenet(other)
    pickled = tmp_path / "evil.pth"
    torch.save({"x": ModelError("not a tensor")}, pickled)  # needs full unpickling
    with pytest.raises(ModelError, match="weights_only"):
        load_bisenet(pickled)
    broken = build_bisenet(BiSeNetConfig.tiny(), seed=1).state_dict()
    broken.pop("ffm.conv2.weight")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ModelError, match="missing"):
        load_bisenet(tmp_path / "broken.pth")


def test_parse_face_with_designed_weights() -> None:
    # the main head's ConvBNReLU outputs a constant 1 (BN weight 0, bias 1) and only the `hair` row of its
    # 1x1 classifier is non-zero: every pixel must come out `hair`, at the requested size
    model = build_bisenet(BiSeNetConfig.tiny(), seed=0)
    with torch.no_grad():
        head = model.conv_out
        head.conv.bn.weight.zero_()
        head.conv.bn.bias.fill_(1.0)
        head.conv_out.weight.zero_()
        head.conv_out.weight[CLASS_INDEX["hair"]] = 1.0
    image = (np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)
    labels = parse_face(image, model, size=64)
    assert labels.shape == (48, 40) and labels.dtype == np.uint8
    assert (labels == CLASS_INDEX["hair"]).all()
    assert parse_face(image, model, size=64, output_size=(20, 10)).shape == (10, 20)


def test_class_table() -> None:
    assert len(FACE_PARSING_CLASSES) == 19
    assert CLASS_INDEX["skin"] == 1 and CLASS_INDEX["u_lip"] == 12 and CLASS_INDEX["l_lip"] == 13
    assert CLASS_INDEX["hair"] == 17 and CLASS_INDEX["l_eye"] == 4 and CLASS_INDEX["nose"] == 10


def test_region_labels_agree_with_the_class_table() -> None:
    # vision.face_regions may not import nets: its copy of the label indices must match this table
    from toonbooth.vision.face_regions import PARSING_REGION_LABELS, PROTECTED_LABELS

    names = {
        "lips": ("u_lip", "l_lip"),
        "mouth": ("mouth",),
        "eyes": ("l_eye", "r_eye"),
        "brows": ("l_brow", "r_brow"),
        "skin": ("skin", "nose"),
        "hair": ("hair",),
        "neck": ("neck",),
        "background": ("background",),
    }
    assert {k: tuple(CLASS_INDEX[n] for n in v) for k, v in names.items()} == PARSING_REGION_LABELS
    protected = {"background", "eye_g", "ear_r", "neck_l", "cloth", "hair", "hat"}
    assert {FACE_PARSING_CLASSES[i] for i in PROTECTED_LABELS} == protected
