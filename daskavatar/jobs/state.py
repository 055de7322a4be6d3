"""Job state: the manifest that makes a job resumable.

``output_path/manifest.json`` records the job's spec, a fingerprint of its input listing,
the status of each stage, and the status, attempts and error of every map partition and
every key of the reduce stage (an identity for the built-in plugins). The client is its only
writer. It saves the manifest as tasks finish, at most once per
``daskavatar.state.save-interval`` seconds and always at the end of a stage, through the
atomic writes of :mod:`daskavatar.io.outputs`.

A map task writes its records to ``output_path/_state/map/part-NNNNN.pkl`` as its last
step. Running the same job again with the same ``output_path`` skips the map partitions that
the manifest records as done and whose records file exists, and the keys recorded ``ok``
whose output folder exists. A job whose spec or inputs changed is rejected with
:class:`JobStateError` unless it runs with ``overwrite=True``, which removes the previous
outputs first. How the stages run is in :mod:`daskavatar.jobs.runner`.

Each entry of the manifest's ``runs`` list records the client's host name, pid and process
start time, and a ``heartbeat`` time. A daemon thread saves the manifest every
``daskavatar.state.heartbeat-interval`` seconds while the run goes on, and
:meth:`JobState.finish` stops it. A run that opens the manifest looks at every earlier run
still recorded ``running``. On the same host, a run whose process is gone is recorded
``interrupted``, and a run whose process is alive makes the new run fail with
:class:`JobStateError`. A run of another host is judged by its heartbeat: the new run fails
until the heartbeat is :data:`STALE_HEARTBEATS` intervals old, and then records it
``interrupted``. ``overwrite=True`` does not skip this check. The check runs before any
compute and changes nothing when it fails.

This module takes no lock on ``output_path``, so two clients that start within the same
moment can both pass the check.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import pickle
import socket
import threading
import time
import uuid

import fsspec
import psutil

from daskavatar import config
from daskavatar.exceptions import JobSpecError, JobStateError
from daskavatar.io.outputs import join, read_json, write_bytes, write_json

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
STATE_FOLDER = "_state"
FORMAT_VERSION = 1

DONE = "done"
RUNNING = "running"
FAILED = "failed"
INTERRUPTED = "interrupted"

STALE_HEARTBEATS = 3
"""Heartbeat intervals after which a run of another host counts as interrupted."""

_active_runs: set[str] = set()
"""Ids of the runs of this process whose heartbeat thread runs."""
_active_runs_lock = threading.Lock()


class JobState:
    """The manifest of one job, kept in memory on the client and saved to ``output_path``.

    Build it with :meth:`open`. Partition indices are the map partitions in row order; keys
    are the reduce-stage keys that the plugin emitted.
    """

    def __init__(self, *, output_path: str, data: dict, resumed: bool, storage_options=None):
        self.output_path = output_path
        self.url = join(output_path, MANIFEST_NAME)
        self.data = data
        self.resumed = resumed
        """Whether an earlier run of the same job left this manifest."""
        self.storage_options = storage_options
        self.run_id = uuid.uuid4().hex[:12]
        """Identifier of this run, also sent with the reduce stage's Dask events."""
        self._save_interval = float(config.get("state.save-interval", 1.0))
        self._heartbeat_interval = heartbeat_interval()
        self._saved_at = 0.0
        self._run = None
        # The heartbeat thread serialises self.data while the client's thread changes it.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._heartbeat = None

    @classmethod
    def open(cls, *, spec, images, output_folders, overwrite: bool = False,
             storage_options=None) -> JobState:
        """Read the manifest of an earlier run of ``spec`` or start a new one.

        ``output_folders`` are the folders under ``output_path`` that the job writes besides
        ``features.zarr``, such as the plugin's ``output_folder``; ``overwrite`` removes them.
        Earlier runs still recorded ``running`` whose client is gone are recorded
        ``interrupted``. Raises :class:`JobStateError` when ``output_path`` contains the
        manifest of a different spec or input listing and ``overwrite`` is false, and when
        the client of an earlier run may still be writing, whatever ``overwrite`` is. The
        caller must call :meth:`finish`, which stops the heartbeat thread.
        """
        spec_dict = spec.to_dict()
        inputs = inputs_fingerprint(images)
        previous, interrupted = _read_previous(spec=spec, images=images, overwrite=overwrite,
                                               storage_options=storage_options)

        if previous is not None and overwrite:
            folders = set(output_folders) | set(previous.get("outputs", []))
            _remove(spec.output_path, sorted(folders | {STATE_FOLDER, MANIFEST_NAME}),
                    storage_options)
            logger.info("Removed the outputs of the previous job in %s", spec.output_path)
            previous, interrupted = None, []

        resumed = previous is not None
        data = previous if resumed else {
            "format": FORMAT_VERSION, "spec": spec_dict, "inputs": inputs, "status": RUNNING,
            "outputs": sorted({"features.zarr", "job.json", STATE_FOLDER, *output_folders}),
            "runs": [], "stages": {}, "partitions": {}, "identities": {}}
        state = cls(output_path=spec.output_path, data=data, resumed=resumed,
                    storage_options=storage_options)

        found = _now()
        for run, reason in interrupted:
            run.update(status=INTERRUPTED, interrupted_found=found, interrupted_reason=reason,
                       interrupted_found_by=state.run_id)
            logger.warning("Recorded the earlier run %s in %s as interrupted: %s",
                           run.get("run"), spec.output_path, reason)

        data["status"] = RUNNING
        state._run = {"run": state.run_id, "started": found, "finished": None,
                      "status": RUNNING, **_client_identity(),
                      "heartbeat": found, "heartbeat_interval": state._heartbeat_interval}
        data["runs"].append(state._run)
        state.save(force=True)
        state._start_heartbeat()
        return state

    @staticmethod
    def check(*, spec, images, overwrite: bool = False, storage_options=None) -> dict | None:
        """Return the manifest of an earlier run in ``output_path``, or ``None``; write nothing.

        Raises :class:`JobStateError` when that manifest is of a different spec or input
        listing and ``overwrite`` is false, and when the client of an earlier run may still
        be writing to ``output_path``, whatever ``overwrite`` is.
        """
        previous, _ = _read_previous(spec=spec, images=images, overwrite=overwrite,
                                     storage_options=storage_options)
        return previous

    def partition_url(self, index: int) -> str:
        """Return the URL of the records file of map partition ``index``."""
        return join(self.output_path, STATE_FOLDER, "map", f"part-{index:05d}.pkl")

    def finished_partitions(self, count: int) -> set[int]:
        """Return the partitions below ``count`` recorded done whose records file exists."""
        recorded = {int(index) for index, entry in self.data["partitions"].items()
                    if entry["status"] == DONE and int(index) < count}
        if not recorded:
            return set()
        fs, folder = fsspec.core.url_to_fs(join(self.output_path, STATE_FOLDER, "map"),
                                           **(self.storage_options or {}))
        try:
            present = {path.rstrip("/").rsplit("/", 1)[-1] for path in fs.ls(folder, detail=False)}
        except FileNotFoundError:
            return set()
        return {index for index in recorded if f"part-{index:05d}.pkl" in present}

    def finished_keys(self, keys) -> dict[str, dict]:
        """Return the result entry of each of ``keys`` recorded ``ok`` whose folder exists."""
        done = {}
        for key in keys:
            entry = self.data["identities"].get(key)
            if entry is None or entry["status"] != "ok":
                continue
            # A result without a folder (GAN_Dataset packs its folders into one archive)
            # leaves nothing to check, so that key is made again.
            folder = entry["result"].get("folder")
            if not folder:
                continue
            fs, path = fsspec.core.url_to_fs(folder, **(self.storage_options or {}))
            if fs.exists(path):
                done[key] = entry["result"]
        return done

    def start_stage(self, name: str) -> None:
        with self._lock:
            self.data["stages"][name] = {"status": RUNNING, "run": self.run_id,
                                         "started": _now()}
            self.save(force=True)

    def finish_stage(self, name: str, **details) -> None:
        with self._lock:
            self.data["stages"][name].update(status=DONE, finished=_now(), **details)
            self.save(force=True)

    def start_partitions(self, partitions: dict[int, tuple[int, int]]) -> None:
        """Record that the partitions ``{index: (first row, end row)}`` were submitted."""
        with self._lock:
            for index, rows in partitions.items():
                entry = self.data["partitions"].setdefault(str(index), {"attempts": 0})
                entry.update(status=RUNNING, rows=list(rows), attempts=entry["attempts"] + 1,
                             run=self.run_id, error=None)
            self.save()

    def finish_partition(self, index: int, *, error: str | None = None) -> None:
        with self._lock:
            entry = self.data["partitions"][str(index)]
            entry.update(status=FAILED if error else DONE, error=error)
            self.save()

    def start_keys(self, keys) -> None:
        """Record that reduce tasks for ``keys`` were submitted."""
        with self._lock:
            for key in keys:
                entry = self.data["identities"].setdefault(key, {"attempts": 0})
                entry.update(status=RUNNING, attempts=entry["attempts"] + 1, run=self.run_id,
                             reason=None, message=None)
            self.save()

    def finish_key(self, key: str, result: dict) -> None:
        """Record the result entry of ``key``; its ``status`` is ok, skipped or failed."""
        with self._lock:
            entry = self.data["identities"][key]
            entry.update(status=result["status"], reason=result.get("reason"),
                         message=result.get("message"), result=result)
            self.save()

    def record_task_starts(self, section: str, starts) -> None:
        """Store how often this run started each task, from the Dask event log.

        ``section`` is ``"partitions"`` or ``"identities"``, and ``starts`` maps a partition
        index or key to its count. Counts above 1 mean Dask ran the task again, for example
        after its worker died. A count is a lower bound, because a worker killed right after
        starting a task may not have sent the event.
        """
        with self._lock:
            for name, count in starts.items():
                entry = self.data[section].get(str(name))
                if entry is not None:
                    entry["task_starts"] = count
            self.save()

    def finish(self, status: str = DONE) -> None:
        """Stop the heartbeat thread, record the end of this run and save."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        try:
            with self._lock:
                self.data["status"] = status
                self._run.update(finished=_now(), status=status)
                self.save(force=True)
        finally:
            with _active_runs_lock:
                _active_runs.discard(self.run_id)

    def save(self, *, force: bool = False) -> None:
        """Write the manifest, unless it was written less than the save interval ago.

        Every write also refreshes this run's heartbeat time.
        """
        with self._lock:
            now = time.monotonic()
            if not force and now - self._saved_at < self._save_interval:
                return
            if self._run is not None and self._run["status"] == RUNNING:
                self._run["heartbeat"] = _now()
            write_json(self.url, self.data, storage_options=self.storage_options)
            self._saved_at = now

    def _start_heartbeat(self) -> None:
        with _active_runs_lock:
            _active_runs.add(self.run_id)
        self._heartbeat = threading.Thread(target=self._beat, daemon=True,
                                           name=f"daskavatar-heartbeat-{self.run_id}")
        self._heartbeat.start()

    def _beat(self) -> None:
        """Save the manifest every heartbeat interval until :meth:`finish` is called."""
        failures = 0
        while not self._stop.wait(self._heartbeat_interval):
            try:
                with self._lock:
                    if self._stop.is_set():
                        return
                    self.save(force=True)
            # A heartbeat that stops would let a client on another host take over this
            # output_path, so every storage error is logged and the thread goes on.
            except Exception as error:
                failures += 1
                if failures == 1:
                    logger.warning("Failed to save the heartbeat of run %s to %s (retrying "
                                   "every %g s): %s", self.run_id, self.url,
                                   self._heartbeat_interval, error)
                continue
            if failures:
                logger.info("Saved the heartbeat of run %s again after %d failed attempts",
                            self.run_id, failures)
                failures = 0


def heartbeat_interval() -> float:
    """Return ``daskavatar.state.heartbeat-interval`` in seconds.

    Raises :class:`JobSpecError` when it is not a positive number.
    """
    value = config.get("state.heartbeat-interval", 30)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0:
        raise JobSpecError(f"daskavatar.state.heartbeat-interval must be a positive number "
                           f"of seconds, not {value!r}")
    return seconds


def write_partition_records(url: str, records: list, *, storage_options=None) -> None:
    """Write a map partition's records atomically; called by the map task as its last step."""
    write_bytes(url, pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL),
                storage_options=storage_options)


def read_partition_records(url: str, *, storage_options=None) -> list:
    """Read the records that :func:`write_partition_records` wrote.

    The file is a pickle that this job's own map task wrote, so it is as trusted as the rest
    of ``output_path``.
    """
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        return pickle.loads(f.read())


def inputs_fingerprint(images) -> dict:
    """Return the image count and a SHA-256 over every image's URL, identity and row."""
    # NOTE: file contents and modification times are not part of it, so a photo replaced
    # under the same name is not detected as a changed input.
    digest = hashlib.sha256()
    for image in images:
        digest.update(json.dumps([image.url, image.identity, image.row]).encode("utf-8"))
    return {"images": len(images), "sha256": digest.hexdigest()}


def _read_manifest(url: str, storage_options) -> dict | None:
    try:
        data = read_json(url, storage_options=storage_options)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise JobStateError(f"the job manifest {url!r} is not valid JSON ({error}); remove it "
                            "or run with --overwrite") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        raise JobStateError(f"the job manifest {url!r} has an unknown format; remove it or run "
                            "with --overwrite")
    return data


def _read_previous(*, spec, images, overwrite: bool, storage_options):
    """Read the earlier manifest and check it; see :meth:`JobState.check`.

    Returns ``(manifest or None, [(run entry, reason)])``. The list contains the earlier
    runs still recorded ``running`` whose client is gone, each with why it counts as gone.
    """
    try:
        previous = _read_manifest(join(spec.output_path, MANIFEST_NAME), storage_options)
    except JobStateError:
        if not overwrite:
            raise
        # Nothing in it can be trusted, not even its list of outputs or of live runs.
        logger.warning("Replacing the unreadable manifest in %s", spec.output_path)
        return {"outputs": ["features.zarr", "job.json"], "runs": []}, []
    if previous is None:
        return None, []

    interrupted = []
    for run in previous.get("runs", []):
        if run.get("status") == RUNNING:
            interrupted.append((run, _check_writer(run, spec.output_path)))
    if overwrite:
        return previous, interrupted

    changes = _changes(previous, spec.to_dict(), inputs_fingerprint(images))
    if changes:
        raise JobStateError(
            f"output_path {spec.output_path!r} contains the outputs of a different job "
            f"(changed: {', '.join(changes)}); use another output_path, or run with "
            "--overwrite (overwrite=True) to replace them")
    return previous, interrupted


def _check_writer(run: dict, output_path: str) -> str:
    """Raise :class:`JobStateError` if the client of ``run`` may still be writing.

    ``run`` is a ``runs`` entry recorded ``running``. Returns why its client counts as gone.
    """
    host, pid = run.get("host"), run.get("pid")
    this_host = socket.gethostname()
    # NOTE: hosts are compared by name. Containers that share a host name but not a pid
    # namespace count as one host, so a live client in another one looks gone.
    if host == this_host and pid is not None:
        return _check_local_writer(run, output_path)

    heartbeat = run.get("heartbeat")
    last = _parse_time(heartbeat)
    if last is None:
        return "the run recorded no heartbeat time"
    interval = float(run.get("heartbeat_interval") or heartbeat_interval())
    stale_at = last + datetime.timedelta(seconds=STALE_HEARTBEATS * interval)
    # NOTE: the heartbeat is the other host's clock time, so clocks that differ by more
    # than a few seconds shift when its run counts as stale.
    if datetime.datetime.now(datetime.timezone.utc) < stale_at:
        raise JobStateError(
            f"output_path {output_path!r} is in use by run {run.get('run')} of pid {pid} on "
            f"host {host}, whose last heartbeat was at {heartbeat}; wait for that job to "
            f"finish, stop it on {host}, or use another output_path. If that client is "
            f"already gone, its run counts as interrupted from {_format_time(stale_at)}, "
            f"{STALE_HEARTBEATS} heartbeat intervals of {interval:g} s after its last "
            "heartbeat")
    return f"no heartbeat from pid {pid} on host {host} since {heartbeat}"


def _check_local_writer(run: dict, output_path: str) -> str:
    """Check a run of this host by its pid; see :func:`_check_writer`."""
    host, pid = run["host"], run["pid"]
    in_use = (f"output_path {output_path!r} is in use by run {run.get('run')} of pid {pid} "
              f"on host {host}, started {run.get('started')}")

    if pid == os.getpid():
        with _active_runs_lock:
            active = run.get("run") in _active_runs
        if active:
            raise JobStateError(f"{in_use}, which is this process; wait for that job to "
                                "finish, or use another output_path")
        return f"pid {pid} on host {host} is this process, which has no such run in progress"

    if _process_alive(pid, run.get("process_started")):
        raise JobStateError(f"{in_use}; wait for that job to finish, stop it (kill {pid}), "
                            "or use another output_path")
    return f"pid {pid} on host {host} is not running"


def _process_alive(pid: int, started: float | None) -> bool:
    """Return whether process ``pid`` exists and started at ``started``.

    ``started`` is the recorded process start time in seconds since the epoch. A process
    with that pid and another start time reuses the pid of a process that ended.
    """
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if started is not None and abs(process.create_time() - started) > 1.0:
            return False
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return True


def _client_identity() -> dict:
    process = psutil.Process()
    return {"host": socket.gethostname(), "pid": process.pid,
            "process_started": round(process.create_time(), 3)}


def _changes(previous: dict, spec: dict, inputs: dict) -> list[str]:
    """Return the names of what differs between an earlier run and this one."""
    changes = []
    old_spec = previous.get("spec", {})
    for key in spec:
        if key == "config":
            old_config = old_spec.get("config", {})
            changes += [f"config.{name}" for name in sorted(set(spec["config"]) | set(old_config))
                        if spec["config"].get(name) != old_config.get(name)]
        elif old_spec.get(key) != spec[key]:
            changes.append(key)
    if previous.get("inputs") != inputs:
        old_count = previous.get("inputs", {}).get("images")
        changes.append(f"input images ({old_count} before, {inputs['images']} now)"
                       if old_count != inputs["images"] else "input images")
    return changes


def _remove(output_path: str, names, storage_options) -> None:
    fs, root = fsspec.core.url_to_fs(output_path, **(storage_options or {}))
    for name in names:
        path = f"{root.rstrip('/')}/{name}"
        if fs.exists(path):
            fs.rm(path, recursive=True)


def _now() -> str:
    return _format_time(datetime.datetime.now(datetime.timezone.utc))


def _format_time(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _parse_time(text) -> datetime.datetime | None:
    """Parse a time that :func:`_now` wrote; return ``None`` for a missing or invalid one."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment
