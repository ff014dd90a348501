"""Classic (no weights) talking animation driven by loudness and spectrum."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from toonbooth.core.errors import InputError
from toonbooth.vision.talk_classic import (
    ClassicTalkSettings,
    audio_track,
    blink_curve,
    blink_times,
    frame_count,
    iter_talk_frames,
    plan_talk,
    render_frame,
    talk_frames,
)

SR = 16000
QUIET = ClassicTalkSettings(blink=False, sway_degrees=0.0, sway_shift=0.0)


def toon_face(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A drawn toon face (skin oval, eyes, brows, nose, closed red lips) and its 68 landmarks."""
    s = size / 256.0
    img = np.full((size, size, 3), (120, 170, 220), np.uint8)
    cx, cy = 128 * s, 130 * s
    cv2.ellipse(
        img, (int(cx), int(cy)), (int(78 * s), int(98 * s)), 0, 0, 360, (250, 215, 185), -1, cv2.LINE_AA
    )
    lmk = np.zeros((68, 2))
    ang = np.linspace(-1, 1, 17) * np.pi * 0.45
    lmk[0:17] = np.stack([cx + 76 * s * np.sin(ang), cy - 10 * s + 87 * s * np.cos(ang)], 1)
    arch = 6 * np.sin(np.linspace(0, np.pi, 5))
    lmk[17:22] = np.stack([cx + np.linspace(-58, -18, 5) * s, cy + (-52 - arch) * s], 1)
    lmk[22:27] = np.stack([cx + np.linspace(18, 58, 5) * s, cy + (-52 - arch) * s], 1)
    lmk[27:31] = np.stack([np.full(4, cx), cy + np.linspace(-35, 5, 4) * s], 1)
    lmk[31:36] = np.stack([cx + np.linspace(-12, 12, 5) * s, cy + (12 + arch / 2) * s], 1)
    for base, ex in ((36, -36), (42, 36)):
        a = np.arange(6) * np.pi / 3
        lmk[base : base + 6] = np.stack([cx + (ex - 18 * np.cos(a)) * s, cy + (-30 - 11 * np.sin(a)) * s], 1)
        centre = (int(cx + ex * s), int(cy - 30 * s))
        cv2.ellipse(img, centre, (int(18 * s), int(11 * s)), 0, 0, 360, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(img, centre, int(7 * s), (40, 30, 30), -1, cv2.LINE_AA)
    for a, b in ((17, 22), (22, 27)):
        cv2.polylines(img, [np.round(lmk[a:b]).astype(np.int32)], False, (90, 60, 40), max(1, int(4 * s)))
    a = np.arange(12) * np.pi / 6
    lmk[48:60] = np.stack([cx - 26 * s * np.cos(a), cy + (45 - 9 * np.sin(a)) * s], 1)
    a = np.arange(8) * np.pi / 4
    lmk[60:68] = np.stack([cx - 20 * s * np.cos(a), cy + (45 - 1.0 * np.sin(a)) * s], 1)
    cv2.fillPoly(img, [np.round(lmk[48:60]).astype(np.int32)], (200, 70, 80))
    return img, lmk


@pytest.fixture(scope="module")
def face():
    return toon_face(256)


def tone_burst(silence: float = 0.4, loud: float = 0.8, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    n_sil, n_loud = round(silence * SR), round(loud * SR)
    t = np.arange(n_loud) / SR
    tone = amp * np.sin(2 * np.pi * freq * t)
    return np.concatenate([np.zeros(n_sil), tone, np.zeros(n_sil)]).astype(np.float32)


def mouth_box(lmk: np.ndarray, shape) -> tuple[slice, slice]:
    """Nose bottom to below the chin, jaw side to jaw side: everything the mouth warp may touch."""
    y0, y1 = int(lmk[33, 1]), min(shape[0], int(lmk[8, 1] + 40))
    x0, x1 = int(lmk[3, 0]) - 10, int(lmk[13, 0]) + 10
    return slice(y0, y1), slice(x0, x1)


def eye_box(lmk: np.ndarray) -> tuple[slice, slice]:
    return slice(int(lmk[19, 1]) - 2, int(lmk[41, 1]) + 3), slice(int(lmk[36, 0]) - 1, int(lmk[45, 0]) + 2)


def test_frame_count_is_ceil_of_duration_times_25():
    assert frame_count(16000 * 16 // 10, SR) == 40  # 1.6 s: 1.6 * 25 in floats is 40.000000000000004
    assert frame_count(1, SR) == 1
    assert frame_count(640, SR) == 1
    assert frame_count(641, SR) == 2
    assert frame_count(44100 * 3 + 1, 44100) == 76


def test_tone_burst_opens_the_mouth_exactly_during_the_loud_part(face):
    img, lmk = face
    audio = tone_burst()  # 0.4 s silence (frames 0-9), 0.8 s tone (10-29), 0.4 s silence (30-39)
    frames = talk_frames(img, lmk, audio, SR, QUIET)
    assert len(frames) == 40 == math.ceil(len(audio) / SR * 25 - 1e-9)
    plan = plan_talk(audio, SR, lmk, QUIET)
    assert np.all(plan.openness[:10] == 0) and np.all(plan.openness[30:] == 0)
    assert np.all(plan.openness[10:30] > 0.75)
    box = mouth_box(lmk, img.shape)
    for i, fr in enumerate(frames):
        assert fr.shape == img.shape and fr.dtype == np.uint8
        diff = np.abs(fr[box].astype(int) - img[box].astype(int))
        if i < 10 or i >= 30:
            assert diff.max() == 0, f"frame {i} (silence) changed the mouth"
            assert np.array_equal(fr, img)  # no blink, no sway: the still image
        else:
            assert diff.mean() > 2.0, f"frame {i} (loud) did not open the mouth"
    # the opened mouth is dark inside: the middle between the lips is painted with the mouth colour
    mid = frames[20]
    cx, cy = int(lmk[62, 0]), int(lmk[62, 1] + 0.45 * 0.45 * np.linalg.norm(lmk[54] - lmk[48]))
    assert np.abs(mid[cy, cx].astype(int) - np.array(QUIET.mouth_color)).max() < 40
    assert mid[cy, cx].sum() < img[int(lmk[62, 1]), cx].sum() - 100


def test_spectral_centroid_sets_the_mouth_shape(face):
    img, lmk = face
    low = audio_track(tone_burst(0.0, 0.4, freq=300.0), SR)
    high = audio_track(tone_burst(0.0, 0.4, freq=3400.0), SR)
    assert np.all(np.abs(low.centroid_hz[2:-2] - 300) < 40)
    assert np.all(np.abs(high.centroid_hz[2:-2] - 3400) < 80)
    assert np.all(low.width[2:-2] < -0.9) and np.all(high.width[2:-2] > 0.9)

    def lip_extent(frame: np.ndarray) -> int:
        row = frame[int(lmk[48, 1]) - 4 : int(lmk[48, 1]) + 5]
        red = (row[..., 0] > 150) & (row[..., 1] < 120)
        cols = np.where(red.any(axis=0))[0]
        return int(cols.max() - cols.min())

    wide = render_frame(img, lmk, openness=0.5, width=1.0, settings=QUIET)
    round_ = render_frame(img, lmk, openness=0.5, width=-1.0, settings=QUIET)
    assert lip_extent(wide) > lip_extent(img) > lip_extent(round_)


def test_blinks_at_the_seeded_times(face):
    img, lmk = face
    settings = ClassicTalkSettings(blink=True, sway_degrees=0.0, sway_shift=0.0, seed=7)
    duration = 9.0
    audio = np.zeros(int(duration * SR), np.float32)
    # the schedule by hand: first start U(1, 3), then gaps U(2, 6), same generator
    rng = np.random.default_rng(7)
    expected, t = [], float(rng.uniform(1.0, 3.0))
    while t + 0.15 <= duration:
        expected.append(t)
        t += float(rng.uniform(2.0, 6.0))
    assert blink_times(duration, 7) == pytest.approx(expected)
    assert len(expected) >= 2
    plan = plan_talk(audio, SR, lmk, settings)
    assert plan.blink_starts == pytest.approx(tuple(expected))
    eyes = eye_box(lmk)
    closed_frames = set()
    for t0 in expected:
        # the frame nearest the middle of each blink has the eyes almost shut
        mid = round((t0 + 0.075) * 25)
        assert plan.blink[mid] > 0.8
        closed_frames.add(mid)
    for i, fr in enumerate(iter_talk_frames(img, lmk, audio, SR, settings, plan)):
        if plan.blink[i] == 0:
            assert np.array_equal(fr, img), f"frame {i}: no blink expected"
        if i in closed_frames:
            # the white of the eye is covered by the lid
            white_before = (img[eyes] > 240).all(axis=-1).sum()
            white_now = (fr[eyes] > 240).all(axis=-1).sum()
            assert white_now < 0.3 * white_before, f"frame {i}: eyes not closed"
            assert np.array_equal(fr[mouth_box(lmk, img.shape)], img[mouth_box(lmk, img.shape)])
    blinking = np.flatnonzero(plan.blink > 0) / 25.0
    assert all(any(t0 < t < t0 + 0.15 for t0 in expected) for t in blinking)


def test_blink_curve_shape():
    curve = blink_curve(50, 25, [0.5], 0.15)
    assert np.flatnonzero(curve).tolist() == [13, 14, 15, 16]  # frames at 0.52 .. 0.64 s
    assert curve[14] == pytest.approx(math.sin(math.pi * 0.06 / 0.15))


def test_sway_moves_the_head_slightly(face):
    img, lmk = face
    settings = ClassicTalkSettings(blink=False, sway_degrees=1.5, sway_shift=0.01)
    plan = plan_talk(np.zeros(SR * 4, np.float32), SR, lmk, settings)
    assert np.abs(plan.angle_deg).max() <= 1.5 + 1e-9
    assert np.abs(plan.shift).max() <= 0.01 * np.ptp(lmk[:, 1]) + 1e-9
    assert np.ptp(plan.angle_deg) > 0.5  # it does move
    frames = list(iter_talk_frames(img, lmk, np.zeros(SR, np.float32), SR, settings))
    assert any(not np.array_equal(f, img) for f in frames)
    assert all(np.abs(f.astype(int) - img.astype(int)).mean() < 10 for f in frames)


def test_rgba_images_keep_their_alpha(face):
    img, lmk = face
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    out = render_frame(rgba, lmk, openness=0.8, width=0.2, blink=1.0, settings=QUIET)
    assert out.shape == rgba.shape
    assert np.all(out[..., 3] == 255)


def test_bad_inputs(face):
    img, lmk = face
    audio = tone_burst()
    with pytest.raises(InputError, match="image"):
        talk_frames(img.astype(np.float32), lmk, audio, SR)
    with pytest.raises(InputError, match="landmarks"):
        talk_frames(img, lmk[:5], audio, SR)
    with pytest.raises(InputError, match="landmarks"):
        talk_frames(img, lmk + 5000, audio, SR)
    with pytest.raises(InputError, match="mono"):
        talk_frames(img, lmk, np.zeros((2, 100), np.float32), SR)
    with pytest.raises(InputError, match="float"):
        talk_frames(img, lmk, np.zeros(100, np.int16), SR)
    with pytest.raises(InputError, match="finite"):
        talk_frames(img, lmk, np.full(100, np.nan, np.float32), SR)
    with pytest.raises(InputError, match="sample_rate"):
        talk_frames(img, lmk, audio, 0)
    with pytest.raises(InputError, match="blink_interval"):
        blink_times(5.0, 0, (3.0, 1.0))
