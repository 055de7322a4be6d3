"""Jobs whose worker processes are SIGKILLed while map and reduce tasks run.

The tests run on their own LocalCluster of 2 workers of 512 MB, so the killed workers do
not disturb the session cluster. The plugin is ``GAN_Dataset`` with small crops: its
outputs are deterministic files, so a run with kills must give the same bytes as a clean run.
Dask events and variables tell the test which worker process runs the task to kill.
"""

import concurrent.futures
import hashlib
import json
import os
import signal

import dask
import numpy as np
import pytest
import zarr
from distributed import Client, Event, Variable

from daskavatar.cluster import start_local_cluster
from daskavatar.jobs.runner import run_job
from daskavatar.jobs.spec import JobSpec
from daskavatar.plugins.gan_dataset import GANDataset
from tests.conftest import shared_path

PEOPLE = {"biden": ("biden.jpg", "biden2.jpg"), "rose_leslie": ("img1.jpg", "img2.jpg"),
          "kit_harington": ("john1.jpeg", "john2.jpeg"),
          "alex_lacamoire": ("img1.jpg", "alex_lacamoire1.jpg")}
CONFIG = {"output_resolution": "64", "archive": "folder", "mirror": "true",
          "camera_radius": "2.7", "focal_length": "4.2647"}

MAP_STARTED, MAP_RELEASE, MAP_PID = "test-map-started", "test-map-release", "test-map-pid"
REDUCE_STARTED, REDUCE_RELEASE = "test-reduce-started", "test-reduce-release"
REDUCE_PID = "test-reduce-pid"
GATED_KEY = "kit_harington"
"""The reduce key whose task waits for the test, so the test can kill its worker."""
POISON_KEY = "rose_leslie"
"""The reduce key whose task kills its own worker every time it runs."""


class GatedDataset(GANDataset):
    """``GAN_Dataset`` whose first map partition and one reduce key wait for a Dask event.

    Before waiting, the task stores its worker's pid in a Dask variable, so the test kills
    the process that is running the task.
    """

    name = "Gated_Dataset"

    def map(self, context):
        super().map(context)
        if context.rows[0] == 0:
            Variable(MAP_PID).set(os.getpid())
            Event(MAP_STARTED).set()
            if not Event(MAP_RELEASE).wait(timeout=300):
                raise TimeoutError("the test never released the map task")

    def reduce(self, context):
        if context.key == GATED_KEY:
            Variable(REDUCE_PID).set(os.getpid())
            Event(REDUCE_STARTED).set()
            if not Event(REDUCE_RELEASE).wait(timeout=300):
                raise TimeoutError("the test never released the reduce task")
        return super().reduce(context)


class PoisonDataset(GANDataset):
    """``GAN_Dataset`` whose reduce task for one key kills its own worker process."""

    name = "Poison_Dataset"

    def reduce(self, context):
        if context.key == POISON_KEY:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().reduce(context)


class MapPoisonDataset(GANDataset):
    """``GAN_Dataset`` whose first map partition kills its own worker process."""

    name = "Map_Poison_Dataset"

    def map(self, context):
        if context.rows[0] == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        super().map(context)


@pytest.fixture(scope="module")
def loss_client():
    """A Client on a new LocalCluster of 2 workers whose scheduler gives up after 2 deaths.

    ``allowed-failures = 1`` lets a task survive one killed worker and keeps the poison test
    short. ``worker-saturation = 1.0`` sends each worker only the task it runs, so a killed
    worker takes no queued, innocent task towards that limit.
    """
    settings = {"distributed.scheduler.allowed-failures": 1,
                "distributed.scheduler.worker-saturation": 1.0}
    with dask.config.set(settings), \
            start_local_cluster(n_workers=2, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    source = shared_path("faces_face_recognition")
    folder = tmp_path_factory.mktemp("photos")
    for person, names in PEOPLE.items():
        (folder / person).mkdir()
        for name in names:
            (folder / person / name).write_bytes(open(os.path.join(source, person, name),
                                                      "rb").read())
    return folder


def _job(client, photos, output, plugin_class):
    # A worker killed by an earlier test may still be starting again; the job's count of
    # restarted workers only covers the workers present when it starts.
    client.wait_for_workers(2, timeout=120)
    job = {"plugin_name": plugin_class.name, "config": CONFIG,
           "input_paths": [str(photos)], "output_path": str(output),
           "num_map_tasks": 3, "num_reduce_tasks": 2}
    return JobSpec.from_dict(job, plugin_class=plugin_class)


def _set_events(client, *, released):
    for name in (MAP_STARTED, REDUCE_STARTED):
        Event(name, client=client).clear()
    for name in (MAP_RELEASE, REDUCE_RELEASE):
        event = Event(name, client=client)
        event.set() if name in released else event.clear()


@pytest.fixture(scope="module")
def clean_run(loss_client, photos, tmp_path_factory):
    _set_events(loss_client, released={MAP_RELEASE, REDUCE_RELEASE})
    output = tmp_path_factory.mktemp("clean")
    spec = _job(loss_client, photos, output, GatedDataset)
    report = run_job(spec, loss_client, progress=False)
    assert report.worker_restarts == 0
    return report, output


def _kill_during(client, spec, *, started, release, pid_variable):
    """Run ``spec`` in a thread, SIGKILL the worker that sets ``started``, return the report."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_job, spec, client, progress=False)
        assert Event(started, client=client).wait(timeout=300)
        pid = Variable(pid_variable, client=client).get(timeout=30)

        os.kill(pid, signal.SIGKILL)
        Event(release, client=client).set()
        return running.result(timeout=600)


def _files(output):
    """Return ``{relative path: sha256}`` of every output file a clean run repeats exactly.

    The manifest, the report and the records files hold run ids, times and memory figures.
    """
    digests = {}
    for folder, _, names in os.walk(output):
        for name in names:
            relative = os.path.relpath(os.path.join(folder, name), output)
            if relative in ("job.json", "manifest.json") or relative.startswith("_state"):
                continue
            with open(os.path.join(folder, name), "rb") as f:
                digests[relative] = hashlib.sha256(f.read()).hexdigest()
    return digests


def _assert_same_as_clean(report, output, clean_report, clean_output):
    assert report.counts == clean_report.counts
    assert report.rejects_by_reason == clean_report.rejects_by_reason
    assert [(r["identity"], r["status"], r["images"]) for r in report.results] == \
        [(r["identity"], r["status"], r["images"]) for r in clean_report.results]

    clean = zarr.open_group(str(clean_output / "features.zarr"), mode="r")
    group = zarr.open_group(str(output / "features.zarr"), mode="r")
    for name in ("crops", "landmarks", "c2w", "intrinsics", "reprojection_error", "status"):
        np.testing.assert_array_equal(group[name][:], clean[name][:], err_msg=name)

    files = _files(output)
    assert sorted(files) == sorted(_files(clean_output))
    assert files == _files(clean_output)
    assert not [name for name in files if name.endswith((".tmp", ".partial"))]


def test_clean_run_outputs(clean_run):
    report, output = clean_run
    manifest = json.loads((output / "manifest.json").read_text())

    assert {entry["task_starts"] for entry in manifest["partitions"].values()} == {1}
    assert {entry["task_starts"] for entry in manifest["identities"].values()} == {1}
    assert report.counts["images"] == 8
    assert report.counts["results"] == 4
    labels = json.loads((output / "dataset" / "dataset.json").read_text())["labels"]
    # Two photos per person, each also mirrored.
    assert len(labels) == report.counts["usable_faces"] * 2


def test_worker_killed_during_map(loss_client, photos, tmp_path, clean_run):
    _set_events(loss_client, released={REDUCE_RELEASE})
    spec = _job(loss_client, photos, tmp_path, GatedDataset)

    report = _kill_during(loss_client, spec, started=MAP_STARTED, release=MAP_RELEASE,
                          pid_variable=MAP_PID)

    assert report.worker_restarts >= 1
    _assert_same_as_clean(report, tmp_path, *clean_run)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {entry["status"] for entry in manifest["partitions"].values()} == {"done"}
    assert manifest["partitions"]["0"]["task_starts"] == 2
    assert manifest["partitions"]["1"]["task_starts"] == 1


def test_worker_killed_during_reduce(loss_client, photos, tmp_path, clean_run):
    _set_events(loss_client, released={MAP_RELEASE})
    spec = _job(loss_client, photos, tmp_path, GatedDataset)

    report = _kill_during(loss_client, spec, started=REDUCE_STARTED, release=REDUCE_RELEASE,
                          pid_variable=REDUCE_PID)

    assert report.worker_restarts >= 1
    _assert_same_as_clean(report, tmp_path, *clean_run)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["identities"][GATED_KEY]["status"] == "ok"
    assert manifest["identities"][GATED_KEY]["task_starts"] == 2
    assert manifest["identities"]["biden"]["task_starts"] == 1


def test_task_killing_its_worker_fails_alone(loss_client, photos, tmp_path, clean_run):
    clean_report, _ = clean_run
    spec = _job(loss_client, photos, tmp_path, PoisonDataset)

    report = run_job(spec, loss_client, progress=False)

    by_key = {entry["identity"]: entry for entry in report.results}
    assert sorted(by_key) == sorted(PEOPLE)
    assert by_key[POISON_KEY]["status"] == "failed"
    assert by_key[POISON_KEY]["reason"] == "KilledWorker"
    assert "allowed-failures" in by_key[POISON_KEY]["message"]
    assert by_key[POISON_KEY]["photos"] == 2
    assert all(entry["status"] == "ok" for key, entry in by_key.items() if key != POISON_KEY)
    assert report.counts["failed_identities"] == 1
    assert report.counts["results"] == clean_report.counts["results"] - 1
    assert report.worker_restarts >= 1
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["identities"][POISON_KEY]["status"] == "failed"
    assert manifest["identities"][POISON_KEY]["reason"] == "KilledWorker"


def test_map_task_killing_its_worker_fails_alone(loss_client, photos, tmp_path, clean_run):
    clean_report, _ = clean_run
    spec = _job(loss_client, photos, tmp_path, MapPoisonDataset)

    report = run_job(spec, loss_client, progress=False)

    # Images sort by path, so the first partition of three rows contains both photos of
    # alex_lacamoire and the first of biden.
    failed = [image for image in report.images if image["status"] == "map_task_failed"]
    by_key = {entry["identity"]: entry for entry in report.results}
    assert [image["image_id"] for image in failed] == \
        ["alex_lacamoire/alex_lacamoire1.jpg", "alex_lacamoire/img1.jpg", "biden/biden.jpg"]
    assert all("allowed-failures" in image["message"] for image in failed)
    assert report.rejects_by_reason == {"map_task_failed": 3}
    assert report.counts["images"] == clean_report.counts["images"]
    assert sorted(by_key) == ["biden", "kit_harington", "rose_leslie"]
    assert by_key["biden"]["photos"] == 1
    assert all(entry["status"] == "ok" for entry in by_key.values())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["partitions"]["0"]["status"] == "failed"
    assert "allowed-failures" in manifest["partitions"]["0"]["error"]
    assert manifest["stages"]["map"]["counts"]["failed_map_partitions"] == 1
