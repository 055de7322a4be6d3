"""Export of coloured triangle meshes as OBJ, PLY or binary glTF (.glb) with trimesh.

The colours are per vertex: OBJ carries them as the widely read ``v x y z r g b``
extension, PLY as vertex properties and glTF as the ``COLOR_0`` attribute.
"""

from __future__ import annotations

import numpy as np
import trimesh

from daskavatar.io.outputs import write_bytes

FORMATS = ("obj", "ply", "glb")

# Head frame (x left of the subject, y down, z into the head) to the y-up, z-toward-viewer
# axes that mesh viewers and glTF expect: a half turn about x.
_HEAD_TO_VIEWER = np.diag([1.0, -1.0, -1.0])


def build_mesh(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray) -> trimesh.Trimesh:
    """Make a trimesh from vertices ``(V, 3)``, faces ``(F, 3)`` and RGBA colours ``(V, 4)``.

    Vertices are converted from the head frame to y-up viewer axes; the half turn keeps
    the face winding valid.
    """
    return trimesh.Trimesh(vertices=vertices @ _HEAD_TO_VIEWER.T, faces=faces,
                           vertex_colors=colors, process=False)


def mesh_bytes(mesh: trimesh.Trimesh, file_format: str) -> bytes:
    """Encode ``mesh`` in ``file_format`` (obj, ply or glb)."""
    if file_format not in FORMATS:
        raise ValueError(f"unknown mesh format {file_format!r}; use one of {', '.join(FORMATS)}")
    if file_format == "obj":
        data = trimesh.exchange.obj.export_obj(mesh, include_color=True, include_normals=False,
                                               include_texture=False)
        return data.encode("utf-8")
    return mesh.export(file_type=file_format)


def write_mesh(url: str, mesh: trimesh.Trimesh, file_format: str, *, storage_options=None):
    """Encode and write ``mesh`` atomically to ``url``."""
    write_bytes(url, mesh_bytes(mesh, file_format), storage_options=storage_options)
