"""Installing a plugin on a running LocalCluster, then replacing it with a new version."""

import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest
from distributed import Client

from daskavatar.exceptions import InputNotFoundError, JobSpecError, PluginError
from daskavatar.jobs.runner import run_job
from daskavatar.plugins import install
from tests.conftest import shared_path

PYPROJECT = '''
[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "landmark-export"
version = "{version}"

[project.entry-points."daskavatar.plugins"]
Landmark_Export = "landmark_export:LandmarkExport"
'''

MODULE = '''
import os

from daskavatar.plugins import MapReducePlugin

VERSION = "{version}"


class LandmarkExport(MapReducePlugin):
    name = "Landmark_Export"
    features = ("landmarks",)
    outputs = ("landmarks.json",)
    output_folder = "landmarks"

    def reduce(self, context):
        rows = context.read_features(["landmarks"])
        context.write_json("landmarks.json", {{"version": VERSION, "pid": os.getpid(),
                                               "landmarks": rows["landmarks"].tolist()}})
        return {{"status": "ok", "version": VERSION}}
'''


def write_project(folder, version):
    folder.mkdir(exist_ok=True)
    (folder / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT.format(version=version)))
    (folder / "landmark_export.py").write_text(textwrap.dedent(MODULE.format(version=version)))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "daskavatar.cli", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def separate_cluster(tmp_path):
    """A scheduler and two 512 MB workers started with the ``dask`` command, as users do.

    Unlike a LocalCluster, the scheduler runs in its own process, which must be able to
    unpickle task graphs that refer to the plugin. The workers run in another folder than
    the client, so relative paths in a job must be resolved by the client.
    """
    dask_command = os.path.join(os.path.dirname(sys.executable), "dask")
    scheduler_file = tmp_path / "scheduler.json"
    workers_folder = tmp_path / "workers"
    workers_folder.mkdir()
    log = open(tmp_path / "cluster.log", "w")
    processes = [subprocess.Popen(
        [dask_command, "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
        stdout=log, stderr=subprocess.STDOUT)]
    try:
        for _ in range(300):
            if scheduler_file.exists():
                break
            time.sleep(0.1)
        for _ in range(2):
            processes.append(subprocess.Popen(
                [dask_command, "worker", "--scheduler-file", str(scheduler_file), "--host",
                 "127.0.0.1", "--nthreads", "1", "--memory-limit", "512MB"],
                cwd=workers_folder, stdout=log, stderr=subprocess.STDOUT))
        with Client(scheduler_file=str(scheduler_file)) as client:
            client.wait_for_workers(2, timeout=120)
            yield client
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        log.close()
        install._deactivate("landmark-export")
        sys.modules.pop("landmark_export", None)


def test_install_then_upgrade_without_restart(separate_cluster, tmp_path, monkeypatch):
    client = separate_cluster
    address = client.scheduler.address
    project = tmp_path / "landmark_export"
    job = {"plugin_name": "landmark-export",
           "input_paths": [shared_path("faces_face_recognition") + "/*/biden*.jpg"],
           "num_map_tasks": 1, "num_reduce_tasks": 1}
    pids = client.run(os.getpid)
    monkeypatch.chdir(tmp_path)

    # Before the install the job's plugin is unknown, on the client and on the cluster.
    assert "landmark_export" not in sys.modules
    with pytest.raises(JobSpecError, match="unknown plugin_name 'landmark-export'"):
        run_job(dict(job, output_path="before"), client, progress=False)

    versions = []
    for version in ("1.0", "2.0"):
        write_project(project, version)
        result = cli("plugins", "install", str(project), "--scheduler", address)
        assert result.returncode == 0, result.stderr
        assert f"Installed landmark-export {version} on 2 workers" in result.stdout

        report = run_job(dict(job, output_path=f"v{version}"), client, progress=False)
        written = json.loads((tmp_path / f"v{version}" / "landmarks" / "biden" /
                              "landmarks.json").read_text())
        versions.append((report.results[0]["version"], written["version"]))
        assert len(written["landmarks"]) == report.counts["usable_faces"] == 2
        assert written["pid"] in pids.values()
        assert sys.modules["landmark_export"].VERSION == version

    assert versions == [("1.0", "1.0"), ("2.0", "2.0")]
    assert client.run(os.getpid) == pids
    assert sorted(os.listdir(project)) == ["landmark_export.py", "pyproject.toml"]

    listed = cli("plugins", "--scheduler", address)
    assert "Installed on" in listed.stdout
    assert "landmark-export 2.0" in listed.stdout
    assert "Landmark_Export" in listed.stdout


def test_wheel_without_entry_point_refused(cluster_client, tmp_path):
    wheel = tmp_path / "empty_thing-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("empty_thing.py", "")
        archive.writestr("empty_thing-1.0.dist-info/METADATA",
                         "Metadata-Version: 2.1\nName: empty-thing\nVersion: 1.0\n")

    with pytest.raises(PluginError, match="declares no entry point in the group "
                                          "'daskavatar.plugins'"):
        install.install_plugin(str(wheel), cluster_client)


def test_missing_path_named(cluster_client, tmp_path):
    with pytest.raises(InputNotFoundError, match="plugin path .*nowhere' not found"):
        install.install_plugin(str(tmp_path / "nowhere"), cluster_client)


def test_broken_plugin_error_printed_once(tmp_path):
    project = tmp_path / "landmark_export"
    write_project(project, "1.0")
    (project / "landmark_export.py").write_text("import no_such_module_anywhere\n")

    # No scheduler listens on port 1, so the command fails with another error, after a
    # 30 s connect timeout, if it contacts the scheduler before loading the plugin.
    result = cli("plugins", "install", str(project), "--scheduler", "tcp://127.0.0.1:1")

    assert result.returncode == 1
    assert result.stderr == (
        "daskavatar: error: plugin 'Landmark_Export' from landmark_export-1.0-py3-none-any.whl "
        "cannot be loaded: ModuleNotFoundError: No module named 'no_such_module_anywhere'\n")
    assert result.stdout == ""
