"""JoyVASA motion generator: key layout, load-back, sampling arithmetic, cancel, keypoint driving."""

from __future__ import annotations

import argparse
import copy
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from toonbooth.core.errors import InputError, ModelError, UnsafeModelFormatError
from toonbooth.nets.joyvasa import (
    DEFAULT_CFG_SCALE,
    DEFAULT_SAMPLING_STEPS,
    DitTalkingHead,
    JoyVASAConfig,
    MotionSequence,
    MotionTemplate,
    build_hubert,
    build_joyvasa,
    convert_motion_template_pickle,
    driving_keypoints,
    generate_motion,
    hubert_window_features,
    load_joyvasa,
    looks_like_joyvasa,
    pad_audio_units,
    posterior_coefficients,
    read_joyvasa_checkpoint,
    respaced_timesteps,
    save_joyvasa,
    tiny_hubert_config,
    window_plan,
)
from toonbooth.nets.liveportrait import rotation_matrix, transform_keypoint

SR = 16000


@pytest.fixture(scope="module")
def hubert():
    return build_hubert(tiny_hubert_config(), seed=0)


@pytest.fixture(scope="module")
def model(hubert) -> DitTalkingHead:
    return build_joyvasa(JoyVASAConfig.tiny(), hubert, seed=0)


def speech_like(seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_full_size_denoiser_has_the_published_parameter_count():
    """DenoisingNetwork 8 layers, d 512, 8 heads, FFN 2048: 34.3 M (studios.md B7)."""
    with torch.device("meta"):
        full = DitTalkingHead(JoyVASAConfig())
    n = sum(p.numel() for p in full.denoising_net.parameters())
    assert n == 34_347_852
    assert full.denoising_net.alignment_mask.shape == (110, 110)
    assert full.diffusion_sched.betas.shape == (501,)


def test_public_key_pattern(model):
    keys = set(model.state_dict())
    assert {
        "audio_feature_map.weight",
        "start_audio_feat",
        "start_motion_feat",
        "null_audio_feat",
        "denoising_net.TE.pe",
        "denoising_net.PE.pe",
        "denoising_net.diff_step_map.0.weight",
        "denoising_net.diff_step_map.2.bias",
        "denoising_net.feature_proj.weight",
        "denoising_net.transformer.layers.1.multihead_attn.in_proj_weight",
        "denoising_net.transformer.layers.0.self_attn.out_proj.bias",
        "denoising_net.transformer.layers.0.norm3.weight",
        "denoising_net.transformer.layers.1.linear2.weight",
        "denoising_net.alignment_mask",
        "denoising_net.motion_dec.2.weight",
        "diffusion_sched.alpha_bars",
        "diffusion_sched.sigmas_inflex",
        "audio_encoder.feature_extractor.conv_layers.0.conv.weight",
        "audio_encoder.encoder.layers.1.attention.q_proj.weight",
    } <= keys
    assert looks_like_joyvasa(keys)
    assert not looks_like_joyvasa({"fc.weight"})
    mask = model.denoising_net.alignment_mask
    assert mask.shape == (24, 24) and not mask.diagonal().any() and mask.sum() == 24 * 23


def test_hubert_front_end_lengths(hubert):
    # a 100-frame window (64000 samples) gets 40 samples each side -> 200 conv frames at 50 per second
    assert pad_audio_units(torch.zeros(1, 64000)).shape == (1, 64080)
    assert pad_audio_units(torch.zeros(1, 12800)).shape == (1, 12880)
    feats = hubert_window_features(hubert, torch.randn(1, 12800) * 0.1, n_frames=20)
    assert feats.shape == (1, 20, 32)


@pytest.mark.parametrize("seconds,rate", [(0.04, SR), (0.5, SR), (1.3, SR), (1.0, 22050)])
def test_sampling_gives_ceil_duration_times_25_frames(model, seconds, rate):
    audio = speech_like(seconds, rate)
    seq = generate_motion(model, audio, rate, MotionTemplate.identity(), steps=2)
    expected = math.ceil(len(audio) * 25 / rate)
    assert seq.n_frames == expected
    assert seq.exp.shape == (expected, 21, 3)
    assert seq.scale.shape == (expected, 1) and seq.t.shape == (expected, 3)
    assert seq.pitch.shape == seq.yaw.shape == seq.roll.shape == (expected,)
    assert seq.extra.shape == (expected, 6)
    assert seq.rotation().shape == (expected, 3, 3)
    assert all(np.isfinite(a).all() for a in (seq.exp, seq.scale, seq.t, seq.pitch))
    assert seq.fps == 25


def test_window_plan_follows_the_reference_arithmetic():
    cfg = JoyVASAConfig()
    plan = window_plan(
        4 * SR, cfg
    )  # 4 s + (1280 + 640) padding -> int(65920 / 640) = 103 frames -> 2 windows
    assert plan.n_windows == 2
    assert plan.n_padding_frames == math.ceil((2 * 64000 - 65920) / 640) == 97
    assert plan.n_output_frames == 100
    assert window_plan(3 * SR, cfg).n_windows == 1


def test_designed_decoder_output_is_returned_denormalised(model):
    """With the last decoder layer zeroed and its bias c, the network predicts c for every input; guidance
    keeps c (uncond = cond) and the final DDPM step returns the predicted sample, so the output is c
    through the template: exp = c * std + mean, pose = c * (max - min) + min."""
    m = copy.deepcopy(model)
    c = torch.linspace(-1, 1, 76)
    with torch.no_grad():
        m.denoising_net.motion_dec[2].weight.zero_()
        m.denoising_net.motion_dec[2].bias.copy_(c)
    tpl = MotionTemplate.from_dict(
        {
            "mean_exp": np.full(63, 0.5),
            "std_exp": np.full(63, 2.0),
            "min_scale": [1.0],
            "max_scale": [3.0],
            "min_t": [0.0, -1.0, -2.0],
            "max_t": [1.0, 1.0, 2.0],
            "min_pitch": [-10.0],
            "max_pitch": [10.0],
            "min_yaw": [-20.0],
            "max_yaw": [20.0],
            "min_roll": [-5.0],
            "max_roll": [5.0],
        }
    )
    for steps in (20, 4):  # the full schedule and a respaced one
        seq = generate_motion(m, speech_like(1.3), SR, tpl, steps=steps, pose_ema_alpha=None)
        cn = c.numpy()
        np.testing.assert_allclose(
            seq.exp.reshape(seq.n_frames, 63), np.tile(cn[:63] * 2 + 0.5, (33, 1)), atol=1e-5
        )
        np.testing.assert_allclose(seq.scale[:, 0], cn[63] * 2 + 1, atol=1e-5)
        np.testing.assert_allclose(seq.t, np.tile(cn[64:67] * [1, 2, 4] + [0, -1, -2], (33, 1)), atol=1e-5)
        np.testing.assert_allclose(seq.pitch, cn[67] * 20 - 10, atol=1e-4)
        np.testing.assert_allclose(seq.yaw, cn[68] * 40 - 20, atol=1e-4)
        np.testing.assert_allclose(seq.roll, cn[69] * 10 - 5, atol=1e-4)
        np.testing.assert_allclose(seq.extra, np.tile(cn[70:], (33, 1)), atol=1e-5)
    smooth = generate_motion(m, speech_like(0.5), SR, tpl, steps=3, pose_ema_alpha=0.01)
    np.testing.assert_allclose(smooth.yaw, cn[68] * 40 - 20, atol=1e-4)  # EMA of a constant


def test_respacing_and_posterior_coefficients(model):
    assert respaced_timesteps(20, 100) == list(range(20, 0, -1))
    ts = respaced_timesteps(500, 5)
    assert ts[0] == 500 and ts[-1] == 1 and len(ts) == 5 and ts == sorted(ts, reverse=True)
    with pytest.raises(InputError, match="steps"):
        respaced_timesteps(500, 0)
    sched = model.diffusion_sched
    for t in (1, 7, 20):
        alpha, ab, ab_prev, sigma = posterior_coefficients(sched, t, t - 1)
        assert alpha == sched.alphas[t] and sigma == sched.sigmas_inflex[t]
        # the general (respaced) formula agrees with the per-step values
        a2 = ab / ab_prev
        s2 = torch.sqrt((1 - ab_prev) / (1 - ab) * (1 - a2))
        assert float(a2) == pytest.approx(float(alpha), rel=1e-5)
        assert float(s2) == pytest.approx(float(sigma), rel=1e-4, abs=1e-7)
    assert float(sched.alpha_bars[0]) == 1.0


def test_seed_and_defaults(model):
    audio = speech_like(0.6)
    a = generate_motion(model, audio, SR, MotionTemplate.identity(), steps=3, seed=1)
    b = generate_motion(model, audio, SR, MotionTemplate.identity(), steps=3, seed=1)
    c = generate_motion(model, audio, SR, MotionTemplate.identity(), steps=3, seed=2)
    np.testing.assert_array_equal(a.exp, b.exp)
    assert not np.allclose(a.exp, c.exp)
    assert DEFAULT_SAMPLING_STEPS == 100 and DEFAULT_CFG_SCALE == 2.8


def test_cancel_from_the_step_callback_stops_sampling(model):
    class StopSamplingError(Exception):
        pass

    calls: list[tuple[int, int]] = []
    passes = []
    hook = model.denoising_net.register_forward_hook(lambda *_: passes.append(1))

    def on_step(done: int, total: int) -> None:
        calls.append((done, total))
        if done == 3:
            raise StopSamplingError

    try:
        with pytest.raises(StopSamplingError):
            generate_motion(model, speech_like(1.3), SR, MotionTemplate.identity(), steps=5, on_step=on_step)
    finally:
        hook.remove()
    assert calls == [(1, 10), (2, 10), (3, 10)]  # 2 windows x 5 steps announced, stopped at the third
    assert len(passes) == 3


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_and_load_back_identical(model, tmp_path, suffix):
    path = tmp_path / f"motion_generator{suffix}"
    save_joyvasa(model, path)
    loaded = load_joyvasa(path)
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    audio = speech_like(0.7)
    s1 = generate_motion(model, audio, SR, MotionTemplate.identity(), steps=3)
    s2 = generate_motion(loaded, audio, SR, MotionTemplate.identity(), steps=3)
    np.testing.assert_array_equal(s1.exp, s2.exp)


def test_reference_checkpoint_layout_loads(model, hubert, tmp_path):
    """{'model', 'args': Namespace}, TE.pe dropped, HuBERT's positional conv in the old weight_g/weight_v
    naming; and a file without HuBERT weights needs one passed in."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    del sd["denoising_net.TE.pe"]
    p = "audio_encoder.encoder.pos_conv_embed.conv."
    sd[p + "weight_g"] = sd.pop(p + "parametrizations.weight.original0")
    sd[p + "weight_v"] = sd.pop(p + "parametrizations.weight.original1")
    args = argparse.Namespace(
        n_motions=20, n_prev_motions=4, n_heads=2, fps=25, pad_mode="zero", use_indicator=False
    )
    path = tmp_path / "ref.pt"
    torch.save({"model": sd, "args": args, "epoch": 3}, path)
    raw, read_args = read_joyvasa_checkpoint(path)
    assert read_args["n_motions"] == 20 and "denoising_net.TE.pe" not in raw
    loaded = load_joyvasa(path)
    assert loaded.config == model.config
    ref = model.state_dict()
    assert all(torch.equal(loaded.state_dict()[k], ref[k]) for k in ref)

    no_hubert = {k: v for k, v in model.state_dict().items() if not k.startswith("audio_encoder.")}
    path2 = tmp_path / "no_hubert.pt"
    torch.save({"model": no_hubert, "args": args}, path2)
    with pytest.raises(ModelError, match="HuBERT"):
        load_joyvasa(path2)
    assert load_joyvasa(path2, hubert=copy.deepcopy(hubert)).audio_encoder is not None


def test_unsafe_or_wrong_checkpoints(tmp_path, model):
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "args": Path("/")}, evil)  # a class outside the allow-list
    with pytest.raises(UnsafeModelFormatError):
        load_joyvasa(evil)
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "args": argparse.Namespace()}, wrong)
    with pytest.raises(ModelError, match="not a JoyVASA"):
        load_joyvasa(wrong)
    with pytest.raises(ModelError, match="format"):
        read_joyvasa_checkpoint(_touch(tmp_path / "x.onnx"))


def _touch(p: Path) -> Path:
    p.write_bytes(b"x")
    return p


def test_template_json_and_pickle_conversion(tmp_path):
    tpl = MotionTemplate.identity()
    tpl.to_json(tmp_path / "t.json")
    back = MotionTemplate.from_json(tmp_path / "t.json")
    assert back.to_dict() == tpl.to_dict()
    stats = {k: np.asarray(v, np.float32) for k, v in tpl.to_dict().items()}
    stats["mean_R"] = np.eye(3, dtype=np.float32).ravel()  # extra stats are ignored
    with open(tmp_path / "motion_template.pkl", "wb") as fh:
        pickle.dump(stats, fh)
    conv = convert_motion_template_pickle(tmp_path / "motion_template.pkl", tmp_path / "out.json")
    assert conv.to_dict() == tpl.to_dict()
    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump({"mean_exp": Path("/")}, fh)
    with pytest.raises(UnsafeModelFormatError):
        convert_motion_template_pickle(tmp_path / "evil.pkl", tmp_path / "evil.json")
    bad = tpl.to_dict()
    bad["min_t"] = [0.0]
    with pytest.raises(InputError, match="min_t"):
        MotionTemplate.from_dict(bad)


def _source(num_kp: int = 21) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "kp": torch.randn(1, num_kp, 3, generator=g) * 0.3,
        "exp": torch.randn(1, num_kp, 3, generator=g) * 0.01,
        "pitch": torch.tensor([[2.0]]),
        "yaw": torch.tensor([[-5.0]]),
        "roll": torch.tensor([[1.0]]),
        "scale": torch.tensor([[1.5]]),
        "t": torch.tensor([[0.01, -0.02, 0.3]]),
    }


def _motion(n: int, yaw: np.ndarray | None = None) -> MotionSequence:
    rng = np.random.default_rng(1)
    exp = np.repeat(rng.normal(0, 0.01, (1, 21, 3)), n, 0).astype(np.float32)
    return MotionSequence(
        exp=exp,
        scale=np.full((n, 1), 1.2, np.float32),
        t=np.zeros((n, 3), np.float32),
        pitch=np.zeros(n, np.float32),
        yaw=np.zeros(n, np.float32) if yaw is None else yaw.astype(np.float32),
        roll=np.zeros(n, np.float32),
    )


def test_driving_keypoints_known_by_construction():
    src = _source()
    x_s_ref = transform_keypoint(src)
    # a motion that does not change: every frame drives the source keypoints themselves
    x_s, x_d = driving_keypoints(src, _motion(5))
    torch.testing.assert_close(x_s, x_s_ref)
    torch.testing.assert_close(x_d, x_s_ref.expand(5, -1, -1), atol=1e-6, rtol=0)
    # a head turn of +20 degrees yaw at frame 1, plain relative recipe without lips
    yaw = np.array([0.0, 20.0])
    _, x_d = driving_keypoints(src, _motion(2, yaw), expression_friendly=False, lip_keypoints=())
    r_s = rotation_matrix(src["pitch"], src["yaw"], src["roll"])
    r_new = rotation_matrix(torch.zeros(1), torch.tensor([20.0]), torch.zeros(1)) @ r_s
    expected = 1.5 * (src["kp"] @ r_new + src["exp"])
    expected[..., :2] += src["t"][:, None, :2]
    torch.testing.assert_close(x_d[1:], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(x_d[0:1], x_s_ref, atol=1e-5, rtol=0)
    # still mode ignores the head motion; head_motion_scale 0.5 gives half the turn
    _, still = driving_keypoints(
        src, _motion(2, yaw), expression_friendly=False, lip_keypoints=(), still=True
    )
    torch.testing.assert_close(still[1], still[0])
    _, half = driving_keypoints(
        src, _motion(2, yaw), expression_friendly=False, lip_keypoints=(), head_motion_scale=0.5
    )
    r_half = rotation_matrix(torch.zeros(1), torch.tensor([10.0]), torch.zeros(1)) @ r_s
    exp_half = 1.5 * (src["kp"] @ r_half + src["exp"])
    exp_half[..., :2] += src["t"][:, None, :2]
    torch.testing.assert_close(half[1:], exp_half, atol=1e-5, rtol=0)


def test_bad_audio(model):
    tpl = MotionTemplate.identity()
    with pytest.raises(InputError, match="audio"):
        generate_motion(model, np.zeros((2, 100), np.float32), SR, tpl)
    with pytest.raises(InputError, match="audio"):
        generate_motion(model, np.zeros(0, np.float32), SR, tpl)
    with pytest.raises(InputError, match="finite"):
        generate_motion(model, np.full(100, np.inf, np.float32), SR, tpl)
    with pytest.raises(InputError, match="sample_rate"):
        generate_motion(model, np.zeros(100, np.float32), 0, tpl)


def test_hubert_config_read_off_hubert_base_weights():
    """chinese-hubert-base has the hubert-base layout: the config read off its key shapes rebuilds it."""
    from transformers import HubertConfig

    from toonbooth.nets.joyvasa import hubert_config_from_state_dict

    with torch.device("meta"):
        base = build_hubert(HubertConfig())
    cfg = hubert_config_from_state_dict(base.state_dict())
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (
        768,
        12,
        12,
        3072,
    )
    assert tuple(cfg.conv_dim) == (512,) * 7 and tuple(cfg.conv_kernel) == (10, 3, 3, 3, 3, 2, 2)
    assert tuple(cfg.conv_stride) == (5, 2, 2, 2, 2, 2, 2)
    assert (cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups) == (128, 16)
    assert cfg.feat_extract_norm == "group" and not cfg.conv_bias


def test_tiny_neural_path_end_to_end(model):
    """voice -> JoyVASA motion -> LivePortrait driving keypoints -> rendered frames, one per 40 ms."""
    from toonbooth.nets.liveportrait import LivePortraitConfig, build_liveportrait, image_to_tensor

    renderer = build_liveportrait(LivePortraitConfig.tiny(), seed=0)
    face = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    x = image_to_tensor(face, 64)
    info = renderer.get_kp_info(x)
    f_s = renderer.extract_feature_3d(x)
    audio = speech_like(0.9)
    motion = generate_motion(model, audio, SR, MotionTemplate.identity(), steps=2)
    x_s, x_d = driving_keypoints(info, motion, expression_scale=1.2, head_motion_scale=0.5)
    frames = list(renderer.animate(f_s, x_s, x_d, batch_size=8))
    assert len(frames) == math.ceil(0.9 * 25) == motion.n_frames
    assert all(f.shape == (128, 128, 3) for f in frames)
