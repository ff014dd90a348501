"""Stable-Makeup pieces (nets.makeup_encoder) on a tiny SD1.5-shaped UNet, tiny CLIP vision and tiny Resampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from toonbooth.core.errors import ModelError
from toonbooth.nets.makeup_encoder import (
    CLIP_MEAN,
    DetailEncoder,
    PlainAttnProcessor,
    Resampler,
    ResamplerConfig,
    SSRAttnProcessor,
    build_detail_encoder,
    clip_pixel_values,
    expected_ssr_keys,
    identify_stable_makeup_file,
    install_ssr_processors,
    load_detail_encoder,
    load_makeup_controlnet,
    ssr_slots,
    tiny_clip_vision_config,
)

CROSS_DIM = 24  # the tiny UNet's text width; the tiny CLIP tokens are 32 wide (≠, as 768 vs 1024 in SD1.5)


def make_unet(seed: int = 0):
    """SD1.5's block layout (3 cross-attention down blocks, mid, 3 cross-attention up blocks, 2 layers each), tiny."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(8, 16, 24, 24),
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=2,
        cross_attention_dim=CROSS_DIM,
        norm_num_groups=4,
    ).eval()


def make_encoder(seed: int = 0) -> tuple[torch.nn.Module, DetailEncoder]:
    unet = make_unet(seed)
    torch.manual_seed(seed + 100)
    enc = build_detail_encoder(unet, tiny_clip_vision_config(), ResamplerConfig.tiny())
    return unet, enc


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, DetailEncoder]:
    return make_encoder(0)


def _unet_out(unet, context: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(context.shape[0], 4, 16, 16, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10] * context.shape[0]), context).sample


def test_index_rule_matches_sd15_order() -> None:
    slots = ssr_slots(make_unet())
    assert len(slots) == 32  # 16 transformer blocks x (attn1, attn2)
    attn2 = [s for s in slots if s.hidden_size is not None]
    assert [s.index for s in attn2] == list(range(1, 32, 2))
    blocks = [s.name.split(".attentions")[0] for s in attn2]
    assert blocks == ["down_blocks.0"] * 2 + ["down_blocks.1"] * 2 + ["down_blocks.2"] * 2 + [
        "up_blocks.1"
    ] * 3 + ["up_blocks.2"] * 3 + ["up_blocks.3"] * 3 + ["mid_block"]
    assert attn2[-1].index == 31
    assert [s.hidden_size for s in attn2] == [8, 8, 16, 16, 24, 24, 24, 24, 24, 16, 16, 16, 8, 8, 8, 24]
    assert expected_ssr_keys(make_unet()) == {
        f"SSR_layers.{i}.{p}.weight" for i in range(1, 32, 2) for p in ("to_k_SSR", "to_v_SSR")
    }


def test_ssr_equals_plain_cross_attention_with_the_unets_kv() -> None:
    unet = make_unet()
    text = torch.randn(1, 7, CROSS_DIM, generator=torch.Generator().manual_seed(2))
    plain = _unet_out(unet, text)
    layers = install_ssr_processors(unet, context_dim=CROSS_DIM)
    for slot, layer in zip(ssr_slots(unet), layers, strict=True):
        if slot.hidden_size is None:
            assert isinstance(layer, PlainAttnProcessor)
            continue
        assert isinstance(layer, SSRAttnProcessor)
        attn = unet.get_submodule(slot.name.removesuffix(".processor"))
        with torch.no_grad():
            layer.to_k_SSR.weight.copy_(attn.to_k.weight)
            layer.to_v_SSR.weight.copy_(attn.to_v.weight)
    assert torch.allclose(_unet_out(unet, text), plain, atol=1e-6)
    # scale 0 removes every cross-attention contribution: a different result
    for layer in layers:
        if isinstance(layer, SSRAttnProcessor):
            layer.scale = 0.0
    assert not torch.allclose(_unet_out(unet, text), plain, atol=1e-4)


def test_tokens_are_every_second_hidden_state_from_layer_2(tiny) -> None:
    unet, enc = tiny
    pv = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hs = enc.image_encoder(pv, output_hidden_states=True).hidden_states  # 5: embeddings + 4 layers
        tokens = enc.clip_tokens(pv)
        assert torch.equal(tokens, torch.cat([hs[2], hs[4]], dim=1))
        assert tokens.shape == (2, 2 * 17, 32)
        emb = enc(pv)
    assert emb.shape == (2, 34, 32)
    cond, uncond = enc.encode(pv)
    with torch.no_grad():
        assert torch.equal(uncond, enc(torch.zeros_like(pv))) and torch.equal(cond, emb)
    # the UNet takes the 32-wide makeup tokens although its cross_attention_dim is 24
    assert _unet_out(unet, emb).shape == (2, 4, 16, 16)


def test_public_layout_keys(tiny) -> None:
    unet, enc = tiny
    sd = enc.public_state_dict()
    clip = {k for k in sd if k.startswith("image_encoder.")}
    assert clip and all(k.startswith("image_encoder.vision_model.") for k in clip)
    assert "image_encoder.vision_model.embeddings.patch_embedding.weight" in clip
    assert "image_encoder.vision_model.encoder.layers.3.mlp.fc2.weight" in clip
    assert not any("post_layernorm" in k for k in clip)  # the reference's CLIP has post_layernorm = None
    assert {k for k in sd if k.startswith("SSR_layers.")} == expected_ssr_keys(unet)
    assert sd["SSR_layers.31.to_k_SSR.weight"].shape == (24, 32)  # mid block: (hidden, token width)
    assert {k for k in sd if k.startswith("resampler.")} == {
        f"resampler.{k}"
        for k in (
            "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
            "attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight", "attn.to_out.0.weight", "attn.to_out.0.bias",
            "ff.net.0.proj.weight", "ff.net.0.proj.bias", "ff.net.2.weight", "ff.net.2.bias",
        )
    }  # fmt: skip
    assert identify_stable_makeup_file(set(sd)) == "detail_encoder"


def test_full_size_resampler_matches_the_public_count() -> None:
    with torch.device("meta"):
        r = Resampler(ResamplerConfig())
    sd = r.state_dict()
    assert sum(v.numel() for v in sd.values()) == 14_694_400
    assert sd["ff.net.0.proj.weight"].shape == (8192, 1024) and sd["ff.net.2.weight"].shape == (1024, 4096)
    assert sd["attn.to_q.weight"].shape == (512, 1024)


@pytest.mark.parametrize("fmt", ["bin", "safetensors", "bin-transformers5-names"])
def test_detail_encoder_loads_back(tiny, tmp_path: Path, fmt: str) -> None:
    unet, enc = tiny
    sd = {k: v.contiguous() for k, v in enc.public_state_dict().items()}
    if fmt == "bin-transformers5-names":  # `vision_model.` level dropped, as transformers >= 5 names it
        sd = {k.replace("image_encoder.vision_model.", "image_encoder."): v for k, v in sd.items()}
    path = tmp_path / ("pytorch_model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    unet2 = make_unet(0)  # same base weights, no SSR yet
    loaded = load_detail_encoder(path, unet2, num_attention_heads=2, resampler_dim_head=16)
    pv = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        emb, emb2 = enc(pv), loaded(pv)
    assert torch.equal(emb, emb2)
    assert torch.equal(_unet_out(unet, emb), _unet_out(unet2, emb2))  # the SSR weights reached the UNet
    assert loaded.resampler.config == ResamplerConfig.tiny()


def test_detail_encoder_refusals(tiny, tmp_path: Path) -> None:
    unet, enc = tiny
    sd = enc.public_state_dict()
    shifted = {}
    for k, v in sd.items():  # indices off by one (attn1 positions): the file does not fit this UNet
        if k.startswith("SSR_layers."):
            i = int(k.split(".")[1])
            k = k.replace(f"SSR_layers.{i}.", f"SSR_layers.{i - 1}.", 1)
        shifted[k] = v
    torch.save(shifted, tmp_path / "shifted.bin")
    with pytest.raises(ModelError, match="attention order"):
        load_detail_encoder(
            tmp_path / "shifted.bin", make_unet(), num_attention_heads=2, resampler_dim_head=16
        )
    no_clip = {k: v for k, v in sd.items() if not k.startswith("image_encoder.")}
    torch.save(no_clip, tmp_path / "no_clip.bin")
    with pytest.raises(ModelError, match="image_encoder"):
        load_detail_encoder(tmp_path / "no_clip.bin", make_unet(), resampler_dim_head=16)
    # ... but loads with the CLIP encoder given separately
    loaded = load_detail_encoder(
        tmp_path / "no_clip.bin", make_unet(), image_encoder=enc.image_encoder, resampler_dim_head=16
    )
    assert isinstance(loaded, DetailEncoder)


def test_controlnets_load_from_public_files(tmp_path: Path) -> None:
    from diffusers import ControlNetModel

    base = make_unet(0)
    files = {}
    for i, seed in ((1, 11), (2, 12)):  # pytorch_model_1.bin (identity), _2.bin (structure)
        torch.manual_seed(seed)
        cn = ControlNetModel.from_unet(base)
        with torch.no_grad():
            cn.controlnet_mid_block.weight.normal_()
        files[i] = (tmp_path / f"pytorch_model_{i}.bin", cn)
        torch.save(cn.state_dict(), files[i][0])
        assert identify_stable_makeup_file(set(cn.state_dict())) == "controlnet"
    unet = make_unet(0)
    install_ssr_processors(unet, context_dim=32)  # a UNet already wired for makeup still gives ControlNets
    for path, original in files.values():
        loaded = load_makeup_controlnet(path, unet)
        for k, v in original.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(ModelError, match="ControlNet"):
        load_makeup_controlnet(_save_bad(tmp_path), unet)


def _save_bad(tmp_path: Path) -> Path:
    p = tmp_path / "bad.bin"
    torch.save({"resampler.norm1.weight": torch.zeros(2)}, p)
    return p


def test_clip_pixel_values() -> None:
    mean_colour = tuple(int(round(c * 255)) for c in CLIP_MEAN)
    pv = clip_pixel_values([Image.new("RGB", (300, 200), mean_colour), Image.new("RGB", (50, 80), (0, 0, 0))])
    assert pv.shape == (2, 3, 224, 224)
    assert pv[0].abs().max() < 0.01  # the CLIP mean colour normalises to ~0
    assert np.allclose(
        pv[1, :, 0, 0].numpy(),
        [-m / s for m, s in zip(CLIP_MEAN, (0.26862954, 0.26130258, 0.27577711), strict=True)],
        atol=1e-5,
    )
