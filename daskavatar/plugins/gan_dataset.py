"""The built-in ``GAN_Dataset`` plugin: a face collection as a 3D-aware GAN training set.

It writes the layout that EG3D's ``ImageFolderDataset`` reads: square aligned crops as PNG
files, and a ``dataset.json`` whose ``labels`` list contains ``[file name, 25 numbers]`` per
image: the flattened 4x4 camera-to-world matrix followed by the flattened 3x3 normalised
intrinsics. Both go into one uncompressed ``dataset.zip`` or a ``dataset/`` folder.

Cameras follow EG3D's conventions. Camera axes are OpenCV's (x right, y down, z forward).
The world's y axis points up and its z axis out of the face, so a frontal camera is
``diag(1, -1, -1)`` on the positive z axis. As in EG3D's FFHQ labels, every crop gets the
same intrinsics: the normalised focal length ``focal_length`` and the principal point at the
crop centre. The head pose is therefore estimated again on the crop's landmarks with those
intrinsics, against the 3D landmark template of :mod:`daskavatar.faces.pose`. The template
is scaled once for the whole dataset, so that a frontal face filling the crop as the map
stage cuts it (``crop_scale``) is seen from ``camera_radius``. All heads thus have one size,
and each camera's distance follows from how large its face appears.

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
from daskavatar.faces.pose import estimate_pose, landmark_template
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
    """Camera distance from the world origin for a frontal face; EG3D's FFHQ labels use 2.7."""
    focal_length: float
    """Focal length of every crop divided by its side; EG3D's FFHQ labels use 4.2647."""

    def validate(self) -> None:
        if self.archive not in ARCHIVES:
            raise JobSpecError(f"invalid archive {self.archive!r}; use one of "
                               f"{', '.join(ARCHIVES)}")
        if not self.camera_radius > 0:
            raise JobSpecError(f"invalid camera_radius {self.camera_radius}; use a positive "
                               "distance")
        if not self.focal_length > 0:
            raise JobSpecError(f"invalid focal_length {self.focal_length}; use a positive "
                               "value such as 4.2647")


class GANDataset(MapReducePlugin):
    """Write aligned crops and EG3D camera labels for 3D-aware GAN training."""

    name = "GAN_Dataset"
    config_class = GANDatasetConfig
    face_defaults = {"output_resolution": 512}
    features = ("crops", "landmarks")
    outputs = ("<identity>/<image>.png", "<identity>/<image>_mirror.png", "labels.json")
    output_folder = "dataset"

    def reduce(self, context) -> dict:
        rows = context.rows()
        if not rows:
            return {"status": "skipped", "reason": "no_usable_photos",
                    "message": f"none of the {len(context.records)} photos of "
                               f"{context.key!r} has a usable face"}
        data = context.read_features(("crops", "landmarks"), rows)
        stems = _file_stems(context.records)
        folder_name = context.folder.rstrip("/").rsplit("/", 1)[-1]
        scale = self.config.camera_radius / frontal_distance(self.config.focal_length,
                                                             self.face.crop_scale)

        labels, failed = [], []
        for crop, landmarks, row in zip(data["crops"], data["landmarks"], data["rows"]):
            try:
                camera = eg3d_camera(landmarks.astype(np.float64), crop.shape[0],
                                     focal_length=self.config.focal_length, scale=scale)
            except ValueError as error:
                failed.append(f"{stems[int(row)]}: {error}")
                continue
            views = [(stems[int(row)], crop, camera)]
            if self.config.mirror:
                views.append((stems[int(row)] + "_mirror", crop[:, ::-1], mirror_camera(camera)))
            for stem, image, label in views:
                context.write_bytes(f"{stem}.png", png_bytes(np.ascontiguousarray(image)))
                labels.append([f"{folder_name}/{stem}.png", [round(float(v), 7) for v in label]])
        if failed:
            logger.warning("No crop pose for %d photos of %r: %s", len(failed), context.key,
                           "; ".join(failed))

        # labels.json is written last: its presence means this identity's images are complete.
        context.write_json("labels.json", labels)
        result = {"status": "ok", "images": len(labels), "pose_failed": failed,
                  "resolution": int(data["crops"].shape[1]), "images_folder": folder_name}
        if self.config.archive == "zip":
            result["folder"] = None
        return result

    def finish(self, context) -> dict:
        done = [r for r in context.results if r["status"] == "ok"]
        folder = join(context.folder, self.output_folder)
        labels = []
        for result in done:
            labels.extend(read_json(join(folder, result["images_folder"], "labels.json"),
                                    storage_options=context.storage_options))
        labels.sort(key=lambda label: label[0])
        dataset = {"labels": labels}

        if self.config.archive == "folder":
            context.write_json(join(self.output_folder, "dataset.json"), dataset)
            return {"dataset": folder, "images": len(labels), "identities": len(done)}

        target = join(context.folder, "dataset.zip")
        write_zip(target, folder, dataset, storage_options=context.storage_options)
        fs, path = fsspec.core.url_to_fs(folder, **(context.storage_options or {}))
        fs.rm(path, recursive=True)
        return {"dataset": target, "images": len(labels), "identities": len(done)}


def frontal_distance(focal_length: float, crop_scale: float) -> float:
    """Return the template's camera distance for a frontal face as the map stage crops it.

    The crop's side is ``crop_scale`` times the larger extent of the 2D landmarks, so that
    extent is ``1 / crop_scale`` of the side. At the returned distance, a pinhole of
    normalised focal length ``focal_length`` projects the template's frontal extent to
    about that size, ignoring the template's depth.
    """
    template = landmark_template()
    extent = float(np.ptp(template[:, :2], axis=0).max())
    return focal_length * extent * crop_scale


def eg3d_camera(landmarks: np.ndarray, resolution: int, *, focal_length: float,
                scale: float) -> np.ndarray:
    """Return the 25-number EG3D label of one crop from its landmarks ``(68, 2)``.

    The pose is fitted with the fixed intrinsics, and the translation is multiplied by
    ``scale``. Returns shape ``(25,)``: the world camera-to-world matrix, then the
    normalised intrinsics. Raises ``ValueError`` when no pose fits.
    """
    focal = focal_length * resolution
    intrinsics = np.array([[focal, 0.0, resolution / 2.0], [0.0, focal, resolution / 2.0],
                           [0.0, 0.0, 1.0]])
    world = HEAD_TO_WORLD @ estimate_pose(landmarks, intrinsics).c2w
    world[:3, 3] *= scale

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
    os.chmod(local, 0o644)
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


def _file_stems(records: list[dict]) -> dict[int, str]:
    """Return a file name stem per store row: the photo's name, made unique in its folder."""
    stems, used = {}, set()
    for record in sorted(records, key=lambda r: r["row"]):
        stem = safe_name(os.path.splitext(os.path.basename(record["image_id"]))[0])
        if stem in used:
            stem = f"{stem}_{record['row']}"
        used.add(stem)
        stems[int(record["row"])] = stem
    return stems
