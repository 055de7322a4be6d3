"""Posed photos as NeRF training targets, with the few-view helpers of the reduce stage.

Real identities often have two to five near-frontal photos. Two helpers get more out of
them: :meth:`TrainingViews.with_mirrored` adds each photo flipped left to right with the
camera mirrored through the face's plane of symmetry, and :meth:`TrainingViews.split_held_out`
keeps one photo out of the fit to measure the PSNR of a novel view.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from daskavatar.nerf.rays import pixel_rays, sphere_bounds

BACKGROUND = (1.0, 1.0, 1.0)
"""Colour behind the subject; masked-out pixels are trained toward it."""

# Mirror through the plane x = 0 of the head frame, the face's plane of symmetry, and the
# flip of the camera's x axis that keeps the mirrored camera right-handed.
_MIRROR_WORLD = np.diag([-1.0, 1.0, 1.0, 1.0])
_FLIP_CAMERA_X = np.diag([-1.0, 1.0, 1.0, 1.0])


@dataclasses.dataclass(frozen=True)
class TrainingViews:
    """The photos of one identity (or one benchmark scene) as training targets."""

    images: np.ndarray
    """Colours in [0, 1], shape ``(N, H, W, 3)``, float32, masked pixels set to the background."""
    c2w: np.ndarray
    """Camera-to-world matrices ``(N, 4, 4)``, OpenCV camera axes."""
    intrinsics: np.ndarray
    """Pinhole matrices ``(N, 3, 3)`` in pixels of ``images``."""
    masks: np.ndarray | None = None
    """Foreground masks ``(N, H, W)`` bool, or None when every pixel may show the subject."""

    @classmethod
    def from_crops(cls, crops, masks, c2w, intrinsics):
        """Build views from uint8 crops ``(N, H, W, 3)`` and bool face masks ``(N, H, W)``."""
        images = crops.astype(np.float32) / 255.0
        images = np.where(masks[..., None], images, np.asarray(BACKGROUND, dtype=np.float32))
        return cls(images=images, c2w=c2w.astype(np.float64),
                   intrinsics=intrinsics.astype(np.float64), masks=masks.astype(bool))

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices) -> TrainingViews:
        """Return the views at ``indices`` (a sequence of ints)."""
        indices = np.asarray(indices, dtype=np.int64)
        return TrainingViews(images=self.images[indices], c2w=self.c2w[indices],
                             intrinsics=self.intrinsics[indices],
                             masks=None if self.masks is None else self.masks[indices])

    def held_out_index(self, *, min_views: int = 3) -> int | None:
        """Return the view to hold out for evaluation, or None below ``min_views`` views.

        It is the view whose camera centre is closest to the mean of the others, so the
        rest still surround it and its PSNR measures interpolation, not extrapolation to an
        unseen side.
        """
        if len(self) < min_views:
            return None
        centres = self.c2w[:, :3, 3]
        distances = [np.linalg.norm(centres[i] - np.delete(centres, i, axis=0).mean(axis=0))
                     for i in range(len(self))]
        return int(np.argmin(distances))

    def split_held_out(self, *, min_views: int = 3):
        """Split off the view of :meth:`held_out_index`; returns ``(training, held_out)``.

        ``held_out`` is None, and ``training`` all views, below ``min_views`` views.
        """
        held_index = self.held_out_index(min_views=min_views)
        if held_index is None:
            return self, None
        rest = [i for i in range(len(self)) if i != held_index]
        return self.subset(rest), self.subset([held_index])

    def with_mirrored(self) -> TrainingViews:
        """Append every view flipped left to right, seen by the mirrored camera.

        A pixel at column ``u`` of the flipped image shows what the original shows at
        ``W - u``. Its ray is the original ray mirrored through x = 0 when the camera is
        ``M @ c2w @ F`` (M mirrors the world x, F the camera x) and the principal point moves
        to ``W - cx``. This assumes a face symmetric about the head frame's x = 0 plane.
        """
        width = self.images.shape[2]
        mirrored_c2w = _MIRROR_WORLD @ self.c2w @ _FLIP_CAMERA_X
        mirrored_intrinsics = self.intrinsics.copy()
        mirrored_intrinsics[:, 0, 2] = width - self.intrinsics[:, 0, 2]
        mirrored = TrainingViews(
            images=self.images[:, :, ::-1], c2w=mirrored_c2w, intrinsics=mirrored_intrinsics,
            masks=None if self.masks is None else self.masks[:, :, ::-1])
        return concatenate([self, mirrored])

    def pixel_rays(self, view: np.ndarray, row: np.ndarray, col: np.ndarray):
        """Rays ``(R, 3)`` through pixel centres of views ``view``, rows ``row``, cols ``col``."""
        return pixel_rays(self.c2w[view], self.intrinsics[view], col + 0.5, row + 0.5)

    def sample(self, rng: np.random.Generator, count: int, occupancy=None):
        """Draw ``count`` random pixels; returns rays, near/far bounds and target colours.

        Bounds come from ``occupancy`` (an :class:`~daskavatar.nerf.occupancy.OccupancyGrid`)
        when given, otherwise from the bounding sphere.
        """
        num_views, height, width, _ = self.images.shape
        view = rng.integers(0, num_views, count)
        row = rng.integers(0, height, count)
        col = rng.integers(0, width, count)
        rays_o, rays_d = self.pixel_rays(view, row, col)
        near, far = ray_bounds(rays_o, rays_d, occupancy)
        return rays_o, rays_d, near, far, self.images[view, row, col]


def concatenate(parts: list[TrainingViews]) -> TrainingViews:
    """Join views of equal image size into one set."""
    masks = None
    if all(p.masks is not None for p in parts):
        masks = np.concatenate([p.masks for p in parts])
    return TrainingViews(images=np.concatenate([p.images for p in parts]),
                         c2w=np.concatenate([p.c2w for p in parts]),
                         intrinsics=np.concatenate([p.intrinsics for p in parts]), masks=masks)


def ray_bounds(rays_o: np.ndarray, rays_d: np.ndarray, occupancy=None):
    """Return ``near, far`` ``(R,)`` from the occupancy grid, or the bounding sphere without one."""
    if occupancy is None:
        return sphere_bounds(rays_o, rays_d)
    return occupancy.ray_bounds(rays_o, rays_d)
