"""Texture atlases: unwrap a mesh with xatlas and bake a colour function into an image.

The mesh is cut into charts and packed into one square atlas by xatlas (the Python bindings
of Jonathan Young's xatlas). Every texel covered by a triangle gets the colour of the 3D
point under it, from a function the caller passes (the reduce stage queries the NeRF
there). Texels between charts take the colour of the nearest covered texel, so bilinear
filtering and mipmaps do not pull background into the seams. This module needs no JAX.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

CANDIDATE_TEXELS = 2 ** 19
"""Candidate texels tested per NumPy pass of the rasteriser. It bounds the temporaries to
about 40 MiB, whatever the size of the largest triangle in the atlas."""


@dataclasses.dataclass(frozen=True)
class TexturedMesh:
    """A mesh with per-vertex texture coordinates and its baked texture."""

    vertices: np.ndarray
    """``(V, 3)`` float32; atlas seams split vertices, so V exceeds the input's vertex count."""
    faces: np.ndarray
    """``(F, 3)`` int64 indices into ``vertices``."""
    uv: np.ndarray
    """``(V, 2)`` float32 in [0, 1], OBJ convention as trimesh uses it: v = 0 is the image's
    bottom row. trimesh's glTF exporter writes ``1 - v``."""
    image: np.ndarray
    """``(S, S, 3)`` uint8 RGB texture."""
    source_vertex: np.ndarray
    """``(V,)`` int64: index of each vertex in the unwrapped input mesh."""


def unwrap(vertices: np.ndarray, faces: np.ndarray, *, size: int, padding: int = 2):
    """Cut ``vertices`` ``(V, 3)``, ``faces`` ``(F, 3)`` into charts packed in a square atlas.

    Returns ``source_vertex`` ``(V2,)``, ``faces`` ``(F, 3)`` into the split vertices and
    ``uv`` ``(V2, 2)`` in [0, 1]. The charts do not overlap, whichever image row v = 0 means.
    """
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32),
                   np.ascontiguousarray(faces, np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = size
    pack.padding = padding
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    source_vertex, new_faces, uv = atlas[0]
    return (source_vertex.astype(np.int64), new_faces.astype(np.int64),
            np.clip(uv, 0.0, 1.0).astype(np.float32))


def bake_texture(vertices: np.ndarray, faces: np.ndarray, color_at, *, size: int = 1024,
                 padding: int = 2) -> TexturedMesh:
    """Unwrap the mesh and bake ``color_at(points (P, 3)) -> rgb (P, 3)`` in [0, 1] into it.

    ``size`` is the side of the square texture in pixels.
    """
    source_vertex, new_faces, uv = unwrap(vertices, faces, size=size, padding=padding)
    new_vertices = np.asarray(vertices, np.float32)[source_vertex]

    texel_points, texel_rows, texel_cols = _rasterise(new_vertices, new_faces, uv, size)
    image = np.zeros((size, size, 3), np.float32)
    covered = np.zeros((size, size), bool)
    if len(texel_points):
        image[texel_rows, texel_cols] = np.clip(color_at(texel_points), 0.0, 1.0)
        covered[texel_rows, texel_cols] = True
        image = _fill_gutters(image, covered)

    logger.info("Baked a %dx%d texture over %d charts' vertices; %.0f %% of texels covered",
                size, size, len(new_vertices), 100.0 * covered.mean())
    return TexturedMesh(vertices=new_vertices, faces=new_faces, uv=uv,
                        image=(image * 255.0 + 0.5).astype(np.uint8), source_vertex=source_vertex)


def _rasterise(vertices, faces, uv, size):
    """Return the 3D points ``(T, 3)`` under the texel centres that triangles cover.

    Texel (row, col) has its centre at ``u = (col + 0.5) / size`` and
    ``v = 1 - (row + 0.5) / size`` (row 0 at the top of the image). Each texel is written
    once: where triangles share a texel, the last one wins.
    """
    pixel = np.empty_like(uv)
    pixel[:, 0] = uv[:, 0] * size - 0.5
    pixel[:, 1] = (1.0 - uv[:, 1]) * size - 0.5
    corners = pixel[faces]
    low = np.floor(corners.min(axis=1)).astype(np.int64)
    high = np.ceil(corners.max(axis=1)).astype(np.int64)
    extent = int(max((high - low).max(), 0)) + 1

    points, rows, cols = [], [], []
    offsets = np.stack(np.meshgrid(np.arange(extent), np.arange(extent), indexing="ij"),
                       axis=-1).reshape(-1, 2)
    triangles_per_pass = max(1, CANDIDATE_TEXELS // (extent * extent))
    for begin in range(0, len(faces), triangles_per_pass):
        chunk = slice(begin, begin + triangles_per_pass)
        tri = corners[chunk]

        # Candidate texels (n, K, 2) as (x, y) = (col, row) inside each triangle's box.
        candidates = low[chunk][:, None, :] + offsets[None, :, ::-1]
        weights = _barycentric(candidates.astype(np.float64), tri.astype(np.float64))
        inside = np.all(weights >= -1e-6, axis=-1)
        inside &= np.all((candidates >= 0) & (candidates < size), axis=-1)
        triangle, texel = np.nonzero(inside)
        if not len(triangle):
            continue

        face_vertices = vertices[faces[chunk][triangle]]
        bary = weights[triangle, texel]
        points.append(np.einsum("tk,tkd->td", bary, face_vertices).astype(np.float32))
        cols.append(candidates[triangle, texel, 0])
        rows.append(candidates[triangle, texel, 1])

    if not points:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(points), np.concatenate(rows), np.concatenate(cols)


def _barycentric(points, triangles):
    """Barycentric weights ``(n, K, 3)`` of 2D ``points`` ``(n, K, 2)`` in ``triangles`` ``(n, 3, 2)``."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    v0, v1 = b - a, c - a
    v2 = points - a[:, None, :]
    det = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]

    # Degenerate triangles (zero area in the atlas) cover no texel.
    det = np.where(np.abs(det) < 1e-12, np.nan, det)
    w1 = (v2[..., 0] * v1[:, None, 1] - v1[:, None, 0] * v2[..., 1]) / det[:, None]
    w2 = (v0[:, None, 0] * v2[..., 1] - v2[..., 0] * v0[:, None, 1]) / det[:, None]
    weights = np.stack([1.0 - w1 - w2, w1, w2], axis=-1)
    return np.nan_to_num(weights, nan=-1.0)


def _fill_gutters(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Give every uncovered texel the colour of the nearest covered one."""
    _, (rows, cols) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return image[rows, cols]
