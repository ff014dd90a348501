"""Tests of core/audio.py: safe decoding of user voice recordings.

Every file is made here: a known signal (a 440 Hz tone in bursts) encoded with PyAV itself to each
accepted container, or headers written by hand (WAV via `wave`, an Ogg page with its CRC, ID3 tags).
Every bad-input class has its own test and the error must name the field.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import toonbooth.core.audio as audio_mod
import toonbooth.core.audio_containers as containers
from toonbooth.core.audio import (
    DURATION_GRACE_S,
    decode_audio_bytes,
    encode_wav,
    load_audio,
    resample,
    sniff_audio,
)
from toonbooth.core.errors import InputError, InputTooLargeError

FIELD = "voice"
TONE_HZ = 440.0
SECONDS = 2.0


def _signal(rate: int, seconds: float = SECONDS, freq: float = TONE_HZ) -> np.ndarray:
    """0.4 * sin(2 pi f t), loud in [0.25, 0.75) and [1.25, 1.75) s, at 1/4 level elsewhere."""
    t = np.arange(round(rate * seconds)) / rate
    envelope = np.where((t % 1.0 >= 0.25) & (t % 1.0 < 0.75), 1.0, 0.25)
    return (0.4 * envelope * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _encode(
    muxer: str,
    codec: str,
    rate: int,
    signal: np.ndarray | None = None,
    *,
    channels: int = 1,
    container_options: dict | None = None,
    codec_options: dict | None = None,
) -> bytes:
    """Encode `signal` (default `_signal(rate)`, copied to every channel) with PyAV into `muxer`."""
    x = _signal(rate) if signal is None else signal
    planar = np.ascontiguousarray(np.repeat(x[None, :], channels, axis=0))
    layout = {1: "mono", 2: "stereo"}[channels]
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer, container_options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout, options=codec_options or {})
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def _decode(data: bytes, **kwargs) -> audio_mod.DecodedAudio:
    return decode_audio_bytes(data, field=FIELD, **{"max_duration_s": 30.0, **kwargs})


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


# (our format name, muxer, encoder, rate, channels, one codec frame in samples = the duration
# tolerance; FLAC and PCM decode to exactly the samples written). FFmpeg's own Vorbis encoder is
# "experimental" and stereo only: both channels carry the signal, so their mean is the signal.
ROUND_TRIPS = [
    ("wav", "wav", "pcm_s16le", 44100, 1, 0),
    ("mp3", "mp3", "libmp3lame", 44100, 1, 1152),
    ("ogg", "ogg", "libopus", 48000, 1, 960),
    ("ogg", "ogg", "vorbis", 44100, 2, 2048),
    ("webm", "webm", "libopus", 48000, 1, 960),
    ("m4a", "ipod", "aac", 44100, 1, 1024),
    ("flac", "flac", "flac", 44100, 1, 0),
]
_CODEC_OPTIONS = {"vorbis": {"strict": "experimental"}}


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """One file per round trip, plus a few variants reused by the bad-input tests."""
    out = {
        f"{muxer}/{codec}": _encode(
            muxer, codec, rate, channels=channels, codec_options=_CODEC_OPTIONS.get(codec)
        )
        for _, muxer, codec, rate, channels, _ in ROUND_TRIPS
    }
    out["mp4/aac16k"] = _encode("mp4", "aac", 16000)
    out["webm/live"] = _encode("webm", "libopus", 48000, container_options={"live": "1"})
    return out


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "muxer", "codec", "rate", "channels", "frame"),
    ROUND_TRIPS,
    ids=[f"{r[0]}-{r[2]}" for r in ROUND_TRIPS],
)
def test_round_trip(files, monkeypatch, fmt, muxer, codec, rate, channels, frame):
    opened: list[dict] = []
    real_open = av.open

    def spy(*args, **kwargs):
        opened.append(kwargs)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(audio_mod.av, "open", spy)
    decoded = _decode(files[f"{muxer}/{codec}"], target_rate=16000)

    # the demuxer is always named and nested opens are refused
    assert [k["format"] for k in opened] == [audio_mod._DEMUXER[fmt]]
    assert opened[0]["io_open"] is audio_mod._refuse_nested_open
    assert decoded.source_format == fmt
    assert decoded.source_rate == rate and decoded.source_channels == channels
    assert decoded.sample_rate == 16000 and decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    # duration within one codec frame (exact for PCM and FLAC)
    assert abs(decoded.duration_s - SECONDS) <= frame / rate + 1e-9
    assert abs(decoded.samples.size - round(decoded.duration_s * 16000)) <= 1
    # the signal: same tone, same envelope, same timing (no codec delay left)
    reference = _signal(16000)
    n = min(reference.size, decoded.samples.size)
    corr = float(np.corrcoef(reference[:n], decoded.samples[:n])[0, 1])
    assert corr > (0.999 if fmt in ("wav", "flac") else 0.97), corr
    assert abs(_peak_hz(decoded.samples, 16000) - TONE_HZ) < 2.0


def test_m4a_ends_where_the_edit_list_says(files):
    """AAC pads its last 1024-sample frame; the MP4 track duration trims it back off."""
    decoded = _decode(files["mp4/aac16k"], target_rate=None)
    assert decoded.source_format == "m4a" and decoded.source_codec == "aac"
    assert decoded.samples.size == 32000 and decoded.sample_rate == 16000


def test_stereo_downmix_is_the_exact_channel_mean():
    rate = 22050
    t = np.arange(rate) / rate
    left = np.round(20000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    right = np.round(-9000 * np.sin(2 * np.pi * 1234 * t) + 5000).astype(np.int16)
    data = encode_wav(np.stack([left, right], axis=1), rate)
    decoded = _decode(data, target_rate=None)
    expected = ((left.astype(np.float64) + right.astype(np.float64)) / 2 / 32768).astype(np.float32)
    assert decoded.source_channels == 2 and decoded.sample_rate == rate
    np.testing.assert_array_equal(decoded.samples, expected)
    # libswresample's own stereo->mono matrix would scale by 1/sqrt(2), not 1/2
    assert not np.allclose(decoded.samples, expected * np.sqrt(2), atol=1e-3)


def test_stereo_lossy_downmix_is_the_mean():
    """Identical L and R: the mean is the signal itself (a 1/sqrt(2) downmix would be 1.41x louder)."""
    data = _encode("ogg", "libopus", 48000, channels=2)
    decoded = _decode(data, target_rate=48000)
    assert decoded.source_channels == 2
    reference = _signal(48000)
    n = min(reference.size, decoded.samples.size)
    gain = float(np.dot(decoded.samples[:n], reference[:n]) / np.dot(reference[:n], reference[:n]))
    assert abs(gain - 1.0) < 0.05


def test_resampling_44k1_to_16k_keeps_the_tone():
    rate = 44100
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(rate * 2) / rate)).astype(np.float32)
    decoded = _decode(encode_wav(tone, rate), target_rate=16000)
    assert decoded.source_rate == 44100 and decoded.sample_rate == 16000
    assert decoded.samples.size == -(-tone.size * 160 // 441)  # ceil(n * up / down), up/down = 160/441
    assert abs(_peak_hz(decoded.samples, 16000) - 1000.0) < 1.0
    # zero-phase polyphase filter: the interior equals the ideal 16 kHz sine
    ideal = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(decoded.samples.size) / 16000)
    assert np.max(np.abs(decoded.samples[200:-200] - ideal[200:-200])) < 2e-3
    kept = _decode(encode_wav(tone, rate), target_rate=None)
    assert kept.sample_rate == 44100 and kept.samples.size == tone.size


def test_resample_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mono"):
        resample(np.zeros((4, 2), np.float32), 48000, 16000)
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros(4, np.float32), 0, 16000)
    np.testing.assert_array_equal(resample(np.arange(5, dtype=np.float32), 16000, 16000), np.arange(5))


def test_encode_wav_round_trips_exactly():
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32768, size=(1000, 2)).astype(np.int16)
    as_float = pcm.astype(np.float32) / 32768
    for source in (pcm, as_float):
        data = encode_wav(source, 8000)
        assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
        back = _decode(data, target_rate=None)
        np.testing.assert_array_equal(
            back.samples, (pcm.astype(np.float64).mean(axis=1) / 32768).astype(np.float32)
        )
    clipped = _decode(encode_wav(np.array([2.0, -2.0, 0.5], np.float32), 8000), target_rate=None)
    np.testing.assert_array_equal(clipped.samples, np.array([32767 / 32768, -1.0, 0.5], np.float32))
    with pytest.raises(ValueError, match="NaN"):
        encode_wav(np.array([np.nan], np.float32), 8000)


def test_path_input_and_byte_limit(tmp_path: Path):
    data = encode_wav(_signal(16000, 0.5), 16000)
    path = tmp_path / "voice.bin"  # the name says nothing; the bytes do
    path.write_bytes(data)
    decoded = load_audio(path, field=FIELD, max_bytes=10**6, max_duration_s=5)
    assert decoded.source_format == "wav" and abs(decoded.duration_s - 0.5) < 1e-9
    with pytest.raises(
        InputTooLargeError, match=r"`voice`: the file is [\d,]+ bytes, over the limit of 1,000 bytes"
    ):
        load_audio(path, field=FIELD, max_bytes=1000, max_duration_s=5)
    with pytest.raises(InputTooLargeError, match="over the limit of 1,000 bytes"):
        load_audio(data, field=FIELD, max_bytes=1000, max_duration_s=5)
    with pytest.raises(InputError, match="file not found"):
        load_audio(tmp_path / "missing.wav", field=FIELD, max_bytes=10**6, max_duration_s=5)
    with pytest.raises(InputError, match="is a folder"):
        load_audio(tmp_path, field=FIELD, max_bytes=10**6, max_duration_s=5)
    with pytest.raises(InputError, match="never as a file path"):
        load_audio(str(path), field=FIELD, max_bytes=10**6, max_duration_s=5)  # type: ignore[arg-type]


def test_cover_art_in_an_mp3_is_allowed_and_not_decoded(files):
    """An ID3 APIC picture becomes an `attached_pic` video stream in FFmpeg: a cover, not a video."""
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
        "0000000c49444154789c63f8cfc000000301010018dd8db00000000049454e44ae426082"
    )
    body = b"\x00image/png\x00\x03\x00" + png
    apic = b"APIC" + struct.pack(">I", len(body)) + b"\x00\x00" + body
    size = len(apic)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    tag = b"ID3\x03\x00\x00" + syncsafe + apic
    mp3 = files["mp3/libmp3lame"]
    assert mp3[:3] == b"ID3"  # FFmpeg's own (empty-ish) tag; put ours in front of it
    with av.open(io.BytesIO(tag + mp3), format="mp3") as probe:  # the file is what the test says
        assert [s.type for s in probe.streams] == ["audio", "video"]
        assert probe.streams.video[0].disposition & av.stream.Disposition.attached_pic
    decoded = _decode(tag + mp3, target_rate=16000)
    assert decoded.source_format == "mp3" and abs(decoded.duration_s - SECONDS) < 0.05


# --------------------------------------------------------------------------------------------------
# Bad input: one test per class
# --------------------------------------------------------------------------------------------------


def test_zero_bytes():
    with pytest.raises(
        InputError, match=r"^`voice`: expected a WAV, .* got 0 bytes \(an empty file\)$"
    ) as info:
        _decode(b"")
    assert info.value.field == FIELD


def test_zero_length_audio():
    """A well-formed WAV with no samples in it."""
    with pytest.raises(InputError, match=r"`voice`: the wav file holds no audio samples \(zero length\)"):
        _decode(encode_wav(np.zeros(0, np.float32), 16000))


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (bytes.fromhex("89504e470d0a1a0a") + b"\x00" * 40, "a PNG image"),
        (b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x00" * 40, "an AVI video"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIF/AVIF image"),
        (b"\x00\x00\x00\x18ftypavc1\x00\x00\x00\x00avc1", "ISO media file of brand 'avc1'"),
        (b"\x1a\x45\xdf\xa3\x84\x42\x82\x81x", "EBML file of DocType 'x'"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc" + b"\x00" * 20, "raw AAC (ADTS)"),
        (b"FORM\x00\x00\x00\x20AIFFCOMM", "an AIFF file"),
        (bytes(range(7, 64)), "bytes that are not audio"),
        (b"hello, this is not a recording\n", "bytes of text, not audio"),
    ],
    ids=["png", "avi", "heic", "iso-video-brand", "ebml-doctype", "adts", "aiff", "binary", "text"],
)
def test_wrong_magic(data, named):
    with pytest.raises(InputError, match="^`voice`: ") as info:
        _decode(data)
    assert named in str(info.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
            "M3U/HLS playlist",
        ),
        (
            b"ffconcat version 1.0\nfile '/etc/passwd'\nfile 'http://example.invalid/a.wav'\n",
            "FFmpeg concat list",
        ),
        (b"ffconcat version 1.0\n", "FFmpeg concat list"),
        (b"file 'voice.wav'\nfile 'subdir/other.wav'\n", "a list of files or URLs"),
        (b"[playlist]\nFile1=http://example.invalid/a.mp3\n", "PLS playlist"),
        (b'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"></MPD>', "DASH"),
    ],
    ids=["m3u8", "ffconcat-list", "ffconcat-header-only", "concat-without-header", "pls", "dash"],
)
def test_playlist_and_concat_tricks_are_refused(monkeypatch, text, named):
    def never(*args, **kwargs):
        raise AssertionError("FFmpeg must not be asked to open a playlist")

    monkeypatch.setattr(audio_mod.av, "open", never)
    with pytest.raises(InputError, match="never followed") as info:
        _decode(text)
    assert named in str(info.value) and info.value.field == FIELD


def test_playlist_behind_an_id3_tag_is_refused():
    text = b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n"
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # an empty ID3v2.4 tag
    with pytest.raises(InputError, match="ID3 tag followed by data that is not MPEG audio"):
        _decode(tag + text)


def _live_webm(data: bytes) -> bytes:
    """Mark the Segment and every Cluster as unknown-size, as a browser's MediaRecorder writes them
    (the size fields keep their length, so every offset stays valid)."""
    out = bytearray(data)

    def mark_unknown(pos: int) -> tuple[int, int]:
        _, after_id = containers.vint(data, pos, is_id=True)
        size, after_size = containers.vint(data, after_id, is_id=False)
        length = after_size - after_id
        out[after_id:after_size] = (((1 << (7 * length)) - 1) | (1 << (8 * length - length))).to_bytes(
            length, "big"
        )
        return after_size, size or 0

    _, header_body, header_size = containers.ebml_element(data, 0)
    seg_body, _ = mark_unknown(header_body + header_size)
    pos, clusters = seg_body, 0
    while pos < len(data):
        eid, body, size = containers.ebml_element(data, pos)
        if eid == containers.CLUSTER:
            mark_unknown(pos)
            clusters += 1
        pos = body + (size or 0)
    assert clusters >= 1
    return bytes(out)


@pytest.mark.parametrize(
    "key",
    [
        "wav/pcm_s16le",
        "mp3/libmp3lame",
        "ogg/libopus",
        "webm/libopus",
        "webm/browser",
        "ipod/aac",
        "flac/flac",
    ],
)
def test_truncated(files, key):
    data = _live_webm(files["webm/live"]) if key == "webm/browser" else files[key]
    assert _decode(data).duration_s > 1.9  # whole, it is fine
    with pytest.raises(InputError, match=r"^`voice`: .*truncated or corrupt") as info:
        _decode(data[: int(len(data) * 0.6)])
    assert not isinstance(info.value, InputTooLargeError)


def test_corrupt_flac_frame_is_refused(files):
    data = bytearray(files["flac/flac"])
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # frame CRCs no longer match: FFmpeg drops the frames
    with pytest.raises(InputError, match="truncated or corrupt: the header declares 2.00 s but only"):
        _decode(bytes(data))


def test_chained_ogg_is_refused(files):
    data = files["ogg/libopus"]
    with pytest.raises(InputError, match="chains several recordings"):
        _decode(data + data)


def test_too_long_by_header_wav_nothing_opened(monkeypatch):
    data = encode_wav(_signal(16000, 3.0), 16000)

    def never(*args, **kwargs):
        raise AssertionError("the WAV header alone must refuse it")

    monkeypatch.setattr(audio_mod.av, "open", never)
    with pytest.raises(
        InputTooLargeError, match=r"`voice`: the audio lasts 3.00 s \(WAV header\), over the limit of 1 s"
    ) as info:
        _decode(data, max_duration_s=1.0)
    assert info.value.value == 3.0


@pytest.mark.parametrize("key", ["ogg/libopus", "webm/libopus", "ipod/aac", "mp3/libmp3lame"])
def test_too_long_by_header_nothing_decoded(files, monkeypatch, key):
    def never(*args, **kwargs):
        raise AssertionError("the declared duration must refuse it before decoding")

    monkeypatch.setattr(audio_mod, "_decode_stream", never)
    with pytest.raises(
        InputTooLargeError, match=r"the audio lasts 2.0\d s \(from the \w+ header\), over the limit of 1 s"
    ):
        _decode(files[key], max_duration_s=1.0)


def test_exactly_at_the_limit_is_accepted(files):
    assert abs(_decode(files["ipod/aac"], max_duration_s=SECONDS).duration_s - SECONDS) < 1e-9
    assert abs(_decode(files["ogg/libopus"], max_duration_s=SECONDS).duration_s - SECONDS) < 1e-9


def _mp3_with_lying_frame_count(data: bytes, frames: int) -> bytes:
    out = bytearray(data)
    at = max(out.find(b"Xing"), out.find(b"Info"))
    flags, _ = struct.unpack(">II", out[at + 4 : at + 12])
    assert flags & 1  # the frame-count field is present
    out[at + 8 : at + 12] = struct.pack(">I", frames)
    return bytes(out)


@pytest.mark.parametrize("case", ["mp3-header-lies", "webm-no-duration"])
def test_too_long_found_while_decoding_stops_early(files, case):
    limit = 0.5
    if case == "mp3-header-lies":
        data = _mp3_with_lying_frame_count(files["mp3/libmp3lame"], 10)  # says 0.26 s, holds 2 s
        with av.open(io.BytesIO(data), format="mp3") as probe:
            assert probe.duration / av.time_base < limit
        frame_s = 1152 / 44100
    else:
        data = files["webm/live"]
        with av.open(io.BytesIO(data), format="matroska") as probe:
            assert probe.duration is None  # nothing declared
        frame_s = 960 / 48000  # one Opus packet
    with pytest.raises(
        InputTooLargeError, match=r"runs past the limit of 0.5 s \(decoding stopped at"
    ) as info:
        _decode(data, max_duration_s=limit)
    stopped_at = info.value.value
    assert limit + DURATION_GRACE_S < stopped_at <= limit + DURATION_GRACE_S + frame_s
    assert stopped_at < SECONDS - 0.5  # the 2 s file was not decoded in full


def test_too_many_channels():
    data = encode_wav(np.zeros((100, 16), np.float32), 16000)
    with pytest.raises(
        InputTooLargeError, match=r"`voice`: the audio has 16 channels \(WAV header\), over the limit of 8"
    ):
        _decode(data)
    assert _decode(data, max_channels=16).source_channels == 16


@pytest.mark.parametrize("rate", [1, 4000, 400_000])
def test_absurd_sample_rates(rate):
    data = encode_wav(np.zeros(100, np.float32), rate)
    with pytest.raises(
        InputError, match=rf"sample rate is {rate:,} Hz \(WAV header\); accepted are 8,000 to 192,000 Hz"
    ):
        _decode(data)


def test_codec_not_allowed_in_its_container():
    data = _encode("ipod", "alac", 44100)
    with pytest.raises(InputError, match="the m4a file holds alac audio; accepted in m4a: aac"):
        _decode(data)
    wav = bytearray(encode_wav(np.zeros(100, np.float32), 16000))
    wav[20:22] = struct.pack("<H", 0x55)  # format tag: MP3 inside a WAV
    with pytest.raises(InputError, match="the WAV holds audio in format 0x0055"):
        _decode(bytes(wav))


# --- a video container where audio is expected ---------------------------------------------------


def _video(muxer: str, codec: str, with_audio: bool) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as out:
        video = out.add_stream(codec, rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = (
            out.add_stream("libopus" if muxer == "webm" else "aac", rate=48000, layout="mono")
            if with_audio
            else None
        )
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            tone = _signal(48000, 0.2)[None, :]
            af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, 0, Fraction(1, 48000)
            out.mux(sound.encode(af))
            out.mux(sound.encode(None))
    return buf.getvalue()


_CRC_TABLE = []
for _i in range(256):
    _r = _i << 24
    for _ in range(8):
        _r = ((_r << 1) ^ 0x04C11DB7) if _r & 0x80000000 else (_r << 1)
    _CRC_TABLE.append(_r & 0xFFFFFFFF)


def _ogg_crc(page: bytes) -> int:
    """RFC 3533 page checksum: CRC-32, polynomial 0x04C11DB7, no reflection, initial value 0."""
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def _ogg_bos_page(packet: bytes, serial: int) -> bytes:
    lacing = [255] * (len(packet) // 255) + [len(packet) % 255]
    header = b"OggS\x00\x02" + struct.pack("<qII", 0, serial, 0) + b"\x00" * 4 + bytes([len(lacing), *lacing])
    crc = _ogg_crc(header + packet)
    return header[:22] + struct.pack("<I", crc) + header[26:] + packet


def _theora_identification(width: int = 64, height: int = 48) -> bytes:
    """Theora spec §6.2 identification header (version 3.2.1, 25 fps, square pixels)."""
    return (
        b"\x80theora\x03\x02\x01"
        + struct.pack(">HH", width // 16, height // 16)
        + width.to_bytes(3, "big")
        + height.to_bytes(3, "big")
        + b"\x00\x00"
        + struct.pack(">II", 25, 1)
        + (1).to_bytes(3, "big") * 2
        + b"\x00"
        + (0).to_bytes(3, "big")
        + struct.pack(">H", (32 << 10) | (6 << 5))
    )


def test_ogg_crc_helper_matches_a_real_page(files):
    data = files["ogg/libopus"]
    length = 27 + data[26] + sum(data[27 : 27 + data[26]])
    page = data[:length]
    assert struct.unpack("<I", page[22:26])[0] == _ogg_crc(page[:22] + b"\x00" * 4 + page[26:])


@pytest.mark.parametrize("case", ["mp4-h264", "mp4-h264-aac", "webm-vp8-opus", "ogg-theora-opus"])
def test_video_container_where_audio_is_expected(files, case):
    if case == "ogg-theora-opus":  # no Theora encoder in PyAV's FFmpeg: a Theora stream by hand
        data = _ogg_bos_page(_theora_identification(), serial=0x7E0) + files["ogg/libopus"]
    elif case.startswith("mp4"):
        data = _video("mp4", "libx264", with_audio=case.endswith("aac"))
    else:
        data = _video("webm", "libvpx", with_audio=True)
    with av.open(io.BytesIO(data), format=audio_mod._DEMUXER[sniff_audio(data, field=FIELD)]) as probe:
        assert any(s.type == "video" for s in probe.streams)  # FFmpeg itself sees a video stream
    with pytest.raises(
        InputError, match=r"^`voice`: the .* holds (Theora )?(a )?video.*expected audio only"
    ) as info:
        _decode(data)
    assert info.value.field == FIELD


def test_video_stream_found_by_ffmpeg_is_refused(files, monkeypatch):
    """The PyAV stream list is checked too (a layout our byte walk does not see)."""
    data = _ogg_bos_page(_theora_identification(), serial=0x7E0) + files["ogg/libopus"]
    monkeypatch.setattr(audio_mod, "check_structure", lambda fmt, data, limits: containers.DeclaredHeader())
    with pytest.raises(
        InputError, match=r"the ogg file holds a video stream \(theora\); expected audio only"
    ):
        _decode(data)


def test_no_audio_stream():
    """An MP4 whose only track is not sound (its handler type changed from `vide` to `text`)."""
    data = _video("mp4", "libx264", with_audio=False)
    patched = data.replace(b"vide", b"text")  # the handler type of the only track
    with pytest.raises(InputError, match="the MP4/M4A file has no audio track"):
        _decode(patched)
