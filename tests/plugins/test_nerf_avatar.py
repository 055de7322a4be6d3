"""NeRF_Avatar with the fast preset on real photos: the face's depth limit and the mesh level."""

import json
import os

import numpy as np
import pytest
import trimesh

from daskavatar.faces.pose import landmark_template
from daskavatar.jobs.runner import run_job
from daskavatar.nerf.occupancy import OccupancyGrid
from daskavatar.plugins.nerf_avatar import FACE_DEPTH_MARGINS, face_depth_range
from tests.conftest import shared_path

PEOPLE = {"biden": ("biden.jpg", "biden2.jpg"),
          "kit_harington": ("john1.jpeg", "john2.jpeg", "johnsnow_test1.jpg")}


def test_face_depth_range_of_template():
    template = landmark_template()

    low, high = face_depth_range(template)

    assert low == pytest.approx(template[:, 2].min() - FACE_DEPTH_MARGINS[0])
    assert high == pytest.approx(template[:, 2].max() + FACE_DEPTH_MARGINS[1])
    # The nose tip is the nearest landmark to a camera in front of the face (-z).
    assert template[:, 2].argmin() == 30


def test_depth_range_empties_cells_outside():
    masks = np.ones((1, 8, 8), bool)
    c2w = np.eye(4)
    c2w[2, 3] = -3.0
    intrinsics = np.array([[4.0, 0, 4], [0, 4.0, 4], [0, 0, 1]])

    grid = OccupancyGrid.from_masks(masks, c2w[None], intrinsics[None], resolution=16,
                                    radius=1.2, depth_range=(-0.3, 0.5))

    z = grid.cell_centres()[:, 2].reshape(grid.occupied.shape)
    assert grid.occupied.any()
    assert not grid.occupied[(z < -0.3) | (z > 0.5)].any()
    assert grid.hull[(z >= -0.3) & (z <= 0.5)].any()


@pytest.fixture(scope="module")
def fast_job(cluster_client, tmp_path_factory):
    source = shared_path("faces_face_recognition")
    folder = tmp_path_factory.mktemp("photos")
    for person, names in PEOPLE.items():
        (folder / person).mkdir()
        for name in names:
            (folder / person / name).write_bytes(open(os.path.join(source, person, name),
                                                      "rb").read())
    output = tmp_path_factory.mktemp("avatars")
    job = {"plugin_name": "NeRF_Avatar",
           "config": {"preset": "fast", "max_iterations": "120", "output_format": "ply",
                      "mesh_resolution": "64", "preview_views": "1"},
           "input_paths": [str(folder)], "output_path": str(output),
           "num_map_tasks": 1, "num_reduce_tasks": 2}
    return run_job(job, cluster_client, progress=False), output


def test_fast_avatars_stay_within_face_depth(fast_job):
    report, output = fast_job
    assert [result["status"] for result in report.results] == ["ok", "ok"]

    for person in PEOPLE:
        entry = json.loads((output / "avatars" / person / "report.json").read_text())
        mesh = trimesh.load(str(output / "avatars" / person / "mesh.ply"), process=False)
        width, _, depth = mesh.bounds[1] - mesh.bounds[0]

        # The limit spans about 0.78 world units; without it these meshes ran 1.4 to 2.5
        # times as deep as wide, or fell into many parts.
        assert depth < 0.9, person
        assert depth < 1.5 * width, person
        assert entry["mesh_largest_part"] >= 0.8, person
        assert "warning" not in entry, person
