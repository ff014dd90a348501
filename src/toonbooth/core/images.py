"""Safe image input, the one image converter module, and PNG output with AUTOMATIC1111 infotext.

Input: `load_image` is the single door through which user-supplied images (bytes, a `pathlib.Path`,
raw base64 or a `data:` URL, a binary file object) become an RGB `PIL.Image`. It follows the
defensive-decoding advice of the Pillow docs ("Decompression bombs", "File handling"):

* the format comes from the content (magic bytes, as in the PNG spec §5.2, JFIF/EXIF SOI marker,
  GIF87a/89a, RIFF/WEBP, BMP `BM`), never from a file name, and only PNG, JPEG, WebP, BMP and GIF
  (first frame) are accepted; everything else is named in the error (HEIC/AVIF by their ISO-BMFF
  `ftyp` brand, SVG/XML, TIFF, PDF, ...);
* byte size is checked before reading further, and the declared width*height from the header before
  any pixel is decoded; the Pillow plugin class is instantiated directly so that Pillow's global
  `MAX_IMAGE_PIXELS` warning/error never decides for us;
* the whole image is decoded (`load()`) with `ImageFile.LOAD_TRUNCATED_IMAGES` left False, so a cut
  file is an error, not a grey half picture;
* EXIF orientation is applied (`ImageOps.exif_transpose`) and every mode is flattened to RGB: alpha
  over white, palettes with transparency, 16-bit greyscale scaled (not clipped) to 8 bits, CMYK.

Output: PNGs carry the generation settings in a `parameters` tEXt (or iTXt, when not Latin-1) chunk,
laid out as AUTOMATIC1111's `create_infotext` writes it and parsed the way its
`parse_generation_parameters` reads it (prompt lines, an optional `Negative prompt:` line, and a last
line of `Key: value` pairs, values with `,` `:` `"` or newlines written as JSON strings).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

from toonbooth.core.errors import InputError, InputTooLargeError
from toonbooth.core.fs import atomic_write_bytes
from toonbooth.core.media import PATH_HINT, _Readable, looks_like_path, read_media_bytes, short

__all__ = [
    "ACCEPTED_FORMATS",
    "decode_image_bytes",
    "format_a1111_parameters",
    "from_array",
    "image_to_base64",
    "image_to_data_url",
    "image_to_png_bytes",
    "load_image",
    "parse_a1111_parameters",
    "read_png_parameters",
    "save_png",
    "to_rgb_array",
]

ACCEPTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WebP", "BMP", "GIF")
_ACCEPTED_TEXT = "a PNG, JPEG, WebP, BMP or GIF image"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Pillow plugin classes by the format we detected ourselves. Instantiating the class directly reads
# only the header (like Image.open) but skips Image.open's global decompression-bomb warning.
_PLUGINS: dict[str, type[ImageFile.ImageFile]] = {
    "PNG": PngImagePlugin.PngImageFile,
    "JPEG": JpegImagePlugin.JpegImageFile,
    "WebP": WebPImagePlugin.WebPImageFile,
    "BMP": BmpImagePlugin.BmpImageFile,
    "GIF": GifImagePlugin.GifImageFile,
}

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}

# Formats we recognise only to name them in the error message.
_REJECTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF document"),
    (b"II*\x00", "a TIFF image (also the container of DNG / camera RAW files)"),
    (b"MM\x00*", "a TIFF image (also the container of DNG / camera RAW files)"),
    (b"II+\x00", "a BigTIFF image"),
    (b"MM\x00+", "a BigTIFF image"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a JPEG XL image"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"8BPS", "a Photoshop PSD document"),
    (b"qoif", "a QOI image"),
    (b"%!PS", "a PostScript/EPS document"),
    (b"\xc5\xd0\xd3\xc6", "an EPS document"),
    (b"\x76\x2f\x31\x01", "an OpenEXR image"),
    (b"#?RADIANCE", "a Radiance HDR image"),
    (b"DDS ", "a DDS texture"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "gzip-compressed data (an .svgz?)"),
    (b"\x7fELF", "an executable"),
)

ImageSource = bytes | bytearray | memoryview | Path | str | _Readable | Image.Image


# --------------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------------


def load_image(source: ImageSource, *, field: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """Turn user input into a fresh RGB image, or raise `InputError` naming `field`.

    `source`: `bytes`/`bytearray`/`memoryview`; a `pathlib.Path` (a `str` is never opened as a path);
    a `str` with raw base64 or a `data:image/...` URL; a binary file object with `.read()`; or an
    already-open `PIL.Image.Image` (Python callers; pixel limit, EXIF orientation and RGB conversion
    still apply). Over `max_bytes` bytes or `max_pixels` declared pixels -> `InputTooLargeError`.
    """
    if max_bytes < 1 or max_pixels < 1:
        raise ValueError(f"max_bytes and max_pixels must be positive, got {max_bytes} and {max_pixels}")
    if isinstance(source, Image.Image):
        _check_pixels(source.size, field=field, max_pixels=max_pixels)
        try:
            source.load()  # a lazily opened file is decoded here, with the same errors as bytes
        except MemoryError:
            raise
        except Exception as exc:
            raise InputError(
                field, f"the image could not be decoded ({_describe_exc(exc)})", type(source).__name__
            ) from exc
        return _finish(source, field=field)
    data = read_image_bytes(source, field=field, max_bytes=max_bytes)
    try:
        return decode_image_bytes(data, field=field, max_pixels=max_pixels)
    except InputTooLargeError:
        raise
    except InputError as exc:
        if isinstance(source, str) and looks_like_path(source):
            raise InputError(field, f"{exc.message}{PATH_HINT}", short(source)) from exc
        raise



def decode_image_bytes(data: bytes, *, field: str, max_pixels: int) -> Image.Image:
    """Decode already-read bytes (size limit already applied) into a fresh RGB image."""
    fmt = _sniff(data, field=field)
    plugin = _PLUGINS[fmt]
    what = f"{len(data)} bytes of {fmt}"
    try:
        img = plugin(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputTooLargeError(field, f"the {fmt} image is too large to decode ({exc})", what) from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise InputError(field, f"the {fmt} header could not be read ({_describe_exc(exc)})", what) from exc
    try:
        _check_pixels(img.size, field=field, max_pixels=max_pixels)
        if fmt == "PNG":
            _check_png_data_complete(data, field=field)
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputTooLargeError(field, f"the {fmt} image is too large to decode ({exc})", what) from exc
        except MemoryError:
            raise
        except Exception as exc:
            raise InputError(
                field,
                f"the {fmt} image data could not be decoded: the file is truncated or corrupt "
                f"({_describe_exc(exc)})",
                what,
            ) from exc
        _check_pixels(img.size, field=field, max_pixels=max_pixels)  # a GIF frame may widen the canvas
        return _finish(img, field=field)
    finally:
        img.close()


def decode_image_alpha(data: bytes, *, field: str, max_pixels: int) -> np.ndarray | None:
    """The transparency of image bytes that `decode_image_bytes` accepts (every one of its checks runs
    first): uint8 alpha, H x W like its RGB image (EXIF orientation applied), or None when the image has
    no transparency. For studios that keep an RGBA toon's transparency (the RGB image stays the one door)."""
    decode_image_bytes(data, field=field, max_pixels=max_pixels)
    img = _PLUGINS[_sniff(data, field=field)](io.BytesIO(data))
    try:
        img.load()
        if img.mode not in _ALPHA_MODES and "transparency" not in img.info:
            return None
        oriented = ImageOps.exif_transpose(img)
        alpha = np.array(oriented.convert("RGBA").getchannel("A"))
    finally:
        img.close()
    return None if alpha.min() == 255 else alpha


def _describe_exc(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_pixels(size: tuple[int, int], *, field: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(
            field, f"the image has a zero-size dimension ({width}x{height})", f"{width}x{height}"
        )
    pixels = width * height
    if pixels > max_pixels:
        raise InputTooLargeError(
            field,
            f"the image is {width}x{height} = {pixels:,} pixels, over the limit of {max_pixels:,} pixels",
            f"{width}x{height}",
        )


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (x0, y0, dx, dy).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_expected_bytes(width: int, height: int, bit_depth: int, color_type: int, interlace: int) -> int:
    """Size of the inflated IDAT stream: per row one filter byte plus the packed samples (PNG §7-8)."""
    bits = bit_depth * _PNG_CHANNELS.get(color_type, 1)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        w = (width - x0 + dx - 1) // dx if width > x0 else 0
        h = (height - y0 + dy - 1) // dy if height > y0 else 0
        if w and h:
            total += h * (1 + (w * bits + 7) // 8)
    return total


def _check_png_data_complete(data: bytes, *, field: str) -> None:
    """Pillow fills rows with zeros when the IDAT zlib stream ends early; treat that as truncation.

    Inflates the IDAT stream in bounded pieces, counting bytes only (no pixel buffer), and stops once
    the expected amount is reached.
    """
    width, height, bit_depth, color_type, _comp, _filt, interlace = struct.unpack(">IIBBBBB", data[16:29])
    expected = _png_expected_bytes(width, height, bit_depth, color_type, interlace)
    inflater = zlib.decompressobj()
    produced = 0
    pos = len(_PNG_SIGNATURE)
    try:
        while pos + 8 <= len(data) and produced < expected:
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            ctype = data[pos + 4 : pos + 8]
            if ctype == b"IDAT":
                pending = data[pos + 8 : pos + 8 + length]
                while pending and produced < expected:
                    produced += len(inflater.decompress(pending, 1 << 20))
                    pending = inflater.unconsumed_tail
                if inflater.eof:
                    break
            elif ctype == b"IEND":
                break
            pos += 12 + length
    except zlib.error as exc:
        raise InputError(
            field, f"the PNG image data is corrupt ({exc}): the file is truncated or corrupt", len(data)
        ) from exc
    if produced < expected:
        raise InputError(
            field,
            f"the PNG image data ends early ({produced:,} of {expected:,} bytes): the file is truncated or "
            "corrupt",
            len(data),
        )


def _finish(img: Image.Image, *, field: str) -> Image.Image:
    """Apply EXIF orientation and flatten to RGB; always returns a new image with empty `info`."""
    try:
        oriented = ImageOps.exif_transpose(img)
    except MemoryError:
        raise
    except Exception as exc:
        raise InputError(
            field, f"the image's EXIF orientation could not be read ({_describe_exc(exc)})", img.mode
        ) from exc
    try:
        rgb = _flatten_to_rgb(oriented, field=field)
    finally:
        if oriented is not img:
            oriented.close()
    if rgb is img or rgb is oriented:
        rgb = rgb.copy()
    rgb.info = {}
    return rgb


_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def _flatten_to_rgb(img: Image.Image, *, field: str) -> Image.Image:
    """Any Pillow mode -> RGB. Transparency is composited over white; 16-bit is scaled to 8 bits."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img.convert("RGB")
    if mode in _SIXTEEN_BIT_MODES:
        # 16-bit greyscale (PNG bit depth 16): 0..65535 -> 0..255 with rounding, not clipping.
        raw = np.asarray(img).astype(np.int64)
        gray = ((np.clip(raw, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        key = img.info.get("transparency")
        if isinstance(key, int):  # tRNS: one grey level is fully transparent -> white
            gray[raw == key] = 255
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")
    if mode == "F":
        raise InputError(field, "32-bit float images are not supported; give an 8-bit image", mode)
    if mode in _ALPHA_MODES or "transparency" in img.info:
        try:
            rgba = img.convert("RGBA")
        except ValueError as exc:
            raise InputError(field, f"colour mode {mode} with transparency is not supported", mode) from exc
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise InputError(field, f"colour mode {mode} cannot be converted to RGB", mode) from exc


def read_image_bytes(source: object, *, field: str, max_bytes: int) -> bytes:
    """The raw bytes of an image source (bytes, Path, base64 / data URL str, file object), size-checked
    but not decoded: for storing an upload exactly as received after `load_image` accepted it."""
    return read_media_bytes(source, field=field, max_bytes=max_bytes, kind="image")


def _sniff(data: bytes, *, field: str) -> str:
    """Return the accepted format name of `data`, or raise InputError saying what it is instead."""
    n = len(data)
    if n == 0:
        raise InputError(field, f"expected {_ACCEPTED_TEXT}, got 0 bytes (an empty file)", 0)
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:2] == b"BM" and n >= 26:
        return "BMP"
    what = _name_rejected(data)
    raise InputError(field, f"expected {_ACCEPTED_TEXT}, got {what}", what)


def _name_rejected(data: bytes) -> str:
    n = len(data)
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        compatible = {data[i : i + 4] for i in range(16, min(n, 64), 4)}
        if brand in _AVIF_BRANDS:
            return "AVIF (convert it to PNG or JPEG first)"
        if brand in _HEIF_BRANDS or compatible & _HEIF_BRANDS:
            return "HEIC/HEIF (an iPhone photo format; convert it to JPEG or PNG first)"
        if compatible & _AVIF_BRANDS:
            return "AVIF (convert it to PNG or JPEG first)"
        return f"an ISO media file (brand {brand.decode('latin-1')!r}, e.g. MP4/MOV video)"
    if data[:4] == b"RIFF":
        return f"a RIFF {data[8:12].decode('latin-1')!r} file (e.g. WAV/AVI), not WebP"
    for magic, name in _REJECTED_MAGIC:
        if data.startswith(magic):
            return name
    text = _as_text(data[:4096])
    if text is not None:
        head = text.lstrip().lower()
        if head.startswith("<") and "<svg" in head:
            return "an SVG document (vector graphics are not accepted; export it as PNG)"
        if head.startswith("<!doctype html") or head.startswith("<html"):
            return "an HTML document"
        if head.startswith("<?xml") or head.startswith("<"):
            return "an XML document"
        return f"{n} bytes of text, not an image (starts with {short(text.strip(), 40)!r})"
    return f"{n} bytes that are not an image (starts with {data[:16]!r})"


def _as_text(head: bytes) -> str | None:
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):
            try:
                return head[len(bom) :].decode(codec, errors="ignore")
            except UnicodeDecodeError:
                return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte character cut at the end
            return None
        text = head[: exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return text if text and printable >= 0.95 * len(text) else None


# --------------------------------------------------------------------------------------------------
# Converters
# --------------------------------------------------------------------------------------------------


def to_rgb_array(img: Image.Image | np.ndarray, *, field: str = "image") -> np.ndarray:
    """A new, writable HxWx3 uint8 array: the one image -> array converter of the program.

    A PIL image in any mode is flattened like `load_image` does (transparency over white, 16-bit scaled to
    8 bits); an array must already be HxWx3 uint8 (it is copied). Anything else is an `InputError` that
    names `field`, its type and its shape."""
    if isinstance(img, Image.Image):
        rgb = img if img.mode == "RGB" else _flatten_to_rgb(img, field=field)
        return np.array(rgb, dtype=np.uint8, copy=True)
    if isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
        return img.copy()
    what = type(img).__name__
    if isinstance(img, np.ndarray):
        what += f" of shape {img.shape} and dtype {img.dtype}"
    raise InputError(field, f"must be an RGB PIL image or an HxWx3 uint8 array, got {what}", what)


def from_array(arr: np.ndarray, *, field: str = "image") -> Image.Image:
    """HxWx3 uint8 (RGB), HxW or HxWx1 uint8 (grey), or float in [0, 1] of those shapes -> RGB image."""
    if not isinstance(arr, np.ndarray):
        raise InputError(field, f"expected a numpy array, got {type(arr).__name__}", type(arr).__name__)
    a = arr
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise InputError(
            field, f"expected an array of shape HxWx3 (RGB) or HxW (grey), got shape {arr.shape}", arr.shape
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(field, f"the array has a zero-size dimension, shape {arr.shape}", arr.shape)
    if a.dtype == np.uint8:
        out = a
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError(field, "the float array contains NaN or infinity", str(a.dtype))
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                field, f"float arrays must hold values in [0, 1], got values in [{lo:g}, {hi:g}]", (lo, hi)
            )
        out = np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        raise InputError(field, f"expected dtype uint8 or float in [0, 1], got dtype {a.dtype}", str(a.dtype))
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(out), "RGB")


def _png_info(parameters: str | None) -> PngImagePlugin.PngInfo | None:
    if parameters is None:
        return None
    info = PngImagePlugin.PngInfo()
    # As AUTOMATIC1111: tEXt when the text is Latin-1, else iTXt (Pillow's add_text decides).
    info.add_text("parameters", parameters)
    return info


def image_to_png_bytes(img: Image.Image, parameters: str | None = None) -> bytes:
    """Encode as PNG (any PNG-capable mode is kept); `parameters` goes in the A1111 `parameters` chunk."""
    buf = io.BytesIO()
    # level 3: ~2.5x faster than Pillow's default 6 on photos, files ~5-10 % larger
    img.save(buf, format="PNG", pnginfo=_png_info(parameters), compress_level=3)
    return buf.getvalue()


def save_png(img: Image.Image, path: Path | str, parameters: str | None = None) -> Path:
    """Write a PNG atomically (`core.fs.atomic_write_bytes`: temp file in the same folder, fsync, rename)."""
    return atomic_write_bytes(path, image_to_png_bytes(img, parameters))


def read_png_parameters(source: bytes | bytearray | Path, *, field: str = "image") -> str | None:
    """The A1111 `parameters` text of a PNG (tEXt, zTXt or iTXt chunk), or None if it has none.

    Reads the chunk list only (no pixel decoding). A non-PNG or corrupt chunk list -> InputError.
    """
    if isinstance(source, Path):
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise InputError(field, f"cannot read {source}: {exc}", str(source)) from exc
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        raise TypeError(f"read_png_parameters takes bytes or a pathlib.Path, got {type(source).__name__}")
    if not data.startswith(_PNG_SIGNATURE):
        raise InputError(field, f"expected a PNG file, got {_name_rejected(data) if data else '0 bytes'}")
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise InputError(field, f"the PNG is truncated inside its {ctype!r} chunk", len(data))
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(ctype + body) != crc:
            raise InputError(
                field, f"the PNG's {ctype!r} chunk is corrupt (bad CRC)", ctype.decode("latin-1")
            )
        text = _text_chunk(ctype, body, field=field)
        if text is not None and text[0] == "parameters":
            return text[1]
        if ctype == b"IEND":
            return None
        pos += 12 + length
    raise InputError(field, "the PNG is truncated (no IEND chunk)", len(data))


_MAX_TEXT_CHUNK = 4 * 1024 * 1024


def _inflate(body: bytes, *, field: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(body, _MAX_TEXT_CHUNK)
    except zlib.error as exc:
        raise InputError(field, f"a compressed PNG text chunk is corrupt ({exc})") from exc
    if d.unconsumed_tail:
        raise InputTooLargeError(field, f"a PNG text chunk inflates past {_MAX_TEXT_CHUNK:,} bytes")
    return out


def _text_chunk(ctype: bytes, body: bytes, *, field: str) -> tuple[str, str] | None:
    if ctype == b"tEXt":
        key, _, value = body.partition(b"\x00")
        return key.decode("latin-1"), value.decode("latin-1")
    if ctype == b"zTXt":
        key, _, rest = body.partition(b"\x00")
        return key.decode("latin-1"), _inflate(rest[1:], field=field).decode("latin-1")
    if ctype == b"iTXt":
        key, _, rest = body.partition(b"\x00")
        if len(rest) < 2:
            return None
        compressed, rest = rest[0], rest[2:]
        _lang, _, rest = rest.partition(b"\x00")
        _translated, _, value = rest.partition(b"\x00")
        if compressed:
            value = _inflate(value, field=field)
        return key.decode("latin-1"), value.decode("utf-8", errors="replace")
    return None


def image_to_base64(img: Image.Image, parameters: str | None = None) -> str:
    """PNG bytes as plain base64 (what A1111's API returns in `images`)."""
    return base64.b64encode(image_to_png_bytes(img, parameters)).decode("ascii")


def image_to_data_url(img: Image.Image, parameters: str | None = None) -> str:
    """`data:image/png;base64,...` for browsers."""
    return "data:image/png;base64," + image_to_base64(img, parameters)


# --------------------------------------------------------------------------------------------------
# AUTOMATIC1111 infotext
# --------------------------------------------------------------------------------------------------

_KEY_RE = re.compile(r"\w[\w \-/]+")
# One `Key: value` pair of the last infotext line; a value is a JSON string or text up to the next comma.
_PAIR_RE = re.compile(r"\s*(\w[\w \-/]+):\s*(\"(?:\\.|[^\\\"])*\"|[^,]*)(?:,|$)")
_NEGATIVE_PREFIX = "Negative prompt:"


def _value_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _quote(text: str) -> str:
    if any(ch in text for ch in ',:"\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


def format_a1111_parameters(prompt: str, negative_prompt: str, settings: Mapping[str, Any]) -> str:
    """AUTOMATIC1111 infotext: prompt, `Negative prompt: ...` (omitted if empty), `Key: value, ...`.

    Keys keep the dict's order; None values are left out. A1111's reader takes the last line as
    settings only when it holds at least 3 pairs, so pass 3 or more for a lossless round trip.
    """
    pairs = []
    for key, value in settings.items():
        if value is None:
            continue
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise InputError(
                "settings", f"infotext keys must be words, spaces, '-' or '/' (2+ chars), got {key!r}", key
            )
        pairs.append(f"{key}: {_quote(_value_text(value))}")
    prompt, negative_prompt = _escape_prompt_lines(prompt), _escape_prompt_lines(negative_prompt)
    negative = f"\n{_NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{', '.join(pairs)}".strip()


_FORGED_NEGATIVE = re.compile(r"^(\s*)Negative prompt:", re.MULTILINE)


def _escape_prompt_lines(text: str) -> str:
    """Line breaks stay (A1111 prompts have lines), but a line of the prompt can never be read back as the
    `Negative prompt:` line: it is written `Negative prompt :` (A1111's reader matches the exact prefix).
    Settings values are JSON-quoted, and the settings line is always last, so no prompt line can pose as it."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _FORGED_NEGATIVE.sub(r"\1Negative prompt :", text)


def parse_a1111_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """Read AUTOMATIC1111 infotext into (prompt, negative prompt, {key: value text}), as A1111 does."""
    *lines, last = text.strip().split("\n")
    if len(_PAIR_RE.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for raw in lines:
        line = raw.strip()
        if line.startswith(_NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(_NEGATIVE_PREFIX) :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    settings: dict[str, str] = {}
    for key, value in _PAIR_RE.findall(last):
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            with contextlib.suppress(json.JSONDecodeError):  # A1111 keeps a malformed quote as text
                value = json.loads(value)
        settings[key.strip()] = value
    return "\n".join(prompt_lines), "\n".join(negative_lines), settings
