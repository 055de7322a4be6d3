"""Bundle adjustment of one identity: synthetic views with a known shape, and real photos."""

import glob
import os

import numpy as np
import pytest

from daskavatar.faces.bundle import refine_identity, reprojection_errors
from daskavatar.faces.detect import detect_main_face
from daskavatar.faces.landmarks import predict_landmarks
from daskavatar.faces.pose import estimate_pose, intrinsics_for, landmark_template
from daskavatar.io.decode import read_image
from tests.conftest import shared_path


def _rotation(yaw_degrees, pitch_degrees):
    yaw, pitch = np.radians(yaw_degrees), np.radians(pitch_degrees)
    around_y = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    around_x = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)],
                         [0, np.sin(pitch), np.cos(pitch)]])
    return around_x @ around_y


def _angle_between(first, second):
    cosine = (np.trace(first.T @ second) - 1) / 2
    return np.degrees(np.arccos(np.clip(cosine, -1, 1)))


@pytest.fixture(scope="module")
def synthetic_identity():
    """Eight views of a head whose shape differs from the template, with 0.5 px noise."""
    rng = np.random.default_rng(7)
    template = landmark_template()
    # A narrower, deeper head than the template plus per-point variation.
    true_shape = template * np.array([0.92, 1.0, 1.15]) + rng.normal(0, 0.01, template.shape)
    intrinsics = intrinsics_for(512, 512, 1.2)
    views = [(-40, 5), (-25, -8), (-10, 0), (0, 10), (12, -5), (25, 3), (38, -10), (45, 6)]

    landmarks, truths, initial = [], [], []
    for yaw, pitch in views:
        rotation = _rotation(yaw, pitch)
        translation = np.array([0.02, -0.03, 3.0])
        camera = true_shape @ rotation.T + translation
        projected = camera @ intrinsics.T
        points = projected[:, :2] / projected[:, 2:] + rng.normal(0, 0.5, (68, 2))
        landmarks.append(points)
        truths.append(rotation)
        initial.append(estimate_pose(points.astype(np.float32), intrinsics).c2w)
    return (np.array(landmarks), np.repeat(intrinsics[None], len(views), axis=0),
            np.array(initial), np.array(truths), true_shape)


def test_bundle_lowers_error(synthetic_identity):
    landmarks, intrinsics, initial, _, _ = synthetic_identity

    result = refine_identity(landmarks, intrinsics, initial)

    assert result.c2w.shape == initial.shape
    assert result.shape.shape == (68, 3)
    assert result.error_after.mean() < 0.5 * result.error_before.mean()
    # The noise is 0.5 px per coordinate, so a perfect fit leaves about 0.6 px per point.
    assert result.error_after.mean() < 0.9


def test_bundle_recovers_rotations_and_shape(synthetic_identity):
    landmarks, intrinsics, initial, truths, true_shape = synthetic_identity

    result = refine_identity(landmarks, intrinsics, initial)

    before = [_angle_between(c2w[:3, :3].T, truth) for c2w, truth in zip(initial, truths)]
    after = [_angle_between(c2w[:3, :3].T, truth) for c2w, truth in zip(result.c2w, truths)]
    assert np.mean(after) < np.mean(before)
    assert np.mean(after) < 1.5
    template_gap = np.linalg.norm(landmark_template() - true_shape, axis=1).mean()
    refined_gap = np.linalg.norm(result.shape - true_shape, axis=1).mean()
    assert refined_gap < 0.6 * template_gap


def test_errors_match_pose_estimate():
    template = landmark_template()
    intrinsics = intrinsics_for(400, 300, 1.2)
    camera = template @ _rotation(20, 5).T + np.array([0.0, 0.0, 2.5])
    projected = camera @ intrinsics.T
    points = projected[:, :2] / projected[:, 2:] + 0.3
    pose = estimate_pose(points.astype(np.float32), intrinsics)

    errors = reprojection_errors(points[None], intrinsics[None], pose.c2w[None], template)

    assert errors[0] == pytest.approx(pose.reprojection_error, rel=1e-3)


def test_bundle_on_real_photos():
    folder = shared_path("faces_face_recognition", "obama")
    landmarks, intrinsics, c2w = [], [], []
    for path in sorted(glob.glob(os.path.join(folder, "*.jpg"))):
        image = read_image(path, max_pixels=40_000_000)
        detection = detect_main_face(image, min_score=0.3)
        points = predict_landmarks(image, detection)
        matrix = intrinsics_for(image.shape[1], image.shape[0], 1.2)
        landmarks.append(points)
        intrinsics.append(matrix)
        c2w.append(estimate_pose(points, matrix).c2w)

    result = refine_identity(np.array(landmarks), np.array(intrinsics), np.array(c2w))

    assert len(landmarks) == 5
    assert np.all(result.error_after < result.error_before)
    # The head stays in the template's frame: cameras move by a few degrees, not more.
    for old, new in zip(c2w, result.c2w):
        assert _angle_between(old[:3, :3], new[:3, :3]) < 10.0
