"""Peak worker memory of each job stage on a LocalCluster of 512 MB workers.

Usage (from the repository root)::

    .venv/bin/python benchmarks/stage_memory.py benchmarks/jobs/face_recognition.json

Runs the job on 2 single-threaded workers with ``memory_limit="512MB"``. The baseline is the
idle worker RSS measured before the job. The script prints as Markdown the peak RSS of each
stage and its excess over the baseline, then the job's timings and the number of restarted
workers. The per-task peaks come from a thread that samples the worker's RSS every 10 ms
(:class:`daskavatar.jobs.memory.PeakMemory`).
"""

import argparse
import os
import platform
import statistics

from distributed import Client

from daskavatar.cluster import start_local_cluster
from daskavatar.jobs.memory import rss_mib
from daskavatar.jobs.runner import run_job
from daskavatar.jobs.spec import JobSpec

RESTART_MIB = 0.95 * 512e6 / 2 ** 20
PAUSE_MIB = 0.80 * 512e6 / 2 ** 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", help="job JSON file")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    spec = JobSpec.from_file(args.job)
    with start_local_cluster(n_workers=args.workers, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        idle = client.run(rss_mib)
        report = run_job(spec, client, progress=False)

    baseline = statistics.mean(idle.values())
    fitted = [a for a in report.results if a["status"] == "ok"]
    rows = [("idle worker (baseline)", baseline),
            ("map stage, max over tasks", report.memory["map_peak_rss_mib"]),
            ("reduce stage, max over identities", report.memory["reduce_peak_rss_mib"])]

    print(f"job: {args.job}; preset {spec.plugin_config.preset}, {spec.plugin_config.max_iterations} "
          f"iterations, {spec.face.output_resolution} px crops")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.workers} workers of 512 MB, 1 thread each")
    print()
    print("| stage | peak RSS (MiB) | over baseline (MiB) | share of restart threshold |")
    print("|---|---:|---:|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.1f} | {value - baseline:.1f} | {value / RESTART_MIB:.0%} |")
    print()
    print(f"pause threshold {PAUSE_MIB:.1f} MiB, restart threshold {RESTART_MIB:.1f} MiB; "
          f"worker restarts: {report.worker_restarts}")
    print(f"timings: {report.timings}")
    print(f"avatars: {report.counts['results']} of {report.counts['identities']} identities; "
          f"mean fit {statistics.mean(a['fit_seconds'] for a in fitted):.1f} s, "
          f"mean training PSNR {statistics.mean(a['train_psnr'] for a in fitted):.2f} dB")


if __name__ == "__main__":
    main()
