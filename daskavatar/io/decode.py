"""Decoding one image file into 8-bit RGB without ever crashing the worker.

Every failure becomes an :class:`ImageRejected` with a stable reason code, so a broken file
becomes a rejected record in the job report instead of failing its map task. Listing the
input files is in :mod:`daskavatar.io.images`; face analysis is in :mod:`daskavatar.faces`.

Reason codes of decoding (the face-analysis codes are in :mod:`daskavatar.faces.pipeline`):

==================  ==============================================================
``not_found``       the file does not exist
``read_failed``     the file exists but reading it failed (a folder, permissions, I/O)
``empty_file``      the file has zero bytes
``not_an_image``    the bytes are not in an image format Pillow reads (text, HTML, PDF)
``truncated``       the file ends before the image data does
``corrupt``         the header is valid but the image data cannot be decoded
``too_large``       the header declares more pixels than ``max_image_pixels``
==================  ==============================================================

What is converted rather than rejected: the EXIF orientation is applied; grey, bilevel,
palette, LA, RGBA and PA images are converted to RGB, transparent parts composited over
white; 16-bit images are scaled by 1/257; float images in [0, 1] are scaled to [0, 255];
CMYK images (Adobe-inverted and YCCK JPEGs included, which libjpeg decodes to CMYK) are
converted through their embedded ICC profile when there is one, and with Pillow's
device-CMYK formula otherwise. Multi-frame files (GIF, TIFF) give their first frame.

NOTE: libjpeg recovers from corrupt entropy-coded data (it fills the damaged blocks and only
warns), and Pillow does not report those warnings, so such a JPEG decodes as ``ok`` with
grey or smeared blocks. Only damage libjpeg stops on is reported as ``corrupt``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import struct
import warnings

import fsspec
import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

REASON_CODES = ("not_found", "read_failed", "empty_file", "not_an_image", "truncated",
                "corrupt", "too_large")
"""Stable reason codes that :func:`read_image` raises."""


class ImageRejected(Exception):
    """An image could not be used; ``reason`` is a stable code for the job report."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """An image decoded to RGB, and how it relates to the stored file."""

    pixels: np.ndarray
    """RGB pixels, shape ``(height, width, 3)``, uint8, EXIF orientation applied."""
    scale: float
    """Decoded size over stored size (1.0, or 1/2, 1/4, 1/8 for reduced JPEG decoding)."""
    format: str
    """Pillow's format name of the file, such as ``JPEG`` or ``PNG``."""
    mode: str
    """Pillow's mode of the stored pixels before conversion, such as ``CMYK`` or ``I;16``."""


def read_image(url, *, max_pixels, max_side=None, storage_options=None) -> np.ndarray:
    """Read and decode the image at ``url`` into RGB; see :func:`decode_image`.

    Returns an array of shape ``(height, width, 3)``, dtype uint8.
    """
    return decode_image(url, max_pixels=max_pixels, max_side=max_side,
                        storage_options=storage_options).pixels


def decode_image(url, *, max_pixels, max_side=None, storage_options=None) -> DecodedImage:
    """Read and decode the image at ``url`` into 8-bit RGB.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs only its file size. When ``max_side`` is given, JPEGs whose
    longer side is above it are decoded at 1/2, 1/4 or 1/8 size by libjpeg's DCT scaling.
    The smallest scale that keeps the longer side at ``max_side`` or more is used, and the
    decode then costs a fraction of the memory and time of a full one.

    Raises :class:`ImageRejected` with a code from :data:`REASON_CODES`.
    """
    data = _read_bytes(url, storage_options)
    try:
        return _decode(url, data, max_pixels=max_pixels, max_side=max_side)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        known = _format_from_signature(data)
        if known:
            raise ImageRejected("corrupt", f"{url} starts like a {known} file but its header "
                                           "is invalid") from None
        raise ImageRejected("not_an_image", f"{url} is not in an image format that can be "
                                            "read (JPEG, PNG, WebP, BMP, TIFF, GIF)") from None
    except Image.DecompressionBombError as error:
        # Pillow refuses headers above twice its own limit before the size can be read back,
        # so the pixel count comes from its message.
        found = re.search(r"\((\d+) pixels\)", str(error))
        pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow opens"
        raise ImageRejected("too_large", f"{url} has {pixels}, more than max_image_pixels = "
                                         f"{max_pixels}; resize it") from error
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError,
            KeyError, TypeError, struct.error) as error:
        # Pillow's plugins raise all of these on malformed headers and data.
        if _is_truncation(error):
            raise ImageRejected("truncated", f"{url} is truncated: the file ends before the "
                                             f"image data ({error})") from error
        raise ImageRejected("corrupt", f"{url} has a valid header but its image data cannot "
                                       f"be decoded: {type(error).__name__}: {error}") from error


def _read_bytes(url, storage_options) -> bytes:
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageRejected("not_found", f"{url} not found; it was listed but has been "
                                         "removed or renamed since") from None
    except (OSError, ValueError) as error:
        raise ImageRejected("read_failed", f"reading {url} failed: {error}") from error
    if not data:
        raise ImageRejected("empty_file", f"{url} is an empty file (0 bytes)")
    return data


def _decode(url, data: bytes, *, max_pixels, max_side) -> DecodedImage:
    # Pillow's own bomb check warns below twice its limit; the explicit check below is the
    # limit that applies, so the warning would only be noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(
                "too_large", f"{url} has {width}x{height} pixels, more than max_image_pixels "
                f"= {max_pixels}; resize it or raise max_image_pixels")
        if width < 1 or height < 1:
            raise ImageRejected("corrupt", f"{url} declares an empty size {width}x{height}")

        stored_mode, file_format = image.mode, image.format or "unknown"
        scale = 1.0
        if max_side and image.format == "JPEG" and max(width, height) > max_side:
            factor = _draft_factor(max(width, height), max_side)
            if factor > 1:
                image.draft(image.mode, (-(-width // factor), -(-height // factor)))
                scale = image.size[0] / width

        image.load()
        # In place, because a transposed copy would hold a second full-size image.
        ImageOps.exif_transpose(image, in_place=True)
        return DecodedImage(pixels=_to_rgb(image), scale=scale, format=file_format,
                            mode=stored_mode)


def _draft_factor(longer_side: int, max_side: int) -> int:
    """Return the largest of 1, 2, 4, 8 that keeps ``longer_side / factor >= max_side``."""
    factor = 1
    while factor < 8 and longer_side / (factor * 2) >= max_side:
        factor *= 2
    return factor


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _grey_to_rgb(np.asarray(image), mode)
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or \
            (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return _to_array(image if mode == "RGB" else image.convert("RGB"))


def _to_array(image: Image.Image, band_rows: int = 256) -> np.ndarray:
    """Copy an RGB image into a new array, ``band_rows`` rows at a time.

    ``np.asarray(image)`` first copies all pixels into one ``bytes`` object and then into
    the array. Copying bands keeps that temporary small. Decoding a 4000x3000 JPEG peaked
    208 MiB above the idle RSS with a transposed copy, ``convert`` and ``asarray``, and
    90 MiB this way (``benchmarks/decode_memory.py``, Pillow 13.0).
    """
    array = np.empty((image.height, image.width, 3), dtype=np.uint8)
    for top in range(0, image.height, band_rows):
        bottom = min(top + band_rows, image.height)
        array[top:bottom] = np.asarray(image.crop((0, top, image.width, bottom)))
    return array


def _grey_to_rgb(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale one-channel 16-bit, 32-bit or float pixels ``(h, w)`` to uint8 RGB ``(h, w, 3)``.

    16-bit data is divided by 257 so its exposure is kept. 32-bit integers up to 65535 are
    16-bit data in Pillow's ``I`` mode. Floats in [0, 1] are scaled by 255 and floats up
    to 255 are taken as they are. Other ranges are stretched from 0 to their maximum, because
    nothing states their white level.
    """
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 0.0
    if mode.startswith("I;16") or (mode == "I" and 255 < top <= 65535):
        white = 65535.0
    elif mode == "F" and top <= 1.0:
        white = 1.0
    elif top <= 255.0:
        white = 255.0
    else:
        white = top
    grey = np.nan_to_num(values / white, nan=0.0, posinf=1.0, neginf=0.0)
    grey = np.round(np.clip(grey, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _cmyk_to_rgb(image: Image.Image) -> np.ndarray:
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"),
                                                  outputMode="RGB")
            return np.asarray(converted)
        except (ImageCms.PyCMSError, OSError, ValueError) as error:
            logger.debug("Ignoring an unusable ICC profile of a CMYK image: %s", error)
    return np.asarray(image.convert("RGB"))


def _is_truncation(error: Exception) -> bool:
    text = str(error).lower()
    return isinstance(error, EOFError) or "truncated" in text or "premature end" in text \
        or "not enough data" in text


_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"),
               (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _format_from_signature(data: bytes) -> str | None:
    """Return the format whose magic bytes start ``data``, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None

