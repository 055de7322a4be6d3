"""Installing a plugin on a running LocalCluster, then replacing it with a new version."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import pytest

from daskavatar.exceptions import InputNotFoundError, PluginError
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
def installed_cleanup(cluster_client):
    yield
    name = install.PLUGIN_PREFIX + "landmark-export"
    if name in cluster_client.run_on_scheduler(install._installed_wheels):
        cluster_client.unregister_worker_plugin(name)
    install._deactivate("landmark-export")


def test_install_then_upgrade_without_restart(cluster_client, tmp_path, installed_cleanup):
    address = cluster_client.scheduler.address
    project = tmp_path / "landmark_export"
    job = {"plugin_name": "landmark-export",
           "input_paths": [shared_path("faces_face_recognition") + "/*/biden*.jpg"],
           "num_map_tasks": 1, "num_reduce_tasks": 1}
    pids = cluster_client.run(os.getpid)

    # Before the install the job's plugin is unknown, on the client and on the cluster.
    assert "landmark_export" not in sys.modules
    with pytest.raises(Exception, match="unknown plugin_name 'landmark-export'"):
        run_job(dict(job, output_path=str(tmp_path / "before")), cluster_client, progress=False)

    versions = []
    for version in ("1.0", "2.0"):
        write_project(project, version)
        result = cli("plugins", "install", str(project), "--scheduler", address)
        assert result.returncode == 0, result.stderr
        assert f"Installed landmark-export {version} on 2 workers" in result.stdout

        output = tmp_path / f"v{version}"
        report = run_job(dict(job, output_path=str(output)), cluster_client, progress=False)
        written = json.loads((output / "landmarks" / "biden" / "landmarks.json").read_text())
        versions.append((report.results[0]["version"], written["version"]))
        assert len(written["landmarks"]) == report.counts["usable_faces"] == 2
        assert written["pid"] in pids.values()
        assert sys.modules["landmark_export"].VERSION == version

    assert versions == [("1.0", "1.0"), ("2.0", "2.0")]
    assert cluster_client.run(os.getpid) == pids

    listed = cli("plugins", "--scheduler", address)
    assert "Installed on" in listed.stdout and "landmark-export 2.0" in listed.stdout
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
