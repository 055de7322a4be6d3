"""The radiance field: an MLP from position and view direction to density and colour.

Layout of the reference NeRF: ``num_layers`` ReLU layers on the encoded position, the
encoded position concatenated again into the input of layer ``skip_layer``, a density
head, and a colour branch that also receives the encoded view direction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from daskavatar.nerf.encoding import encoded_size, positional_encoding
from daskavatar.nerf.presets import NerfPreset


def init_params(preset: NerfPreset, seed: int) -> dict:
    """Return Glorot-uniform initial weights as NumPy arrays.

    Drawn with NumPy rather than ``jax.random`` so a worker compiles nothing to start a fit.
    """
    rng = np.random.default_rng(seed)
    pos_size = encoded_size(3, preset.num_pos_freqs)
    dir_size = encoded_size(3, preset.num_dir_freqs)

    def dense(fan_in, fan_out):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weight = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
        return {"w": weight, "b": np.zeros(fan_out, dtype=np.float32)}

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
