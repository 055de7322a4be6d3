"""Export of avatar meshes as OBJ (with MTL and texture), PLY or binary glTF (.glb).

A mesh carries vertex colours and, optionally, a baked texture
(:class:`~daskavatar.export.texture.TexturedMesh`). OBJ and glTF store the texture: OBJ
as ``mesh.obj`` with ``mesh.mtl`` and a PNG beside it, glTF inside the binary file. PLY has
no standard texture reference, so it stores the vertex colours. Without a texture, OBJ
stores the vertex colours as the widely read ``v x y z r g b`` extension and glTF as the
``COLOR_0`` attribute.
"""

from __future__ import annotations

import posixpath

import numpy as np
import trimesh
from PIL import Image

from daskavatar.io.outputs import write_bytes

FORMATS = ("obj", "ply", "glb")

# Head frame (x left of the subject, y down, z into the head) to the y-up, z-toward-viewer
# axes that mesh viewers and glTF expect: a half turn about x.
_HEAD_TO_VIEWER = np.diag([1.0, -1.0, -1.0])


def build_mesh(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, *,
               texture=None) -> trimesh.Trimesh:
    """Make a trimesh from vertices ``(V, 3)``, faces ``(F, 3)`` and RGBA colours ``(V, 4)``.

    With ``texture`` (a :class:`~daskavatar.export.texture.TexturedMesh` of the same
    surface), the mesh takes the texture's split vertices, faces and UV coordinates. The
    vertex-coloured mesh without seams is kept as ``mesh.metadata["vertex_colored"]`` for PLY.
    Vertices are converted from the head frame to y-up viewer axes; the half turn keeps the
    face winding valid.
    """
    colored = trimesh.Trimesh(vertices=vertices @ _HEAD_TO_VIEWER.T, faces=faces,
                              vertex_colors=colors, process=False)
    if texture is None:
        return colored

    material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(texture.image),
                                                      diffuse=(255, 255, 255, 255))
    visual = trimesh.visual.TextureVisuals(uv=texture.uv, image=None, material=material)
    mesh = trimesh.Trimesh(vertices=texture.vertices @ _HEAD_TO_VIEWER.T, faces=texture.faces,
                           visual=visual, process=False)
    mesh.metadata["vertex_colored"] = colored
    return mesh


def mesh_files(mesh: trimesh.Trimesh, file_format: str, *, name: str = "mesh") -> dict:
    """Encode ``mesh`` in ``file_format`` (obj, ply or glb); returns ``{file name: bytes}``.

    The first entry is the mesh file ``<name>.<format>``. A textured OBJ adds its material
    library ``<name>.mtl`` and the texture PNG that the library names.
    """
    if file_format not in FORMATS:
        raise ValueError(f"unknown mesh format {file_format!r}; use one of {', '.join(FORMATS)}")
    mesh_name = f"{name}.{file_format}"
    textured = isinstance(mesh.visual, trimesh.visual.TextureVisuals)

    if file_format == "obj" and textured:
        text, extra = trimesh.exchange.obj.export_obj(
            mesh, include_normals=False, include_color=False, include_texture=True,
            return_texture=True, mtl_name=f"{name}.mtl")
        return {mesh_name: text.encode("utf-8"), **extra}
    if file_format == "obj":
        text = trimesh.exchange.obj.export_obj(mesh, include_color=True, include_normals=False,
                                               include_texture=False)
        return {mesh_name: text.encode("utf-8")}
    if file_format == "ply" and textured:
        return {mesh_name: mesh.metadata["vertex_colored"].export(file_type="ply")}
    return {mesh_name: mesh.export(file_type=file_format)}


def mesh_bytes(mesh: trimesh.Trimesh, file_format: str) -> bytes:
    """Encode ``mesh`` in ``file_format`` (obj, ply or glb); only the mesh file itself."""
    return next(iter(mesh_files(mesh, file_format).values()))


def write_mesh(url: str, mesh: trimesh.Trimesh, file_format: str, *,
               storage_options=None) -> list[str]:
    """Encode ``mesh`` and write its files atomically; ``url`` names the mesh file.

    Companion files (an OBJ's material library and texture) go into the same folder, and
    are written before the mesh file. Returns the file names written, mesh file first.
    """
    folder, base = posixpath.split(url.rstrip("/"))
    name = base.rsplit(".", 1)[0]
    files = mesh_files(mesh, file_format, name=name)
    mesh_name = next(iter(files))
    for file_name, data in reversed(list(files.items())):
        target = url if file_name == mesh_name else posixpath.join(folder, file_name)
        write_bytes(target, data, storage_options=storage_options)
    return list(files)

