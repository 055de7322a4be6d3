"""Resuming a job: a client killed mid-job, run again, and changed specs.

The interrupted client is the real CLI in a subprocess, connected to the session cluster
and SIGKILLed once the manifest records a finished identity.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from daskavatar.exceptions import JobStateError
from daskavatar.io.images import discover_images
from daskavatar.jobs.runner import run_job
from daskavatar.jobs.spec import JobSpec
from daskavatar.jobs.state import JobState
from tests.conftest import shared_path

CONFIG = {"preset": "small", "max_iterations": "60", "output_resolution": "64",
          "output_format": "ply", "mesh_resolution": "40", "preview_views": "3",
          "preview_resolution": "32"}
PEOPLE = ("obama", "biden", "kit_harington", "rose_leslie", "alex_lacamoire")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Five people of two or three photos each."""
    source = shared_path("faces_face_recognition")
    folder = tmp_path_factory.mktemp("photos")
    for person in PEOPLE:
        (folder / person).mkdir()
        for name in sorted(os.listdir(os.path.join(source, person)))[:3]:
            (folder / person / name).write_bytes(open(os.path.join(source, person, name),
                                                      "rb").read())
    return folder


def _job(photos, output, **config):
    return {"plugin_name": "NeRF_Avatar", "config": {**CONFIG, **config},
            "input_paths": [str(photos / "**" / "*.*")], "output_path": str(output),
            "num_map_tasks": 2, "num_reduce_tasks": 2}


def _read_manifest(output):
    try:
        return json.loads((output / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _done_keys(manifest):
    return {key for key, entry in manifest["identities"].items() if entry["status"] == "ok"}


@pytest.fixture(scope="module")
def interrupted(cluster_client, photos, tmp_path_factory):
    """Run the CLI until the manifest records one finished identity, then SIGKILL it."""
    output = tmp_path_factory.mktemp("resume")
    job_path = output.parent / f"{output.name}-job.json"
    job_path.write_text(json.dumps(_job(photos, output)))
    log_path = output.parent / f"{output.name}-cli.log"

    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daskavatar.cli", "-v", "run", str(job_path), "--scheduler",
             cluster_client.scheduler.address, "--no-progress"], stdout=log, stderr=log)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            manifest = _read_manifest(output)
            if manifest and _done_keys(manifest):
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, log_path.read_text()

    manifest = _read_manifest(output)
    return output, job_path, manifest, process.pid


def test_interrupted_job_left_work(interrupted):
    _, _, manifest, pid = interrupted

    done = _done_keys(manifest)

    assert 1 <= len(done) < len(PEOPLE)
    assert manifest["status"] == "running"
    assert [run["status"] for run in manifest["runs"]] == ["running"]
    assert manifest["runs"][0]["pid"] == pid
    assert manifest["runs"][0]["host"] == socket.gethostname()
    assert manifest["stages"]["map"]["status"] == "done"
    assert all(manifest["identities"][key]["attempts"] == 1 for key in done)


@pytest.fixture(scope="module")
def resumed(interrupted, cluster_client):
    output, job_path, before, _ = interrupted
    report = run_job(str(job_path), cluster_client, progress=False)
    return report, output, before


def test_resume_skips_finished_work(resumed, cluster_client):
    report, output, before = resumed
    done_before = _done_keys(before)
    run = report.resume["run"]

    events = [message for _, message in cluster_client.get_events("daskavatar-reduce")
              if message["run"] == run and message["event"] == "start"]
    refitted = {message["key"] for message in events}
    map_events = [message for _, message in cluster_client.get_events("daskavatar-map")
                  if message["run"] == run]

    assert report.resume["resumed"] is True
    assert report.resume["skipped_map_partitions"] == report.resume["map_partitions"]
    assert report.resume["skipped_keys"] == len(done_before)
    assert map_events == []
    assert refitted.isdisjoint(done_before)
    assert refitted | done_before == set(PEOPLE)


def test_resume_manifest_counts_attempts(resumed):
    report, output, before = resumed
    done_before = _done_keys(before)

    manifest = _read_manifest(output)

    assert manifest["status"] == "done"
    assert [run["status"] for run in manifest["runs"]] == ["interrupted", "done"]
    for key in PEOPLE:
        entry = manifest["identities"][key]
        assert entry["status"] == "ok"
        assert entry["attempts"] == (1 if key in done_before else 2)
    for key in done_before:
        assert manifest["identities"][key]["result"] == before["identities"][key]["result"]


def test_resume_records_killed_run_interrupted(resumed, interrupted):
    report, output, _ = resumed
    pid = interrupted[3]

    killed, current = _read_manifest(output)["runs"][:2]

    assert killed["status"] == "interrupted"
    assert killed["finished"] is None
    assert killed["interrupted_reason"] == \
        f"pid {pid} on host {socket.gethostname()} is not running"
    assert killed["interrupted_found_by"] == report.resume["run"]
    assert killed["interrupted_found"] == current["started"]
    assert current["run"] == report.resume["run"]
    assert current["pid"] == os.getpid()


def test_resume_outputs_complete(resumed):
    report, output, _ = resumed

    assert report.counts["identities"] == len(PEOPLE)
    assert report.counts["results"] == len(PEOPLE)
    assert sorted(entry["identity"] for entry in report.results) == sorted(PEOPLE)
    for person in PEOPLE:
        folder = output / "avatars" / person
        assert sorted(os.listdir(folder)) == ["mesh.ply", "preview.png", "report.json"]
        assert json.loads((folder / "report.json").read_text())["status"] == "ok"
    written = json.loads((output / "job.json").read_text())
    assert written["counts"]["images"] == report.counts["images"]
    assert len(written["images"]) == report.counts["images"]


def test_rerun_of_finished_job_fits_nothing(resumed, cluster_client):
    _, output, _ = resumed
    job_path = output.parent / f"{output.name}-job.json"

    report = run_job(str(job_path), cluster_client, progress=False)

    assert report.resume["skipped_keys"] == len(PEOPLE)
    assert report.counts["results"] == len(PEOPLE)
    events = [message for _, message in cluster_client.get_events("daskavatar-reduce")
              if message["run"] == report.resume["run"]]
    assert events == []


def test_changed_spec_rejected_by_cli(resumed):
    _, output, _ = resumed
    job = json.loads((output.parent / f"{output.name}-job.json").read_text())
    job["config"]["max_iterations"] = "61"
    path = output.parent / "changed-job.json"
    path.write_text(json.dumps(job))

    result = subprocess.run([sys.executable, "-m", "daskavatar.cli", "run", str(path)],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    assert "changed: config.max_iterations" in result.stderr
    assert "--overwrite" in result.stderr
    assert result.stderr.count("\n") == 1


def test_changed_inputs_rejected(tmp_path, photos):
    job = _job(photos, tmp_path / "out")
    spec = JobSpec.from_dict(job)
    JobState.open(spec=spec, images=discover_images(spec.input_paths),
                  output_folders=["avatars"]).finish()
    fewer = _job(photos, tmp_path / "out")
    fewer["input_paths"] = [str(photos / "obama" / "*.jpg")]

    with pytest.raises(JobStateError, match=r"input_paths, input images \(\d+ before, \d+ now\)"):
        run_job(fewer, client=object(), progress=False)


def test_overwrite_removes_previous_outputs(tmp_path, photos):
    spec = JobSpec.from_dict(_job(photos, tmp_path))
    images = discover_images(spec.input_paths)
    JobState.open(spec=spec, images=images, output_folders=["avatars"]).finish()
    (tmp_path / "avatars" / "old").mkdir(parents=True)
    (tmp_path / "avatars" / "old" / "report.json").write_text("{}")
    (tmp_path / "_state" / "map").mkdir(parents=True)
    (tmp_path / "keep.txt").write_text("not the job's")
    changed = JobSpec.from_dict(_job(photos, tmp_path, max_iterations="5"))

    state = JobState.open(spec=changed, images=images, output_folders=["avatars"],
                          overwrite=True)
    state.finish()

    assert state.resumed is False
    assert not (tmp_path / "avatars").exists()
    assert not (tmp_path / "_state").exists()
    assert (tmp_path / "keep.txt").exists()
    assert _read_manifest(tmp_path)["spec"]["config"]["max_iterations"] == 5
