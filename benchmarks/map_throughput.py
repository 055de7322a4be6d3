"""Map-stage throughput of one single-threaded 512 MB worker on 1024x1024 JPEGs.

Usage (from the repository root)::

    .venv/bin/python benchmarks/map_throughput.py [--rounds 2] [--partition-size 7] \
        [--photos FOLDER]

``--photos`` defaults to ``../shared/data/faces_deepface/images``.

The photos are cropped to a centred square, resized to 1024x1024 and written as JPEGs
(quality 90) into a temporary folder. One LocalCluster worker (1 thread, ``memory_limit``
512 MB) then times, in one task, per map partition and alternating in every round:

- the baseline: JPEG decoding plus the face detector alone, with the job's settings;
- the map stage: :func:`daskavatar.jobs.runner.map_partition` over the same images, which
  decodes, detects, predicts landmarks, runs the quality checks, estimates the pose, crops
  and writes ``features.zarr``.

Their ratio is robust to other load on the machine because both run on the same images in
the same process, and the ratio of CPU times more so. The script prints faces per hour, the
ratio and the worker's peak RSS.
"""

import argparse
import glob
import os
import platform
import tempfile
import time

from distributed import Client
from PIL import Image

from daskavatar.cluster import start_local_cluster
from daskavatar.io.images import discover_images
from daskavatar.jobs.spec import FaceConfig

DEFAULT_PHOTOS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                              "faces_deepface", "images")


def write_square_jpegs(sources: list[str], folder: str, side: int = 1024) -> list[str]:
    """Write each source photo as a centred ``side`` x ``side`` JPEG; return the paths."""
    paths = []
    for index, source in enumerate(sources):
        with Image.open(source) as image:
            image = image.convert("RGB")
            width, height = image.size
            crop = min(width, height)
            left, top = (width - crop) // 2, (height - crop) // 2
            square = image.crop((left, top, left + crop, top + crop)).resize(
                (side, side), Image.Resampling.LANCZOS)
        path = os.path.join(folder, f"photo_{index:03d}.jpg")
        square.save(path, quality=90)
        paths.append(path)
    return paths


def time_partitions(images, config_values: dict, store_url: str, rounds: int,
                    partition_size: int) -> dict:
    """Run in the worker: time the baseline and the map stage on every partition, in pairs.

    The images are split into map partitions of ``partition_size``. For each partition the
    two passes run back to back, in alternating order, so a change of load on the machine
    hits both alike. Each pass records its wall time and the CPU time of the worker process
    (``time.process_time``, all its threads, so Zarr's I/O thread counts too), which other
    processes on the machine do not add to.
    """
    from daskavatar.faces.detect import detect_main_face
    from daskavatar.io.decode import ImageRejected, decode_image
    from daskavatar.io.store import create_feature_store
    from daskavatar.jobs.memory import PeakMemory
    from daskavatar.jobs.runner import map_partition
    from daskavatar.jobs.spec import FaceConfig
    from daskavatar.plugins.base import MapReducePlugin

    config = FaceConfig.from_dict(config_values)
    create_feature_store(store_url, num_rows=len(images), resolution=config.output_resolution,
                         partition_rows=partition_size)
    plugin = MapReducePlugin()
    partitions = [images[start:start + partition_size]
                  for start in range(0, len(images), partition_size)]

    def baseline(partition):
        for image in partition:
            try:
                decoded = decode_image(image.url, max_pixels=config.max_image_pixels,
                                       max_side=config.max_decode_side or None)
            except ImageRejected:
                continue
            detect_main_face(decoded.pixels, min_score=config.min_detection_score,
                             min_face_size=max(config.min_face_size * decoded.scale, 1.0),
                             coarse_side=config.detector_coarse_side,
                             max_pixels=config.detector_max_pixels,
                             count_all=config.count_all_faces,
                             cnn_side=config.cnn_detector_side)

    def full(partition):
        return map_partition(partition, plugin=plugin, store_url=store_url, config=config)

    # One untimed pass of each loads the models and warms the caches.
    baseline(partitions[0])
    full(partitions[0])

    wall = {"baseline": 0.0, "map_stage": 0.0}
    cpu = {"baseline": 0.0, "map_stage": 0.0}
    statuses = []
    with PeakMemory() as peak:
        for round_index in range(rounds):
            for index, partition in enumerate(partitions):
                passes = [("baseline", baseline), ("map_stage", full)]
                if (index + round_index) % 2:
                    passes.reverse()
                for name, run in passes:
                    started, started_cpu = time.perf_counter(), time.process_time()
                    output = run(partition)
                    wall[name] += time.perf_counter() - started
                    cpu[name] += time.process_time() - started_cpu
                    if name == "map_stage" and round_index == 0:
                        statuses += [item[1]["status"] for item in output if item[0] == "face"]
    return {"wall": wall, "cpu": cpu, "usable": statuses.count("ok"),
            "statuses": sorted(set(statuses)), "peak_rss_mib": peak.mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=DEFAULT_PHOTOS, help="folder of source photos")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partition-size", type=int, default=7,
                        help="images per map partition")
    args = parser.parse_args()

    sources = sorted(glob.glob(os.path.join(args.photos, "*.jpg")))
    with tempfile.TemporaryDirectory() as folder:
        write_square_jpegs(sources, folder)
        images = discover_images([os.path.join(folder, "*.jpg")])
        config_values = {}
        with start_local_cluster(n_workers=1, threads_per_worker=1, memory_limit="512MB",
                                 dashboard_address=":0") as cluster, Client(cluster) as client:
            result = client.submit(time_partitions, images, config_values,
                                   os.path.join(folder, "features.zarr"), args.rounds,
                                   args.partition_size, pure=False).result()

    count = len(images) * args.rounds
    usable_share = result["usable"] / len(images)
    config = FaceConfig.from_dict({})
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{len(images)} JPEGs of 1024x1024 from {os.path.normpath(args.photos)}; "
          f"{result['usable']} usable faces; outcomes {result['statuses']}; detector coarse "
          f"side {config.detector_coarse_side}, min_face_size {config.min_face_size}, "
          f"{args.rounds} rounds, partitions of {args.partition_size} images")
    print()
    print("| pass | wall s per image | CPU s per image | images per hour (CPU) |")
    print("|---|---:|---:|---:|")
    for name, label in (("baseline", "JPEG decoding + detector"),
                        ("map_stage", "map stage (map_partition)")):
        print(f"| {label} | {result['wall'][name] / count:.4f} | "
              f"{result['cpu'][name] / count:.4f} | {3600 * count / result['cpu'][name]:,.0f} |")
    print()
    for clock in ("cpu", "wall"):
        full, baseline = result[clock]["map_stage"], result[clock]["baseline"]
        print(f"{clock}: usable faces per hour {3600 * count * usable_share / full:,.0f}; "
              f"ratio map stage / (decoding + detector) {full / baseline:.3f}")
    print(f"worker peak RSS {result['peak_rss_mib']:.1f} MiB")


if __name__ == "__main__":
    main()
