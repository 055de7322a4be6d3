"""The GAN_Dataset plugin on real photos: EG3D layout, rotations, mirrored copies."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from daskavatar.jobs.runner import run_job
from daskavatar.plugins.gan_dataset import MIRROR_CAMERA, MIRROR_WORLD
from tests.conftest import shared_path


def zip_job(output):
    return {"plugin_name": "GAN_Dataset", "config": {"mirror": "true"},
            "input_paths": [shared_path("faces_face_recognition") + "/**/*"],
            "output_path": str(output), "num_map_tasks": 4, "num_reduce_tasks": 2}


@pytest.fixture(scope="module")
def zip_dataset(cluster_client, tmp_path_factory):
    output = tmp_path_factory.mktemp("gan_zip")
    report = run_job(zip_job(output), cluster_client, progress=False)
    return report, output


def test_zip_holds_every_usable_face_twice(zip_dataset):
    report, output = zip_dataset

    with zipfile.ZipFile(output / "dataset.zip") as archive:
        dataset = json.loads(archive.read("dataset.json"))
        names = set(archive.namelist())
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
        first = Image.open(io.BytesIO(archive.read(dataset["labels"][0][0])))

    labels = dict((name, np.array(values)) for name, values in dataset["labels"])
    assert len(labels) == 2 * report.counts["usable_faces"]
    assert report.counts["usable_faces"] >= 15
    assert set(labels) | {"dataset.json"} == names
    assert sum(name.endswith("_mirror.png") for name in labels) == len(labels) // 2
    assert first.size == (512, 512)
    assert first.mode == "RGB"
    assert report.finished["images"] == len(labels)
    assert not (output / "dataset").exists()


def test_cameras_are_rotations_with_fixed_intrinsics(zip_dataset):
    _, output = zip_dataset
    with zipfile.ZipFile(output / "dataset.zip") as archive:
        labels = json.loads(archive.read("dataset.json"))["labels"]

    distances = []
    for _, values in labels:
        assert len(values) == 25
        c2w = np.array(values[:16]).reshape(4, 4)
        rotation = c2w[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
        assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])
        distances.append(np.linalg.norm(c2w[:3, 3]))

        # Photos face the camera: its z axis points back at the head, against world +z.
        assert rotation[2, 2] < -0.5

        intrinsics = np.array(values[16:]).reshape(3, 3)
        np.testing.assert_allclose(intrinsics, [[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]])

        # The crop is cut around the face, so the head's origin projects into it.
        u, v = _project(np.array(values), np.zeros(3))
        assert 0.2 < u < 0.8, u
        assert 0.2 < v < 0.8, v

    # One head size for all: a face that fills the crop as intended is seen from 2.7.
    assert np.median(distances) == pytest.approx(2.7, rel=0.15)
    assert min(distances) > 1.5
    assert max(distances) < 4.5


def test_mirrored_entries_mirror_image_and_camera(zip_dataset):
    _, output = zip_dataset
    with zipfile.ZipFile(output / "dataset.zip") as archive:
        labels = dict(json.loads(archive.read("dataset.json"))["labels"])
        pairs = [(name, name[:-len(".png")] + "_mirror.png") for name in labels
                 if not name.endswith("_mirror.png")]

        for name, mirrored in pairs:
            image = np.asarray(Image.open(io.BytesIO(archive.read(name))))
            flipped = np.asarray(Image.open(io.BytesIO(archive.read(mirrored))))
            np.testing.assert_array_equal(flipped, image[:, ::-1])

            original, mirror = np.array(labels[name]), np.array(labels[mirrored])
            expected = MIRROR_WORLD @ original[:16].reshape(4, 4) @ MIRROR_CAMERA
            np.testing.assert_allclose(mirror[:16].reshape(4, 4), expected, atol=1e-6)
            assert mirror[16 + 2] == pytest.approx(1.0 - original[16 + 2])
            assert mirror[16 + 5] == pytest.approx(original[16 + 5])


def test_mirrored_camera_sees_the_mirrored_landmarks(zip_dataset):
    """Project a point with both cameras: the mirrored view shows it at the flipped column."""
    _, output = zip_dataset
    with zipfile.ZipFile(output / "dataset.zip") as archive:
        labels = dict(json.loads(archive.read("dataset.json"))["labels"])
    name = next(n for n in labels if not n.endswith("_mirror.png"))
    original = np.array(labels[name])
    mirror = np.array(labels[name[:-4] + "_mirror.png"])

    point = np.array([0.1, 0.05, 0.2])
    u, v = _project(original, point)
    u_mirror, v_mirror = _project(mirror, MIRROR_WORLD[:3, :3] @ point)

    assert u_mirror == pytest.approx(1.0 - u)
    assert v_mirror == pytest.approx(v)


def test_rerun_rebuilds_the_zip(cluster_client, zip_dataset):
    report, output = zip_dataset
    with zipfile.ZipFile(output / "dataset.zip") as archive:
        before = json.loads(archive.read("dataset.json"))

    rerun = run_job(zip_job(output), cluster_client, progress=False)

    with zipfile.ZipFile(output / "dataset.zip") as archive:
        after = json.loads(archive.read("dataset.json"))
        assert set(archive.namelist()) == {name for name, _ in after["labels"]} | {
            "dataset.json"}
    assert after == before
    assert rerun.counts["results"] == report.counts["results"]


def test_folder_layout(cluster_client, tmp_path):
    output = tmp_path / "gan_folder"
    job = {"plugin_name": "gan-dataset",
           "config": {"archive": "folder", "output_resolution": "128"},
           "input_paths": [shared_path("faces_face_recognition") + "/*/biden*.jpg"],
           "output_path": str(output), "num_map_tasks": 1, "num_reduce_tasks": 1}

    report = run_job(job, cluster_client, progress=False)

    dataset = json.loads((output / "dataset" / "dataset.json").read_text())
    names = [name for name, _ in dataset["labels"]]
    assert len(names) == report.counts["usable_faces"] == 2
    for name in names:
        assert Image.open(output / "dataset" / name).size == (128, 128)


def _project(label, point):
    """Project a world point with an EG3D label; returns normalised image coordinates."""
    c2w = label[:16].reshape(4, 4)
    intrinsics = label[16:].reshape(3, 3)
    camera = c2w[:3, :3].T @ (point - c2w[:3, 3])
    u, v, w = intrinsics @ camera
    return u / w, v / w
