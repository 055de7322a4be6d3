"""Detection, landmarks, pose and crop on real photos."""

import numpy as np
import pytest
from skimage import data

from daskavatar.faces.align import crop_face, face_mask
from daskavatar.faces.detect import detect_main_face
from daskavatar.faces.landmarks import predict_landmarks
from daskavatar.faces.models import model_path, SHAPE_PREDICTOR_FILE
from daskavatar.faces.pipeline import analyse_image
from daskavatar.faces.pose import euler_angles, estimate_pose, intrinsics_for, landmark_template
from daskavatar.io.images import read_image
from daskavatar.jobs.spec import FaceConfig
from tests.conftest import shared_path

PEOPLE = ["obama/obama.jpg", "biden/biden.jpg", "kit_harington/john1.jpeg",
          "rose_leslie/img1.jpg", "alex_lacamoire/img1.jpg"]


def test_model_file_found_without_pkg_resources():
    path = model_path(SHAPE_PREDICTOR_FILE)
    assert path.endswith(SHAPE_PREDICTOR_FILE)


@pytest.mark.parametrize("relative", PEOPLE)
def test_landmarks_inside_face_box(relative):
    url = shared_path("faces_face_recognition", relative)
    image = read_image(url, max_pixels=40_000_000)

    detection = detect_main_face(image, min_score=0.3)
    assert detection is not None
    assert detection.face_count == 1
    landmarks = predict_landmarks(image, detection)
    assert landmarks.shape == (68, 2)

    # dlib's box is tight around eyes and mouth; the chin often sits below it.
    left, top, right, bottom = detection.box
    margin = 0.3 * (right - left)
    assert np.all(landmarks[:, 0] >= left - margin)
    assert np.all(landmarks[:, 0] <= right + margin)
    assert np.all(landmarks[:, 1] >= top - margin)
    assert np.all(landmarks[:, 1] <= bottom + margin)
    # Inner face points (brows, eyes, nose, mouth) lie inside the box itself.
    inner = landmarks[17:]
    assert np.all((inner[:, 0] >= left) & (inner[:, 0] <= right))
    assert np.all((inner[:, 1] >= top) & (inner[:, 1] <= bottom))


def test_main_face_is_largest_of_two():
    url = shared_path("faces_face_recognition", "_multi_face", "two_people.jpg")
    image = read_image(url, max_pixels=40_000_000)

    detection = detect_main_face(image, min_score=0.3)

    assert detection.face_count == 2
    left, top, right, bottom = detection.box
    assert right - left > 50


def test_astronaut_has_one_face_after_score_filter():
    image = data.astronaut()

    unfiltered = detect_main_face(image, min_score=-1.0, count_all=True)
    filtered = detect_main_face(image, min_score=0.3)

    assert filtered.face_count == 1
    assert unfiltered.face_count >= filtered.face_count
    assert filtered.score > 1.0


@pytest.mark.parametrize("source", ["astronaut", "obama_small"])
def test_frontal_pose_within_15_degrees(source):
    if source == "astronaut":
        image = data.astronaut()
    else:
        image = read_image(shared_path("faces_face_recognition", "obama", "obama_small.jpg"),
                           max_pixels=40_000_000)
    detection = detect_main_face(image, min_score=0.3)
    landmarks = predict_landmarks(image, detection)
    height, width = image.shape[:2]

    pose = estimate_pose(landmarks, intrinsics_for(width, height, 1.2))

    angle = np.degrees(np.arccos(np.clip((np.trace(pose.c2w[:3, :3]) - 1) / 2, -1, 1)))
    assert angle < 15.0
    assert abs(pose.yaw) < 15.0
    assert pose.reprojection_error < 0.05 * width


def test_pose_recovers_synthetic_rotation():
    template = landmark_template()
    intrinsics = intrinsics_for(640, 480, 1.2)
    yaw = np.radians(25.0)
    rotation = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    camera_points = template @ rotation.T + np.array([0.1, -0.05, 4.0])
    projected = camera_points @ intrinsics.T
    landmarks = projected[:, :2] / projected[:, 2:]

    pose = estimate_pose(landmarks, intrinsics)

    assert pose.yaw == pytest.approx(25.0, abs=0.01)
    assert pose.pitch == pytest.approx(0.0, abs=0.01)
    assert pose.roll == pytest.approx(0.0, abs=0.01)
    assert pose.reprojection_error < 1e-3
    assert euler_angles(rotation) == pytest.approx((25.0, 0.0, 0.0), abs=1e-9)


def test_crop_intrinsics_project_landmarks():
    image = data.astronaut()
    detection = detect_main_face(image, min_score=0.3)
    landmarks = predict_landmarks(image, detection)
    intrinsics = intrinsics_for(512, 512, 1.2)
    pose = estimate_pose(landmarks, intrinsics)

    crop, crop_landmarks, crop_intrinsics = crop_face(image, landmarks, intrinsics,
                                                      resolution=128, crop_scale=2.2)

    assert crop.shape == (128, 128, 3)
    assert crop.dtype == np.uint8
    # The template projected with the crop's camera lands where the crop's landmarks are,
    # up to the same reprojection error as in the full image (scaled to the crop).
    w2c = np.linalg.inv(pose.c2w)
    camera_points = landmark_template() @ w2c[:3, :3].T + w2c[:3, 3]
    projected = camera_points @ crop_intrinsics.T
    projected = projected[:, :2] / projected[:, 2:]
    scale = crop_intrinsics[0, 0] / intrinsics[0, 0]
    error = np.linalg.norm(projected - crop_landmarks, axis=1).mean()
    assert error == pytest.approx(pose.reprojection_error * scale, rel=1e-3)

    mask = face_mask(crop_landmarks, 128)
    assert 0.15 < mask.mean() < 0.7
    nose = crop_landmarks[30].astype(int)
    assert mask[nose[1], nose[0]]
    assert not mask[0, 0]


def test_pipeline_reports_reasons(tmp_path):
    config = FaceConfig.from_dict({"output_resolution": "64"})
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    blank = tmp_path / "blank.png"
    from PIL import Image
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank)

    assert analyse_image(str(empty), config).status == "empty_file"
    assert analyse_image(str(text), config).status == "not_an_image"
    assert analyse_image(str(blank), config).status == "no_face"
    assert analyse_image(str(tmp_path / "missing.jpg"), config).status == "not_found"

    too_large = FaceConfig.from_dict({"max_image_pixels": "1000"})
    result = analyse_image(str(blank), too_large)
    assert result.status == "too_large"
    assert "max_image_pixels" in result.message


def test_pipeline_decodes_rgba_edge_case():
    config = FaceConfig.from_dict({"output_resolution": "64"})
    url = shared_path("faces_face_recognition", "_edge_cases", "32bit.png")

    result = analyse_image(url, config)

    assert result.status == "ok"
    assert result.crop.shape == (64, 64, 3)
    assert result.landmarks.shape == (68, 2)
