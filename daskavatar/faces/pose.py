"""Head pose from 68 landmarks by PnP against a 3D landmark template.

World frame: the head frame of ``landmarks68_template.csv`` (x toward the subject's left,
y down, z into the head, origin at the mean of the 68 points), scaled so the outer eye
corners are ``EYE_DISTANCE`` world units apart. Cameras follow the OpenCV convention
(x right, y down, looking along +z). ``c2w`` is the 4x4 camera-to-world matrix.
The intrinsics are an estimate: EXIF focal lengths are rarely present in face datasets,
so the focal length is ``focal_length_factor`` times the longer image side.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import cv2
import numpy as np

EYE_DISTANCE = 0.5
"""World units between the outer eye corners; keeps the head inside [-1.2, 1.2]^3."""
_TEMPLATE_PATH = os.path.join(os.path.dirname(__file__), "landmarks68_template.csv")


@dataclasses.dataclass(frozen=True)
class HeadPose:
    """Camera pose of one photo relative to the head."""

    c2w: np.ndarray
    """Camera-to-world matrix, shape (4, 4), OpenCV camera axes."""
    intrinsics: np.ndarray
    """Pinhole matrix K of the full image, shape (3, 3)."""
    reprojection_error: float
    """Mean distance between the landmarks and the projected template, in pixels."""
    yaw: float
    """Rotation about the head's vertical axis in degrees; 0 is frontal."""
    pitch: float
    """Rotation about the head's left-right axis in degrees."""
    roll: float
    """Rotation about the viewing axis in degrees."""


@functools.lru_cache(maxsize=1)
def landmark_template() -> np.ndarray:
    """Return the 3D template in world units, shape (68, 3), float64."""
    rows = []
    with open(_TEMPLATE_PATH, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or line.startswith("index") or not line.strip():
                continue
            rows.append([float(v) for v in line.split(",")[1:4]])
    return np.array(rows, dtype=np.float64) * EYE_DISTANCE


def intrinsics_for(width: int, height: int, focal_length_factor: float) -> np.ndarray:
    """Return K, shape (3, 3), with the principal point at the image centre."""
    focal = focal_length_factor * max(width, height)
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def estimate_pose(landmarks: np.ndarray, intrinsics: np.ndarray) -> HeadPose:
    """Estimate the camera pose from landmarks ``(68, 2)`` and intrinsics ``(3, 3)``.

    EPnP gives the start, then Levenberg-Marquardt minimises the reprojection error.
    Raises ValueError when the solver fails or puts the head behind the camera.
    """
    template = landmark_template()
    image_points = landmarks.astype(np.float64)

    ok, rvec, tvec = cv2.solvePnP(template, image_points, intrinsics, None,
                                  flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        raise ValueError("EPnP found no pose")
    rvec, tvec = cv2.solvePnPRefineLM(template, image_points, intrinsics, None, rvec, tvec)
    if tvec[2, 0] <= 0:
        raise ValueError("the pose places the head behind the camera")

    projected, _ = cv2.projectPoints(template, rvec, tvec, intrinsics, None)
    error = float(np.linalg.norm(projected[:, 0, :] - image_points, axis=1).mean())

    rotation, _ = cv2.Rodrigues(rvec)
    c2w = np.eye(4)
    c2w[:3, :3] = rotation.T
    c2w[:3, 3] = -rotation.T @ tvec[:, 0]
    yaw, pitch, roll = euler_angles(rotation)
    return HeadPose(c2w=c2w, intrinsics=intrinsics, reprojection_error=error,
                    yaw=yaw, pitch=pitch, roll=roll)


def euler_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """Return (yaw, pitch, roll) in degrees of a world-to-camera rotation ``(3, 3)``.

    The head turns by yaw about its y axis, then pitch about x, then roll about z
    (rotation = Rz(roll) @ Rx(-pitch) @ Ry(yaw)); identity is a frontal view. The signs
    agree with the ground truth of AFLW2000-3D (compared on its images): positive yaw turns
    the nose toward the image's right.
    """
    pitch = -np.degrees(np.arcsin(np.clip(rotation[2, 1], -1.0, 1.0)))
    yaw = np.degrees(np.arctan2(-rotation[2, 0], rotation[2, 2]))
    roll = np.degrees(np.arctan2(-rotation[0, 1], rotation[1, 1]))
    return float(yaw), float(pitch), float(roll)
