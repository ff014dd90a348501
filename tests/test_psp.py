"""pSp / e4e encoders: key layout, checkpoint load-back (.pt and safetensors), latent_avg, e4e deltas."""

from __future__ import annotations

import argparse

import pytest
import torch

from toonbooth.core.errors import ModelError
from toonbooth.nets.psp import (
    Encoder4Editing,
    EncoderConfig,
    GradualStyleEncoder,
    IdentityBackbone,
    PSPCheckpoint,
    PSPInverter,
    build_encoder,
    encoder_config_from_state_dict,
    load_identity_backbone,
    load_psp,
    load_psp_checkpoint,
    looks_like_identity_backbone,
    looks_like_psp_encoder,
    save_psp_safetensors,
    tiny_encoder_config,
)
from toonbooth.nets.stylegan2 import tiny_generator

CFG = tiny_encoder_config(n_styles=8, style_dim=32, input_size=64)


def test_full_psp_encoder_layout():
    with torch.device("meta"):
        enc = GradualStyleEncoder(EncoderConfig())
    sd = enc.state_dict()
    assert len(sd) == 621
    assert sum(p.numel() for p in enc.parameters()) == 267_136_704
    for key in (
        "input_layer.0.weight",
        "input_layer.1.running_var",
        "input_layer.2.weight",
        "body.3.shortcut_layer.0.weight",
        "body.0.res_layer.5.fc1.weight",
        "body.23.res_layer.4.bias",
        "styles.17.linear.weight",
        "styles.0.convs.6.weight",
        "styles.17.convs.10.weight",
        "latlayer1.weight",
        "latlayer2.bias",
    ):
        assert key in sd, key
    assert "body.0.shortcut_layer.0.weight" not in sd  # 64 -> 64: weightless max-pool shortcut
    assert "styles.0.convs.8.weight" not in sd  # 16x16 -> 1x1: four stride-2 convs (indices 0, 2, 4, 6)
    assert tuple(sd["latlayer1.weight"].shape) == (512, 256, 1, 1)
    assert tuple(sd["latlayer2.weight"].shape) == (512, 128, 1, 1)
    assert encoder_config_from_state_dict(sd) == EncoderConfig()
    assert looks_like_psp_encoder(set(sd)) and looks_like_psp_encoder({f"encoder.{k}" for k in sd})


def test_tiny_encoder_has_the_same_key_pattern():
    import re

    with torch.device("meta"):
        full = set(GradualStyleEncoder(EncoderConfig()).state_dict())
    tiny = set(GradualStyleEncoder(CFG).state_dict())
    assert {k for k in tiny if not k.startswith("body.")} <= full
    pattern = {re.sub(r"\d+", "N", k) for k in tiny}
    assert pattern == {re.sub(r"\d+", "N", k) for k in full}


def _checkpoint(kind: str) -> dict:
    torch.manual_seed(0)
    enc = build_encoder(CFG, kind).eval()
    dec = tiny_generator(32, seed=4)  # 8 W+ styles, 32-d
    assert dec.n_latent == CFG.n_styles
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in dec.state_dict().items()})
    opts = {
        "encoder_type": "Encoder4Editing" if kind == "e4e" else "GradualStyleEncoder",
        "start_from_latent_avg": True,
        "output_size": 32,
    }
    return {"state_dict": state, "opts": opts, "latent_avg": torch.randn(32), "_enc": enc, "_dec": dec}


@pytest.mark.parametrize("kind", ["psp", "e4e"])
def test_pt_checkpoint_loads_back_and_adds_latent_avg(tmp_path, kind):
    ck = _checkpoint(kind)
    enc, dec = ck.pop("_enc"), ck.pop("_dec")
    path = tmp_path / f"{kind}.pt"
    torch.save(ck, path)
    inverter, decoder = load_psp(path)
    assert type(inverter.encoder) is (Encoder4Editing if kind == "e4e" else GradualStyleEncoder)
    for k, v in enc.state_dict().items():
        assert torch.equal(inverter.encoder.state_dict()[k], v), k
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    codes = inverter.encode(x)
    with torch.no_grad():
        expected = enc(x) + ck["latent_avg"].reshape(1, 1, 32)
    assert codes.shape == (2, 8, 32)
    assert torch.allclose(codes, expected, atol=1e-6)
    assert decoder is not None
    img, _ = decoder([codes], input_is_latent=True, randomize_noise=False)
    ref, _ = dec([expected], input_is_latent=True, randomize_noise=False)
    assert torch.allclose(img, ref, atol=1e-5)


def test_namespace_opts_and_safetensors_conversion(tmp_path):
    ck = _checkpoint("e4e")
    enc = ck.pop("_enc")
    ck.pop("_dec")
    ck["opts"] = argparse.Namespace(**ck["opts"])
    torch.save(ck, tmp_path / "e4e_ns.pt")
    loaded = load_psp_checkpoint(tmp_path / "e4e_ns.pt")
    assert loaded.kind == "e4e" and loaded.opts["output_size"] == 32
    out = save_psp_safetensors(tmp_path / "e4e.safetensors", loaded)
    again = load_psp_checkpoint(out)
    assert (
        again.kind == "e4e"
        and set(again.encoder) == set(loaded.encoder)
        and set(again.decoder) == set(loaded.decoder)
    )
    inverter, _ = load_psp(out)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(inverter.encode(x), enc(x) + ck["latent_avg"], atol=1e-6)


def test_resizes_input_to_the_encoder_size():
    enc = build_encoder(CFG, "psp").eval()
    inv = PSPInverter(enc, torch.zeros(32)).eval()
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    small = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", antialias=True)
    with torch.no_grad():
        assert torch.allclose(inv.encode(x), enc(small), atol=1e-6)


def test_e4e_without_deltas_repeats_the_base_code():
    enc = build_encoder(CFG, "e4e").eval()
    with torch.no_grad():  # zero every delta head: W+ must be style 0's W on all rows
        for i in range(1, CFG.n_styles):
            enc.styles[i].linear.weight.zero_()
            enc.styles[i].linear.bias.zero_()
    w = enc(torch.rand(2, 3, 64, 64))
    assert torch.equal(w, w[:, :1].expand_as(w))
    assert not torch.equal(w[0], torch.zeros_like(w[0]))


def test_psp_styles_come_from_their_own_heads():
    enc = build_encoder(CFG, "psp").eval()
    with torch.no_grad():
        enc.styles[5].linear.weight.zero_()
        enc.styles[5].linear.bias.fill_(3.0)
    w = enc(torch.rand(1, 3, 64, 64))
    assert torch.equal(w[0, 5], torch.full((32,), 3.0))


def test_refuses_non_psp_files(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ModelError, match="pSp/e4e"):
        load_psp_checkpoint(tmp_path / "x.pt")
    ck = PSPCheckpoint({"foo": torch.zeros(1)}, {}, None)
    with pytest.raises(ModelError, match="not a pSp/e4e encoder"):
        encoder_config_from_state_dict(ck.encoder)


def test_identity_backbone_layout_and_load(tmp_path):
    with torch.device("meta"):
        full = IdentityBackbone()
    keys = set(full.state_dict())
    assert {"output_layer.0.weight", "output_layer.3.weight", "output_layer.4.running_mean"} <= keys
    assert tuple(full.state_dict()["output_layer.3.weight"].shape) == (512, 512 * 7 * 7)
    assert looks_like_identity_backbone(keys)
    tiny_cfg = EncoderConfig(stage_units=(1, 1, 1, 1), stage_depths=(16, 20, 24, 32), input_size=32)
    net = IdentityBackbone(tiny_cfg, embedding=16).eval()
    torch.save(net.state_dict(), tmp_path / "model_ir_se50.pth")
    loaded = load_identity_backbone(tmp_path / "model_ir_se50.pth")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    emb = loaded(x)
    assert emb.shape == (2, 16)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(emb, net(x), atol=1e-6)
    assert loaded.embed_face(torch.rand(1, 3, 256, 256)).shape == (1, 16)
