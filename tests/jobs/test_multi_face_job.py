"""A job that expands images with several faces into one record and one store row per face."""

import os
import shutil

import numpy as np
import pytest
import zarr

from daskavatar.jobs.runner import run_job
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def multi_face_job(cluster_client, tmp_path_factory):
    source = shared_path("faces_face_recognition")
    folder = tmp_path_factory.mktemp("multi")
    for relative in ("_multi_face/two_people.jpg", "obama/obama.jpg"):
        shutil.copyfile(os.path.join(source, relative), folder / os.path.basename(relative))
    (folder / "empty.jpg").write_bytes(b"")

    output = tmp_path_factory.mktemp("multi_output")
    job = {"plugin_name": "GAN_Dataset",
           "config": {"output_resolution": "64", "archive": "folder",
                      "max_faces_per_image": "3"},
           "input_paths": [str(folder / "*.jpg")], "output_path": str(output),
           "num_map_tasks": 2, "num_reduce_tasks": 1}
    return run_job(job, cluster_client, progress=False), output, job


def test_one_record_per_face(multi_face_job):
    report, _, _ = multi_face_job
    records = {image["image_id"]: image for image in report.images}

    assert set(records) == {"empty.jpg", "obama.jpg", "two_people.jpg", "two_people.jpg#1"}
    assert records["two_people.jpg"]["face_count"] == 2
    assert records["two_people.jpg"]["status"] == "ok"
    assert records["two_people.jpg#1"]["status"] == "ok"
    assert records["two_people.jpg#1"]["face_index"] == 1
    assert records["empty.jpg"]["status"] == "empty_file"


def test_faces_use_image_rows(multi_face_job):
    report, output, _ = multi_face_job
    records = {image["image_id"]: image for image in report.images}
    store = zarr.open_group(str(output / "features.zarr"), mode="r")

    # Images are sorted by URL: empty.jpg is image 0, obama.jpg 1, two_people.jpg 2.
    assert records["obama.jpg"]["row"] == 3
    assert records["two_people.jpg"]["row"] == 6
    assert records["two_people.jpg#1"]["row"] == 7
    assert store["crops"].shape[0] == 9
    assert list(np.asarray(store["status"][:])) == [1, 1, 1, 0, 1, 1, 0, 0, 1]
    main, second = store["crops"][6], store["crops"][7]
    assert main.std() > 10
    assert second.std() > 10
    assert np.abs(main.astype(int) - second.astype(int)).mean() > 10


def test_main_face_is_larger(multi_face_job):
    report, _, _ = multi_face_job
    records = {image["image_id"]: image for image in report.images}

    assert records["two_people.jpg"]["face_size"] >= records["two_people.jpg#1"]["face_size"]


def test_summary_counts_multi_face_images(multi_face_job):
    report, _, _ = multi_face_job

    lines = report.summary().splitlines()

    assert report.counts["multi_face_images"] == 1
    assert "images with several faces: 1 (face_count in job.json)" in lines
    assert not any(line.startswith("resumed:") for line in lines)


def test_summary_of_rerun_says_resumed(multi_face_job, cluster_client):
    report, _, job = multi_face_job

    rerun = run_job(job, cluster_client, progress=False)
    lines = rerun.summary().splitlines()

    assert rerun.resume["resumed"] is True
    # Only keys recorded "ok" count as done, so the rerun makes the skipped key "empty" again.
    assert "resumed: skipped 2 of 2 map partitions and 2 of 3 keys done earlier" in lines
    assert rerun.counts == report.counts
