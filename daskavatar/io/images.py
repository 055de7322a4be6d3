"""Listing input images and decoding them robustly.

Discovery runs on the client and only lists files (``fsspec`` globs, local or ``s3://``).
It reads no pixels. Decoding runs in map tasks and turns read and decode errors into an
:class:`ImageRejected` with a stable reason code, so a broken file becomes a rejected record
instead of failing its task. Face detection is in :mod:`daskavatar.faces`, and the per-image
records are built in :mod:`daskavatar.jobs.runner`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import posixpath
import re

import fsspec
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from daskavatar.exceptions import InputNotFoundError, JobSpecError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One input image as listed on the client."""

    url: str
    """Full fsspec URL or local path of the image."""
    image_id: str
    """Path relative to the root of the glob that found it; unique within a job."""
    identity: str
    """Person the image belongs to (see :func:`discover_images` for the rule)."""
    row: int
    """Row of the image in every array of ``features.zarr``."""


class ImageRejected(Exception):
    """An image could not be used; ``reason`` is a stable code for the job report."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def discover_images(input_paths, *, identities_csv=None, storage_options=None):
    """List the images matched by ``input_paths`` and assign each an identity.

    An image's identity is the first folder under the glob's root that contains it
    (``faces/obama/1.jpg`` with the glob ``faces/**/*.jpg`` belongs to ``obama``). Images
    directly under the root, or in a folder whose name starts with ``_`` or ``.``, are each
    their own identity. A CSV of ``file,person_id`` overrides both rules; images it does not
    list keep the folder rule. A path without glob characters that is a folder is searched
    recursively for image files.

    Returns a list of :class:`ImageRecord` sorted by URL, with ``row`` set to the position.
    Raises :class:`InputNotFoundError` naming the first input that matched nothing.
    """
    storage_options = storage_options or {}
    found: dict[str, tuple[str, str]] = {}

    for path in input_paths:
        fs, fs_path = fsspec.core.url_to_fs(path, **storage_options)
        protocol = path.split("://", 1)[0] + "://" if "://" in path else ""

        if not _GLOB_CHARS.search(fs_path) and fs.isdir(fs_path):
            root = fs_path.rstrip("/")
            matches = [p for p in fs.find(root) if p.lower().endswith(IMAGE_SUFFIXES)]
        else:
            root = _glob_root(fs_path)
            matches = [p for p in fs.glob(fs_path) if not fs.isdir(p)]
        if not matches:
            raise InputNotFoundError(
                f"input path {path!r} matched no file (searched {fs_path!r}); check the path. "
                "Relative paths start from the current folder.")

        for match in matches:
            url = protocol + match if protocol and not match.startswith(protocol) else match
            relative = posixpath.relpath(match, root) if root else match
            found.setdefault(url, (relative, _identity_from_path(relative)))

    labels = _read_identities_csv(identities_csv, storage_options) if identities_csv else {}
    records = []
    for row, url in enumerate(sorted(found)):
        relative, identity = found[url]
        identity = _lookup_label(labels, url, relative) or identity
        records.append(ImageRecord(url=url, image_id=relative, identity=identity, row=row))

    logger.info("Discovered %d images of %d identities", len(records),
                len({r.identity for r in records}))
    return records


def read_image(url, *, max_pixels, storage_options=None):
    """Read and decode the image at ``url`` into RGB.

    Applies the EXIF orientation, converts every mode (grey, palette, RGBA, 16-bit, float,
    CMYK) to 8-bit RGB and checks the pixel count from the header before decoding.

    Returns an array of shape ``(height, width, 3)``, dtype uint8.
    Raises :class:`ImageRejected` with reason ``empty_file``, ``unreadable`` or ``too_large``.
    """
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            data = f.read()
    except OSError as error:
        raise ImageRejected("unreadable", f"cannot read {url}: {error}") from error
    if not data:
        raise ImageRejected("empty_file", f"{url} is an empty file")

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected(
                    "too_large", f"{url} has {width}x{height} pixels, more than max_image_pixels "
                    f"= {max_pixels}; resize it or raise max_image_pixels")
            # In place, because a transposed copy would hold a second full-size image.
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image)
    except UnidentifiedImageError:
        raise ImageRejected("unreadable", f"{url} is not an image in a format Pillow can "
                                          "read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageRejected("unreadable", f"{url} is not a readable image: {error}") from error
    except Image.DecompressionBombError as error:
        raise ImageRejected("too_large", f"{url}: {error}") from error


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = values.max() if values.size else 1.0
        grey = (np.clip(values / (top or 1.0), 0, 1) * 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return _to_array(image if image.mode == "RGB" else image.convert("RGB"))


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


def _glob_root(path: str) -> str:
    match = _GLOB_CHARS.search(path)
    prefix = path[:match.start()] if match else path
    return prefix.rsplit("/", 1)[0] if "/" in prefix else ""


def _identity_from_path(relative: str) -> str:
    parts = relative.split("/")
    if len(parts) > 1 and not parts[0].startswith(("_", ".")):
        return parts[0]
    return os.path.splitext(relative)[0].replace("/", "__")


def _read_identities_csv(path, storage_options):
    try:
        with fsspec.open(path, "r", **storage_options) as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise JobSpecError(f"identities_csv {path!r} not found") from None
    if not rows or not {"file", "person_id"} <= set(rows[0]):
        raise JobSpecError(f"identities_csv {path!r} must have the columns file,person_id")

    base = posixpath.dirname(path) if "://" in path else os.path.dirname(os.path.abspath(path))
    labels = {}
    for row in rows:
        labels[posixpath.normpath(posixpath.join(base, row["file"]))] = row["person_id"]
        labels.setdefault("name:" + posixpath.basename(row["file"]), row["person_id"])
    return labels


def _lookup_label(labels, url, relative):
    if not labels:
        return None
    path = url.split("://", 1)[-1]
    for key in (os.path.normpath(url), posixpath.normpath(path)):
        if key in labels:
            return labels[key]
    for key, value in labels.items():
        if not key.startswith("name:") and (key.endswith("/" + relative) or key == relative):
            return value
    return labels.get("name:" + posixpath.basename(relative))
