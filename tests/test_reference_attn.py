"""Reference attention on tiny stock diffusers UNets: processors against plain attention, CFG rows,
the pose hook, and the key-set checks of the AnimateAnyone checkpoint files."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from toonbooth.core.errors import ModelError
from toonbooth.nets import reference_attn as ra
from toonbooth.nets.pose_guider import PoseGuiderConfig, build_pose_guider

HEAD_KEYS = {"conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"}


def _tiny_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8,
        cross_attention_dim=12,
        norm_num_groups=8,
    ).eval()


@pytest.fixture(scope="module")
def unet():
    return _tiny_unet()


def _inputs(batch: int = 1, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 4, 8, 8, generator=g),
        torch.tensor(500),
        torch.randn(batch, 1, 12, generator=g),
    )


def _run(unet, sample, t, cond):
    with torch.no_grad():
        return unet(sample, t, encoder_hidden_states=cond).sample


def _self_attention_names(unet) -> list[str]:
    return [n for n in unet.attn_processors if n.endswith("attn1.processor")]


def test_reader_with_empty_bank_is_plain_attention_bit_exact(unet):
    sample, t, cond = _inputs(2)
    plain = _run(unet, sample, t, cond)
    bank = ra.ReferenceBank()
    originals = ra.install_reference_reader(unet, bank)
    try:
        assert len(_self_attention_names(unet)) == 7  # 2 down + 1 mid + 2x2 up transformer blocks (SD1.5: 16)
        assert torch.equal(_run(unet, sample, t, cond), plain)
        bank.do_classifier_free_guidance = True
        assert torch.equal(_run(unet, sample, t, cond), plain)
    finally:
        ra.restore_processors(unet, originals)
    assert all(unet.attn_processors[n] is p for n, p in originals.items())


def test_writer_stores_norm1_output_and_changes_nothing(unet):
    sample, t, cond = _inputs(1)
    plain = _run(unet, sample, t, cond)
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in unet.named_modules():
        if name.endswith("transformer_blocks.0"):
            key = f"{name}.attn1.processor"
            hooks.append(
                module.norm1.register_forward_hook(lambda m, i, o, key=key: captured.__setitem__(key, o))
            )
    bank = ra.ReferenceBank()
    originals = ra.install_reference_writer(unet, bank)
    try:
        assert torch.equal(_run(unet, sample, t, cond), plain)
    finally:
        ra.restore_processors(unet, originals)
        for h in hooks:
            h.remove()
    assert set(bank.features) == set(_self_attention_names(unet)) == set(captured)
    for name, stored in bank.features.items():
        assert len(stored) == 1 and torch.equal(stored[0], captured[name])


def _manual_attention(attn, hidden, context):
    """softmax(QK^T / sqrt(d)) V with Q from `hidden`, K and V from `context`, then the output projection."""
    q, k, v = attn.to_q(hidden), attn.to_k(context), attn.to_v(context)
    b, heads = hidden.shape[0], attn.heads

    def split(x):
        return x.view(b, x.shape[1], heads, -1).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, hidden.shape[1], -1)
    return attn.to_out[0](out)


def test_reader_attends_over_own_plus_reference_tokens(unet):
    name = _self_attention_names(unet)[0]
    attn = unet.get_submodule(name.rsplit(".", 1)[0])
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 16, attn.to_q.in_features, generator=g)
    ref = torch.randn(2, 16, attn.to_q.in_features, generator=g)
    bank = ra.ReferenceBank()
    bank.store(name, ref)
    reader = ra.ReferenceReaderProcessor(bank, name, copy.copy(attn.processor))
    with torch.no_grad():
        got = reader(attn, hidden)
        want = _manual_attention(attn, hidden, torch.cat([hidden, ref], dim=1))
        assert torch.allclose(got, want, atol=1e-5)
        # with CFG the first (uncond) half is plain self-attention, the second half reads the bank
        bank.do_classifier_free_guidance = True
        got = reader(attn, hidden)
        assert torch.allclose(got[:1], _manual_attention(attn, hidden[:1], hidden[:1]), atol=1e-5)
        assert torch.allclose(got[1:], want[1:], atol=1e-5)


def test_self_reference_leaves_the_output_unchanged(unet):
    """Writing a UNet's own features and reading them back duplicates every key/value, which leaves
    softmax attention unchanged: the whole UNet output must match the plain one."""
    sample, t, cond = _inputs(1)
    plain = _run(unet, sample, t, cond)
    reference = copy.deepcopy(unet)
    bank = ra.ReferenceBank()
    w = ra.install_reference_writer(reference, bank)
    r = ra.install_reference_reader(unet, bank)
    try:
        _run(reference, sample, t, cond)
        read = _run(unet, sample, t, cond)
    finally:
        ra.restore_processors(reference, w)
        ra.restore_processors(unet, r)
    assert torch.allclose(read, plain, atol=1e-4)


def test_writer_to_reader_with_cfg_batches(unet):
    sample, t, cond = _inputs(2, seed=5)
    reference = _tiny_unet(seed=9)
    ref_latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    ref_cond = cond[1:].repeat(2, 1, 1)  # the reference image embedding on both rows
    bank = ra.ReferenceBank()
    w = ra.install_reference_writer(reference, bank)
    try:
        # the reference pass runs once at t = 0 with the CFG batch duplicated, as the original pipeline does
        _run(reference, ref_latents.repeat(2, 1, 1, 1), torch.tensor(0), ref_cond)
    finally:
        ra.restore_processors(reference, w)
    assert all(f[0].shape[0] == 2 for f in bank.features.values())
    plain = _run(unet, sample, t, cond)
    bank.do_classifier_free_guidance = True
    r = ra.install_reference_reader(unet, bank)
    try:
        guided = _run(unet, sample, t, cond)
        bank.do_classifier_free_guidance = False
        unguided = _run(unet, sample, t, cond)
        # a bank of batch 1 is broadcast over the denoising batch
        single = ra.ReferenceBank({k: [v[0][1:]] for k, v in bank.features.items()}, True)
        ra.restore_processors(unet, r)
        r = ra.install_reference_reader(unet, single)
        broadcast = _run(unet, sample, t, cond)
    finally:
        ra.restore_processors(unet, r)
    assert guided.shape == (2, 4, 8, 8)
    assert torch.allclose(guided[0], plain[0], atol=1e-5)  # uncond row: no reference
    assert not torch.allclose(guided[1], plain[1], atol=1e-3)  # cond row: reads the reference
    assert torch.allclose(guided[1], unguided[1], atol=1e-5)
    assert torch.allclose(broadcast, guided, atol=1e-5)  # both bank rows hold the same reference


def test_pose_hook_adds_features_after_conv_in(unet):
    sample, t, cond = _inputs(2, seed=7)
    plain = _run(unet, sample, t, cond)
    channels = unet.conv_in.out_channels
    delta = torch.linspace(-0.5, 0.5, channels)
    pose = ra.PoseFeatures(delta[None, :, None, None].expand(1, channels, 8, 8).clone())
    handle = ra.install_pose_hook(unet, pose)
    try:
        hooked = _run(unet, sample, t, cond)
        pose.features = None
        assert torch.equal(_run(unet, sample, t, cond), plain)
        pose.features = torch.zeros(1, channels + 1, 8, 8)
        with pytest.raises(ModelError, match="conv_in"):
            _run(unet, sample, t, cond)
    finally:
        handle.remove()
    # a constant per-channel feature map added after conv_in is the same as adding it to conv_in's bias
    shifted = copy.deepcopy(unet)
    with torch.no_grad():
        shifted.conv_in.bias += delta
    assert torch.allclose(hooked, _run(shifted, sample, t, cond), atol=1e-5)
    assert torch.equal(_run(unet, sample, t, cond), plain)


def test_pose_guider_output_fits_the_hook(unet):
    guider = build_pose_guider(
        PoseGuiderConfig(
            conditioning_embedding_channels=unet.conv_in.out_channels, block_out_channels=(4, 8, 8, 16)
        )
    )
    features = guider(torch.rand(1, 3, 64, 64))
    assert features.shape[1:] == (unet.conv_in.out_channels, 8, 8)


# ---------------------------------------------------------------------------------------------------
# checkpoint key sets
# ---------------------------------------------------------------------------------------------------


def test_reference_unet_file_lacks_exactly_the_output_head(unet, tmp_path):
    source = _tiny_unet(seed=3)
    state = {k: v for k, v in source.state_dict().items() if k not in HEAD_KEYS}
    path = tmp_path / "reference_unet.pth"
    torch.save(state, path)
    target = _tiny_unet(seed=4)
    head_before = {k: v.clone() for k, v in target.state_dict().items() if k in HEAD_KEYS}
    report = ra.load_reference_unet_weights(target, path)
    assert report.ok and report.missing == () and report.unexpected == ()
    assert set(report.expected_missing) == HEAD_KEYS
    # strict=False against the stock model reports exactly those four as missing
    result = _tiny_unet().load_state_dict(state, strict=False)
    assert set(result.missing_keys) == HEAD_KEYS and not result.unexpected_keys
    for k, v in target.state_dict().items():
        assert torch.equal(v, head_before[k] if k in HEAD_KEYS else source.state_dict()[k]), k


def test_reference_key_problems_are_reported(unet):
    keys = set(unet.state_dict()) - HEAD_KEYS
    bad = (keys - {"conv_in.weight"}) | {"something.else"}
    report = ra.check_reference_unet_keys(bad, unet)
    assert not report.ok
    assert report.missing == ("conv_in.weight",) and report.unexpected == ("something.else",)
    assert "1 missing" in report.describe()
    tensors = {k: v for k, v in unet.state_dict().items() if k in keys}
    tensors["conv_in.weight"] = torch.zeros(1)
    assert ra.check_reference_unet_keys(tensors, unet).mismatched == ("conv_in.weight",)


def test_denoising_unet_file_has_the_stock_keys(unet, tmp_path):
    source = _tiny_unet(seed=5)
    path = tmp_path / "denoising_unet.safetensors"
    from safetensors.torch import save_file

    save_file(source.state_dict(), str(path))
    target = _tiny_unet(seed=6)
    report = ra.load_denoising_unet_weights(target, path)
    assert report.ok and report.expected_missing == ()
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())
    # the reference layout (no output head) is not a denoising UNet
    report = ra.check_denoising_unet_keys(set(unet.state_dict()) - HEAD_KEYS, unet)
    assert set(report.missing) == HEAD_KEYS and not report.ok
    with pytest.raises(ModelError, match="missing"):
        torch.save({k: v for k, v in source.state_dict().items() if k not in HEAD_KEYS}, tmp_path / "d.pth")
        ra.load_denoising_unet_weights(target, tmp_path / "d.pth")


def test_motion_module_keys_are_refused(unet):
    keys = set(unet.state_dict()) | {
        "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight",
        "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.bias",
    }
    with pytest.raises(ModelError, match="motion_module.pth"):
        ra.check_denoising_unet_keys(keys, unet)
    with pytest.raises(ModelError, match="single-image"):
        ra.check_reference_unet_keys(keys, unet)


def test_no_self_attention_is_an_error():
    from diffusers import UNet2DConditionModel

    plain = UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type=None, cross_attention_dim=12,
    )  # fmt: skip
    with pytest.raises(ModelError, match="attn1"):
        ra.install_reference_reader(plain, ra.ReferenceBank())
