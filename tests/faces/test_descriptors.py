"""Face descriptors on real photos and the clustering rule that turns them into identities."""

import numpy as np

from daskavatar.faces.descriptors import assign_identities, cluster_descriptors
from daskavatar.faces.pipeline import analyse_image
from daskavatar.jobs.spec import FaceConfig
from tests.conftest import shared_path


def _descriptor(*parts):
    result = analyse_image(shared_path("faces_face_recognition", *parts),
                           FaceConfig.from_dict({}), with_descriptor=True)
    assert result.status == "ok"
    return result.descriptor


def test_same_person_closer_than_threshold():
    obama = _descriptor("obama", "obama.jpg")
    obama_again = _descriptor("obama", "obama2.jpg")
    biden = _descriptor("biden", "biden.jpg")

    assert obama.shape == (128,)
    assert obama.dtype == np.float32
    assert np.linalg.norm(obama - obama_again) < 0.6
    assert np.linalg.norm(obama - biden) > 0.6


def test_cluster_labels_ordered_by_size():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (2, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # One face of person A first, then three of person B, then another of A.
    order = [0, 1, 1, 1, 0]
    descriptors = np.array([centres[i] + rng.normal(0, 0.01, 128) for i in order])

    labels = cluster_descriptors(descriptors, threshold=0.6)

    assert list(labels) == [1, 0, 0, 0, 1]
    assert list(cluster_descriptors(descriptors, threshold=0.6)) == list(labels)


def test_labelled_faces_name_their_cluster():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (2, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    faces = [{"row": row, "identity": identity, "labelled": labelled,
              "descriptor": (centres[person] + rng.normal(0, 0.01, 128)).tolist()}
             for row, (person, identity, labelled) in enumerate(
                 [(0, "ann", True), (0, "img1", False), (1, "img2", False), (1, "img3", False),
                  (0, "img4", False)])]

    assigned = assign_identities(faces, threshold=0.6)

    assert assigned == {1: "ann", 2: "cluster_001", 3: "cluster_001", 4: "ann"}
