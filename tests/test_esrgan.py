"""ESRGAN-family upscalers (nets/esrgan.py): tiny networks written in each public key layout load back
exactly and upscale by their factor; weights designed so the answer is known; tiling equals one pass on a
small image and stays seam-free on a large one; A1111's upscale sizes; the `upscaler` family finds files by
their keys and never unpickles; the `extras` job through the one execution path."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from toonbooth.core.errors import InputError, UnsafeModelFormatError
from toonbooth.nets import esrgan as E

LAYOUTS = [
    ("basicsr", ".pth", 4, 1),  # RealESRGAN_x4plus: params_ema wrapper
    ("basicsr", ".safetensors", 2, 2),  # RealESRGAN_x2plus: pixel-unshuffle 2, 12 input channels
    ("esrgan-old", ".pth", 4, 1),  # 4x-UltraSharp-style original keys
    ("esrgan-old", ".safetensors", 2, 1),
    ("mmsr", ".pth", 4, 1),
]


@pytest.mark.parametrize("layout,suffix,scale,unshuffle", LAYOUTS)
def test_rrdb_layouts_load_back_and_upscale_by_their_factor(tmp_path, layout, suffix, scale, unshuffle):
    net = E.tiny_rrdb(scale=scale, unshuffle=unshuffle, num_block=2, seed=3)
    path = E.write_upscaler(net, tmp_path / f"net{suffix}", layout)
    state = E.load_upscaler_state_dict(path)
    assert E.detect_layout(state) == layout
    if layout == "esrgan-old":
        assert "model.1.sub.0.RDB1.conv1.0.weight" in state and "model.1.sub.2.weight" in state
    loaded, found = E.build_network(state)
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x)) and loaded(x).shape == (1, 3, 12 * scale, 16 * scale)
    entry = E.upscaler_file_entry(path, tmp_path, "ESRGAN")
    assert entry.refused is None and entry.details["scale"] == scale and entry.details["blocks"] == 2


def test_srvgg_loads_and_zero_body_is_nearest_upsampling(tmp_path):
    net = E.tiny_srvgg(scale=4, num_conv=2)
    for p in net.parameters():
        torch.nn.init.zeros_(p)  # body output 0: the result is the input's nearest-neighbour 4x upsampling
    path = E.write_upscaler(net, tmp_path / "realesr-general-x4v3.pth", "srvgg")
    up = E.NeuralUpscaler(E.build_network(E.load_upscaler_state_dict(path))[0], "x", "srvgg")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8))
    out = up.upscale_once(img)
    assert out.size == (56, 40)
    assert np.array_equal(np.asarray(out), np.asarray(img.resize((56, 40), Image.Resampling.NEAREST)))
    entry = E.upscaler_file_entry(path, tmp_path, "RealESRGAN")
    assert entry.aliases == ["R-ESRGAN General 4xV3"] and entry.details["net"] == "SRVGGNetCompact"


def test_rrdb_known_output_constant_last_conv():
    net = E.tiny_rrdb(scale=4)
    with torch.no_grad():
        net.conv_last.weight.zero_()
        net.conv_last.bias.fill_(0.5)
    out = E.NeuralUpscaler(net, "x", "basicsr").upscale_once(Image.new("RGB", (9, 7), (200, 10, 30)))
    assert out.size == (36, 28) and set(np.unique(np.asarray(out))) == {128}


def test_tiling_one_tile_is_one_pass_and_large_images_have_no_seams():
    net = E.tiny_rrdb(scale=4, num_block=1, seed=5)
    small = torch.rand(1, 3, 30, 40)
    with torch.no_grad():
        assert torch.equal(E.tiled_forward(net, small, 4, tile=64, overlap=16), net(small))
        large = torch.rand(1, 3, 96, 112)
        full = net(large)
        tiled = E.tiled_forward(net, large, 4, tile=48, overlap=24)
    diff = (full - tiled).abs()
    assert tiled.shape == full.shape
    assert diff.max().item() < 2e-3, diff.max().item()  # the receptive field fits in the blended overlap
    # no seam: the error along tile borders is no larger than elsewhere by more than float noise
    assert diff[..., 24 * 4 : 48 * 4, :].mean().item() < 1e-4


def test_a1111_upscale_sizes():
    img = Image.new("RGB", (50, 50), (10, 20, 30))
    assert E.Upscaler("Lanczos").upscale(img, 2).size == (96, 96)  # int(100)//8*8
    assert E.Upscaler("Nearest").upscale(Image.new("RGB", (64, 48)), 2).size == (128, 96)
    net = E.NeuralUpscaler(E.tiny_rrdb(scale=4), "t", "basicsr")
    calls = []
    real = net.upscale_once
    net.upscale_once = lambda im, **kw: calls.append(im.size) or real(im, **kw)  # type: ignore[method-assign]
    assert E.Upscaler("t", net).upscale(Image.new("RGB", (20, 16)), 2).size == (40, 32)
    assert calls == [(20, 16)]  # one 4x pass, then Lanczos down to exactly 2x
    assert E.Upscaler("t", net).resize_to(Image.new("RGB", (20, 16)), 60, 40).size == (60, 40)


def test_pickles_are_refused_and_other_files_are_not_upscalers(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("never run",))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"params_ema": Payload()}))
    with pytest.raises(UnsafeModelFormatError, match="weights_only"):
        E.load_upscaler_state_dict(bad)
    assert "weights_only" in E.upscaler_file_entry(bad, tmp_path, "ESRGAN").refused
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, other)
    assert "no ESRGAN-family layout" in E.upscaler_file_entry(other, tmp_path, "ESRGAN").refused


def test_family_scan_names_and_extras_job(tmp_path):
    """The registry finds upscalers by content in ESRGAN/ and RealESRGAN/ (A1111's names as aliases), the
    model manager loads them once, and the extras job upscales through the one execution path."""
    from toonbooth.core.images import image_to_png_bytes, read_png_parameters
    from toonbooth.core.settings import Settings
    from toonbooth.core.specs import parse_job_spec
    from toonbooth.runtime.context import JobContext
    from toonbooth.runtime.execute import execute
    from toonbooth.runtime.families import model_manager
    from toonbooth.runtime.storage_local import LocalStorage

    models_dir = tmp_path / "models"
    E.write_upscaler(E.tiny_rrdb(scale=4), models_dir / "RealESRGAN" / "RealESRGAN_x4plus.pth", "basicsr")
    E.write_upscaler(E.tiny_rrdb(scale=2, unshuffle=2), models_dir / "ESRGAN" / "2x-Tiny.safetensors", "basicsr")
    settings = Settings(home=tmp_path / "home", models_dir=models_dir, data_dir=tmp_path / "data", device="cpu")
    models = model_manager(settings)
    names = {e.name: e for e in models.registry.list("upscaler")}
    assert set(names) == {"RealESRGAN_x4plus", "2x-Tiny"} and names["2x-Tiny"].details["scale"] == 2
    up = E.resolve_upscaler(models, "R-ESRGAN 4x+")
    assert up.network is not None and up.scale == 4 and E.resolve_upscaler(models, "RealESRGAN_x4plus").network is up.network
    with pytest.raises(InputError) as err:
        E.resolve_upscaler(models, "SwinIR_4x", field="upscaler_1")
    assert err.value.field == "upscaler_1" and "available: None, Lanczos, Nearest, " in str(err.value)
    assert "R-ESRGAN 4x+" in str(err.value)

    storage = LocalStorage(settings.resolved_data_dir)
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    ref = storage.put(image_to_png_bytes(picture, "a prompt\nSteps: 3, Sampler: Euler, Seed: 1"))
    spec = parse_job_spec({"kind": "extras", "images": [ref, ref], "resize_mode": 1, "upscaling_resize_w": 100,
                           "upscaling_resize_h": 90, "upscaler_1": "R-ESRGAN 4x+", "upscaler_2": "2x-Tiny",
                           "extras_upscaler_2_visibility": 0.3, "gfpgan_visibility": 0.5})  # fmt: skip
    out = execute(spec, JobContext(settings, models, storage))
    assert [(o.width, o.height) for o in out.outputs] == [(100, 90), (100, 90)]
    assert out.info["infotexts"][0] == (
        "Postprocess upscale to: 100x90, Postprocess crop to: 100x90, Postprocess upscaler: R-ESRGAN 4x+, "
        "Postprocess upscaler 2: 2x-Tiny"
    )
    assert out.info["ignored"] == ["gfpgan_visibility"] and out.backend == "neural"
    kept = read_png_parameters(storage.get(out.outputs[0].ref))
    assert kept.startswith("a prompt")  # the picture's own parameters are kept, as A1111 keeps its PNG info


def test_upscale_command(tmp_path, sample_photo_path):
    """`toonbooth upscale`: the extras job from the shell (Lanczos needs no weights); bad names are clear."""
    from typer.testing import CliRunner

    from toonbooth.cli.main import app

    env = {"TOONBOOTH_HOME": str(tmp_path / "home")}
    runner = CliRunner()
    res = runner.invoke(app, ["upscale", str(sample_photo_path), "--scale", "1.5", "--out-dir", str(tmp_path / "o"),
                              "--quiet"], env=env)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "o" / "sample_face-upscaled.png").size == (768, 768)
    res = runner.invoke(app, ["upscale", str(sample_photo_path), "--upscaler", "SwinIR_4x", "--quiet"], env=env)
    assert res.exit_code == 2 and "`upscaler_1`" in res.output and "SwinIR_4x" in res.output
    res = runner.invoke(app, ["upscale", str(sample_photo_path), "--to", "12by4"], env=env)
    assert res.exit_code == 2 and "WIDTHxHEIGHT" in res.output
