"""Running a job: discover, map, shuffle by key, reduce, finish, report.

The stages are Dask collections run on the client's cluster; the project adds no scheduling
of its own. Map tasks are partitions of a ``dask.bag`` of image records; each analyses its
images (:mod:`daskavatar.faces.pipeline`), writes its own region of ``features.zarr`` and
lets the job's plugin emit keyed records. Those are grouped by key with a task-based bag
shuffle into ``num_reduce_tasks`` partitions; each reduce task runs the plugin's reduce step
for its keys one after another. The plugin interface is in :mod:`daskavatar.plugins.base`
and the report in :mod:`daskavatar.jobs.report`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import os
import time

import dask.bag as db
import fsspec
import numpy as np
from distributed import Client, progress as show_progress

from daskavatar.cluster import connect
from daskavatar.exceptions import JobSpecError, OutputPathError, StageError
from daskavatar.faces.models import release_models
from daskavatar.faces.pipeline import analyse_faces
from daskavatar.io.images import discover_images, read_image
from daskavatar.io.outputs import join, safe_name, write_bytes, write_json
from daskavatar.io.store import STATUS_OK, STATUS_REJECTED, create_feature_store, \
    write_crop, write_partition
from daskavatar.jobs.memory import PeakMemory, release_memory, rss_mib
from daskavatar.jobs.report import JobReport
from daskavatar.jobs.spec import JobSpec
from daskavatar.plugins.base import FinishContext, MapContext, ReduceContext

logger = logging.getLogger(__name__)


def run_job(spec, client: Client | None = None, *, progress: bool = True,
            storage_options=None, scheduler: str | None = None, n_workers: int | None = None,
            on_connect=None) -> JobReport:
    """Run a job and return its report; the report is also written to ``output_path/job.json``.

    ``spec`` is a :class:`JobSpec`, a job dict or the path of a job JSON file. Without a
    ``client``, the job connects to ``scheduler``, or starts an embedded LocalCluster of
    ``n_workers`` 512 MB workers that is closed afterwards. ``on_connect(client)`` is called
    once the client is ready (the CLI prints the dashboard link there). Invalid specs,
    missing inputs and unwritable output paths raise before any cluster starts. A plugin
    that is only installed on the cluster is looked up there, also before any compute.
    """
    raw = JobSpec.read_file(spec) if isinstance(spec, str) else spec
    on_cluster = client is not None or scheduler is not None
    spec = _resolve_spec(raw, defer_unknown_plugin=on_cluster)
    if spec is not None:
        images = _check_paths(spec, storage_options)

    if client is not None:
        context = contextlib.nullcontext(client)
    else:
        context = connect(scheduler, **({"n_workers": n_workers} if n_workers else {}))
    with context as client:
        # Plugins installed on a running cluster may be missing here, or newer than the
        # copy this process imported; the cluster's version decides.
        if on_cluster and not isinstance(raw, JobSpec):
            from daskavatar.plugins.install import sync_cluster_plugins
            if sync_cluster_plugins(client) or spec is None:
                spec = _resolve_spec(raw, defer_unknown_plugin=False)
                images = _check_paths(spec, storage_options)
        if on_connect is not None:
            on_connect(client)
        return _run(spec, images, client, progress=progress, storage_options=storage_options)


def _resolve_spec(raw, *, defer_unknown_plugin: bool) -> JobSpec | None:
    """Validate ``raw`` into a :class:`JobSpec`.

    With ``defer_unknown_plugin``, an unknown plugin returns ``None``, so that the caller
    can look for it on the cluster once connected.
    """
    if isinstance(raw, JobSpec):
        return raw
    try:
        return JobSpec.from_dict(raw)
    except JobSpecError as error:
        if defer_unknown_plugin and str(error).startswith("unknown plugin_name"):
            return None
        raise


def _check_paths(spec: JobSpec, storage_options) -> list:
    """List the job's images and probe its output path; raise before any compute."""
    images = discover_images(spec.input_paths, identities_csv=spec.face.identities_csv,
                             storage_options=storage_options)
    _check_output_path(spec.output_path, storage_options)
    return images


def _run(spec: JobSpec, images, client: Client, *, progress: bool, storage_options) -> JobReport:
    timings = {}
    plugin = spec.make_plugin()
    worker_pids = client.run(os.getpid)
    logger.info("Job started: plugin %s, %d images, %d map tasks, %d reduce tasks; "
                "dashboard %s", spec.plugin_name, len(images), spec.num_map_tasks,
                spec.num_reduce_tasks, client.dashboard_link)

    started = time.perf_counter()
    store_url = join(spec.output_path, "features.zarr")
    partition_rows = math.ceil(len(images) / spec.num_map_tasks)
    # Each image owns max_faces_per_image consecutive rows (see map_partition).
    slots = spec.face.max_faces_per_image
    create_feature_store(store_url, num_rows=len(images) * slots,
                         resolution=spec.face.output_resolution,
                         partition_rows=partition_rows * slots, storage_options=storage_options)

    bag = db.from_sequence(images, partition_size=partition_rows)
    mapped = bag.map_partitions(map_partition, plugin=plugin, store_url=store_url,
                                config=spec.face, storage_options=storage_options)
    mapped = client.persist(mapped)
    if progress:
        show_progress(mapped)
    try:
        faces = [item[1] for item in mapped.filter(_is_face).compute()]
    except Exception as error:
        raise StageError(f"the map stage failed: {type(error).__name__}: {error}; the "
                         "scheduler and worker logs give the cause") from error
    if spec.face.identities == "cluster":
        assigned = cluster_identities(faces, spec.face)
        mapped = mapped.map(relabel_emitted, assigned=assigned)
    timings["map_seconds"] = round(time.perf_counter() - started, 2)
    logger.info("Map stage finished: %d of %d face records usable",
                sum(f["status"] == "ok" for f in faces), len(faces))

    # The shape predictor is not needed any more; its ~100 MB go back before the reduce step.
    client.run(release_models)

    started = time.perf_counter()
    plugin.prepare(client)
    timings["prepare_seconds"] = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    groups = mapped.filter(_is_emitted).groupby(_emitted_key, npartitions=spec.num_reduce_tasks,
                                                shuffle="tasks")
    reduced = groups.map_partitions(reduce_partition, plugin=plugin, store_url=store_url,
                                    output_path=spec.output_path,
                                    storage_options=storage_options)
    reduced = client.persist(reduced)
    if progress:
        show_progress(reduced)
    try:
        results = reduced.compute()
    except Exception as error:
        raise StageError(f"the reduce stage failed: {type(error).__name__}: {error}; the "
                         "scheduler and worker logs give the cause") from error
    timings["reduce_seconds"] = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    finish = client.submit(finish_job, plugin, results, output_path=spec.output_path,
                           storage_options=storage_options, pure=False)
    try:
        finished = finish.result()
    except Exception as error:
        raise StageError(f"the finish step of plugin {spec.plugin_name} failed: {error}") \
            from error
    timings["finish_seconds"] = round(time.perf_counter() - started, 2)

    restarted = _count_restarts(worker_pids, client.run(os.getpid))
    report = JobReport.build(spec=spec, faces=faces, results=results, finished=finished,
                             timings=timings, worker_restarts=restarted)
    write_json(join(spec.output_path, "job.json"), report.to_dict(),
               storage_options=storage_options)
    logger.info("Job finished: %d of %d keys done, outputs in %s", report.counts["results"],
                report.counts["identities"], spec.output_path)
    return report


def map_partition(images, *, plugin, store_url, config, storage_options=None) -> list[tuple]:
    """Analyse a partition's images, write their rows of ``features.zarr``, run ``plugin.map``.

    ``images`` are consecutive :class:`ImageRecord` rows starting at a chunk boundary.
    With ``config.max_faces_per_image`` = k, image ``row`` owns store rows ``row * k`` to
    ``row * k + k - 1``, one per analysed face, main face first. Returns ``("face", record)``
    for every face record, usable or rejected, and ``("emit", key, record)`` for every
    record the plugin emitted.
    """
    images = list(images)
    if not images:
        return []
    slots = config.max_faces_per_image
    count = len(images) * slots
    meta = {"landmarks": np.zeros((count, 68, 2), np.float32),
            "c2w": np.zeros((count, 4, 4), np.float32),
            "intrinsics": np.zeros((count, 3, 3), np.float32),
            "reprojection_error": np.full(count, np.nan, np.float32),
            "status": np.full(count, STATUS_REJECTED, np.int8)}
    keep_crops = "crops" in plugin.features

    with_descriptor = config.identities == "cluster"

    faces = []
    with PeakMemory() as peak:
        for index, image in enumerate(images):
            results = analyse_faces(image.url, config, storage_options=storage_options,
                                    with_descriptor=with_descriptor, max_faces=slots)
            for face_index, result in enumerate(results):
                position, row = index * slots + face_index, image.row * slots + face_index
                if result.status == "ok":
                    if keep_crops:
                        write_crop(store_url, row, result.crop, storage_options=storage_options)
                    meta["landmarks"][position] = result.landmarks
                    meta["c2w"][position] = result.c2w
                    meta["intrinsics"][position] = result.intrinsics
                    meta["reprojection_error"][position] = result.reprojection_error
                    meta["status"][position] = STATUS_OK
                else:
                    logger.debug("Rejected %s: %s", image.url, result.message)
                faces.append(_face_record(image, result, row=row, face_index=face_index))

        write_partition(store_url, images[0].row * slots, meta, storage_options=storage_options)

        context = MapContext(images=images, faces=faces, store_url=store_url,
                             rows=(images[0].row * slots, (images[-1].row + 1) * slots),
                             storage_options=storage_options,
                             _decode=functools.partial(_decode, config=config,
                                                       storage_options=storage_options))
        plugin.map(context)

    # One warning per partition, not per image, so a folder of broken files cannot flood
    # the worker logs. job.json lists every rejected image with its message.
    rejected = collections.Counter(f["status"] for f in faces if f["status"] != "ok")
    if rejected:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(rejected.items()))
        logger.warning("Rejected %d of %d face records from image row %d on (%s); job.json "
                       "lists them",
                       sum(rejected.values()), len(faces), images[0].row, reasons)

    for face in faces:
        face["worker_peak_rss_mib"] = peak.mib
    return [("face", face) for face in faces] + \
        [("emit", key, record) for key, record in context._emitted]


def _face_record(image, result, *, row: int, face_index: int) -> dict:
    """Return the small, picklable record of one face's outcome for the job report.

    The main face keeps the image's ``image_id``; a further face ``k`` (from 1) gets
    ``<image_id>#k`` so that every record's ``image_id`` stays unique.
    """
    image_id = image.image_id if face_index == 0 else f"{image.image_id}#{face_index}"
    record = {"image_id": image_id, "url": image.url, "identity": image.identity,
              "labelled": image.labelled, "row": row, "face_index": face_index,
              "status": result.status,
              "message": result.message, "face_count": result.face_count,
              "detection_score": _rounded(result.detection_score),
              "face_size": _rounded(result.face_size, 1),
              "sharpness": _rounded(result.sharpness, 1),
              "decode_scale": result.decode_scale,
              "reprojection_error": _rounded(result.reprojection_error),
              "yaw": _rounded(result.yaw), "pitch": _rounded(result.pitch),
              "roll": _rounded(result.roll)}
    if result.descriptor is not None:
        record["descriptor"] = result.descriptor.round(5).tolist()
    return record


def cluster_identities(faces: list[dict], config) -> dict:
    """Return ``{row: identity}`` that replaces the identities of unlabelled usable faces.

    Runs on the client between the map stage and the shuffle when ``config.identities`` is
    ``cluster``; see
    :func:`daskavatar.faces.descriptors.assign_identities` for the rule. Descriptors are
    dropped from ``faces`` afterwards, so they do not travel on into the report.
    """
    from daskavatar.faces.descriptors import assign_identities

    assigned = assign_identities([f for f in faces if f["status"] == "ok"],
                                 threshold=config.cluster_threshold)
    for face in faces:
        face.pop("descriptor", None)
        if face["row"] in assigned:
            face["identity"] = assigned[face["row"]]
    return assigned


def relabel_emitted(item, *, assigned: dict):
    """Move an emitted record of a clustered face to its cluster's key.

    A record is moved when it has the ``row`` of a clustered face and was emitted under that
    face's original identity, which is what the default :meth:`MapReducePlugin.map` does.
    Records a plugin emitted under keys of its own keep their key. Descriptors are dropped
    from every emitted record.
    """
    if item[0] != "emit":
        return item
    _, key, record = item
    if not isinstance(record, dict):
        return item
    record = {k: v for k, v in record.items() if k != "descriptor"}
    row = record.get("row")
    if row not in assigned or record.get("identity") != key:
        return ("emit", key, record)
    record["identity"] = assigned[row]
    return ("emit", assigned[row], record)


def reduce_partition(groups, *, plugin, store_url, output_path,
                     storage_options=None) -> list[dict]:
    """Run ``plugin.reduce`` for every ``(key, emitted items)`` group of one partition.

    A key whose reduce step raises is reported as ``failed`` with the error; the other keys
    of the partition go on.
    """
    results = []
    for key, items in groups:
        records = [item[2] for item in items]
        folder = join(output_path, plugin.output_folder, safe_name(key))
        context = ReduceContext(key=key, records=records, folder=folder, store_url=store_url,
                                storage_options=storage_options)
        entry = {"identity": key, "photos": len(records),
                 "usable_photos": sum(r.get("status") == "ok" for r in records),
                 "folder": folder}
        try:
            with PeakMemory() as peak:
                entry.update(plugin.reduce(context) or {})
        except Exception as error:
            logger.exception("Plugin %s failed on key %r", plugin.name, key)
            entry.update(status="failed", reason=type(error).__name__, message=str(error))
        else:
            entry.setdefault("status", "ok")
            entry.setdefault("worker_peak_rss_mib", peak.mib)
        finally:
            release_memory()
        results.append(entry)
    return results


def finish_job(plugin, results, *, output_path, storage_options=None) -> dict:
    """Run ``plugin.finish`` over every key's result; runs as one task on a worker."""
    context = FinishContext(results=sorted(results, key=lambda r: r["identity"]),
                            folder=output_path, storage_options=storage_options)
    with PeakMemory() as peak:
        summary = plugin.finish(context) or {}
    summary.setdefault("worker_peak_rss_mib", peak.mib)
    summary.setdefault("worker_rss_after_mib", rss_mib())
    return summary


def _decode(image, *, config, storage_options) -> np.ndarray:
    return read_image(image.url, max_pixels=config.max_image_pixels,
                      max_side=config.max_decode_side or None, storage_options=storage_options)


def _is_face(item) -> bool:
    return item[0] == "face"


def _is_emitted(item) -> bool:
    return item[0] == "emit"


def _emitted_key(item) -> str:
    return item[1]


def _check_output_path(output_path: str, storage_options) -> None:
    """Write and delete a probe file in ``output_path``; raise :class:`OutputPathError`."""
    probe = join(output_path, ".daskavatar-write-test")
    try:
        write_bytes(probe, b"", storage_options=storage_options)
        fs, path = fsspec.core.url_to_fs(probe, **(storage_options or {}))
        fs.rm(path)
    except (OSError, ValueError) as error:
        raise OutputPathError(f"cannot write to output_path {output_path!r}: {error}; choose a "
                              "writable folder or bucket") from error


def _count_restarts(before: dict, after: dict) -> int:
    """Count workers whose process changed or vanished between two ``client.run`` calls."""
    return sum(1 for address, pid in before.items() if after.get(address) != pid)


def _rounded(value: float, digits: int = 3):
    return None if value is None or not np.isfinite(value) else round(float(value), digits)
