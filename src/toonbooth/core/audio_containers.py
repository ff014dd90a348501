"""Byte-level walks of audio containers, run before FFmpeg sees a file (used by `core/audio.py`).

Each walk reads only the structure, never a sample: RIFF/WAVE chunks (the `fmt ` and `data` chunks of
Microsoft's RIFF WAVE layout), FLAC STREAMINFO (RFC 9639 §8.2), Ogg pages (RFC 3533 §6) and the first
packet of each logical stream (RFC 7845 `OpusHead`, Vorbis I §4.2.2 identification header, Theora
§6.2), EBML elements of WebM/Matroska (RFC 8794 variable-size integers, RFC 9559 Segment / Tracks /
Cluster), ISO base media boxes (ISO/IEC 14496-12 §4.2 box header, `moov/trak/mdia/hdlr` handler types)
and ID3v2 tags (ID3v2.4 §3.1). They refuse, naming the caller's field: a file cut short (a chunk, page,
element or box that declares more bytes than remain), a video stream, too many channels, a sample
rate out of range, and a declared duration over the limit.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from toonbooth.core.errors import InputError, InputTooLargeError

__all__ = [
    "ACCEPTED_TEXT",
    "CLUSTER",
    "DURATION_GRACE_S",
    "AudioLimits",
    "DeclaredHeader",
    "check_structure",
    "ebml_element",
    "id3_end",
    "vint",
]

ACCEPTED_TEXT = "a WAV, MP3, Ogg (Opus/Vorbis), WebM (Opus/Vorbis), M4A (AAC) or FLAC audio file"
# Codec priming/padding can make decoded audio a little longer than what was recorded (an AAC or MP3
# frame is 1024/1152 samples, a Vorbis block up to 2048, Opus pre-skip 312): both duration checks
# tolerate this much over the limit.
DURATION_GRACE_S = 0.1


@dataclass(frozen=True)
class AudioLimits:
    """The caller's limits, with the checks that raise the errors naming `field`."""

    field: str
    max_duration_s: float
    max_channels: int
    min_rate: int
    max_rate: int

    def check_channels(self, channels: int, where: str) -> None:
        """Refuse 0 channels (`InputError`) or more than `max_channels` (`InputTooLargeError`)."""
        if channels < 1:
            raise InputError(self.field, f"the {where} declares {channels} audio channels", channels)
        if channels > self.max_channels:
            raise InputTooLargeError(
                self.field,
                f"the audio has {channels} channels ({where}), over the limit of {self.max_channels}",
                channels,
            )

    def check_rate(self, rate: int, where: str) -> None:
        """Refuse a sample rate outside [`min_rate`, `max_rate`]."""
        if not self.min_rate <= rate <= self.max_rate:
            raise InputError(
                self.field,
                f"the audio's sample rate is {rate:,} Hz ({where}); accepted are "
                f"{self.min_rate:,} to {self.max_rate:,} Hz",
                rate,
            )

    def check_declared_duration(self, seconds: float, where: str) -> None:
        """Refuse a declared duration over `max_duration_s` + `DURATION_GRACE_S` (`InputTooLargeError`)."""
        if seconds > self.max_duration_s + DURATION_GRACE_S:
            raise InputTooLargeError(
                self.field,
                f"the audio lasts {seconds:.2f} s ({where}), over the limit of {self.max_duration_s:g} s",
                round(seconds, 3),
            )

    def truncated(self, detail: str, value: object = None) -> InputError:
        """The error for a file cut short or broken (returned, for the caller to raise)."""
        return InputError(self.field, f"the file is truncated or corrupt: {detail}", value)


@dataclass(frozen=True)
class DeclaredHeader:
    """What the bytes-level walk learned: the exactly declared duration, None when not declared."""

    duration_s: float | None = None


def check_structure(fmt: str, data: bytes, limits: AudioLimits) -> DeclaredHeader:
    """Walk the container of a sniffed `fmt` before FFmpeg sees it; raises the errors, returns what the
    header declares exactly."""
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
    return DeclaredHeader()


_WAV_PCM_TAGS = {1: "PCM", 3: "IEEE float", 6: "A-law", 7: "mu-law"}


def _check_wav(data: bytes, limits: AudioLimits) -> DeclaredHeader:
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
        return DeclaredHeader()
    limits.check_declared_duration(data_size / block_align / rate, "WAV header")
    available = len(data) - data_start
    if available < data_size:
        raise limits.truncated(
            f"the WAV `data` chunk declares {data_size:,} bytes but only {available:,} follow", available
        )
    return DeclaredHeader(duration_s=(data_size // block_align) / rate)


def _check_flac(data: bytes, limits: AudioLimits) -> DeclaredHeader:
    """FLAC STREAMINFO (the first metadata block): rate 20 bits, channels-1 3 bits, total samples 36."""
    start = id3_end(data) or 0  # FFmpeg skips leading ID3v2 tags before any demuxer reads
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
        return DeclaredHeader()
    limits.check_declared_duration(total / rate, "FLAC header")
    return DeclaredHeader(duration_s=total / rate)


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


def _check_ogg(data: bytes, limits: AudioLimits) -> None:
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


def _ogg_stream(head: bytes, limits: AudioLimits, audio: list[str]) -> None:
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
CLUSTER = 0x1F43B675
# Elements that sit directly in a Segment (RFC 9559 §5.1): one of them ends an unknown-size Cluster.
_SEGMENT_CHILDREN = frozenset(
    {0x114D9B74, 0x1549A966, _TRACKS, CLUSTER, 0x1C53BB6B, 0x1941A469, 0x1043A770, 0x1254C367}
)
_MKV_TRACK_TYPES = {1: "video", 2: "audio", 3: "complex", 0x10: "logo", 0x11: "subtitle", 0x12: "buttons"}


class _BrokenEbmlError(Exception):
    """An EBML number or element that does not fit in the file."""


def vint(data: bytes, pos: int, *, is_id: bool) -> tuple[int | None, int]:
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


def ebml_element(data: bytes, pos: int) -> tuple[int, int, int | None]:
    """(id, body start, body size or None) of the element at `pos`."""
    eid, pos = vint(data, pos, is_id=True)
    size, pos = vint(data, pos, is_id=False)
    assert eid is not None
    return eid, pos, size


def _ebml_children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int | None]]:
    """The elements in data[start:end]; each known size must fit in `end`. An unknown-size child is
    yielded and the walk stops (its extent is found by the caller)."""
    pos = start
    while pos < end:
        eid, body, size = ebml_element(data, pos)
        if size is not None and body + size > end:
            raise _BrokenEbmlError(
                f"element 0x{eid:X} declares {size:,} bytes but only {end - body:,} remain"
            )
        yield eid, body, size
        if size is None:
            return
        pos = body + size


def _check_ebml(data: bytes, limits: AudioLimits) -> None:
    """WebM/Matroska: the EBML header's DocType; every element of the Segment fits in the file (live
    recordings from browsers have unknown-size Segment and Clusters: their blocks are walked); a video
    track in Tracks is refused."""
    try:
        eid, body, size = ebml_element(data, 0)
        if eid != _EBML_HEADER or size is None or body + size > len(data):
            raise _BrokenEbmlError("the EBML header is cut short")
        doctype = b""
        for cid, cbody, csize in _ebml_children(data, body, body + size):
            if cid == _DOCTYPE and csize is not None:
                doctype = data[cbody : cbody + csize].rstrip(b"\x00")
        if doctype not in (b"webm", b"matroska"):
            what = f"an EBML file of DocType {doctype.decode('latin-1')!r}"
            raise InputError(limits.field, f"expected {ACCEPTED_TEXT}, got {what}", what)
        if body + size >= len(data):
            raise _BrokenEbmlError("there is no Segment after the EBML header")
        seg_id, seg_body, seg_size = ebml_element(data, body + size)
        if seg_id != _SEGMENT:
            raise _BrokenEbmlError(f"element 0x{seg_id:X} where the Segment should start")
        if seg_size is not None and seg_body + seg_size > len(data):
            raise _BrokenEbmlError(
                f"the Segment declares {seg_size:,} bytes but only {len(data) - seg_body:,} follow"
            )
        _walk_segment(data, seg_body, len(data) if seg_size is None else seg_body + seg_size, limits)
    except _BrokenEbmlError as exc:
        raise limits.truncated(f"the WebM structure is broken: {exc}", len(data)) from exc


def _walk_segment(data: bytes, pos: int, end: int, limits: AudioLimits) -> None:
    while pos < end:
        eid, body, size = ebml_element(data, pos)
        if size is not None:
            if body + size > end:
                raise _BrokenEbmlError(
                    f"element 0x{eid:X} declares {size:,} bytes but only {end - body:,} remain"
                )
            if eid == _TRACKS:
                _mkv_tracks(data, body, body + size, limits)
            pos = body + size
            continue
        if eid != CLUSTER:
            raise _BrokenEbmlError(f"element 0x{eid:X} has an unknown size")
        pos = body  # an unknown-size Cluster ends where the next Segment-level element starts
        while pos < end:
            cid, cbody, csize = ebml_element(data, pos)
            if cid in _SEGMENT_CHILDREN:
                break
            if csize is None or cbody + csize > end:
                raise _BrokenEbmlError(
                    f"the block at byte {pos:,} is cut short" if csize else "a bad block size"
                )
            pos = cbody + csize


def _mkv_tracks(data: bytes, start: int, end: int, limits: AudioLimits) -> None:
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


def _iso_boxes(data: bytes, start: int, end: int, limits: AudioLimits) -> Iterator[tuple[bytes, int, int]]:
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


def _check_iso(data: bytes, limits: AudioLimits) -> None:
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


def id3_end(data: bytes) -> int | None:
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
