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
    """Read ``(yaw, pitch, roll)`` in degrees and the 68 points ``(68, 2)`` of an AFLW2000-3D ``.mat``.

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
