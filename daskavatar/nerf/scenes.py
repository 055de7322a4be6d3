"""Load scenes in the NeRF-synthetic ("blender") layout as training views.

The layout: ``transforms_<split>.json`` with ``camera_angle_x`` and ``frames`` of
``file_path`` and ``transform_matrix`` (camera-to-world, OpenGL camera axes: x right, y up,
looking down -z), and RGBA PNG images beside it. Benchmarks and tests use it for data with
known cameras; the job's own photos come from the map stage instead.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from daskavatar.nerf.views import BACKGROUND, TrainingViews

# OpenGL camera axes (y up, looking down -z) to the OpenCV axes used here (y down, +z).
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def load_blender_views(folder: str, split: str, *, scale: float = 1.0,
                       pixel_offset: float = 0.0, indices=None) -> TrainingViews:
    """Read one split of a blender-layout scene, composited on the background colour.

    ``scale`` multiplies world coordinates (camera positions), so a scene can be fitted
    inside the bounding sphere of the NeRF. ``pixel_offset`` is added to the principal
    point ``W / 2``: 0 puts the ray of pixel column ``i`` through ``i + 0.5``, and 0.5 gives
    the reference NeRF ``get_rays`` convention, where it passes through ``i``. ``indices``
    selects frames. Masks are the pixels with any coverage (alpha > 0).
    """
    path = os.path.join(folder, f"transforms_{split}.json")
    with open(path) as f:
        meta = json.load(f)
    frames = meta["frames"]
    if indices is not None:
        frames = [frames[i] for i in indices]

    images, masks, cameras = [], [], []
    for frame in frames:
        file_path = os.path.normpath(os.path.join(folder, frame["file_path"]))
        if not file_path.endswith(".png"):
            file_path += ".png"
        rgba = np.asarray(Image.open(file_path).convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:]
        images.append(rgba[..., :3] * alpha + np.asarray(BACKGROUND, np.float32) * (1.0 - alpha))
        masks.append(alpha[..., 0] > 0.0)
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64) @ _GL_TO_CV
        c2w[:3, 3] *= scale
        cameras.append(c2w)

    height, width = images[0].shape[:2]
    focal = 0.5 * width / np.tan(0.5 * float(meta["camera_angle_x"]))
    intrinsics = np.array([[focal, 0.0, width / 2 + pixel_offset],
                           [0.0, focal, height / 2 + pixel_offset], [0.0, 0.0, 1.0]])
    return TrainingViews(images=np.stack(images).astype(np.float32), c2w=np.stack(cameras),
                         intrinsics=np.repeat(intrinsics[None], len(frames), axis=0),
                         masks=np.stack(masks))


def load_blender_depths(folder: str, split: str, *, scale: float = 1.0) -> np.ndarray:
    """Read the true depth maps ``(V, H, W)`` of one split, in the frame order of its views.

    ``depth_<split>.npz`` contains one array per frame, named after the frame's image file,
    with the depth along the camera's viewing axis and 0 on the background. ``scale`` is
    the world scale given to :func:`load_blender_views`.
    """
    with open(os.path.join(folder, f"transforms_{split}.json")) as f:
        frames = json.load(f)["frames"]
    with np.load(os.path.join(folder, f"depth_{split}.npz")) as archive:
        names = [os.path.basename(frame["file_path"]).removesuffix(".png") for frame in frames]
        return np.stack([archive[name].astype(np.float32) * scale for name in names])


def load_head_scan(folder: str, *, scale: float = 1.0):
    """Load the head scan ``LeePerrySmith.glb`` in the world frame of its renders.

    ``folder`` contains the scan and ``renders_200px/render_meta.json``, whose transform is
    ``p_world = A @ ((p_gltf - center) * scale)``. ``scale`` multiplies the result, as in
    :func:`load_blender_views`. Returns a ``trimesh.Trimesh``.
    """
    import trimesh

    with open(os.path.join(folder, "renders_200px", "render_meta.json")) as f:
        transform = json.load(f)["gltf_to_world"]
    mesh = trimesh.load(os.path.join(folder, "LeePerrySmith.glb"), force="mesh", process=False)
    axes = np.asarray(transform["axis_map_world_from_gltf"])
    centre = np.asarray(transform["translate_then_scale"]["center_subtracted_gltf"])
    factor = transform["translate_then_scale"]["scale"] * scale
    mesh.vertices = ((mesh.vertices - centre) * factor) @ axes.T
    return mesh
