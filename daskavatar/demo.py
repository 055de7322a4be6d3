"""Built-in demo input that needs no download.

scikit-image ships NASA's portrait of the astronaut Eileen Collins (public domain). The
demo writes it and four views derived from it into one identity folder: the mirror image
(the face seen from the other side) and perspective warps that turn the face plane by a
few degrees to either side. These are not true novel views of a 3D head, so the demo avatar
is coarse. The demo shows every stage of the job, not the quality of real multi-view photos.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image

DEMO_IDENTITY = "astronaut"
DEMO_CONFIG = {"preset": "fast", "max_iterations": 200, "output_resolution": 96,
               "output_format": "glb", "mesh_resolution": 64}


def write_demo_inputs(folder: str) -> list[str]:
    """Write the demo photos into ``folder/astronaut/`` and return their paths."""
    from skimage import data

    photo = data.astronaut()
    target = os.path.join(folder, DEMO_IDENTITY)
    os.makedirs(target, exist_ok=True)

    views = {"original": photo, "mirrored": photo[:, ::-1]}
    for degrees in (-12, 12):
        views[f"turned_{degrees:+d}"] = _turn(photo, degrees)
    views["mirrored_turned_+12"] = _turn(photo[:, ::-1], 12)

    paths = []
    for name, image in views.items():
        path = os.path.join(target, f"{name}.png")
        Image.fromarray(np.ascontiguousarray(image)).save(path)
        paths.append(path)
    return paths


def demo_job(input_folder: str, output_path: str) -> dict:
    """Return the job JSON of the demo."""
    return {"plugin_name": "NeRF_Avatar", "config": dict(DEMO_CONFIG),
            "input_paths": [input_folder], "output_path": output_path,
            "num_map_tasks": 2, "num_reduce_tasks": 1}


def _turn(image: np.ndarray, degrees: float) -> np.ndarray:
    """Warp ``image`` ``(h, w, 3)`` as if its plane turned by ``degrees`` about the vertical axis."""
    height, width = image.shape[:2]
    focal = 1.2 * max(height, width)
    intrinsics = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    angle = np.radians(degrees)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                         [-np.sin(angle), 0, np.cos(angle)]])
    homography = intrinsics @ rotation @ np.linalg.inv(intrinsics)
    return cv2.warpPerspective(image, homography, (width, height),
                               borderMode=cv2.BORDER_REPLICATE)
