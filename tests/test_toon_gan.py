"""Toon GAN fine-tuning pieces: ADA augment + controller, FreezeD, the trainer, exact resume, data checks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from PIL import Image

from toonbooth.core.errors import InputError, ModelError
from toonbooth.nets.stylegan2 import tiny_discriminator, tiny_generator
from toonbooth.training.toon_gan import (
    AdaController,
    AugmentConfig,
    ToonGanConfig,
    ToonGanTrainer,
    ada_augment,
    check_toon_images,
    d_logistic_loss,
    freeze_d,
    g_nonsaturating_loss,
    images_to_tensors,
)

SIZE = 32
NONE = AugmentConfig(
    **{
        f.name: 0.0
        for f in dataclasses.fields(AugmentConfig)
        if f.name
        in (
            "xflip",
            "rotate90",
            "xint",
            "scale",
            "rotate",
            "aniso",
            "xfrac",
            "brightness",
            "contrast",
            "lumaflip",
            "hue",
            "saturation",
        )
    }
)


def only(**kw) -> AugmentConfig:
    return dataclasses.replace(NONE, **kw)


def _images(n: int = 6, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, SIZE, SIZE, generator=g) * 2 - 1 for _ in range(n)]


def _trainer(freeze: int = 0, seed_models: int = 0, **cfg) -> ToonGanTrainer:
    config = ToonGanConfig(
        **{
            "batch_size": 2,
            "d_reg_every": 2,
            "g_reg_every": 2,
            "ada_interval": 2,
            "ada_kimg": 0.01,
            "freeze_d": freeze,
            **cfg,
        }
    )
    return ToonGanTrainer(
        tiny_generator(SIZE, seed=seed_models),
        tiny_discriminator(SIZE, seed=seed_models + 1),
        _images(),
        config,
    )


# ---------------------------------------------------------------------------------------------------
# ADA augment
# ---------------------------------------------------------------------------------------------------


def test_p_zero_is_identity():
    x = torch.rand(4, 3, SIZE, SIZE) * 2 - 1
    assert ada_augment(x, 0.0, rng=torch.Generator().manual_seed(0)) is x


def test_xflip_only_gives_the_image_or_its_mirror():
    x = torch.rand(16, 3, SIZE, SIZE)
    out = ada_augment(x, 1.0, only(xflip=1.0), rng=torch.Generator().manual_seed(1))
    flipped = [bool(torch.allclose(o, xi.flip(-1), atol=1e-5)) for o, xi in zip(out, x, strict=True)]
    same = [bool(torch.allclose(o, xi, atol=1e-5)) for o, xi in zip(out, x, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert any(flipped) and any(same)


def test_rotate90_only_gives_a_quarter_turn():
    x = torch.rand(16, 3, SIZE, SIZE)
    out = ada_augment(x, 1.0, only(rotate90=1.0), rng=torch.Generator().manual_seed(2))
    seen = set()
    for o, xi in zip(out, x, strict=True):
        k = [k for k in range(4) if torch.allclose(o, torch.rot90(xi, k, dims=(1, 2)), atol=1e-4)]
        assert len(k) == 1
        seen.add(k[0])
    assert len(seen) > 1


def test_integer_translation_keeps_pixels_and_reflects_at_the_border():
    x = torch.rand(8, 3, SIZE, SIZE)
    out = ada_augment(x, 1.0, only(xint=1.0), rng=torch.Generator().manual_seed(3))
    for o, xi in zip(out, x, strict=True):
        # every output pixel is one of the input's pixels (integer shift + mirror padding)
        vals = set(torch.round(xi * 1e5).flatten().tolist())
        assert set(torch.round(o * 1e5).flatten().tolist()) <= vals


def test_colour_transforms_known_forms():
    x = torch.rand(8, 3, SIZE, SIZE) * 2 - 1
    out = ada_augment(x, 1.0, only(brightness=1.0), rng=torch.Generator().manual_seed(4))
    shift = (out - x).reshape(8, -1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5)  # one offset per image
    out = ada_augment(x, 1.0, only(lumaflip=1.0), rng=torch.Generator().manual_seed(5))
    mirrored = x - 2.0 / 3.0 * x.sum(1, keepdim=True)  # reflection about the (1,1,1) axis
    kinds = [
        bool(torch.allclose(o, m, atol=1e-5)) or bool(torch.allclose(o, xi, atol=1e-5))
        for o, m, xi in zip(out, mirrored, x, strict=True)
    ]
    assert all(kinds)
    grey = x.mean(1, keepdim=True).expand_as(x).contiguous()
    out = ada_augment(grey, 1.0, only(hue=1.0, saturation=1.0), rng=torch.Generator().manual_seed(6))
    assert torch.allclose(out, grey, atol=1e-5)  # hue and saturation leave greys alone


def test_full_pipeline_is_twice_differentiable():
    x = (torch.rand(4, 3, SIZE, SIZE) * 2 - 1).requires_grad_(True)
    d = tiny_discriminator(SIZE)
    pred = d(ada_augment(x, 0.8, rng=torch.Generator().manual_seed(7)))
    (grad,) = torch.autograd.grad(pred.sum(), x, create_graph=True)
    grad.pow(2).sum().backward()  # R1 needs d/dθ of ∂D/∂x through the augment (a double backward)
    weights = [p for n, p in d.named_parameters() if n.endswith("weight")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


# ---------------------------------------------------------------------------------------------------
# ADA controller, losses, FreezeD
# ---------------------------------------------------------------------------------------------------


def test_ada_controller_steps_by_the_published_amount():
    ada = AdaController(p=0.0, target=0.6, interval=4, kimg=0.5)
    for _ in range(3):
        assert ada.observe(torch.ones(8, 1)) is None and ada.p == 0.0
    assert ada.observe(torch.ones(8, 1)) == 1.0
    assert ada.p == pytest.approx(32 / 500)  # sign(1 - 0.6) * 4 batches * 8 images / (0.5 * 1000)
    for _ in range(8):
        ada.observe(-torch.ones(8, 1))
    assert ada.p == 0.0  # clamped at 0
    ada.p = 0.99
    for _ in range(4):
        ada.observe(torch.ones(8, 1))
    assert ada.p == 1.0  # and at 1


def test_losses_known_values():
    zero = torch.zeros(4, 1)
    assert d_logistic_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_nonsaturating_loss(zero).item() == pytest.approx(math.log(2))


def test_freeze_d_marks_the_first_blocks():
    d = tiny_discriminator(SIZE)
    trainable = freeze_d(d, 2)
    frozen = [p for block in list(d.convs)[:2] for p in block.parameters()]
    assert all(not p.requires_grad for p in frozen)
    assert {id(p) for p in trainable}.isdisjoint({id(p) for p in frozen})
    assert len(trainable) + len(frozen) == len(list(d.parameters()))
    with pytest.raises(InputError, match="freeze_d"):
        freeze_d(d, 99)


# ---------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------


def test_freezed_ada_steps_change_g_and_keep_frozen_d():
    t = _trainer(freeze=2, augment_p=0.5, ada=False)
    g0 = {k: v.clone() for k, v in t.G.state_dict().items()}
    d0 = {k: v.clone() for k, v in t.D.state_dict().items()}
    e0 = {k: v.clone() for k, v in t.g_ema.state_dict().items()}
    stats = [t.step() for _ in range(3)]
    assert stats[0].r1 is not None and stats[0].path is not None and stats[1].r1 is None
    assert all(s.augment_p == 0.5 for s in stats)
    d1 = t.D.state_dict()
    frozen = [k for k in d0 if k.startswith(("convs.0.", "convs.1."))]
    assert frozen and all(torch.equal(d1[k], d0[k]) for k in frozen)
    assert any(not torch.equal(d1[k], d0[k]) for k in d0 if k not in frozen and not k.endswith("kernel"))
    g1 = t.G.state_dict()
    assert any(not torch.equal(g1[k], g0[k]) for k in g0)
    assert any(not torch.equal(t.g_ema.state_dict()[k], e0[k]) for k in e0)
    in_optim = {id(p) for group in t.d_optim.param_groups for p in group["params"]}
    assert in_optim.isdisjoint({id(p) for b in list(t.D.convs)[:2] for p in b.parameters()})


def test_p_rises_when_d_is_sure_of_the_reals():
    """D's last bias is set to +50: D(real) > 0 for every image, so r_t = 1 > 0.6 and p must rise by
    (images seen) / (ada_kimg * 1000) at every ADA interval."""
    t = _trainer(augment_p=0.0)
    with torch.no_grad():
        t.D.final_linear[1].bias.fill_(50.0)
    s1 = t.step()
    assert s1.real_sign == 1.0 and s1.rt is None and s1.augment_p == 0.0
    s2 = t.step()
    assert s2.rt == 1.0
    assert s2.augment_p == pytest.approx(4 / 10)  # 2 steps x 2 images / (0.01 * 1000)
    t.step()
    s4 = t.step()
    assert s4.augment_p == pytest.approx(0.8)


def test_p_falls_when_d_rejects_the_reals():
    t = _trainer(augment_p=0.6)
    with torch.no_grad():
        t.D.final_linear[1].bias.fill_(-50.0)
    t.step()
    assert t.step().augment_p == pytest.approx(0.2)


def _all_state(t: ToonGanTrainer) -> dict[str, torch.Tensor]:
    tensors, _ = t.state_dict()
    return tensors


def test_resume_equals_uninterrupted(tmp_path):
    straight = _trainer(freeze=1, augment_p=0.3)
    for _ in range(4):
        straight.step()

    first = _trainer(freeze=1, augment_p=0.3)
    first.step()
    first.step()
    first.save(tmp_path / "ckpt")
    resumed = _trainer(freeze=1, augment_p=0.3, seed_models=7)  # different weights until loaded
    resumed.load(tmp_path / "ckpt")
    assert resumed.step_count == 2
    resumed.step()
    resumed.step()

    a, b = _all_state(straight), _all_state(resumed)
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.augment_p == resumed.augment_p
    assert straight.ada == resumed.ada


def test_load_refuses_other_runs(tmp_path):
    t = _trainer(freeze=1)
    t.save(tmp_path / "c")
    with pytest.raises(ModelError, match="froze"):
        _trainer(freeze=2).load(tmp_path / "c")
    with pytest.raises(ModelError, match="no toon-GAN"):
        t.load(tmp_path / "missing")


def test_trainer_refuses_wrong_image_sizes():
    with pytest.raises(InputError, match=r"images\[1\]"):
        ToonGanTrainer(
            tiny_generator(SIZE),
            tiny_discriminator(SIZE),
            [torch.zeros(3, SIZE, SIZE), torch.zeros(3, 16, 16)],
        )


# ---------------------------------------------------------------------------------------------------
# Data checks
# ---------------------------------------------------------------------------------------------------


def _pics(n: int) -> list[Image.Image]:
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(100 + i)
        arr = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        out.append(Image.fromarray(arr))
    return out


def test_data_checks_name_the_file():
    pics, names = _pics(4), [f"toon_{i}.png" for i in range(4)]
    check_toon_images(pics, names, size=SIZE, min_images=4)
    with pytest.raises(InputError, match="at least 5"):
        check_toon_images(pics, names, size=SIZE, min_images=5)
    dup = pics + [pics[1].copy()]
    with pytest.raises(InputError, match="toon_extra.png") as err:
        check_toon_images(dup, names + ["toon_extra.png"], size=SIZE, min_images=4)
    assert "toon_1.png" in str(err.value)
    with pytest.raises(InputError, match="toon_0.png.*too small"):
        check_toon_images(pics, names, size=128, min_images=4)


def test_images_to_tensors():
    (t,) = images_to_tensors(_pics(1), SIZE)
    assert t.shape == (3, SIZE, SIZE) and t.min() >= -1.0 and t.max() <= 1.0
    white = Image.new("RGB", (50, 30), (255, 255, 255))
    assert torch.equal(images_to_tensors([white], 16)[0], torch.ones(3, 16, 16))


def test_sample_and_export(tmp_path):
    from toonbooth.nets.stylegan2 import load_generator

    t = _trainer()
    t.step()
    state = t.rng.get_state().clone()
    a, b = t.sample(2, seed=3), t.sample(2, seed=3)
    assert a.shape == (2, 3, SIZE, SIZE) and torch.equal(a, b)
    assert torch.equal(t.rng.get_state(), state)  # sampling leaves the training RNG alone
    path = t.export(tmp_path / "toon.safetensors")
    gen, avg = load_generator(path)
    assert avg.shape == (32,)
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(gen([z], randomize_noise=False)[0], t.g_ema([z], randomize_noise=False)[0])
