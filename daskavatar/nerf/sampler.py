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


def importance_samples(t_vals, weights, num_importance: int):
    """Draw ``num_importance`` distances per ray from the piecewise-constant PDF of ``weights``.

    ``t_vals`` ``(R, S)`` are increasing sample distances and ``weights`` ``(R, S)`` their
    compositing weights. Each sample ``i`` owns the interval from the midpoint before it to
    the midpoint after it (the first and last reach ``t_vals[:, 0]`` and ``t_vals[:, -1]``).
    The new samples sit at the evenly spaced quantiles ``(k + 0.5) / num_importance`` of the
    PDF, the deterministic variant of hierarchical sampling. Gradients do not flow through
    them. Returns the union of both sets, sorted, shape ``(R, S + num_importance)``.
    """
    import jax

    mids = 0.5 * (t_vals[:, 1:] + t_vals[:, :-1])
    edges = jnp.concatenate([t_vals[:, :1], mids, t_vals[:, -1:]], axis=-1)
    weights = jax.lax.stop_gradient(weights) + 1e-5
    pdf = weights / weights.sum(axis=-1, keepdims=True)
    cdf = jnp.concatenate([jnp.zeros_like(pdf[:, :1]), jnp.cumsum(pdf, axis=-1)], axis=-1)

    # Invert the CDF at the quantiles u: find the interval whose CDF range contains u and
    # interpolate linearly inside it.
    u = (jnp.arange(num_importance, dtype=t_vals.dtype) + 0.5) / num_importance
    u = jnp.broadcast_to(u, (t_vals.shape[0], num_importance))
    above = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right"))(cdf, u)
    above = jnp.clip(above, 1, cdf.shape[-1] - 1)
    below = above - 1
    cdf_below = jnp.take_along_axis(cdf, below, axis=-1)
    cdf_above = jnp.take_along_axis(cdf, above, axis=-1)
    edge_below = jnp.take_along_axis(edges, below, axis=-1)
    edge_above = jnp.take_along_axis(edges, above, axis=-1)
    span = jnp.where(cdf_above - cdf_below < 1e-8, 1.0, cdf_above - cdf_below)
    fine = edge_below + (u - cdf_below) / span * (edge_above - edge_below)

    fine = jax.lax.stop_gradient(fine)
    return jnp.sort(jnp.concatenate([t_vals, fine], axis=-1), axis=-1)
