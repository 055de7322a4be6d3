"""Running a job: discover, map, shuffle by identity, reduce, report.

The stages are Dask collections run on the client's cluster; the project adds no scheduling
of its own. Map tasks are partitions of a ``dask.bag`` of image records; each writes its own
region of ``features.zarr`` and returns small face records. Those are grouped by identity
with a task-based bag shuffle into ``num_reduce_tasks`` partitions; each reduce task fits the
avatars of its identities one after another. The per-image chain is in
:mod:`daskavatar.faces.pipeline`, the per-identity fit in :mod:`daskavatar.plugins.nerf_avatar`
and the report in :mod:`daskavatar.jobs.report`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import time

import dask.bag as db
import fsspec
import numpy as np
from distributed import Client, progress as show_progress

from daskavatar.cluster import connect
from daskavatar.exceptions import OutputPathError, StageError
from daskavatar.faces.models import release_models
from daskavatar.faces.pipeline import analyse_image
from daskavatar.io.images import discover_images
from daskavatar.io.outputs import join, write_bytes, write_json
from daskavatar.io.store import STATUS_OK, STATUS_REJECTED, create_feature_store, \
    write_crop, write_partition
from daskavatar.jobs.memory import PeakMemory
from daskavatar.jobs.report import JobReport
from daskavatar.jobs.spec import JobSpec
from daskavatar.plugins.nerf_avatar import build_avatar

logger = logging.getLogger(__name__)


def run_job(spec, client: Client | None = None, *, progress: bool = True,
            storage_options=None, scheduler: str | None = None, n_workers: int | None = None,
            on_connect=None) -> JobReport:
    """Run a job and return its report; the report is also written to ``output_path/job.json``.

    ``spec`` is a :class:`JobSpec`, a job dict or the path of a job JSON file. Without a
    ``client``, the job connects to ``scheduler``, or starts an embedded LocalCluster of
    ``n_workers`` 512 MB workers that is closed afterwards. ``on_connect(client)`` is called
    once the client is ready (the CLI prints the dashboard link there). Invalid specs,
    missing inputs and unwritable output paths raise before any cluster starts.
    """
    if isinstance(spec, str):
        spec = JobSpec.from_file(spec)
    elif isinstance(spec, dict):
        spec = JobSpec.from_dict(spec)

    images = discover_images(spec.input_paths, identities_csv=spec.config.identities_csv,
                             storage_options=storage_options)
    _check_output_path(spec.output_path, storage_options)

    if client is not None:
        context = contextlib.nullcontext(client)
    else:
        context = connect(scheduler, **({"n_workers": n_workers} if n_workers else {}))
    with context as client:
        if on_connect is not None:
            on_connect(client)
        return _run(spec, images, client, progress=progress, storage_options=storage_options)


def _run(spec: JobSpec, images, client: Client, *, progress: bool, storage_options) -> JobReport:
    config = spec.config
    timings = {}
    worker_pids = client.run(os.getpid)
    logger.info("Job started: %d images, %d map tasks, %d reduce tasks; dashboard %s",
                len(images), spec.num_map_tasks, spec.num_reduce_tasks, client.dashboard_link)

    started = time.perf_counter()
    store_url = join(spec.output_path, "features.zarr")
    partition_rows = math.ceil(len(images) / spec.num_map_tasks)
    create_feature_store(store_url, num_rows=len(images), resolution=config.output_resolution,
                         partition_rows=partition_rows, storage_options=storage_options)

    bag = db.from_sequence(images, partition_size=partition_rows)
    mapped = bag.map_partitions(map_partition, store_url=store_url, config=config,
                                storage_options=storage_options)
    mapped = client.persist(mapped)
    if progress:
        show_progress(mapped)
    faces = mapped.compute()
    timings["map_seconds"] = round(time.perf_counter() - started, 2)
    logger.info("Map stage finished: %d of %d images usable", sum(f["status"] == "ok"
                                                                    for f in faces), len(faces))

    # The shape predictor is not needed any more; its ~100 MB go back before the NeRF fits.
    client.run(release_models)

    started = time.perf_counter()
    from daskavatar.nerf.presets import PRESETS
    from daskavatar.nerf.programs import compile_programs
    compiled = compile_programs(PRESETS[config.preset])
    timings["compile_seconds"] = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    groups = mapped.groupby(lambda face: face["identity"], npartitions=spec.num_reduce_tasks,
                            shuffle="tasks")
    reduced = groups.map_partitions(reduce_partition, store_url=store_url,
                                    output_path=spec.output_path, config=config,
                                    compiled=compiled, storage_options=storage_options)
    reduced = client.persist(reduced)
    if progress:
        show_progress(reduced)
    try:
        avatars = reduced.compute()
    except Exception as error:
        raise StageError(f"the reduce stage failed: {error}") from error
    timings["reduce_seconds"] = round(time.perf_counter() - started, 2)

    restarted = _count_restarts(worker_pids, client.run(os.getpid))
    report = JobReport.build(spec=spec, faces=faces, avatars=avatars, timings=timings,
                             worker_restarts=restarted)
    write_json(join(spec.output_path, "job.json"), report.to_dict(),
               storage_options=storage_options)
    logger.info("Job finished: %d avatars written to %s", report.counts["avatars"],
                spec.output_path)
    return report


def map_partition(images, *, store_url, config, storage_options=None) -> list[dict]:
    """Analyse a partition's images and write their rows of ``features.zarr``.

    ``images`` are consecutive :class:`ImageRecord` rows starting at a chunk boundary.
    Returns one face record (a small dict) per image, usable or rejected.
    """
    images = list(images)
    if not images:
        return []
    count = len(images)
    meta = {"landmarks": np.zeros((count, 68, 2), np.float32),
            "c2w": np.zeros((count, 4, 4), np.float32),
            "intrinsics": np.zeros((count, 3, 3), np.float32),
            "reprojection_error": np.full(count, np.nan, np.float32),
            "status": np.full(count, STATUS_REJECTED, np.int8)}

    faces = []
    with PeakMemory() as peak:
        for index, image in enumerate(images):
            result = analyse_image(image.url, config, storage_options=storage_options)
            if result.status == "ok":
                write_crop(store_url, image.row, result.crop, storage_options=storage_options)
                meta["landmarks"][index] = result.landmarks
                meta["c2w"][index] = result.c2w
                meta["intrinsics"][index] = result.intrinsics
                meta["reprojection_error"][index] = result.reprojection_error
                meta["status"][index] = STATUS_OK
            else:
                logger.debug("Rejected %s: %s", image.url, result.message)
            faces.append({"image_id": image.image_id, "url": image.url, "identity": image.identity,
                          "row": image.row, "status": result.status, "message": result.message,
                          "face_count": result.face_count,
                          "detection_score": _rounded(result.detection_score),
                          "reprojection_error": _rounded(result.reprojection_error),
                          "yaw": _rounded(result.yaw), "pitch": _rounded(result.pitch),
                          "roll": _rounded(result.roll)})

        write_partition(store_url, images[0].row, meta, storage_options=storage_options)

    # One warning per partition, not per image, so a folder of broken files cannot flood
    # the worker logs. job.json lists every rejected image with its message.
    rejected = collections.Counter(f["status"] for f in faces if f["status"] != "ok")
    if rejected:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(rejected.items()))
        logger.warning("Rejected %d of %d images from row %d on (%s); job.json lists them",
                       sum(rejected.values()), len(faces), images[0].row, reasons)

    for face in faces:
        face["worker_peak_rss_mib"] = peak.mib
    return faces


def reduce_partition(groups, *, store_url, output_path, config, compiled,
                     storage_options=None) -> list[dict]:
    """Build the avatar of every ``(identity, face records)`` group of one partition."""
    return [build_avatar(identity, list(faces), store_url=store_url, output_path=output_path,
                         config=config, compiled=compiled, storage_options=storage_options)
            for identity, faces in groups]


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
