"""The whole job on a real LocalCluster of 512 MB workers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import trimesh
import zarr

from daskavatar.exceptions import InputNotFoundError, OutputPathError
from daskavatar.jobs.runner import run_job
from tests.conftest import shared_path

CONFIG = {"preset": "small", "max_iterations": "60", "output_resolution": "64",
          "output_format": "ply", "mesh_resolution": "40", "preview_views": "3",
          "preview_resolution": "32"}


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Two people of two photos each, one multi-face photo and a non-image file."""
    source = shared_path("faces_face_recognition")
    folder = tmp_path_factory.mktemp("photos")
    for relative in ("biden/biden.jpg", "biden/biden2.jpg", "rose_leslie/img1.jpg",
                     "rose_leslie/img2.jpg", "_multi_face/two_people.jpg"):
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(open(os.path.join(source, relative), "rb").read())
    (folder / "rose_leslie" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


@pytest.fixture(scope="module")
def job_result(cluster_client, photo_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("output")
    job = {"plugin_name": "NeRF_Avatar", "config": CONFIG,
           "input_paths": [str(photo_folder / "**" / "*.jpg")], "output_path": str(output),
           "num_map_tasks": 3, "num_reduce_tasks": 2}
    pids = cluster_client.run(os.getpid)
    report = run_job(job, cluster_client, progress=False)
    return report, output, pids


def test_job_outputs(job_result):
    report, output, _ = job_result

    assert report.counts["images"] == 6
    assert report.counts["usable_faces"] == 5
    assert report.rejects_by_reason == {"truncated": 1}
    assert report.counts["results"] == 3
    identities = sorted(a["identity"] for a in report.results)
    assert identities == ["_multi_face__two_people", "biden", "rose_leslie"]

    for identity in ("biden", "rose_leslie"):
        folder = output / "avatars" / identity
        mesh = trimesh.load(str(folder / "mesh.ply"), force="mesh")
        assert len(mesh.faces) > 100
        assert mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
        preview = trimesh.util.wrap_as_stream((folder / "preview.png").read_bytes())
        assert preview.read(8) == b"\x89PNG\r\n\x1a\n"
        entry = json.loads((folder / "report.json").read_text())
        assert entry["status"] == "ok"
        assert entry["usable_photos"] == 2
        assert entry["train_psnr"] > 12.0

        parts = trimesh.load(str(folder / "mesh.ply"), process=False).split(
            only_watertight=False)
        assert entry["mesh_parts"] == len(parts)
        largest = max(len(part.faces) for part in parts) / len(mesh.faces)
        assert entry["mesh_largest_part"] == pytest.approx(largest, abs=1e-3)
        if largest < 0.8:
            assert f"in {entry['mesh_parts']} parts" in entry["warning"]


def test_job_json_lists_every_image(job_result):
    report, output, _ = job_result

    written = json.loads((output / "job.json").read_text())

    assert written["counts"] == report.counts
    by_id = {image["image_id"]: image for image in written["images"]}
    assert by_id["rose_leslie/broken.jpg"]["status"] == "truncated"
    assert by_id["_multi_face/two_people.jpg"]["face_count"] == 2
    assert written["spec"]["config"]["max_iterations"] == 60
    assert set(written["timings"]) == {"map_seconds", "prepare_seconds", "reduce_seconds",
                                      "finish_seconds"}


def test_feature_store_contents(job_result):
    report, output, _ = job_result

    group = zarr.open_group(str(output / "features.zarr"), mode="r")

    assert group["crops"].shape == (6, 64, 64, 3)
    assert group["crops"].dtype == np.uint8
    # Six images in three map tasks: partitions of two rows, one metadata chunk each.
    assert group["landmarks"].chunks == (2, 68, 2)
    assert sorted(os.listdir(output / "features.zarr" / "landmarks" / "c")) == ["0", "1", "2"]
    status = group["status"][:]
    rows = {image["image_id"]: image["row"] for image in report.images}
    assert status[rows["rose_leslie/broken.jpg"]] == 1
    assert status.sum() == 1
    c2w = group["c2w"][:][status == 0]
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", c2w[:, :3, :3], c2w[:, :3, :3]),
                               np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-5)


def test_no_worker_restarted(job_result, cluster_client):
    report, _, pids_before = job_result

    assert report.worker_restarts == 0
    assert cluster_client.run(os.getpid) == pids_before
    assert report.memory["reduce_peak_rss_mib"] < 0.95 * 512e6 / 2 ** 20


def test_missing_input_fails_before_compute(tmp_path):
    job = {"input_paths": [str(tmp_path / "none" / "*.jpg")], "output_path": str(tmp_path / "o")}

    with pytest.raises(InputNotFoundError, match="none"):
        run_job(job, client=object(), progress=False)
    assert not (tmp_path / "o").exists()


def test_unwritable_output_fails_before_compute(tmp_path, photo_folder):
    blocker = tmp_path / "file"
    blocker.write_text("")
    job = {"input_paths": [str(photo_folder)], "output_path": str(blocker / "out")}

    with pytest.raises(OutputPathError, match="cannot write to output_path"):
        run_job(job, client=object(), progress=False)


def test_cli_reports_bad_job_in_one_line(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"input_paths": ["x"], "output_path": "y",
                                "config": {"output_format": "stl"}}))

    result = subprocess.run([sys.executable, "-m", "daskavatar.cli", "run", str(path)],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    assert result.stderr.strip() == ("daskavatar: error: invalid output_format 'stl'; use one "
                                     "of obj, ply, glb")


def test_cli_runs_on_given_scheduler(cluster_client, photo_folder, tmp_path):
    output = tmp_path / "out"
    job = {"config": dict(CONFIG, max_iterations="10", output_format="obj"),
           "input_paths": [str(photo_folder / "**" / "biden*.jpg")], "output_path": str(output),
           "num_map_tasks": 1, "num_reduce_tasks": 1}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    address = cluster_client.scheduler.address

    result = subprocess.run([sys.executable, "-m", "daskavatar.cli", "run", str(path),
                             "--scheduler", address, "--no-progress"],
                            capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stderr
    assert "Dask dashboard: " in result.stdout
    assert "biden" in result.stdout
    assert "1 identities done" in result.stdout
    assert (output / "avatars" / "biden" / "mesh.obj").exists()
