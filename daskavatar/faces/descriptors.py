"""128-D face descriptors and their clustering into identities.

The descriptor is dlib's ResNet model ``dlib_face_recognition_resnet_model_v1.dat`` from
the package ``face-recognition-models``. dlib's example ``python_examples/face_recognition.py``
states that with a Euclidean distance threshold of 0.6 the model reaches 99.38 % accuracy on
LFW. Clustering uses dlib's Chinese whispers graph clustering on the graph of face pairs
closer than a threshold, so the number of identities need not be known. Where the clusters
are used in a job is :mod:`daskavatar.jobs.runner`.
"""

from __future__ import annotations

import logging

import numpy as np

from daskavatar.faces.models import face_descriptor_model, shape_predictor

logger = logging.getLogger(__name__)

DESCRIPTOR_SIZE = 128


def face_descriptor(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Compute the descriptor of the face with ``landmarks`` ``(68, 2)`` in RGB ``(h, w, 3)``.

    dlib aligns the face from the 68 points itself, with its default padding of 0.25.
    Returns shape ``(128,)``, float32.
    """
    import dlib

    # predict_landmarks adds 0.5 to dlib's integer points; undo it for dlib's own types.
    points = [dlib.point(int(round(x - 0.5)), int(round(y - 0.5))) for x, y in landmarks]
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    rect = dlib.rectangle(int(low[0]), int(low[1]), int(high[0]), int(high[1]))
    shape = dlib.full_object_detection(rect, points)
    descriptor = face_descriptor_model().compute_face_descriptor(np.ascontiguousarray(image),
                                                                 shape)
    return np.asarray(descriptor, dtype=np.float32)


def cluster_descriptors(descriptors: np.ndarray, *, threshold: float) -> np.ndarray:
    """Cluster descriptors ``(n, 128)`` into identities; return labels ``(n,)`` int.

    Labels are numbered from 0 by decreasing cluster size, ties broken by the first member,
    so a rerun on the same faces gives the same labels.
    """
    import dlib

    if len(descriptors) == 0:
        return np.zeros(0, dtype=np.int64)
    vectors = [dlib.vector(np.asarray(d, dtype=np.float64).tolist()) for d in descriptors]
    raw = np.asarray(dlib.chinese_whispers_clustering(vectors, float(threshold)))

    members = {}
    for index, label in enumerate(raw):
        members.setdefault(int(label), []).append(index)
    ordered = sorted(members.values(), key=lambda rows: (-len(rows), rows[0]))
    labels = np.empty(len(raw), dtype=np.int64)
    for new_label, rows in enumerate(ordered):
        labels[rows] = new_label
    return labels


def assign_identities(faces: list[dict], *, threshold: float, prefix: str = "cluster_") -> dict:
    """Return ``{row: identity}`` for the usable faces that carry no label.

    ``faces`` are map-stage face records; a record with ``labelled`` true keeps its
    identity. The others with a ``descriptor`` are clustered, and each cluster becomes the
    identity ``cluster_000``, ``cluster_001``, ... by decreasing size. A cluster that
    contains labelled faces takes the most common label among them instead, so labels win
    and unlabelled photos of a known person join that person.
    """
    with_descriptor = [f for f in faces if f.get("descriptor") is not None]
    if not with_descriptor:
        return {}
    descriptors = np.array([f["descriptor"] for f in with_descriptor], dtype=np.float32)
    labels = cluster_descriptors(descriptors, threshold=threshold)

    names = {}
    for label in np.unique(labels):
        known = [f["identity"] for f, lab in zip(with_descriptor, labels)
                 if lab == label and f.get("labelled")]
        names[int(label)] = max(sorted(set(known)), key=known.count) if known \
            else f"{prefix}{int(label):03d}"

    assigned = {}
    for face, label in zip(with_descriptor, labels):
        if not face.get("labelled"):
            assigned[face["row"]] = names[int(label)]
    logger.info("Clustered %d faces into %d identities (threshold %.2f)", len(labels),
                len(names), threshold)
    return assigned
