"""Peak worker memory of a job with 12-megapixel photos and 200 images in one map partition.

Usage (from the repository root)::

    .venv/bin/python benchmarks/large_inputs.py

Makes the inputs in a temporary folder from ``../shared/data/faces_face_recognition``: four
photos enlarged to 4000x3000 (scaled to a height of 3000 pixels, aspect kept, on a grey
canvas) and 196 photos reduced to a longer side of 400 pixels, 200 images in all. Runs
``GAN_Dataset`` with 128 px crops and ``num_map_tasks = 1`` on 2 single-threaded workers of
512 MB, with ``max_decode_side`` from the command line (default 0: every JPEG decoded at full
size). Prints the idle worker RSS, the peak RSS of the map and reduce stages, and the number
of restarted workers. ``tests/jobs/test_large_inputs.py`` runs the same job with
``max_decode_side = 0``.
"""

import argparse
import os
import statistics
import tempfile

from distributed import Client
from PIL import Image

from daskavatar.cluster import start_local_cluster
from daskavatar.jobs.memory import rss_mib
from daskavatar.jobs.runner import run_job

SOURCE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                      "faces_face_recognition")
PHOTOS = [("biden", "biden.jpg"), ("biden", "biden2.jpg"), ("rose_leslie", "img1.jpg"),
          ("rose_leslie", "img2.jpg"), ("obama", "obama.jpg"), ("obama", "obama1.jpg"),
          ("kit_harington", "john1.jpeg"), ("alex_lacamoire", "img1.jpg")]
RESTART_MIB = 0.95 * 512e6 / 2 ** 20
PAUSE_MIB = 0.80 * 512e6 / 2 ** 20


def write_inputs(folder: str, *, count: int = 200, large: int = 4) -> None:
    """Write ``count`` JPEGs into per-person folders, the first ``large`` at 4000x3000."""
    for index in range(count):
        person, name = PHOTOS[index % len(PHOTOS)]
        os.makedirs(os.path.join(folder, person), exist_ok=True)
        with Image.open(os.path.join(SOURCE, person, name)) as photo:
            photo = photo.convert("RGB")
            if index < large:
                scaled = photo.resize((round(photo.width * 3000 / photo.height), 3000),
                                      Image.Resampling.LANCZOS)
                photo = Image.new("RGB", (4000, 3000), (128, 128, 128))
                photo.paste(scaled, ((4000 - scaled.width) // 2, 0))
            else:
                photo.thumbnail((400, 400))
            photo.save(os.path.join(folder, person, f"{index:03d}.jpg"), quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-decode-side", type=int, default=0,
                        help="the job's max_decode_side in pixels; 0 decodes at full size")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        write_inputs(os.path.join(folder, "input"))
        job = {"plugin_name": "GAN_Dataset", "config": {"output_resolution": "128",
                                                        "archive": "folder",
                                                        "max_decode_side": args.max_decode_side},
               "input_paths": [os.path.join(folder, "input")],
               "output_path": os.path.join(folder, "output"),
               "num_map_tasks": 1, "num_reduce_tasks": 2}
        with start_local_cluster(n_workers=2, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            idle = statistics.mean(client.run(rss_mib).values())
            report = run_job(job, client, progress=False)

    print("| stage | peak RSS (MiB) | over idle worker (MiB) | share of restart threshold |")
    print("|---|---:|---:|---:|")
    print(f"| idle worker | {idle:.1f} | 0.0 | {idle / RESTART_MIB:.0%} |")
    for stage in ("map", "reduce"):
        value = report.memory[f"{stage}_peak_rss_mib"]
        print(f"| {stage} stage | {value:.1f} | {value - idle:.1f} | {value / RESTART_MIB:.0%} |")
    print()
    print(f"{report.counts['images']} images, {report.counts['usable_faces']} usable; pause "
          f"threshold {PAUSE_MIB:.1f} MiB, restart threshold {RESTART_MIB:.1f} MiB; worker "
          f"restarts: {report.worker_restarts}; timings: {report.timings}")


if __name__ == "__main__":
    main()
