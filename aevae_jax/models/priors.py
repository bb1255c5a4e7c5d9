"""Priors p(z) that several models share, in the shape of `base.Prior`.

`standard_normal` is N(0, I) over a code of `code_shape`, with the closed-form KL of a
diagonal-Gaussian posterior, its per-dimension terms, and exact moments. A model with a
prior of its own (a mixture, a hierarchy) builds its `Prior` in its own file.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from aevae_jax.models.base import Prior
from aevae_jax.nn.likelihoods import kl_to_std_normal, std_normal_log_prob


def standard_normal(code_shape: tuple[int, ...]) -> Prior:
    """p(z) = N(0, I) over codes [B, *code_shape]."""
    dims = math.prod(code_shape)

    def log_prob(params, z):
        del params
        return std_normal_log_prob(z.reshape(z.shape[0], dims))

    def sample(params, key, n, y=None):
        del params, y
        return jax.random.normal(key, (n, *code_shape))

    def kl_per_dim(params, enc):
        del params
        return kl_to_std_normal(enc.code, enc.log_var)

    def kl(params, enc):
        return jnp.sum(kl_per_dim(params, enc), axis=-1)

    def moments(params):
        del params
        return jnp.zeros(dims), jnp.eye(dims)

    return Prior(log_prob, sample, kl, kl_per_dim, moments)
