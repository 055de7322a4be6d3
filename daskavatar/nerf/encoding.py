"""Positional encoding (Fourier features) of positions and view directions."""

import jax.numpy as jnp


def positional_encoding(x, num_freqs: int):
    """Encode ``x`` of shape ``(*batch, d)`` as ``[x, sin(2^k x), cos(2^k x)]``, k < num_freqs.

    Returns shape ``(*batch, d * (1 + 2 * num_freqs))``. The frequencies are 2^k without the
    factor pi, as in the reference NeRF code, because scenes are scaled to a few units.
    """
    freqs = 2.0 ** jnp.arange(num_freqs, dtype=x.dtype)
    scaled = (x[..., None, :] * freqs[:, None]).reshape(*x.shape[:-1], -1)
    return jnp.concatenate([x, jnp.sin(scaled), jnp.cos(scaled)], axis=-1)


def encoded_size(dims: int, num_freqs: int) -> int:
    """Return the feature size of :func:`positional_encoding` for ``dims`` inputs."""
    return dims * (1 + 2 * num_freqs)
