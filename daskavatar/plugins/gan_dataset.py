"""The built-in ``GAN_Dataset`` plugin: a face collection as a 3D-aware GAN training set.

It writes the layout that EG3D's ``ImageFolderDataset`` reads: square aligned crops as PNG
files, and a ``dataset.json`` whose ``labels`` list contains ``[file name, 25 numbers]`` per
image: the flattened 4x4 camera-to-world matrix followed by the flattened 3x3 normalised
intrinsics. Both go into one uncompressed ``dataset.zip`` or a ``dataset/`` folder.

Cameras follow EG3D's conventions: OpenCV camera axes (x right, y down, z forward) in a
world whose y axis points up and whose z axis points out of the face, so a frontal camera
is ``diag(1, -1, -1)`` placed at ``(0, 0, camera_radius)``. The head pose of the map stage
sets the rotation; the translation is scaled to ``camera_radius``, which scales the scene
and leaves every projection unchanged. Intrinsics are divided by the crop side, so the
principal point of a centred crop is ``(0.5, 0.5)``.

Mirrored copies (``mirror: true``) are the crop flipped left to right with the camera
reflected through the face's plane of symmetry, ``x = 0``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import zipfile

import fsspec
import numpy as np

from daskavatar.exceptions import JobSpecError
from daskavatar.export.previews import png_bytes
from daskavatar.io.outputs import join, read_json, safe_name, write_file
from daskavatar.plugins.base import MapReducePlugin

logger = logging.getLogger(__name__)

ARCHIVES = ("zip", "folder")

HEAD_TO_WORLD = np.diag([1.0, -1.0, -1.0, 1.0])
"""From the pose module's head frame (x to the subject's left, y down, z into the head) to
EG3D's world (y up, z out of the face)."""

MIRROR_WORLD = np.diag([-1.0, 1.0, 1.0, 1.0])
"""Reflection of the world through the face's plane of symmetry."""

MIRROR_CAMERA = np.diag([-1.0, 1.0, 1.0, 1.0])
"""Reflection of the camera's x axis, which a left-right image flip amounts to."""


@dataclasses.dataclass(frozen=True)
class GANDatasetConfig:
    """The ``GAN_Dataset`` keys of the job ``config`` block (defaults in daskavatar.yaml)."""

    archive: str
    """``zip``: one uncompressed ``dataset.zip``; ``folder``: a ``dataset/`` folder."""
    mirror: bool
    """Also write each crop flipped left to right, with the mirrored camera."""
    camera_radius: float
    """Distance of every camera from the world origin; EG3D's FFHQ cameras use 2.7."""

    def validate(self) -> None:
        if self.archive not in ARCHIVES:
            raise JobSpecError(f"invalid archive {self.archive!r}; use one of "
                               f"{', '.join(ARCHIVES)}")
        if not self.camera_radius > 0:
            raise JobSpecError(f"invalid camera_radius {self.camera_radius}; use a positive "
                               "distance")


class GANDataset(MapReducePlugin):
    """Write aligned crops and EG3D camera labels for 3D-aware GAN training."""

    name = "GAN_Dataset"
    config_class = GANDatasetConfig
    face_defaults = {"output_resolution": 512}
    features = ("crops", "c2w", "intrinsics")
    outputs = ("<identity>/<image>.png", "<identity>/<image>_mirror.png", "labels.json")
    output_folder = "dataset"

    def reduce(self, context) -> dict:
        rows = context.rows()
        if not rows:
            return {"status": "skipped", "reason": "no_usable_photos",
                    "message": f"none of the {len(context.records)} photos of "
                               f"{context.key!r} has a usable face"}
        data = context.read_features(("crops", "c2w", "intrinsics"), rows)
        names = {int(r["row"]): safe_name(r["image_id"]) for r in context.records}
        folder_name = context.folder.rstrip("/").rsplit("/", 1)[-1]

        labels = []
        for crop, c2w, intrinsics, row in zip(data["crops"], data["c2w"], data["intrinsics"],
                                              data["rows"]):
            resolution = crop.shape[0]
            camera = eg3d_camera(c2w.astype(np.float64), intrinsics.astype(np.float64),
                                 resolution, radius=self.config.camera_radius)
            views = [(names[int(row)], crop, camera)]
            if self.config.mirror:
                views.append((names[int(row)] + "_mirror", crop[:, ::-1], mirror_camera(camera)))
            for stem, image, label in views:
                context.write_bytes(f"{stem}.png", png_bytes(np.ascontiguousarray(image)))
                labels.append([f"{folder_name}/{stem}.png", [round(float(v), 7) for v in label]])

        # labels.json is written last: its presence means this identity's images are complete.
        context.write_json("labels.json", labels)
        return {"status": "ok", "images": len(labels), "resolution": int(data["crops"].shape[1])}

    def finish(self, context) -> dict:
        done = [r for r in context.results if r["status"] == "ok"]
        labels = []
        for result in done:
            labels.extend(read_json(join(result["folder"], "labels.json"),
                                    storage_options=context.storage_options))
        labels.sort(key=lambda label: label[0])
        dataset = {"labels": labels}

        folder = join(context.folder, self.output_folder)
        if self.config.archive == "folder":
            context.write_json(join(self.output_folder, "dataset.json"), dataset)
            return {"dataset": folder, "images": len(labels), "identities": len(done)}

        target = join(context.folder, "dataset.zip")
        write_zip(target, folder, dataset, storage_options=context.storage_options)
        fs, path = fsspec.core.url_to_fs(folder, **(context.storage_options or {}))
        fs.rm(path, recursive=True)
        return {"dataset": target, "images": len(labels), "identities": len(done)}


def eg3d_camera(c2w: np.ndarray, intrinsics: np.ndarray, resolution: int, *,
                radius: float) -> np.ndarray:
    """Return the 25-number EG3D label of one crop.

    ``c2w`` ``(4, 4)`` is in the head frame of :mod:`daskavatar.faces.pose` with OpenCV
    camera axes, ``intrinsics`` ``(3, 3)`` in crop pixels of side ``resolution``. Returns
    shape ``(25,)``: the world camera-to-world matrix, then the intrinsics divided by the
    crop side.
    """
    world = HEAD_TO_WORLD @ c2w
    distance = float(np.linalg.norm(world[:3, 3]))
    if distance > 0:
        world[:3, 3] *= radius / distance

    normalised = intrinsics.copy()
    normalised[:2] /= resolution
    return np.concatenate([world.reshape(16), normalised.reshape(9)])


def mirror_camera(label: np.ndarray) -> np.ndarray:
    """Return the label ``(25,)`` of the left-right flipped crop: reflected world and camera."""
    c2w = MIRROR_WORLD @ label[:16].reshape(4, 4) @ MIRROR_CAMERA
    intrinsics = label[16:].reshape(3, 3).copy()
    intrinsics[0, 2] = 1.0 - intrinsics[0, 2]
    return np.concatenate([c2w.reshape(16), intrinsics.reshape(9)])


def write_zip(url: str, folder: str, dataset: dict, *, storage_options=None) -> None:
    """Pack the PNG files of ``dataset`` from ``folder`` and ``dataset.json`` into ``url``.

    The archive is uncompressed (PNG is compressed already, and EG3D reads members
    directly). It is built in a local temporary file, one member at a time, and then moved
    to ``url`` in one step.
    """
    fs, root = fsspec.core.url_to_fs(folder, **(storage_options or {}))
    handle, local = tempfile.mkstemp(suffix=".zip")
    os.close(handle)
    try:
        with zipfile.ZipFile(local, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, _ in dataset["labels"]:
                with fs.open(f"{root.rstrip('/')}/{name}", "rb") as source, \
                        archive.open(name, "w") as target:
                    while chunk := source.read(1 << 20):
                        target.write(chunk)
            archive.writestr("dataset.json", json.dumps(dataset))
        write_file(url, local, storage_options=storage_options)
    finally:
        if os.path.exists(local):
            os.remove(local)
