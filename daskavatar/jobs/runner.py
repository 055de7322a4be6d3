"""Running a job: discover, map, shuffle by key, reduce, finish, report.

The stages run on the client's cluster as Dask futures and collections; the project adds no
scheduling of its own. Each map task is one partition of consecutive image records: it
analyses its images (:mod:`daskavatar.faces.pipeline`), writes its own region of
``features.zarr``, lets the job's plugin emit keyed records and writes them to a records
file. A task-based ``dask.bag`` shuffle groups those records by key into
``num_reduce_tasks`` partitions, and one reduce task per key runs the plugin's reduce step,
so a key whose task keeps killing its worker fails alone. Each task is a Dask future with
``retries`` (``daskavatar.tasks.retries``). The client records every finished task in the
job manifest (:mod:`daskavatar.jobs.state`), so a job run again resumes. The plugin
interface is in :mod:`daskavatar.plugins.base` and the report in
:mod:`daskavatar.jobs.report`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import os
import threading
import time

import dask
import dask.bag as db
import fsspec
import numpy as np
from distributed import Client, as_completed, get_worker, progress as show_progress
from distributed.scheduler import KilledWorker

from daskavatar import config as _config
from daskavatar.cluster import connect
from daskavatar.exceptions import DaskAvatarError, InputNotFoundError, JobSpecError, \
    OutputPathError, StageError
from daskavatar.faces.models import release_models
from daskavatar.faces.pipeline import analyse_faces
from daskavatar.io.images import discover_images, read_image
from daskavatar.io.outputs import join, remove_temporary_files, safe_name, write_bytes, \
    write_json
from daskavatar.io.store import STATUS_OK, STATUS_REJECTED, create_feature_store, \
    feature_store_matches, write_crop, write_partition
from daskavatar.jobs.memory import PeakMemory, release_memory, rss_mib
from daskavatar.jobs.paused import PausedWorkerGuard
from daskavatar.jobs.report import JobReport
from daskavatar.jobs.spec import JobSpec
from daskavatar.jobs.state import DONE, FAILED, JobState, read_partition_records, \
    write_partition_records
from daskavatar.plugins.base import FinishContext, MapContext, ReduceContext

logger = logging.getLogger(__name__)


def run_job(spec, client: Client | None = None, *, progress: bool = True,
            storage_options=None, scheduler: str | None = None, n_workers: int | None = None,
            on_connect=None, overwrite: bool = False) -> JobReport:
    """Run a job and return its report; the report is also written to ``output_path/job.json``.

    ``spec`` is a :class:`JobSpec`, a job dict or the path of a job JSON file. Without a
    ``client``, the job connects to ``scheduler``, or starts an embedded LocalCluster of
    ``n_workers`` 512 MB workers that is closed afterwards. ``on_connect(client)`` is called
    once the client is ready (the CLI prints the dashboard link there). Invalid specs,
    missing inputs and unwritable output paths raise before any cluster starts. A plugin
    that is only installed on the cluster is looked up there, also before any compute.

    ``storage_options`` (fsspec options for every path) override, key by key, the job
    config's ``storage_options``, which override the Dask config ``daskavatar.storage-options``.
    A job run again with the same ``output_path`` resumes: it skips the map partitions and
    keys that ``output_path/manifest.json`` records as done. A changed spec raises
    :class:`~daskavatar.exceptions.JobStateError` unless ``overwrite`` is true, which
    removes the previous outputs and starts over. A job whose ``output_path`` another
    client may still be writing to raises ``JobStateError`` before any compute, also with
    ``overwrite``.
    """
    raw = JobSpec.read_file(spec) if isinstance(spec, str) else spec
    on_cluster = client is not None or scheduler is not None
    spec = _resolve_spec(raw, defer_unknown_plugin=on_cluster)
    if spec is not None:
        options = resolve_storage_options(spec, storage_options)
        images = _check_paths(spec, options)
        JobState.check(spec=spec, images=images, overwrite=overwrite, storage_options=options)

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
                options = resolve_storage_options(spec, storage_options)
                images = _check_paths(spec, options)
        state = JobState.open(spec=spec, images=images,
                              output_folders=[spec.plugin_class.output_folder],
                              overwrite=overwrite, storage_options=options)
        try:
            if on_connect is not None:
                on_connect(client)
            pause_timeout = float(_config.get("tasks.paused-worker-timeout") or 0)
            with PausedWorkerGuard(client, timeout=pause_timeout):
                report = _run(spec, images, state, client, progress=progress,
                              storage_options=options)
        except BaseException:
            state.finish(FAILED)
            raise
        state.finish(DONE)
        return report


def resolve_storage_options(spec: JobSpec, storage_options=None) -> dict | None:
    """Merge the Dask config's, the job config's and the caller's fsspec options, in order.

    Returns ``None`` when all three are empty, so local paths get no options.
    """
    merged = {**(_config.get("storage-options") or {}), **(spec.storage_options or {}),
              **(storage_options or {})}
    return merged or None


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
    try:
        images = discover_images(spec.input_paths, identities_csv=spec.face.identities_csv,
                                 storage_options=storage_options)
    except _storage_errors() as error:
        if isinstance(error, DaskAvatarError):
            raise
        raise InputNotFoundError(f"cannot list input_paths {list(spec.input_paths)!r}: "
                                 f"{error}; check the paths, and the endpoint and credentials "
                                 "in storage_options") from error
    _check_output_path(spec.output_path, storage_options)
    return images


def _storage_errors() -> tuple[type[Exception], ...]:
    """Return the exception types that a failed listing or write through fsspec raises.

    s3fs turns S3 error responses into ``OSError`` subclasses, but an endpoint that cannot
    be reached raises botocore's own ``BotoCoreError``.
    """
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:
        return (OSError, ValueError)
    return (OSError, ValueError, BotoCoreError)


def _run(spec: JobSpec, images, state: JobState, client: Client, *, progress: bool,
         storage_options) -> JobReport:
    timings = {}
    plugin = spec.make_plugin()
    worker_pids = client.run(os.getpid)

    # A worker that an earlier job left above Dask's pause threshold (80 %) would stay
    # paused with idle library pages and free heap it never returns, and this job would
    # wait for it forever. client.run reaches paused workers too.
    client.run(release_memory)
    retries = int(_config.get("tasks.retries", 0))
    logger.info("Job started: plugin %s, %d images, %d map tasks, %d reduce tasks; "
                "dashboard %s", spec.plugin_name, len(images), spec.num_map_tasks,
                spec.num_reduce_tasks, client.dashboard_link)

    started = time.perf_counter()
    store_url = join(spec.output_path, "features.zarr")
    try:
        faces, partitions = _map_stage(spec, images, state, client, plugin=plugin,
                                       store_url=store_url, retries=retries,
                                       progress=progress, storage_options=storage_options)
    except DaskAvatarError:
        raise
    except Exception as error:
        raise _stage_failed("map", error) from error
    # Clustering is deterministic in the face records, so a resumed job that reads some of
    # them from records files assigns the same identities.
    assigned = cluster_identities(faces, spec.face) if spec.face.identities == "cluster" \
        else None
    timings["map_seconds"] = round(time.perf_counter() - started, 2)
    logger.info("Map stage finished: %d of %d face records usable",
                sum(f["status"] == "ok" for f in faces), len(faces))

    # The shape predictor is not needed any more; its ~100 MB go back before the reduce step.
    client.run(release_models)

    started = time.perf_counter()
    plugin.prepare(client)
    timings["prepare_seconds"] = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    try:
        results = _reduce_stage(spec, state, client, plugin=plugin, partitions=partitions,
                                assigned=assigned, store_url=store_url, retries=retries,
                                progress=progress, storage_options=storage_options)
    except DaskAvatarError:
        raise
    except Exception as error:
        raise _stage_failed("reduce", error) from error
    timings["reduce_seconds"] = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    state.start_stage("finish")
    finish = client.submit(finish_job, plugin, results, output_path=spec.output_path,
                           storage_options=storage_options, pure=False, retries=retries)
    try:
        finished = finish.result()
    except Exception as error:
        raise StageError(f"the finish step of plugin {spec.plugin_name} failed: {error}") \
            from error
    state.finish_stage("finish")
    timings["finish_seconds"] = round(time.perf_counter() - started, 2)

    restarted = _count_restarts(worker_pids, client.run(os.getpid))
    report = JobReport.build(spec=spec, faces=faces, results=results, finished=finished,
                             timings=timings, worker_restarts=restarted)
    report.resume = {"manifest": state.url, "run": state.run_id, "resumed": state.resumed,
                     **state.data["stages"]["map"].get("counts", {}),
                     **state.data["stages"]["reduce"].get("counts", {})}
    write_json(join(spec.output_path, "job.json"), report.to_dict(),
               storage_options=storage_options)
    logger.info("Job finished: %d of %d keys done, outputs in %s", report.counts["results"],
                report.counts["identities"], spec.output_path)
    return report


def _map_stage(spec, images, state, client, *, plugin, store_url, retries, progress,
               storage_options):
    """Run one task per map partition that is not done yet; return every face record.

    Returns ``(faces, partitions)``: a face record per image, in row order, and the indices
    of the partitions whose records file exists. The images of a partition whose task
    failed for good (it raised through its retries, or its worker died more often than
    ``distributed.scheduler.allowed-failures``) get the status ``map_task_failed``.
    """
    partition_rows = math.ceil(len(images) / spec.num_map_tasks)
    partitions = [images[start:start + partition_rows]
                  for start in range(0, len(images), partition_rows)]
    # Each image owns max_faces_per_image consecutive rows (see map_partition).
    slots = spec.face.max_faces_per_image
    layout = {"num_rows": len(images) * slots, "resolution": spec.face.output_resolution,
              "partition_rows": partition_rows * slots}

    finished = state.finished_partitions(len(partitions)) if state.resumed else set()
    if finished and not feature_store_matches(store_url, **layout,
                                              storage_options=storage_options):
        logger.warning("features.zarr in %s is missing or has another layout; running all "
                       "%d map partitions again", spec.output_path, len(partitions))
        finished = set()
    if not finished:
        create_feature_store(store_url, **layout, storage_options=storage_options)
    elif len(finished) < len(partitions):
        logger.info("Resuming: %d of %d map partitions are done", len(finished),
                    len(partitions))

    state.start_stage("map")
    todo = [index for index in range(len(partitions)) if index not in finished]
    state.start_partitions({index: (partitions[index][0].row * slots,
                                    (partitions[index][-1].row + 1) * slots)
                            for index in todo})
    futures = {}
    for index in todo:
        future = client.submit(map_task, partitions[index], plugin=plugin, store_url=store_url,
                               config=spec.face, records_url=state.partition_url(index),
                               partition=index, run_id=state.run_id, storage_options=storage_options,
                               retries=retries, key=f"daskavatar-map-{state.run_id}-{index}")
        futures[future] = index
    bar = _start_progress(client, list(futures)) if progress and futures else None

    faces_by_partition = {}
    for index in finished:
        records = read_partition_records(state.partition_url(index),
                                         storage_options=storage_options)
        faces_by_partition[index] = [item[1] for item in records if _is_face(item)]
    failed = set()
    for future in as_completed(futures):
        index = futures[future]
        error = _task_error(future, task_name=f"map partition {index}")
        if error is None:
            faces_by_partition[index] = future.result()
            state.finish_partition(index)
        else:
            logger.error("Map partition %d (rows %d to %d) failed: %s", index,
                         partitions[index][0].row, partitions[index][-1].row, error)
            faces_by_partition[index] = [_failed_face(image, error, row=image.row * slots)
                                         for image in partitions[index]]
            state.finish_partition(index, error=error)
            failed.add(index)
        # Released at once: a finished task whose result is lost with its worker would
        # otherwise run again.
        future.release()
    _stop_progress(bar)

    # Map tasks whose worker died may have left Zarr's temporary chunk files; no map task
    # runs now.
    removed = remove_temporary_files(store_url, storage_options=storage_options)
    if removed:
        logger.warning("Removed %d temporary files that killed map tasks left in %s",
                       len(removed), store_url)

    state.record_task_starts("partitions", _task_starts(client, "daskavatar-map", "partition",
                                                       run_id=state.run_id))
    state.finish_stage("map", counts={"map_partitions": len(partitions),
                                      "skipped_map_partitions": len(finished),
                                      "failed_map_partitions": len(failed)})
    faces = [face for index in sorted(faces_by_partition) for face in faces_by_partition[index]]
    return faces, [index for index in range(len(partitions)) if index not in failed]


def _reduce_stage(spec, state, client, *, plugin, partitions, assigned, store_url, retries,
                  progress, storage_options) -> list[dict]:
    """Shuffle the emitted records by key, then run one reduce task per key not done yet.

    ``assigned`` is ``{row: identity}`` from clustering face descriptors, or ``None``; the
    emitted records of those rows move to their cluster's key (:func:`relabel_emitted`).

    The shuffle reads the partitions' records files, so a worker lost in this stage costs
    Dask a re-read of small files, never a re-run of the face analysis.
    """
    state.start_stage("reduce")
    if not partitions:
        state.finish_stage("reduce", counts={"skipped_keys": 0})
        return []

    loads = [dask.delayed(_read_emitted)(state.partition_url(index),
                                         storage_options=storage_options,
                                         dask_key_name=f"daskavatar-records-{state.run_id}-"
                                                       f"{index}")
             for index in partitions]
    emitted = db.from_delayed(loads)
    if assigned is not None:
        emitted = emitted.map(relabel_emitted, assigned=assigned)
    groups = emitted.groupby(_emitted_key, npartitions=spec.num_reduce_tasks, shuffle="tasks")
    group_futures = client.compute(groups.to_delayed())
    summaries = client.gather(client.map(_summarise_groups, group_futures, pure=False))

    keys = {key: (part, photos, usable) for part, summary in enumerate(summaries)
            for key, photos, usable in summary}
    done = state.finished_keys(sorted(keys)) if state.resumed else {}
    if done:
        logger.info("Resuming: %d of %d keys are done", len(done), len(keys))
    todo = [key for key in sorted(keys) if key not in done]
    state.start_keys(todo)

    # NOTE: each reduce task receives its whole shuffle partition and picks its key's
    # records, so a worker keeps the records of about 1/num_reduce_tasks of all keys. Jobs
    # with many photos need num_reduce_tasks large enough to keep that small.
    futures = {}
    for number, key in enumerate(todo):
        future = client.submit(reduce_key, group_futures[keys[key][0]], key, plugin=plugin,
                               store_url=store_url, output_path=spec.output_path,
                               run_id=state.run_id, storage_options=storage_options,
                               retries=retries, key=f"daskavatar-reduce-{state.run_id}-{number}")
        futures[future] = key
    bar = _start_progress(client, list(futures)) if progress and futures else None

    results = list(done.values())
    for future in as_completed(futures):
        key = futures[future]
        error = _task_error(future, task_name=f"the reduce task of key {key!r}")
        if error is None:
            entry = future.result()
        else:
            logger.error("The reduce task of key %r failed: %s", key, error)
            _, photos, usable = keys[key]
            entry = {"identity": key, "photos": photos, "usable_photos": usable,
                     "folder": join(spec.output_path, plugin.output_folder, safe_name(key)),
                     "status": "failed", "reason": type(future.exception()).__name__,
                     "message": error}
        state.finish_key(key, entry)
        results.append(entry)
        future.release()
    _stop_progress(bar)
    del group_futures

    state.record_task_starts("identities", _task_starts(client, "daskavatar-reduce", "key",
                                                        run_id=state.run_id))
    state.finish_stage("reduce", counts={"skipped_keys": len(done)})
    return results


def map_task(images, *, plugin, store_url, config, records_url, partition, run_id,
             storage_options=None) -> list[dict]:
    """Run :func:`map_partition`, then write its records file; return the face records.

    The records file is written last, so it exists only for a partition whose rows of
    ``features.zarr`` are complete. A re-run overwrites the same rows and the same file.
    """
    _log_event("daskavatar-map", {"run": run_id, "partition": partition, "event": "start"})
    records = map_partition(images, plugin=plugin, store_url=store_url, config=config,
                            storage_options=storage_options)
    write_partition_records(records_url, records, storage_options=storage_options)

    # A worker left above Dask's pause threshold by memory it no longer needs would not
    # start its next task.
    release_memory()
    return [item[1] for item in records if _is_face(item)]


def reduce_key(groups, key, *, plugin, store_url, output_path, run_id,
               storage_options=None) -> dict:
    """Run ``plugin.reduce`` for ``key``, one of the ``(key, emitted items)`` of ``groups``."""
    _log_event("daskavatar-reduce", {"run": run_id, "key": key, "event": "start"})
    items = next(items for group_key, items in groups if group_key == key)

    # Temporary files in the folder come from a task of this key killed mid-write, because
    # Dask runs one task per key at a time. A task of an interrupted run that is still
    # finishing would fail its rename, and its result is discarded anyway.
    folder = join(output_path, plugin.output_folder, safe_name(key))
    for path in remove_temporary_files(folder, storage_options=storage_options):
        logger.warning("Removed %s, left by a killed task of key %r", path, key)

    [entry] = reduce_partition([(key, items)], plugin=plugin, store_url=store_url,
                               output_path=output_path, storage_options=storage_options)
    return entry


def _stage_failed(stage: str, error: Exception) -> StageError:
    """Log the traceback of ``error`` (shown with ``-v``) and return the error to raise."""
    logger.info("The %s stage failed", stage, exc_info=True)
    return StageError(f"the {stage} stage failed: {type(error).__name__}: {error}; run with -v "
                      "for the traceback, and see the worker logs for errors raised in tasks")


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


def _read_emitted(url, *, storage_options=None) -> list[tuple]:
    return [item for item in read_partition_records(url, storage_options=storage_options)
            if _is_emitted(item)]


def _summarise_groups(groups) -> list[tuple[str, int, int]]:
    """Return ``(key, photos, usable photos)`` for every group of a reduce partition."""
    return [(key, len(items), sum(item[2].get("status") == "ok" for item in items))
            for key, items in groups]


def _task_error(future, *, task_name: str) -> str | None:
    """Return why ``future`` failed in a sentence for the report, or ``None`` if it did not."""
    if future.status != "error":
        return None
    error = future.exception()
    if isinstance(error, KilledWorker):
        return (f"the worker running {task_name} died more often than the scheduler's "
                "distributed.scheduler.allowed-failures, so Dask gave up on the task. A "
                "worker dies when it passes its memory limit or its process crashes; the "
                f"worker logs say which ({error})")
    return f"{task_name} failed: {type(error).__name__}: {error}"


def _failed_face(image, error: str, *, row: int) -> dict:
    """Return the face record of an image whose map task failed for good."""
    return {"image_id": image.image_id, "url": image.url, "identity": image.identity,
            "labelled": image.labelled, "row": row, "face_index": 0,
            "status": "map_task_failed", "message": error, "face_count": 0,
            "detection_score": None, "face_size": None, "sharpness": None,
            "decode_scale": None, "reprojection_error": None, "yaw": None, "pitch": None,
            "roll": None, "worker_peak_rss_mib": None}


def _log_event(topic: str, message: dict) -> None:
    """Record ``message`` in the scheduler's event log (``Client.get_events(topic)``)."""
    try:
        worker = get_worker()
    except ValueError:
        return
    worker.log_event(topic, message)


def _task_starts(client, topic: str, field: str, *, run_id: str) -> collections.Counter:
    """Count the task starts of this run per ``field`` value in the scheduler's events.

    A task that Dask ran again after its worker died has started more than once.
    """
    # NOTE: the scheduler keeps only the last distributed.admin.low-level-log-length events
    # of each topic (1,000 by default), so in a stage of more tasks the earliest go uncounted.
    return collections.Counter(
        message[field] for _, message in client.get_events(topic)
        if message.get("run") == run_id and message.get("event") == "start")


def _start_progress(client, futures):
    """Draw Dask's progress bar for ``futures`` in a thread while the client handles results.

    ``distributed.progress`` blocks until every future is done, and the manifest must be
    updated as each one finishes. The bar starts tracking only once every one of its keys
    exists on the scheduler, and the stage releases each future as it finishes. So this
    waits (at most 30 s) until the bar tracks the keys or has ended.
    """
    thread = threading.Thread(target=show_progress, args=(futures,), daemon=True,
                              name="daskavatar-progress")
    thread.start()

    key = futures[0].key

    def tracked(dask_scheduler=None) -> bool:
        # Defined here, so it is pickled by value for a scheduler without daskavatar.
        return any(key in (getattr(plugin, "all_keys", None) or ())
                   for plugin in dask_scheduler.plugins.values())

    deadline = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        if client.run_on_scheduler(tracked):
            break
        time.sleep(0.05)
    return thread


def _stop_progress(thread) -> None:
    if thread is not None:
        thread.join(timeout=5)


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
    except _storage_errors() as error:
        raise OutputPathError(f"cannot write to output_path {output_path!r}: {error}; choose a "
                              "writable folder or bucket") from error


def _count_restarts(before: dict, after: dict) -> int:
    """Count workers whose process changed or vanished between two ``client.run`` calls."""
    return sum(1 for address, pid in before.items() if after.get(address) != pid)


def _rounded(value: float, digits: int = 3):
    return None if value is None or not np.isfinite(value) else round(float(value), digits)
