"""Masked dense layers (Germain et al. 2015): the autoregressive building block of the
VQ-VAE's MADE prior over code indices and of the inverse autoregressive flow's
networks. A mask [in, out] of 0s and 1s zeroes the weights that would let an output see
an input it must not."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np


def masked_dense(module: nn.Module, name: str, x: jax.Array, mask: np.ndarray) -> jax.Array:
    """x @ (W * mask) + b inside `module`'s compact call; W starts N(0, 1 / fan-in) over
    the inputs each output sees, b at zero (parameters `<name>_kernel`, `<name>_bias`)."""
    fan_in = np.maximum(mask.sum(0), 1)
    w = module.param(
        f"{name}_kernel",
        lambda key, shape: jax.random.normal(key, shape) * mask / np.sqrt(fan_in),
        mask.shape,
    )
    b = module.param(f"{name}_bias", nn.initializers.zeros, (mask.shape[1],))
    return x @ (w * mask) + b


def autoregressive_masks(degrees: np.ndarray, hidden: int):
    """(input->hidden, hidden->hidden, hidden->output) masks of a two-hidden-layer MADE
    whose inputs and outputs carry `degrees` (1..P, natural order; a one-hot input
    repeats its position's degree): an output of degree d sees only inputs of degree < d."""
    positions = int(degrees.max())
    d_hidden = np.arange(hidden) % max(positions - 1, 1) + 1
    m1 = (d_hidden[None, :] >= degrees[:, None]).astype(np.float32)
    m2 = (d_hidden[None, :] >= d_hidden[:, None]).astype(np.float32)
    m3 = (degrees[None, :] > d_hidden[:, None]).astype(np.float32)
    return m1, m2, m3
