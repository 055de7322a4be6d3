"""The per-image chain of the map stage: decode, detect, landmarks, checks, pose, crop.

Each step that can fail on real photos raises :class:`ImageRejected` with a reason code.
:func:`analyse_image` turns those, and any other error of the chain, into a result with a
reason, so a bad image never fails its map task. Reason codes, in the order they are
checked:

=====================  ===========================================================
decoding codes         ``not_found``, ``read_failed``, ``empty_file``, ``not_an_image``,
                       ``truncated``, ``corrupt``, ``too_large``; see
                       :mod:`daskavatar.io.decode`
``no_face``            no face scored above ``min_detection_score``
``face_too_small``     the face box side is below ``min_face_size`` pixels
``face_cut_off``       too much of the face lies outside the image
``too_blurred``        the face's variance of the Laplacian is below ``min_sharpness``
``pose_failed``        PnP found no plausible head pose for the landmarks
``pose_out_of_range``  yaw, pitch or roll beyond ``max_yaw``, ``max_pitch``, ``max_roll``
``analysis_failed``    an unexpected error in dlib, OpenCV or NumPy, named in the message
=====================  ===========================================================

The quality checks are in :mod:`daskavatar.faces.quality`.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from daskavatar.faces import quality
from daskavatar.faces.align import crop_face
from daskavatar.faces.detect import Detection, detect_main_face
from daskavatar.faces.landmarks import predict_landmarks
from daskavatar.faces.pose import estimate_pose, intrinsics_for
from daskavatar.io.decode import ImageRejected, decode_image

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FaceResult:
    """Outcome of the map-stage chain for one image."""

    status: str
    """``ok`` or a reason code from the module docstring."""
    message: str = ""
    face_count: int = 0
    detection_score: float = float("nan")
    face_size: float = float("nan")
    """Side of this face's detection box in pixels of the stored image."""
    sharpness: float = float("nan")
    """Variance of the Laplacian of the face, see :func:`quality.sharpness`."""
    decode_scale: float = 1.0
    """Decoded over stored image size; below 1 for large JPEGs decoded at reduced size."""
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
    image_landmarks: np.ndarray | None = None
    """Landmarks in pixels of the decoded image ``(68, 2)``."""
    image_intrinsics: np.ndarray | None = None
    """Pinhole matrix of the decoded image ``(3, 3)``."""
    descriptor: np.ndarray | None = None
    """128-D face descriptor ``(128,)`` float32 when requested, else None."""


def analyse_image(url: str, config, *, storage_options=None,
                  with_descriptor: bool = False) -> FaceResult:
    """Run the map-stage chain on the main face of one image; see :func:`analyse_faces`."""
    return analyse_faces(url, config, storage_options=storage_options,
                         with_descriptor=with_descriptor, max_faces=1)[0]


def analyse_faces(url: str, config, *, storage_options=None, with_descriptor: bool = False,
                  max_faces: int = 1) -> list[FaceResult]:
    """Run the map-stage chain on up to ``max_faces`` faces of one image, main face first.

    Failures become results with a reason: an image that cannot be decoded or shows no
    face gives one result, and each analysed face gets its own result. With ``max_faces``
    above 1 the detector's fine pass always runs, so small faces beside a large one are
    found. ``with_descriptor`` also computes the 128-D descriptor of each usable face.
    """
    try:
        decoded, detection = _detect(url, config, storage_options, count_all=max_faces > 1)
    except ImageRejected as rejected:
        return [FaceResult(status=rejected.reason, message=rejected.message)]
    except Exception as error:  # dlib and OpenCV raise their own error types
        return [_failed(url, error)]

    results = []
    for index, face in enumerate(detection.faces[:max_faces]):
        result = FaceResult(status="ok", face_count=detection.face_count,
                            detection_score=face.score, decode_scale=decoded.scale,
                            face_size=face.side / decoded.scale)
        try:
            _analyse_face(url, decoded, face, config, result, with_descriptor)
        except ImageRejected as rejected:
            result.status, result.message = rejected.reason, rejected.message
        except Exception as error:  # dlib and OpenCV raise their own error types
            failed = _failed(url, error)
            result.status, result.message = failed.status, failed.message
        if result.status != "ok":
            result.crop = result.landmarks = result.c2w = result.intrinsics = None
            result.descriptor = None
        if index > 0:
            result.message = f"face {index + 1} of {detection.face_count}: {result.message}" \
                if result.message else f"face {index + 1} of {detection.face_count}"
        results.append(result)
    return results


def _failed(url, error) -> FaceResult:
    logger.exception("Face analysis of %s failed", url)
    return FaceResult(status="analysis_failed",
                      message=f"{url}: face analysis failed: {type(error).__name__}: {error}")


def _detect(url, config, storage_options, *, count_all: bool):
    decoded = decode_image(url, max_pixels=config.max_image_pixels,
                           max_side=config.max_decode_side or None,
                           storage_options=storage_options)

    # min_face_size is in pixels of the stored image; the detector runs on the decoded one.
    min_face_size = config.min_face_size * decoded.scale
    detection = detect_main_face(decoded.pixels, min_score=config.min_detection_score,
                                 min_face_size=max(min_face_size, 1.0),
                                 coarse_side=config.detector_coarse_side,
                                 max_pixels=config.detector_max_pixels,
                                 count_all=config.count_all_faces or count_all,
                                 cnn_side=config.cnn_detector_side)
    if detection is None:
        raise ImageRejected("no_face", f"{url}: no face scored above min_detection_score = "
                                       f"{config.min_detection_score}")
    return decoded, detection


def _analyse_face(url, decoded, face, config, result: FaceResult,
                  with_descriptor: bool) -> None:
    """Fill ``result`` step by step, so a rejected face still reports what was measured."""
    image = decoded.pixels
    height, width = image.shape[:2]
    _reject_if(url, quality.check_size(result.face_size, config))

    landmarks = predict_landmarks(image, Detection(box=face.box, score=face.score,
                                                   face_count=result.face_count))
    _reject_if(url, quality.check_cut_off(landmarks, width, height, config))
    result.sharpness = quality.sharpness(image, landmarks)
    _reject_if(url, quality.check_sharpness(result.sharpness, config))

    intrinsics = intrinsics_for(width, height, config.focal_length_factor)
    try:
        pose = estimate_pose(landmarks, intrinsics)
    except ValueError as error:
        raise ImageRejected("pose_failed", f"{url}: {error}") from error
    result.reprojection_error = pose.reprojection_error
    result.yaw, result.pitch, result.roll = pose.yaw, pose.pitch, pose.roll
    _reject_if(url, quality.check_pose(pose.yaw, pose.pitch, pose.roll, config))

    result.crop, result.landmarks, result.intrinsics = crop_face(
        image, landmarks, intrinsics, resolution=config.output_resolution,
        crop_scale=config.crop_scale)
    result.c2w = pose.c2w
    result.image_landmarks, result.image_intrinsics = landmarks, intrinsics
    if with_descriptor:
        from daskavatar.faces.descriptors import face_descriptor
        result.descriptor = face_descriptor(image, landmarks)


def _reject_if(url, failed) -> None:
    if failed is not None:
        reason, message = failed
        raise ImageRejected(reason, f"{url}: {message}")
