"""Safe audio input: user-supplied voice recordings become float32 mono samples at a chosen rate.

`load_audio` is the one door through which uploaded or recorded audio (bytes or a `pathlib.Path`)
enters toonbooth. It follows the habits of `core/images.py`:

* the container comes from the content (magic bytes), never from a file name: RIFF/WAVE, MP3 (an ID3v2
  tag or an MPEG audio frame header, ISO/IEC 11172-3 §2.4.1.3), Ogg (`OggS`, RFC 3533) holding Opus
  (RFC 7845 `OpusHead`) / Vorbis / FLAC, WebM/Matroska (EBML `1A45DFA3`, RFC 8794) holding Opus or
  Vorbis, M4A/MP4 (ISO/IEC 14496-12 `ftyp` box) holding AAC, and FLAC (`fLaC`). Everything else is
  refused with its name: playlists (M3U/HLS, FFmpeg concat lists, PLS, DASH/SMIL/ASX XML), video
  formats, images, text;
* byte size is checked before anything is parsed, then what the headers declare (channels, sample
  rate, duration, the tracks of the container) before any sample is decoded. The container structure
  is walked in Python first (`core/audio_containers.py`: WAV chunks, FLAC STREAMINFO, Ogg pages, EBML
  elements, MP4 boxes), so a truncated file or a container with a video track is refused before FFmpeg
  sees it;
* decoding uses PyAV (https://pyav.org, bundling its own FFmpeg libraries) on an in-memory buffer. The
  demuxer is always named explicitly (`av.open(buf, format="wav" | "mp3" | "ogg" | "matroska" | "mp4" |
  "flac")`), so FFmpeg's probing can never pick the hls / concat / image2 / other demuxers, and an
  `io_open` hook refuses every nested file or URL a demuxer might try to open (no shell, no file names
  on any command line, no network);
* each container accepts a short list of codecs, and a container with a video stream is refused where
  audio is expected (an embedded cover picture, FFmpeg's `attached_pic` stream of an ID3 APIC frame,
  is allowed: only the audio stream's packets are ever decoded here);
* the duration limit is enforced twice: from the header when it declares one exactly (refused before
  decoding; MP3 only with a Xing/Info/VBRI frame count, as FFmpeg otherwise estimates from the bit
  rate), and while decoding, which stops as soon as the decoded audio passes the limit, so a file
  whose header lies or has no duration (live WebM from a browser) is never decoded in full. Both
  checks allow `DURATION_GRACE_S` over the limit for codec priming and padding;
* a stream that decodes to less than its header declares is refused as truncated; a decoder error is
  refused as corrupt; a stream without samples as empty.

Downmix is the **mean of the channels** (what `librosa.load(mono=True)` does, which Wav2Lip, SadTalker
and JoyVASA use), not libswresample's mono matrix, which scales a stereo sum by 1/sqrt(2)
(`../shared/research/studios.md` §B8). Resampling is polyphase FIR filtering, `scipy.signal.resample_poly`
with its default Kaiser window (beta 5.0) and zero-phase alignment (output sample 0 is input time 0).
"""

from __future__ import annotations

import io
import math
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from scipy.signal import resample_poly

from toonbooth.core.audio_containers import (
    ACCEPTED_TEXT,
    DURATION_GRACE_S,
    AudioLimits,
    DeclaredHeader,
    check_structure,
    id3_end,
)
from toonbooth.core.errors import InputError, InputTooLargeError
from toonbooth.core.media import read_media_bytes

__all__ = [
    "ACCEPTED_AUDIO_FORMATS",
    "DEFAULT_MAX_CHANNELS",
    "DEFAULT_MAX_RATE",
    "DEFAULT_MIN_RATE",
    "DURATION_GRACE_S",
    "DecodedAudio",
    "decode_audio_bytes",
    "encode_wav",
    "load_audio",
    "resample",
    "sniff_audio",
]

ACCEPTED_AUDIO_FORMATS: tuple[str, ...] = ("wav", "mp3", "ogg", "webm", "m4a", "flac")

DEFAULT_MAX_CHANNELS = 8
DEFAULT_MIN_RATE = 8_000
DEFAULT_MAX_RATE = 192_000
# Decoded audio shorter than the header's duration by more than this is "truncated".
_TRUNCATION_TOLERANCE_S = 0.1

# Our format name -> the FFmpeg demuxer that reads it (the only demuxers ever opened).
_DEMUXER: dict[str, str] = {
    "wav": "wav",
    "mp3": "mp3",
    "ogg": "ogg",
    "webm": "matroska",
    "m4a": "mp4",
    "flac": "flac",
}

# Codecs (FFmpeg codec ids, by canonical name) each container may hold.
_PCM_CODECS = frozenset(
    {
        "pcm_u8",
        "pcm_s16le",
        "pcm_s24le",
        "pcm_s32le",
        "pcm_f32le",
        "pcm_f64le",
        "pcm_alaw",
        "pcm_mulaw",
    }
)
_CODECS: dict[str, frozenset[str]] = {
    "wav": _PCM_CODECS,
    "mp3": frozenset({"mp3", "mp2", "mp1"}),
    "ogg": frozenset({"opus", "vorbis", "flac"}),
    "webm": frozenset({"opus", "vorbis"}),
    "m4a": frozenset({"aac"}),
    "flac": frozenset({"flac"}),
}

# Sample formats PyAV hands out (packed name) -> (offset, scale) that map them to [-1, 1).
_SAMPLE_FORMATS: dict[str, tuple[float, float]] = {
    "u8": (-128.0, 1 / 128),
    "s16": (0.0, 1 / 32768),
    "s32": (0.0, 1 / 2147483648),
    "s64": (0.0, 1 / 9223372036854775808),
    "flt": (0.0, 1.0),
    "dbl": (0.0, 1.0),
}

# sniffed format -> the media type it is stored and served with
AUDIO_MEDIA_TYPES: dict[str, str] = {
    "wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "webm": "audio/webm", "m4a": "audio/mp4",
    "flac": "audio/flac",
}  # fmt: skip

AudioSource = bytes | bytearray | memoryview | Path | str  # str: base64 or a data:audio/... URL


@dataclass(frozen=True, eq=False)
class DecodedAudio:
    """Decoded audio: `samples` float32 mono (channel mean) at `sample_rate` Hz.

    `duration_s` is the decoded length at the source rate (for M4A, cut where the MP4 track ends, without
    the AAC end padding); `source_*` describe the file as uploaded
    (`source_format` one of `ACCEPTED_AUDIO_FORMATS`, `source_codec` the FFmpeg codec name).
    """

    samples: np.ndarray
    sample_rate: int
    duration_s: float
    source_format: str
    source_channels: int
    source_rate: int
    source_codec: str = ""


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


def load_audio(
    source: AudioSource,
    *,
    field: str,
    max_bytes: int,
    max_duration_s: float,
    target_rate: int | None = 16_000,
    max_channels: int = DEFAULT_MAX_CHANNELS,
    min_rate: int = DEFAULT_MIN_RATE,
    max_rate: int = DEFAULT_MAX_RATE,
) -> DecodedAudio:
    """Read, check and decode user audio into float32 mono at `target_rate` (None keeps the source rate).

    `source`: bytes / bytearray / memoryview, or a `pathlib.Path` (size checked from the file system
    before reading). Over `max_bytes`, `max_duration_s`, `max_channels` channels -> `InputTooLargeError`;
    a sample rate outside [`min_rate`, `max_rate`], an unknown or refused container, a video, a
    truncated, corrupt or empty stream -> `InputError` naming `field`.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    data = read_media_bytes(source, field=field, max_bytes=max_bytes, kind="audio")
    return decode_audio_bytes(
        data,
        field=field,
        max_duration_s=max_duration_s,
        target_rate=target_rate,
        max_channels=max_channels,
        min_rate=min_rate,
        max_rate=max_rate,
    )


def decode_audio_bytes(
    data: bytes,
    *,
    field: str,
    max_duration_s: float,
    target_rate: int | None = 16_000,
    max_channels: int = DEFAULT_MAX_CHANNELS,
    min_rate: int = DEFAULT_MIN_RATE,
    max_rate: int = DEFAULT_MAX_RATE,
) -> DecodedAudio:
    """Decode already-read bytes (the byte limit already applied); see `load_audio`."""
    data = bytes(data)
    if not max_duration_s > 0:
        raise ValueError(f"max_duration_s must be positive, got {max_duration_s}")
    if max_channels < 1 or not 0 < min_rate <= max_rate:
        raise ValueError(f"bad limits: max_channels={max_channels}, rates [{min_rate}, {max_rate}]")
    if target_rate is not None and target_rate < 1:
        raise ValueError(f"target_rate must be positive, got {target_rate}")
    limits = AudioLimits(field, max_duration_s, max_channels, min_rate, max_rate)
    fmt = sniff_audio(data, field=field)
    header = check_structure(fmt, data, limits)
    channels, rate, codec, mono = _decode(fmt, data, limits, header)
    n = int(mono.shape[0])
    out = mono if target_rate is None or target_rate == rate else resample(mono, rate, target_rate)
    return DecodedAudio(
        samples=np.ascontiguousarray(out, dtype=np.float32),
        sample_rate=rate if target_rate is None else int(target_rate),
        duration_s=n / rate,
        source_format=fmt,
        source_channels=channels,
        source_rate=rate,
        source_codec=codec,
    )


def sniff_audio(data: bytes, *, field: str) -> str:
    """The accepted format of `data` by its magic bytes (one of `ACCEPTED_AUDIO_FORMATS`), or
    `InputError` saying what the bytes are instead (a playlist, a video, an image, text, ...)."""
    n = len(data)
    if n == 0:
        raise InputError(field, f"expected {ACCEPTED_TEXT}, got 0 bytes (an empty file)", 0)
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if data[4:8] == b"ftyp":
        _check_ftyp(data, field=field)
        return "m4a"
    if data[:3] == b"ID3":
        return _sniff_after_id3(data, field=field)
    if _mpeg_audio_header(data, 0):
        return "mp3"
    what = _name_rejected(data)
    raise InputError(field, f"expected {ACCEPTED_TEXT}, got {what}", what)


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Mono float samples from `src_rate` to `dst_rate` Hz by polyphase filtering.

    `scipy.signal.resample_poly(x, up, down)` with up/down the rates divided by their gcd, default
    Kaiser window (beta 5.0, 10 zero crossings per side of the slower rate): zero-phase, so output
    sample k is input time k/dst_rate, and the output has ceil(n * up / down) samples.
    """
    if src_rate < 1 or dst_rate < 1:
        raise ValueError(f"sample rates must be positive, got {src_rate} and {dst_rate}")
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"resample takes mono (1-D) samples, got shape {x.shape}")
    if src_rate == dst_rate or x.size == 0:
        return x.copy()
    g = math.gcd(int(src_rate), int(dst_rate))
    return resample_poly(x, int(dst_rate) // g, int(src_rate) // g).astype(np.float32, copy=False)


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes (stdlib `wave`).

    `samples`: 1-D (mono) or (n, channels); int16 is written as is, floats are scaled by 32768,
    rounded and clipped to [-32768, 32767], so float samples that are multiples of 1/32768 (what
    decoding 16-bit PCM gives) round-trip exactly.
    """
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"expected samples of shape (n,) or (n, channels), got {np.shape(samples)}")
    if not 1 <= sample_rate <= 0xFFFFFFFF:
        raise ValueError(f"sample_rate out of range: {sample_rate}")
    if x.dtype == np.int16:
        pcm = x
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise ValueError("samples contain NaN or infinity")
        pcm = np.clip(np.rint(x.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    else:
        raise ValueError(f"expected float or int16 samples, got dtype {x.dtype}")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(int(x.shape[1]))
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _check_bytes(size: int, *, field: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise InputTooLargeError(
            field, f"the file is {size:,} bytes, over the limit of {max_bytes:,} bytes", size
        )


# --------------------------------------------------------------------------------------------------
# Sniffing
# --------------------------------------------------------------------------------------------------

# ISO base media brands of files that may hold AAC audio (M4A/M4B from iTunes and iPhone voice memos,
# generic ISO/MP4 brands written by FFmpeg, browsers' MediaRecorder and Android, 3GPP, QuickTime).
_ISO_AUDIO_BRANDS = frozenset(
    {
        b"M4A ",
        b"M4B ",
        b"M4P ",
        b"isom",
        b"iso2",
        b"iso3",
        b"iso4",
        b"iso5",
        b"iso6",
        b"mp41",
        b"mp42",
        b"dash",
        b"3gp4",
        b"3gp5",
        b"3gp6",
        b"3gp7",
        b"3gp8",
        b"3ge6",
        b"3ge7",
        b"3gg6",
        b"qt  ",
    }
)
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
)


def _check_ftyp(data: bytes, *, field: str) -> None:
    size = struct.unpack(">I", data[:4])[0]
    major = data[8:12]
    brands = {major} | {data[i : i + 4] for i in range(16, min(size, len(data), 256) - 3, 4)}
    if major in _HEIF_BRANDS:
        what = f"a HEIF/AVIF image (ISO brand {major.decode('latin-1')!r})"
        raise InputError(field, f"expected {ACCEPTED_TEXT}, got {what}", what)
    if not brands & _ISO_AUDIO_BRANDS:
        what = f"an ISO media file of brand {major.decode('latin-1')!r}"
        raise InputError(field, f"expected {ACCEPTED_TEXT}, got {what}", what)


def _sniff_after_id3(data: bytes, *, field: str) -> str:
    """ID3v2 tags are followed by MP3 frames (or, rarely, a FLAC stream), after optional zero padding."""
    end = id3_end(data)
    if end is None:
        raise InputError(
            field, "the file is an ID3 tag with no audio after it (truncated or tag only)", len(data)
        )
    rest = data[end : end + 65536]
    if rest[:4] == b"fLaC":
        return "flac"
    first = next((i for i, b in enumerate(rest) if b != 0), len(rest))  # skip padding
    if _mpeg_audio_header(rest, first):
        return "mp3"
    what = "an ID3 tag followed by data that is not MPEG audio"
    if _is_adts(rest, first):
        what = "raw AAC (ADTS) behind an ID3 tag; put the AAC in an .m4a file"
    raise InputError(field, f"expected {ACCEPTED_TEXT}, got {what}", what)


def _mpeg_audio_header(data: bytes, i: int) -> bool:
    """An MPEG-1/2/2.5 audio frame header at `i`: 11-bit sync, valid version, layer, bitrate, rate."""
    if i < 0 or i + 4 > len(data):
        return False
    b1, b2 = data[i + 1], data[i + 2]
    return (
        data[i] == 0xFF
        and (b1 & 0xE0) == 0xE0
        and ((b1 >> 3) & 3) != 1  # reserved version
        and ((b1 >> 1) & 3) != 0  # layer 0 is reserved (and is ADTS's "layer")
        and (b2 >> 4) != 0xF  # bad bitrate index
        and ((b2 >> 2) & 3) != 3  # reserved sample rate
    )


def _is_adts(data: bytes, i: int) -> bool:
    return i >= 0 and i + 2 <= len(data) and data[i] == 0xFF and (data[i + 1] & 0xF6) == 0xF0


_REJECTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"FLV\x01", "an FLV video"),
    (b"\x00\x00\x01\xba", "an MPEG program stream (video)"),
    (b"\x00\x00\x01\xb3", "an MPEG video stream"),
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "a Windows Media (ASF/WMA/WMV) file"),
    (b"#!AMR", "an AMR recording (not supported; export it as M4A or WAV)"),
    (b"caff", "a Core Audio (CAF) file (not supported; export it as M4A or WAV)"),
    (b"MThd", "a MIDI file (notes, not a recording)"),
    (b"RF64", "an RF64/BW64 WAV (over 4 GB; not supported)"),
    (b"BW64", "an RF64/BW64 WAV (over 4 GB; not supported)"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "an executable"),
)


def _name_rejected(data: bytes) -> str:
    """A short description of what unaccepted bytes are, for the error message."""
    n = len(data)
    if data[:4] == b"RIFF":
        kind = data[8:12]
        if kind == b"AVI ":
            return "an AVI video"
        if kind == b"WEBP":
            return "a WebP image"
        return f"a RIFF {kind.decode('latin-1')!r} file, not WAVE"
    if data[:4] == b"FORM" and data[8:12] in (b"AIFF", b"AIFC"):
        return "an AIFF file (not supported; export it as WAV)"
    if n >= 189 and data[0] == 0x47 and data[188] == 0x47:
        return "an MPEG transport stream (video)"
    if _is_adts(data, 0):
        return "raw AAC (ADTS); put the AAC in an .m4a file"
    for magic, name in _REJECTED_MAGIC:
        if data.startswith(magic):
            return name
    text = _as_text(data[:4096])
    if text is not None:
        head = text.lstrip().lstrip("\ufeff")
        low = head.lower()
        never = "playlists and file lists are never followed; upload the audio file itself"
        if low.startswith("#extm3u") or low.startswith("#ext-x-"):
            return f"an M3U/HLS playlist ({never})"
        if low.startswith("ffconcat"):
            return f"an FFmpeg concat list ({never})"
        if low.startswith("[playlist]"):
            return f"a PLS playlist ({never})"
        if low.startswith("<") and any(tag in low for tag in ("<mpd", "<smil", "<asx", "<playlist")):
            return f"a DASH/SMIL/ASX/XSPF manifest ({never})"
        if low.startswith("<"):
            return "an XML/HTML document"
        if low.startswith("file ") or low.startswith("file:") or "://" in low[:200]:
            return f"a list of files or URLs ({never})"
        return f"{n} bytes of text, not audio (starts with {_short(head.strip(), 40)!r})"
    return f"{n} bytes that are not audio (starts with {data[:16]!r})"


def _as_text(head: bytes) -> str | None:
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):
            return head[len(bom) :].decode(codec, errors="ignore")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte character cut at the end
            return None
        text = head[: exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return text if text and printable >= 0.95 * len(text) else None


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def _refuse_nested_open(url: str, flags: int, options: dict) -> Any:
    raise PermissionError(f"opening {url!r} from inside an audio file is not allowed")


def _has_frame_count_header(data: bytes) -> bool:
    """MP3: a Xing/Info (LAME) or VBRI header in the first frame gives an exact frame count; without it
    FFmpeg's duration is only an estimate from the bit rate."""
    head = data[id3_end(data) or 0 :][:4096]
    sync = next((i for i in range(len(head) - 3) if _mpeg_audio_header(head, i)), None)
    if sync is None:
        return False
    frame = head[sync : sync + 200]
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def _decode(
    fmt: str, data: bytes, limits: AudioLimits, header: DeclaredHeader
) -> tuple[int, int, str, np.ndarray]:
    """Open with the named demuxer, check streams and declared values, decode with the running limit.

    Returns (channels, rate, codec, mono float32 samples at the source rate).
    """
    field = limits.field
    try:
        container = av.open(
            io.BytesIO(data),
            format=_DEMUXER[fmt],
            io_open=_refuse_nested_open,
            container_options={"enable_drefs": "0"} if fmt == "m4a" else {},
        )
    except av.error.FFmpegError as exc:
        raise InputError(
            field,
            f"the {fmt} file could not be opened: it is truncated or corrupt ({_ffmpeg_text(exc)})",
            fmt,
        ) from exc
    with container:
        stream = _pick_stream(fmt, container, field)
        codec = stream.codec_context.codec.canonical_name
        channels = int(stream.codec_context.layout.nb_channels or stream.codec_context.channels or 0)
        rate = int(stream.codec_context.sample_rate or 0)
        limits.check_channels(channels, f"{fmt} stream")
        limits.check_rate(rate, f"{fmt} stream")
        declared = header.duration_s
        if declared is None:
            declared = _declared_duration(fmt, data, container, stream)
        if declared is not None:
            limits.check_declared_duration(declared, f"from the {fmt} header")
        mono, channels, rate = _decode_stream(container, stream, limits, fmt, channels, rate)
    if fmt == "m4a" and declared is not None:
        # AAC ends with encoder padding up to a full 1024-sample frame; the MP4's edit list / track
        # duration says where the recording ends (FFmpeg applies the start trim, not the end one).
        mono = mono[: round(declared * rate)]
    decoded = mono.size / rate
    if declared is not None and decoded < declared - _TRUNCATION_TOLERANCE_S:
        raise limits.truncated(
            f"the header declares {declared:.2f} s but only {decoded:.2f} s of audio could be decoded",
            round(decoded, 3),
        )
    if mono.size == 0:
        raise InputError(field, f"the {fmt} file holds no audio samples (zero length)", 0)
    return channels, rate, codec, mono


def _pick_stream(fmt: str, container: Any, field: str) -> Any:
    video = [
        s
        for s in container.streams.video
        if not s.disposition & av.stream.Disposition.attached_pic  # cover art is allowed, never decoded
    ]
    if video:
        name = video[0].codec_context.codec.canonical_name
        raise InputError(field, f"the {fmt} file holds a video stream ({name}); expected audio only", name)
    if not container.streams.audio:
        raise InputError(field, f"the {fmt} file has no audio stream", fmt)
    stream = container.streams.audio[0]
    codec = stream.codec_context.codec.canonical_name
    if codec not in _CODECS[fmt]:
        raise InputError(
            field,
            f"the {fmt} file holds {codec} audio; accepted in {fmt}: {', '.join(sorted(_CODECS[fmt]))}",
            codec,
        )
    return stream


def _declared_duration(fmt: str, data: bytes, container: Any, stream: Any) -> float | None:
    """The duration FFmpeg read from the header, when it is exact (not a bit-rate estimate)."""
    if fmt == "mp3" and not _has_frame_count_header(data):
        return None
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _decode_stream(
    container: Any, stream: Any, limits: AudioLimits, fmt: str, channels: int, rate: int
) -> tuple[np.ndarray, int, int]:
    """Decode packet by packet into mono (channel mean); stop once past the duration limit.

    The first decoded frame's layout and rate are the stream's (they can differ from the header's,
    e.g. HE-AAC with SBR / parametric stereo); a later change is refused. Returns (mono, channels, rate).
    """
    field = limits.field
    pieces: list[np.ndarray] = []
    total = 0
    max_samples = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                if not pieces:
                    channels, rate = frame.layout.nb_channels, frame.sample_rate
                    limits.check_channels(channels, f"decoded {fmt} audio")
                    limits.check_rate(rate, f"decoded {fmt} audio")
                    max_samples = math.ceil((limits.max_duration_s + DURATION_GRACE_S) * rate)
                elif frame.sample_rate != rate or frame.layout.nb_channels != channels:
                    raise InputError(
                        field,
                        f"the {fmt} stream changes from {channels} ch {rate} Hz to "
                        f"{frame.layout.nb_channels} ch {frame.sample_rate} Hz part way through",
                        fmt,
                    )
                mono = _frame_mono(frame, channels, field)
                pieces.append(mono)
                total += mono.size
                if total > max_samples:
                    raise InputTooLargeError(
                        field,
                        f"the audio runs past the limit of {limits.max_duration_s:g} s (decoding stopped at "
                        f"{total / rate:.2f} s)",
                        round(total / rate, 3),
                    )
    except av.error.FFmpegError as exc:
        raise InputError(
            field,
            f"the {fmt} audio could not be decoded: it is truncated or corrupt ({_ffmpeg_text(exc)})",
            fmt,
        ) from exc
    if not pieces:
        return np.zeros(0, np.float32), channels, rate
    return np.concatenate(pieces), channels, rate


def _frame_mono(frame: Any, channels: int, field: str) -> np.ndarray:
    """One decoded frame -> float32 mono, the mean of its channels (computed in float64)."""
    name = frame.format.name
    planar = frame.format.is_planar
    base = name[:-1] if planar else name
    if base not in _SAMPLE_FORMATS:
        raise InputError(field, f"the decoder gave an unsupported sample format {name}", name)
    offset, scale = _SAMPLE_FORMATS[base]
    raw = frame.to_ndarray()
    n = frame.samples
    arr = raw.reshape(channels, n) if planar else raw.reshape(n, channels).T
    x = arr.astype(np.float64)
    if offset:
        x += offset
    if scale != 1.0:
        x *= scale
    return x.mean(axis=0).astype(np.float32)


def _ffmpeg_text(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {text}"
