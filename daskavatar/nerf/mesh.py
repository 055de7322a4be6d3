"""Mesh extraction from the density field by marching cubes, with colours from the field."""

from __future__ import annotations

import numpy as np
from skimage import measure

from daskavatar.nerf.programs import Programs
from daskavatar.nerf.rays import BOUND_RADIUS


def query_field(programs: Programs, params, points: np.ndarray, directions: np.ndarray):
    """Evaluate the field at ``points`` and unit ``directions`` ``(P, 3)`` in compiled chunks.

    Returns ``sigma`` ``(P,)`` and ``rgb`` ``(P, 3)`` as NumPy arrays.
    """
    chunk = programs.preset.query_points
    count = points.shape[0]
    sigmas, colours = [], []
    for begin in range(0, count, chunk):
        size = min(chunk, count - begin)
        block_points = np.zeros((chunk, 3), np.float32)
        block_dirs = np.zeros((chunk, 3), np.float32)
        block_dirs[:, 2] = 1.0
        block_points[:size] = points[begin:begin + size]
        block_dirs[:size] = directions[begin:begin + size]
        sigma, rgb = programs.query(params, block_points, block_dirs)
        sigmas.append(np.asarray(sigma)[:size])
        colours.append(np.asarray(rgb)[:size])
    return np.concatenate(sigmas), np.concatenate(colours)


def extract_mesh(programs: Programs, params, *, resolution: int, viewpoint: np.ndarray,
                 level: float | None = None, radius: float = BOUND_RADIUS):
    """Extract the surface where density equals ``level`` inside the cube of half side ``radius``.

    The field is sampled on a ``resolution``^3 grid. Vertex colours are the field's colour
    seen from ``viewpoint`` ``(3,)`` (the mean camera centre), because the photos only show
    the head from there. When the density never reaches ``level``, half the maximum density
    is used instead.

    Returns ``vertices`` ``(V, 3)`` float32 in world units, ``faces`` ``(F, 3)`` int64,
    ``colors`` ``(V, 4)`` uint8 RGBA and the level used. Raises ValueError when the field is
    empty.
    """
    level = programs.preset.mesh_level if level is None else level
    axis = np.linspace(-radius, radius, resolution, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    directions = _unit(grid - viewpoint[None, :])

    sigma, _ = query_field(programs, params, grid, directions)
    sigma = sigma.reshape(resolution, resolution, resolution)
    peak = float(sigma.max())
    if peak <= 1e-3:
        raise ValueError(f"the fitted field is empty (maximum density {peak:.3g})")
    if peak <= level:
        level = peak / 2
    elif float(sigma.min()) >= level:
        raise ValueError(f"the fitted field is dense everywhere (minimum density "
                         f"{float(sigma.min()):.3g} at or above the mesh level {level:.3g})")

    spacing = (axis[1] - axis[0],) * 3
    vertices, faces, _, _ = measure.marching_cubes(sigma, level=level, spacing=spacing)
    vertices = (vertices - radius).astype(np.float32)

    # skimage orients faces toward increasing values, so normals point into the head.
    # Reversing the winding makes them point outward, as renderers expect.
    faces = faces[:, ::-1].astype(np.int64)

    _, rgb = query_field(programs, params, vertices, _unit(vertices - viewpoint[None, :]))
    colors = np.concatenate([np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8),
                             np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    return vertices, faces, colors, float(level)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-9)).astype(np.float32)
