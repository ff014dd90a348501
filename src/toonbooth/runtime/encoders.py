"""Encoders for typed media outputs: MP4 (H.264 + AAC), animated GIF, animated WebP, WAV; a video probe.

* MP4: PyAV (https://pyav.org; FFmpeg's libavformat/libavcodec with libx264) writes H.264 High profile,
  `yuv420p` (4:2:0 chroma needs even sizes; frame sizes are made a multiple of 16, the macroblock size,
  by padding with the edge pixels, centred, or by a centred crop: `fit`), tagged BT.601 limited range
  (what swscale's RGB->YUV conversion produces), and AAC-LC audio at the input rate when AAC has it
  (ISO/IEC 14496-3 sampling-frequency table), else resampled to 48 kHz. Audio and video packets are
  interleaved as they are produced; the `moov` index is moved to the front (`movflags=+faststart`) so
  players and messengers can start before the whole file arrived. FFmpeg's faststart pass re-reads the
  file by name, so the MP4 is written to a private temporary folder that is always removed.
* GIF and animated WebP (stickers): Pillow (https://pillow.readthedocs.io, "Image file formats" GIF and
  WebP sections). Frame counts over `max_frames` are reduced by even subsampling that keeps the total
  duration; frames are scaled down to `max_side`; frame delays are at least 20 ms because browsers
  play shorter GIF/WebP delays (0-10 ms) as 100 ms. GIFs share one palette for all frames (median cut
  over a sample of frames, so colours do not flicker) and keep transparency as one palette index
  (alpha < 128 is transparent), with disposal 2 (restore to background) so transparent areas never show
  the previous frame. WebP keeps the full alpha channel.
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import av.error
import numpy as np
from PIL import Image

from ..core.audio import encode_wav, resample
from ..core.errors import InputError

__all__ = [
    "AAC_SAMPLE_RATES",
    "CONTENT_TYPE_GIF",
    "CONTENT_TYPE_MP4",
    "CONTENT_TYPE_PNG",
    "CONTENT_TYPE_WAV",
    "CONTENT_TYPE_WEBP",
    "EXTENSIONS",
    "MIN_FRAME_MS",
    "VideoProbe",
    "encode_gif",
    "encode_mp4",
    "encode_wav",
    "encode_webp_animated",
    "h264_encoder_name",
    "plan_frames",
    "probe_video",
]

CONTENT_TYPE_MP4 = "video/mp4"
CONTENT_TYPE_GIF = "image/gif"
CONTENT_TYPE_WEBP = "image/webp"
CONTENT_TYPE_WAV = "audio/wav"
CONTENT_TYPE_PNG = "image/png"
EXTENSIONS: dict[str, str] = {
    CONTENT_TYPE_MP4: ".mp4",
    CONTENT_TYPE_GIF: ".gif",
    CONTENT_TYPE_WEBP: ".webp",
    CONTENT_TYPE_WAV: ".wav",
    CONTENT_TYPE_PNG: ".png",
}

# ISO/IEC 14496-3 sampling_frequency_index table (the rates an AAC stream can declare).
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
MIN_FRAME_MS = 20
_AAC_FRAME = 1024  # samples per AAC-LC frame
_MACROBLOCK = 16
# H.264 encoders in order of preference; the first one this FFmpeg build can open is used.
_H264_ENCODERS = (
    "libx264",
    "libopenh264",
    "h264_nvenc",
    "h264_qsv",
    "h264_vaapi",
    "h264_videotoolbox",
    "h264_mf",
)
_AVCOL_BT601 = 6  # AVCOL_SPC_SMPTE170M / AVCOL_PRI_SMPTE170M / AVCOL_TRC_SMPTE170M
_AVCOL_RANGE_MPEG = 1

Frames = Iterable[np.ndarray]


# --------------------------------------------------------------------------------------------------
# MP4
# --------------------------------------------------------------------------------------------------


def h264_encoder_name() -> str:
    """The H.264 encoder this PyAV build can open (libx264 in the PyPI wheels), or RuntimeError."""
    tried = []
    for name in _H264_ENCODERS:
        try:
            codec = av.codec.Codec(name, "w")
        except (av.error.FFmpegError, ValueError):
            continue
        ctx = av.codec.CodecContext.create(codec)
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 64, 64, "yuv420p", Fraction(1, 25)
        try:
            ctx.open()
        except av.error.FFmpegError as exc:  # a hardware encoder without its hardware
            tried.append(f"{name} ({exc})")
            continue
        finally:
            del ctx
        return name
    raise RuntimeError(
        "this PyAV/FFmpeg build has no usable H.264 encoder"
        + (f" (tried {', '.join(tried)})" if tried else "")
    )


def encode_mp4(
    frames: Frames,
    fps: float | Fraction,
    audio: tuple[np.ndarray, int] | None = None,
    *,
    crf: int = 20,
    preset: str = "medium",
    fit: Literal["pad", "crop"] = "pad",
    audio_bitrate: int = 128_000,
) -> bytes:
    """MP4 bytes: H.264 High `yuv420p` video at `fps`, plus AAC-LC `audio` = (samples, rate) if given.

    `frames`: a list or iterator of HxWx3 (RGB) or HxWx4 (RGBA, composited over white) uint8 arrays of
    one size. Sizes that are not multiples of 16 are padded up with the edge pixels, centred
    (`fit="pad"`, nothing of the picture is lost) or cropped down, centred (`fit="crop"`). `audio`
    samples are float in [-1, 1], shape (n,) mono or (n, 2) stereo; rates AAC cannot declare are
    resampled to 48 kHz. Frame i is shown at i / fps; audio sample 0 at time 0. `crf`/`preset` are
    libx264's (ignored by other encoders).
    """
    rate = _fps_fraction(fps)
    if fit not in ("pad", "crop"):
        raise ValueError(f"fit must be 'pad' or 'crop', got {fit!r}")
    encoder = h264_encoder_name()
    pcm, audio_rate = _prepare_audio(audio) if audio is not None else (None, 0)
    with tempfile.TemporaryDirectory(prefix="toonbooth-mp4-") as tmp:
        path = Path(tmp) / "out.mp4"
        _write_mp4(path, iter(frames), rate, encoder, crf, preset, fit, pcm, audio_rate, audio_bitrate)
        return path.read_bytes()


def _fps_fraction(fps: float | Fraction) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not math.isfinite(float(fps)):
        raise ValueError(f"fps must be a finite number, got {fps!r}")
    value = fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1001)
    if not 0 < value <= 240:
        raise ValueError(f"fps must be in (0, 240], got {fps!r}")
    return value


def _prepare_audio(audio: tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    """-> float32 planar (channels, n) at an AAC rate."""
    samples, sr = audio
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    elif x.ndim == 2 and x.shape[1] in (1, 2):
        x = x.T
    else:
        raise ValueError(f"audio samples must be (n,) or (n, 1|2), got shape {np.shape(samples)}")
    if not np.isfinite(x).all():
        raise ValueError("audio samples contain NaN or infinity")
    if x.shape[1] == 0:
        raise ValueError("audio has no samples")
    sr = int(sr)
    if sr < 1:
        raise ValueError(f"audio sample rate must be positive, got {sr}")
    if sr not in AAC_SAMPLE_RATES:
        x = np.stack([resample(ch, sr, 48000) for ch in x])
        sr = 48000
    return np.ascontiguousarray(np.clip(x, -1.0, 1.0)), sr


def _target_size(height: int, width: int, fit: str) -> tuple[int, int]:
    if fit == "pad":
        return -(-height // _MACROBLOCK) * _MACROBLOCK, -(-width // _MACROBLOCK) * _MACROBLOCK
    return max(_MACROBLOCK, height // _MACROBLOCK * _MACROBLOCK), max(
        _MACROBLOCK, width // _MACROBLOCK * _MACROBLOCK
    )


def _fit_frame(rgb: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h < out_h or w < out_w:
        top, left = (max(0, out_h - h)) // 2, (max(0, out_w - w)) // 2
        rgb = np.pad(
            rgb, ((top, max(0, out_h - h) - top), (left, max(0, out_w - w) - left), (0, 0)), mode="edge"
        )
    h, w = rgb.shape[:2]
    top, left = (h - out_h) // 2, (w - out_w) // 2
    return np.ascontiguousarray(rgb[top : top + out_h, left : left + out_w])


def _as_rgb(frame: np.ndarray, index: int) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 2 or a.shape[1] < 2:
        raise ValueError(f"frame {index}: expected HxWx3 or HxWx4 uint8, got {a.dtype} {a.shape}")
    if a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.uint16)
        a = ((a[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return a


def _write_mp4(
    path: Path,
    frames: Iterator[np.ndarray],
    rate: Fraction,
    encoder: str,
    crf: int,
    preset: str,
    fit: str,
    pcm: np.ndarray | None,
    audio_rate: int,
    audio_bitrate: int,
) -> None:
    first = next(frames, None)
    if first is None:
        raise ValueError("encode_mp4 needs at least one frame")
    first_rgb = _as_rgb(first, 0)
    in_h, in_w = first_rgb.shape[:2]
    out_h, out_w = _target_size(in_h, in_w, fit)
    options = {"crf": str(crf), "preset": preset, "profile": "high"} if encoder == "libx264" else {}
    with av.open(str(path), "w", format="mp4", container_options={"movflags": "+faststart"}) as out:
        video = out.add_stream(encoder, rate=rate, options=options)
        video.width, video.height, video.pix_fmt = out_w, out_h, "yuv420p"
        ctx = video.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = _AVCOL_BT601, _AVCOL_BT601, _AVCOL_BT601
        ctx.color_range = _AVCOL_RANGE_MPEG
        sound = None
        if pcm is not None:
            layout = "mono" if pcm.shape[0] == 1 else "stereo"
            sound = out.add_stream("aac", rate=audio_rate, layout=layout)
            sound.bit_rate = audio_bitrate
        audio_pos = 0
        index = 0
        rgb: np.ndarray | None = first_rgb
        while rgb is not None:
            if rgb.shape[:2] != (in_h, in_w):
                raise ValueError(
                    f"frame {index}: size {rgb.shape[1]}x{rgb.shape[0]}, the first was {in_w}x{in_h}"
                )
            vf = av.VideoFrame.from_ndarray(_fit_frame(rgb, out_h, out_w), format="rgb24")
            vf = vf.reformat(format="yuv420p")
            vf.pts = index
            out.mux(video.encode(vf))
            index += 1
            if sound is not None and pcm is not None:  # whole AAC frames up to this frame's end, interleaved
                until = min(pcm.shape[1], math.ceil(index / rate * audio_rate))
                until = audio_pos + (until - audio_pos) // _AAC_FRAME * _AAC_FRAME
                audio_pos = _mux_audio(out, sound, pcm, audio_pos, until, audio_rate)
            nxt = next(frames, None)
            rgb = None if nxt is None else _as_rgb(nxt, index)
        out.mux(video.encode(None))
        if sound is not None and pcm is not None:
            _mux_audio(out, sound, pcm, audio_pos, pcm.shape[1], audio_rate)
            out.mux(sound.encode(None))


def _mux_audio(out: Any, stream: Any, pcm: np.ndarray, start: int, stop: int, sr: int) -> int:
    pos = start
    while pos < stop:
        end = min(pos + _AAC_FRAME, stop)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm[:, pos:end]),
            format="fltp",
            layout="mono" if pcm.shape[0] == 1 else "stereo",
        )
        frame.sample_rate = sr
        frame.pts = pos
        frame.time_base = Fraction(1, sr)
        out.mux(stream.encode(frame))
        pos = end
    return pos


# --------------------------------------------------------------------------------------------------
# Stickers: GIF and animated WebP
# --------------------------------------------------------------------------------------------------


def plan_frames(
    n_frames: int, fps: float, max_frames: int | None, unit_ms: int = 1
) -> tuple[list[int], list[int]]:
    """Which of `n_frames` frames at `fps` to keep and each kept frame's delay in ms.

    Keeps every frame when allowed; over `max_frames` (or when the delay would fall under
    `MIN_FRAME_MS`), keeps frames evenly spread (kept k is input floor(k * n / m)). Delays are
    multiples of `unit_ms` (10 for GIF) that add up to the input's duration n / fps rounded to
    `unit_ms`, rounding each frame's end time rather than each delay so errors never accumulate.
    """
    if n_frames < 1:
        raise ValueError("need at least one frame")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps!r}")
    total_ms = n_frames * 1000.0 / fps
    keep = n_frames if max_frames is None else max(1, min(n_frames, int(max_frames)))
    keep = max(1, min(keep, int(total_ms // MIN_FRAME_MS)))
    indices = [k * n_frames // keep for k in range(keep)]
    ends = [round(total_ms * (k + 1) / keep / unit_ms) * unit_ms for k in range(keep)]
    delays = [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    if delays[-1] < unit_ms:  # a sub-unit total
        delays[-1] = unit_ms
    return indices, delays


def _sticker_frames(arrays: list[np.ndarray], max_side: int | None) -> list[Image.Image]:
    out: list[Image.Image] = []
    size = None
    for i, frame in enumerate(arrays):
        a = np.asarray(frame)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ValueError(f"frame {i}: expected HxWx3 or HxWx4 uint8, got {a.dtype} {a.shape}")
        if size is None:
            size = a.shape[:2]
        elif a.shape[:2] != size:
            raise ValueError(f"frame {i}: size {a.shape[1]}x{a.shape[0]}, the first was {size[1]}x{size[0]}")
        img = Image.fromarray(np.ascontiguousarray(a), "RGBA" if a.shape[2] == 4 else "RGB")
        if max_side is not None and max(img.size) > max_side:
            scale = max_side / max(img.size)
            img = img.resize(
                (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                Image.Resampling.LANCZOS,
            )
        out.append(img)
    return out


def _select(
    frames: Frames, fps: float, max_frames: int | None, unit_ms: int
) -> tuple[list[np.ndarray], list[int]]:
    arrays = list(frames)
    if not arrays:
        raise ValueError("need at least one frame")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    indices, delays = plan_frames(len(arrays), float(fps), max_frames, unit_ms)
    return [arrays[i] for i in indices], delays


def encode_gif(
    frames: Frames,
    fps: float,
    *,
    loop: int | None = 0,
    max_frames: int | None = None,
    max_side: int | None = None,
    dither: bool = False,
) -> bytes:
    """Animated GIF bytes. `frames`: HxWx3 or HxWx4 uint8 arrays of one size (RGBA: alpha < 128 becomes
    transparent). `loop`: 0 = forever, n = the GIF loop count n, None = play once (no loop extension).
    `dither`: Floyd-Steinberg against the shared palette (off by default: dithering noise crawls
    between frames of flat cartoon colours)."""
    chosen, delays = _select(frames, fps, max_frames, unit_ms=10)
    images = _sticker_frames(chosen, max_side)
    transparent = any(img.mode == "RGBA" and img.getextrema()[3][0] < 128 for img in images)
    palette = _shared_palette(images, 255 if transparent else 256)
    n_colors = len(palette) // 3
    method = Image.Dither.FLOYDSTEINBERG if dither else Image.Dither.NONE
    pal_img = Image.new("P", (1, 1))
    pal_img.putpalette(palette)
    out_frames = []
    full_palette = palette + [0, 0, 0] * (256 - n_colors)
    for img in images:
        indexed = img.convert("RGB").quantize(palette=pal_img, dither=method)
        idx = np.array(indexed, dtype=np.uint8)
        if transparent:
            alpha = np.array(img.getchannel("A")) if img.mode == "RGBA" else None
            if alpha is not None:
                idx[alpha < 128] = n_colors
        frame = Image.fromarray(idx, "P")
        frame.putpalette(full_palette)
        out_frames.append(frame)
    buf = io.BytesIO()
    params: dict[str, Any] = {
        "save_all": True,
        "append_images": out_frames[1:],
        "duration": delays,
        "disposal": 2,
        "optimize": False,
    }
    if transparent:
        params["transparency"] = n_colors
    if loop is not None:
        params["loop"] = int(loop)
    out_frames[0].save(buf, format="GIF", **params)
    return buf.getvalue()


def _shared_palette(images: list[Image.Image], colors: int) -> list[int]:
    """One median-cut palette (at most `colors` entries) from the opaque pixels of up to 8 frames."""
    step = max(1, len(images) // 8)
    pixels = []
    for img in images[::step][:8]:
        rgba = np.asarray(img.convert("RGBA")).reshape(-1, 4)
        opaque = rgba[rgba[:, 3] >= 128, :3]
        pixels.append(opaque[:: max(1, opaque.shape[0] // 32768)])
    sample = np.concatenate(pixels) if pixels else np.zeros((0, 3), np.uint8)
    if sample.shape[0] == 0:
        sample = np.zeros((1, 3), np.uint8)
    strip = Image.fromarray(np.ascontiguousarray(sample[None, :, :]), "RGB")
    quant = strip.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    used = int(np.asarray(quant).max()) + 1
    return list(quant.getpalette()[: 3 * used])


def encode_webp_animated(
    frames: Frames,
    fps: float,
    *,
    loop: int | None = 0,
    quality: int = 80,
    lossless: bool = False,
    max_frames: int | None = None,
    max_side: int | None = None,
) -> bytes:
    """Animated WebP bytes (alpha kept for HxWx4 frames). `loop`: 0 = forever, n = play n times,
    None = play once. `quality` 0-100 (lossy quality, or compression effort when `lossless`)."""
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must be in 0..100, got {quality}")
    chosen, delays = _select(frames, fps, max_frames, unit_ms=1)
    images = _sticker_frames(chosen, max_side)
    mode = "RGBA" if any(img.mode == "RGBA" for img in images) else "RGB"
    images = [img.convert(mode) for img in images]
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=delays,
        loop=1 if loop is None else int(loop),
        quality=int(quality),
        lossless=bool(lossless),
        background=(0, 0, 0, 0),
        method=4,
    )
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Probe
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VideoProbe:
    """What a video file holds. `audio` is the decoded track (float32, channel mean) when asked for."""

    n_frames: int
    fps: float
    width: int
    height: int
    audio_rate: int
    audio_samples: int
    codecs: tuple[str, ...]
    duration_s: float
    audio: np.ndarray | None = None


def _refuse_nested_open(url: str, flags: int, options: dict) -> Any:
    raise PermissionError(f"opening {url!r} from inside a video file is not allowed")


def probe_video(data: bytes, *, with_audio: bool = False, field: str = "video") -> VideoProbe:
    """Frame count (packets of the first video stream, nothing decoded), fps, size, codecs, and the
    audio track's rate and sample count (decoded, trimmed to the track's declared duration as the
    MP4 edit list says) of MP4/MOV or WebM/Matroska bytes; anything else -> `InputError(field)`."""
    if data[4:8] == b"ftyp":
        fmt = "mp4"
    elif data[:4] == b"\x1a\x45\xdf\xa3":
        fmt = "matroska"
    else:
        raise InputError(
            field, f"expected an MP4 or WebM video, got {len(data)} bytes starting {data[:12]!r}"
        )
    try:
        container = av.open(io.BytesIO(data), format=fmt, io_open=_refuse_nested_open)
    except av.error.FFmpegError as exc:
        raise InputError(field, f"the video could not be opened ({exc})", fmt) from exc
    with container:
        videos, audios = container.streams.video, container.streams.audio
        codecs = tuple(
            s.codec_context.codec.canonical_name for s in container.streams if s.type in ("video", "audio")
        )
        vstream = videos[0] if videos else None
        astream = audios[0] if audios else None
        n_frames = 0
        pieces: list[np.ndarray] = []
        wanted = [s for s in (vstream, astream) if s is not None]
        try:
            for packet in container.demux(wanted):
                if packet.size == 0:
                    continue
                if packet.stream is vstream:
                    n_frames += 1
                else:  # the audio stream: decoded to count its samples exactly
                    for frame in packet.decode():
                        arr = frame.to_ndarray().astype(np.float64)
                        ch = frame.layout.nb_channels
                        arr = arr.reshape(ch, -1) if frame.format.is_planar else arr.reshape(-1, ch).T
                        pieces.append(arr.mean(axis=0).astype(np.float32))
        except av.error.FFmpegError as exc:
            raise InputError(field, f"the video could not be read ({exc})", fmt) from exc
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        audio_rate = int(astream.codec_context.sample_rate) if astream is not None else 0
        if astream is not None and astream.duration and astream.time_base is not None:
            audio = audio[: round(float(astream.duration * astream.time_base) * audio_rate)]
        fps = float(vstream.average_rate) if vstream is not None and vstream.average_rate else 0.0
        duration = container.duration / av.time_base if container.duration else 0.0
        return VideoProbe(
            n_frames=n_frames,
            fps=fps,
            width=int(vstream.codec_context.width) if vstream is not None else 0,
            height=int(vstream.codec_context.height) if vstream is not None else 0,
            audio_rate=audio_rate,
            audio_samples=int(audio.size),
            codecs=codecs,
            duration_s=duration,
            audio=audio if with_audio else None,
        )
