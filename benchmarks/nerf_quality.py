"""Held-out quality, speed, memory and mesh accuracy of a NeRF preset on scenes with ground truth.

Usage (from the repository root)::

    .venv/bin/python benchmarks/nerf_quality.py head --preset fast --iterations 600 --every 100
    .venv/bin/python benchmarks/nerf_quality.py lego --preset fast --iterations 1000 --every 250

Scenes, from ``../shared/data`` beside the checkout:

- ``head``: ``head_scan_lee_perry_smith/renders_200px``, 60 training views, evaluated on the
  test split (20 views), and the mesh compared with the scan ``LeePerrySmith.glb``.
- ``lego``: ``nerf_lego/lego_100px`` (100 x 100, the tiny-NeRF setting), every 10th view held
  out and the other 90 used for training.

The fit runs as one task on an embedded LocalCluster with one single-threaded worker of
512 MB, with the same environment as the job's workers, after the client compiled the
preset's programs. Every ``--every`` steps the task renders ``--curve-views`` held-out views,
which gives the curve of quality against time; the rendering is not counted as training
time. The worker's CPU time is recorded beside wall time, because other processes on a
shared machine lengthen wall time. At the end it renders ``--test-views`` held-out views for
the final PSNR and SSIM. The script prints Markdown and writes everything as JSON to
``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
HEAD = os.path.join(DATA, "head_scan_lee_perry_smith")
LEGO = os.path.join(DATA, "nerf_lego", "lego_100px")

# World scale of each scene, so that it fits the NeRF's bounding sphere of radius 1.2:
# the head scan's shoulders reach 1.55 units from the origin, lego's corners about 1.7.
SCENE_SCALE = {"head": 0.75, "lego": 0.68}
CHAMFER_POINTS = 200_000
"""Points sampled on each surface for the Chamfer distance. With 50,000, the spacing of the
samples alone added about 0.06 points of the diagonal to the head's Chamfer distance."""
SEEN_TOLERANCE = 0.005
"""Distance from the surface a view shows, as a fraction of the scan's diagonal, within
which a point counts as seen (``seen_region``)."""


def load_scene(scene: str):
    """Return ``(train, test)`` views of ``scene``."""
    from daskavatar.nerf.scenes import load_blender_views

    scale = SCENE_SCALE[scene]
    if scene == "head":
        folder = os.path.join(HEAD, "renders_200px")
        # The head renders put the ray of pixel column i through i, not i + 0.5.
        return (load_blender_views(folder, "train", scale=scale, pixel_offset=0.5),
                load_blender_views(folder, "test", scale=scale, pixel_offset=0.5))
    held_out = list(range(9, 100, 10))
    train = [i for i in range(100) if i not in held_out]
    return (load_blender_views(LEGO, "train", scale=scale, indices=train),
            load_blender_views(LEGO, "train", scale=scale, indices=held_out))


def run_fit(scene: str, compiled: dict, *, iterations: int, every: int, curve_views: int,
            test_views: int, mesh_resolution: int, seed: int) -> dict:
    """Fit, record the curve, evaluate and mesh; the worker task. Returns a JSON-ready dict."""
    import trimesh

    from daskavatar.jobs.memory import PeakMemory, release_memory, rss_mib
    from daskavatar.nerf.losses import chamfer_distance
    from daskavatar.nerf.mesh import extract_mesh
    from daskavatar.nerf.scenes import load_head_scan
    from daskavatar.nerf.programs import load_programs
    from daskavatar.nerf.train import evaluate_views, fit_nerf

    train, test = load_scene(scene)
    curve_set = test.subset(np.linspace(0, len(test) - 1, curve_views).round().astype(int))
    final_set = test.subset(np.linspace(0, len(test) - 1, test_views).round().astype(int))
    result = {"rss_before_mib": rss_mib(), "curve": []}

    with PeakMemory() as peak:
        programs = load_programs(compiled, compiled["preset"])
        release_memory()
        result["rss_programs_loaded_mib"] = rss_mib()

        # The worker's CPU time is recorded beside wall time, because on a shared machine
        # wall time also counts the time other processes held the core.
        cpu = {"start": time.process_time(), "excluded": 0.0}

        def record(step, params, occupancy, seconds):
            paused = time.process_time()
            metrics = evaluate_views(programs, params, curve_set, occupancy=occupancy)
            result["curve"].append({"step": step, "seconds": round(seconds, 2),
                                    "cpu_seconds": round(paused - cpu["start"]
                                                         - cpu["excluded"], 2),
                                    "psnr": round(metrics["psnr"], 3),
                                    "ssim": round(metrics["ssim"], 4)})
            cpu["excluded"] += time.process_time() - paused

        with PeakMemory() as fit_peak:
            fit = fit_nerf(train, programs, max_iterations=iterations, seed=seed,
                           callback=record, callback_every=every)
        result["fit_peak_rss_mib"] = round(fit_peak.mib, 1)
        result["fit_cpu_seconds"] = round(time.process_time() - cpu["start"] - cpu["excluded"], 2)
        result["fit_seconds"] = round(fit.seconds, 2)
        result["train_psnr"] = round(fit.train_psnr, 3)

        started = time.perf_counter()
        metrics = evaluate_views(programs, fit.params, final_set, occupancy=fit.occupancy)
        result["render_seconds_per_view"] = round((time.perf_counter() - started)
                                                  / len(final_set), 3)
        result.update(test_psnr=round(metrics["psnr"], 3), test_ssim=round(metrics["ssim"], 4),
                      test_views=len(final_set), psnr_per_view=metrics["psnr_per_view"])

        if scene == "head":
            viewpoint = train.c2w[:, :3, 3].mean(axis=0)
            vertices, faces, _, level = extract_mesh(
                programs, fit.params, resolution=mesh_resolution, viewpoint=viewpoint,
                occupancy=fit.occupancy)
            truth = load_head_scan(HEAD, scale=SCENE_SCALE["head"])
            fitted = trimesh.Trimesh(vertices, faces, process=False)
            result["mesh"] = {"faces": int(len(faces)), "level": level,
                              **chamfer_distance(fitted, truth, num_points=CHAMFER_POINTS,
                                                 seed=seed)}
            result["mesh"]["seen"] = seen_chamfer(fitted, truth, train, seed=seed)
    result["peak_rss_mib"] = round(peak.mib, 1)
    return result


def seen_chamfer(fitted, truth, train, *, seed: int) -> dict:
    """Chamfer distance restricted to what the training cameras saw of the head.

    The cameras circle only the front half of the head, so the back of the fitted head is
    a guess the images cannot check. Completeness averages over the true surface that some
    training view shows, and accuracy over the fitted surface that lies in front of or on
    what some view shows (:func:`daskavatar.nerf.losses.seen_region`, from the true depth
    maps of the renders).
    """
    from daskavatar.nerf.losses import seen_chamfer_distance
    from daskavatar.nerf.scenes import load_blender_depths

    depths = load_blender_depths(os.path.join(HEAD, "renders_200px"), "train",
                                 scale=SCENE_SCALE["head"])
    tolerance = SEEN_TOLERANCE * float(np.linalg.norm(truth.bounds[1] - truth.bounds[0]))
    return seen_chamfer_distance(fitted, truth, train.c2w, train.intrinsics, depths,
                                 tolerance=tolerance, num_points=CHAMFER_POINTS, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", choices=("head", "lego"))
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--every", type=int, default=100, help="steps between curve points")
    parser.add_argument("--curve-views", type=int, default=4,
                        help="held-out views rendered at each curve point")
    parser.add_argument("--test-views", type=int, default=20,
                        help="held-out views rendered for the final PSNR and SSIM")
    parser.add_argument("--mesh-resolution", type=int, default=128,
                        help="marching-cubes grid points per axis (head scene)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="JSON file for the results")
    args = parser.parse_args()

    from distributed import Client

    from daskavatar.cluster import start_local_cluster
    from daskavatar.nerf.presets import PRESETS
    from daskavatar.nerf.programs import compile_programs

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    compiled = compile_programs(PRESETS[args.preset])
    compile_seconds = time.perf_counter() - started

    with start_local_cluster(n_workers=1, threads_per_worker=1, memory_limit="512MB",
                             dashboard_address=":0") as cluster, Client(cluster) as client:
        future = client.submit(run_fit, args.scene, compiled, iterations=args.iterations,
                               every=args.every, curve_views=args.curve_views,
                               test_views=args.test_views, mesh_resolution=args.mesh_resolution,
                               seed=args.seed, pure=False)
        result = future.result()

    result.update(scene=args.scene, preset=args.preset, iterations=args.iterations,
                  compile_seconds=round(compile_seconds, 2), uptime_before=load,
                  uptime_after=subprocess.run(["uptime"], capture_output=True,
                                              text=True).stdout.strip())
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)

    print(f"scene {args.scene}, preset {args.preset}, {args.iterations} steps; "
          f"load before: {load}")
    print()
    print(f"| step | training wall time (s) | training CPU time (s) | "
          f"PSNR, {args.curve_views} views (dB) | SSIM |")
    print("|---:|---:|---:|---:|---:|")
    for point in result["curve"]:
        print(f"| {point['step']} | {point['seconds']:.1f} | {point['cpu_seconds']:.1f} | "
              f"{point['psnr']:.2f} | {point['ssim']:.3f} |")
    print()
    print(f"final: PSNR {result['test_psnr']:.2f} dB, SSIM {result['test_ssim']:.3f} on "
          f"{result['test_views']} held-out views; fit {result['fit_seconds']:.1f} s "
          f"({result['fit_cpu_seconds']:.1f} s of CPU); "
          f"peak worker RSS {result['peak_rss_mib']:.1f} MiB "
          f"({result['fit_peak_rss_mib']:.1f} MiB during the fit)")
    if "mesh" in result:
        mesh = result["mesh"]
        print(f"mesh: {mesh['faces']} faces, Chamfer {100 * mesh['chamfer']:.2f} % of the "
              f"diagonal (accuracy {100 * mesh['accuracy']:.2f} %, completeness "
              f"{100 * mesh['completeness']:.2f} %)")
        seen = mesh["seen"]
        print(f"seen part: Chamfer {100 * seen['chamfer']:.2f} % (accuracy "
              f"{100 * seen['accuracy']:.2f} % over {100 * seen['fitted_share']:.0f} % of the "
              f"fitted surface, completeness {100 * seen['completeness']:.2f} % over "
              f"{100 * seen['truth_share']:.0f} % of the scan)")


if __name__ == "__main__":
    sys.exit(main())
