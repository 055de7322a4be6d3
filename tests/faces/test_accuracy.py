"""Accuracy of landmarks, head pose, detection and identity clustering on the shared ground truth.

The bounds sit a little above the figures measured with ``benchmarks/face_accuracy.py``,
so a regression fails while run-to-run differences of the libraries do not.
"""

import numpy as np
import pytest

from daskavatar.faces.evaluation import (angle_errors, evaluate_clustering,
                                         evaluate_detection, evaluate_headpose,
                                         evaluate_landmarks, landmark_sets)
from daskavatar.jobs.spec import FaceConfig
from tests.conftest import SHARED_DATA, shared_path


def test_landmark_nme_within_bound():
    shared_path("landmarks_mmpose_300w")
    shared_path("landmarks_menpo")
    config = FaceConfig.from_dict({"min_detection_score": "0", "min_face_size": "20"})

    results = evaluate_landmarks(landmark_sets(SHARED_DATA), config)

    found = {name: [r["nme"] for r in rows if r["nme"] is not None]
             for name, rows in results.items()}
    every = [value for values in found.values() for value in values]
    assert len(every) >= 10
    assert np.mean(every) < 0.045
    assert np.median(every) < 0.04
    for name, values in found.items():
        assert np.mean(values) < 0.05, name


def test_headpose_mae_within_bound():
    config = FaceConfig.from_dict({})

    rows = evaluate_headpose(shared_path("headpose_aflw2000_3d"), config)

    found = [r for r in rows if r["predicted"] is not None]
    errors = angle_errors(np.array([r["predicted"] for r in found]),
                          np.array([r["truth"] for r in found]))
    assert len(found) >= 11
    assert errors.mean() < 4.0
    assert errors[:, 0].mean() < 4.0


def test_detection_recall_within_bound():
    result = evaluate_detection(shared_path("detection_landmarks_dlib"), FaceConfig.from_dict({}))

    assert result["boxes"] == 43
    assert result["recall"] >= 0.95


def test_clustering_precision_recall():
    folder = shared_path("faces_deepface")

    result = evaluate_clustering(folder, FaceConfig.from_dict({}))

    assert result["faces"] == 47
    assert result["precision"] >= 0.97
    assert result["recall"] >= 0.95
    assert result["clusters"] == pytest.approx(13, abs=2)
