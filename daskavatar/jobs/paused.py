"""Un-sticking workers that Dask paused for memory they do not give back.

Dask pauses a worker whose process memory passes the pause threshold (80 % of its limit)
and lets it start tasks again once the memory falls below. Data that Dask manages falls
when it is spilled, but a 512 MB worker of this project pauses for memory Dask does not
manage: imported libraries, cached face models, and free heap that glibc keeps. That memory
never falls on its own, so a paused worker holding a task of the job waits forever, and
with it the job. The nanny restarts a worker only at 95 %.

:class:`PausedWorkerGuard` watches the cluster while a job runs. A worker can stay paused
without running a task for ``daskavatar.tasks.paused-worker-timeout`` seconds. The guard
then makes it drop its cached models and return free memory (:func:`release_models`). If
the worker is still paused after the same time again, the guard restarts it through its
nanny (``Client.restart_workers``), and Dask runs its tasks elsewhere or on the new process.
"""

from __future__ import annotations

import logging
import threading
import time

from distributed import Client

from daskavatar.faces.models import release_models

logger = logging.getLogger(__name__)


class PausedWorkerGuard:
    """Context manager: a thread that releases, then restarts, stuck paused workers.

    ``timeout`` is in seconds; 0 or less disables the guard. ``restarted`` lists the
    addresses of the workers the guard restarted.
    """

    def __init__(self, client: Client, *, timeout: float):
        self.client = client
        self.timeout = timeout
        self.restarted: list[str] = []
        self._paused_since: dict[str, float] = {}
        self._released: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="daskavatar-paused-workers",
                                        daemon=True)

    def __enter__(self) -> PausedWorkerGuard:
        if self.timeout > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        interval = min(5.0, self.timeout / 2)
        while not self._stop.wait(interval):
            try:
                self.check(time.monotonic())
            except Exception:
                # The client may be closing, or a worker leaving; the next check tries again.
                logger.debug("Checking for paused workers failed", exc_info=True)

    def check(self, now: float) -> None:
        """Act on the workers that have been paused and idle for ``timeout`` seconds."""
        stuck = set(self._paused_idle_workers())
        for address in set(self._paused_since) - stuck:
            del self._paused_since[address]
            self._released.discard(address)

        for address in sorted(stuck):
            since = self._paused_since.setdefault(address, now)
            if now - since < self.timeout:
                continue
            if address not in self._released:
                logger.warning("Worker %s has been paused by Dask for %.0f s, above its memory "
                               "pause threshold, without running a task; releasing its "
                               "cached models and free memory", address, now - since)
                self.client.run(release_models, workers=[address])
                self._released.add(address)
                self._paused_since[address] = now
            else:
                logger.warning("Worker %s is still paused after releasing memory; restarting "
                               "it, and Dask runs its tasks again", address)
                self.client.restart_workers([address])
                self.restarted.append(address)
                del self._paused_since[address]
                self._released.discard(address)

    def _paused_idle_workers(self) -> list[str]:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        paused = [address for address, info in workers.items()
                  if info.get("status") == "paused"]
        if not paused:
            return []
        idle = self.client.run(_is_paused_and_idle, workers=paused, on_error="return")
        return [address for address, answer in idle.items() if answer is True]


def _is_paused_and_idle(dask_worker=None) -> bool:
    return dask_worker.status.name == "paused" and dask_worker.state.executing_count == 0
