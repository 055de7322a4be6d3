"""Losses and metrics of the NeRF fit: image PSNR and the Chamfer distance of meshes."""

import jax.numpy as jnp
import numpy as np


def mse(predicted, target):
    """Mean squared error over all elements of equally shaped arrays."""
    return jnp.mean((predicted - target) ** 2)


def psnr_from_mse(value: float) -> float:
    """Peak signal-to-noise ratio in dB of colours in [0, 1] with the given MSE."""
    return float(-10.0 * np.log10(max(float(value), 1e-10)))


def chamfer_distance(fitted, truth, *, num_points: int = 50_000, seed: int = 0,
                     fitted_filter=None, truth_filter=None) -> dict:
    """Mean distances between two ``trimesh.Trimesh`` surfaces, as fractions of ``truth``'s size.

    Both surfaces are sampled uniformly by area with ``num_points`` points. ``accuracy`` is
    the mean distance from the fitted samples to the nearest true sample, ``completeness``
    the reverse, and ``chamfer`` their mean. All three are divided by the diagonal of
    ``truth``'s bounding box, which is also returned as ``diagonal``.

    ``fitted_filter`` and ``truth_filter`` map sample points ``(N, 3)`` to a boolean mask
    ``(N,)`` of the samples to average over, for example the region that the training
    cameras saw (:func:`seen_region`). Nearest neighbours are still searched among all
    samples of the other surface. ``fitted_share`` and ``truth_share`` give the fraction of
    samples kept.
    """
    import trimesh
    from scipy.spatial import cKDTree

    fitted_points, _ = trimesh.sample.sample_surface(fitted, num_points, seed=seed)
    true_points, _ = trimesh.sample.sample_surface(truth, num_points, seed=seed)
    diagonal = float(np.linalg.norm(truth.bounds[1] - truth.bounds[0]))

    fitted_kept = np.ones(len(fitted_points), bool) if fitted_filter is None \
        else fitted_filter(fitted_points)
    true_kept = np.ones(len(true_points), bool) if truth_filter is None \
        else truth_filter(true_points)

    accuracy = float(cKDTree(true_points).query(fitted_points[fitted_kept])[0].mean()) / diagonal
    completeness = float(cKDTree(fitted_points).query(true_points[true_kept])[0].mean()) \
        / diagonal
    return {"accuracy": accuracy, "completeness": completeness,
            "chamfer": (accuracy + completeness) / 2, "diagonal": diagonal,
            "fitted_share": float(fitted_kept.mean()), "truth_share": float(true_kept.mean())}



def seen_chamfer_distance(fitted, truth, c2w: np.ndarray, intrinsics: np.ndarray,
                          depths: np.ndarray, *, tolerance: float, num_points: int = 50_000,
                          seed: int = 0) -> dict:
    """Compute :func:`chamfer_distance` over what the cameras saw (:func:`seen_region`).

    Completeness averages over the true surface that some view shows, and accuracy over
    the fitted surface that lies in front of or on what some view shows. ``c2w``,
    ``intrinsics`` and ``depths`` are as in :func:`seen_region`.
    """
    def on_surface(points):
        return seen_region(points, c2w, intrinsics, depths, tolerance=tolerance)[0]

    def in_seen_space(points):
        return seen_region(points, c2w, intrinsics, depths, tolerance=tolerance)[1]

    return chamfer_distance(fitted, truth, num_points=num_points, seed=seed,
                            fitted_filter=in_seen_space, truth_filter=on_surface)

def seen_region(points: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray,
                depths: np.ndarray, *, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Return which of ``points`` ``(N, 3)`` the cameras saw, from true depth maps.

    ``c2w`` ``(V, 4, 4)`` are OpenCV camera-to-world matrices (the camera looks along +z),
    ``intrinsics`` ``(V, 3, 3)`` and ``depths`` ``(V, H, W)`` the depth of the true surface
    along the camera's z axis, 0 where a pixel shows background. Returns two masks ``(N,)``:

    - ``on_surface``: the point lies within ``tolerance`` of the surface that some view
      shows, so it is part of what the cameras observed;
    - ``in_seen_space``: in some view, the point lies in front of the shown surface (or of
      the background) or on it. A fitted surface outside this space is hidden from every
      camera, where the images cannot constrain it.
    """
    on_surface = np.zeros(len(points), bool)
    in_seen_space = np.zeros(len(points), bool)
    height, width = depths.shape[1:]
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)

    for camera, matrix, depth in zip(c2w, intrinsics, depths):
        local = (homogeneous @ np.linalg.inv(camera).T)[:, :3]
        z = local[:, 2]
        in_front = z > 1e-6
        pixels = (local[:, :2] / np.where(in_front, z, 1.0)[:, None]) * np.diag(matrix)[:2] \
            + matrix[:2, 2]
        # The principal point lies ``offset`` past the image centre, and then the ray of
        # pixel column i passes through coordinate i + 0.5 - offset.
        offset = matrix[:2, 2] - np.array([width, height]) / 2
        column, row = np.floor(pixels + offset).astype(int).T
        inside = in_front & (column >= 0) & (column < width) & (row >= 0) & (row < height)

        shown_depth = np.zeros(len(points), np.float64)
        shown_depth[inside] = depth[row[inside], column[inside]]
        background = inside & (shown_depth <= 0)
        surface = inside & (shown_depth > 0)
        on_surface |= surface & (np.abs(z - shown_depth) <= tolerance)
        in_seen_space |= background | (surface & (z <= shown_depth + tolerance))
    return on_surface, in_seen_space
