"""Sample positions along rays."""

import jax.numpy as jnp


def stratified_samples(near, far, jitter):
    """Place one sample in each of ``S`` equal bins between ``near`` and ``far``.

    ``near`` and ``far`` have shape ``(R,)``. ``jitter`` ``(R, S)`` in [0, 1) is the position
    inside each bin, and 0.5 everywhere gives the deterministic bin centres used for rendering.
    Returns distances along the ray of shape ``(R, S)``, increasing along the last axis.
    """
    num_samples = jitter.shape[-1]
    bins = (jnp.arange(num_samples, dtype=near.dtype) + jitter) / num_samples
    return near[:, None] + (far - near)[:, None] * bins


def ray_points(rays_o, rays_d, t_vals):
    """Return the sample positions ``(R, S, 3)`` of rays ``(R, 3)`` at distances ``(R, S)``."""
    return rays_o[:, None, :] + rays_d[:, None, :] * t_vals[..., None]
