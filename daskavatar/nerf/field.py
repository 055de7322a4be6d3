"""The radiance field: MLPs from encoded position and view direction to density and colour.

Two layouts, chosen by the preset's ``encoding``:

- ``frequency``: the reference NeRF. ``num_layers`` ReLU layers on the Fourier-encoded
  position, the encoded position concatenated again into the input of layer ``skip_layer``,
  a density head, and a colour branch that also receives the encoded view direction.
- ``hash``: Instant-NGP's small networks on a multiresolution hash grid. One hidden layer
  maps the grid features to the density and ``geo_features`` features, and a colour MLP
  maps those and the encoded view direction to RGB.

The encodings are in :mod:`daskavatar.nerf.encoding`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from daskavatar.nerf.encoding import (encoded_size, hash_grid_encoding,
                                      positional_encoding)
from daskavatar.nerf.presets import NerfPreset


def init_params(preset: NerfPreset, seed: int) -> dict:
    """Return Glorot-uniform initial weights as NumPy arrays.

    Drawn with NumPy rather than ``jax.random`` so a worker compiles nothing to start a fit.
    """
    rng = np.random.default_rng(seed)

    def dense(fan_in, fan_out):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weight = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
        return {"w": weight, "b": np.zeros(fan_out, dtype=np.float32)}

    dir_size = encoded_size(3, preset.num_dir_freqs)
    if preset.encoding == "hash":
        grid = preset.hash_grid()
        density = [dense(grid.output_size, preset.width)]
        for _ in range(preset.num_layers - 1):
            density.append(dense(preset.width, preset.width))
        return {
            "table": grid.init_table(rng),
            "density": density,
            "density_out": dense(preset.width, 1 + preset.geo_features),
            "color": dense(preset.geo_features + dir_size, preset.width),
            "rgb": dense(preset.width, 3),
        }

    pos_size = encoded_size(3, preset.num_pos_freqs)
    layers = []
    fan_in = pos_size
    for index in range(preset.num_layers):
        if index == preset.skip_layer:
            fan_in += pos_size
        layers.append(dense(fan_in, preset.width))
        fan_in = preset.width

    return {
        "layers": layers,
        "sigma": dense(preset.width, 1),
        "feature": dense(preset.width, preset.width),
        "view": dense(preset.width + dir_size, preset.width // 2),
        "rgb": dense(preset.width // 2, 3),
    }


def apply_field(params: dict, points, directions, preset: NerfPreset):
    """Evaluate the field at ``points`` and unit ``directions``, both ``(*batch, 3)``.

    Returns ``(sigma, rgb)`` of shapes ``(*batch,)`` (density per world unit, >= 0) and
    ``(*batch, 3)`` (colour in [0, 1]).
    """
    if preset.encoding == "hash":
        return _apply_hash_field(params, points, directions, preset)

    encoded = positional_encoding(points, preset.num_pos_freqs)
    hidden = encoded
    for index, layer in enumerate(params["layers"]):
        if index == preset.skip_layer:
            hidden = jnp.concatenate([hidden, encoded], axis=-1)
        hidden = jax.nn.relu(hidden @ layer["w"] + layer["b"])

    # Softplus instead of the reference ReLU keeps gradients alive for samples that start
    # with negative raw density; the shift starts empty space near zero density.
    raw_sigma = (hidden @ params["sigma"]["w"] + params["sigma"]["b"])[..., 0]
    sigma = jax.nn.softplus(raw_sigma - 1.0)

    feature = hidden @ params["feature"]["w"] + params["feature"]["b"]
    view_input = jnp.concatenate(
        [feature, positional_encoding(directions, preset.num_dir_freqs)], axis=-1)
    view_hidden = jax.nn.relu(view_input @ params["view"]["w"] + params["view"]["b"])
    rgb = jax.nn.sigmoid(view_hidden @ params["rgb"]["w"] + params["rgb"]["b"])
    return sigma, rgb


def _apply_hash_field(params: dict, points, directions, preset: NerfPreset):
    batch_shape = points.shape[:-1]
    flat_points = points.reshape(-1, 3)
    flat_dirs = directions.reshape(-1, 3)

    hidden = hash_grid_encoding(flat_points, params["table"], preset.hash_grid())
    for layer in params["density"]:
        hidden = jax.nn.relu(hidden @ layer["w"] + layer["b"])
    out = hidden @ params["density_out"]["w"] + params["density_out"]["b"]

    # Instant-NGP's exponential density, clipped so that one large raw value cannot
    # overflow; it reaches the high densities of a sharp surface in few steps.
    sigma = jnp.exp(jnp.clip(out[:, 0] + preset.density_bias, -15.0, 11.0))

    color_input = jnp.concatenate(
        [out[:, 1:], positional_encoding(flat_dirs, preset.num_dir_freqs)], axis=-1)
    color_hidden = jax.nn.relu(color_input @ params["color"]["w"] + params["color"]["b"])
    rgb = jax.nn.sigmoid(color_hidden @ params["rgb"]["w"] + params["rgb"]["b"])
    return sigma.reshape(batch_shape), rgb.reshape(*batch_shape, 3)
