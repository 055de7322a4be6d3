"""A generated corpus of image files: every format and mode photos arrive in, and broken files.

Each :class:`Case` writes one file and states the expected outcome of decoding it: ``ok``
with the expected size and quadrant colours, or a reason code of
:mod:`daskavatar.io.decode`. The good files show :func:`pattern`, four coloured quadrants,
so a test can check orientation and colour conversion, not only that decoding returned.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

WIDTH, HEIGHT = 64, 48
QUADRANT_COLOURS = np.array([[[220, 40, 30], [30, 190, 60]],
                             [[40, 60, 210], [235, 225, 90]]], dtype=np.uint8)
"""RGB colour of the top-left, top-right, bottom-left and bottom-right quadrants."""


def pattern(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Return the test pattern, shape ``(height, width, 3)`` uint8."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:height // 2, :width // 2] = QUADRANT_COLOURS[0, 0]
    image[:height // 2, width // 2:] = QUADRANT_COLOURS[0, 1]
    image[height // 2:, :width // 2] = QUADRANT_COLOURS[1, 0]
    image[height // 2:, width // 2:] = QUADRANT_COLOURS[1, 1]
    return image


def quadrant_means(image: np.ndarray) -> np.ndarray:
    """Return the mean colour of the inner half of each quadrant, shape ``(2, 2, 3)``."""
    height, width = image.shape[:2]
    means = np.zeros((2, 2, 3))
    for row in range(2):
        for column in range(2):
            top, left = row * height // 2, column * width // 2
            patch = image[top + height // 8:top + 3 * height // 8,
                          left + width // 8:left + 3 * width // 8]
            means[row, column] = patch.reshape(-1, 3).mean(axis=0)
    return means


def _grey(colours: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of RGB colours, as Pillow's ``convert("L")`` computes it."""
    luma = colours.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.repeat(np.round(luma)[..., None], 3, axis=-1)


@dataclasses.dataclass(frozen=True)
class Case:
    """One generated file and its expected decoding outcome."""

    name: str
    filename: str
    write: Callable[[str], None]
    reason: str = "ok"
    """``ok`` or the expected reason code."""
    size: tuple[int, int] = (WIDTH, HEIGHT)
    """Expected decoded (width, height) when ``reason`` is ``ok``."""
    colours: np.ndarray | None = None
    """Expected quadrant colours ``(2, 2, 3)``; None means :data:`QUADRANT_COLOURS`."""
    tolerance: float = 12.0
    """Largest allowed difference of a quadrant's mean channel value."""


def _save(image: Image.Image, format_name: str, **options) -> Callable[[str], None]:
    def write(path):
        image.save(path, format_name, **options)
    return write


def _bytes(data: bytes) -> Callable[[str], None]:
    def write(path):
        with open(path, "wb") as f:
            f.write(data)
    return write


def _encoded(image: Image.Image, format_name: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format_name, **options)
    return buffer.getvalue()


def _rotated_jpeg(orientation: int) -> Callable[[str], None]:
    """A JPEG stored so that applying EXIF ``orientation`` shows :func:`pattern`."""
    # The transpose that undoes each orientation tag, per the EXIF 2.3 specification.
    undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
            8: Image.Transpose.ROTATE_270}[orientation]
    stored = Image.fromarray(pattern()).transpose(undo)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(stored, "JPEG", quality=95, exif=exif)


def _cmyk_pattern() -> Image.Image:
    return Image.fromarray(pattern()).convert("CMYK")


def _ycck_jpeg(path: str) -> None:
    """Write :func:`pattern` as an Adobe YCCK JPEG (Adobe APP14 transform 2).

    Pillow only writes CMYK JPEGs (transform 0), so the channels are first set to the YCC
    values of the CMYK image and the transform byte is then switched to 2. A decoder that
    honours the transform gets the CMYK image back.
    """
    cmyk = np.asarray(_cmyk_pattern()).astype(np.float64)
    c, m, y, k = np.moveaxis(cmyk, -1, 0)
    luma = 0.299 * c + 0.587 * m + 0.114 * y
    blue = -0.168736 * c - 0.331264 * m + 0.5 * y + 128.0
    red = 0.5 * c - 0.418688 * m - 0.081312 * y + 128.0
    stored = np.stack([luma, blue, red, 255.0 - k], axis=-1)
    # Pillow writes CMYK inverted, as Adobe applications do; invert so the stored bytes are YCCK.
    encoder_input = np.clip(np.round(255.0 - stored), 0, 255).astype(np.uint8)
    encoded = Image.frombytes("CMYK", (WIDTH, HEIGHT), encoder_input.tobytes())
    data = bytearray(_encoded(encoded, "JPEG", quality=100))
    marker = data.find(b"\xff\xee")
    if data[marker + 4:marker + 9] != b"Adobe":
        raise RuntimeError("Pillow wrote no Adobe APP14 marker into the CMYK JPEG")
    data[marker + 15] = 2
    _bytes(bytes(data))(path)


def _png_16bit_rgb(path: str) -> None:
    # OpenCV writes BGR; 16-bit values are the 8-bit ones times 257, so exposure is unchanged.
    values = pattern()[..., ::-1].astype(np.uint16) * 257
    cv2.imwrite(path, values)


def _png_16bit_grey(path: str) -> None:
    grey = np.asarray(Image.fromarray(pattern()).convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(path, "PNG")


def _tiff_float(path: str) -> None:
    grey = np.asarray(Image.fromarray(pattern()).convert("L")).astype(np.float32) / 255.0
    Image.fromarray(grey).save(path, "TIFF")


def _png_with_bad_data() -> bytes:
    data = bytearray(_encoded(Image.fromarray(pattern()), "PNG"))
    start = data.find(b"IDAT")
    data[start + 8] ^= 0xFF
    return bytes(data)


def _png_bomb() -> bytes:
    """A small PNG declaring 12000 x 12000 pixels of one colour (1.4 MB of zlib data)."""
    width = height = 12_000
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = zlib.compress(b"\x00" * (width + 1) * 256, 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + \
        chunk(b"IEND", b"")


def _jpeg_with_bad_frame_header() -> bytes:
    """A JPEG whose start-of-frame header declares a sample precision of 7 bits."""
    data = bytearray(_encoded(Image.fromarray(pattern()), "JPEG", quality=90))
    frame = data.find(b"\xff\xc0")
    data[frame + 4] = 7
    return bytes(data)


def _png_with_bad_header_crc() -> bytes:
    data = bytearray(_encoded(Image.fromarray(pattern()), "PNG"))
    data[data.find(b"IHDR") + 17] ^= 0xFF
    return bytes(data)


def _truncated(data: bytes, keep: float) -> bytes:
    return data[:int(len(data) * keep)]


def build_cases() -> list[Case]:
    """Return every case of the corpus, good files first."""
    rgb = Image.fromarray(pattern())
    grey = _grey(QUADRANT_COLOURS)
    white = np.full((2, 2, 3), 255)
    jpeg = _encoded(rgb, "JPEG", quality=90)
    png = _encoded(rgb, "PNG")

    transparent = Image.fromarray(pattern()).convert("RGBA")
    alpha = np.full((HEIGHT, WIDTH), 255, np.uint8)
    alpha[HEIGHT // 2:, WIDTH // 2:] = 0
    transparent.putalpha(Image.fromarray(alpha))
    composited = QUADRANT_COLOURS.copy()
    composited[1, 1] = 255

    palette_rgb = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette_transparent = palette_rgb.copy()
    palette_transparent.info["transparency"] = palette_rgb.getpixel((WIDTH - 1, HEIGHT - 1))

    grey_alpha = rgb.convert("LA")
    grey_alpha.putalpha(Image.fromarray(alpha))
    grey_composited = grey.copy()
    grey_composited[1, 1] = 255

    bilevel = Image.fromarray(pattern()).convert("L").point(lambda v: 255 if v > 128 else 0)
    bilevel_colours = np.where(grey > 128, 255, 0)

    large = Image.fromarray(pattern(4096, 3072))

    return [
        Case("baseline JPEG", "baseline.jpg", _save(rgb, "JPEG", quality=90)),
        Case("progressive JPEG", "progressive.jpg",
             _save(rgb, "JPEG", quality=90, progressive=True)),
        Case("greyscale JPEG", "grey.jpg", _save(rgb.convert("L"), "JPEG", quality=95),
             colours=grey),
        Case("CMYK JPEG (Adobe, inverted)", "cmyk.jpg", _save(_cmyk_pattern(), "JPEG",
                                                              quality=95)),
        Case("YCCK JPEG", "ycck.jpg", _ycck_jpeg),
        Case("JPEG with EXIF orientation 3", "orientation3.jpg", _rotated_jpeg(3)),
        Case("JPEG with EXIF orientation 6", "orientation6.jpg", _rotated_jpeg(6)),
        Case("JPEG with EXIF orientation 8", "orientation8.jpg", _rotated_jpeg(8)),
        Case("large JPEG decoded at reduced size", "large.jpg",
             _save(large, "JPEG", quality=85), size=(1024, 768)),
        Case("RGB PNG", "rgb.png", _bytes(png)),
        Case("RGBA PNG over white", "rgba.png", _save(transparent, "PNG"), colours=composited),
        Case("LA PNG over white", "la.png", _save(grey_alpha, "PNG"), colours=grey_composited),
        Case("palette PNG", "palette.png", _save(palette_rgb, "PNG")),
        Case("palette PNG with a transparent index", "palette_transparent.png",
             _save(palette_transparent, "PNG"), colours=composited),
        Case("bilevel PNG", "bilevel.png", _save(bilevel.convert("1"), "PNG"),
             colours=bilevel_colours, tolerance=1.0),
        Case("16-bit greyscale PNG", "grey16.png", _png_16bit_grey, colours=grey,
             tolerance=1.0),
        Case("16-bit RGB PNG", "rgb16.png", _png_16bit_rgb, tolerance=1.0),
        Case("lossy WebP", "lossy.webp", _save(rgb, "WEBP", quality=90)),
        Case("lossless WebP with alpha", "alpha.webp",
             _save(transparent, "WEBP", lossless=True), colours=composited, tolerance=1.0),
        Case("BMP", "image.bmp", _save(rgb, "BMP"), tolerance=0.0),
        Case("RGB TIFF", "rgb.tiff", _save(rgb, "TIFF", compression="tiff_deflate"),
             tolerance=0.0),
        Case("CMYK TIFF", "cmyk.tiff", _save(_cmyk_pattern(), "TIFF"), tolerance=1.0),
        Case("float TIFF in [0, 1]", "float.tiff", _tiff_float, colours=grey, tolerance=1.0),
        Case("GIF", "image.gif", _save(rgb, "GIF")),
        Case("JPEG named .png", "misnamed.png", _bytes(jpeg)),
        Case("white image", "white.png", _save(Image.new("RGB", (WIDTH, HEIGHT),
                                                         (255, 255, 255)), "PNG"),
             colours=white, tolerance=0.0),

        Case("zero-byte file", "empty.jpg", _bytes(b""), reason="empty_file"),
        Case("text file named .jpg", "notes.jpg", _bytes(b"shopping list: milk, eggs\n"),
             reason="not_an_image"),
        Case("HTML page named .png", "page.png",
             _bytes(b"<!DOCTYPE html><html><body>404 Not Found</body></html>"),
             reason="not_an_image"),
        Case("PDF named .jpg", "document.jpg", _bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"),
             reason="not_an_image"),
        Case("JPEG header only", "header_only.jpg", _bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF"),
             reason="truncated"),
        Case("JPEG cut at 60 %", "cut.jpg", _bytes(_truncated(jpeg, 0.6)), reason="truncated"),
        Case("PNG cut at 60 %", "cut.png", _bytes(_truncated(png, 0.6)), reason="truncated"),
        Case("JPEG with an invalid frame header", "bad_frame.jpg",
             _bytes(_jpeg_with_bad_frame_header()), reason="corrupt"),
        Case("PNG with damaged image data", "bad_data.png", _bytes(_png_with_bad_data()),
             reason="corrupt"),
        Case("PNG with a bad header checksum", "bad_header.png",
             _bytes(_png_with_bad_header_crc()), reason="corrupt"),
        Case("PNG decompression bomb", "bomb.png", _bytes(_png_bomb()), reason="too_large"),
        Case("folder named .jpg", "folder.jpg", os.makedirs, reason="read_failed"),
    ]


def write_corpus(folder: str) -> dict[str, Case]:
    """Write every case into ``folder``; return the cases by file name."""
    cases = build_cases()
    for case in cases:
        case.write(os.path.join(folder, case.filename))
    return {case.filename: case for case in cases}
