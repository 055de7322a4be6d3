"""Quality checks and two-pass detection on real photos, with their reason codes."""

import cv2
import numpy as np
import pytest
from PIL import Image

from daskavatar.faces import quality
from daskavatar.faces.detect import detect_faces, detect_main_face
from daskavatar.faces.landmarks import predict_landmarks
from daskavatar.faces.pipeline import analyse_image
from daskavatar.io.decode import read_image
from daskavatar.jobs.spec import FaceConfig
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def obama():
    return read_image(shared_path("faces_face_recognition", "obama", "obama.jpg"),
                      max_pixels=40_000_000)


def _save(tmp_path, name, image):
    path = tmp_path / name
    Image.fromarray(image).save(path, quality=95)
    return str(path)


def test_blurred_face_rejected(tmp_path, obama):
    detection = detect_main_face(obama, min_score=0.3)
    landmarks = predict_landmarks(obama, detection)
    side = float((landmarks.max(axis=0) - landmarks.min(axis=0)).max())
    # A Gaussian of sigma 3 at the 128 px measuring size.
    blurred = cv2.GaussianBlur(obama, (0, 0), 3.0 * side / quality.SHARPNESS_SIZE)
    config = FaceConfig.from_dict({"output_resolution": "64"})

    sharp_result = analyse_image(_save(tmp_path, "sharp.png", obama), config)
    blurred_result = analyse_image(_save(tmp_path, "blurred.png", blurred), config)

    assert sharp_result.status == "ok"
    assert sharp_result.sharpness > 10 * config.min_sharpness
    assert blurred_result.status == "too_blurred"
    assert blurred_result.sharpness < config.min_sharpness
    assert "min_sharpness" in blurred_result.message


def test_sharpness_falls_with_blur(obama):
    detection = detect_main_face(obama, min_score=0.3)
    landmarks = predict_landmarks(obama, detection)
    side = float((landmarks.max(axis=0) - landmarks.min(axis=0)).max())

    values = [quality.sharpness(cv2.GaussianBlur(obama, (0, 0), sigma * side / 128), landmarks)
              for sigma in (0.5, 1.0, 2.0, 3.0)]

    assert values == sorted(values, reverse=True)
    assert values[0] > 4 * values[2]


def test_pose_out_of_range_rejected():
    url = shared_path("faces_face_recognition", "obama", "obama2.jpg")
    permissive = analyse_image(url, FaceConfig.from_dict({"output_resolution": "64"}))
    strict = analyse_image(url, FaceConfig.from_dict({"output_resolution": "64",
                                                      "max_yaw": "5"}))

    assert permissive.status == "ok"
    assert abs(permissive.yaw) > 10
    assert strict.status == "pose_out_of_range"
    assert "max_yaw = 5.0" in strict.message
    assert strict.yaw == pytest.approx(permissive.yaw)


def test_face_cut_by_border_rejected(tmp_path, obama):
    detection = detect_main_face(obama, min_score=0.3)
    landmarks = predict_landmarks(obama, detection)
    # Cut the image at the lower lip, so the chin lies outside it.
    url = _save(tmp_path, "cut.png", np.ascontiguousarray(obama[:int(landmarks[57, 1])]))

    strict = analyse_image(url, FaceConfig.from_dict({"max_outside_fraction": "0.1"}))
    lenient = analyse_image(url, FaceConfig.from_dict({"max_outside_fraction": "0.3"}))

    assert strict.status == "face_cut_off"
    assert "max_outside_fraction = 0.1" in strict.message
    assert lenient.status == "ok"


def test_outside_fraction_closed_form():
    assert quality.outside_fraction((0, 0, 10, 10), 100, 100) == 0.0
    assert quality.outside_fraction((-5, 0, 5, 10), 100, 100) == pytest.approx(0.5)
    assert quality.outside_fraction((90, 90, 110, 110), 100, 100) == pytest.approx(0.75)
    assert quality.outside_fraction((200, 200, 210, 210), 100, 100) == 1.0


def test_face_below_min_size_rejected():
    url = shared_path("faces_face_recognition", "obama", "obama_small.jpg")

    result = analyse_image(url, FaceConfig.from_dict({"min_face_size": "150"}))

    assert result.status == "face_too_small"
    assert result.face_size < 150
    assert "min_face_size = 150" in result.message


@pytest.fixture(scope="module")
def small_face_canvas(obama):
    """A 640x480 grey canvas with Obama's face about 43 px wide at (100, 100)."""
    small = cv2.resize(obama, None, fx=0.15, fy=0.15, interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[100:100 + small.shape[0], 100:100 + small.shape[1]] = small
    return canvas


def test_fine_pass_finds_small_face(small_face_canvas):
    found = detect_faces(small_face_canvas, min_score=0.3, min_face_size=40)
    skipped = detect_faces(small_face_canvas, min_score=0.3, min_face_size=100)

    assert len(found) == 1
    assert 35 < found[0].side < 55
    assert skipped == []


def test_count_all_counts_small_faces(obama, small_face_canvas):
    canvas = np.full((900, 1400, 3), 128, np.uint8)
    canvas[:, 500:] = cv2.resize(obama, (900, 900))[:, :900]
    canvas[:480, :500] = small_face_canvas[:, :500]

    main_only = detect_main_face(canvas, min_score=0.3, min_face_size=40)
    counted = detect_main_face(canvas, min_score=0.3, min_face_size=40, count_all=True)

    assert main_only.face_count == 1
    assert counted.face_count == 2
    assert counted.box == main_only.box
    assert counted.faces[1].side < 60


def test_main_face_prefers_centre_among_equal_sizes():
    from daskavatar.faces.detect import Face, main_face_order

    faces = [Face(box=(0, 0, 100, 100), score=2.0), Face(box=(450, 350, 548, 448), score=0.5),
             Face(box=(800, 0, 850, 50), score=3.0)]

    ordered = sorted(faces, key=main_face_order(1000, 800))

    assert ordered[0].box == (450, 350, 548, 448)
    assert ordered[-1].box == (800, 0, 850, 50)
