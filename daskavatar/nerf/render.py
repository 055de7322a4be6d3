"""Volume rendering by alpha compositing (the quadrature of the NeRF paper, eq. 3)."""

import jax.numpy as jnp


def composite(sigma, rgb, t_vals, background):
    """Composite samples along each ray.

    Shapes: ``sigma`` ``(R, S)`` density per unit length, ``rgb`` ``(R, S, 3)``, ``t_vals``
    ``(R, S)`` increasing distances, ``background`` ``(3,)``. The last sample's interval
    reaches to the last sample only (length 0 beyond ``far``), so space behind ``far`` adds
    nothing and the background shows through.

    Returns a dict with ``rgb`` ``(R, 3)``, ``depth`` ``(R,)`` (expected distance of the
    weights, not normalised), ``acc`` ``(R,)`` (accumulated opacity, at most 1) and
    ``weights`` ``(R, S)``.
    """
    deltas = jnp.diff(t_vals, axis=-1, append=t_vals[:, -1:])
    alpha = 1.0 - jnp.exp(-sigma * deltas)

    # Transmittance before sample i: exp(-sum_{j<i} sigma_j delta_j), an exclusive cumsum.
    optical_depth = jnp.cumsum(sigma * deltas, axis=-1)
    transmittance = jnp.exp(-jnp.concatenate(
        [jnp.zeros_like(optical_depth[:, :1]), optical_depth[:, :-1]], axis=-1))
    weights = alpha * transmittance

    acc = weights.sum(axis=-1)
    color = (weights[..., None] * rgb).sum(axis=-2) + (1.0 - acc)[:, None] * background
    depth = (weights * t_vals).sum(axis=-1)
    return {"rgb": color, "depth": depth, "acc": acc, "weights": weights}
