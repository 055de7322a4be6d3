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
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import pickle
import time
import uuid

import fsspec

from daskavatar import config
from daskavatar.exceptions import JobStateError
from daskavatar.io.outputs import join, read_json, write_bytes, write_json

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
STATE_FOLDER = "_state"
FORMAT_VERSION = 1

DONE = "done"
RUNNING = "running"
FAILED = "failed"


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
        self._saved_at = 0.0

    @classmethod
    def open(cls, *, spec, images, output_folders, overwrite: bool = False,
             storage_options=None) -> JobState:
        """Read the manifest of an earlier run of ``spec`` or start a new one.

        ``output_folders`` are the folders under ``output_path`` that the job writes besides
        ``features.zarr``, such as the plugin's ``output_folder``; ``overwrite`` removes them.
        Raises :class:`JobStateError` when ``output_path`` contains the manifest of a different
        spec or input listing and ``overwrite`` is false.
        """
        spec_dict = spec.to_dict()
        inputs = inputs_fingerprint(images)
        previous = cls.check(spec=spec, images=images, overwrite=overwrite,
                             storage_options=storage_options)

        if previous is not None and overwrite:
            folders = set(output_folders) | set(previous.get("outputs", []))
            _remove(spec.output_path, sorted(folders | {STATE_FOLDER, MANIFEST_NAME}),
                    storage_options)
            logger.info("Removed the outputs of the previous job in %s", spec.output_path)
            previous = None

        resumed = previous is not None
        data = previous if resumed else {
            "format": FORMAT_VERSION, "spec": spec_dict, "inputs": inputs, "status": RUNNING,
            "outputs": sorted({"features.zarr", "job.json", STATE_FOLDER, *output_folders}),
            "runs": [], "stages": {}, "partitions": {}, "identities": {}}
        state = cls(output_path=spec.output_path, data=data, resumed=resumed,
                    storage_options=storage_options)
        data["status"] = RUNNING
        data["runs"].append({"run": state.run_id, "started": _now(), "finished": None,
                             "status": RUNNING})
        state.save(force=True)
        return state

    @staticmethod
    def check(*, spec, images, overwrite: bool = False, storage_options=None) -> dict | None:
        """Return the manifest of an earlier run in ``output_path``, or ``None``; write nothing.

        Raises :class:`JobStateError` when that manifest is of a different spec or input
        listing and ``overwrite`` is false.
        """
        previous = _read_manifest(join(spec.output_path, MANIFEST_NAME), storage_options)
        if previous is None or overwrite:
            return previous
        changes = _changes(previous, spec.to_dict(), inputs_fingerprint(images))
        if changes:
            raise JobStateError(
                f"output_path {spec.output_path!r} contains the outputs of a different job "
                f"(changed: {', '.join(changes)}); use another output_path, or run with "
                "--overwrite (overwrite=True) to replace them")
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
        self.data["stages"][name] = {"status": RUNNING, "run": self.run_id, "started": _now()}
        self.save(force=True)

    def finish_stage(self, name: str, **details) -> None:
        self.data["stages"][name].update(status=DONE, finished=_now(), **details)
        self.save(force=True)

    def start_partitions(self, partitions: dict[int, tuple[int, int]]) -> None:
        """Record that the partitions ``{index: (first row, end row)}`` were submitted."""
        for index, rows in partitions.items():
            entry = self.data["partitions"].setdefault(str(index), {"attempts": 0})
            entry.update(status=RUNNING, rows=list(rows), attempts=entry["attempts"] + 1,
                         run=self.run_id, error=None)
        self.save()

    def finish_partition(self, index: int, *, error: str | None = None) -> None:
        entry = self.data["partitions"][str(index)]
        entry.update(status=FAILED if error else DONE, error=error)
        self.save()

    def start_keys(self, keys) -> None:
        """Record that reduce tasks for ``keys`` were submitted."""
        for key in keys:
            entry = self.data["identities"].setdefault(key, {"attempts": 0})
            entry.update(status=RUNNING, attempts=entry["attempts"] + 1, run=self.run_id,
                         reason=None, message=None)
        self.save()

    def finish_key(self, key: str, result: dict) -> None:
        """Record the result entry of ``key``; its ``status`` is ok, skipped or failed."""
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
        for name, count in starts.items():
            entry = self.data[section].get(str(name))
            if entry is not None:
                entry["task_starts"] = count
        self.save()

    def finish(self, status: str = DONE) -> None:
        """Record the end of this run and save."""
        self.data["status"] = status
        self.data["runs"][-1].update(finished=_now(), status=status)
        self.save(force=True)

    def save(self, *, force: bool = False) -> None:
        """Write the manifest, unless it was written less than the save interval ago."""
        now = time.monotonic()
        if not force and now - self._saved_at < self._save_interval:
            return
        write_json(self.url, self.data, storage_options=self.storage_options)
        self._saved_at = now


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
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
