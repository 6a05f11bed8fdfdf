"""Image bytes -> `pixel_values`, as the model's image processor prepares them.

Decoding goes through Pillow (JPEG, PNG, WebP, GIF's first frame; a multi-picture JPEG's
first) with the pixel count checked from the header before any pixel is decoded; the resize
uses Pillow's filter as transformers' image processors do, then rescale and normalise are done
in numpy.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidArgument
from service.runtime.manifest import ImagePreprocessing

# MPO is a JPEG whose header lists more pictures after the first (a camera's depth map or
# second view): Pillow names its format MPO; the first picture is the JPEG's own.
FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF")
# Pillow's own decompression-bomb guard (89.5M pixels by default) is off: `_open_checked` checks
# every image's header against --max-image-pixels before any pixel is decoded, so the flag holds
# above Pillow's default too, and a client is told the size and the limit.
Image.MAX_IMAGE_PIXELS = None


def _open_checked(data: bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    if not data:
        raise InvalidArgument("image is empty")
    if len(data) > max_bytes:
        raise InvalidArgument(f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise InvalidArgument("image could not be decoded (send JPEG, PNG, WebP or GIF)") from None
    except Exception as exc:  # Pillow raises many types on malformed data (ValueError, ...)
        raise InvalidArgument(f"image could not be decoded: {_reason(exc)}") from None
    if image.format not in FORMATS:
        raise InvalidArgument(
            f"image format {image.format} is not supported (send JPEG, PNG, WebP or GIF)"
        )
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidArgument(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    return image


def decode_image(data: bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    """An RGB image, upright as its EXIF orientation says; InvalidArgument for bad input."""
    image = _open_checked(data, max_pixels, max_bytes)
    try:
        image.seek(0)  # GIF / animated WebP / multi-picture JPEG: the first frame
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")
    except Exception as exc:  # any decoder failure is the image's fault, not the server's
        raise InvalidArgument(f"image could not be decoded: {_reason(exc)}") from None


def pixel_values(image: Image.Image, prep: ImagePreprocessing) -> np.ndarray:
    """float32 [1, 3, H, W]: resized, rescaled and normalised per the manifest."""
    try:
        resample = Image.Resampling[prep.resample.upper()]
    except KeyError:
        raise ValueError(f"unknown resample filter {prep.resample!r} in the manifest") from None
    resized = image.resize((prep.width, prep.height), resample=resample)
    array = (np.asarray(resized, dtype=np.float64) * prep.rescale_factor).astype(np.float32)
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)
    array = (array - mean) / std
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


def load_pixel_values(
    data: bytes, prep: ImagePreprocessing, max_pixels: int, max_bytes: int
) -> np.ndarray:
    return pixel_values(decode_image(data, max_pixels, max_bytes), prep)


def _reason(error: Exception) -> str:
    """A decoder error's message, short enough for a client (never a traceback)."""
    text = str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:200] + "..."
