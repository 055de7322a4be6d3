"""The 68 iBUG/300-W landmarks of a detected face, from dlib's shape predictor."""

from __future__ import annotations

import numpy as np

from daskavatar.faces.detect import Detection
from daskavatar.faces.models import shape_predictor

def predict_landmarks(image: np.ndarray, detection: Detection) -> np.ndarray:
    """Predict the 68 landmarks inside ``detection.box`` of an RGB image ``(h, w, 3)``.

    Returns pixel coordinates of shape ``(68, 2)`` as (x, y), float32, 0-based with the
    origin at the top-left corner of the top-left pixel.
    """
    import dlib

    left, top, right, bottom = (int(round(v)) for v in detection.box)
    shape = shape_predictor()(np.ascontiguousarray(image), dlib.rectangle(left, top, right, bottom))
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
    return points + 0.5
