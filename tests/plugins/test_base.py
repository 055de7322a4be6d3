"""A plugin with its own map, reduce and finish steps, run as a job on the LocalCluster."""

import json
import os

import numpy as np
import pytest

from daskavatar.io.images import read_image
from daskavatar.jobs.runner import run_job
from daskavatar.jobs.spec import JobSpec
from daskavatar.plugins import MapReducePlugin
from tests.conftest import shared_path


class ColourStats(MapReducePlugin):
    """Keys images by the side the head turns to and averages their decoded colours."""

    name = "Colour_Stats"
    features = ("landmarks",)
    output_folder = "stats"

    def map(self, context):
        for image, decoded in context.decoded_images():
            context.emit("all", {"image_id": image.image_id,
                                 "mean": float(decoded.mean()), "row": image.row})
        for face in context.faces:
            if face["status"] == "ok":
                context.emit("left" if face["yaw"] < 0 else "right", face)

    def reduce(self, context):
        if context.key == "all":
            means = {r["image_id"]: r["mean"] for r in context.records}
            context.write_json("means.json", means)
            return {"status": "ok", "images": len(means)}
        landmarks = context.read_features(["landmarks"])["landmarks"]
        return {"status": "ok", "faces": len(landmarks)}

    def finish(self, context):
        keys = [r["identity"] for r in context.results]
        context.write_json("stats.json", {"keys": keys})
        return {"keys": len(keys)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colour_photos")
    source = shared_path("faces_face_recognition")
    for relative in ("obama/obama.jpg", "obama/obama2.jpg", "biden/biden.jpg"):
        target = folder / relative.replace("/", "_")
        target.write_bytes(open(os.path.join(source, relative), "rb").read())
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def test_custom_map_reduce_finish(cluster_client, photos, tmp_path):
    job = {"plugin_name": "Colour_Stats", "input_paths": [str(photos / "*.jpg")],
           "output_path": str(tmp_path), "num_map_tasks": 2, "num_reduce_tasks": 2}
    spec = JobSpec.from_dict(job, plugin_class=ColourStats)

    report = run_job(spec, cluster_client, progress=False)

    means = json.loads((tmp_path / "stats" / "all" / "means.json").read_text())
    assert sorted(means) == ["biden_biden.jpg", "obama_obama.jpg", "obama_obama2.jpg"]
    for image_id, mean in means.items():
        expected = read_image(str(photos / image_id), max_pixels=10**8).mean()
        assert mean == pytest.approx(expected)

    results = {r["identity"]: r for r in report.results}
    assert results["all"]["images"] == 3
    faces = sum(results[key]["faces"] for key in ("left", "right") if key in results)
    assert faces == report.counts["usable_faces"] == 3
    assert report.finished["keys"] == len(results)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["keys"] == sorted(results)
    assert report.rejects_by_reason == {"empty_file": 1}


def test_failing_reduce_reported_per_key(cluster_client, photos, tmp_path):
    class FailsOnAllKey(ColourStats):
        def reduce(self, context):
            if context.key == "all":
                raise RuntimeError("no statistics for this key")
            return super().reduce(context)

    job = {"plugin_name": "Colour_Stats", "input_paths": [str(photos / "*.jpg")],
           "output_path": str(tmp_path), "num_map_tasks": 1, "num_reduce_tasks": 1}
    spec = JobSpec.from_dict(job, plugin_class=FailsOnAllKey)

    report = run_job(spec, cluster_client, progress=False)

    results = {r["identity"]: r for r in report.results}
    assert results["all"]["status"] == "failed"
    assert results["all"]["message"] == "no statistics for this key"
    assert all(r["status"] == "ok" for key, r in results.items() if key != "all")
    assert report.counts["failed_identities"] == 1
    assert not np.isnan(report.memory["reduce_peak_rss_mib"])


def test_skip_without_message_shows_reason(cluster_client, photos, tmp_path):
    class SkipsAllKey(ColourStats):
        def reduce(self, context):
            if context.key == "all":
                return {"status": "skipped", "reason": "too_few_photos"}
            return super().reduce(context)

    job = {"plugin_name": "Colour_Stats", "input_paths": [str(photos / "*.jpg")],
           "output_path": str(tmp_path), "num_map_tasks": 1, "num_reduce_tasks": 1}
    spec = JobSpec.from_dict(job, plugin_class=SkipsAllKey)

    report = run_job(spec, cluster_client, progress=False)
    rows = {line.split()[0]: line for line in report.summary().splitlines()[1:] if line}

    assert report.results[0]["identity"] == "all"
    assert "message" not in report.results[0]
    assert rows["all"].split()[1] == "skipped"
    assert rows["all"].endswith("  too_few_photos")
