"""Mesh export round trips in OBJ, PLY and GLB."""

import io

import numpy as np
import pytest
import trimesh

from daskavatar.export.meshes import build_mesh, mesh_bytes, write_mesh


def _icosphere():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    colors = np.zeros((len(sphere.vertices), 4), np.uint8)
    colors[:, 0] = (np.arange(len(sphere.vertices)) * 7) % 256
    colors[:, 1] = 128
    colors[:, 3] = 255
    return sphere.vertices.astype(np.float32), sphere.faces.astype(np.int64), colors


@pytest.mark.parametrize("file_format", ["obj", "ply", "glb"])
def test_round_trip(tmp_path, file_format):
    vertices, faces, colors = _icosphere()
    mesh = build_mesh(vertices, faces, colors)
    path = tmp_path / f"mesh.{file_format}"

    write_mesh(str(path), mesh, file_format)
    loaded = trimesh.load(str(path), force="mesh", process=False)

    assert len(loaded.faces) == len(faces)
    assert len(loaded.vertices) == len(vertices)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices, atol=1e-5)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], colors[:, :3])
    assert loaded.is_watertight
    assert loaded.volume > 0


def test_viewer_axes_are_y_up():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, -1, 0]], np.float32)

    mesh = build_mesh(vertices, np.array([[0, 1, 2]]), np.full((3, 4), 255, np.uint8))

    # The head frame's y points down, so its -y (up) becomes +y for viewers.
    assert mesh.vertices[2].tolist() == [0, 1, 0]


def test_unknown_format():
    vertices, faces, colors = _icosphere()

    with pytest.raises(ValueError, match="stl"):
        mesh_bytes(build_mesh(vertices, faces, colors), "stl")


def test_glb_is_binary_gltf():
    vertices, faces, colors = _icosphere()

    data = mesh_bytes(build_mesh(vertices, faces, colors), "glb")

    assert data[:4] == b"glTF"
    scene = trimesh.load(io.BytesIO(data), file_type="glb")
    assert len(scene.geometry) == 1
