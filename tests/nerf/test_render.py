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
