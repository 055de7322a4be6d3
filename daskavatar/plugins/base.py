"""The MapReduce plugin interface: what a job runs after the shared face analysis.

Every job starts with the same map stage (decode, detect, 68 landmarks, head pose, aligned
crop into ``features.zarr``, see :mod:`daskavatar.jobs.runner`). A plugin then decides what
each partition emits under which key, and what is made from all the records of one key.
Discovery by entry point is in :mod:`daskavatar.plugins.registry`; installing a plugin on a
running cluster is in :mod:`daskavatar.plugins.install`.

Writing a plugin::

    import dataclasses
    from daskavatar.plugins import MapReducePlugin

    @dataclasses.dataclass(frozen=True)
    class LandmarkConfig:
        min_photos: int = 2
        \"\"\"Identities with fewer usable photos are skipped.\"\"\"

    class LandmarkExport(MapReducePlugin):
        name = "Landmark_Export"
        config_class = LandmarkConfig
        features = ("landmarks",)
        outputs = ("landmarks.json",)

        def reduce(self, context):
            if len(context.records) < self.config.min_photos:
                return {"status": "skipped", "reason": "too_few_photos"}
            rows = context.read_features()
            context.write_json("landmarks.json", rows["landmarks"].tolist())
            return {"status": "ok", "photos": len(context.records)}

and declare it in the plugin package's ``setup.cfg``::

    [options.entry_points]
    daskavatar.plugins =
        Landmark_Export = landmark_export:LandmarkExport

A job then selects it with ``"plugin_name": "landmark_export"`` (case, ``_`` and ``-`` do
not matter) and passes its settings in the job's ``config`` block next to the map-stage
keys of :class:`daskavatar.jobs.spec.FaceConfig`.

The hooks run in this order: :meth:`~MapReducePlugin.prepare` once on the client,
:meth:`~MapReducePlugin.map` once per map partition, :meth:`~MapReducePlugin.reduce` once
per key, :meth:`~MapReducePlugin.finish` once on a worker after every key is done. The
plugin object is pickled into the tasks, so what ``prepare`` stores on ``self`` reaches
every task. Keep it small: it travels with each task.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from daskavatar.io.outputs import join, write_bytes, write_json

FEATURES = ("crops", "landmarks", "c2w", "intrinsics", "reprojection_error")
"""Per-face arrays of ``features.zarr`` that a plugin may ask for."""


@dataclasses.dataclass
class MapContext:
    """The input of :meth:`MapReducePlugin.map` for one map partition.

    ``images`` are the partition's :class:`~daskavatar.io.images.ImageRecord` rows, and
    ``faces`` their face records in the same order (dicts with ``status``, ``identity``,
    ``row``, pose angles and the rejection message). Rows ``rows[0]:rows[1]`` of the store
    belong to this partition alone, so a plugin may write its own arrays there.
    """

    images: list
    faces: list[dict]
    store_url: str
    rows: tuple[int, int]
    storage_options: dict | None
    _decode: Callable[[Any], np.ndarray]
    _emitted: list = dataclasses.field(default_factory=list)

    def emit(self, key: str, record: dict) -> None:
        """Send ``record`` to the reduce task of ``key``; records must be small and picklable."""
        self._emitted.append((str(key), record))

    def decoded_images(self) -> Iterator[tuple[Any, np.ndarray]]:
        """Yield ``(image record, RGB uint8 array (height, width, 3))`` one at a time.

        Images are decoded again on demand, so a partition never keeps all of them in
        memory. Images that cannot be decoded are left out, and their face records give
        the reason.
        """
        from daskavatar.io.images import ImageRejected

        for image in self.images:
            try:
                decoded = self._decode(image)
            except ImageRejected:
                continue
            yield image, decoded


class _Writer:
    """Atomic writes into ``self.folder``; a reader never sees a partial file."""

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write ``data`` to ``folder/name`` atomically and return its URL."""
        url = join(self.folder, name)
        write_bytes(url, data, storage_options=self.storage_options)
        return url

    def write_json(self, name: str, value: Any) -> str:
        """Write ``value`` as JSON to ``folder/name`` atomically and return its URL."""
        url = join(self.folder, name)
        write_json(url, value, storage_options=self.storage_options)
        return url


@dataclasses.dataclass
class ReduceContext(_Writer):
    """The input of :meth:`MapReducePlugin.reduce` for one key.

    ``records`` are every record emitted under ``key``. ``folder`` is the key's own output
    folder; :meth:`write_bytes` and :meth:`write_json` write there atomically, so a reader
    never sees a partial file and a re-run task overwrites only its own outputs.
    """

    key: str
    records: list[dict]
    folder: str
    store_url: str
    storage_options: dict | None

    def rows(self) -> list[int]:
        """Return the ``features.zarr`` rows of the usable faces among the records, sorted."""
        return sorted(int(r["row"]) for r in self.records if r.get("status") == "ok")

    def read_features(self, names=None, rows=None) -> dict[str, np.ndarray]:
        """Read ``names`` (default: all) of the given rows (default: :meth:`rows`)."""
        from daskavatar.io.store import read_rows

        rows = self.rows() if rows is None else rows
        return read_rows(self.store_url, rows, names=names, storage_options=self.storage_options)


@dataclasses.dataclass
class FinishContext(_Writer):
    """The input of :meth:`MapReducePlugin.finish`: every key's result and the output path.

    ``folder`` is the job's ``output_path``.
    """

    results: list[dict]
    folder: str
    storage_options: dict | None


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """The config of a plugin that has no settings of its own."""


class MapReducePlugin:
    """Base class of daskavatar plugins; override :meth:`reduce` at least.

    Class attributes declare the plugin. ``name`` is the name jobs write in
    ``plugin_name``. ``config_class`` is a frozen dataclass whose fields, with defaults and
    docstrings, are the plugin's keys of the job ``config`` block. ``face_defaults`` sets
    other defaults for map-stage keys, such as a larger crop. ``features`` lists the
    ``features.zarr`` arrays the plugin reads, from :data:`FEATURES`; without ``crops``,
    the map stage writes no crops. ``outputs`` names the files of each key's folder.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = NoConfig
    face_defaults: ClassVar[dict[str, Any]] = {}
    features: ClassVar[tuple[str, ...]] = FEATURES
    outputs: ClassVar[tuple[str, ...]] = ()
    output_folder: ClassVar[str] = "results"
    """Folder under ``output_path`` with one subfolder per key."""

    def __init__(self, config=None, *, face=None):
        self.config = self.config_class() if config is None else config
        self.face = face
        """The job's map-stage settings, a :class:`~daskavatar.jobs.spec.FaceConfig`."""

    def prepare(self, client) -> None:
        """Run once on the client before the reduce stage; store shared state on ``self``."""

    def map(self, context: MapContext) -> None:
        """Emit records for the reduce stage; by default every face under its identity."""
        for face in context.faces:
            if face["identity"] is not None:
                context.emit(face["identity"], face)

    def reduce(self, context: ReduceContext) -> dict:
        """Make the outputs of one key and return its entry of the job report.

        Return ``{"status": "ok", ...}``, or ``"skipped"`` with a ``reason``. An exception
        marks this key ``failed`` in the report; the other keys go on.
        """
        raise NotImplementedError(f"plugin {self.name!r} does not define reduce()")

    def finish(self, context: FinishContext) -> dict:
        """Combine the results of every key, once, after the reduce stage; return a summary."""
        return {}
