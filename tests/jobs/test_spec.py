"""Parsing and validation of the job JSON."""

import json

import dask
import pytest

from daskavatar.exceptions import JobSpecError
from daskavatar.jobs.spec import JobSpec

JOB = {"plugin_name": "NeRF_Avatar",
       "config": {"output_resolution": "512", "max_iterations": "1000", "output_format": "obj"},
       "input_paths": ["/data/faces/*.jpg"], "output_path": "/output/avatars/",
       "num_map_tasks": 10, "num_reduce_tasks": 2}


def test_string_values_parsed():
    spec = JobSpec.from_dict(JOB)

    assert spec.face.output_resolution == 512
    assert spec.plugin_config.max_iterations == 1000
    assert spec.plugin_config.output_format == "obj"
    assert spec.num_map_tasks == 10
    assert spec.input_paths == ("/data/faces/*.jpg",)


def test_defaults_from_dask_config():
    job = dict(JOB, config={})

    with dask.config.set({"daskavatar.plugins.nerf-avatar.max-iterations": 77}):
        spec = JobSpec.from_dict(job)

    assert spec.plugin_config.max_iterations == 77
    assert spec.plugin_config.preset == "paper"


@pytest.mark.parametrize("name", ["NeRF_Avatar", "nerf_avatar", "NerfAvatar", "nerf-avatar"])
def test_plugin_name_spellings(name):
    assert JobSpec.from_dict(dict(JOB, plugin_name=name)).plugin_name == "NeRF_Avatar"


@pytest.mark.parametrize("change, message", [
    ({"config": {"max_iteration": "5"}}, "unknown config key 'max_iteration'"),
    ({"config": {"output_format": "stl"}}, "invalid output_format 'stl'"),
    ({"config": {"max_iterations": "ten"}}, "invalid value 'ten' for config key 'max_iterations'"),
    ({"config": {"preset": "huge"}}, "unknown NeRF preset 'huge'"),
    ({"num_map_tasks": 0}, "invalid num_map_tasks 0"),
    ({"plugin_name": "Gaussian"}, "unknown plugin_name 'Gaussian'; installed plugins: GAN_Dataset, NeRF_Avatar"),
    ({"extra": 1}, "unknown job key 'extra'"),
    ({"input_paths": []}, "invalid input_paths"),
])
def test_invalid_values_named(change, message):
    with pytest.raises(JobSpecError, match=message.replace("(", r"\(")):
        JobSpec.from_dict(dict(JOB, **change))


def test_missing_key():
    job = dict(JOB)
    del job["output_path"]

    with pytest.raises(JobSpecError, match="missing job key 'output_path'"):
        JobSpec.from_dict(job)


def test_from_file_round_trip(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(JOB))

    spec = JobSpec.from_file(str(path))

    assert JobSpec.from_dict(spec.to_dict()) == JobSpec.from_dict(
        dict(spec.to_dict(), config=spec.to_dict()["config"]))
    assert spec.to_dict()["config"]["output_resolution"] == 512


def test_bad_json_file(tmp_path):
    path = tmp_path / "job.json"
    path.write_text("{not json")

    with pytest.raises(JobSpecError, match="not valid JSON"):
        JobSpec.from_file(str(path))
