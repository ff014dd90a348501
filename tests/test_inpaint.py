"""Inpainting: our LaMa generator on a tiny config (and the public key layout), the crop / paste-back
logic, the TorchScript path, and OpenCV Telea / Navier-Stokes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from toonbooth.core.errors import InputError, ModelError, UnsafeModelFormatError
from toonbooth.nets.lama import (
    LamaConfig,
    LamaGenerator,
    build_lama,
    load_lama,
    load_lama_state_dict,
    load_lama_torchscript,
)
from toonbooth.vision.inpaint import LamaInpainter, dilate, telea_inpaint


def noisy_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def gradient_image(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([40 + 150 * xx / w, 60 + 120 * yy / h, 200 - 100 * (xx + yy) / (w + h)], axis=-1)
    return np.rint(img).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_lama():
    return build_lama(LamaConfig.tiny(), seed=0)


class SizeSpy(torch.nn.Module):
    """Records the input sizes the inpainter feeds the model."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, image, mask):
        self.shapes.append(tuple(image.shape))
        return self.inner(image, mask)


# --- LaMa network ---------------------------------------------------------------------------------


def test_lama_keeps_size_and_pixels_outside_the_dilated_mask(tiny_lama):
    img = noisy_image(45, 61)  # not multiples of 8
    mask = np.zeros((45, 61), bool)
    mask[15:28, 20:37] = True
    spy = SizeSpy(tiny_lama)
    out = np.asarray(LamaInpainter(spy, dilate_px=3, feather_px=2).inpaint(Image.fromarray(img), mask))
    assert out.shape == img.shape
    assert all(s[2] % 8 == 0 and s[3] % 8 == 0 for s in spy.shapes)
    outside = ~dilate(mask, 3)
    assert np.array_equal(out[outside], img[outside])  # exactly unchanged
    assert np.abs(out[mask].astype(int) - img[mask]).mean() > 5  # the hole was redrawn


def test_lama_large_image_runs_on_a_native_size_crop(tiny_lama):
    img = noisy_image(150, 300, seed=1)
    mask = np.zeros((150, 300), bool)
    mask[60:100, 180:260] = True
    spy = SizeSpy(tiny_lama)
    inp = LamaInpainter(spy, native_size=64, dilate_px=2, feather_px=2, margin=0.25)
    out = np.asarray(inp.inpaint(img, mask))
    assert out.shape == img.shape
    assert len(spy.shapes) == 1 and max(spy.shapes[0][2:]) <= 64  # crop, shrunk to the native size
    outside = ~dilate(mask, 2)
    assert np.array_equal(out[outside], img[outside])
    assert not np.array_equal(out[mask], img[mask])


def test_lama_network_itself_keeps_known_pixels(tiny_lama):
    x = torch.rand(1, 3, 32, 40)
    m = torch.zeros(1, 1, 32, 40)
    m[..., 8:20, 10:30] = 1
    with torch.no_grad():
        y = tiny_lama(x, m)
    assert y.shape == x.shape
    assert torch.equal(y[m.expand_as(x) == 0], x[m.expand_as(x) == 0])
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_public_key_layout_of_big_lama():
    with torch.device("meta"):
        sd = LamaGenerator(LamaConfig()).state_dict()
    expected = {
        "model.1.ffc.convl2l.weight": (64, 4, 7, 7),
        "model.4.ffc.convl2g.weight": (384, 256, 3, 3),
        "model.4.bn_g.running_var": (384,),
        "model.5.conv1.ffc.convg2g.conv1.0.weight": (192, 384, 1, 1),
        "model.22.conv2.ffc.convg2g.fu.conv_layer.weight": (384, 384, 1, 1),
        "model.22.conv2.ffc.convg2l.weight": (128, 384, 3, 3),
        "model.24.weight": (512, 256, 3, 3),
        "model.31.num_batches_tracked": (),
        "model.34.weight": (3, 64, 7, 7),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith(("model.23.", "model.35.")) for k in sd)  # concat / sigmoid: no weights
    assert sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked")) == pytest.approx(
        51.06e6, rel=0.01
    )


def test_public_layout_state_dict_loads_strictly(tmp_path):
    src = build_lama(LamaConfig.tiny(), seed=7)
    sd = {f"generator.{k}": v.clone() for k, v in src.generator.state_dict().items()}
    sd["discriminator.model0.0.ffc.convl2l.weight"] = torch.zeros(2, 2, 3, 3)  # ignored, as in best.ckpt
    path = tmp_path / "big-lama-tiny.safetensors"
    save_file(sd, str(path))
    loaded = load_lama(path)
    assert loaded.config == LamaConfig.tiny()
    x, m = torch.rand(1, 3, 32, 32), (torch.rand(1, 1, 32, 32) > 0.5).float()
    with torch.no_grad():
        assert torch.equal(loaded(x, m), src(x, m))

    # the original Lightning layout through torch.load(weights_only=True)
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": sd, "epoch": 3}, ckpt)
    with torch.no_grad():
        assert torch.equal(load_lama(ckpt)(x, m), src(x, m))

    bad = dict(sd)
    bad["generator.model.5.conv1.ffc.convl2x.weight"] = bad.pop("generator.model.5.conv1.ffc.convl2l.weight")
    with pytest.raises(ModelError, match="missing"):
        load_lama_state_dict(build_lama(LamaConfig.tiny()), bad)


class _Opaque:
    pass


def test_checkpoint_needing_unpickling_is_refused(tmp_path):
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _Opaque()}, path)
    with pytest.raises(UnsafeModelFormatError, match="unpickling"):
        load_lama(path)


def test_torchscript_only_from_the_models_folder(tmp_path, tiny_lama):
    models = tmp_path / "models" / "lama"
    models.mkdir(parents=True)
    x, m = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    m[..., 4:20, 4:20] = 1
    traced = torch.jit.trace(tiny_lama, (x, m), check_trace=False)
    path = models / "big-lama.pt"
    traced.save(str(path))
    scripted = load_lama_torchscript(path, models_dir=tmp_path / "models")
    img = noisy_image(40, 40, seed=3)
    mask = np.zeros((40, 40), bool)
    mask[10:25, 12:30] = True
    a = LamaInpainter(scripted, dilate_px=2).inpaint(img, mask)
    b = LamaInpainter(tiny_lama, dilate_px=2).inpaint(img, mask)
    assert np.abs(np.asarray(a).astype(int) - np.asarray(b)).max() <= 1

    upload = tmp_path / "uploads" / "big-lama.pt"
    upload.parent.mkdir()
    traced.save(str(upload))
    with pytest.raises(UnsafeModelFormatError, match="models folder"):
        load_lama_torchscript(upload, models_dir=tmp_path / "models")
    with pytest.raises(UnsafeModelFormatError, match="TorchScript"):
        load_lama(path)


def test_lama_bad_masks(tiny_lama):
    inp = LamaInpainter(tiny_lama)
    img = noisy_image(32, 32)
    with pytest.raises(InputError, match="empty") as ei:
        inp.inpaint(img, np.zeros((32, 32), bool))
    assert ei.value.field == "mask"
    with pytest.raises(InputError, match="differs") as ei:
        inp.inpaint(img, np.ones((16, 32), bool))
    assert ei.value.field == "mask"


# --- Telea / Navier-Stokes ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_classic_inpaint_removes_a_painted_blob(method):
    clean = gradient_image(64, 64)
    yy, xx = np.mgrid[0:64, 0:64]
    blob = (xx - 30) ** 2 + (yy - 34) ** 2 <= 8**2
    painted = clean.copy()
    painted[blob] = (250, 10, 10)
    out = np.asarray(telea_inpaint(painted, blob, radius=5, method=method))
    err_before = np.abs(painted[blob].astype(float) - clean[blob]).mean()
    err_after = np.abs(out[blob].astype(float) - clean[blob]).mean()
    assert err_after < 0.1 * err_before
    assert err_after < 10
    assert np.array_equal(out[~blob], painted[~blob])


def test_classic_inpaint_on_a_reduced_crop_of_a_large_image():
    clean = gradient_image(300, 400)
    blob = np.zeros((300, 400), bool)
    blob[100:220, 150:300] = True
    painted = clean.copy()
    painted[blob] = 0
    out = np.asarray(telea_inpaint(painted, blob, work_side=64, dilate_px=2))
    assert out.shape == painted.shape
    outside = ~dilate(blob, 2)
    assert np.array_equal(out[outside], painted[outside])
    assert np.abs(out[blob].astype(float) - clean[blob]).mean() < 15


def test_classic_inpaint_bad_arguments():
    img = gradient_image(16, 16)
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    with pytest.raises(InputError) as ei:
        telea_inpaint(img, mask, method="fast")
    assert ei.value.field == "method"
    with pytest.raises(InputError) as ei:
        telea_inpaint(img, mask, radius=0)
    assert ei.value.field == "radius"
