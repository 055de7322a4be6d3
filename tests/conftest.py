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
