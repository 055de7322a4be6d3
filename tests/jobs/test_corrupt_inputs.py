"""A job whose inputs are half broken files: every one is reported, and the job finishes."""

import json
import os

import pytest

from daskavatar.io.decode import REASON_CODES
from daskavatar.jobs.runner import run_job
from tests.conftest import shared_path

GOOD = {"biden": ("biden.jpg", "biden2.jpg"), "rose_leslie": ("img1.jpg", "img2.jpg"),
        "obama": ("obama.jpg", "obama1.jpg", "obama2.jpg", "obama3.jpg")}


def _broken_files(source: str) -> dict[str, bytes]:
    """Return eight kinds of broken image file, by file name."""
    jpeg = open(os.path.join(source, "biden", "biden.jpg"), "rb").read()
    png = open(os.path.join(source, "_edge_cases", "32bit.png"), "rb").read()
    return {
        "empty.jpg": b"",
        "truncated_header.jpg": jpeg[:20],
        "truncated_half.jpg": jpeg[:len(jpeg) // 2],
        "random.jpg": os.urandom(4096),
        "text.png": b"this is not an image\n" * 20,
        "png_bad_data.png": png[:64] + b"\x00" * 512,
        "jpeg_as_png.png": jpeg[:200] + b"\xff" * 300,
        "html.jpeg": b"<html><body>404 Not Found</body></html>",
    }


@pytest.fixture(scope="module")
def flood(cluster_client, tmp_path_factory):
    """Eight good photos of three people and eight broken files: four in the people's
    folders and four in ``_broken/``, where each file is its own identity."""
    source = shared_path("faces_face_recognition")
    folder = tmp_path_factory.mktemp("flood")
    for person, names in GOOD.items():
        (folder / person).mkdir()
        for name in names:
            (folder / person / name).write_bytes(open(os.path.join(source, person, name),
                                                      "rb").read())
    broken = {}
    places = ["biden", "rose_leslie", "obama", "obama"] + ["_broken"] * 4
    (folder / "_broken").mkdir()
    for place, (name, data) in zip(places, _broken_files(source).items()):
        (folder / place / name).write_bytes(data)
        broken[f"{place}/{name}"] = data

    output = tmp_path_factory.mktemp("flood-output")
    job = {"plugin_name": "GAN_Dataset", "config": {"output_resolution": "64",
                                                    "archive": "folder"},
           "input_paths": [str(folder)], "output_path": str(output),
           "num_map_tasks": 3, "num_reduce_tasks": 2}
    report = run_job(job, cluster_client, progress=False)
    return report, output, broken


def test_flood_reports_every_broken_file(flood):
    report, output, broken = flood

    by_id = {image["image_id"]: image for image in report.images}

    assert len(broken) == 8
    assert report.counts["images"] == 16
    assert report.counts["rejected_images"] == 8
    assert report.rejects_by_reason == {"corrupt": 1, "empty_file": 1, "not_an_image": 3,
                                        "truncated": 3}
    for image_id in broken:
        assert by_id[image_id]["status"] in REASON_CODES, image_id
        assert by_id[image_id]["url"] in by_id[image_id]["message"]
    written = json.loads((output / "job.json").read_text())
    assert {image["image_id"] for image in written["images"]
            if image["status"] != "ok"} == set(broken)


def test_flood_finishes_good_identities(flood):
    report, output, broken = flood

    by_key = {entry["identity"]: entry for entry in report.results}

    assert report.counts["usable_faces"] == 8
    for person, names in GOOD.items():
        assert by_key[person]["status"] == "ok"
        assert by_key[person]["images"] == len(names)
    # Each broken file under _broken/ is an identity without a usable photo.
    skipped = {key for key, entry in by_key.items() if entry["status"] == "skipped"}
    assert skipped == {"_broken__" + name.rsplit(".", 1)[0]
                       for name in (image_id.split("/")[1] for image_id in broken
                                    if image_id.startswith("_broken/"))}
    assert report.counts["failed_identities"] == 0
    labels = json.loads((output / "dataset" / "dataset.json").read_text())["labels"]
    assert len(labels) == 8
