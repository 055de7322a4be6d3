"""The aligned square face crop and its camera intrinsics.

The crop is an axis-aligned square around the landmarks, resized to the output resolution.
Because it only scales and translates the image, the crop is itself a pinhole image whose
intrinsics follow from the full image's, and the head pose carries over unchanged.
"""

from __future__ import annotations

import cv2
import numpy as np


def crop_face(image: np.ndarray, landmarks: np.ndarray, intrinsics: np.ndarray, *,
              resolution: int, crop_scale: float):
    """Cut the aligned square crop around ``landmarks`` from an RGB image ``(h, w, 3)``.

    The square is centred slightly above the landmarks' centre, where the forehead is, and
    its side is ``crop_scale`` times the larger extent of the landmarks. Parts outside the
    image are filled by replicating the border.

    Returns ``(crop, crop_landmarks, crop_intrinsics)`` of shapes
    ``(resolution, resolution, 3)`` uint8, ``(68, 2)`` float32 and ``(3, 3)`` float64.
    """
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    side = crop_scale * float((high - low).max())
    centre = (low + high) / 2.0 - np.array([0.0, 0.08 * side])
    scale = resolution / side

    # Maps original pixel coordinates to crop pixel coordinates.
    affine = np.array([[scale, 0.0, resolution / 2.0 - scale * centre[0]],
                       [0.0, scale, resolution / 2.0 - scale * centre[1]]])
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(image, affine, (resolution, resolution), flags=interpolation,
                          borderMode=cv2.BORDER_REPLICATE)

    crop_landmarks = landmarks @ affine[:, :2].T + affine[:, 2]
    crop_intrinsics = np.vstack([affine, [0.0, 0.0, 1.0]]) @ intrinsics
    return crop, crop_landmarks.astype(np.float32), crop_intrinsics


def face_mask(landmarks: np.ndarray, resolution: int) -> np.ndarray:
    """Rasterise the face region of a crop from its landmarks ``(68, 2)``.

    The region is the convex hull of the 68 points plus the eyebrows lifted toward the
    hairline, since the iBUG scheme has no forehead points. Returns a bool mask of shape
    ``(resolution, resolution)``.
    """
    brows = landmarks[17:27]
    chin = landmarks[8]
    brow_centre = brows.mean(axis=0)
    up = brow_centre - chin
    up = up / (np.linalg.norm(up) + 1e-9)
    forehead = brows + 0.35 * np.linalg.norm(brow_centre - chin) * up

    hull = cv2.convexHull(np.vstack([landmarks, forehead]).astype(np.float32))
    mask = np.zeros((resolution, resolution), dtype=np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull[:, 0, :] * 16).astype(np.int32), 1,
                       lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)
