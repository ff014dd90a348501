"""Own VGG16 features (torchvision key names) and the LPIPS-style distance."""

from __future__ import annotations

import pytest
import torch

from toonbooth.core.errors import ModelError
from toonbooth.nets.vgg import (
    CONV_INDICES,
    LPIPS,
    TAPS,
    VGG16Features,
    load_lpips,
    load_lpips_lins,
    load_vgg16,
    looks_like_lpips_lins,
    looks_like_vgg16,
    tiny_vgg16,
)


def test_torchvision_key_names_and_size():
    with torch.device("meta"):
        vgg = VGG16Features()
    keys = set(vgg.state_dict())
    assert keys == {f"features.{i}.{w}" for i in CONV_INDICES for w in ("weight", "bias")}
    assert tuple(vgg.state_dict()["features.28.weight"].shape) == (512, 512, 3, 3)
    assert tuple(vgg.state_dict()["features.0.weight"].shape) == (64, 3, 3, 3)
    assert sum(p.numel() for p in vgg.parameters()) == 14_714_688
    assert [type(vgg.features[i]).__name__ for i in TAPS] == ["ReLU"] * 5
    assert [type(vgg.features[i]).__name__ for i in (4, 9, 16, 23, 30)] == ["MaxPool2d"] * 5
    assert looks_like_vgg16(keys)


def test_tap_shapes():
    vgg = tiny_vgg16()
    taps = vgg(torch.rand(1, 3, 32, 32))
    assert [tuple(t.shape[1:]) for t in taps] == [(4, 32, 32), (8, 16, 16), (8, 8, 8), (16, 4, 4), (16, 2, 2)]


def test_lpips_is_zero_on_identical_images_and_lins_of_one_match_the_plain_sum():
    vgg = tiny_vgg16()
    plain = LPIPS(vgg)
    ones = LPIPS(vgg, [torch.ones(1, c, 1, 1) for c in vgg.config.widths])
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(plain(x, x), torch.zeros(2))
    d = plain(x, y)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(ones(x, y), d, atol=1e-6)
    half = LPIPS(vgg, [torch.full((1, c, 1, 1), 0.5) for c in vgg.config.widths])
    assert torch.allclose(half(x, y), d / 2, atol=1e-6)
    with pytest.raises(ModelError, match="lin weights"):
        LPIPS(vgg, [torch.ones(1, 3, 1, 1)] * 5)


def test_loads_torchvision_pth_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    vgg = tiny_vgg16(seed=3)
    sd = dict(vgg.state_dict())
    sd["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision files carry the classifier too
    torch.save(sd, tmp_path / "vgg16-397923af.pth")
    save_file({k: v.contiguous() for k, v in vgg.state_dict().items()}, str(tmp_path / "vgg16.safetensors"))
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(vgg.config.widths)}
    torch.save(lins, tmp_path / "vgg.pth")
    assert looks_like_lpips_lins(set(lins))
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    a = load_vgg16(tmp_path / "vgg16-397923af.pth")
    b = load_vgg16(tmp_path / "vgg16.safetensors")
    for ta, tb, tr in zip(a(x), b(x), vgg(x), strict=True):
        assert torch.equal(ta, tr) and torch.equal(tb, tr)
    loaded_lins = load_lpips_lins(tmp_path / "vgg.pth")
    assert all(torch.equal(w, lins[f"lin{i}.model.1.weight"]) for i, w in enumerate(loaded_lins))
    lp = load_lpips(tmp_path / "vgg16.safetensors", tmp_path / "vgg.pth")
    assert torch.allclose(lp(x, y), LPIPS(vgg, loaded_lins)(x, y))
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match="VGG16"):
        load_vgg16(tmp_path / "bad.pth")
