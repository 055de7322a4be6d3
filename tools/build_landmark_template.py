"""Build the 3D template of the 68 iBUG/300-W face landmarks from renders of a head scan.

The input is the "Infinite, 3D Head Scan by Lee Perry-Smith" (CC BY 3.0) rendered to
200x200 px views in the NeRF "blender" layout: renders_200px/transforms_{train,val,test}.json
with camera-to-world matrices in the OpenGL convention (camera looks down -z, y up),
RGBA PNGs, depth_{split}.npz with camera-space z-depth, and render_meta.json with the
mesh-to-world transform.

Steps:
1. Detect the face with dlib's HOG detector and fit dlib's 68-point shape predictor in
   every view. The train and val views build the template and the test views check it.
2. Check that the depth maps hold z-depth and not ray length, by back-projecting one view
   both ways and measuring the distance to the mesh.
3. Sort out dlib's misfits of the scan's closed eyes: in about half of the views dlib puts
   an open eye under the eyebrow. Those views are used only for the nose and mouth.
4. Triangulate each landmark: linear DLT, a robust (soft L1) least-squares refinement of
   the reprojection error, then a plain refit on the inlier views. Landmarks 17..67 use all
   views that qualify. The jaw contour 0..16 is a silhouette that slides over the surface
   as the view turns, so it uses near-frontal views only. With --jaw-method depth the jaw
   points are instead back-projected onto the surface through the depth maps.
5. Map the points to the head frame (OpenCV object convention: x to the subject's left,
   y down, z into the head), centre them on their mean and scale them so the outer eye
   corners 36 and 45 are 1.0 apart. Write the CSV.
6. Reload the CSV, run solvePnP against dlib's landmarks in each view and report the
   rotation error against the known camera, for the held-out test views and the build views.

Rerun from the repository root:

    .venv/bin/python tools/build_landmark_template.py --data DIR [--overlay /tmp/landmarks68.png]

DIR is the folder holding LeePerrySmith.glb and renders_200px/. The output defaults to
daskavatar/faces/landmarks68_template.csv.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np
import trimesh
from scipy.optimize import least_squares
from scipy.spatial import cKDTree

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "daskavatar" / "faces" / "landmarks68_template.csv"

JAW = np.arange(0, 17)
INNER = np.arange(17, 68)
EYE_AND_BROW = set(range(17, 27)) | set(range(36, 48))
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45

# World frame of the renders: Z up, face toward -Y, subject's left toward +X.
# Rows map world axes to the head frame: x = X, y = -Z (down), z = +Y (into the head).
WORLD_TO_HEAD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

# OpenGL camera axes (x right, y up, looking down -z) to OpenCV (x right, y down, z forward).
GL_TO_CV = np.diag([1.0, -1.0, -1.0])

# Left/right landmark pairs of the iBUG 68-point scheme (subject's right first).
MIRROR_PAIRS = (
    [(i, 16 - i) for i in range(8)]
    + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]
    + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)]
)

BUILD_SPLITS = ("train", "val")
HOLDOUT_SPLIT = "test"


@dataclass
class View:
    name: str
    image: np.ndarray  # RGB uint8, composited on grey
    depth: np.ndarray  # camera-space z-depth, 0 on background and partial pixels
    K: np.ndarray
    R: np.ndarray  # world-to-camera rotation, OpenCV camera axes
    t: np.ndarray
    azimuth_deg: float
    elevation_deg: float

    @property
    def projection(self) -> np.ndarray:
        return self.K @ np.hstack([self.R, self.t[:, None]])

    @property
    def off_frontal_deg(self) -> float:
        """Angle between this camera's viewing direction and the frontal one (+Y)."""
        view_dir = self.R[2]
        return float(np.degrees(np.arccos(np.clip(view_dir[1], -1.0, 1.0))))


def find_predictor_path() -> Path:
    # face_recognition_models' __init__ imports pkg_resources, which setuptools 82.0.0
    # removed, so locate the package's data files without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face_recognition_models is not installed; install it to get the dlib models")
    path = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise SystemExit(f"shape predictor not found at {path}")
    return path


def load_views(renders: Path, split: str) -> list[View]:
    meta = json.loads((renders / f"transforms_{split}.json").read_text())
    depths = np.load(renders / f"depth_{split}.npz")
    views = []
    for frame in meta["frames"]:
        rgba = cv2.imread(str(renders / f"{frame['file_path']}.png"), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.shape[2] != 4:
            raise SystemExit(f"cannot read RGBA image {frame['file_path']}.png in {renders}")
        height, width = rgba.shape[:2]
        alpha = rgba[..., 3:4].astype(np.float64) / 255.0
        bgr = rgba[..., :3] * alpha + 128.0 * (1.0 - alpha)
        image = np.ascontiguousarray(bgr.round().astype(np.uint8)[..., ::-1])

        focal = 0.5 * width / np.tan(0.5 * meta["camera_angle_x"])
        # The renderer's ray for pixel (i, j) is ((i - W/2)/f, -(j - H/2)/f, -1), so the
        # principal point is (W/2, H/2) in integer-pixel-centre coordinates, like dlib's.
        K = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
        cam_to_world = np.array(frame["transform_matrix"], dtype=np.float64)
        rot_c2w = cam_to_world[:3, :3] @ GL_TO_CV
        R = rot_c2w.T
        t = -R @ cam_to_world[:3, 3]
        key = Path(frame["file_path"]).name
        views.append(
            View(
                name=f"{split}/{key}",
                image=image,
                depth=depths[key].astype(np.float64),
                K=K,
                R=R,
                t=t,
                azimuth_deg=frame["camera_azimuth_deg"],
                elevation_deg=frame["camera_elevation_deg"],
            )
        )
    return views


def load_mesh_world(data: Path, renders: Path) -> trimesh.Trimesh:
    meta = json.loads((renders / "render_meta.json").read_text())["gltf_to_world"]
    axis_map = np.array(meta["axis_map_world_from_gltf"])
    center = np.array(meta["translate_then_scale"]["center_subtracted_gltf"])
    scale = meta["translate_then_scale"]["scale"]
    mesh = trimesh.load(data / "LeePerrySmith.glb", force="mesh")
    vertices = ((mesh.vertices - center) * scale) @ axis_map.T
    return trimesh.Trimesh(vertices, mesh.faces, process=False)


def build_surface_tree(mesh: trimesh.Trimesh) -> cKDTree:
    # trimesh's exact closest_point needs rtree, which the venv lacks. A million surface
    # samples put the sampling error near 0.002 world units, below the float16 depth step.
    samples, _ = trimesh.sample.sample_surface(mesh, 1_000_000, seed=0)
    return cKDTree(samples)


def backproject(view: View, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Map pixels (N, 2) with z-depths (N,) to world points (N, 3)."""
    rays = np.column_stack([uv, np.ones(len(uv))]) @ np.linalg.inv(view.K).T
    cam = rays * depth[:, None]
    return (cam - view.t) @ view.R


def check_depth_convention(view: View, surface: cKDTree) -> None:
    rows, cols = np.nonzero(view.depth > 0)
    uv = np.column_stack([cols, rows]).astype(np.float64)
    depth = view.depth[rows, cols]
    as_z = backproject(view, uv, depth)
    ray_norm = np.linalg.norm(np.column_stack([uv, np.ones(len(uv))]) @ np.linalg.inv(view.K).T, axis=1)
    as_range = backproject(view, uv, depth / ray_norm)
    dist_z = np.median(surface.query(as_z)[0])
    dist_range = np.median(surface.query(as_range)[0])
    print(
        f"depth check on {view.name}: median distance to mesh {dist_z:.4f} if z-depth, "
        f"{dist_range:.4f} if ray length"
    )
    if not dist_z < 0.5 * dist_range:
        raise SystemExit("depth maps do not behave as camera-space z-depth; fix the back-projection first")


def eye_aspect_ratio(eye: np.ndarray) -> float:
    """Return the eye aspect ratio of the six points of one eye (0 for a fully closed eye)."""
    vertical = np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])
    return float(vertical / (2.0 * np.linalg.norm(eye[0] - eye[3])))


def detect_landmarks(views: list[View], detector, predictor) -> dict[str, np.ndarray]:
    """Return dlib's 68 landmarks (68, 2) per view name, for views where a face is found."""
    found = {}
    for view in views:
        # Faces are about 60 px wide at 200 px, below the HOG detector's 80 px window,
        # so upsample once and try twice only when that finds nothing.
        for upsample in (1, 2):
            rects, scores, _ = detector.run(view.image, upsample, 0.0)
            if rects:
                break
        if not rects:
            continue
        best = rects[int(np.argmax(scores))]
        shape = predictor(view.image, best)
        found[view.name] = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
    return found


def has_closed_eye_fit(landmarks: np.ndarray, max_ratio: float) -> bool:
    """Tell whether dlib fitted the scan's closed eyes as closed.

    The scan's eyes are closed. In about half of the views dlib instead fits an open eye
    whose upper lid lies on the eyebrow, which shifts the eye and brow points up by
    2-4 px. On these renders those fits have an eye aspect ratio of 0.3-0.55, the closed
    fits 0.13-0.25.
    """
    ratios = [eye_aspect_ratio(landmarks[36:42]), eye_aspect_ratio(landmarks[42:48])]
    return float(np.mean(ratios)) <= max_ratio


def project(P: np.ndarray, X: np.ndarray) -> np.ndarray:
    homogeneous = np.column_stack([X, np.ones(len(X))]) @ P.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def triangulate_dlt(projections: list[np.ndarray], uv: np.ndarray) -> np.ndarray:
    rows = []
    for P, (u, v) in zip(projections, uv):
        rows.append(u * P[2] - P[0])
        rows.append(v * P[2] - P[1])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    X = vt[-1]
    return X[:3] / X[3]


def refine_point(X0: np.ndarray, projections: list[np.ndarray], uv: np.ndarray, loss: str) -> np.ndarray:
    def residuals(X):
        return np.concatenate([project(P, X[None])[0] - obs for P, obs in zip(projections, uv)])

    # f_scale of 1 px because dlib's landmarks on these 60 px faces reproject with an RMS of
    # 0.4-1.4 px, so errors well above that are treated as outliers.
    return least_squares(residuals, X0, loss=loss, f_scale=1.0).x


def triangulate_landmark(projections: list[np.ndarray], uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the world point and a boolean inlier mask over the views."""
    X = triangulate_dlt(projections, uv)
    X = refine_point(X, projections, uv, loss="soft_l1")
    errors = np.array([np.linalg.norm(project(P, X[None])[0] - obs) for P, obs in zip(projections, uv)])
    mad = 1.4826 * np.median(np.abs(errors - np.median(errors)))
    inliers = errors <= max(3.0, np.median(errors) + 3.0 * mad)
    if inliers.sum() >= 2:
        inlier_projections = [P for P, keep in zip(projections, inliers) if keep]
        X = refine_point(X, inlier_projections, uv[inliers], loss="linear")
    return X, inliers


def sample_foreground_depth(depth: np.ndarray, uv: np.ndarray, radius: int = 2) -> float:
    """Return the nearest surface depth within `radius` px of a contour point, or 0 if none.

    A jaw contour pixel may show the background or the neck behind the jaw, and the
    depth is 0 on partially covered pixels, so the front-most valid depth nearby is used.
    """
    col, row = int(round(uv[0])), int(round(uv[1]))
    window = depth[max(row - radius, 0) : row + radius + 1, max(col - radius, 0) : col + radius + 1]
    valid = window[window > 0]
    return float(valid.min()) if valid.size else 0.0


def triangulate_points(
    views: dict[str, View], landmarks: dict[str, np.ndarray], names: list[str], indices: np.ndarray
) -> tuple[np.ndarray, list[dict]]:
    """Triangulate the given landmark indices over the named views; return (68, 3) with those rows set."""
    if len(names) < 2:
        raise SystemExit(f"landmarks {indices[0]}..{indices[-1]} have fewer than 2 usable views: {names}")
    projections = [views[name].projection for name in names]
    points = np.zeros((68, 3))
    report = []
    for index in indices:
        uv = np.array([landmarks[name][index] for name in names])
        X, inliers = triangulate_landmark(projections, uv)
        errors = np.array([np.linalg.norm(project(P, X[None])[0] - obs) for P, obs in zip(projections, uv)])
        points[index] = X
        report.append(
            dict(
                index=int(index),
                method="triangulated",
                views_used=int(inliers.sum()),
                views_offered=len(names),
                rms_px=float(np.sqrt(np.mean(errors[inliers] ** 2))),
                max_px=float(errors[inliers].max()),
            )
        )
    return points, report


def reconstruct_inner(
    views: dict[str, View], landmarks: dict[str, np.ndarray], closed_eye_views: set[str]
) -> tuple[np.ndarray, list[dict]]:
    """Triangulate landmarks 17..67. Eye and brow points use only the closed-eye fits."""
    eye_brow = np.array(sorted(EYE_AND_BROW))
    nose_mouth = np.setdiff1d(INNER, eye_brow)
    points_a, report_a = triangulate_points(views, landmarks, sorted(closed_eye_views), eye_brow)
    points_b, report_b = triangulate_points(views, landmarks, sorted(landmarks), nose_mouth)
    return points_a + points_b, report_a + report_b


def select_frontal_views(views: dict[str, View], names: set[str], max_off_frontal_deg: float) -> list[str]:
    frontal = sorted(
        (name for name in names if views[name].off_frontal_deg <= max_off_frontal_deg),
        key=lambda name: views[name].off_frontal_deg,
    )
    if len(frontal) < 2:
        raise SystemExit(
            f"only {len(frontal)} closed-eye fit(s) within {max_off_frontal_deg} deg of frontal; raise --jaw-max-angle"
        )
    print(
        "jaw contour from near-frontal views: "
        + ", ".join(f"{name} ({views[name].off_frontal_deg:.1f} deg)" for name in frontal)
    )
    return frontal


def backproject_jaw(
    views: dict[str, View], landmarks: dict[str, np.ndarray], frontal: list[str]
) -> tuple[np.ndarray, list[dict]]:
    """Back-project the jaw contour 0..16 through the depth maps; take the median over the views."""
    points = np.zeros((68, 3))
    report = []
    for index in JAW:
        candidates, used = [], []
        for name in frontal:
            uv = landmarks[name][index]
            depth = sample_foreground_depth(views[name].depth, uv)
            if depth > 0:
                candidates.append(backproject(views[name], uv[None], np.array([depth]))[0])
                used.append(name)
        if not candidates:
            raise SystemExit(f"jaw landmark {index} has no valid depth in any near-frontal view")
        X = np.median(np.asarray(candidates), axis=0)
        errors = np.array(
            [np.linalg.norm(project(views[name].projection, X[None])[0] - landmarks[name][index]) for name in used]
        )
        points[index] = X
        report.append(
            dict(
                index=int(index),
                method="depth",
                views_used=len(used),
                views_offered=len(frontal),
                rms_px=float(np.sqrt(np.mean(errors**2))),
                max_px=float(errors.max()),
            )
        )
    return points, report


def to_head_frame(points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Return head-frame points plus the world origin and world length of one template unit."""
    origin = points_world.mean(axis=0)
    unit = float(np.linalg.norm(points_world[LEFT_EYE_OUTER] - points_world[RIGHT_EYE_OUTER]))
    head = (points_world - origin) @ WORLD_TO_HEAD.T / unit
    return head, origin, unit


def report_symmetry(head: np.ndarray) -> None:
    """Print how far the left-right axis of the mirror pairs is turned from the head frame's x axis."""
    for label, pairs in (
        ("all pairs", MIRROR_PAIRS),
        ("pairs without the jaw", [pair for pair in MIRROR_PAIRS if pair[0] >= 17]),
    ):
        directions = np.array([head[left] - head[right] for right, left in pairs])
        axis = (directions / np.linalg.norm(directions, axis=1, keepdims=True)).mean(axis=0)
        yaw = np.degrees(np.arctan2(axis[2], axis[0]))
        roll = np.degrees(np.arctan2(axis[1], axis[0]))
        print(f"left-right axis of the {label} vs head x: {yaw:+.2f} deg about y, {roll:+.2f} deg about z")


def write_csv(path: Path, head: np.ndarray) -> None:
    lines = [
        "# 3D template of the 68 iBUG/300-W face landmarks (0-based indices, dlib order).",
        "# Frame: OpenCV object convention. x points to the subject's left (image right for a frontal camera),",
        "# y points down and z points into the head, away from a frontal camera, so the nose tip (30) has the smallest z.",
        "# A camera with rotation = identity looking along +z sees the face upright.",
        "# Origin: mean of the 68 points. Unit: the distance between the outer eye corners 36 and 45 is exactly 1.0.",
        "# The jaw points 0-16 are triangulated from near-frontal views of a sliding contour, so they lie inside",
        "# the head rather than on the skin. The scan's eyes are closed, so the upper and lower eyelid points nearly meet.",
        "# Derived by tools/build_landmark_template.py from renders of \"Infinite, 3D Head Scan by Lee Perry-Smith\"",
        "# (Infinite-Realities, based on a work at www.triplegangers.com), licensed under CC BY 3.0 Unported",
        "# (https://creativecommons.org/licenses/by/3.0/). Change: only landmark positions estimated from the renders are kept.",
        "index,x,y,z",
    ]
    lines += [f"{i},{x:.5f},{y:.5f},{z:.5f}" for i, (x, y, z) in enumerate(head)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def load_template(path: Path) -> np.ndarray:
    rows = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    if rows[0] != "index,x,y,z":
        raise SystemExit(f"{path}: expected the header 'index,x,y,z', found {rows[0]!r}")
    values = np.array([[float(field) for field in row.split(",")] for row in rows[1:]])
    if values.shape != (68, 4) or not np.array_equal(values[:, 0], np.arange(68)):
        raise SystemExit(f"{path}: expected 68 rows indexed 0..67, found shape {values.shape}")
    return np.ascontiguousarray(values[:, 1:])


def head_pose_of_view(view: View, origin: np.ndarray, unit: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the true head-to-camera rotation and translation (template units) of a view."""
    R = view.R @ WORLD_TO_HEAD.T
    t = (view.R @ origin + view.t) / unit
    return R, t


def rotation_error_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    cos = (np.trace(R_a @ R_b.T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def solve_head_pose(template: np.ndarray, image_points: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # SOLVEPNP_ITERATIVE without a guess lands on a mirrored pose (about 180 deg off) for
    # several views of this nearly flat point set, so start from the global SQPnP solution.
    ok, rvec, tvec = cv2.solvePnP(template, image_points, K, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise RuntimeError(f"solvePnP with SOLVEPNP_SQPNP failed on {len(template)} points")
    return cv2.solvePnPRefineLM(template, image_points, K, None, rvec, tvec)


def evaluate_pnp(
    template: np.ndarray,
    views: dict[str, View],
    landmarks: dict[str, np.ndarray],
    closed_eye_views: set[str],
    origin: np.ndarray,
    unit: float,
    label: str,
) -> None:
    """Print solvePnP's rotation error against the known cameras.

    err68 uses all points and err51 leaves out the sliding jaw contour. pitch, yaw and roll
    are the components of the 51-point error's rotation vector in the head frame (about x,
    y and z), which for errors of a few degrees are the Euler-angle errors.
    """
    print(f"\nsolvePnP on {label}: rotation error vs the known camera (deg), reprojection RMS (px)")
    print(
        f"{'view':<11}{'az':>6}{'el':>6} {'eye fit':<8}{'err68':>7}{'err51':>7}"
        f"{'pitch':>7}{'yaw':>6}{'roll':>6}{'rms68':>7}{'rms51':>7}"
    )
    errors = {"all": ([], []), "closed-eye": ([], [])}
    for name in sorted(landmarks, key=lambda n: views[n].azimuth_deg):
        view = views[name]
        R_true, _ = head_pose_of_view(view, origin, unit)
        closed = name in closed_eye_views
        rms, errs = [], []
        for subset in (np.arange(68), INNER):
            rvec, tvec = solve_head_pose(template[subset], landmarks[name][subset], view.K)
            R_est, _ = cv2.Rodrigues(rvec)
            errs.append(rotation_error_deg(R_est, R_true))
            projected, _ = cv2.projectPoints(template[subset], rvec, tvec, view.K, None)
            rms.append(np.sqrt(np.mean(np.sum((projected[:, 0] - landmarks[name][subset]) ** 2, axis=1))))
        # R_est is the 51-point estimate here, because INNER is the last subset above.
        pitch, yaw, roll = np.degrees(cv2.Rodrigues(R_true.T @ R_est)[0].ravel())
        for key in ("all", "closed-eye") if closed else ("all",):
            errors[key][0].append(errs[0])
            errors[key][1].append(errs[1])
        print(
            f"{name:<11}{view.azimuth_deg:6.1f}{view.elevation_deg:6.1f} {'closed' if closed else 'open':<8}"
            f"{errs[0]:7.2f}{errs[1]:7.2f}{pitch:+7.1f}{yaw:+6.1f}{roll:+6.1f}{rms[0]:7.2f}{rms[1]:7.2f}"
        )
    for key, (err68, err51) in errors.items():
        if err68:
            print(
                f"mean/median over {len(err68)} {key} fits: 68 pts {np.mean(err68):.2f}/{np.median(err68):.2f}, "
                f"51 pts {np.mean(err51):.2f}/{np.median(err51):.2f}"
            )


def draw_view_panel(
    template: np.ndarray, view: View, detected: np.ndarray, origin: np.ndarray, unit: float, zoom: int
) -> np.ndarray:
    """Draw dlib's landmarks and the template projected with the view's true camera on the render."""
    R, t = head_pose_of_view(view, origin, unit)
    projected, _ = cv2.projectPoints(template, cv2.Rodrigues(R)[0], t, view.K, None)
    panel = cv2.resize(view.image[..., ::-1], None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)

    def to_panel(uv: np.ndarray) -> tuple[int, int]:
        # Pixel centres sit at integers, so pixel i covers [i - 0.5, i + 0.5) before zooming.
        return tuple(int(round(c)) for c in (uv + 0.5) * zoom - 0.5)

    for uv in detected:
        cv2.circle(panel, to_panel(uv), 3, (0, 200, 0), -1)
    for uv in projected[:, 0]:
        cv2.circle(panel, to_panel(uv), 4, (0, 0, 255), 1)
    caption = f"{view.name} (az {view.azimuth_deg:.0f}, el {view.elevation_deg:.0f}): green dlib, red template"
    cv2.putText(panel, caption, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return panel


def draw_identity_panel(template: np.ndarray, size: int) -> np.ndarray:
    """Draw the template as seen by a camera with R = identity, which should show an upright face."""
    panel = np.full((size, size, 3), 255, dtype=np.uint8)
    K = np.array([[size * 1.2, 0, size / 2], [0, size * 1.2, size / 2], [0, 0, 1.0]])
    projected, _ = cv2.projectPoints(template, np.zeros(3), np.array([0.0, 0.0, 4.0]), K, None)
    for index, uv in enumerate(projected[:, 0]):
        point = tuple(int(round(c)) for c in uv)
        cv2.circle(panel, point, 3, (255, 0, 0), -1)
        if index in (0, 8, 16, 30, 36, 45, 48):
            cv2.putText(panel, str(index), (point[0] + 4, point[1] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.putText(panel, "template, camera R = identity", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return panel


def draw_overlay(
    path: Path,
    template: np.ndarray,
    panels: list[tuple[View, np.ndarray]],
    origin: np.ndarray,
    unit: float,
) -> None:
    """Save a PNG with one panel per (view, dlib landmarks) pair and the identity-camera panel."""
    zoom = 4
    images = [draw_view_panel(template, view, detected, origin, unit, zoom) for view, detected in panels]
    images.append(draw_identity_panel(template, images[0].shape[0]))
    cv2.imwrite(str(path), np.hstack(images))
    print(f"\noverlay written to {path}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding LeePerrySmith.glb and renders_200px/")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output CSV path")
    parser.add_argument(
        "--max-eye-ratio",
        type=float,
        default=0.25,
        help="max mean eye aspect ratio for a view's eye, brow and jaw points to be used (closed-eye fit)",
    )
    parser.add_argument(
        "--jaw-max-angle",
        type=float,
        default=25.0,
        help="max angle in degrees between a view and the frontal direction for the jaw contour (0..16)",
    )
    parser.add_argument(
        "--jaw-method",
        choices=("triangulate", "depth"),
        default="triangulate",
        help=(
            "triangulate: the point that best reprojects onto the sliding contour in the near-frontal views, "
            "which lies inside the head; depth: the median of the contour points back-projected onto the surface"
        ),
    )
    parser.add_argument(
        "--overlay",
        type=Path,
        help="optional PNG path: the template drawn on the most frontal build and test renders, and alone",
    )
    return parser.parse_args()


def print_reconstruction_report(rows: list[dict], surface_dist: np.ndarray, unit: float) -> None:
    print(f"\n{'idx':>3} {'method':<13}{'views':>7}{'rms px':>8}{'max px':>8}{'to mesh':>9}")
    for row in sorted(rows, key=lambda r: r["index"]):
        print(
            f"{row['index']:>3} {row['method']:<13}{row['views_used']:>3}/{row['views_offered']:<3}"
            f"{row['rms_px']:8.2f}{row['max_px']:8.2f}{surface_dist[row['index']] / unit:9.3f}"
        )
    print(
        "views: used/offered (offered = all views with a face, the closed-eye fits for 17-26 and 36-47, "
        "or the near-frontal closed-eye fits for 0-16); rms/max: reprojection error over the used views; "
        "to mesh: distance to the scan surface in template units"
    )


def main() -> None:
    args = parse_args()
    renders = args.data / "renders_200px"
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(find_predictor_path()))

    build_views = [view for split in BUILD_SPLITS for view in load_views(renders, split)]
    holdout_views = load_views(renders, HOLDOUT_SPLIT)
    views = {view.name: view for view in build_views + holdout_views}

    surface = build_surface_tree(load_mesh_world(args.data, renders))
    check_depth_convention(min(build_views, key=lambda v: v.off_frontal_deg), surface)

    build_landmarks = detect_landmarks(build_views, detector, predictor)
    holdout_landmarks = detect_landmarks(holdout_views, detector, predictor)
    closed_eye_views = {
        name
        for name, points in {**build_landmarks, **holdout_landmarks}.items()
        if has_closed_eye_fit(points, args.max_eye_ratio)
    }
    closed_build = closed_eye_views & set(build_landmarks)
    print(
        f"face found in {len(build_landmarks)}/{len(build_views)} build views (|az| <= "
        f"{max(abs(views[n].azimuth_deg) for n in build_landmarks):.0f} deg), {len(closed_build)} of them "
        f"with a closed-eye fit; {len(holdout_landmarks)}/{len(holdout_views)} held-out test views"
    )
    print("closed-eye fits: " + ", ".join(sorted(closed_build, key=lambda n: views[n].azimuth_deg)))

    inner, inner_report = reconstruct_inner(views, build_landmarks, closed_build)
    # An open-eye fit also distorts the rest of dlib's shape, so the jaw uses closed-eye fits only.
    frontal = select_frontal_views(views, closed_build, args.jaw_max_angle)
    if args.jaw_method == "triangulate":
        jaw, jaw_report = triangulate_points(views, build_landmarks, frontal, JAW)
    else:
        jaw, jaw_report = backproject_jaw(views, build_landmarks, frontal)
    points_world = inner + jaw
    head, origin, unit = to_head_frame(points_world)
    print(f"one template unit (outer eye corner distance) = {unit:.4f} world units")
    print_reconstruction_report(jaw_report + inner_report, surface.query(points_world)[0], unit)
    report_symmetry(head)

    write_csv(args.out, head)
    print(f"\nwrote {args.out}")

    template = load_template(args.out)
    evaluate_pnp(template, views, holdout_landmarks, closed_eye_views, origin, unit, "held-out test views")
    evaluate_pnp(template, views, build_landmarks, closed_eye_views, origin, unit, "build views (train + val)")
    if args.overlay:
        panels = []
        for found in (build_landmarks, holdout_landmarks):
            usable = closed_eye_views & set(found)
            if usable:
                frontal_name = min(usable, key=lambda n: views[n].off_frontal_deg)
                panels.append((views[frontal_name], found[frontal_name]))
        draw_overlay(args.overlay, template, panels, origin, unit)


if __name__ == "__main__":
    main()
