"""Fitting a NeRF to posed, masked photos, and rendering and evaluating the result.

The optimisation runs the preset's compiled training step (:mod:`daskavatar.nerf.programs`)
on random pixels of all views. Presets with an occupancy grid start it from the visual hull
of the masks and refresh it from the field's density during the fit. The grid then bounds
every ray, in training and in rendering. Views and their few-view helpers are in
:mod:`daskavatar.nerf.views`.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from daskavatar.nerf.field import init_params
from daskavatar.nerf.losses import psnr_from_mse
from daskavatar.nerf.occupancy import OccupancyGrid
from daskavatar.nerf.programs import Programs
from daskavatar.nerf.rays import pixel_rays
from daskavatar.nerf.views import TrainingViews, ray_bounds

__all__ = ["EVAL_RAYS", "FitResult", "TrainingViews", "evaluate_views", "fit_nerf",
           "render_image", "render_rays"]

logger = logging.getLogger(__name__)

EVAL_RAYS = 4096
"""Training rays on which the final training PSNR is measured."""
OCCUPANCY_WARMUP = 64
"""Steps before the first refresh of the occupancy grid from the field's density."""
OCCUPANCY_EVERY = 64
"""Steps between refreshes of the occupancy grid."""
OCCUPANCY_MIN_ALPHA = 0.01
"""Opacity across one cell below which a cell counts as empty."""


@dataclasses.dataclass(frozen=True)
class FitResult:
    """Trained weights and how the fit went."""

    params: dict
    train_psnr: float
    """PSNR in dB of renders of ``EVAL_RAYS`` random training pixels after the last step."""
    final_loss: float
    seconds: float
    """Wall time of the fit, without the time spent in the callback."""
    cpu_seconds: float
    """CPU time of this process during the fit, without the callback's. On a machine shared
    with other work it estimates the wall time on an idle core."""
    iterations: int
    occupancy: OccupancyGrid | None = None
    """The occupancy grid after the last refresh, for rendering and meshing; None when the
    preset has none."""


def fit_nerf(views: TrainingViews, programs: Programs, *, max_iterations: int, seed: int,
             callback=None, callback_every: int = 0) -> FitResult:
    """Optimise a NeRF on ``views`` for ``max_iterations`` steps of the preset's batch size.

    The learning rate decays exponentially from the preset's initial to its final value.
    Every step has the same shapes, so the compiled step is reused for every identity.
    ``callback(step, params, occupancy, seconds)`` runs after every ``callback_every`` steps
    (benchmarks evaluate there); its own time is not counted in ``seconds``.
    """
    preset = programs.preset
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    cpu_start = time.process_time()
    excluded = 0.0
    cpu_excluded = 0.0

    occupancy = _initial_occupancy(views, programs)
    params = init_params(preset, seed)
    opt_state = programs.initial_opt_state
    decay = (preset.learning_rate_final / preset.learning_rate) ** (1.0 / max(max_iterations, 1))

    loss = np.nan
    for step in range(max_iterations):
        if occupancy is not None and step >= OCCUPANCY_WARMUP and step % OCCUPANCY_EVERY == 0:
            _refresh_occupancy(occupancy, programs, params)

        rays_o, rays_d, near, far, target = views.sample(rng, preset.batch_rays, occupancy)
        jitter = rng.random((preset.batch_rays, preset.num_samples), dtype=np.float32)
        learning_rate = np.float32(preset.learning_rate * decay ** step)
        params, opt_state, loss = programs.train_step(params, opt_state, rays_o, rays_d, near,
                                                      far, target, jitter, learning_rate)

        # Waiting on every step keeps one step's buffers alive at a time; queueing many
        # asynchronous steps raised worker memory by more than 150 MiB.
        loss = float(loss)
        if not np.isfinite(loss):
            raise FloatingPointError(f"NeRF loss became {loss} at step {step}")

        if callback is not None and callback_every and (step + 1) % callback_every == 0:
            paused = time.perf_counter()
            cpu_paused = time.process_time()
            callback(step + 1, params, occupancy, paused - start - excluded)
            excluded += time.perf_counter() - paused
            cpu_excluded += time.process_time() - cpu_paused

    eval_rng = np.random.default_rng(seed + 1)
    rays_o, rays_d, near, far, target = views.sample(eval_rng, EVAL_RAYS, occupancy)
    predicted = render_rays(programs, params, rays_o, rays_d, near, far)[0]
    train_psnr = psnr_from_mse(np.mean((predicted - target) ** 2))

    seconds = time.perf_counter() - start - excluded
    cpu_seconds = time.process_time() - cpu_start - cpu_excluded
    return FitResult(params=params, train_psnr=train_psnr, final_loss=loss, seconds=seconds,
                     cpu_seconds=cpu_seconds, iterations=max_iterations, occupancy=occupancy)


def _initial_occupancy(views: TrainingViews, programs: Programs) -> OccupancyGrid | None:
    preset = programs.preset
    if not preset.occupancy_resolution:
        return None
    num_views, height, width, _ = views.images.shape
    masks = views.masks if views.masks is not None else np.ones((num_views, height, width), bool)
    return OccupancyGrid.from_masks(masks, views.c2w, views.intrinsics,
                                    resolution=preset.occupancy_resolution, radius=preset.radius)


def _refresh_occupancy(occupancy: OccupancyGrid, programs: Programs, params) -> None:
    from daskavatar.nerf.mesh import query_field

    centres = occupancy.cell_centres()
    directions = np.zeros_like(centres)
    directions[:, 2] = 1.0
    sigma, _ = query_field(programs, params, centres, directions)
    occupancy.refresh(sigma, min_alpha=OCCUPANCY_MIN_ALPHA)


def render_rays(programs: Programs, params, rays_o, rays_d, near, far):
    """Render any number of rays ``(R, 3)`` with bounds ``(R,)`` in chunks of the compiled size.

    Returns NumPy ``rgb`` ``(R, 3)``, ``depth`` ``(R,)`` and ``acc`` ``(R,)``.
    """
    chunk = programs.preset.render_rays
    count = rays_o.shape[0]
    outputs = ([], [], [])
    for begin in range(0, count, chunk):
        parts = [_pad(a[begin:begin + chunk], chunk) for a in (rays_o, rays_d, near, far)]
        rgb, depth, acc = programs.render(params, *parts)
        size = min(chunk, count - begin)
        for output, value in zip(outputs, (rgb, depth, acc)):
            output.append(np.asarray(value)[:size])
    return tuple(np.concatenate(o) for o in outputs)


def render_image(programs: Programs, params, c2w, intrinsics, width: int, height: int, *,
                 occupancy: OccupancyGrid | None = None, rows_per_chunk: int = 32):
    """Render one view; returns RGB ``(height, width, 3)`` in [0, 1] and depth ``(height, width)``.

    Rays are built and rendered ``rows_per_chunk`` image rows at a time, so a 512 x 512 view
    keeps the rays of 16,384 pixels in memory at once rather than 262,144.
    """
    rgb = np.empty((height, width, 3), np.float32)
    depth = np.empty((height, width), np.float32)
    cols = np.arange(width)
    for top in range(0, height, rows_per_chunk):
        rows = np.arange(top, min(top + rows_per_chunk, height))
        grid_rows, grid_cols = np.meshgrid(rows, cols, indexing="ij")
        count = grid_rows.size
        rays_o, rays_d = pixel_rays(np.broadcast_to(c2w, (count, 4, 4)),
                                    np.broadcast_to(intrinsics, (count, 3, 3)),
                                    grid_cols.ravel() + 0.5, grid_rows.ravel() + 0.5)
        near, far = ray_bounds(rays_o, rays_d, occupancy)
        chunk_rgb, chunk_depth, _ = render_rays(programs, params, rays_o, rays_d, near, far)
        rgb[rows] = chunk_rgb.reshape(len(rows), width, 3)
        depth[rows] = chunk_depth.reshape(len(rows), width)
    return rgb, depth


def evaluate_views(programs: Programs, params, views: TrainingViews, *,
                   occupancy: OccupancyGrid | None = None) -> dict:
    """Render every view of ``views`` and compare with its image.

    Returns ``psnr`` and ``ssim`` (means over views; SSIM by scikit-image on RGB in [0, 1])
    and ``psnr_per_view``, a list.
    """
    from skimage.metrics import structural_similarity

    psnrs, ssims = [], []
    _, height, width, _ = views.images.shape
    for image, c2w, intrinsics in zip(views.images, views.c2w, views.intrinsics):
        rgb, _ = render_image(programs, params, c2w, intrinsics, width, height,
                              occupancy=occupancy)
        psnrs.append(psnr_from_mse(np.mean((rgb - image) ** 2)))
        ssims.append(float(structural_similarity(rgb, image, channel_axis=-1, data_range=1.0)))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "psnr_per_view": [round(p, 3) for p in psnrs]}


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    if array.shape[0] == size:
        return array
    padding = np.repeat(array[-1:], size - array.shape[0], axis=0)
    return np.concatenate([array, padding])
