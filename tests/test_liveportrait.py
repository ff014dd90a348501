"""LivePortrait renderer: public key layout, load-back, keypoint maths and the 64 px render path."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from toonbooth.core.errors import InputError, ModelError, ModelNotFoundError, UnsafeModelFormatError
from toonbooth.nets.liveportrait import (
    AppearanceConfig,
    AppearanceFeatureExtractor,
    LivePortrait,
    LivePortraitConfig,
    LivePortraitFiles,
    MotionConfig,
    SpadeConfig,
    WarpingConfig,
    build_liveportrait,
    coordinate_grid,
    crop_matrix_from_landmarks68,
    headpose_bins_to_degrees,
    image_to_tensor,
    liveportrait_part,
    load_liveportrait,
    load_motion_extractor,
    load_stitching_retargeting,
    paste_back,
    read_state_dict,
    rotation_matrix,
    save_liveportrait,
    tensor_to_image,
    transform_keypoint,
)


@pytest.fixture(scope="module")
def tiny() -> LivePortrait:
    return build_liveportrait(LivePortraitConfig.tiny(), seed=0)


@pytest.fixture(scope="module")
def face64() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.full((64, 64, 3), 200, np.uint8)
    img[20:44, 16:48] = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return img


def test_full_size_parameter_counts_match_the_published_model():
    """The public networks have F 0.84 M, M 28.12 M, W 45.53 M, G 55.37 M, S 0.23 M = 130.1 M (studios.md B7,
    LivePortrait speed.md); built on the meta device (no memory)."""
    with torch.device("meta"):
        full = LivePortrait()
    count = {
        name: sum(p.numel() for p in getattr(full, name).parameters())
        for name in (
            "appearance_feature_extractor",
            "motion_extractor",
            "warping_module",
            "spade_generator",
            "stitching_retargeting_module",
        )
    }
    assert count == {
        "appearance_feature_extractor": 836_224,
        "motion_extractor": 28_118_728,
        "warping_module": 45_529_829,
        "spade_generator": 55_365_388,
        "stitching_retargeting_module": 227_263,
    }


def test_tiny_networks_have_the_public_key_pattern(tiny):
    f = set(tiny.appearance_feature_extractor.state_dict())
    m = set(tiny.motion_extractor.state_dict())
    w = set(tiny.warping_module.state_dict())
    g = set(tiny.spade_generator.state_dict())
    assert {"first.conv.weight", "first.norm.running_var", "down_blocks.1.conv.weight", "second.weight"} <= f
    assert "resblocks_3d.3dr0.norm2.num_batches_tracked" in f
    assert {
        "detector.downsample_layers.0.1.weight",
        "detector.downsample_layers.3.0.bias",
        "detector.stages.2.0.grn.gamma",
        "detector.stages.3.0.pwconv2.weight",
        "detector.norm.weight",
        "detector.fc_roll.bias",
        "detector.fc_exp.weight",
    } <= m
    assert {
        "dense_motion_network.hourglass.encoder.down_blocks.1.norm.running_mean",
        "dense_motion_network.hourglass.decoder.up_blocks.0.conv.weight",
        "dense_motion_network.hourglass.decoder.conv.weight",
        "dense_motion_network.compress.weight",
        "dense_motion_network.occlusion.weight",
        "third.conv.weight",
        "fourth.bias",
    } <= w
    assert {
        "G_middle_5.conv_1.weight_orig",
        "G_middle_0.conv_0.weight_u",
        "G_middle_0.conv_0.weight_v",
        "up_0.conv_s.weight_orig",
        "up_1.norm_s.mlp_shared.0.weight",
        "up_1.norm_0.mlp_gamma.bias",
        "conv_img.0.weight",
    } <= g
    assert "up_0.conv_s.bias" not in g  # the learned shortcut conv has no bias
    assert liveportrait_part(f) == "appearance_feature_extractor"
    assert liveportrait_part(m) == "motion_extractor"
    assert liveportrait_part(w) == "warping_module"
    assert liveportrait_part(g) == "spade_generator"
    assert liveportrait_part({"foo.weight"}) is None


@pytest.mark.parametrize("suffix,layout", [(".pth", "public"), (".safetensors", "flat")])
def test_save_and_load_back_identical(tiny, tmp_path, face64, suffix, layout):
    files = (
        LivePortraitFiles.public_layout(tmp_path, suffix)
        if layout == "public"
        else LivePortraitFiles.flat_layout(tmp_path, suffix)
    )
    save_liveportrait(tiny, files)
    if suffix == ".pth":  # the released retargeting file: a dict of three DDP-prefixed state dicts
        raw = torch.load(files.stitching_retargeting_module, weights_only=True)
        assert set(raw) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}
        assert "module.mlp.0.weight" in raw["retarget_eye"]
    else:
        assert "retarget_shoulder_module.mlp.0.weight" in read_state_dict(files.stitching_retargeting_module)
    loaded = load_liveportrait(files)
    assert loaded.config == tiny.config  # every config read back off the weights
    a, b = tiny.state_dict(), loaded.state_dict()
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = image_to_tensor(face64, 64)
    fa, fb = tiny.extract_feature_3d(x), loaded.extract_feature_3d(x)
    ka, kb = transform_keypoint(tiny.get_kp_info(x)), transform_keypoint(loaded.get_kp_info(x))
    torch.testing.assert_close(fa, fb, rtol=0, atol=0)
    torch.testing.assert_close(ka, kb, rtol=0, atol=0)
    oa = tiny.warp_decode(fa, ka, tiny.stitch(ka, ka * 1.05))["out"]
    ob = loaded.warp_decode(fb, kb, loaded.stitch(kb, kb * 1.05))["out"]
    torch.testing.assert_close(oa, ob, rtol=0, atol=0)


def test_motion_to_keypoints_to_warp_to_decode_on_a_64px_face(tiny, face64):
    x = image_to_tensor(face64, 64)
    assert x.shape == (1, 3, 64, 64)
    f_s = tiny.extract_feature_3d(x)
    assert f_s.shape == (1, 4, 8, 16, 16)  # reshape_channel x reshape_depth x H/4 x W/4
    info = tiny.get_kp_info(x)
    assert info["kp"].shape == info["exp"].shape == (1, 21, 3)
    assert info["pitch"].shape == info["scale"].shape == (1, 1) and info["t"].shape == (1, 3)
    assert all(-97.5 <= float(info[k]) <= 97.5 for k in ("pitch", "yaw", "roll"))
    x_s = transform_keypoint(info)
    driving = dict(info, exp=info["exp"] + 0.02, yaw=info["yaw"] + 10.0)
    x_d = tiny.stitch(x_s, transform_keypoint(driving))
    out = tiny.warp_decode(f_s, x_s, x_d)
    assert out["out"].shape == (1, 3, 128, 128)  # decoder x4, PixelShuffle x2
    assert out["occlusion_map"].shape == (1, 1, 16, 16)
    assert out["deformation"].shape == (1, 8, 16, 16, 3)
    assert float(out["out"].min()) >= 0 and float(out["out"].max()) <= 1
    img = tensor_to_image(out["out"])
    assert img.shape == (1, 128, 128, 3) and img.dtype == np.uint8


def test_same_keypoints_give_the_identity_flow(tiny):
    """Every sparse motion is the identity grid when driving == source, and the masks sum to one."""
    f = torch.randn(1, 4, 8, 16, 16)
    kp = torch.rand(1, 21, 3) * 2 - 1
    dense = tiny.warping_module.dense_motion_network(f, kp_driving=kp, kp_source=kp)
    torch.testing.assert_close(dense["deformation"][0], coordinate_grid(8, 16, 16, kp), atol=1e-6, rtol=0)
    torch.testing.assert_close(dense["mask"].sum(1), torch.ones(1, 8, 16, 16), atol=1e-5, rtol=0)


def test_pose_bins_to_degrees_and_rotation():
    logits = torch.full((2, 66), -1e4)
    logits[0, 32] = logits[0, 33] = 0.0  # expectation 32.5 -> 0 degrees
    logits[1, 40] = 0.0  # one-hot bin 40 -> 40*3 - 97.5 = 22.5
    torch.testing.assert_close(headpose_bins_to_degrees(logits), torch.tensor([0.0, 22.5]))
    uniform = headpose_bins_to_degrees(torch.zeros(1, 66))
    assert float(uniform) == pytest.approx(32.5 * 3 - 97.5)
    r = rotation_matrix(torch.tensor([0.0]), torch.tensor([90.0]), torch.tensor([0.0]))
    torch.testing.assert_close(
        torch.tensor([[1.0, 0.0, 0.0]]) @ r[0], torch.tensor([[0.0, 0.0, -1.0]]), atol=1e-6, rtol=0
    )
    r = rotation_matrix(torch.tensor([10.0, -20.0]), torch.tensor([30.0, 5.0]), torch.tensor([-40.0, 15.0]))
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6, rtol=0)
    roll = rotation_matrix(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([90.0]))[0]
    # roll 90: x @ R with R = Rz^T maps (1, 0, 0) to (0, 1, 0)
    torch.testing.assert_close(
        torch.tensor([1.0, 0.0, 0.0]) @ roll, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0
    )


def test_transform_keypoint_known_by_construction():
    zero_pose = torch.full((1, 66), -1e4)
    zero_pose[0, 32] = zero_pose[0, 33] = 0.0
    kp = torch.arange(63, dtype=torch.float32).reshape(1, 63) / 63
    exp = torch.full((1, 63), 0.1)
    info = {
        "kp": kp,
        "exp": exp,
        "pitch": zero_pose,
        "yaw": zero_pose,
        "roll": zero_pose,
        "scale": torch.tensor([[2.0]]),
        "t": torch.tensor([[0.5, -0.25, 7.0]]),
    }
    out = transform_keypoint(info)
    expected = 2.0 * (kp.reshape(1, 21, 3) + 0.1)
    expected[..., 0] += 0.5
    expected[..., 1] -= 0.25  # t_z dropped
    torch.testing.assert_close(out, expected)
    # degrees are accepted as well as bins
    info_deg = dict(info, pitch=torch.zeros(1, 1), yaw=torch.zeros(1, 1), roll=torch.zeros(1, 1))
    torch.testing.assert_close(transform_keypoint(info_deg), expected)


def test_stitching_semantics_with_designed_weights(tiny):
    s = tiny.stitching_retargeting_module
    last = s.stitching.mlp[-1]
    saved = {k: v.clone() for k, v in last.state_dict().items()}
    try:
        with torch.no_grad():
            last.weight.zero_()
            bias = torch.zeros(65)
            bias[:63] = 0.01
            bias[63], bias[64] = 0.5, -0.5
            last.bias.copy_(bias)
        kp_s, kp_d = torch.zeros(1, 21, 3), torch.ones(1, 21, 3)
        out = tiny.stitch(kp_s, kp_d)
        torch.testing.assert_close(out[..., 0], torch.full((1, 21), 1.51))
        torch.testing.assert_close(out[..., 1], torch.full((1, 21), 0.51))
        torch.testing.assert_close(out[..., 2], torch.full((1, 21), 1.01))
    finally:
        last.load_state_dict(saved)
    assert s.retarget_lip(torch.zeros(2, 21, 3), torch.zeros(2, 2)).shape == (2, 21, 3)
    assert s.retarget_eye(torch.zeros(2, 21, 3), torch.zeros(2, 3)).shape == (2, 21, 3)


def _face68(cx: float, cy: float, size: float, angle_deg: float = 0.0) -> np.ndarray:
    """A rough frontal 68-point layout (dlib order), rotated by `angle_deg` around (cx, cy)."""
    pts = np.zeros((68, 2))
    t = np.linspace(-1, 1, 17)
    pts[0:17] = np.stack([t * 0.5, -0.1 + 0.6 * np.sqrt(1 - t**2)], 1)
    pts[17:22] = np.stack([np.linspace(-0.4, -0.1, 5), np.full(5, -0.25)], 1)
    pts[22:27] = np.stack([np.linspace(0.1, 0.4, 5), np.full(5, -0.25)], 1)
    pts[27:31] = np.stack([np.zeros(4), np.linspace(-0.15, 0.08, 4)], 1)
    pts[31:36] = np.stack([np.linspace(-0.08, 0.08, 5), np.full(5, 0.12)], 1)
    for base, ex in ((36, -0.22), (42, 0.22)):
        a = np.linspace(0, 2 * np.pi, 7)[:-1]
        pts[base : base + 6] = np.stack([ex - 0.08 * np.cos(a), -0.12 - 0.03 * np.sin(a)], 1)
    a = np.linspace(0, 2 * np.pi, 13)[:-1]
    pts[48:60] = np.stack([-0.15 * np.cos(a), 0.3 - 0.05 * np.sin(a)], 1)
    a = np.linspace(0, 2 * np.pi, 9)[:-1]
    pts[60:68] = np.stack([-0.1 * np.cos(a), 0.3 - 0.01 * np.sin(a)], 1)
    th = math.radians(angle_deg)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    return (pts * size) @ rot.T + [cx, cy]


def test_crop_matrix_removes_roll_and_centres_the_face():
    for angle in (0.0, 25.0, -40.0):
        lmk = _face68(300, 260, 200, angle)
        m = crop_matrix_from_landmarks68(lmk, dsize=512)
        crop = lmk @ m[:, :2].T + m[:, 2]
        eye = crop[[36, 39, 42, 45]].mean(0)
        mouth = crop[[48, 54]].mean(0)
        assert abs(eye[0] - mouth[0]) < 1e-6  # eye -> mouth axis vertical in the crop
        assert mouth[1] > eye[1]
        # the face spans 1 / 2.3 of the crop, centred horizontally
        assert crop[:, 0].mean() == pytest.approx(256, abs=40)
        assert np.ptp(crop[:, 0]) <= 512 / 2.3 + 1e-6
    with pytest.raises(InputError, match="68"):
        crop_matrix_from_landmarks68(np.zeros((5, 2)))


def test_loader_errors(tmp_path, tiny):
    with pytest.raises(ModelNotFoundError):
        load_motion_extractor(tmp_path / "missing.pth")
    wrong = tmp_path / "motion_extractor.pth"
    torch.save(tiny.spade_generator.state_dict(), wrong)
    with pytest.raises(ModelError, match="not a LivePortrait motion extractor"):
        load_motion_extractor(wrong)
    sd = tiny.motion_extractor.state_dict()
    sd["detector.fc_t.weight"] = torch.zeros(4, 32)
    torch.save(sd, wrong)
    with pytest.raises(ModelError, match="fc_t"):
        load_motion_extractor(wrong, config=MotionConfig.tiny())
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"x": Path("/tmp")}, fh, protocol=2)  # a Python object: needs full unpickling
    with pytest.raises(UnsafeModelFormatError):
        load_motion_extractor(evil)
    partial = tmp_path / "stitch.pth"
    torch.save(
        {"retarget_shoulder": tiny.stitching_retargeting_module.public_state_dict()["retarget_shoulder"]},
        partial,
    )
    with pytest.raises(ModelError, match="retarget_eye"):
        load_stitching_retargeting(partial)
    with pytest.raises(ModelError, match="unknown"):
        read_state_dict(_touch(tmp_path / "w.onnx"))


def _touch(p):
    p.write_bytes(b"x")
    return p


def test_config_checks_and_bad_images():
    with pytest.raises(InputError, match="reshape_channel"):
        AppearanceFeatureExtractor(AppearanceConfig(reshape_depth=3))
    bad = LivePortraitConfig(
        appearance=AppearanceConfig.tiny(),
        motion=MotionConfig.tiny(),
        warping=WarpingConfig.tiny(),
        spade=SpadeConfig(block_expansion=4, max_features=16, out_channels=8, spade_hidden=8),
        stitching=None,
    )
    with pytest.raises(InputError, match="decoder input channels"):
        LivePortrait(bad)
    with pytest.raises(InputError, match="image"):
        image_to_tensor(np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match="float"):
        image_to_tensor(np.zeros((8, 8, 3), np.float32))


def test_animate_yields_one_frame_per_driving_pose(tiny, face64):
    x = image_to_tensor(face64, 64)
    f_s = tiny.extract_feature_3d(x)
    x_s = transform_keypoint(tiny.get_kp_info(x))
    x_d = x_s + torch.linspace(0, 0.05, 5)[:, None, None]
    frames = list(tiny.animate(f_s, x_s, x_d, batch_size=2))
    assert len(frames) == 5 and all(f.shape == (128, 128, 3) and f.dtype == np.uint8 for f in frames)
    # batching does not change the result
    single = list(tiny.animate(f_s, x_s, x_d, batch_size=1))
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(frames, single, strict=True))


def test_paste_back_inverts_the_crop():
    import cv2

    yy, xx = np.mgrid[0:300, 0:400]
    img = np.stack([xx * 255 // 400, yy * 255 // 300, (xx + yy) * 255 // 700], -1).astype(np.uint8)
    lmk = _face68(200, 150, 80, 15.0)
    m = crop_matrix_from_landmarks68(lmk, dsize=256)
    crop = cv2.warpAffine(img, m, (256, 256), flags=cv2.INTER_LINEAR)
    out = paste_back(crop, m, img)
    assert out.shape == img.shape
    face = (slice(120, 180), slice(170, 230))  # well inside the crop: the crop comes back unchanged
    assert np.abs(out[face].astype(int) - img[face].astype(int)).max() <= 2
    assert np.array_equal(out[:5, :5], img[:5, :5])  # outside the crop nothing changes
    rgba = np.dstack([img, np.full(img.shape[:2], 7, np.uint8)])
    assert np.all(paste_back(crop, m, rgba)[..., 3] == 7)
