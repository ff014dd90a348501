"""Tests of core/images.py: safe decoding of user images, converters, PNG `parameters`, A1111 infotext.

Every file is built here with PIL or by hand (PNG chunks), so nothing depends on fixtures on disk
except the shared sample photo.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from toonbooth.core.errors import InputError, InputTooLargeError
from toonbooth.core.images import (
    format_a1111_parameters,
    from_array,
    image_to_base64,
    image_to_data_url,
    image_to_png_bytes,
    load_image,
    parse_a1111_parameters,
    read_png_parameters,
    save_png,
    to_rgb_array,
)

MB = 1024 * 1024
LIMITS = {"max_bytes": 5 * MB, "max_pixels": 4_000_000}
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def _load(source, field: str = "photo", **limits):
    return load_image(source, field=field, **{**LIMITS, **limits})


def _quadrants(width: int = 32, height: int = 24) -> Image.Image:
    """Red top-left quadrant, blue elsewhere: orientation and colour are both checkable."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, :] = BLUE
    arr[: height // 2, : width // 2] = RED
    return Image.fromarray(arr, "RGB")


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _png_by_hand(
    width: int, height: int, bit_depth: int, color_type: int, rows: list[bytes] | None, interlace: int = 0
) -> bytes:
    """A PNG written chunk by chunk; `rows=None` streams all-zero rows (cheap huge images)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    comp = zlib.compressobj(9)
    idat = b""
    if rows is None:
        row = b"\x00" * (1 + (width * bit_depth + 7) // 8)
        for _ in range(height):
            idat += comp.compress(row)
    else:
        for row in rows:
            idat += comp.compress(row)
    idat += comp.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _assert_names_field(exc: pytest.ExceptionInfo, field: str = "photo") -> None:
    assert exc.value.field == field
    assert f"`{field}`" in str(exc.value)


# ---------------------------------------------------------------------------- accepted formats


@pytest.mark.parametrize(
    ("fmt", "kwargs", "exact"),
    [
        ("PNG", {}, True),
        ("BMP", {}, True),
        ("GIF", {}, True),
        ("WEBP", {"lossless": True}, True),
        ("JPEG", {"quality": 95}, False),
    ],
)
def test_accepted_formats_decode_to_rgb(fmt: str, kwargs: dict, exact: bool) -> None:
    data = _encode(_quadrants(), fmt, **kwargs)
    img = _load(data)
    assert img.mode == "RGB" and img.size == (32, 24)
    arr = to_rgb_array(img)
    tol = 0 if exact else 12
    assert np.abs(arr[2, 2].astype(int) - RED).max() <= tol
    assert np.abs(arr[20, 28].astype(int) - BLUE).max() <= tol
    assert img.info == {}


def test_gif_uses_first_frame_only() -> None:
    frames = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    img = _load(buf.getvalue())
    assert img.getpixel((8, 8)) == RED


def test_format_comes_from_content_not_file_name(tmp_path: Path) -> None:
    path = tmp_path / "actually_a_png.heic"
    path.write_bytes(_encode(_quadrants(), "PNG"))
    assert _load(path).size == (32, 24)


def test_path_and_file_object_sources(tmp_path: Path) -> None:
    data = _encode(_quadrants(), "PNG")
    path = tmp_path / "in.png"
    path.write_bytes(data)
    assert to_rgb_array(_load(path)).tolist() == to_rgb_array(_load(io.BytesIO(data))).tolist()
    assert _load(bytearray(data)).size == (32, 24)


def test_sample_face_loads_as_512_rgb(sample_photo_path: Path) -> None:
    img = _load(sample_photo_path)
    assert img.size == (512, 512) and img.mode == "RGB"


# ---------------------------------------------------------------------------- rejected inputs


def test_heic_rejected_by_ftyp_box() -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(InputError, match="HEIC/HEIF") as exc:
        _load(heic)
    _assert_names_field(exc)


def test_avif_rejected_by_ftyp_box() -> None:
    with pytest.raises(InputError, match="AVIF") as exc:
        _load(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 32)
    _assert_names_field(exc)


def test_svg_text_rejected() -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    with pytest.raises(InputError, match="SVG document") as exc:
        _load(svg)
    _assert_names_field(exc)


def test_tiff_rejected() -> None:
    with pytest.raises(InputError, match="TIFF") as exc:
        _load(_encode(_quadrants(), "TIFF"))
    _assert_names_field(exc)


def test_pdf_rejected() -> None:
    with pytest.raises(InputError, match="PDF document") as exc:
        _load(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")
    _assert_names_field(exc)


def test_random_bytes_rejected_with_their_start() -> None:
    data = b"\x8a\x13\x00\xfe" + np.random.default_rng(0).bytes(13)
    with pytest.raises(InputError, match=r"got 17 bytes that are not an image \(starts with b'\\x8a") as exc:
        _load(data)
    _assert_names_field(exc)


def test_empty_bytes_rejected() -> None:
    with pytest.raises(InputError, match="0 bytes") as exc:
        _load(b"")
    _assert_names_field(exc)


def test_zero_pixel_dimension_rejected() -> None:
    png = _png_by_hand(0, 4, 8, 0, rows=[b"\x00"] * 4)
    with pytest.raises(InputError) as exc:
        _load(png)
    _assert_names_field(exc)


def test_over_max_bytes_rejected() -> None:
    data = _encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)), "PNG")
    with pytest.raises(InputTooLargeError) as exc:
        _load(data, max_bytes=1000)
    msg = str(exc.value)
    assert "`photo`" in msg and f"{len(data):,} bytes" in msg and "1,000" in msg
    with pytest.raises(InputTooLargeError):
        _load(base64.b64encode(data).decode(), max_bytes=1000)
    with pytest.raises(InputTooLargeError):
        _load(io.BytesIO(data), max_bytes=1000)


def _spy_decoding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every pixel decode: Pillow's `ImageFile.load` and the codec it asks `Image._getdecoder`
    for, and every zlib inflater (the PNG completeness check inflates IDAT data)."""
    calls: list[str] = []
    real_load, real_decoder, real_inflater = ImageFile.ImageFile.load, Image._getdecoder, zlib.decompressobj

    def load(self, *args, **kwargs):
        calls.append(f"load {self.format}")
        return real_load(self, *args, **kwargs)

    def decoder(mode, name, *args, **kwargs):
        calls.append(f"decoder {name}")
        return real_decoder(mode, name, *args, **kwargs)

    def inflater(*args, **kwargs):
        calls.append("inflate")
        return real_inflater(*args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    monkeypatch.setattr(Image, "_getdecoder", decoder)
    monkeypatch.setattr(zlib, "decompressobj", inflater)
    return calls


def test_over_max_pixels_rejected_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # A valid 20000x20000 1-bit PNG: ~50 KB on disk, 400 M pixels once decoded.
    bomb = _png_by_hand(20000, 20000, 1, 0, rows=None)
    assert len(bomb) < 100_000
    decoded = _spy_decoding(monkeypatch)
    with pytest.raises(InputTooLargeError, match=r"20000x20000 = 400,000,000 pixels") as exc:
        _load(bomb, max_bytes=MB, max_pixels=40_000_000)
    _assert_names_field(exc)
    assert decoded == []  # refused from the header: not one pixel row decoded or inflated
    # the spies do see a decode: the same kind of PNG within the limit goes through all three
    assert _load(_png_by_hand(64, 48, 1, 0, rows=None)).size == (64, 48)
    assert {"inflate", "load PNG", "decoder zip"} <= set(decoded), decoded


def test_pillow_global_bomb_limit_does_not_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    # Our max_pixels is the limit; Pillow's global MAX_IMAGE_PIXELS neither warns nor raises.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = _encode(_quadrants(), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _load(data, max_pixels=32 * 24).size == (32, 24)
        with pytest.raises(InputTooLargeError, match="32x24 = 768 pixels, over the limit of 767"):
            _load(data, max_pixels=32 * 24 - 1)


def test_truncated_png_rejected() -> None:
    data = _encode(Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), np.uint8)), "PNG")
    with pytest.raises(InputError, match="truncated or corrupt") as exc:
        _load(data[: len(data) // 2])
    _assert_names_field(exc)


def test_png_with_short_zlib_stream_rejected() -> None:
    # Pillow alone would return this 64x64 PNG with 61 black rows; only 3 rows of data are present.
    short = _png_by_hand(64, 64, 8, 0, rows=[b"\x00" + b"\xc8" * 64] * 3)
    with pytest.raises(InputError, match=r"ends early \(195 of 4,160 bytes\)") as exc:
        _load(short)
    _assert_names_field(exc)
    # A complete Adam7-interlaced PNG (Pillow cannot write one) still loads, pixel for pixel.
    pixels = np.random.default_rng(5).integers(0, 255, (9, 13), np.uint8)
    adam7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    rows = [
        b"\x00" + pixels[y, x0::dx].tobytes() for x0, y0, dx, dy in adam7 for y in range(y0, 9, dy) if x0 < 13
    ]
    img = _load(_png_by_hand(13, 9, 8, 0, rows=rows, interlace=1))
    assert np.array_equal(to_rgb_array(img)[:, :, 0], pixels)
    with pytest.raises(InputError, match="ends early"):
        _load(_png_by_hand(13, 9, 8, 0, rows=rows[:-1], interlace=1))


@pytest.mark.parametrize("cut", [2, 300])
def test_truncated_jpeg_rejected(cut: int) -> None:
    arr = np.random.default_rng(3).integers(0, 255, (64, 64, 3), np.uint8)
    data = _encode(Image.fromarray(arr), "JPEG", quality=90)
    assert data.endswith(b"\xff\xd9")
    with pytest.raises(InputError, match="truncated or corrupt") as exc:
        _load(data[:-cut])
    _assert_names_field(exc)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ---------------------------------------------------------------------------- orientation and modes


def test_exif_orientation_6_rotates() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be turned 90 degrees clockwise to display
    data = _encode(_quadrants(40, 20), "PNG", exif=exif.tobytes())
    img = _load(data)
    assert img.size == (20, 40)
    # Stored top-left (red) goes to the top-right; the top-left is blue now.
    assert img.getpixel((19, 0)) == RED
    assert img.getpixel((0, 0)) == BLUE


def test_rgba_composited_over_white() -> None:
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[:, :4] = (255, 0, 0, 0)  # fully transparent red
    arr[:, 4:] = (255, 0, 0, 128)  # half transparent red
    img = _load(_encode(Image.fromarray(arr, "RGBA"), "PNG"))
    assert img.getpixel((1, 1)) == (255, 255, 255)
    r, g, b = img.getpixel((6, 1))
    assert r == 255 and 125 <= g <= 129 and 125 <= b <= 129


def test_la_composited_over_white() -> None:
    img = Image.new("LA", (4, 4), (0, 0))
    assert _load(_encode(img, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency() -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    pal.paste(1, (4, 0, 8, 8))
    data = _encode(pal, "PNG", transparency=0)
    img = _load(data)
    assert img.getpixel((1, 1)) == (255, 255, 255)  # transparent index -> white, not black
    assert img.getpixel((6, 1)) == RED
    gif = _load(_encode(pal, "GIF", transparency=0))
    assert gif.getpixel((1, 1)) == (255, 255, 255) and gif.getpixel((6, 1)) == RED


def test_16_bit_grayscale_scaled_not_clipped() -> None:
    arr = np.array([[65535, 32768, 0, 257]], np.uint16)
    data = _encode(Image.fromarray(arr), "PNG")
    assert data[24] == 16  # IHDR bit depth
    img = _load(data)
    assert [img.getpixel((x, 0)) for x in range(4)] == [(255,) * 3, (128,) * 3, (0,) * 3, (1,) * 3]


def test_cmyk_jpeg_to_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    img = _load(_encode(cmyk, "JPEG", quality=95))
    assert img.mode == "RGB"
    assert np.abs(np.array(img.getpixel((8, 8))) - RED).max() <= 10


def test_grayscale_and_bilevel() -> None:
    assert _load(_encode(Image.new("L", (4, 4), 77), "PNG")).getpixel((0, 0)) == (77, 77, 77)
    assert _load(_encode(Image.new("1", (4, 4), 1), "BMP")).getpixel((0, 0)) == (255, 255, 255)


def test_pil_image_source_is_copied_and_converted() -> None:
    src = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    out = _load(src)
    assert out is not src and out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(InputTooLargeError):
        _load(Image.new("RGB", (100, 100)), max_pixels=5000)


# ---------------------------------------------------------------------------- text sources


def test_base64_and_data_url() -> None:
    data = _encode(_quadrants(), "PNG")
    b64 = base64.b64encode(data).decode()
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    for text in (b64, wrapped, f"data:image/png;base64,{wrapped}", f"  DATA:image/jpeg;base64,{b64}\n"):
        assert _load(text).getpixel((2, 2)) == RED
    assert _load(image_to_data_url(_quadrants())).size == (32, 24)
    assert _load(image_to_base64(_quadrants())).size == (32, 24)


def test_bad_base64_rejected() -> None:
    with pytest.raises(InputError, match="not valid base64") as exc:
        _load("iVBORw0KGgo!!!not base64???")
    _assert_names_field(exc)


def test_non_image_data_url_rejected() -> None:
    payload = base64.b64encode(_encode(_quadrants(), "PNG")).decode()
    with pytest.raises(InputError, match="media type must be image") as exc:
        _load(f"data:text/plain;base64,{payload}")
    _assert_names_field(exc)
    # The media type does not make SVG content acceptable either.
    svg = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode()
    with pytest.raises(InputError, match="SVG"):
        _load(f"data:image/png;base64,{svg}")


def test_str_path_is_never_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(_encode(_quadrants(), "PNG"))
    opened: list[str] = []
    real_open = Path.open

    def spy(self: Path, *args, **kwargs):
        opened.append(str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)
    with pytest.raises(InputError, match="never as a file path") as exc:
        _load(str(path))
    _assert_names_field(exc)
    with pytest.raises(InputError, match="never as a file path"):
        _load("/etc/passwd")  # valid base64 characters, but not an image once decoded
    assert opened == []
    assert _load(path).size == (32, 24)  # the same file as a Path is fine
    assert opened == [str(path)]


def test_unsupported_source_type() -> None:
    with pytest.raises(InputError, match="got int"):
        _load(42)


# ---------------------------------------------------------------------------- converters


def test_array_round_trips() -> None:
    arr = np.random.default_rng(4).integers(0, 255, (6, 5, 3), np.uint8)
    img = from_array(arr)
    assert img.size == (5, 6) and img.mode == "RGB"
    back = to_rgb_array(img)
    assert back.dtype == np.uint8 and back.shape == (6, 5, 3) and np.array_equal(back, arr)
    back[0, 0] = 0  # writable and independent
    gray = from_array(np.full((3, 4), 9, np.uint8))
    assert gray.getpixel((0, 0)) == (9, 9, 9)
    flt = from_array(np.array([[[0.0, 0.5, 1.0]]], np.float32))
    assert flt.getpixel((0, 0)) == (0, 128, 255)


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros((4, 4, 4), np.uint8), "shape"),
        (np.zeros((4,), np.uint8), "shape"),
        (np.full((2, 2, 3), 1.5, np.float32), r"\[0, 1\]"),
        (np.full((2, 2, 3), np.nan, np.float32), "NaN"),
        (np.zeros((2, 2, 3), np.uint16), "dtype uint16"),
        (np.zeros((0, 2, 3), np.uint8), "zero-size"),
    ],
)
def test_from_array_rejects_clearly(arr: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        from_array(arr)


def test_to_rgb_array_flattens_alpha() -> None:
    assert to_rgb_array(Image.new("RGBA", (2, 2), (0, 0, 0, 0)))[0, 0].tolist() == [255, 255, 255]


def test_to_rgb_array_takes_rgb_arrays_as_a_copy_and_names_the_field() -> None:
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = to_rgb_array(arr, field="character")
    assert np.array_equal(out, arr) and out.flags.writeable and not np.shares_memory(out, arr)
    from_image = to_rgb_array(Image.fromarray(arr, "RGB"))
    assert np.array_equal(from_image, arr) and from_image.flags.writeable
    for bad, shown in [
        (np.zeros((2, 3, 4), np.uint8), "ndarray of shape (2, 3, 4) and dtype uint8"),
        (np.zeros((2, 3, 3), np.float32), "ndarray of shape (2, 3, 3) and dtype float32"),
        ([[0, 0, 0]], "list"),
    ]:
        with pytest.raises(InputError) as exc:
            to_rgb_array(bad, field="character")
        assert exc.value.field == "character" and shown in str(exc.value), str(exc.value)


# ---------------------------------------------------------------------------- PNG parameters


def test_parameters_chunk_round_trip(tmp_path: Path) -> None:
    latin = (
        'emoji, male, smiling\nNegative prompt: blurry\nSteps: 50, Sampler: DDIM, Lora hashes: "memoji: 1a2b"'
    )
    path = save_png(_quadrants(), tmp_path / "out.png", parameters=latin)
    assert read_png_parameters(path) == latin
    raw = path.read_bytes()
    assert b"tEXtparameters\x00" in raw  # the chunk A1111 writes
    with Image.open(path) as reread:  # other readers (A1111's PNG Info, Pillow) see it too
        assert reread.text["parameters"] == latin
    korean = "웹툰 배경, 비 오는 거리\nSteps: 20, Sampler: Euler a, CFG scale: 7"
    data = image_to_png_bytes(_quadrants(), korean)
    assert b"iTXtparameters\x00" in data
    assert read_png_parameters(data) == korean
    assert read_png_parameters(image_to_png_bytes(_quadrants())) is None
    with pytest.raises(InputError, match="expected a PNG"):
        read_png_parameters(_encode(_quadrants(), "JPEG"))


def test_parameters_after_idat_and_compressed_are_found() -> None:
    base = image_to_png_bytes(_quadrants())
    body = b"parameters\x00\x00" + zlib.compress(b"a cat\nSteps: 1, Seed: 2, Size: 8x8")
    with_ztxt = base[:-12] + _chunk(b"zTXt", body) + base[-12:]
    assert read_png_parameters(with_ztxt) == "a cat\nSteps: 1, Seed: 2, Size: 8x8"


def test_atomic_save_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "result.png"
    save_png(_quadrants(), target, parameters="x")
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.png"]
    assert _load(target).size == (32, 24)
    before = target.read_bytes()

    def failing_replace(src, dst) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_png(Image.new("RGB", (8, 8)), target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.png"]
    assert target.read_bytes() == before


# ---------------------------------------------------------------------------- A1111 infotext


def test_a1111_infotext_layout_and_round_trip() -> None:
    settings = {
        "Steps": 50,
        "Sampler": "DDIM",
        "CFG scale": 7.0,
        "Seed": 2968506678,
        "Size": "512x512",
        "Model hash": "abc123",
        "Model": "samaritan3dCartoon",
        "Denoising strength": 0.75,
        "Lora hashes": "memoji: 1a2b3c4d5e6f",
        "ControlNet 0": 'Module: canny, Model: "diffusers_xl_canny"',
        "Skipped": None,
    }
    prompt = "emoji, male, smiling, glasses <lora:memoji:1>"
    negative = "Pixelated design, distorted facial features"
    text = format_a1111_parameters(prompt, negative, settings)
    lines = text.split("\n")
    assert lines[0] == prompt
    assert lines[1] == f"Negative prompt: {negative}"
    assert lines[2].startswith(
        "Steps: 50, Sampler: DDIM, CFG scale: 7, Seed: 2968506678, Size: 512x512, Model hash: abc123, "
        'Model: samaritan3dCartoon, Denoising strength: 0.75, Lora hashes: "memoji: 1a2b3c4d5e6f", '
    )
    assert "Skipped" not in text
    p, n, parsed = parse_a1111_parameters(text)
    assert (p, n) == (prompt, negative)
    expected = {k: ("7" if k == "CFG scale" else str(v)) for k, v in settings.items() if v is not None}
    assert parsed == expected
    assert list(parsed) == list(expected)  # order kept


def test_a1111_infotext_without_negative_and_multiline_prompt() -> None:
    text = format_a1111_parameters("line one\nline two", "", {"Steps": 20, "Sampler": "Euler a", "Seed": 1})
    assert "Negative prompt" not in text
    assert parse_a1111_parameters(text) == (
        "line one\nline two",
        "",
        {"Steps": "20", "Sampler": "Euler a", "Seed": "1"},
    )


def test_a1111_reads_real_style_infotext_with_short_last_line() -> None:
    # Fewer than 3 pairs on the last line: A1111 treats it as part of the prompt.
    assert parse_a1111_parameters("a cat\nstyle: anime") == ("a cat\nstyle: anime", "", {})


def test_a1111_rejects_bad_keys() -> None:
    with pytest.raises(InputError, match="settings"):
        format_a1111_parameters("p", "", {"Bad: key": 1})
