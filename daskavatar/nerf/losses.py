"""Losses and metrics of the NeRF fit: image PSNR and the Chamfer distance of meshes."""

import jax.numpy as jnp
import numpy as np


def mse(predicted, target):
    """Mean squared error over all elements of equally shaped arrays."""
    return jnp.mean((predicted - target) ** 2)


def psnr_from_mse(value: float) -> float:
    """Peak signal-to-noise ratio in dB of colours in [0, 1] with the given MSE."""
    return float(-10.0 * np.log10(max(float(value), 1e-10)))


def chamfer_distance(fitted, truth, *, num_points: int = 50_000, seed: int = 0) -> dict:
    """Mean distances between two ``trimesh.Trimesh`` surfaces, as fractions of ``truth``'s size.

    Both surfaces are sampled uniformly by area with ``num_points`` points. ``accuracy`` is
    the mean distance from the fitted samples to the nearest true sample, ``completeness``
    the reverse, and ``chamfer`` their mean. All three are divided by the diagonal of
    ``truth``'s bounding box, which is also returned as ``diagonal``.
    """
    import trimesh
    from scipy.spatial import cKDTree

    fitted_points, _ = trimesh.sample.sample_surface(fitted, num_points, seed=seed)
    true_points, _ = trimesh.sample.sample_surface(truth, num_points, seed=seed)
    diagonal = float(np.linalg.norm(truth.bounds[1] - truth.bounds[0]))
    accuracy = float(cKDTree(true_points).query(fitted_points)[0].mean()) / diagonal
    completeness = float(cKDTree(fitted_points).query(true_points)[0].mean()) / diagonal
    return {"accuracy": accuracy, "completeness": completeness,
            "chamfer": (accuracy + completeness) / 2, "diagonal": diagonal}
