"""Measuring and releasing the memory of the worker process.

Dask's nanny restarts a worker whose resident set size (RSS) passes 95 % of its memory limit
and pauses it above 80 %, so tasks report the peak RSS they reached. The peak is sampled by a
background thread, because ``getrusage`` only gives the process lifetime peak, which would
charge a reduce task with what the map stage used before it.

Two kinds of memory count in the RSS without being needed: free heap that glibc keeps, and
pages of shared libraries (jaxlib, OpenCV, SciPy) that were read once at import and never
again. :func:`release_memory` returns both to the operating system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading

import psutil

logger = logging.getLogger(__name__)

MADV_DONTNEED = 4
"""Linux ``madvise`` advice: unmap the pages of a range; file pages are re-read on access."""

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


def release_memory() -> None:
    """Return free heap and idle shared-library pages to the operating system."""
    trim_heap()
    release_library_pages()


def trim_heap() -> None:
    """Return free glibc heap pages to the operating system (no-op elsewhere)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def release_library_pages() -> int:
    """Drop this process's resident pages of unmodified, read-only file mappings.

    Importing JAX, OpenCV and trimesh maps several hundred MiB of shared libraries, and the
    kernel counts every page that import touched in the RSS, although most are never used
    again: an idle worker after a NeRF fit held 149 MiB of library code. Those pages are
    clean copies of files, so ``madvise(MADV_DONTNEED)`` can unmap them from this process
    without losing anything, and a page used again is mapped back from the page cache on its
    next access. A mapping qualifies only when it is not writable and ``/proc/self/smaps``
    shows no anonymous (copy-on-write) pages in it, because those hold changes, such as
    relocations, that the file does not have. Unlike ``MADV_PAGEOUT``, this also works for
    pages that other worker processes map too.

    Returns the number of bytes of mappings released; 0 where this is not Linux.
    """
    libc = _libc()
    if libc is None or not sys.platform.startswith("linux"):
        return 0
    try:
        with open("/proc/self/smaps") as smaps:
            lines = smaps.readlines()
    except OSError:
        return 0

    released = 0
    for start, end, anonymous_kb in _clean_file_mappings(lines):
        if anonymous_kb == 0 and libc.madvise(ctypes.c_void_p(start),
                                              ctypes.c_size_t(end - start), MADV_DONTNEED) == 0:
            released += end - start
    return released


def _clean_file_mappings(lines):
    """Yield ``(start, end, anonymous_kb)`` of non-writable private file mappings in smaps."""
    mapping = None
    for line in lines:
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
            mapping = None
            if len(fields) >= 6 and fields[5].startswith("/") and fields[1] in ("r-xp", "r--p"):
                start, end = (int(value, 16) for value in fields[0].split("-"))
                mapping = (start, end)
        elif mapping is not None and fields and fields[0] == "Anonymous:":
            yield mapping[0], mapping[1], int(fields[1])
            mapping = None


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
