"""Input encodings of the radiance field: Fourier features and a multiresolution hash grid.

:func:`positional_encoding` is the frequency encoding of the original NeRF.
:func:`hash_grid_encoding` is the multiresolution hash encoding of Instant-NGP (Müller et al.,
"Instant Neural Graphics Primitives with a Multiresolution Hash Encoding", SIGGRAPH 2022):
trainable feature tables on grids of growing resolution, interpolated trilinearly. Coarse
levels whose grid fits the table are indexed densely, finer ones through a spatial hash.
The field that combines them with MLPs is in :mod:`daskavatar.nerf.field`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

# Primes of the spatial hash of Instant-NGP; the first is 1 so that neighbouring cells along
# x land in neighbouring table entries, which keeps gathers cache-friendly.
_HASH_PRIMES = (1, 2654435761, 805459861)


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


@dataclasses.dataclass(frozen=True)
class HashGrid:
    """Layout of a multiresolution hash grid over the cube ``[-radius, radius]^3``."""

    num_levels: int
    """Number of grid resolutions."""
    features_per_level: int
    """Trainable features per table entry."""
    log2_table_size: int
    """Entries per level are ``2 ** log2_table_size``."""
    base_resolution: int
    """Cells per axis of the coarsest level."""
    max_resolution: int
    """Cells per axis of the finest level; the levels grow geometrically in between."""
    radius: float
    """Half side of the encoded cube in world units; points outside are clamped to it."""

    @property
    def table_size(self) -> int:
        return 2 ** self.log2_table_size

    @property
    def output_size(self) -> int:
        return self.num_levels * self.features_per_level

    def resolutions(self) -> np.ndarray:
        """Cells per axis of each level, ``(num_levels,)`` int64."""
        if self.num_levels == 1:
            return np.array([self.base_resolution])
        growth = (self.max_resolution / self.base_resolution) ** (1.0 / (self.num_levels - 1))
        return np.floor(self.base_resolution * growth ** np.arange(self.num_levels)).astype(
            np.int64)

    def init_table(self, rng: np.random.Generator) -> np.ndarray:
        """Initial features ``(num_levels, table_size, features_per_level)``, uniform in ±1e-4."""
        shape = (self.num_levels, self.table_size, self.features_per_level)
        return rng.uniform(-1e-4, 1e-4, size=shape).astype(np.float32)


def hash_grid_encoding(points, table, grid: HashGrid):
    """Encode ``points`` ``(B, 3)`` with the feature ``table`` ``(L, T, F)`` of ``grid``.

    Returns ``(B, L * F)``: per level, the trilinear interpolation of the features at the 8
    corners of the cell that contains the point.
    """
    resolutions = grid.resolutions()
    dense = (resolutions + 1) ** 3 <= grid.table_size
    levels = grid.num_levels

    # Unit cube coordinates, then cell coordinates per level: (B, L, 3).
    unit = jnp.clip((points + grid.radius) / (2.0 * grid.radius), 0.0, 1.0)
    scaled = unit[:, None, :] * jnp.asarray(resolutions, points.dtype)[None, :, None]
    cell = jnp.minimum(jnp.floor(scaled), jnp.asarray(resolutions - 1, points.dtype)[None, :, None])
    frac = scaled - cell
    cell = cell.astype(jnp.uint32)

    # The 8 cell corners: (8, 3) offsets, corners (B, L, 8, 3).
    offsets = np.array([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], np.uint32)
    corners = cell[:, :, None, :] + jnp.asarray(offsets)[None, None]

    # Dense index for coarse levels, spatial hash for fine ones: (B, L, 8).
    side = jnp.asarray(resolutions + 1, jnp.uint32)[None, :, None]
    dense_index = corners[..., 0] + side * (corners[..., 1] + side * corners[..., 2])
    primes = jnp.asarray(_HASH_PRIMES, jnp.uint32)
    hashed = (corners[..., 0] * primes[0]) ^ (corners[..., 1] * primes[1]) ^ (
        corners[..., 2] * primes[2])
    index = jnp.where(jnp.asarray(dense)[None, :, None], dense_index, hashed)
    index = (index % jnp.uint32(grid.table_size)).astype(jnp.int32)

    # Gather the corner features (B, L, 8, F) and weight them trilinearly.
    level_index = jnp.arange(levels, dtype=jnp.int32)[None, :, None]
    features = table[level_index, index]
    weights = jnp.where(jnp.asarray(offsets, bool)[None, None], frac[:, :, None, :],
                        1.0 - frac[:, :, None, :]).prod(axis=-1)
    encoded = (features * weights[..., None]).sum(axis=2)
    return encoded.reshape(points.shape[0], levels * grid.features_per_level)
