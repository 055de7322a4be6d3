"""The built-in ``NeRF_Avatar`` plugin: one 3D avatar per identity.

For one identity the reduce step reads the usable rows of ``features.zarr``, masks each
crop's background using its landmarks, fits a NeRF, renders a turntable preview, extracts a
mesh by marching cubes and writes ``avatars/<identity>/{mesh.<fmt>, preview.png,
report.json}``. ``report.json`` is written last, so its presence means the other files are
complete. The NeRF itself is in :mod:`daskavatar.nerf`; the plugin interface in
:mod:`daskavatar.plugins.base`.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from daskavatar.exceptions import JobSpecError
from daskavatar.export.previews import png_bytes, tile_views
from daskavatar.faces.align import face_mask
from daskavatar.faces.bundle import refine_identity
from daskavatar.faces.pose import euler_angles
from daskavatar.io.outputs import join, write_bytes, write_json
from daskavatar.io.store import STATUS_OK, read_rows
from daskavatar.jobs.memory import PeakMemory, release_memory, rss_mib
from daskavatar.plugins.base import MapReducePlugin

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("obj", "ply", "glb")

PREVIEW_ANGLES = 40.0
"""Half range in degrees of the turntable preview around the most frontal photo."""

MIN_LARGEST_PART = 0.8
"""Share of the mesh's faces below which its largest connected part gets a warning."""
MAX_DEPTH_TO_WIDTH = 1.5
"""Depth of the mesh along the viewing axis, over its width, above which it gets a warning.
A face seen from the front is about as deep as wide."""


@dataclasses.dataclass(frozen=True)
class NeRFAvatarConfig:
    """The ``NeRF_Avatar`` keys of the job ``config`` block (defaults in daskavatar.yaml)."""

    max_iterations: int
    """NeRF optimisation steps per identity."""
    output_format: str
    """Mesh file format: ``obj``, ``ply`` or ``glb``."""
    preset: str
    """NeRF preset name, see :mod:`daskavatar.nerf.presets`."""
    mesh_resolution: int
    """Marching-cubes grid cells per axis."""
    preview_views: int
    """Number of turntable views in ``preview.png``."""
    preview_resolution: int
    """Side of each preview view in pixels."""
    seed: int
    """Seed of the NeRF initialisation and ray sampling."""

    def validate(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise JobSpecError(f"invalid output_format {self.output_format!r}; "
                               f"use one of {', '.join(OUTPUT_FORMATS)}")
        if self.max_iterations < 1:
            raise JobSpecError(f"invalid max_iterations {self.max_iterations}; use 1 or more")
        if not 16 <= self.mesh_resolution <= 256:
            raise JobSpecError(f"invalid mesh_resolution {self.mesh_resolution}; "
                               "use a value from 16 to 256")

        # The presets module is light; importing it here keeps jax out of job validation.
        from daskavatar.nerf.presets import PRESETS
        if self.preset not in PRESETS:
            raise JobSpecError(f"unknown NeRF preset {self.preset!r}; "
                               f"use one of {', '.join(sorted(PRESETS))}")


class NeRFAvatar(MapReducePlugin):
    """Fit a NeRF per identity and export its mesh and a turntable preview."""

    name = "NeRF_Avatar"
    config_class = NeRFAvatarConfig
    features = ("crops", "landmarks", "c2w", "intrinsics")
    outputs = ("mesh.<output_format>", "preview.png", "report.json")
    output_folder = "avatars"

    compiled: dict | None = None
    """Serialised train, render and query programs, compiled once per job on the client."""

    def prepare(self, client) -> None:
        # Compiling the paper train step inside a 512 MB worker peaks above the restart
        # threshold; the client compiles once and the workers only deserialise.
        from daskavatar.nerf.presets import PRESETS
        from daskavatar.nerf.programs import compile_programs

        self.compiled = compile_programs(PRESETS[self.config.preset])

    def reduce(self, context) -> dict:
        return build_avatar(context.key, context.records, store_url=context.store_url,
                            folder=context.folder, config=self.config, compiled=self.compiled,
                            storage_options=context.storage_options)


def build_avatar(identity: str, records: list[dict], *, store_url: str, folder: str,
                 config: NeRFAvatarConfig, compiled: dict | None, storage_options=None) -> dict:
    """Fit, render and export the avatar of one identity and return its report entry.

    ``report.json`` is written last into ``folder``. A failure of this identity is
    returned as ``status: failed`` with the error. It does not fail the task, so the other
    identities of the partition go on.
    """
    start = time.perf_counter()
    rows = sorted(r["row"] for r in records if r["status"] == "ok")
    entry = {"identity": identity, "photos": len(records), "usable_photos": len(rows),
             "folder": folder}
    if not rows:
        entry.update(status="skipped", reason="no_usable_photos",
                     message=f"none of the {len(records)} photos of {identity!r} has a usable face")
        return entry

    logger.info("Fitting the avatar of %r from %d photos", identity, len(rows))
    try:
        with PeakMemory() as peak:
            entry.update(_build(identity, rows, store_url=store_url, config=config,
                                compiled=compiled, folder=folder,
                                storage_options=storage_options))
    except Exception as error:
        logger.exception("The avatar of %r failed", identity)
        entry.update(status="failed", reason=type(error).__name__, message=str(error))
        return entry
    finally:
        release_memory()

    entry["seconds"] = round(time.perf_counter() - start, 2)
    entry["worker_peak_rss_mib"] = peak.mib
    entry["worker_rss_after_mib"] = rss_mib()
    write_json(join(folder, "report.json"), entry, storage_options=storage_options)
    logger.info("Finished the avatar of %r: training PSNR %.2f dB in %.1f s", identity,
                entry["train_psnr"], entry["seconds"])
    return entry


def _build(identity, rows, *, store_url, config, compiled, folder, storage_options) -> dict:
    # JAX and trimesh are imported here, in the reduce stage only, because together they
    # add about 180 MiB to a worker and map tasks need neither.
    from daskavatar.export.meshes import build_mesh, write_mesh
    from daskavatar.nerf.mesh import extract_mesh, part_sizes
    from daskavatar.nerf.presets import PRESETS
    from daskavatar.nerf.programs import load_programs
    from daskavatar.nerf.rays import orbit_cameras
    from daskavatar.nerf.train import evaluate_views, fit_nerf, render_image
    from daskavatar.nerf.views import TrainingViews

    data = read_rows(store_url, rows, storage_options=storage_options)
    if not np.all(data["status"] == STATUS_OK):
        raise RuntimeError(f"features.zarr rows {rows} of {identity!r} are not all usable")
    # One shared head shape and mutually consistent cameras from all photos (bundle adjustment).
    bundle = refine_identity(data["landmarks"], data["intrinsics"], data["c2w"])
    data["c2w"] = bundle.c2w.astype(np.float32)
    resolution = data["crops"].shape[1]
    masks = np.stack([face_mask(points, resolution) for points in data["landmarks"]])
    views = TrainingViews.from_crops(data["crops"], masks, data["c2w"], data["intrinsics"])

    # One photo is held out to measure the PSNR of a novel view when there are 3 or more.
    # The others are also used mirrored, which doubles the few views a person usually has.
    training, held_out = views.split_held_out(min_views=3)
    training = training.with_mirrored()

    memory = {"before_mib": rss_mib()}
    programs = load_programs(compiled, PRESETS[config.preset])
    release_memory()
    memory["programs_loaded_mib"] = rss_mib()
    fit = fit_nerf(training, programs, max_iterations=config.max_iterations, seed=config.seed)
    held_out_metrics = None
    if held_out is not None:
        held_out_metrics = evaluate_views(programs, fit.params, held_out,
                                          occupancy=fit.occupancy)

    frontal = int(np.argmin([abs(euler_angles(c2w[:3, :3].T)[0]) for c2w in data["c2w"]]))
    preview_scale = config.preview_resolution / resolution
    preview_intrinsics = data["intrinsics"][frontal].astype(np.float64).copy()
    preview_intrinsics[:2] *= preview_scale
    angles = np.linspace(-PREVIEW_ANGLES, PREVIEW_ANGLES, config.preview_views)
    previews = [render_image(programs, fit.params, c2w, preview_intrinsics,
                             config.preview_resolution, config.preview_resolution,
                             occupancy=fit.occupancy)[0]
                for c2w in orbit_cameras(data["c2w"][frontal].astype(np.float64), angles)]
    memory["fitted_mib"] = rss_mib()
    write_bytes(join(folder, "preview.png"), png_bytes(tile_views(previews)),
                storage_options=storage_options)

    viewpoint = data["c2w"][:, :3, 3].mean(axis=0)
    vertices, faces, colors, level = extract_mesh(
        programs, fit.params, resolution=config.mesh_resolution, viewpoint=viewpoint,
        occupancy=fit.occupancy)
    if level < programs.preset.mesh_level:
        logger.info("The field of %r stays below density %.3g; meshed at %.3g, half its maximum",
                    identity, programs.preset.mesh_level, level)
    texture = None
    if config.output_format in TEXTURED_FORMATS:
        texture = _bake_texture(programs, fit.params, vertices, faces, viewpoint)
    memory["meshed_mib"] = rss_mib()
    mesh_file = f"mesh.{config.output_format}"
    mesh_files = write_mesh(join(folder, mesh_file),
                            build_mesh(vertices, faces, colors, texture=texture),
                            config.output_format, storage_options=storage_options)

    parts = part_sizes(faces, len(vertices))
    largest = float(parts[0] / parts.sum())
    extent = vertices.max(axis=0) - vertices.min(axis=0)
    report = {"status": "ok", "preset": config.preset, "iterations": fit.iterations,
              "training_views": len(training), "mirrored_views": len(training) // 2,
              "train_psnr": round(fit.train_psnr, 3), "final_loss": fit.final_loss,
              "fit_seconds": round(fit.seconds, 2),
              "fit_cpu_seconds": round(fit.cpu_seconds, 2),
              "mesh": mesh_file, "mesh_files": mesh_files,
              "mesh_vertices": int(len(vertices)), "mesh_faces": int(len(faces)),
              "mesh_level": round(level, 4), "mesh_parts": int(len(parts)),
              "mesh_largest_part": round(largest, 3), "textured": texture is not None,
              "reprojection_error_px": {"before": round(float(bundle.error_before.mean()), 3),
                                        "after": round(float(bundle.error_after.mean()), 3)},
              "preview": "preview.png", "rows": [int(r) for r in rows],
              "worker_rss_mib": memory}
    if held_out_metrics is not None:
        report["held_out_psnr"] = round(held_out_metrics["psnr"], 3)
        report["held_out_ssim"] = round(held_out_metrics["ssim"], 4)
        report["held_out_row"] = int(rows[views.held_out_index(min_views=3)])

    # Few photos from similar directions leave the depth of the face open, and the mesh
    # then falls apart although the images fit. The warning goes first, so the job's
    # summary table shows it.
    problems = []
    if largest < MIN_LARGEST_PART:
        problems.append(f"the mesh is in {len(parts)} parts and the largest holds "
                        f"{largest:.0%} of its faces")
    if extent[2] > MAX_DEPTH_TO_WIDTH * extent[0]:
        problems.append(f"the mesh is {extent[2] / extent[0]:.1f} times as deep as wide")
    if problems:
        warning = (f"{'; '.join(problems)}: the photos leave the face's depth open; "
                   "photos from more directions (profiles, three-quarter views) constrain it")
        logger.warning("Avatar of %r: %s", identity, warning)
        report = {"status": "ok", "warning": warning, **report}
    return report


TEXTURED_FORMATS = ("obj", "glb")
"""Mesh formats written with a baked texture; PLY keeps vertex colours."""
TEXTURE_SIZE = 512
"""Side in pixels of the baked texture atlas."""


def _bake_texture(programs, params, vertices, faces, viewpoint):
    """Bake the field's colour, seen from ``viewpoint`` ``(3,)``, into a texture atlas."""
    from daskavatar.export.texture import bake_texture
    from daskavatar.nerf.mesh import query_field

    def color_at(points):
        directions = points - viewpoint[None, :]
        directions /= np.maximum(np.linalg.norm(directions, axis=-1, keepdims=True), 1e-9)
        return query_field(programs, params, points, directions.astype(np.float32))[1]

    return bake_texture(vertices, faces, color_at, size=TEXTURE_SIZE)
