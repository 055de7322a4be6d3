"""The main job with every path on a real S3 server (moto_server on 127.0.0.1).

The checks of the local main-job test run unchanged: they are imported from
``test_end_to_end`` and read a local copy of the output bucket, downloaded after the job.
"""

import json
import os
import pathlib

import pytest

from daskavatar.exceptions import InputNotFoundError, JobSpecError, OutputPathError
from daskavatar.jobs.runner import run_job
from tests.conftest import s3_bucket
from tests.jobs.test_end_to_end import CONFIG, photo_folder  # noqa: F401  (fixture)
from tests.jobs.test_end_to_end import (  # noqa: F401  (collected again here, on S3)
    test_feature_store_contents, test_job_json_lists_every_image, test_job_outputs,
    test_no_worker_restarted)

BUCKET = "daskavatar-e2e"


@pytest.fixture(scope="module")
def job_result(cluster_client, photo_folder, s3_server, tmp_path_factory):  # noqa: F811
    fs = s3_bucket(s3_server, BUCKET)
    for path in photo_folder.rglob("*"):
        if path.is_file():
            fs.put_file(str(path), f"{BUCKET}/faces/{path.relative_to(photo_folder)}")
    job = {"plugin_name": "NeRF_Avatar", "config": {**CONFIG, "storage_options": s3_server},
           "input_paths": [f"s3://{BUCKET}/faces/**/*.jpg"],
           "output_path": f"s3://{BUCKET}/output", "num_map_tasks": 3, "num_reduce_tasks": 2}
    pids = cluster_client.run(os.getpid)

    report = run_job(job, cluster_client, progress=False)

    output = tmp_path_factory.mktemp("s3-output")
    for key in fs.find(f"{BUCKET}/output"):
        target = output / key[len(f"{BUCKET}/output/"):]
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(key, str(target))
    return report, output, pids


def test_s3_outputs_hold_no_credentials(job_result, s3_server):
    report, output, _ = job_result

    written = (output / "job.json").read_text() + (output / "manifest.json").read_text()

    assert s3_server["secret"] not in written
    assert "storage_options" not in written
    assert json.loads((output / "manifest.json").read_text())["status"] == "done"
    assert report.spec["output_path"] == f"s3://{BUCKET}/output"
    assert not pathlib.Path("s3:").exists()


def test_s3_missing_bucket_fails_fast(s3_server, photo_folder):  # noqa: F811
    job = {"config": {"storage_options": s3_server}, "input_paths": [str(photo_folder)],
           "output_path": "s3://no-such-bucket/out"}

    with pytest.raises(OutputPathError, match="no-such-bucket"):
        run_job(job, client=object(), progress=False)


def test_s3_missing_input_fails_fast(s3_server, tmp_path):
    s3_bucket(s3_server, BUCKET)
    job = {"config": {"storage_options": s3_server},
           "input_paths": [f"s3://{BUCKET}/missing/*.jpg"], "output_path": str(tmp_path)}

    with pytest.raises(InputNotFoundError, match="missing"):
        run_job(job, client=object(), progress=False)


def test_s3_options_from_dask_config(s3_server, photo_folder):  # noqa: F811
    import dask

    s3_bucket(s3_server, BUCKET)
    job = {"input_paths": [f"s3://{BUCKET}/none/*.jpg"], "output_path": "s3://x/y"}

    # Without options the endpoint is AWS itself; with them, the listing reaches moto and
    # finds nothing, which proves the Dask config's options were used.
    with dask.config.set({"daskavatar.storage-options": s3_server}):
        with pytest.raises(InputNotFoundError, match="none"):
            run_job(job, client=object(), progress=False)


def test_storage_options_must_be_object(photo_folder, tmp_path):  # noqa: F811
    job = {"config": {"storage_options": "secret-token"}, "input_paths": [str(photo_folder)],
           "output_path": str(tmp_path)}

    with pytest.raises(JobSpecError, match="invalid storage_options in the job config") as info:
        run_job(job, client=object(), progress=False)
    assert "secret-token" not in str(info.value)


@pytest.mark.parametrize("paths, error", [
    ({"input_paths": ["s3://bucket/faces/*.jpg"], "output_path": "LOCAL"}, InputNotFoundError),
    ({"input_paths": ["PHOTOS"], "output_path": "s3://bucket/out"}, OutputPathError),
])
def test_unreachable_endpoint_fails_fast(paths, error, photo_folder, tmp_path):  # noqa: F811
    # Port 9 (discard) on 127.0.0.1 has no server, so the connection is refused at once.
    options = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s",
               "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}
    job = {"config": {"storage_options": options},
           "input_paths": [p.replace("PHOTOS", str(photo_folder)) for p in paths["input_paths"]],
           "output_path": paths["output_path"].replace("LOCAL", str(tmp_path))}

    with pytest.raises(error, match="Could not connect to the endpoint URL"):
        run_job(job, client=object(), progress=False)
