"""Volume rendering, encoding and rays checked against closed forms."""

import numpy as np
import pytest

jnp = pytest.importorskip("jax.numpy")

from daskavatar.nerf.encoding import encoded_size, positional_encoding  # noqa: E402
from daskavatar.nerf.rays import pixel_rays, sphere_bounds  # noqa: E402
from daskavatar.nerf.render import composite  # noqa: E402
from daskavatar.nerf.sampler import stratified_samples  # noqa: E402


def test_constant_slab_transmittance():
    sigma_value, near, far, samples = 0.7, 2.0, 5.0, 4096
    t_vals = jnp.linspace(near, far, samples)[None, :]
    sigma = jnp.full((1, samples), sigma_value)
    rgb = jnp.broadcast_to(jnp.array([0.2, 0.4, 0.6]), (1, samples, 3))

    out = composite(sigma, rgb, t_vals, background=jnp.zeros(3))

    expected_opacity = 1.0 - np.exp(-sigma_value * (far - near))
    assert float(out["acc"][0]) == pytest.approx(expected_opacity, rel=1e-4)
    np.testing.assert_allclose(out["rgb"][0], np.array([0.2, 0.4, 0.6]) * expected_opacity,
                               rtol=1e-4)
    # The expected depth of an exponential distribution truncated to [near, far].
    d = far - near
    mean_depth = near + (1 / sigma_value - d * np.exp(-sigma_value * d) / expected_opacity)
    assert float(out["depth"][0]) / expected_opacity == pytest.approx(mean_depth, rel=1e-3)


def test_weights_sum_to_at_most_one():
    rng = np.random.default_rng(0)
    t_vals = jnp.sort(jnp.asarray(rng.uniform(0, 10, (64, 32)), jnp.float32), axis=-1)
    sigma = jnp.asarray(rng.exponential(5.0, (64, 32)), jnp.float32)
    rgb = jnp.asarray(rng.uniform(0, 1, (64, 32, 3)), jnp.float32)

    out = composite(sigma, rgb, t_vals, background=jnp.ones(3))

    weights = np.asarray(out["weights"])
    assert np.all(weights >= 0)
    assert np.all(weights.sum(-1) <= 1 + 1e-6)
    assert np.all((np.asarray(out["rgb"]) >= 0) & (np.asarray(out["rgb"]) <= 1 + 1e-6))


def test_empty_space_shows_background():
    t_vals = jnp.linspace(1.0, 3.0, 16)[None, :]
    out = composite(jnp.zeros((1, 16)), jnp.zeros((1, 16, 3)), t_vals,
                    background=jnp.array([1.0, 0.5, 0.25]))

    np.testing.assert_allclose(out["rgb"][0], [1.0, 0.5, 0.25])
    assert float(out["acc"][0]) == 0.0


def test_positional_encoding_values():
    x = jnp.array([[0.5, -1.0, 2.0]])

    encoded = positional_encoding(x, 3)

    assert encoded.shape == (1, encoded_size(3, 3)) == (1, 21)
    np.testing.assert_allclose(encoded[0, :3], [0.5, -1.0, 2.0])
    # Frequencies are laid out per frequency, then per input dimension.
    np.testing.assert_allclose(encoded[0, 3:12], np.sin([0.5, -1.0, 2.0, 1.0, -2.0, 4.0,
                                                          2.0, -4.0, 8.0]), rtol=1e-6)
    np.testing.assert_allclose(encoded[0, 12:21], np.cos([0.5, -1.0, 2.0, 1.0, -2.0, 4.0,
                                                           2.0, -4.0, 8.0]), rtol=1e-6)


def test_stratified_samples_stay_in_bins():
    near = jnp.array([1.0, 2.0])
    far = jnp.array([3.0, 6.0])
    jitter = jnp.asarray(np.random.default_rng(1).random((2, 8)), jnp.float32)

    t_vals = np.asarray(stratified_samples(near, far, jitter))

    assert np.all(np.diff(t_vals, axis=-1) > 0)
    bins = (t_vals - np.array([[1.0], [2.0]])) / np.array([[2.0], [4.0]]) * 8
    np.testing.assert_array_equal(np.floor(bins), np.tile(np.arange(8), (2, 1)))


def test_rays_hit_bounding_sphere():
    c2w = np.eye(4)[None].repeat(2, axis=0)
    c2w[:, 2, 3] = -4.0
    intrinsics = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])[None].repeat(2, axis=0)

    rays_o, rays_d = pixel_rays(c2w, intrinsics, np.array([50.0, 0.0]), np.array([50.0, 0.0]))
    near, far = sphere_bounds(rays_o, rays_d, radius=1.0)

    np.testing.assert_allclose(rays_d[0], [0, 0, 1], atol=1e-7)
    assert near[0] == pytest.approx(3.0)
    assert far[0] == pytest.approx(5.0)
    assert near[1] == far[1]


def test_importance_samples_follow_weights():
    from daskavatar.nerf.sampler import importance_samples

    t_vals = jnp.linspace(0.0, 10.0, 11)[None, :]
    weights = jnp.zeros((1, 11)).at[0, 6].set(1.0)

    merged = np.asarray(importance_samples(t_vals, weights, 16))[0]

    assert merged.shape == (27,)
    assert np.all(np.diff(merged) >= 0)
    fine = np.setdiff1d(merged, np.arange(11.0))
    # Sample 6 owns the interval between the midpoints 5.5 and 6.5.
    assert len(fine) >= 14
    assert np.all((fine >= 5.5 - 1e-3) & (fine <= 6.5 + 1e-3))


def test_hash_grid_interpolates_linear_field():
    from daskavatar.nerf.encoding import HashGrid, hash_grid_encoding

    # One dense level: every grid vertex has its own entry, so trilinear interpolation of
    # vertex values a . x reproduces the linear function exactly.
    grid = HashGrid(num_levels=1, features_per_level=1, log2_table_size=12, base_resolution=8,
                    max_resolution=8, radius=1.0)
    side = 9
    ix, iy, iz = np.meshgrid(np.arange(side), np.arange(side), np.arange(side), indexing="ij")
    vertex_world = np.stack([ix, iy, iz], -1) / 8 * 2.0 - 1.0
    a = np.array([0.3, -0.7, 1.1])
    table = np.zeros((1, grid.table_size, 1), np.float32)
    index = (ix + side * (iy + side * iz)).ravel()
    table[0, index, 0] = (vertex_world.reshape(-1, 3) @ a)
    points = np.random.default_rng(0).uniform(-1, 1, (200, 3)).astype(np.float32)

    encoded = np.asarray(hash_grid_encoding(jnp.asarray(points), jnp.asarray(table), grid))

    assert encoded.shape == (200, 1)
    np.testing.assert_allclose(encoded[:, 0], points @ a, atol=1e-5)


def test_hash_grid_levels_and_size():
    from daskavatar.nerf.encoding import HashGrid, hash_grid_encoding

    grid = HashGrid(num_levels=4, features_per_level=2, log2_table_size=10, base_resolution=4,
                    max_resolution=32, radius=1.2)
    table = np.random.default_rng(1).normal(size=(4, 1024, 2)).astype(np.float32)

    encoded = hash_grid_encoding(jnp.zeros((5, 3)), jnp.asarray(table), grid)

    np.testing.assert_array_equal(grid.resolutions(), [4, 8, 16, 32])
    assert encoded.shape == (5, grid.output_size) == (5, 8)
    # Points outside the cube are clamped to its faces, so the features stay finite.
    far = hash_grid_encoding(jnp.full((1, 3), 50.0), jnp.asarray(table), grid)
    assert np.all(np.isfinite(np.asarray(far)))


def test_occupancy_carves_sphere_hull():
    from daskavatar.nerf.occupancy import OccupancyGrid
    from daskavatar.nerf.rays import orbit_cameras

    size, radius = 48, 0.5
    base = np.eye(4)
    base[2, 3] = -3.0
    cameras = np.concatenate([orbit_cameras(base, np.linspace(0, 315, 8)),
                              _tilt(80) @ base[None]])
    focal = 1.5 * size
    intrinsics = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
    intrinsics = np.repeat(intrinsics[None], len(cameras), axis=0)
    masks = []
    for c2w in cameras:
        rays_o, rays_d = pixel_rays(np.repeat(c2w[None], size * size, 0),
                                    np.repeat(intrinsics[:1], size * size, 0),
                                    np.tile(np.arange(size) + 0.5, size),
                                    np.repeat(np.arange(size) + 0.5, size))
        near, far = sphere_bounds(rays_o, rays_d, radius=radius)
        masks.append((far > near).reshape(size, size))

    grid = OccupancyGrid.from_masks(np.stack(masks), cameras, intrinsics, resolution=32,
                                    radius=1.2)

    centres = grid.cell_centres()
    occupied = grid.occupied.ravel()
    norms = np.linalg.norm(centres, axis=1)
    assert np.all(occupied[norms < radius])
    # The shell between 0.8 and 0.9 projects inside every image, so all of it is carved away.
    assert not np.any(occupied[(norms > 0.8) & (norms < 0.9)])
    # Rays bounded by the grid still contain their whole chord through the sphere.
    rays_o, rays_d = pixel_rays(np.repeat(cameras[:1], 3, 0), intrinsics[:3],
                                np.array([24.0, 20.0, 2.0]), np.array([24.0, 26.0, 2.0]))
    near, far = grid.ray_bounds(rays_o, rays_d)
    sphere_near, sphere_far = sphere_bounds(rays_o, rays_d, radius=radius)
    assert np.all(near[:2] <= sphere_near[:2])
    assert np.all(far[:2] >= sphere_far[:2])
    assert far[0] - near[0] < 2.0
    assert near[2] == far[2]


def _tilt(degrees):
    angle = np.radians(degrees)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation


def _views(count, size=8):
    from daskavatar.nerf.rays import orbit_cameras
    from daskavatar.nerf.views import TrainingViews

    base = np.eye(4)
    base[:3, 3] = [0.2, -0.1, -3.0]
    cameras = orbit_cameras(base, np.linspace(-40, 40, count))
    intrinsics = np.array([[10.0, 0, 3.0], [0, 10.0, 4.5], [0, 0, 1.0]])
    images = np.random.default_rng(count).random((count, size, size, 3)).astype(np.float32)
    return TrainingViews(images=images, c2w=cameras,
                         intrinsics=np.repeat(intrinsics[None], count, axis=0),
                         masks=images[..., 0] > 0.5)


def test_mirrored_view_rays_are_mirror_images():
    views = _views(2)

    both = views.with_mirrored()

    assert len(both) == 4
    np.testing.assert_array_equal(both.images[2], views.images[0][:, ::-1])
    np.testing.assert_array_equal(both.masks[3], views.masks[1][:, ::-1])
    assert np.linalg.det(both.c2w[2, :3, :3]) == pytest.approx(1.0)
    # Pixel column c of the flipped image shows what column W - 1 - c of the original shows,
    # along the original ray mirrored through x = 0.
    rows, cols = np.array([1, 5, 7]), np.array([0, 3, 6])
    mirrored_o, mirrored_d = both.pixel_rays(np.full(3, 2), rows, cols)
    original_o, original_d = views.pixel_rays(np.zeros(3, int), rows, 8 - 1 - cols)
    flip = np.array([-1.0, 1.0, 1.0], np.float32)
    np.testing.assert_allclose(mirrored_o, original_o * flip, atol=1e-6)
    np.testing.assert_allclose(mirrored_d, original_d * flip, atol=1e-6)


def test_held_out_view_is_central():
    for count, expected in ((2, None), (3, 1), (5, 2), (7, 3)):
        views = _views(count)

        training, held_out = views.split_held_out(min_views=3)

        assert views.held_out_index(min_views=3) == expected
        if expected is None:
            assert held_out is None
            assert len(training) == count
        else:
            assert len(training) == count - 1
            np.testing.assert_array_equal(held_out.images[0], views.images[expected])


def test_mesh_part_sizes():
    from daskavatar.nerf.mesh import part_sizes

    # Two triangles sharing an edge, one apart, and an unused vertex.
    faces = np.array([[0, 1, 2], [1, 2, 3], [4, 5, 6]])

    assert part_sizes(faces, 8).tolist() == [2, 1]
    assert part_sizes(np.zeros((0, 3), np.int64), 3).tolist() == []

