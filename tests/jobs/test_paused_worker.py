"""Workers that Dask paused for memory it does not manage: the job must not wait forever.

The tests run on their own LocalCluster of one 512 MB worker. Memory held by the worker
object (not by Dask) pushes the process past the pause threshold, as imported libraries and
cached models do in a long-running cluster.
"""

import logging
import os
import time

import dask
import pytest
from distributed import Client, get_worker

from daskavatar.cluster import start_local_cluster
from daskavatar.jobs.memory import release_memory
from daskavatar.jobs.paused import PausedWorkerGuard
from daskavatar.jobs.runner import run_job
from tests.conftest import shared_path

PAUSED_RSS_MIB = 420
"""Between the pause threshold (80 % of 512 MB, 391 MiB) and the restart at 95 % (464 MiB)."""


@pytest.fixture
def one_worker():
    with start_local_cluster(n_workers=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client


def _hold_memory(dask_worker=None) -> int:
    """Hold memory that Dask does not manage until the process reaches ``PAUSED_RSS_MIB``.

    The worker first returns what :func:`release_memory` can, so that the job's own call of
    it at the start cannot bring the worker below the pause threshold.
    """
    import psutil

    release_memory()
    rss = psutil.Process().memory_info().rss
    ballast = bytearray(max(0, PAUSED_RSS_MIB * 2 ** 20 - rss))
    ballast[::4096] = b"\1" * len(ballast[::4096])
    dask_worker.test_ballast = ballast
    return os.getpid()


def _wait_until_paused(client, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        if all(info["status"] == "paused" for info in workers.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"the worker did not pause: {workers}")


def test_job_restarts_a_worker_stuck_in_pause(one_worker, tmp_path, caplog):
    photos = shared_path("faces_face_recognition", "biden")
    before = one_worker.run(_hold_memory)
    _wait_until_paused(one_worker)
    job = {"plugin_name": "GAN_Dataset", "config": {"output_resolution": "64",
                                                    "archive": "folder"},
           "input_paths": [photos], "output_path": str(tmp_path / "out"),
           "num_map_tasks": 1, "num_reduce_tasks": 1}

    with dask.config.set({"daskavatar.tasks.paused-worker-timeout": 2}), \
            caplog.at_level(logging.WARNING, logger="daskavatar.jobs.paused"):
        report = run_job(job, one_worker, progress=False)

    assert report.worker_restarts == 1
    assert report.counts["usable_faces"] == report.counts["images"] == 2
    assert [result["status"] for result in report.results] == ["ok", "ok"]
    assert report.finished["images"] == 2
    assert list(one_worker.run(os.getpid).values()) != list(before.values())
    messages = [record.getMessage() for record in caplog.records]
    assert any("releasing its cached models" in message for message in messages)
    assert any("restarting it" in message for message in messages)


def _busy_while_paused(seconds: float) -> int:
    worker = get_worker()
    _hold_memory(worker)
    deadline = time.monotonic() + 30
    while worker.status.name != "paused" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.status.name == "paused"
    time.sleep(seconds)
    del worker.test_ballast
    return os.getpid()


def test_guard_spares_busy_paused_worker(one_worker):
    [pid] = one_worker.run(os.getpid).values()

    with PausedWorkerGuard(one_worker, timeout=1) as guard:
        task_pid = one_worker.submit(_busy_while_paused, 5, pure=False).result(timeout=120)

    assert task_pid == pid
    assert guard.restarted == []
    assert list(one_worker.run(os.getpid).values()) == [pid]
