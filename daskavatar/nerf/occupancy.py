"""Occupancy grid: which cells of the scene cube may hold density, and per-ray bounds from it.

The grid starts as the visual hull of the training masks: a cell is empty when its centre
projects onto a background pixel of any view. During the fit it is refreshed from the
field's density, so cells that the field has emptied stop receiving samples. Each ray's
``near, far`` interval shrinks to the span of occupied cells it crosses, so a fixed number
of samples per ray lands near the surface instead of in empty space. Everything here is
NumPy: it runs on the workers without compiling anything.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from daskavatar.nerf.rays import sphere_bounds

BOUNDS_CHUNK = 2048
"""Rays per NumPy pass of :meth:`OccupancyGrid.ray_bounds`, which bounds its temporaries."""


@dataclasses.dataclass
class OccupancyGrid:
    """Boolean cells over the cube ``[-radius, radius]^3``, indexed ``[x, y, z]``."""

    occupied: np.ndarray
    """``(N, N, N)`` bool."""
    hull: np.ndarray
    """``(N, N, N)`` bool: the visual hull; density refreshes never add cells outside it."""
    radius: float

    @property
    def resolution(self) -> int:
        return self.occupied.shape[0]

    @property
    def cell_size(self) -> float:
        return 2.0 * self.radius / self.resolution

    def cell_centres(self) -> np.ndarray:
        """World positions of the cell centres, ``(N^3, 3)`` float32, in ``[x, y, z]`` order."""
        axis = (np.arange(self.resolution, dtype=np.float32) + 0.5) * self.cell_size - self.radius
        grid = np.meshgrid(axis, axis, axis, indexing="ij")
        return np.stack(grid, axis=-1).reshape(-1, 3)

    @classmethod
    def from_masks(cls, masks: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray, *,
                   resolution: int, radius: float) -> OccupancyGrid:
        """Carve the visual hull of foreground ``masks`` ``(V, H, W)`` bool.

        ``c2w`` ``(V, 4, 4)`` (OpenCV axes) and ``intrinsics`` ``(V, 3, 3)`` are the views'
        cameras. Cells that project outside a view's image or lie behind its camera are kept,
        because that view shows nothing about them. The hull is dilated by one cell, so cells
        that the surface crosses off their centre stay occupied.
        """
        empty = cls(occupied=np.ones((resolution,) * 3, bool), hull=np.ones((resolution,) * 3, bool),
                    radius=radius)
        centres = empty.cell_centres().astype(np.float64)
        keep = np.ones(len(centres), bool)
        _, height, width = masks.shape

        for mask, camera, matrix in zip(masks, c2w, intrinsics):
            w2c = np.linalg.inv(camera)
            local = centres @ w2c[:3, :3].T + w2c[:3, 3]
            in_front = local[:, 2] > 1e-6
            depth = np.where(in_front, local[:, 2], 1.0)
            col = np.floor(matrix[0, 0] * local[:, 0] / depth + matrix[0, 2]).astype(np.int64)
            row = np.floor(matrix[1, 1] * local[:, 1] / depth + matrix[1, 2]).astype(np.int64)
            inside = in_front & (col >= 0) & (col < width) & (row >= 0) & (row < height)
            foreground = np.zeros(len(centres), bool)
            foreground[inside] = mask[row[inside], col[inside]]
            keep &= ~inside | foreground

        hull = ndimage.binary_dilation(keep.reshape((resolution,) * 3), iterations=1)
        return cls(occupied=hull.copy(), hull=hull, radius=radius)

    def occupied_bounds(self):
        """Return the corners ``low, high`` ``(3,)`` of the box around the occupied cells."""
        indices = np.argwhere(self.occupied)
        low = indices.min(axis=0) * self.cell_size - self.radius
        high = (indices.max(axis=0) + 1) * self.cell_size - self.radius
        return low, high

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Return whether each point ``(P, 3)`` lies in an occupied cell, ``(P,)`` bool."""
        cells = np.floor((points + self.radius) / self.cell_size).astype(np.int64)
        inside = np.all((cells >= 0) & (cells < self.resolution), axis=-1)
        np.clip(cells, 0, self.resolution - 1, out=cells)
        return inside & self.occupied[cells[:, 0], cells[:, 1], cells[:, 2]]

    def refresh(self, sigma: np.ndarray, *, min_alpha: float) -> None:
        """Keep the hull cells whose density ``sigma`` ``(N^3,)`` at the centre is visible.

        A cell counts as occupied when a ray crossing it would lose at least ``min_alpha`` of
        its light, ``1 - exp(-sigma * cell_size) >= min_alpha``. The result is dilated by one
        cell so that the fit can still grow the surface outward. When no cell passes, the grid
        is left unchanged, because an empty grid would end the fit.
        """
        alpha = 1.0 - np.exp(-np.maximum(sigma, 0.0) * self.cell_size)
        dense = alpha.reshape(self.occupied.shape) >= min_alpha
        if not dense.any():
            return
        self.occupied = ndimage.binary_dilation(dense, iterations=1) & self.hull

    def ray_bounds(self, rays_o: np.ndarray, rays_d: np.ndarray):
        """Return ``near, far`` ``(R,)`` spanning the occupied cells along unit rays ``(R, 3)``.

        Rays are marched at half a cell per step inside the bounding sphere. Rays that cross
        no occupied cell get an empty interval (``near == far``), so they render the
        background.
        """
        near = np.empty(len(rays_o), np.float32)
        far = np.empty(len(rays_o), np.float32)
        for begin in range(0, len(rays_o), BOUNDS_CHUNK):
            end = begin + BOUNDS_CHUNK
            near[begin:end], far[begin:end] = self._chunk_bounds(rays_o[begin:end],
                                                                 rays_d[begin:end])
        return near, far

    def _chunk_bounds(self, rays_o, rays_d):
        sphere_near, sphere_far = sphere_bounds(rays_o, rays_d, radius=self.radius * np.sqrt(3))
        num_steps = 4 * self.resolution
        step = (sphere_far - sphere_near) / num_steps

        # Sample positions (R, num_steps, 3) at the centres of the march steps.
        t_vals = sphere_near[:, None] + step[:, None] * (np.arange(num_steps, dtype=np.float32) + 0.5)
        points = rays_o[:, None, :] + rays_d[:, None, :] * t_vals[..., None]
        cells = np.floor((points + self.radius) / self.cell_size).astype(np.int32)
        inside = np.all((cells >= 0) & (cells < self.resolution), axis=-1)
        np.clip(cells, 0, self.resolution - 1, out=cells)
        hit = inside & self.occupied[cells[..., 0], cells[..., 1], cells[..., 2]]

        any_hit = hit.any(axis=1)
        first = np.argmax(hit, axis=1)
        last = num_steps - 1 - np.argmax(hit[:, ::-1], axis=1)
        rows = np.arange(len(rays_o))
        near = np.maximum(t_vals[rows, first] - step, sphere_near)
        far = np.minimum(t_vals[rows, last] + step, sphere_far)
        near = np.where(any_hit, near, sphere_far)
        far = np.where(any_hit, far, sphere_far)
        return near.astype(np.float32), far.astype(np.float32)
