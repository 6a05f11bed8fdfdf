"""Image decoding and preprocessing: formats, EXIF orientation, caps, and transformers parity."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from transformers import ViTImageProcessor

from service.errors import InvalidArgument
from service.runtime.images import decode_image, load_pixel_values
from service.runtime.manifest import ImagePreprocessing

PREP = ImagePreprocessing(height=24, width=32, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
LIMITS = dict(max_pixels=10_000, max_bytes=1 << 20)


def _photo(width: int = 40, height: int = 30) -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    pixels[: height // 2, : width // 2] = [255, 0, 0]  # a red top-left corner marks orientation
    return Image.fromarray(pixels)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_supported_formats_decode_to_rgb(fmt):
    image = decode_image(_encode(_photo(), fmt), **LIMITS)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_gif_uses_its_first_frame():
    frames = [Image.new("RGB", (8, 8), color) for color in [(255, 0, 0), (0, 0, 255)]]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    image = decode_image(data, **LIMITS)
    assert image.getpixel((0, 0))[0] > 200 and image.getpixel((0, 0))[2] < 50


def test_a_multi_picture_jpeg_uses_its_first_picture():
    """Cameras write JPEGs with a second picture (Pillow's format MPO): they were refused."""
    pictures = [Image.new("RGB", (8, 8), color) for color in [(255, 0, 0), (0, 0, 255)]]
    data = _encode(pictures[0], "MPO", save_all=True, append_images=pictures[1:])
    assert data[:3] == b"\xff\xd8\xff"  # a JPEG file to any other reader
    image = decode_image(data, **LIMITS)
    assert image.size == (8, 8) and image.getpixel((4, 4))[0] > 200


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    image = decode_image(_encode(_photo(), "JPEG", exif=exif, quality=95), **LIMITS)
    assert image.size == (30, 40)
    assert image.getpixel((27, 2))[0] > 200, "the red corner moved to the top right"


def test_rgba_and_grayscale_become_rgb():
    for mode in ("RGBA", "L", "P"):
        data = _encode(_photo().convert(mode), "PNG")
        assert decode_image(data, **LIMITS).mode == "RGB"


def test_pixel_count_over_the_cap_is_refused_before_decoding():
    data = _encode(Image.new("RGB", (200, 100)), "PNG")
    with pytest.raises(InvalidArgument, match="200x100 = 20000 pixels; the limit is 10000"):
        decode_image(data, **LIMITS)


def test_the_pixel_cap_holds_on_either_side_of_pillows_own_limit():
    """Pillow refuses more than 89.5M pixels on its own, with no size in its message: the
    server's cap (--max-image-pixels) is the one that decides, below and above it."""
    data = _encode(Image.new("1", (9_500, 9_500)), "PNG")  # 90.25M pixels, 11 KB
    with pytest.raises(InvalidArgument, match="9500x9500 = 90250000 pixels; the limit is 40000000"):
        decode_image(data, max_pixels=40_000_000, max_bytes=1 << 20)
    assert decode_image(data, max_pixels=100_000_000, max_bytes=1 << 20).size == (9_500, 9_500)


def test_byte_size_over_the_cap_is_refused():
    with pytest.raises(InvalidArgument, match="bytes; the limit is 100 bytes"):
        decode_image(_encode(_photo(), "PNG"), max_pixels=10_000, max_bytes=100)


@pytest.mark.parametrize("data", [b"", b"not an image at all", _encode(_photo(), "PNG")[:60]])
def test_undecodable_images_are_invalid_arguments(data):
    with pytest.raises(InvalidArgument, match="image"):
        decode_image(data, **LIMITS)


def test_unsupported_format_is_refused():
    with pytest.raises(InvalidArgument, match="not supported"):
        decode_image(_encode(_photo(), "BMP"), **LIMITS)


def test_pixel_values_match_transformers_image_processor():
    image = _photo()
    processor = ViTImageProcessor(
        size={"height": PREP.height, "width": PREP.width},
        resample=Image.Resampling.BILINEAR,
        image_mean=PREP.mean,
        image_std=PREP.std,
    )
    expected = processor(images=image, return_tensors="np")["pixel_values"]
    ours = load_pixel_values(_encode(image, "PNG"), PREP, **LIMITS)
    assert ours.shape == (1, 3, PREP.height, PREP.width) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def _png_with_chunk(chunk_type: bytes, data: bytes, after_ihdr: bool = True) -> bytes:
    """A valid PNG with one extra chunk (CRC correct) inserted after its header chunk."""
    import struct
    import zlib

    png = _encode(_photo(8, 8), "PNG")
    chunk = struct.pack(">I", len(data)) + chunk_type + data
    chunk += struct.pack(">I", zlib.crc32(chunk_type + data))
    at = 8 + 25 if after_ihdr else 8  # signature, then IHDR (4 + 4 + 13 + 4 bytes)
    return png[:at] + chunk + png[at:]


def _short_ihdr_png() -> bytes:
    import struct
    import zlib

    data = b"\x00\x00\x00\x08\x08"  # 5 bytes where IHDR holds 13
    chunk = (
        struct.pack(">I", len(data))
        + b"IHDR"
        + data
        + struct.pack(">I", zlib.crc32(b"IHDR" + data))
    )
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.mark.parametrize(
    "data",
    [
        _short_ihdr_png(),
        _png_with_chunk(b"gAMA", b"\x00\x01"),  # 2 bytes where gAMA holds 4
        _png_with_chunk(b"zTXt", b"k\x00\x00" + __import__("zlib").compress(b"a" * (4 << 20))),
        _png_with_chunk(b"iCCP", b"p\x00\x00" + __import__("zlib").compress(b"a" * (4 << 20))),
    ],
    ids=["5-byte-IHDR", "2-byte-gAMA", "zTXt-4MB", "iCCP-4MB"],
)
def test_malformed_png_chunks_are_invalid_arguments(data):
    with pytest.raises(InvalidArgument, match="image"):
        load_pixel_values(data, PREP, **LIMITS)
