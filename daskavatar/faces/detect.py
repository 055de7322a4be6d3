"""Face detection with dlib's HOG detector, a second finer pass for small faces, and the main face.

dlib's HOG detector scans an 80x80 pixel window over an image pyramid, so at scale ``s`` it
finds faces from ``80 / s`` pixels up to the image size. Detection runs in at most two
passes:

1. a coarse pass on a copy whose longer side is at most ``coarse_side`` pixels, which is
   fast and finds the faces of portraits;
2. when the coarse pass finds no face, or when every face must be counted, a fine pass at
   the scale where a face of ``min_face_size`` pixels fills the 80 pixel window. The fine
   pass is capped at ``max_pixels`` detector pixels so it stays within the worker's
   memory. Faces below the size that cap allows are not found.

Both HOG passes run on the grayscale image. On a colour image dlib computes the gradients of
each channel and keeps the strongest, which made the detector about 30 % slower on 640
pixel portraits (0.030 against 0.023 s of CPU per image) for no loss on the benchmarks:
landmark NME unchanged, detection recall 1.000 instead of 0.977
(``benchmarks/RESULTS.md``).

Optionally dlib's CNN (MMOD) detector, which also finds faces turned far to the side, runs
on a copy of at most ``cnn_side`` pixels when the HOG passes find nothing. It takes
seconds per image on one CPU core, so it is off by default. Landmarks are in
:mod:`daskavatar.faces.landmarks`.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from daskavatar.faces.models import cnn_face_detector, face_detector

HOG_WINDOW = 80
"""Side in pixels of the smallest face dlib's frontal HOG detector finds at scale 1."""


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face."""

    box: tuple[float, float, float, float]
    """Left, top, right, bottom in pixels of the image given to the detector."""
    score: float
    """Detector score: the HOG SVM margin, or the CNN's confidence (higher is more certain)."""
    detector: str = "hog"
    """``hog`` or ``cnn``."""

    @property
    def side(self) -> float:
        """Geometric mean of the box width and height, in pixels."""
        left, top, right, bottom = self.box
        return math.sqrt(max(right - left, 0.0) * max(bottom - top, 0.0))


@dataclasses.dataclass(frozen=True)
class Detection:
    """The main face of an image and how many faces were found."""

    box: tuple[float, float, float, float]
    """Left, top, right, bottom in pixels of the original image."""
    score: float
    """Detection score of the main face."""
    face_count: int
    """Number of faces that passed the score filter."""
    faces: tuple[Face, ...] = ()
    """Every face that passed the score filter, the main face first."""


def detect_faces(image: np.ndarray, *, min_score: float, min_face_size: float = 40.0,
                 coarse_side: int = 640, max_pixels: int = 4_000_000, count_all: bool = False,
                 cnn_side: int = 0) -> list[Face]:
    """Detect the faces of an RGB image ``(height, width, 3)``, the main face first.

    Detections scoring below ``min_score`` are dropped, because dlib also returns faint
    false faces (HOG margins near 0) beside real ones (near 1). With ``count_all`` the fine
    pass always runs, so small faces beside a large one are found and counted.
    ``cnn_side`` > 0 enables the CNN detector as a last resort (see the module docstring).
    The order is :func:`main_face_order`.
    """
    height, width = image.shape[:2]
    longer = max(height, width)
    coarse = min(1.0, coarse_side / longer)
    fine = min(HOG_WINDOW / max(min_face_size, 1.0), math.sqrt(max_pixels / (height * width)))

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    faces = _run_hog(gray, coarse, min_score)
    if (count_all or not faces) and fine > coarse * 1.05:
        found = _run_hog(gray, fine, min_score)
        faces = _merge(faces, found) if count_all else found
    if not faces and cnn_side > 0:
        faces = _run_cnn(image, min(1.0, cnn_side / longer), min_score)
    return sorted(faces, key=main_face_order(width, height))


def detect_main_face(image: np.ndarray, *, min_score: float, **options) -> Detection | None:
    """Detect faces with :func:`detect_faces`; return the main one, or None without a face."""
    faces = detect_faces(image, min_score=min_score, **options)
    if not faces:
        return None
    return Detection(box=faces[0].box, score=faces[0].score, face_count=len(faces),
                     faces=tuple(faces))


def main_face_order(width: int, height: int):
    """Return the sort key that puts the main face first.

    The main face is the largest box, because in portrait collections the subject is the
    closest person. Boxes within 10 % of the largest side count as equally large, and among
    those the one nearest the image centre wins, then the higher score.
    """
    centre = np.array([width / 2.0, height / 2.0])
    diagonal = math.hypot(width, height)

    def key(face: Face):
        left, top, right, bottom = face.box
        offset = np.linalg.norm(np.array([(left + right) / 2, (top + bottom) / 2]) - centre)
        # Sizes are compared on a log scale in steps of 10 %, so near-equal boxes tie.
        size_class = -math.floor(math.log(max(face.side, 1.0)) / math.log(1.1))
        return size_class, offset / diagonal, -face.score
    return key


def _scaled(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return np.ascontiguousarray(image)
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def _run_hog(image: np.ndarray, scale: float, min_score: float) -> list[Face]:
    rects, scores, _ = face_detector().run(_scaled(image, scale), 0, min(min_score, 0.0))
    return [Face(box=(r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale),
                 score=float(s)) for r, s in zip(rects, scores) if s >= min_score]


def _run_cnn(image: np.ndarray, scale: float, min_score: float) -> list[Face]:
    faces = []
    for found in cnn_face_detector()(_scaled(image, scale), 0):
        r = found.rect
        if found.confidence >= min_score:
            faces.append(Face(box=(r.left() / scale, r.top() / scale, r.right() / scale,
                                   r.bottom() / scale), score=float(found.confidence),
                              detector="cnn"))
    return faces


def _merge(first: list[Face], second: list[Face], overlap: float = 0.5) -> list[Face]:
    """Return the union of two detection lists, dropping a box of ``second`` that overlaps one
    of ``first`` by more than ``overlap`` IoU."""
    from daskavatar.faces.evaluation import box_iou

    merged = list(first)
    for face in second:
        if all(box_iou(face.box, kept.box) <= overlap for kept in first):
            merged.append(face)
    return merged
