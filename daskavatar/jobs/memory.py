"""Measuring the memory of the worker process while a task runs.

Dask's nanny restarts a worker whose resident set size passes 95 % of its memory limit and
pauses it above 80 %, so tasks report the peak RSS they reached. The peak is sampled by a
background thread, because ``getrusage`` only gives the process lifetime peak, which would
charge a reduce task with what the map stage used before it.
"""

from __future__ import annotations

import threading

import psutil

SAMPLE_SECONDS = 0.01


class PeakMemory:
    """Context manager that samples this process's RSS and keeps the peak in MiB.

    >>> with PeakMemory() as peak:
    ...     work()                                   # doctest: +SKIP
    >>> peak.mib                                     # doctest: +SKIP
    """

    def __init__(self):
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="daskavatar-memory",
                                        daemon=True)
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        self.peak_bytes = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    @property
    def mib(self) -> float:
        """Peak RSS so far in MiB."""
        return round(self.peak_bytes / 2 ** 20, 1)


def rss_mib() -> float:
    """Return the current RSS of this process in MiB."""
    return round(psutil.Process().memory_info().rss / 2 ** 20, 1)
