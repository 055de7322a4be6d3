"""Camera rays and their near/far bounds in the head frame.

Cameras follow the OpenCV convention (x right, y down, looking along +z), as the map stage
writes them. Directions are unit vectors, so distances along a ray are in world units.
"""

from __future__ import annotations

import numpy as np

BOUND_RADIUS = 1.2
"""Radius of the sphere around the head frame's origin that contains the whole head."""


def pixel_rays(c2w: np.ndarray, intrinsics: np.ndarray, u: np.ndarray, v: np.ndarray):
    """Rays through pixel coordinates ``u, v`` (shape ``(R,)``, pixel centres at +0.5).

    ``c2w`` ``(R, 4, 4)`` and ``intrinsics`` ``(R, 3, 3)`` are per ray. Returns ``rays_o``
    and ``rays_d`` of shape ``(R, 3)``, float32, with unit directions.
    """
    x = (u - intrinsics[:, 0, 2]) / intrinsics[:, 0, 0]
    y = (v - intrinsics[:, 1, 2]) / intrinsics[:, 1, 1]
    directions_cam = np.stack([x, y, np.ones_like(x)], axis=-1)
    rays_d = np.einsum("rij,rj->ri", c2w[:, :3, :3], directions_cam)
    rays_d /= np.linalg.norm(rays_d, axis=-1, keepdims=True)
    rays_o = c2w[:, :3, 3]
    return rays_o.astype(np.float32), rays_d.astype(np.float32)


def sphere_bounds(rays_o: np.ndarray, rays_d: np.ndarray, radius: float = BOUND_RADIUS):
    """Return ``near, far`` ``(R,)`` where unit rays ``(R, 3)`` cross the bounding sphere.

    Rays that miss the sphere get an empty interval at its far side (``near == far``), so
    they render the background.
    """
    b = np.einsum("ri,ri->r", rays_o, rays_d)
    c = np.einsum("ri,ri->r", rays_o, rays_o) - radius ** 2
    disc = b * b - c
    root = np.sqrt(np.maximum(disc, 0.0))
    near = np.maximum(-b - root, 1e-3)
    far = np.maximum(-b + root, near + 1e-3)
    missed = disc <= 0
    near = np.where(missed, far, near)
    return near.astype(np.float32), far.astype(np.float32)


def orbit_cameras(c2w: np.ndarray, angles_deg) -> np.ndarray:
    """Rotate camera-to-world ``(4, 4)`` about the head's vertical (y) axis by each angle.

    Returns ``(len(angles_deg), 4, 4)``: a turntable around the head seen from ``c2w``.
    """
    cameras = []
    for angle in np.radians(np.asarray(angles_deg, dtype=np.float64)):
        cos, sin = np.cos(angle), np.sin(angle)
        rotation = np.eye(4)
        rotation[:3, :3] = [[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]]
        cameras.append(rotation @ c2w)
    return np.stack(cameras)
