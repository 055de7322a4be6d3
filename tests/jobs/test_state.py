"""Run entries of the job manifest: heartbeats, interrupted runs and live writers.

A live writer on this host is a real second process that opens the manifest and waits, or a
real job of this process held inside its map task by a Dask event. Runs of another host are
manifest entries that the test writes with that host's name and heartbeat.
"""

import concurrent.futures
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import dask
import psutil
import pytest
from distributed import Event

from daskavatar.exceptions import JobSpecError, JobStateError
from daskavatar.io.outputs import read_json
from daskavatar.io.images import discover_images
from daskavatar.jobs.runner import run_job
from daskavatar.jobs.spec import JobSpec
from daskavatar.jobs.state import JobState
from daskavatar.plugins.gan_dataset import GANDataset
from tests.conftest import s3_bucket, shared_path

PHOTOS = ("biden.jpg", "biden2.jpg")
CONFIG = {"output_resolution": "64", "archive": "folder", "mirror": "false",
          "camera_radius": "2.7", "focal_length": "4.2647"}
HOST = socket.gethostname()

MAP_STARTED, MAP_RELEASE = "test-state-map-started", "test-state-map-release"

WRITER = textwrap.dedent("""
    import json, sys
    from daskavatar.io.images import discover_images
    from daskavatar.jobs.spec import JobSpec
    from daskavatar.jobs.state import JobState

    spec = JobSpec.from_dict(json.loads(sys.argv[1]))
    state = JobState.open(spec=spec, images=discover_images(spec.input_paths),
                          output_folders=[spec.plugin_class.output_folder])
    print(state.run_id, flush=True)
    if sys.stdin.readline().strip() == "finish":
        state.finish()
""")
"""A client that opens the manifest, prints its run id and waits for a line on stdin."""


class GatedDataset(GANDataset):
    """``GAN_Dataset`` whose map task waits for a Dask event, so the job stays running."""

    name = "State_Gated_Dataset"

    def map(self, context):
        super().map(context)
        Event(MAP_STARTED).set()
        if not Event(MAP_RELEASE).wait(timeout=120):
            raise TimeoutError("the test never released the map task")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    source = shared_path("faces_face_recognition", "biden")
    folder = tmp_path_factory.mktemp("photos")
    (folder / "biden").mkdir()
    for name in PHOTOS:
        (folder / "biden" / name).write_bytes(open(os.path.join(source, name), "rb").read())
    return folder


def _job(photos, output) -> dict:
    return {"plugin_name": "GAN_Dataset", "config": CONFIG, "input_paths": [str(photos)],
            "output_path": str(output), "num_map_tasks": 1, "num_reduce_tasks": 1}


def _open(job, **options) -> JobState:
    spec = JobSpec.from_dict(job)
    return JobState.open(spec=spec, images=discover_images(spec.input_paths),
                         output_folders=["dataset"], **options)


def _check(job, **options):
    spec = JobSpec.from_dict(job)
    return JobState.check(spec=spec, images=discover_images(spec.input_paths), **options)


def _manifest(output) -> dict:
    return json.loads((output / "manifest.json").read_text())


def _add_run(output, **entry) -> dict:
    """Append a ``running`` entry to the manifest's runs, as another client would."""
    manifest = _manifest(output)
    run = {"run": "0123456789ab", "started": _utc(minutes=-5), "finished": None,
           "status": "running", "heartbeat_interval": 30, **entry}
    manifest["runs"].append(run)
    manifest["status"] = "running"
    (output / "manifest.json").write_text(json.dumps(manifest))
    return run


def _utc(**offset) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(**offset)
    return moment.isoformat(timespec="seconds")


def _heartbeat_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate()
            if thread.name.startswith("daskavatar-heartbeat-")]


@pytest.fixture
def writer(photos, tmp_path):
    """A second client process that keeps a run of the job in ``tmp_path`` open."""
    job = _job(photos, tmp_path)
    process = subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(job)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        run_id = process.stdout.readline().strip()
        assert run_id, "the writer process exited before opening the manifest"
        yield job, process, run_id
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_live_writer_process_rejected(writer, tmp_path):
    job, process, run_id = writer
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "kept.txt").write_text("written by the live run")
    before = (tmp_path / "manifest.json").read_bytes()

    with pytest.raises(JobStateError) as rejected:
        run_job(job, client=object(), progress=False)
    with pytest.raises(JobStateError) as overwrite_rejected:
        _open(job, overwrite=True)

    message = str(rejected.value)
    assert f"pid {process.pid} on host {HOST}" in message
    assert f"run {run_id}" in message
    assert repr(str(tmp_path)) in message
    assert f"kill {process.pid}" in message
    assert "another output_path" in message
    assert str(overwrite_rejected.value) == message
    assert (tmp_path / "dataset" / "kept.txt").exists()
    assert (tmp_path / "manifest.json").read_bytes() == before


def test_live_writer_rejected_by_cli(writer, tmp_path):
    job, process, _ = writer
    job_path = tmp_path.parent / f"{tmp_path.name}-job.json"
    job_path.write_text(json.dumps(job))

    result = subprocess.run([sys.executable, "-m", "daskavatar.cli", "run", str(job_path)],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    assert f"pid {process.pid} on host {HOST}" in result.stderr
    assert result.stderr.count("\n") == 1
    # The CLI prints the dashboard link once connected to a cluster.
    assert "Dask dashboard" not in result.stdout


def test_live_writer_process_finishes(writer, tmp_path):
    job, process, run_id = writer
    with pytest.raises(JobStateError):
        _check(job)

    process.stdin.write("finish\n")
    process.stdin.flush()
    assert process.wait(timeout=60) == 0
    state = _open(job)
    state.finish()

    runs = _manifest(tmp_path)["runs"]
    assert [run["run"] for run in runs] == [run_id, state.run_id]
    assert [run["status"] for run in runs] == ["done", "done"]
    assert runs[0]["pid"] == process.pid
    assert runs[0]["host"] == HOST


def test_killed_writer_process_interrupted(writer, tmp_path):
    job, process, run_id = writer
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    state = _open(job)
    state.finish()

    first, second = _manifest(tmp_path)["runs"]
    assert first["run"] == run_id
    assert first["status"] == "interrupted"
    assert first["finished"] is None
    assert first["interrupted_reason"] == f"pid {process.pid} on host {HOST} is not running"
    assert first["interrupted_found"] == second["started"]
    assert first["interrupted_found_by"] == state.run_id
    assert second["status"] == "done"


def test_running_job_rejects_second_run(cluster_client, photos, tmp_path):
    for name in (MAP_STARTED, MAP_RELEASE):
        Event(name, client=cluster_client).clear()
    spec = JobSpec.from_dict(_job(photos, tmp_path), plugin_class=GatedDataset)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(run_job, spec, cluster_client, progress=False)
        try:
            assert Event(MAP_STARTED, client=cluster_client).wait(timeout=120)
            with pytest.raises(JobStateError) as rejected:
                run_job(spec, cluster_client, progress=False, overwrite=True)
        finally:
            Event(MAP_RELEASE, client=cluster_client).set()
        report = first.result(timeout=300)

    assert f"pid {os.getpid()} on host {HOST}" in str(rejected.value)
    assert "which is this process" in str(rejected.value)
    assert report.counts["results"] == 1
    manifest = _manifest(tmp_path)
    assert manifest["status"] == "done"
    assert [run["status"] for run in manifest["runs"]] == ["done"]
    assert manifest["runs"][0]["run"] == report.resume["run"]
    assert (tmp_path / "dataset" / "dataset.json").exists()


def test_other_host_fresh_heartbeat_rejected(photos, tmp_path):
    job = _job(photos, tmp_path)
    _open(job).finish()
    heartbeat = _utc(seconds=-10)
    _add_run(tmp_path, host="render-node-7", pid=4242, heartbeat=heartbeat)
    stale_at = (datetime.datetime.fromisoformat(heartbeat)
                + datetime.timedelta(seconds=90)).isoformat(timespec="seconds")

    with pytest.raises(JobStateError) as rejected:
        _check(job)
    with pytest.raises(JobStateError):
        _open(job, overwrite=True)

    message = str(rejected.value)
    assert "pid 4242 on host render-node-7" in message
    assert f"last heartbeat was at {heartbeat}" in message
    assert f"counts as interrupted from {stale_at}" in message
    assert [run["status"] for run in _manifest(tmp_path)["runs"]] == ["done", "running"]


def test_other_host_stale_heartbeat_interrupted(photos, tmp_path):
    job = _job(photos, tmp_path)
    _open(job).finish()
    heartbeat = _utc(seconds=-91)
    _add_run(tmp_path, host="render-node-7", pid=4242, heartbeat=heartbeat)

    state = _open(job)
    state.finish()

    runs = _manifest(tmp_path)["runs"]
    assert [run["status"] for run in runs] == ["done", "interrupted", "done"]
    assert runs[1]["interrupted_reason"] == \
        f"no heartbeat from pid 4242 on host render-node-7 since {heartbeat}"


@pytest.mark.parametrize("entry, reason", [
    ({"pid": "parent", "process_started": 1.0},
     "pid {pid} on host {host} is not running"),
    ({"pid": "this process"},
     "pid {pid} on host {host} is this process, which has no such run in progress"),
    ({"host": None, "pid": None},
     "the run recorded no heartbeat time"),
], ids=["reused pid", "this process", "no host"])
def test_gone_client_interrupted(photos, tmp_path, entry, reason):
    job = _job(photos, tmp_path)
    _open(job).finish()
    pid = {"parent": os.getppid(), "this process": os.getpid(), None: None}[entry["pid"]]
    _add_run(tmp_path, **{"host": HOST, **entry, "pid": pid})

    state = _open(job)
    state.finish()

    runs = _manifest(tmp_path)["runs"]
    assert [run["status"] for run in runs] == ["done", "interrupted", "done"]
    assert runs[1]["interrupted_reason"] == reason.format(pid=pid, host=HOST)


def test_live_parent_process_rejected(photos, tmp_path):
    job = _job(photos, tmp_path)
    _open(job).finish()
    parent = psutil.Process(os.getppid())
    _add_run(tmp_path, host=HOST, pid=parent.pid, process_started=parent.create_time())

    with pytest.raises(JobStateError, match=f"pid {parent.pid} on host"):
        _check(job)


def test_heartbeat_refreshes_manifest(photos, tmp_path):
    with dask.config.set({"daskavatar.state.heartbeat-interval": 0.2}):
        state = _open(_job(photos, tmp_path))
    try:
        first = _manifest(tmp_path)["runs"][-1]["heartbeat"]
        time.sleep(1.5)
        second = _manifest(tmp_path)["runs"][-1]["heartbeat"]
        running_threads = _heartbeat_threads()
    finally:
        state.finish()
    finished = (tmp_path / "manifest.json").stat().st_mtime_ns
    time.sleep(0.5)

    assert second > first
    assert running_threads == [f"daskavatar-heartbeat-{state.run_id}"]
    assert _heartbeat_threads() == []
    assert (tmp_path / "manifest.json").stat().st_mtime_ns == finished
    run = _manifest(tmp_path)["runs"][-1]
    assert run["status"] == "done"
    assert run["heartbeat_interval"] == 0.2


def test_heartbeat_on_s3(photos, s3_server):
    s3_bucket(s3_server, "daskavatar-state")
    job = _job(photos, "s3://daskavatar-state/output")
    url = "s3://daskavatar-state/output/manifest.json"
    with dask.config.set({"daskavatar.state.heartbeat-interval": 0.2}):
        state = _open(job, storage_options=s3_server)
    try:
        first = read_json(url, storage_options=s3_server)["runs"][-1]["heartbeat"]
        time.sleep(1.5)
        second = read_json(url, storage_options=s3_server)["runs"][-1]["heartbeat"]
    finally:
        state.finish()

    assert second > first
    assert _heartbeat_threads() == []
    assert read_json(url, storage_options=s3_server)["runs"][-1]["status"] == "done"


def test_failed_run_stops_heartbeat(cluster_client, photos, tmp_path):
    def fail(client):
        raise RuntimeError("on_connect failed")

    with pytest.raises(RuntimeError, match="on_connect failed"):
        run_job(_job(photos, tmp_path), cluster_client, progress=False, on_connect=fail)

    assert _heartbeat_threads() == []
    manifest = _manifest(tmp_path)
    assert manifest["status"] == "failed"
    assert [run["status"] for run in manifest["runs"]] == ["failed"]
    assert manifest["stages"] == {}


@pytest.mark.parametrize("value", [0, -1, "soon"])
def test_invalid_heartbeat_interval_rejected(photos, tmp_path, value):
    with dask.config.set({"daskavatar.state.heartbeat-interval": value}), \
            pytest.raises(JobSpecError, match="heartbeat-interval must be a positive number"):
        _open(_job(photos, tmp_path))

    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": 99})])
def test_unreadable_manifest_replaced_only_with_overwrite(photos, tmp_path, content):
    job = _job(photos, tmp_path)
    (tmp_path / "manifest.json").write_text(content)
    (tmp_path / "dataset").mkdir()

    with pytest.raises(JobStateError, match="--overwrite"):
        _open(job)
    assert (tmp_path / "manifest.json").read_text() == content

    state = _open(job, overwrite=True)
    state.finish()
    assert _manifest(tmp_path)["runs"][0]["status"] == "done"
    assert not (tmp_path / "dataset").exists()
