"""Listing input images and decoding them robustly.

Discovery runs on the client and only lists files (``fsspec`` globs, local or ``s3://``).
It reads no pixels. Decoding runs in map tasks and is in :mod:`daskavatar.io.decode`, which
turns read and decode errors into an :class:`ImageRejected` with a stable reason code. Face
detection is in :mod:`daskavatar.faces`, and the per-image records are built in
:mod:`daskavatar.jobs.runner`.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import posixpath
import re

import fsspec

from daskavatar.exceptions import InputNotFoundError, JobSpecError
# Decoding moved to daskavatar.io.decode; these names stay importable from here.
from daskavatar.io.decode import ImageRejected, read_image  # noqa: F401

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
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
    labelled: bool = True
    """True when the identity comes from a folder name or the CSV; False when the image is
    its own identity because nothing labels it (identity clustering may then regroup it)."""


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
            found.setdefault(url, (relative, _identity_from_path(relative),
                                   _labelled_by_folder(relative)))

    labels = _read_identities_csv(identities_csv, storage_options) if identities_csv else {}
    records = []
    for row, url in enumerate(sorted(found)):
        relative, identity, labelled = found[url]
        label = _lookup_label(labels, url, relative)
        records.append(ImageRecord(url=url, image_id=relative, identity=label or identity,
                                   row=row, labelled=labelled or label is not None))

    logger.info("Discovered %d images of %d identities", len(records),
                len({r.identity for r in records}))
    return records


def _glob_root(path: str) -> str:
    match = _GLOB_CHARS.search(path)
    prefix = path[:match.start()] if match else path
    return prefix.rsplit("/", 1)[0] if "/" in prefix else ""


def _identity_from_path(relative: str) -> str:
    if _labelled_by_folder(relative):
        return relative.split("/")[0]
    return os.path.splitext(relative)[0].replace("/", "__")


def _labelled_by_folder(relative: str) -> bool:
    parts = relative.split("/")
    return len(parts) > 1 and not parts[0].startswith(("_", "."))


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
