"""The Dask cluster a job runs on: a scheduler address, or an embedded LocalCluster.

The embedded cluster has one single-threaded worker per CPU core, each with a memory limit
of 512 MB (``daskavatar.cluster.memory-limit``) and Dask's default memory thresholds: the
worker pauses at 80 % and its nanny restarts it at 95 %. The settings are read from the Dask
config when the cluster is built. A job restarts a worker that stays paused while idle
(:mod:`daskavatar.jobs.paused`).
"""

from __future__ import annotations

import contextlib
import logging
import os

import dask.config
from distributed import Client, LocalCluster

from daskavatar import config
from daskavatar.exceptions import ClusterError

logger = logging.getLogger(__name__)


def worker_environment() -> dict[str, str]:
    """Environment variables that worker processes need from their start.

    glibc reads ``MALLOC_ARENA_MAX`` once, when the process starts, so these go into
    Dask's ``distributed.nanny.pre-spawn-environ``. With one arena, memory freed by XLA's
    threads is reused instead of piling up in per-thread arenas. In a process that had loaded
    the paper preset's programs, 6 training steps grew the RSS by 90 MiB with glibc's
    default arenas and by 40 MiB with one arena (measured on the 2-core development machine).
    XLA gets one thread, because each worker has one thread and one core.
    Remote workers need the same variables in their environment (README, "Memory").
    """
    return {"MALLOC_ARENA_MAX": "1", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "1",
            "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


def start_local_cluster(*, n_workers=None, memory_limit=None, threads_per_worker=None,
                        dashboard_address=None) -> LocalCluster:
    """Start the embedded LocalCluster with worker processes (not threads)."""
    n_workers = n_workers or config.get("cluster.n-workers") or os.cpu_count() or 1
    memory_limit = memory_limit or config.get("cluster.memory-limit")
    threads_per_worker = threads_per_worker or config.get("cluster.threads-per-worker")
    dashboard_address = dashboard_address or config.get("cluster.dashboard-address")

    pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
                 **worker_environment()}
    # With a saturation of 1.0 a worker holds only the tasks it runs. When a worker dies,
    # the scheduler counts the death against every task assigned to it, so queued tasks
    # there would move towards KilledWorker for a death they did not cause.
    saturation = config.get("cluster.worker-saturation")
    with dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn,
                          "distributed.scheduler.worker-saturation": saturation}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                               memory_limit=memory_limit, processes=True,
                               dashboard_address=dashboard_address)
    logger.info("Started a LocalCluster with %d workers of %s", n_workers, memory_limit)
    return cluster


@contextlib.contextmanager
def connect(scheduler: str | None = None, **cluster_options):
    """Yield a Client for ``scheduler``, or for a new LocalCluster closed afterwards.

    Raise :class:`ClusterError` when the scheduler cannot be reached.
    """
    if scheduler:
        try:
            client = Client(scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect"))
        except (OSError, TimeoutError, ValueError) as error:
            raise ClusterError(f"cannot connect to the Dask scheduler {scheduler!r}: {error}; "
                               "give the scheduler's address, e.g. tcp://host:8786 (not the dashboard "
                               "URL), and check that the scheduler runs") from error
        with client:
            yield client
        return
    with start_local_cluster(**cluster_options) as cluster, Client(cluster) as client:
        yield client
