"""Own StyleGAN2 (rosinality layout): key pattern, upfirdn2d, latents, config inference, files."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from toonbooth.core.errors import InputError, ModelError, UnsafeModelFormatError
from toonbooth.nets.stylegan2 import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    config_from_state_dict,
    convert_rosinality_checkpoint,
    discriminator_config_from_state_dict,
    load_discriminator,
    load_generator,
    load_stylegan2_weights,
    looks_like_rosinality_discriminator,
    looks_like_rosinality_generator,
    make_kernel,
    save_stylegan2_safetensors,
    tiny_discriminator,
    tiny_generator,
    upfirdn2d,
)


@pytest.fixture(scope="module")
def g32() -> Generator:
    return tiny_generator(32, seed=3)


@pytest.fixture(scope="module")
def full_g_keys() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        g = Generator(GeneratorConfig(1024))
    return {k: tuple(v.shape) for k, v in g.state_dict().items()}


def _pattern(key: str) -> str:
    return re.sub(r"\d+", "N", key)


def test_config_f_key_layout(full_g_keys):
    """The 1024-px config-f generator has rosinality's 171 keys, shapes as documented."""
    assert len(full_g_keys) == 171
    assert full_g_keys["style.1.weight"] == (512, 512) and full_g_keys["style.8.bias"] == (512,)
    assert "style.0.weight" not in full_g_keys and "style.9.weight" not in full_g_keys
    assert full_g_keys["input.input"] == (1, 512, 4, 4)
    assert full_g_keys["conv1.conv.weight"] == (1, 512, 512, 3, 3)
    assert full_g_keys["conv1.conv.modulation.weight"] == (512, 512)
    assert full_g_keys["conv1.noise.weight"] == (1,)
    assert full_g_keys["conv1.activate.bias"] == (512,)
    assert full_g_keys["to_rgb1.conv.weight"] == (1, 3, 512, 1, 1)
    assert full_g_keys["to_rgb1.bias"] == (1, 3, 1, 1)
    assert full_g_keys["convs.0.conv.blur.kernel"] == (4, 4)
    assert "convs.1.conv.blur.kernel" not in full_g_keys
    assert full_g_keys["to_rgbs.7.upsample.kernel"] == (4, 4)
    assert full_g_keys["convs.15.conv.weight"] == (1, 32, 32, 3, 3)
    assert full_g_keys["noises.noise_0"] == (1, 1, 4, 4)
    assert full_g_keys["noises.noise_16"] == (1, 1, 1024, 1024)
    with torch.device("meta"):
        n_params = sum(p.numel() for p in Generator(GeneratorConfig(1024)).parameters())
    assert n_params == 30_370_060


def test_tiny_generator_has_the_same_key_pattern(g32, full_g_keys):
    tiny = set(g32.state_dict())
    assert {_pattern(k) for k in tiny} == {_pattern(k) for k in full_g_keys}
    # every tiny key exists in the full model (same names, fewer layers)
    with_8_mlp = tiny_generator(64, n_mlp=8)
    assert set(with_8_mlp.state_dict()) <= set(full_g_keys)


def test_modulation_bias_starts_at_one(g32):
    assert torch.equal(g32.conv1.conv.modulation.bias, torch.ones_like(g32.conv1.conv.modulation.bias))
    assert torch.equal(
        g32.to_rgbs[0].conv.modulation.bias, torch.ones(g32.to_rgbs[0].conv.modulation.bias.shape)
    )


def test_upfirdn2d_places_the_flipped_kernel():
    """A delta upsampled x2 with pad (2, 1) and an asymmetric kernel K gives out[y, x] = K[1 + y, 1 + x]."""
    k = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 0] = 1.0
    out = upfirdn2d(x, k, up=2, pad=(2, 1))
    assert out.shape == (1, 1, 3 * 2 + 3 - 4 + 1, 6)
    assert torch.equal(out[0, 0, :3, :3], k[1:4, 1:4])


def test_upsample_and_downsample_preserve_constants():
    x = torch.full((2, 3, 8, 8), 0.7)
    k = make_kernel([1, 3, 3, 1])
    up = upfirdn2d(x, k * 4, up=2, pad=(2, 1))
    assert up.shape == (2, 3, 16, 16)
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 0.7), atol=1e-6)
    down = upfirdn2d(x, k, down=2, pad=(1, 1))
    assert down.shape == (2, 3, 4, 4)
    assert torch.allclose(down[:, :, 1:-1, 1:-1], torch.full((2, 3, 2, 2), 0.7), atol=1e-6)


def test_forward_shapes_w_and_wplus(g32):
    z = torch.randn(2, 32)
    img, lat = g32([z], return_latents=True, randomize_noise=False)
    assert img.shape == (2, 3, 32, 32) and lat.shape == (2, g32.n_latent, 32)
    assert g32.n_latent == 2 * 5 - 2
    w = g32.get_latent(z)
    img_w, _ = g32([w], input_is_latent=True, randomize_noise=False)
    img_wp, _ = g32([w.unsqueeze(1).repeat(1, g32.n_latent, 1)], input_is_latent=True, randomize_noise=False)
    assert torch.equal(img, img_w)
    assert torch.allclose(img_w, img_wp, atol=1e-6)


def test_style_mixing_equals_the_hand_built_wplus(g32):
    w1, w2 = torch.randn(1, 32), torch.randn(1, 32)
    mixed, lat = g32(
        [w1, w2], inject_index=3, input_is_latent=True, randomize_noise=False, return_latents=True
    )
    assert torch.equal(lat[:, :3], w1.unsqueeze(1).repeat(1, 3, 1))
    assert torch.equal(lat[:, 3:], w2.unsqueeze(1).repeat(1, g32.n_latent - 3, 1))
    wplus = torch.cat([w1.unsqueeze(1).repeat(1, 3, 1), w2.unsqueeze(1).repeat(1, g32.n_latent - 3, 1)], 1)
    by_hand, _ = g32([wplus], input_is_latent=True, randomize_noise=False)
    assert torch.equal(mixed, by_hand)


def test_truncation_zero_gives_the_truncation_latent(g32):
    torch.manual_seed(0)
    mean = g32.mean_latent(256)
    assert mean.shape == (1, 32)
    z = torch.randn(3, 32)
    img, lat = g32([z], truncation=0.0, truncation_latent=mean, randomize_noise=False, return_latents=True)
    assert torch.allclose(lat, mean.unsqueeze(1).expand_as(lat))
    ref, _ = g32([mean.repeat(3, 1)], input_is_latent=True, randomize_noise=False)
    assert torch.allclose(img, ref, atol=1e-6)
    half, lat_half = g32(
        [z], truncation=0.5, truncation_latent=mean, randomize_noise=False, return_latents=True
    )
    w = g32.get_latent(z)
    assert torch.allclose(lat_half[:, 0], mean + 0.5 * (w - mean), atol=1e-6)
    with pytest.raises(InputError, match="truncation_latent"):
        g32([z], truncation=0.5)


def test_noise_sources():
    g32 = tiny_generator(32, seed=4)
    with torch.no_grad():  # noise strengths start at 0: make the noise visible
        for name, p in g32.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.5)
    z = torch.randn(1, 32)
    a, _ = g32([z], randomize_noise=False)
    b, _ = g32([z], noise=g32.fixed_noise())
    assert torch.equal(a, b)
    noise = g32.make_noise(1, generator=torch.Generator().manual_seed(1))
    c, _ = g32([z], noise=noise)
    d, _ = g32([z], noise=g32.make_noise(1, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(c, d) and not torch.equal(a, c)


def test_config_inference(g32, full_g_keys):
    assert config_from_state_dict(g32.state_dict()) == g32.config
    g64 = tiny_generator(64, style_dim=40, n_mlp=3, channels=(24, 16, 16, 8, 8))
    cfg = config_from_state_dict({f"g_ema.{k}": v for k, v in g64.state_dict().items()})
    assert (cfg.size, cfg.style_dim, cfg.n_mlp, cfg.channels) == (64, 40, 3, (24, 16, 16, 8, 8))
    with torch.device("meta"):
        full = Generator(GeneratorConfig(256, channel_multiplier=1))
        disc = Discriminator(DiscriminatorConfig(256, channel_multiplier=1))
    cfg = config_from_state_dict(full.state_dict())
    assert (cfg.size, cfg.channel_multiplier, cfg.channels, cfg.n_mlp) == (256, 1, None, 8)
    dcfg = discriminator_config_from_state_dict(disc.state_dict())
    assert (dcfg.size, dcfg.channel_multiplier, dcfg.channels) == (256, 1, None)
    d = tiny_discriminator(64, channels=(16, 16, 8, 8, 8))
    assert discriminator_config_from_state_dict(d.state_dict()).channels == (16, 16, 8, 8, 8)
    assert looks_like_rosinality_generator(set(full_g_keys))
    assert looks_like_rosinality_generator({f"g_ema.{k}" for k in full_g_keys})
    assert not looks_like_rosinality_generator({"model.1.weight"})
    assert looks_like_rosinality_discriminator(set(d.state_dict()))
    assert not looks_like_rosinality_discriminator(set(full_g_keys))
    with pytest.raises(ModelError, match="not a rosinality"):
        config_from_state_dict({"foo": torch.zeros(1)})


def test_discriminator_key_layout():
    with torch.device("meta"):
        d = Discriminator(DiscriminatorConfig(1024))
    keys = set(d.state_dict())
    assert {
        "convs.0.0.weight",
        "convs.0.1.bias",
        "convs.1.conv1.0.weight",
        "convs.1.conv1.1.bias",
        "convs.1.conv2.0.kernel",
        "convs.1.conv2.1.weight",
        "convs.1.conv2.2.bias",
        "convs.1.skip.0.kernel",
        "convs.1.skip.1.weight",
        "convs.8.skip.1.weight",
        "final_conv.0.weight",
        "final_conv.1.bias",
        "final_linear.0.weight",
        "final_linear.1.bias",
    } <= keys
    assert "convs.9.conv1.0.weight" not in keys
    assert round(sum(p.numel() for p in d.parameters()) / 1e6, 1) == 29.0


def test_discriminator_odd_batch_uses_a_dividing_group():
    d = tiny_discriminator(32)
    assert d(torch.randn(3, 3, 32, 32)).shape == (3, 1)
    assert d(torch.randn(6, 3, 32, 32)).shape == (6, 1)


def test_rosinality_pt_with_namespace_roundtrip(tmp_path, g32):
    d = tiny_discriminator(32, seed=5)
    latent_avg = torch.randn(32)
    ckpt = {
        "g": g32.state_dict(),
        "d": d.state_dict(),
        "g_ema": g32.state_dict(),
        "g_optim": torch.optim.Adam(g32.parameters()).state_dict(),
        "args": argparse.Namespace(size=32, batch=4, augment=True),
        "ada_aug_p": 0.25,
        "latent_avg": latent_avg,
    }
    path = tmp_path / "train.pt"
    torch.save(ckpt, path)
    gen, avg = load_generator(path)
    assert torch.equal(avg, latent_avg)
    z = torch.randn(2, 32)
    ref, _ = g32([z], randomize_noise=False)
    out, _ = gen([z], randomize_noise=False)
    assert torch.equal(ref, out)
    disc = load_discriminator(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(disc(x), d(x))
    w = load_stylegan2_weights(path)
    assert w.extra["args"] == {"size": 32, "batch": 4, "augment": True}
    assert w.extra["ada_aug_p"] == 0.25
    out = convert_rosinality_checkpoint(path, tmp_path / "train.safetensors")
    gen2, avg2 = load_generator(out)
    assert torch.equal(avg2, latent_avg)
    assert torch.equal(gen2([z], randomize_noise=False)[0], ref)
    assert torch.equal(load_discriminator(out)(x), d(x))


class _NotAllowed:
    def __init__(self):
        self.x = 1


def test_pt_with_other_objects_is_refused(tmp_path, g32):
    path = tmp_path / "bad.pt"
    torch.save({"g_ema": g32.state_dict(), "obj": _NotAllowed()}, path)
    with pytest.raises(UnsafeModelFormatError, match="weights_only"):
        load_generator(path)


def test_safetensors_roundtrip_prefixed_and_bare(tmp_path, g32):
    from safetensors.torch import save_file

    d = tiny_discriminator(32, seed=5)
    avg = torch.randn(1, 32)
    path = save_stylegan2_safetensors(tmp_path / "g.safetensors", g32, latent_avg=avg, d=d)
    gen, loaded_avg = load_generator(path)
    assert torch.equal(loaded_avg, avg[0])
    z = torch.randn(2, 32)
    assert torch.equal(gen([z], randomize_noise=False)[0], g32([z], randomize_noise=False)[0])
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(load_discriminator(path)(x), d(x))
    bare = {k: v.contiguous() for k, v in g32.state_dict().items()}
    bare["latent_avg"] = avg[0]
    save_file(bare, str(tmp_path / "bare.safetensors"))
    gen2, avg2 = load_generator(tmp_path / "bare.safetensors")
    assert torch.equal(avg2, avg[0])
    assert torch.equal(gen2([z], randomize_noise=False)[0], g32([z], randomize_noise=False)[0])


def test_64px_generator_saved_and_loaded_gives_identical_images(tmp_path):
    g = tiny_generator(64, seed=9)
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(32)}, tmp_path / "g64.pt")
    gen, _ = load_generator(tmp_path / "g64.pt")
    z = torch.randn(1, 32)
    assert torch.equal(gen([z], randomize_noise=False)[0], g([z], randomize_noise=False)[0])


def test_load_refuses_mismatched_weights(tmp_path, g32):
    sd = dict(g32.state_dict())
    sd.pop("to_rgbs.0.bias")
    torch.save({"g_ema": sd}, tmp_path / "broken.pt")
    with pytest.raises(ModelError, match="missing"):
        load_generator(tmp_path / "broken.pt", config=g32.config)
