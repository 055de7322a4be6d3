"""Quality checks of one detected face: size, sharpness, head pose range and the image border.

Each check returns None when the face passes, or an ``(reason, message)`` pair with a stable
reason code that :mod:`daskavatar.faces.pipeline` turns into a rejected record:

=====================  ===========================================================
``face_too_small``     the face box side is below ``min_face_size`` pixels
``too_blurred``        the variance of the Laplacian of the face is below ``min_sharpness``
``pose_out_of_range``  yaw, pitch or roll is beyond ``max_yaw``, ``max_pitch``, ``max_roll``
``face_cut_off``       more than ``max_outside_fraction`` of the face lies outside the image
=====================  ===========================================================

A threshold of 0 (or 180 degrees for the angles) turns its check off.
"""

from __future__ import annotations

import cv2
import numpy as np

SHARPNESS_SIZE = 128
"""Side in pixels of the square the face is resampled to before measuring sharpness."""


def sharpness(image: np.ndarray, landmarks: np.ndarray) -> float:
    """Return the variance of the Laplacian of the face in an RGB image ``(h, w, 3)``.

    The face is the square bounding the 68 ``landmarks`` ``(68, 2)``, resampled to
    :data:`SHARPNESS_SIZE` pixels so faces of different sizes are measured alike. The value
    still depends on the face's resolution: a face smaller than that, or one already
    downscaled, measures lower.
    Sharp photos of faces measure in the hundreds. The same faces blurred by a Gaussian of
    sigma 3 at that size measure about 6 to 10.
    """
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    side = max(float((high - low).max()), 1.0)

    # Only the square around the face is converted to grey, not the whole photo.
    height, width = image.shape[:2]
    left = int(np.clip(np.floor((low[0] + high[0] - side) / 2.0) - 2, 0, width - 1))
    top = int(np.clip(np.floor((low[1] + high[1] - side) / 2.0) - 2, 0, height - 1))
    right = int(np.clip(np.ceil((low[0] + high[0] + side) / 2.0) + 2, left + 1, width))
    bottom = int(np.clip(np.ceil((low[1] + high[1] + side) / 2.0) + 2, top + 1, height))
    region = np.ascontiguousarray(image[top:bottom, left:right])

    centre = (low + high) / 2.0 - np.array([left, top])
    scale = SHARPNESS_SIZE / side
    affine = np.array([[scale, 0.0, SHARPNESS_SIZE / 2.0 - scale * centre[0]],
                       [0.0, scale, SHARPNESS_SIZE / 2.0 - scale * centre[1]]])
    grey = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY)
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    face = cv2.warpAffine(grey, affine, (SHARPNESS_SIZE, SHARPNESS_SIZE), flags=interpolation,
                          borderMode=cv2.BORDER_REPLICATE)
    return float(cv2.Laplacian(face, cv2.CV_64F).var())


def outside_fraction(box, width: int, height: int) -> float:
    """Return the share of the (left, top, right, bottom) ``box`` area outside the image."""
    left, top, right, bottom = box
    area = max(right - left, 0.0) * max(bottom - top, 0.0)
    if area <= 0.0:
        return 1.0
    inside = max(min(right, width) - max(left, 0.0), 0.0) * \
        max(min(bottom, height) - max(top, 0.0), 0.0)
    return float(1.0 - inside / area)


def landmark_box(landmarks: np.ndarray, margin: float = 0.1):
    """Return the box of the landmarks ``(68, 2)`` widened by ``margin`` of its size each side."""
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    pad = margin * (high - low)
    return (*(low - pad), *(high + pad))


def check_size(side: float, config):
    if config.min_face_size > 0 and side < config.min_face_size:
        return "face_too_small", (f"the face is {side:.0f} px wide, below min_face_size = "
                                  f"{config.min_face_size}")
    return None


def check_cut_off(landmarks: np.ndarray, width: int, height: int, config):
    fraction = outside_fraction(landmark_box(landmarks), width, height)
    if config.max_outside_fraction < 1.0 and fraction > config.max_outside_fraction:
        return "face_cut_off", (f"{100 * fraction:.0f} % of the face lies outside the image, "
                                f"more than max_outside_fraction = "
                                f"{config.max_outside_fraction}")
    return None


def check_sharpness(value: float, config):
    if config.min_sharpness > 0 and value < config.min_sharpness:
        return "too_blurred", (f"the face's variance of the Laplacian is {value:.1f}, below "
                               f"min_sharpness = {config.min_sharpness}")
    return None


def check_pose(yaw: float, pitch: float, roll: float, config):
    for name, value, limit in (("yaw", yaw, config.max_yaw), ("pitch", pitch, config.max_pitch),
                               ("roll", roll, config.max_roll)):
        if abs(value) > limit:
            return "pose_out_of_range", (f"the head's {name} is {value:.0f} degrees, beyond "
                                         f"max_{name} = {limit}")
    return None
