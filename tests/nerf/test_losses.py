"""Mesh metrics on the head scan: the seen region from true depth maps, and the Chamfer distance."""

import numpy as np
import pytest

pytest.importorskip("jax")

from tests.conftest import shared_path  # noqa: E402

from daskavatar.nerf.losses import chamfer_distance, seen_region  # noqa: E402

HEAD_SCALE = 0.75


@pytest.fixture(scope="module")
def head():
    from daskavatar.nerf.scenes import load_blender_depths, load_blender_views, load_head_scan

    folder = shared_path("head_scan_lee_perry_smith", "renders_200px")
    views = load_blender_views(folder, "train", scale=HEAD_SCALE, pixel_offset=0.5)
    depths = load_blender_depths(folder, "train", scale=HEAD_SCALE)
    truth = load_head_scan(shared_path("head_scan_lee_perry_smith"), scale=HEAD_SCALE)
    return views, depths, truth


def _back_project(views, depths, index):
    """Return the 3D points ``(N, 3)`` of view ``index``'s depth pixels and its camera centre."""
    depth = depths[index]
    rows, columns = np.nonzero(depth > 0)
    matrix = views.intrinsics[index]
    x = (columns + 0.5 - (matrix[0, 2] - depth.shape[1] / 2) - matrix[0, 2]) / matrix[0, 0]
    y = (rows + 0.5 - (matrix[1, 2] - depth.shape[0] / 2) - matrix[1, 2]) / matrix[1, 1]
    z = depth[rows, columns]
    local = np.stack([x * z, y * z, z, np.ones_like(z)], axis=1)
    return (local @ views.c2w[index].T)[:, :3], views.c2w[index][:3, 3]


def test_depth_pixels_lie_on_the_scan(head):
    import trimesh
    from scipy.spatial import cKDTree

    views, depths, truth = head
    points, _ = _back_project(views, depths, 0)

    # The renders' depth is exact, so the back-projected points lie on the scan, as close
    # to its dense samples as those are to each other.
    samples, _ = trimesh.sample.sample_surface(truth, 200_000, seed=0)
    distance = cKDTree(samples).query(points)[0]
    diagonal = np.linalg.norm(truth.bounds[1] - truth.bounds[0])
    assert np.median(distance) < 0.002 * diagonal


def test_seen_region_of_one_view(head):
    views, depths, _ = head
    points, centre = _back_project(views, depths, 0)
    one_view = (views.c2w[:1], views.intrinsics[:1], depths[:1])
    direction = (points - centre) / np.linalg.norm(points - centre, axis=1, keepdims=True)

    on_surface, seen = seen_region(points, *one_view, tolerance=0.01)
    assert on_surface.mean() > 0.98
    assert seen.mean() > 0.98

    in_front = points - 0.05 * direction
    on_surface, seen = seen_region(in_front, *one_view, tolerance=0.01)
    assert on_surface.mean() < 0.02
    assert seen.mean() > 0.98

    behind = points + 0.05 * direction
    on_surface, seen = seen_region(behind, *one_view, tolerance=0.01)
    assert on_surface.mean() < 0.02
    assert seen.mean() < 0.02


def test_seen_part_of_the_scan(head):
    views, depths, truth = head

    def on_seen_surface(points):
        return seen_region(points, views.c2w, views.intrinsics, depths, tolerance=0.01)[0]

    # The training cameras circle only the front half of the head, so about 3/4 of the scan's
    # surface is seen. The scan compared with itself has a Chamfer distance of nearly 0.
    distances = chamfer_distance(truth, truth, num_points=20_000, seed=1,
                                 fitted_filter=on_seen_surface, truth_filter=on_seen_surface)
    assert 0.6 < distances["truth_share"] < 0.85
    assert distances["fitted_share"] == distances["truth_share"]
    assert distances["chamfer"] < 1e-9
