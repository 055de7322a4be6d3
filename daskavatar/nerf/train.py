"""Fitting a NeRF to the posed, masked photos of one identity."""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from daskavatar.nerf.field import init_params
from daskavatar.nerf.losses import psnr_from_mse
from daskavatar.nerf.programs import BACKGROUND, Programs
from daskavatar.nerf.rays import pixel_rays, sphere_bounds

logger = logging.getLogger(__name__)

EVAL_RAYS = 4096
"""Training rays on which the final training PSNR is measured."""


@dataclasses.dataclass(frozen=True)
class TrainingViews:
    """The photos of one identity as training targets."""

    images: np.ndarray
    """Colours in [0, 1], shape ``(N, H, W, 3)``, float32, masked pixels set to the background."""
    c2w: np.ndarray
    """Camera-to-world matrices ``(N, 4, 4)``, OpenCV camera axes."""
    intrinsics: np.ndarray
    """Pinhole matrices ``(N, 3, 3)`` in pixels of ``images``."""

    @classmethod
    def from_crops(cls, crops, masks, c2w, intrinsics):
        """Build views from uint8 crops ``(N, H, W, 3)`` and bool face masks ``(N, H, W)``."""
        images = crops.astype(np.float32) / 255.0
        images = np.where(masks[..., None], images, np.asarray(BACKGROUND, dtype=np.float32))
        return cls(images=images, c2w=c2w.astype(np.float64),
                   intrinsics=intrinsics.astype(np.float64))

    def sample(self, rng: np.random.Generator, count: int):
        """Draw ``count`` random pixels; returns rays, near/far bounds and target colours."""
        num_views, height, width, _ = self.images.shape
        view = rng.integers(0, num_views, count)
        row = rng.integers(0, height, count)
        col = rng.integers(0, width, count)
        rays_o, rays_d = pixel_rays(self.c2w[view], self.intrinsics[view], col + 0.5, row + 0.5)
        near, far = sphere_bounds(rays_o, rays_d)
        return rays_o, rays_d, near, far, self.images[view, row, col]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """Trained weights and how the fit went."""

    params: dict
    train_psnr: float
    """PSNR in dB of renders of ``EVAL_RAYS`` random training pixels after the last step."""
    final_loss: float
    seconds: float
    iterations: int


def fit_nerf(views: TrainingViews, programs: Programs, *, max_iterations: int,
             seed: int) -> FitResult:
    """Optimise a NeRF on ``views`` for ``max_iterations`` steps of the preset's batch size.

    The learning rate decays exponentially from the preset's initial to its final value.
    Every step has the same shapes, so the compiled step is reused for every identity.
    """
    preset = programs.preset
    rng = np.random.default_rng(seed)
    start = time.perf_counter()

    params = init_params(preset, seed)
    opt_state = programs.initial_opt_state
    decay = (preset.learning_rate_final / preset.learning_rate) ** (1.0 / max(max_iterations, 1))

    loss = np.nan
    for step in range(max_iterations):
        rays_o, rays_d, near, far, target = views.sample(rng, preset.batch_rays)
        jitter = rng.random((preset.batch_rays, preset.num_samples), dtype=np.float32)
        learning_rate = np.float32(preset.learning_rate * decay ** step)
        params, opt_state, loss = programs.train_step(params, opt_state, rays_o, rays_d, near,
                                                      far, target, jitter, learning_rate)

        # Waiting on every step keeps one step's buffers alive at a time; queueing many
        # asynchronous steps raised worker memory by more than 150 MiB.
        loss = float(loss)
        if not np.isfinite(loss):
            raise FloatingPointError(f"NeRF loss became {loss} at step {step}")

    eval_rng = np.random.default_rng(seed + 1)
    rays_o, rays_d, near, far, target = views.sample(eval_rng, EVAL_RAYS)
    predicted = render_rays(programs, params, rays_o, rays_d, near, far)[0]
    train_psnr = psnr_from_mse(np.mean((predicted - target) ** 2))

    seconds = time.perf_counter() - start
    return FitResult(params=params, train_psnr=train_psnr, final_loss=loss, seconds=seconds,
                     iterations=max_iterations)


def render_rays(programs: Programs, params, rays_o, rays_d, near, far):
    """Render any number of rays ``(R, 3)`` in chunks of the compiled size.

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


def render_image(programs: Programs, params, c2w, intrinsics, width: int, height: int):
    """Render one view; returns RGB ``(height, width, 3)`` in [0, 1] and depth ``(height, width)``."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    count = height * width
    rays_o, rays_d = pixel_rays(np.broadcast_to(c2w, (count, 4, 4)),
                                np.broadcast_to(intrinsics, (count, 3, 3)),
                                cols.ravel() + 0.5, rows.ravel() + 0.5)
    near, far = sphere_bounds(rays_o, rays_d)
    rgb, depth, _ = render_rays(programs, params, rays_o, rays_d, near, far)
    return rgb.reshape(height, width, 3), depth.reshape(height, width)


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    if array.shape[0] == size:
        return array
    padding = np.repeat(array[-1:], size - array.shape[0], axis=0)
    return np.concatenate([array, padding])
