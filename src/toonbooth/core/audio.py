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
  is walked in Python first (WAV chunks, Ogg pages, EBML elements, MP4 boxes), so a truncated file or a
  container with a video track is refused before FFmpeg sees it;
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
import os
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from scipy.signal import resample_poly

from toonbooth.core.errors import InputError, InputTooLargeError

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
_ACCEPTED_TEXT = "a WAV, MP3, Ogg (Opus/Vorbis), WebM (Opus/Vorbis), M4A (AAC) or FLAC audio file"

DEFAULT_MAX_CHANNELS = 8
DEFAULT_MIN_RATE = 8_000
DEFAULT_MAX_RATE = 192_000
# Codec priming/padding can make decoded audio a little longer than what was recorded (an AAC or MP3
# frame is 1024/1152 samples, a Vorbis block up to 2048, Opus pre-skip 312): both duration checks
# tolerate this much over the limit.
DURATION_GRACE_S = 0.1
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

AudioSource = bytes | bytearray | memoryview | Path


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
    data = _read_source(source, field=field, max_bytes=max_bytes)
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
    limits = _Limits(field, max_duration_s, max_channels, min_rate, max_rate)
    fmt = sniff_audio(data, field=field)
    header = _check_structure(fmt, data, limits)
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
        raise InputError(field, f"expected {_ACCEPTED_TEXT}, got 0 bytes (an empty file)", 0)
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
    raise InputError(field, f"expected {_ACCEPTED_TEXT}, got {what}", what)


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


def _read_source(source: object, *, field: str, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_bytes(len(data), field=field, max_bytes=max_bytes)
        return data
    if isinstance(source, Path):
        try:
            with source.open("rb") as fh:
                _check_bytes(os.fstat(fh.fileno()).st_size, field=field, max_bytes=max_bytes)
                data = fh.read(max_bytes + 1)
        except FileNotFoundError as exc:
            raise InputError(field, f"file not found: {source}", str(source)) from exc
        except IsADirectoryError as exc:
            raise InputError(field, f"{source} is a folder, not an audio file", str(source)) from exc
        except PermissionError as exc:
            raise InputError(field, f"no permission to read {source}", str(source)) from exc
        _check_bytes(len(data), field=field, max_bytes=max_bytes)  # the file grew while we read it
        return data
    raise InputError(
        field,
        f"expected audio bytes or a pathlib.Path, got {type(source).__name__}",
        type(source).__name__,
    )


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
        raise InputError(field, f"expected {_ACCEPTED_TEXT}, got {what}", what)
    if not brands & _ISO_AUDIO_BRANDS:
        what = f"an ISO media file of brand {major.decode('latin-1')!r}"
        raise InputError(field, f"expected {_ACCEPTED_TEXT}, got {what}", what)


def _id3_end(data: bytes) -> int | None:
    """Where the audio starts after the leading ID3v2 tags (ID3v2.4 §3.1: a 10-byte header with a
    28-bit syncsafe size, plus a 10-byte footer when flagged); None if the tags run past the end."""
    pos = 0
    for _ in range(16):  # taggers sometimes stack tags; more than a few is not a real file
        if data[pos : pos + 3] != b"ID3":
            return pos
        if pos + 10 > len(data):
            return None
        size = 0
        for b in data[pos + 6 : pos + 10]:
            size = (size << 7) | (b & 0x7F)
        pos += 10 + size + (10 if data[pos + 5] & 0x10 else 0)
        if pos >= len(data):
            return None
    return None


def _sniff_after_id3(data: bytes, *, field: str) -> str:
    """ID3v2 tags are followed by MP3 frames (or, rarely, a FLAC stream), after optional zero padding."""
    end = _id3_end(data)
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
    raise InputError(field, f"expected {_ACCEPTED_TEXT}, got {what}", what)


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
# Structure checks before decoding (pure Python, bytes only)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Limits:
    field: str
    max_duration_s: float
    max_channels: int
    min_rate: int
    max_rate: int

    def check_channels(self, channels: int, where: str) -> None:
        if channels < 1:
            raise InputError(self.field, f"the {where} declares {channels} audio channels", channels)
        if channels > self.max_channels:
            raise InputTooLargeError(
                self.field,
                f"the audio has {channels} channels ({where}), over the limit of {self.max_channels}",
                channels,
            )

    def check_rate(self, rate: int, where: str) -> None:
        if not self.min_rate <= rate <= self.max_rate:
            raise InputError(
                self.field,
                f"the audio's sample rate is {rate:,} Hz ({where}); accepted are "
                f"{self.min_rate:,} to {self.max_rate:,} Hz",
                rate,
            )

    def check_declared_duration(self, seconds: float, where: str) -> None:
        if seconds > self.max_duration_s + DURATION_GRACE_S:
            raise InputTooLargeError(
                self.field,
                f"the audio lasts {seconds:.2f} s ({where}), over the limit of {self.max_duration_s:g} s",
                round(seconds, 3),
            )

    def truncated(self, detail: str, value: object = None) -> InputError:
        return InputError(self.field, f"the file is truncated or corrupt: {detail}", value)


@dataclass(frozen=True)
class _Header:
    """What the bytes-level walk learned: the exactly declared duration, None when not declared."""

    duration_s: float | None = None


def _check_structure(fmt: str, data: bytes, limits: _Limits) -> _Header:
    if fmt == "wav":
        return _check_wav(data, limits)
    if fmt == "ogg":
        _check_ogg(data, limits)
    elif fmt == "webm":
        _check_ebml(data, limits)
    elif fmt == "m4a":
        _check_iso(data, limits)
    elif fmt == "flac":
        return _check_flac(data, limits)
    return _Header()


_WAV_PCM_TAGS = {1: "PCM", 3: "IEEE float", 6: "A-law", 7: "mu-law"}


def _check_wav(data: bytes, limits: _Limits) -> _Header:
    """RIFF chunks: `fmt ` (format tag, channels, rate, block align) and `data` (its size)."""
    pos, fmt_chunk, data_size, data_start = 12, None, None, 0
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if cid == b"fmt ":
            fmt_chunk = data[pos + 8 : pos + 8 + size]
            if len(fmt_chunk) < 16:
                raise limits.truncated("the WAV `fmt ` chunk is cut short", len(data))
        elif cid == b"data":
            data_size, data_start = size, pos + 8
            break
        pos += 8 + size + (size & 1)
    if fmt_chunk is None:
        raise limits.truncated("the WAV has no `fmt ` chunk before its audio", len(data))
    if data_size is None:
        raise limits.truncated("the WAV has no `data` chunk", len(data))
    tag, channels, rate, _byte_rate, block_align = struct.unpack("<HHIIH", fmt_chunk[:14])
    if tag == 0xFFFE and len(fmt_chunk) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID's first 2 bytes
        (tag,) = struct.unpack("<H", fmt_chunk[24:26])
    limits.check_channels(channels, "WAV header")
    limits.check_rate(rate, "WAV header")
    if tag not in _WAV_PCM_TAGS:
        raise InputError(
            limits.field,
            f"the WAV holds audio in format 0x{tag:04x}; accepted are PCM, float, A-law and mu-law",
            f"0x{tag:04x}",
        )
    if block_align < channels:
        raise limits.truncated(f"the WAV header's block size {block_align} is too small", block_align)
    if data_size in (0, 0xFFFFFFFF):  # streaming writers leave the size open: judged while decoding
        return _Header()
    limits.check_declared_duration(data_size / block_align / rate, "WAV header")
    available = len(data) - data_start
    if available < data_size:
        raise limits.truncated(
            f"the WAV `data` chunk declares {data_size:,} bytes but only {available:,} follow", available
        )
    return _Header(duration_s=(data_size // block_align) / rate)


def _check_flac(data: bytes, limits: _Limits) -> _Header:
    """FLAC STREAMINFO (the first metadata block): rate 20 bits, channels-1 3 bits, total samples 36."""
    start = _id3_end(data) or 0  # FFmpeg skips leading ID3v2 tags before any demuxer reads
    if len(data) < start + 8 + 34:
        raise limits.truncated("the FLAC STREAMINFO block is cut short", len(data))
    if data[start + 4] & 0x7F != 0:
        raise limits.truncated("the FLAC stream does not start with STREAMINFO", data[start + 4])
    bits = int.from_bytes(data[start + 18 : start + 26], "big")
    rate = bits >> 44
    channels = ((bits >> 41) & 0x7) + 1
    total = bits & ((1 << 36) - 1)
    limits.check_channels(channels, "FLAC header")
    limits.check_rate(rate, "FLAC header")
    if total == 0:  # unknown (streamed FLAC)
        return _Header()
    limits.check_declared_duration(total / rate, "FLAC header")
    return _Header(duration_s=total / rate)


# Ogg logical streams by the first bytes of their first (BOS) packet.
_OGG_AUDIO = {b"OpusHead": "opus", b"\x01vorbis": "vorbis", b"\x7fFLAC": "flac"}
_OGG_REFUSED = {
    b"\x80theora": "Theora video",
    b"OVP80": "VP8 video",
    b"BBCD\x00": "Dirac video",
    b"\x80daala": "Daala video",
    b"\x80kate": "Kate subtitles",
    b"Speex   ": "Speex audio (not supported)",
    b"CELT    ": "CELT audio (not supported)",
    b"PCM     ": "Ogg PCM (not supported)",
}
_OGG_IGNORED = (b"fishead\x00", b"fisbone\x00", b"index\x00")  # Ogg Skeleton metadata


def _check_ogg(data: bytes, limits: _Limits) -> None:
    """Walk every Ogg page (RFC 3533 §6): a page cut short is truncation; the BOS pages name the codecs."""
    pos, audio, in_headers = 0, [], True
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS":
            raise limits.truncated(f"no Ogg page starts at byte {pos:,}", pos)
        if pos + 27 > len(data):
            raise limits.truncated(f"the Ogg page at byte {pos:,} is cut short", pos)
        flags, nsegs = data[pos + 5], data[pos + 26]
        table = data[pos + 27 : pos + 27 + nsegs]
        body_start = pos + 27 + nsegs
        end = body_start + sum(table)
        if len(table) < nsegs or end > len(data):
            raise limits.truncated(f"the last Ogg page (at byte {pos:,}) is cut short", pos)
        if flags & 0x02:  # beginning of a logical stream
            if not in_headers:
                raise InputError(
                    limits.field, "the Ogg file chains several recordings; upload one recording", pos
                )
            head = data[body_start:end]
            _ogg_stream(head, limits, audio)
        else:
            in_headers = False
        pos = end
    if not audio:
        raise InputError(limits.field, "the Ogg file has no Opus, Vorbis or FLAC audio stream", "ogg")


def _ogg_stream(head: bytes, limits: _Limits, audio: list[str]) -> None:
    for magic, name in _OGG_AUDIO.items():
        if head.startswith(magic):
            if name == "opus" and len(head) >= 19:
                limits.check_channels(head[9], "Opus header")
            elif name == "vorbis" and len(head) >= 16:
                limits.check_channels(head[11], "Vorbis header")
                limits.check_rate(struct.unpack("<I", head[12:16])[0], "Vorbis header")
            audio.append(name)
            return
    for magic, name in _OGG_REFUSED.items():
        if head.startswith(magic):
            if "video" in name:
                raise InputError(
                    limits.field, f"the Ogg file holds {name}; expected audio only (a voice recording)", name
                )
            raise InputError(limits.field, f"the Ogg file holds {name}", name)
    if head.startswith(_OGG_IGNORED):
        return
    raise InputError(limits.field, f"the Ogg file holds an unknown stream (starts with {head[:8]!r})", "ogg")


_EBML_HEADER, _DOCTYPE = 0x1A45DFA3, 0x4282
_SEGMENT, _TRACKS, _TRACK_ENTRY, _TRACK_TYPE, _CODEC_ID = 0x18538067, 0x1654AE6B, 0xAE, 0x83, 0x86
_CLUSTER = 0x1F43B675
# Elements that sit directly in a Segment (RFC 9559 §5.1): one of them ends an unknown-size Cluster.
_SEGMENT_CHILDREN = frozenset(
    {0x114D9B74, 0x1549A966, _TRACKS, _CLUSTER, 0x1C53BB6B, 0x1941A469, 0x1043A770, 0x1254C367}
)
_MKV_TRACK_TYPES = {1: "video", 2: "audio", 3: "complex", 0x10: "logo", 0x11: "subtitle", 0x12: "buttons"}


class _BrokenEbmlError(Exception):
    """An EBML number or element that does not fit in the file."""


def _vint(data: bytes, pos: int, *, is_id: bool) -> tuple[int | None, int]:
    """One EBML variable-size integer (RFC 8794 §4): (value, next pos); a size of all ones is None
    (unknown size). An element ID keeps its length-marker bits, as IDs are written in the specs."""
    if pos >= len(data) or data[pos] == 0:
        raise _BrokenEbmlError(f"no valid EBML number at byte {pos:,}")
    length = 9 - data[pos].bit_length()
    if pos + length > len(data):
        raise _BrokenEbmlError(f"an EBML number is cut short at byte {pos:,}")
    value = int.from_bytes(data[pos : pos + length], "big")
    if is_id:
        return value, pos + length
    value &= (1 << (7 * length)) - 1
    return (None if value == (1 << (7 * length)) - 1 else value), pos + length


def _ebml_element(data: bytes, pos: int) -> tuple[int, int, int | None]:
    """(id, body start, body size or None) of the element at `pos`."""
    eid, pos = _vint(data, pos, is_id=True)
    size, pos = _vint(data, pos, is_id=False)
    assert eid is not None
    return eid, pos, size


def _ebml_children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int | None]]:
    """The elements in data[start:end]; each known size must fit in `end`. An unknown-size child is
    yielded and the walk stops (its extent is found by the caller)."""
    pos = start
    while pos < end:
        eid, body, size = _ebml_element(data, pos)
        if size is not None and body + size > end:
            raise _BrokenEbmlError(
                f"element 0x{eid:X} declares {size:,} bytes but only {end - body:,} remain"
            )
        yield eid, body, size
        if size is None:
            return
        pos = body + size


def _check_ebml(data: bytes, limits: _Limits) -> None:
    """WebM/Matroska: the EBML header's DocType; every element of the Segment fits in the file (live
    recordings from browsers have unknown-size Segment and Clusters: their blocks are walked); a video
    track in Tracks is refused."""
    try:
        eid, body, size = _ebml_element(data, 0)
        if eid != _EBML_HEADER or size is None or body + size > len(data):
            raise _BrokenEbmlError("the EBML header is cut short")
        doctype = b""
        for cid, cbody, csize in _ebml_children(data, body, body + size):
            if cid == _DOCTYPE and csize is not None:
                doctype = data[cbody : cbody + csize].rstrip(b"\x00")
        if doctype not in (b"webm", b"matroska"):
            what = f"an EBML file of DocType {doctype.decode('latin-1')!r}"
            raise InputError(limits.field, f"expected {_ACCEPTED_TEXT}, got {what}", what)
        if body + size >= len(data):
            raise _BrokenEbmlError("there is no Segment after the EBML header")
        seg_id, seg_body, seg_size = _ebml_element(data, body + size)
        if seg_id != _SEGMENT:
            raise _BrokenEbmlError(f"element 0x{seg_id:X} where the Segment should start")
        if seg_size is not None and seg_body + seg_size > len(data):
            raise _BrokenEbmlError(
                f"the Segment declares {seg_size:,} bytes but only {len(data) - seg_body:,} follow"
            )
        _walk_segment(data, seg_body, len(data) if seg_size is None else seg_body + seg_size, limits)
    except _BrokenEbmlError as exc:
        raise limits.truncated(f"the WebM structure is broken: {exc}", len(data)) from exc


def _walk_segment(data: bytes, pos: int, end: int, limits: _Limits) -> None:
    while pos < end:
        eid, body, size = _ebml_element(data, pos)
        if size is not None:
            if body + size > end:
                raise _BrokenEbmlError(
                    f"element 0x{eid:X} declares {size:,} bytes but only {end - body:,} remain"
                )
            if eid == _TRACKS:
                _mkv_tracks(data, body, body + size, limits)
            pos = body + size
            continue
        if eid != _CLUSTER:
            raise _BrokenEbmlError(f"element 0x{eid:X} has an unknown size")
        pos = body  # an unknown-size Cluster ends where the next Segment-level element starts
        while pos < end:
            cid, cbody, csize = _ebml_element(data, pos)
            if cid in _SEGMENT_CHILDREN:
                break
            if csize is None or cbody + csize > end:
                raise _BrokenEbmlError(
                    f"the block at byte {pos:,} is cut short" if csize else "a bad block size"
                )
            pos = cbody + csize


def _mkv_tracks(data: bytes, start: int, end: int, limits: _Limits) -> None:
    kinds = []
    for eid, body, size in _ebml_children(data, start, end):
        if eid != _TRACK_ENTRY or size is None:
            continue
        ttype, codec = 0, ""
        for cid, cbody, csize in _ebml_children(data, body, body + size):
            if cid == _TRACK_TYPE and csize:
                ttype = int.from_bytes(data[cbody : cbody + csize], "big")
            elif cid == _CODEC_ID and csize:
                codec = data[cbody : cbody + csize].rstrip(b"\x00").decode("latin-1")
        kind = _MKV_TRACK_TYPES.get(ttype, f"type {ttype}")
        if kind == "video":
            raise InputError(
                limits.field,
                f"the WebM/Matroska file holds a video track ({codec or 'unknown codec'}); expected audio only",
                codec,
            )
        kinds.append(kind)
    if kinds and "audio" not in kinds:
        raise InputError(limits.field, f"the WebM/Matroska file has no audio track (tracks: {kinds})", kinds)


_ISO_VIDEO_HANDLERS = {b"vide": "video", b"pict": "picture", b"auxv": "auxiliary video"}


def _iso_boxes(data: bytes, start: int, end: int, limits: _Limits) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, end) of the ISO BMFF boxes in data[start:end] (14496-12 §4.2)."""
    pos = start
    while pos + 8 <= end:
        size, btype = struct.unpack(">I4s", data[pos : pos + 8])
        head = 8
        if size == 1:
            if pos + 16 > end:
                raise limits.truncated(f"the {btype!r} box header is cut short", pos)
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            head = 16
        elif size == 0:
            size = end - pos
        if size < head:
            raise limits.truncated(f"the {btype!r} box at byte {pos:,} has a bad size {size}", pos)
        if pos + size > end:
            raise limits.truncated(
                f"the {btype.decode('latin-1')!r} box declares {size:,} bytes but only {end - pos:,} remain",
                end - pos,
            )
        yield btype, pos + head, pos + size
        pos += size
    if pos != end and end - pos < 8:
        raise limits.truncated(f"{end - pos} stray bytes after the last box", pos)


def _check_iso(data: bytes, limits: _Limits) -> None:
    """Top-level boxes fill the file exactly; `moov` exists; its tracks' handlers are audio only."""
    moov = None
    for btype, body, end in _iso_boxes(data, 0, len(data), limits):
        if btype == b"moov":
            moov = (body, end)
    if moov is None:
        raise limits.truncated("the M4A has no `moov` box (an unfinished or cut recording)", len(data))
    handlers = []
    for btype, body, end in _iso_boxes(data, *moov, limits):
        if btype != b"trak":
            continue
        for t2, b2, e2 in _iso_boxes(data, body, end, limits):
            if t2 != b"mdia":
                continue
            for t3, b3, e3 in _iso_boxes(data, b2, e2, limits):
                if t3 == b"hdlr" and e3 - b3 >= 12:
                    handlers.append(data[b3 + 8 : b3 + 12])
    for handler in handlers:
        if handler in _ISO_VIDEO_HANDLERS:
            raise InputError(
                limits.field,
                f"the MP4/M4A file holds a {_ISO_VIDEO_HANDLERS[handler]} track; expected audio only "
                "(an .m4a voice recording)",
                handler.decode("latin-1"),
            )
    if b"soun" not in handlers:
        raise InputError(
            limits.field, "the MP4/M4A file has no audio track", [h.decode("latin-1") for h in handlers]
        )


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def _refuse_nested_open(url: str, flags: int, options: dict) -> Any:
    raise PermissionError(f"opening {url!r} from inside an audio file is not allowed")


def _has_frame_count_header(data: bytes) -> bool:
    """MP3: a Xing/Info (LAME) or VBRI header in the first frame gives an exact frame count; without it
    FFmpeg's duration is only an estimate from the bit rate."""
    head = data[_id3_end(data) or 0 :][:4096]
    sync = next((i for i in range(len(head) - 3) if _mpeg_audio_header(head, i)), None)
    if sync is None:
        return False
    frame = head[sync : sync + 200]
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def _decode(fmt: str, data: bytes, limits: _Limits, header: _Header) -> tuple[int, int, str, np.ndarray]:
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
    container: Any, stream: Any, limits: _Limits, fmt: str, channels: int, rate: int
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
