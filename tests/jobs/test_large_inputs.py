"""Large inputs within 512 MB workers: 12-megapixel photos and 200 images in one partition."""

import os

import pytest
from PIL import Image

from daskavatar.jobs.runner import run_job
from tests.conftest import shared_path

SOURCES = [("biden", "biden.jpg"), ("biden", "biden2.jpg"), ("rose_leslie", "img1.jpg"),
           ("rose_leslie", "img2.jpg"), ("obama", "obama.jpg"), ("obama", "obama1.jpg"),
           ("kit_harington", "john1.jpeg"), ("alex_lacamoire", "img1.jpg")]
LARGE_SIZE = (4000, 3000)
IMAGES_PER_PARTITION = 200
RESTART_THRESHOLD_MIB = 0.95 * 512e6 / 2 ** 20
"""Dask's nanny restarts a worker at 95 % of its 512 MB memory limit."""


def _enlarge(photo: Image.Image) -> Image.Image:
    """Scale ``photo`` to the height of ``LARGE_SIZE``, keeping its aspect, on a grey canvas."""
    width, height = LARGE_SIZE
    scaled = photo.resize((round(photo.width * height / photo.height), height),
                          Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", LARGE_SIZE, (128, 128, 128))
    canvas.paste(scaled, ((width - scaled.width) // 2, 0))
    return canvas


@pytest.fixture(scope="module")
def large_job(cluster_client, tmp_path_factory):
    """Four 4000x3000 JPEGs and 196 smaller photos, all in one map partition.

    The photos are the test data resized: upscaled to 4000x3000 for the large ones, and
    downscaled to a longer side of 400 pixels for the others.
    """
    source = shared_path("faces_face_recognition")
    folder = tmp_path_factory.mktemp("large")
    for index in range(IMAGES_PER_PARTITION):
        person, name = SOURCES[index % len(SOURCES)]
        (folder / person).mkdir(exist_ok=True)
        with Image.open(os.path.join(source, person, name)) as photo:
            photo = photo.convert("RGB")
            if index < 4:
                photo = _enlarge(photo)
            else:
                photo.thumbnail((400, 400))
            photo.save(folder / person / f"{index:03d}.jpg", quality=90)

    output = tmp_path_factory.mktemp("large-output")
    # max_decode_side 0 turns off the reduced JPEG decoding, so every 12-megapixel photo
    # is decoded at full size, as a PNG of that size always is.
    job = {"plugin_name": "GAN_Dataset", "config": {"output_resolution": "128",
                                                    "archive": "folder",
                                                    "max_decode_side": "0"},
           "input_paths": [str(folder)], "output_path": str(output),
           "num_map_tasks": 1, "num_reduce_tasks": 2}
    report = run_job(job, cluster_client, progress=False)
    return report, folder


def test_large_inputs_are_analysed(large_job):
    report, folder = large_job

    large = [image for image in report.images if int(image["image_id"][-7:-4]) < 4]

    assert len(large) == 4
    for image in large:
        with Image.open(folder / image["image_id"]) as photo:
            assert photo.size == LARGE_SIZE
        assert image["status"] == "ok", image["message"]
    assert report.counts["images"] == IMAGES_PER_PARTITION
    assert report.resume["map_partitions"] == 1
    assert report.counts["rejected_images"] == 0
    assert report.counts["results"] == len({person for person, _ in SOURCES})


def test_large_inputs_memory_below_restart(large_job):
    report, _ = large_job

    assert report.worker_restarts == 0
    assert report.memory["map_peak_rss_mib"] < RESTART_THRESHOLD_MIB
    assert report.memory["reduce_peak_rss_mib"] < RESTART_THRESHOLD_MIB
