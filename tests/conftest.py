"""Shared fixtures: the read-only test data folder and a real LocalCluster of 512 MB workers."""

import os

import pytest

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                           "data"))


def shared_path(*parts: str) -> str:
    """Return a path under the shared test data, skipping the test where it is absent.

    In CI (``CI`` set) a missing folder fails the test instead, so a broken checkout cannot
    pass by skipping.
    """
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        message = (f"test data {path} not found; it lives in ../shared/data beside the "
                   "project checkout")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def cluster_client():
    """A Client on an embedded LocalCluster: 2 single-threaded workers of 512 MB."""
    from distributed import Client

    from daskavatar.cluster import start_local_cluster

    with start_local_cluster(n_workers=2, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (moto_server) on a free port of 127.0.0.1, stopped after the session.

    Yields the ``storage_options`` that reach it. Tests create their own buckets. The
    options carry the endpoint as ``endpoint_url`` and no ``region_name``, because a region
    in ``client_kwargs`` made bucket creation fail against moto.
    """
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto_server did not start on {endpoint}: "
                                   f"{process.stderr.read().decode(errors='replace')}")
            time.sleep(0.2)
    try:
        yield {"key": "testing", "secret": "testing", "endpoint_url": endpoint}
    finally:
        process.terminate()
        process.wait(timeout=30)


def s3_bucket(storage_options: dict, name: str):
    """Create the bucket ``name`` on the S3 server and return an s3fs filesystem for it."""
    import s3fs

    fs = s3fs.S3FileSystem(**storage_options, skip_instance_cache=True)
    if not fs.exists(name):
        fs.mkdir(name)
    return fs
