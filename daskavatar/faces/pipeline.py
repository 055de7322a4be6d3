"""The per-image chain of the map stage: decode, detect, landmarks, pose, crop.

Each step that can fail on real photos raises :class:`ImageRejected` with a reason code.
:func:`analyse_image` turns those, and any other error of the chain, into a result with a
reason, so a bad image never fails its map task. Reason codes:

===================  ===========================================================
``empty_file``       the file has zero bytes
``unreadable``       not an image, truncated or corrupt
``too_large``        more pixels than ``max_image_pixels``
``no_face``          no face scored above ``min_detection_score``
``face_too_small``   the face box side is below ``min_face_size`` pixels
``pose_failed``      PnP found no plausible head pose for the landmarks
``analysis_failed``  an unexpected error in dlib, OpenCV or NumPy, named in the message
===================  ===========================================================
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from daskavatar.faces.align import crop_face
from daskavatar.faces.detect import detect_main_face
from daskavatar.faces.landmarks import predict_landmarks
from daskavatar.faces.pose import estimate_pose, intrinsics_for
from daskavatar.io.images import ImageRejected, read_image

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FaceResult:
    """Outcome of the map-stage chain for one image."""

    status: str
    """``ok`` or a reason code from the module docstring."""
    message: str = ""
    face_count: int = 0
    detection_score: float = float("nan")
    reprojection_error: float = float("nan")
    """Mean landmark reprojection error of the head pose, in pixels of the original image."""
    yaw: float = float("nan")
    pitch: float = float("nan")
    roll: float = float("nan")
    crop: np.ndarray | None = None
    """Aligned crop ``(r, r, 3)`` uint8."""
    landmarks: np.ndarray | None = None
    """Landmarks in crop pixels ``(68, 2)``."""
    c2w: np.ndarray | None = None
    """Camera-to-world ``(4, 4)``."""
    intrinsics: np.ndarray | None = None
    """Pinhole matrix of the crop ``(3, 3)``."""


def analyse_image(url: str, config, *, storage_options=None) -> FaceResult:
    """Run the map-stage chain on one image; failures become a result with a reason."""
    try:
        return _analyse(url, config, storage_options)
    except ImageRejected as rejected:
        return FaceResult(status=rejected.reason, message=rejected.message)
    except Exception as error:  # dlib and OpenCV raise their own error types
        logger.exception("Face analysis of %s failed", url)
        return FaceResult(status="analysis_failed",
                          message=f"{url}: face analysis failed: {type(error).__name__}: {error}")


def _analyse(url, config, storage_options) -> FaceResult:
    image = read_image(url, max_pixels=config.max_image_pixels, storage_options=storage_options)

    detection = detect_main_face(image, upsample=config.detector_upsample,
                                 min_score=config.min_detection_score)
    if detection is None:
        raise ImageRejected("no_face", f"{url}: no face scored above min_detection_score = "
                                       f"{config.min_detection_score}")
    left, top, right, bottom = detection.box
    side = min(right - left, bottom - top)
    if side < config.min_face_size:
        raise ImageRejected("face_too_small", f"{url}: the face is {side:.0f} px wide, below "
                                              f"min_face_size = {config.min_face_size}")

    landmarks = predict_landmarks(image, detection)
    height, width = image.shape[:2]
    intrinsics = intrinsics_for(width, height, config.focal_length_factor)
    try:
        pose = estimate_pose(landmarks, intrinsics)
    except ValueError as error:
        raise ImageRejected("pose_failed", f"{url}: {error}") from error

    crop, crop_landmarks, crop_intrinsics = crop_face(
        image, landmarks, intrinsics, resolution=config.output_resolution,
        crop_scale=config.crop_scale)
    return FaceResult(status="ok", face_count=detection.face_count,
                      detection_score=detection.score,
                      reprojection_error=pose.reprojection_error, yaw=pose.yaw, pitch=pose.pitch,
                      roll=pose.roll, crop=crop, landmarks=crop_landmarks, c2w=pose.c2w,
                      intrinsics=crop_intrinsics)
