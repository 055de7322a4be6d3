"""A job over a folder that mixes real photos with every kind of generated bad input."""

import json
import os
import shutil

import pytest

from daskavatar.jobs.runner import run_job
from tests.conftest import shared_path
from tests.io.corpus import write_corpus


@pytest.fixture(scope="module")
def mixed_job(cluster_client, tmp_path_factory):
    source = shared_path("faces_face_recognition")
    folder = tmp_path_factory.mktemp("mixed")
    for relative in ("biden/biden.jpg", "biden/biden2.jpg", "obama/obama.jpg"):
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(source, relative), target)
    corpus_folder = folder / "_corpus"
    corpus_folder.mkdir()
    cases = write_corpus(str(corpus_folder))

    output = tmp_path_factory.mktemp("mixed_output")
    job = {"plugin_name": "GAN_Dataset", "config": {"output_resolution": "64",
                                                    "archive": "folder"},
           "input_paths": [str(folder / "**" / "*")], "output_path": str(output),
           "num_map_tasks": 4, "num_reduce_tasks": 2}
    report = run_job(job, cluster_client, progress=False)
    return report, cases, output


def test_job_lists_every_bad_file(mixed_job):
    report, cases, _ = mixed_job
    by_name = {os.path.basename(image["image_id"]): image for image in report.images
               if image["image_id"].startswith("_corpus/")}

    # The folder named folder.jpg is not a file, so the listing skips it.
    listed = {name: case for name, case in cases.items() if name != "folder.jpg"}
    assert set(by_name) == set(listed)
    for name, case in listed.items():
        image = by_name[name]
        # Files that decode show a pattern without a face.
        expected = "no_face" if case.reason == "ok" else case.reason
        assert image["status"] == expected, f"{name}: {image['message']}"
        assert image["message"], name


def test_job_keeps_good_photos(mixed_job):
    report, _, output = mixed_job
    good = {image["image_id"]: image for image in report.images
            if not image["image_id"].startswith("_corpus/")}

    assert {key: value["status"] for key, value in good.items()} == {
        "biden/biden.jpg": "ok", "biden/biden2.jpg": "ok", "obama/obama.jpg": "ok"}
    assert report.counts["usable_faces"] == 3
    assert report.rejects_by_reason["empty_file"] == 1
    assert report.rejects_by_reason["truncated"] == 3
    assert (output / "job.json").exists()


def test_job_json_has_reasons(mixed_job):
    report, _, output = mixed_job

    with open(output / "job.json") as f:
        written = json.load(f)

    rejected = [image for image in written["images"] if image["status"] != "ok"]
    assert len(rejected) == report.counts["rejected_images"]
    assert all(image["message"] for image in rejected)
    assert written["rejects_by_reason"] == report.rejects_by_reason
