"""Losses and image metrics of the NeRF fit."""

import jax.numpy as jnp
import numpy as np


def mse(predicted, target):
    """Mean squared error over all elements of equally shaped arrays."""
    return jnp.mean((predicted - target) ** 2)


def psnr_from_mse(value: float) -> float:
    """Peak signal-to-noise ratio in dB of colours in [0, 1] with the given MSE."""
    return float(-10.0 * np.log10(max(float(value), 1e-10)))
