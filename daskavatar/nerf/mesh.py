"""Mesh extraction from the density field by marching cubes, with colours from the field."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import measure

from daskavatar.nerf.programs import Programs
from daskavatar.nerf.rays import BOUND_RADIUS


CLOSING_ITERATIONS = 3
"""Voxels by which gaps in the solid's surface are closed before its cavities are filled."""


MIN_SOLID_FRACTION = 0.05
"""Solids smaller than this fraction of the largest one are dropped as floaters."""


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
                 level: float | None = None, radius: float = BOUND_RADIUS, occupancy=None):
    """Extract the surface where density equals ``level`` inside the cube of half side ``radius``.

    The field is sampled on a grid of ``resolution`` points per axis. With an ``occupancy``
    grid (:class:`~daskavatar.nerf.occupancy.OccupancyGrid`), the grid spans only the
    bounding box of its occupied cells, which gives finer cells for the same cost, and
    density in its empty cells counts as zero, because no ray sampled there and the field is
    arbitrary. The grid is queried one slab of constant x at a time, so the temporaries are
    those of one slab. Vertex colours are the field's colour seen from ``viewpoint`` ``(3,)``
    (the mean camera centre), because the photos only show the head from there. When the
    density never reaches ``level``, half the maximum density is used instead.

    Returns ``vertices`` ``(V, 3)`` float32 in world units, ``faces`` ``(F, 3)`` int64,
    ``colors`` ``(V, 4)`` uint8 RGBA and the level used. Raises ValueError when the field is
    empty.
    """
    level = programs.preset.mesh_level if level is None else level
    low, high = np.full(3, -radius), np.full(3, radius)
    if occupancy is not None and occupancy.occupied.any():
        low, high = occupancy.occupied_bounds()
    axes = [np.linspace(low[i], high[i], resolution, dtype=np.float32) for i in range(3)]

    slab = np.stack(np.meshgrid(axes[1], axes[2], indexing="ij"), axis=-1).reshape(-1, 2)
    sigma = np.empty((resolution, resolution, resolution), np.float32)
    for index, x in enumerate(axes[0]):
        points = np.concatenate([np.full((len(slab), 1), x, np.float32), slab], axis=1)
        values, _ = query_field(programs, params, points, _unit(points - viewpoint[None, :]))
        if occupancy is not None:
            values = np.where(occupancy.contains(points), values, 0.0)
        sigma[index] = values.reshape(resolution, resolution)

    peak = float(sigma.max())
    if peak <= 1e-3:
        raise ValueError(f"the fitted field is empty (maximum density {peak:.3g})")
    if peak <= level:
        level = peak / 2
    elif float(sigma.min()) >= level:
        raise ValueError(f"the fitted field is dense everywhere (minimum density "
                         f"{float(sigma.min()):.3g} at or above the mesh level {level:.3g})")

    sigma = _solidify(sigma, level)
    spacing = tuple(float(axis[1] - axis[0]) for axis in axes)
    vertices, faces, _, _ = measure.marching_cubes(sigma, level=level, spacing=spacing)
    vertices = (vertices + low).astype(np.float32)

    # skimage orients faces toward increasing values, so normals point into the head.
    # Reversing the winding makes them point outward, as renderers expect.
    faces = faces[:, ::-1].astype(np.int64)

    _, rgb = query_field(programs, params, vertices, _unit(vertices - viewpoint[None, :]))
    colors = np.concatenate([np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8),
                             np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    return vertices, faces, colors, float(level)


def _solidify(sigma: np.ndarray, level: float) -> np.ndarray:
    """Drop floaters from ``sigma`` ``(N, N, N)`` and fill the cavities of its solids.

    No ray reaches the inside of the head, so its density is arbitrary, and where it dips
    below the level marching cubes would add inner surfaces. Solids (connected voxels at or
    above ``level``) smaller than ``MIN_SOLID_FRACTION`` of the largest are floaters, and
    their density is set to zero. Density in cavities of the others is raised to twice the
    level. The boundary of the kept solids, and so the mesh there, stays as it was.
    """
    solid = sigma >= level
    labels, count = ndimage.label(solid)
    if count > 1:
        sizes = ndimage.sum_labels(solid, labels, index=np.arange(1, count + 1))
        large_labels = np.flatnonzero(sizes >= MIN_SOLID_FRACTION * sizes.max()) + 1
        solid = np.isin(labels, large_labels)
    filled = ndimage.binary_fill_holes(ndimage.binary_closing(solid,
                                                              iterations=CLOSING_ITERATIONS))

    sigma = np.where(solid | ~(sigma >= level), sigma, 0.0)
    return np.where(filled & ~solid, 2.0 * level, sigma).astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-9)).astype(np.float32)


def part_sizes(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    """Return the face count of each connected part of a mesh, largest first.

    ``faces`` ``(F, 3)`` index ``num_vertices`` vertices; faces that share a vertex are
    connected.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0:
        return np.zeros(0, np.int64)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])),
                       shape=(num_vertices, num_vertices))
    _, labels = connected_components(graph, directed=False)
    return np.sort(np.bincount(labels[faces[:, 0]]))[::-1]

