"""Joint refinement of one identity's head shape and camera poses (bundle adjustment).

Each photo's pose from :mod:`daskavatar.faces.pose` is fitted alone against the generic
3D landmark template, so photos of one person disagree about the head's shape and their
cameras are not mutually consistent. :func:`refine_identity` estimates one 3D landmark
shape ``(68, 3)`` and every photo's camera together by minimising the landmark
reprojection error over all photos (``scipy.optimize.least_squares``, robust soft-L1 loss,
sparse Jacobian). A weak prior pulls the shape toward the template, which keeps the depth
of the shape sensible when the photos see the face from similar directions. Shape and cameras could
still trade a similarity transform (rotation, translation, scale) between them, so the
result is moved by the similarity that best maps the refined shape onto the template, and
the head stays in the template's world frame.

The jaw line (points 0..16) is a silhouette that slides over the face as the head turns,
so its residuals get a lower weight (:data:`JAW_WEIGHT`).
"""

from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np

from daskavatar.faces.pose import landmark_template

logger = logging.getLogger(__name__)

JAW_WEIGHT = 0.3
"""Weight of the residuals of the jaw points 0..16 relative to the inner points."""


@dataclasses.dataclass(frozen=True)
class BundleResult:
    """Refined cameras and shape of one identity, with the error before and after."""

    c2w: np.ndarray
    """Refined camera-to-world matrices ``(n, 4, 4)``, OpenCV camera axes."""
    shape: np.ndarray
    """Refined 3D landmarks ``(68, 3)`` in world units of the template's frame."""
    error_before: np.ndarray
    """Mean reprojection error per photo ``(n,)`` in pixels: initial poses, template shape."""
    error_after: np.ndarray
    """Mean reprojection error per photo ``(n,)`` in pixels: refined poses and shape."""
    converged: bool
    """Whether the solver met its tolerance within the evaluation budget."""


def reprojection_errors(landmarks: np.ndarray, intrinsics: np.ndarray, c2w: np.ndarray,
                        shape: np.ndarray) -> np.ndarray:
    """Return the mean pixel distance per photo ``(n,)`` between the landmarks and the shape.

    ``landmarks`` ``(n, 68, 2)``; ``shape`` ``(68, 3)`` is projected by ``intrinsics``
    ``(n, 3, 3)`` and ``c2w`` ``(n, 4, 4)``.
    """
    errors = np.empty(len(landmarks))
    for index in range(len(landmarks)):
        w2c = np.linalg.inv(c2w[index])
        projected = _project(shape, w2c[:3, :3], w2c[:3, 3], intrinsics[index])
        errors[index] = np.linalg.norm(projected - landmarks[index], axis=1).mean()
    return errors


def refine_identity(landmarks: np.ndarray, intrinsics: np.ndarray, c2w: np.ndarray, *,
                    shape_prior_weight: float = 0.3, max_evaluations: int = 200) -> BundleResult:
    """Refine the poses ``c2w`` ``(n, 4, 4)`` and a shared shape from ``landmarks`` ``(n, 68, 2)``.

    ``intrinsics`` ``(n, 3, 3)`` stay fixed. ``shape_prior_weight`` is the residual, in
    pixels, of moving a shape point by the distance that projects to one pixel in an
    average photo. Larger values keep the shape nearer the template.

    NOTE: photos that all look at the face from within about 20 degrees of frontal leave
    the depth of the shape weakly constrained, and a weaker prior then lets it flatten and
    the yaw angles grow. The default 0.3 was chosen on synthetic views and five photos of
    one person; the right value for a collection is not known.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    c2w = np.asarray(c2w, dtype=np.float64)
    count = len(landmarks)
    if count == 0:
        raise ValueError("refine_identity needs at least one photo")
    template = landmark_template()
    error_before = reprojection_errors(landmarks, intrinsics, c2w, template)

    poses = []
    for matrix in c2w:
        w2c = np.linalg.inv(matrix)
        rvec, _ = cv2.Rodrigues(w2c[:3, :3])
        poses.append(np.concatenate([rvec[:, 0], w2c[:3, 3]]))
    start = np.concatenate([np.ravel(poses), template.ravel()])

    # Pixels per world unit of an average photo: focal length over the head's depth.
    pixels_per_unit = float(np.mean([k[0, 0] / max(p[5], 1e-6)
                                     for k, p in zip(intrinsics, poses)]))
    prior = shape_prior_weight * pixels_per_unit
    weights = np.ones(68)
    weights[:17] = JAW_WEIGHT

    def residuals(parameters):
        shape = parameters[6 * count:].reshape(68, 3)
        parts = []
        for index in range(count):
            pose = parameters[6 * index:6 * index + 6]
            rotation, _ = cv2.Rodrigues(pose[:3])
            tvec = pose[3:]
            projected = _project(shape, rotation, tvec, intrinsics[index])
            parts.append(((projected - landmarks[index]) * weights[:, None]).ravel())
        parts.append(prior * (shape - template).ravel())
        return np.concatenate(parts)

    from scipy.optimize import least_squares

    solution = least_squares(residuals, start, jac_sparsity=_sparsity(count), method="trf",
                             loss="soft_l1", f_scale=2.0, x_scale="jac",
                             max_nfev=max_evaluations)

    shape = solution.x[6 * count:].reshape(68, 3)
    refined = np.empty_like(c2w)
    for index in range(count):
        rotation, _ = cv2.Rodrigues(solution.x[6 * index:6 * index + 3])
        tvec = solution.x[6 * index + 3:6 * index + 6]
        refined[index] = np.eye(4)
        refined[index, :3, :3] = rotation.T
        refined[index, :3, 3] = -rotation.T @ tvec
    shape, refined = _align_to_template(shape, refined, template)
    error_after = reprojection_errors(landmarks, intrinsics, refined, shape)
    logger.info("Bundle adjustment of %d photos: mean reprojection error %.2f px before, "
                "%.2f px after", count, error_before.mean(), error_after.mean())
    return BundleResult(c2w=refined, shape=shape, error_before=error_before,
                        error_after=error_after, converged=bool(solution.success))


def _align_to_template(shape: np.ndarray, c2w: np.ndarray, template: np.ndarray):
    """Move the shape ``(68, 3)`` and cameras ``(n, 4, 4)`` by the similarity that best maps the
    shape onto the template (Umeyama's least-squares fit), so the head stays in the
    template's frame. Projections are unchanged because the cameras move with the shape."""
    shape_mean, template_mean = shape.mean(axis=0), template.mean(axis=0)
    centred, target = shape - shape_mean, template - template_mean
    u, singular, vt = np.linalg.svd(target.T @ centred)
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign) / (centred ** 2).sum())
    translation = template_mean - scale * rotation @ shape_mean

    aligned = np.empty_like(c2w)
    for index, matrix in enumerate(c2w):
        aligned[index] = np.eye(4)
        aligned[index, :3, :3] = rotation @ matrix[:3, :3]
        aligned[index, :3, 3] = scale * rotation @ matrix[:3, 3] + translation
    return scale * shape @ rotation.T + translation, aligned


def _project(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
             intrinsics: np.ndarray) -> np.ndarray:
    """Project world points ``(m, 3)`` to pixels ``(m, 2)`` with a world-to-camera pose."""
    camera = points @ rotation.T + translation
    projected = camera @ intrinsics.T
    return projected[:, :2] / projected[:, 2:3]


def _sparsity(count: int):
    """Return which parameters each residual depends on, as a sparse ``(residuals, parameters)``."""
    from scipy.sparse import lil_matrix

    rows = count * 136 + 204
    matrix = lil_matrix((rows, 6 * count + 204), dtype=np.int8)
    for index in range(count):
        block = slice(index * 136, (index + 1) * 136)
        matrix[block, 6 * index:6 * index + 6] = 1
        for point in range(68):
            residual = index * 136 + 2 * point
            matrix[residual:residual + 2, 6 * count + 3 * point:6 * count + 3 * point + 3] = 1
    for value in range(204):
        matrix[count * 136 + value, 6 * count + value] = 1
    return matrix
