"""Tests of runtime/encoders.py: MP4 (H.264 + AAC), animated GIF / WebP stickers, the video probe.

Frames and audio are made here with known content (flat colour blocks, tone bursts), so what comes
back out of each file can be checked against what went in.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from toonbooth.core.audio import decode_audio_bytes
from toonbooth.core.errors import InputError
from toonbooth.runtime.encoders import (
    CONTENT_TYPE_GIF,
    CONTENT_TYPE_MP4,
    CONTENT_TYPE_WAV,
    CONTENT_TYPE_WEBP,
    EXTENSIONS,
    MIN_FRAME_MS,
    encode_gif,
    encode_mp4,
    encode_wav,
    encode_webp_animated,
    h264_encoder_name,
    plan_frames,
    probe_video,
)

RED, BLUE, GREEN = (230, 20, 20), (20, 20, 230), (20, 200, 20)


def _frames(n: int, height: int = 50, width: int = 70) -> list[np.ndarray]:
    """Left half red, right half blue; a green bar 6 rows high moves down one row per frame (frames all
    differ; 4:2:0 chroma would smear a thinner one)."""
    out = []
    for i in range(n):
        f = np.zeros((height, width, 3), np.uint8)
        f[:, : width // 2] = RED
        f[:, width // 2 :] = BLUE
        row = i % (height - 6)
        f[row : row + 6, :] = GREEN
        out.append(f)
    return out


def _voice(rate: int, seconds: float) -> np.ndarray:
    """440 Hz + 1 kHz tones, loud in the middle third, quiet elsewhere: timing is visible."""
    t = np.arange(round(rate * seconds)) / rate
    envelope = np.where((t >= seconds / 3) & (t < 2 * seconds / 3), 1.0, 0.2)
    return (envelope * (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1000 * t))).astype(
        np.float32
    )


def _decode_frames(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data), format="mp4") as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def mp4_with_voice() -> tuple[bytes, np.ndarray]:
    voice = _voice(16000, 2.0)
    return encode_mp4(_frames(50), 25, (voice, 16000)), voice


# --------------------------------------------------------------------------------------------------
# MP4
# --------------------------------------------------------------------------------------------------


def test_this_build_has_libx264():
    assert h264_encoder_name() == "libx264"


def test_mp4_frames_size_codecs_and_faststart(mp4_with_voice):
    data, _ = mp4_with_voice
    probe = probe_video(data)
    assert probe.n_frames == 50 and probe.fps == 25.0  # 2 s x 25 fps
    assert (probe.width, probe.height) == (80, 64)  # 70x50 padded up to multiples of 16
    assert probe.codecs == ("h264", "aac")
    assert abs(probe.duration_s - 2.0) < 0.05
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")  # index first
    with av.open(io.BytesIO(data), format="mp4") as c:
        v = c.streams.video[0].codec_context
        assert v.pix_fmt == "yuv420p" and v.profile == "High"


def test_mp4_audio_track_equals_the_input(mp4_with_voice):
    data, voice = mp4_with_voice
    probe = probe_video(data, with_audio=True)
    assert probe.audio_rate == 16000  # an AAC rate: kept
    assert probe.audio_samples == voice.size  # priming and end padding trimmed by the edit list
    back = probe.audio
    assert back is not None
    corr = float(np.corrcoef(back, voice)[0, 1])
    rms = float(np.sqrt(np.mean((back - voice) ** 2)))
    assert corr > 0.99 and rms < 0.03, (corr, rms)
    # in sync: shifting by 5 ms either way fits worse than no shift
    shift = 80
    assert corr > float(np.corrcoef(back[shift:], voice[:-shift])[0, 1])
    assert corr > float(np.corrcoef(back[:-shift], voice[shift:])[0, 1])
    # the platform's own audio decoder refuses it where a voice is expected: it has a video track
    with pytest.raises(InputError, match="video"):
        decode_audio_bytes(data, field="voice", max_duration_s=30)


def test_mp4_picture_is_padded_with_edge_pixels_centred(mp4_with_voice):
    data, _ = mp4_with_voice
    frame = _decode_frames(data)[30].astype(int)  # green bar at rows 30-35 of the input, +7 rows of padding
    assert frame.shape == (64, 80, 3)
    top, left = (64 - 50) // 2, (80 - 70) // 2
    assert (
        np.abs(frame[top + 10, left + 10] - RED).max() < 20
        and np.abs(frame[top + 25, left + 10] - RED).max() < 20
    )
    assert np.abs(frame[top + 10, left + 60] - BLUE).max() < 20
    assert np.abs(frame[top + 33, left + 20] - GREEN).max() < 30
    assert np.abs(frame[2, 2] - RED).max() < 20 and np.abs(frame[2, 77] - BLUE).max() < 20  # edge copies


def test_mp4_crop_mode_and_iterator_input_and_rgba():
    def gen():
        for f in _frames(10, 40, 70):
            rgba = np.dstack([f, np.full(f.shape[:2], 255, np.uint8)])
            rgba[:4, :4, 3] = 0  # transparent corner -> white
            yield rgba

    data = encode_mp4(gen(), Fraction(30000, 1001), fit="crop")
    probe = probe_video(data)
    assert (probe.width, probe.height, probe.n_frames) == (64, 32, 10)
    assert abs(probe.fps - 30000 / 1001) < 1e-6 and probe.codecs == ("h264",) and probe.audio_rate == 0
    frame = _decode_frames(data)[5].astype(int)
    assert np.abs(frame[16, 10] - RED).max() < 20 and np.abs(frame[16, 55] - BLUE).max() < 20


def test_mp4_stereo_audio_at_a_rate_aac_lacks_is_resampled():
    rate = 22000  # not in the AAC sampling-frequency table
    left, right = _voice(rate, 1.0), -_voice(rate, 1.0) * 0.5
    data = encode_mp4(_frames(25, 32, 32), 25, (np.stack([left, right], axis=1), rate))
    probe = probe_video(data, with_audio=True)
    assert probe.audio_rate == 48000 and abs(probe.audio_samples - 48000) <= 1
    mean = (left + right) / 2  # what the probe's channel mean should give back, resampled
    t_back = np.arange(probe.audio_samples) / 48000
    expected = np.interp(t_back, np.arange(mean.size) / rate, mean)
    assert probe.audio is not None
    assert float(np.corrcoef(probe.audio, expected)[0, 1]) > 0.98
    with av.open(io.BytesIO(data), format="mp4") as c:
        assert c.streams.audio[0].codec_context.layout.nb_channels == 2


def test_mp4_bad_arguments():
    with pytest.raises(ValueError, match="at least one frame"):
        encode_mp4([], 25)
    with pytest.raises(ValueError, match="frame 1: size 32x32, the first was 64x48"):
        encode_mp4([np.zeros((48, 64, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)], 25)
    with pytest.raises(ValueError, match="frame 0: expected HxWx3 or HxWx4 uint8"):
        encode_mp4([np.zeros((48, 64), np.uint8)], 25)
    with pytest.raises(ValueError, match="fps"):
        encode_mp4(_frames(2), 0)
    with pytest.raises(ValueError, match="audio samples must be"):
        encode_mp4(_frames(2), 25, (np.zeros((10, 3), np.float32), 16000))


def test_probe_refuses_what_is_not_a_video():
    with pytest.raises(InputError, match="`video`: expected an MP4 or WebM video"):
        probe_video(encode_wav(np.zeros(10, np.float32), 8000))


# --------------------------------------------------------------------------------------------------
# Frame plan
# --------------------------------------------------------------------------------------------------


def test_plan_frames_even_subsampling_keeps_the_duration():
    indices, delays = plan_frames(100, 25, max_frames=10)
    assert indices == list(range(0, 100, 10)) and delays == [400] * 10
    indices, delays = plan_frames(30, 30, max_frames=None, unit_ms=10)  # 33.3 ms frames in 10 ms units
    assert indices == list(range(30)) and sum(delays) == 1000 and set(delays) == {30, 40}
    indices, delays = plan_frames(100, 100, max_frames=None)  # 10 ms frames: browsers would play 100 ms
    assert len(indices) == 1000 // MIN_FRAME_MS and delays == [MIN_FRAME_MS] * 50
    assert indices[:3] == [0, 2, 4]
    assert plan_frames(1, 25, max_frames=5) == ([0], [40])


# --------------------------------------------------------------------------------------------------
# Stickers
# --------------------------------------------------------------------------------------------------


def _sticker_frames(n: int = 30, size: int = 40) -> list[np.ndarray]:
    """RGBA: transparent background, an opaque red square moving right, a black dot (black must stay
    opaque: it is not the transparent colour)."""
    out = []
    for i in range(n):
        f = np.zeros((size, size, 4), np.uint8)
        f[10:30, i % (size - 10) : i % (size - 10) + 10] = (*RED, 255)
        f[2:4, 2:4] = (0, 0, 0, 255)
        out.append(f)
    return out


def _inner(mask: np.ndarray, margin: int = 2) -> np.ndarray:
    """Pixels of `mask` whose whole (2 margin + 1)^2 neighbourhood is in `mask`."""
    padded = np.pad(mask, margin, constant_values=False)
    out = np.ones_like(mask)
    h, w = mask.shape
    for dy in range(2 * margin + 1):
        for dx in range(2 * margin + 1):
            out &= padded[dy : dy + h, dx : dx + w]
    return out


def _read_all(data: bytes) -> tuple[Image.Image, list[np.ndarray], list[int]]:
    im = Image.open(io.BytesIO(data))
    frames, durations = [], []
    for k in range(im.n_frames):
        im.seek(k)
        frames.append(np.array(im.convert("RGBA")))
        durations.append(im.info["duration"])
    return im, frames, durations


@pytest.mark.parametrize("kind", ["gif", "webp"])
def test_sticker_cap_loop_duration_and_transparency(kind):
    src = _sticker_frames(30)
    encode = encode_gif if kind == "gif" else encode_webp_animated
    data = encode(src, 25, max_frames=10)
    im, frames, durations = _read_all(data)
    assert im.format == {"gif": "GIF", "webp": "WEBP"}[kind]
    assert len(frames) == 10 and sum(durations) == 1200  # 30 frames at 25 fps = 1.2 s, kept
    assert im.info["loop"] == 0
    for k, got in enumerate(frames):
        want = src[k * 3]
        np.testing.assert_array_equal(got[:, :, 3] >= 128, want[:, :, 3] >= 128)  # same shape, same place
        inner = _inner(want[:, :, 3] == 255)  # lossy WebP subsamples chroma: edges blur
        assert np.abs(got[inner][:, :3].astype(int) - want[inner][:, :3]).max() <= 12
        assert (got[2:4, 2:4, 3] == 255).all() and (got[2:4, 2:4, :3] <= 12).all()  # black stays opaque


def test_gif_loop_once_and_max_side():
    data = encode_gif(_frames(6, 100, 60), 10, loop=None, max_side=50)
    im = Image.open(io.BytesIO(data))
    assert im.size == (30, 50) and im.n_frames == 6 and "loop" not in im.info
    assert "transparency" not in im.info  # RGB frames: no transparent index


def test_webp_lossless_rgba_is_exact_and_loop_count():
    src = _sticker_frames(5)
    data = encode_webp_animated(src, 10, lossless=True, loop=3)
    im, frames, durations = _read_all(data)
    assert im.info["loop"] == 3 and durations == [100] * 5 and im.mode == "RGBA"
    for got, want in zip(frames, src, strict=True):
        visible = want[:, :, 3] > 0
        np.testing.assert_array_equal(got[:, :, 3], want[:, :, 3])
        np.testing.assert_array_equal(got[visible], want[visible])
    once = Image.open(io.BytesIO(encode_webp_animated(src, 10, loop=None, max_side=20)))
    assert once.info["loop"] == 1 and once.size == (20, 20)


def test_sticker_bad_arguments():
    with pytest.raises(ValueError, match="at least one frame"):
        encode_gif([], 25)
    with pytest.raises(ValueError, match="max_frames"):
        encode_webp_animated(_frames(3), 25, max_frames=0)
    with pytest.raises(ValueError, match="quality"):
        encode_webp_animated(_frames(3), 25, quality=101)


def test_content_types():
    assert EXTENSIONS[CONTENT_TYPE_MP4] == ".mp4" and EXTENSIONS[CONTENT_TYPE_GIF] == ".gif"
    assert EXTENSIONS[CONTENT_TYPE_WEBP] == ".webp" and EXTENSIONS[CONTENT_TYPE_WAV] == ".wav"
