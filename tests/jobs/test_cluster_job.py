"""A job that finds identities by clustering face descriptors instead of folder labels."""

import csv
import os
import shutil

import pytest

from daskavatar.jobs.runner import run_job
from tests.conftest import shared_path

PEOPLE = ("person_01", "person_02", "person_03")


@pytest.fixture(scope="module")
def cluster_job(cluster_client, tmp_path_factory):
    source = shared_path("faces_deepface")
    with open(os.path.join(source, "identities.csv"), encoding="utf-8") as f:
        truth = {os.path.basename(row["file"]): row["person_id"] for row in csv.DictReader(f)
                 if row["person_id"] in PEOPLE}

    # person_01's first photo sits in a labelled folder; every other photo is unlabelled.
    folder = tmp_path_factory.mktemp("unlabelled")
    labelled = sorted(name for name, person in truth.items() if person == "person_01")[0]
    (folder / "alice").mkdir()
    for name in truth:
        target = folder / "alice" / name if name == labelled else folder / name
        shutil.copyfile(os.path.join(source, "images", name), target)

    output = tmp_path_factory.mktemp("cluster_output")
    job = {"plugin_name": "GAN_Dataset",
           "config": {"output_resolution": "64", "archive": "folder", "identities": "cluster"},
           "input_paths": [str(folder)], "output_path": str(output),
           "num_map_tasks": 3, "num_reduce_tasks": 2}
    return run_job(job, cluster_client, progress=False), truth


def test_clusters_match_people(cluster_job):
    report, truth = cluster_job
    found = {os.path.basename(image["image_id"]): image["identity"] for image in report.images}

    assert set(found) == set(truth)
    for person in PEOPLE:
        identities = {found[name] for name, owner in truth.items() if owner == person}
        assert len(identities) == 1, person
    assert len(set(found.values())) == len(PEOPLE)


def test_label_wins_over_cluster(cluster_job):
    report, truth = cluster_job
    found = {os.path.basename(image["image_id"]): image["identity"] for image in report.images}

    for name, owner in truth.items():
        if owner == "person_01":
            assert found[name] == "alice"
    others = {found[name] for name, owner in truth.items() if owner != "person_01"}
    assert all(identity.startswith("cluster_") for identity in others)


def test_results_grouped_by_cluster(cluster_job):
    report, truth = cluster_job

    keys = {result["identity"]: result["photos"] for result in report.results}

    assert keys["alice"] == sum(owner == "person_01" for owner in truth.values())
    assert sorted(keys.values()) == sorted(
        sum(owner == person for owner in truth.values()) for person in PEOPLE)
    assert all("descriptor" not in image for image in report.images)


def test_descriptor_model_fits_worker(cluster_job):
    report, _ = cluster_job

    # Dask pauses a 512 MB worker at 80 % of its limit, 390.6 MiB.
    assert report.memory["map_peak_rss_mib"] < 390.6
