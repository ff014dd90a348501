"""Optimisation projector: published schedule, noise regulariser, and inversion of the generator's own sample."""

from __future__ import annotations

import math

import pytest
import torch

from toonbooth.core.errors import InputError
from toonbooth.nets.stylegan2 import tiny_generator
from toonbooth.nets.stylegan2_project import (
    ProjectionConfig,
    image_loss,
    noise_normalize_,
    noise_regularize,
    project,
    projector_lr,
)
from toonbooth.nets.vgg import LPIPS, tiny_vgg16


@pytest.fixture(scope="module")
def gen_and_target():
    g = tiny_generator(32, seed=21)
    with torch.no_grad():
        z = torch.randn(1, 32, generator=torch.Generator().manual_seed(5))
        target, _ = g([z], randomize_noise=False)
    return g, target


def test_learning_rate_schedule():
    assert projector_lr(0.0, 0.1) == 0.0  # linear ramp-up from 0 over the first 5 %
    assert projector_lr(0.025, 0.1) == pytest.approx(0.05)
    assert projector_lr(0.05, 0.1) == pytest.approx(0.1)
    assert projector_lr(0.5, 0.1) == pytest.approx(0.1)
    assert projector_lr(0.875, 0.1) == pytest.approx(0.05)  # half-way down the last-25 % cosine
    assert projector_lr(1.0, 0.1) == pytest.approx(0.0)


def test_noise_regulariser_and_normalisation():
    assert noise_regularize([torch.ones(1, 1, 8, 8)]).item() == pytest.approx(2.0)  # two rolls, one octave
    assert noise_regularize([torch.ones(1, 1, 16, 16)]).item() == pytest.approx(4.0)  # two octaves
    stripes = torch.tensor([1.0, -1.0] * 4).repeat(8, 1).reshape(1, 1, 8, 8)
    # rolling across the stripes flips the sign (-1), along them keeps it (+1): both square to 1
    assert noise_regularize([stripes]).item() == pytest.approx(2.0)
    n = [torch.randn(1, 1, 8, 8) * 3 + 2]
    noise_normalize_(n)
    assert n[0].mean().item() == pytest.approx(0.0, abs=1e-6) and n[0].std().item() == pytest.approx(1.0)


@pytest.mark.parametrize("w_plus", [False, True])
def test_projection_lowers_the_pixel_loss(gen_and_target, w_plus):
    g, target = gen_and_target
    before = {k: v.clone() for k, v in g.state_dict().items()}
    calls = []
    result = project(
        g,
        target,
        ProjectionConfig(steps=40, n_mean_latent=256, w_plus=w_plus),
        on_step=lambda i, n, loss: calls.append((i, n, loss)),
        rng=torch.Generator().manual_seed(0),
    )
    assert [c[0] for c in calls] == list(range(1, 41)) and {c[1] for c in calls} == {40}
    assert [c[2] for c in calls] == result.losses
    assert result.latent.shape == ((1, g.n_latent, 32) if w_plus else (1, 32))
    assert len(result.noises) == g.num_layers
    first, last = result.terms[0]["mse"], image_loss(result.image, target).item()
    assert last < 0.5 * first
    assert all(torch.equal(v, before[k]) for k, v in g.state_dict().items())
    assert all(p.requires_grad for p in g.parameters())


def test_projection_with_lpips(gen_and_target):
    g, target = gen_and_target
    lp = LPIPS(tiny_vgg16())
    result = project(
        g,
        target,
        ProjectionConfig(steps=30, n_mean_latent=256, w_plus=True),
        perceptual=lp,
        rng=torch.Generator().manual_seed(1),
    )
    assert result.terms[0]["perceptual"] > 0
    assert image_loss(result.image, target, lp).item() < result.terms[0]["perceptual"]


def test_callback_can_cancel(gen_and_target):
    g, target = gen_and_target

    class CancelledError(Exception):
        pass

    def stop_at_3(step, total, loss):
        if step == 3:
            raise CancelledError

    flags = [p.requires_grad for p in g.parameters()]
    with pytest.raises(CancelledError):
        project(g, target, ProjectionConfig(steps=50, n_mean_latent=64), on_step=stop_at_3)
    assert [p.requires_grad for p in g.parameters()] == flags


def test_target_is_downsampled_to_and_checked(gen_and_target):
    g, target = gen_and_target
    small = torch.nn.functional.avg_pool2d(target, 2)
    result = project(g, small, ProjectionConfig(steps=2, n_mean_latent=16))
    assert result.image.shape[-1] == 32 and math.isfinite(result.losses[-1])
    with pytest.raises(InputError, match="target"):
        project(g, torch.zeros(1, 3, 24, 24), ProjectionConfig(steps=1))
    with pytest.raises(InputError, match="identity"):
        project(g, target, ProjectionConfig(steps=1, identity=1.0))


def test_identity_term_is_used(gen_and_target):
    from toonbooth.nets.psp import EncoderConfig, IdentityBackbone

    g, target = gen_and_target
    ident = IdentityBackbone(
        EncoderConfig(stage_units=(1, 1, 1, 1), stage_depths=(16, 20, 24, 32), input_size=32), embedding=16
    ).eval()
    result = project(g, target, ProjectionConfig(steps=3, n_mean_latent=64, identity=0.5), identity=ident)
    assert all(0.0 < t["identity"] <= 2.0 for t in result.terms)
    assert all(t["mse"] > 0 for t in result.terms)
