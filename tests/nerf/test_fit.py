"""Fitting, rendering and meshing through the compiled programs."""

import contextlib

import numpy as np
import pytest
import trimesh

pytest.importorskip("jax")

from daskavatar.nerf.mesh import extract_mesh  # noqa: E402
from daskavatar.nerf.presets import PRESETS  # noqa: E402
from daskavatar.nerf.programs import compile_programs, load_programs  # noqa: E402
from daskavatar.nerf.rays import orbit_cameras  # noqa: E402
from daskavatar.nerf.train import TrainingViews, fit_nerf, render_image  # noqa: E402


def _sphere_views(count=6, size=32, radius=0.5):
    """Views of a uniformly red sphere of ``radius`` at the origin on white."""
    base = np.eye(4)
    base[2, 3] = -3.0
    cameras = orbit_cameras(base, np.linspace(-60, 60, count))
    focal = 1.5 * size
    intrinsics = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
    images = np.ones((count, size, size, 3), np.float32)
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    for index, c2w in enumerate(cameras):
        directions = np.stack([(cols - size / 2) / focal, (rows - size / 2) / focal,
                               np.ones_like(cols)], -1) @ c2w[:3, :3].T
        directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
        origin = c2w[:3, 3]
        b = directions @ origin
        hit = b * b - (origin @ origin - radius ** 2) > 0
        images[index][hit] = [0.9, 0.1, 0.1]
    return TrainingViews(images=images, c2w=cameras,
                         intrinsics=np.repeat(intrinsics[None], count, axis=0))


@pytest.fixture(scope="module")
def programs():
    preset = PRESETS["small"]
    return load_programs(compile_programs(preset), preset)


def test_fit_sphere_reaches_psnr(programs):
    views = _sphere_views()

    fit = fit_nerf(views, programs, max_iterations=300, seed=0)

    assert fit.train_psnr > 20.0
    rgb, _ = render_image(programs, fit.params, views.c2w[0], views.intrinsics[0], 32, 32)
    assert rgb.shape == (32, 32, 3)
    psnr = -10 * np.log10(np.mean((rgb - views.images[0]) ** 2))
    assert psnr > 18.0

    vertices, faces, colors, _ = extract_mesh(programs, fit.params, resolution=32,
                                              viewpoint=views.c2w[:, :3, 3].mean(0))
    assert len(faces) > 100
    radii = np.linalg.norm(vertices, axis=1)
    assert 0.25 < np.median(radii) < 0.8
    assert colors.shape == (len(vertices), 4)
    # Outward normals give a positive signed volume.
    assert trimesh.Trimesh(vertices, faces, process=False).volume > 0
    assert np.median(colors[:, 0]) > np.median(colors[:, 1]) + 60


@contextlib.contextmanager
def backend_compiles():
    """Collect the XLA backend compilations that JAX reports while the block runs."""
    import jax.monitoring

    events = []

    def listener(event, duration, **kwargs):
        if "backend_compile" in event:
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_fits_compile_nothing_on_worker(programs):
    with backend_compiles() as compiles:
        for count in (2, 3, 5, 7):
            views = _sphere_views(count=count, size=16)
            fit = fit_nerf(views, programs, max_iterations=2, seed=0)
            extract_mesh(programs, fit.params, resolution=16,
                         viewpoint=views.c2w[:, :3, 3].mean(0))

    assert compiles == []


def test_compile_listener_sees_jit():
    import jax

    with backend_compiles() as compiles:
        jax.jit(lambda x: x * 3.0 + 1.0)(np.arange(7.0)).block_until_ready()

    assert len(compiles) == 1
