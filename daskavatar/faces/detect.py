"""Face detection with dlib's HOG detector and the choice of the main face.

The detector runs on a copy scaled so its longer side is at most ``max_side`` pixels, because
large photos gain nothing from full resolution and would cost worker memory. Boxes are mapped
back to the original image. Landmarks are in :mod:`daskavatar.faces.landmarks`.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from daskavatar.faces.models import face_detector


@dataclasses.dataclass(frozen=True)
class Detection:
    """The main face of an image and how many faces were found."""

    box: tuple[float, float, float, float]
    """Left, top, right, bottom in pixels of the original image."""
    score: float
    """dlib's detection score of the main face (higher is more certain)."""
    face_count: int
    """Number of faces that passed the score filter."""


def detect_main_face(image: np.ndarray, *, upsample: int, min_score: float,
                     max_side: int = 1024) -> Detection | None:
    """Detect faces in an RGB image ``(height, width, 3)`` and return the main one.

    Detections scoring below ``min_score`` are dropped: with upsampling, dlib finds faint
    false faces (scores near 0.1) beside real ones (near 1). The main face is the one with
    the largest box, because in portrait collections the subject is the closest person.
    Ties go to the higher score. Returns None when no face passes the filter.
    """
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    small = image if scale == 1.0 else cv2.resize(
        image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)

    rects, scores, _ = face_detector().run(np.ascontiguousarray(small), upsample, 0.0)
    faces = [(r, s) for r, s in zip(rects, scores) if s >= min_score]
    if not faces:
        return None

    def area(face):
        rect = face[0]
        return (rect.width() * rect.height(), face[1])

    rect, score = max(faces, key=area)
    box = (rect.left() / scale, rect.top() / scale, rect.right() / scale, rect.bottom() / scale)
    return Detection(box=box, score=float(score), face_count=len(faces))
