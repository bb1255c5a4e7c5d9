"""Log-densities, divergences and the one loss reduction used everywhere.

Conventions (stated once, tested in tests/test_likelihoods.py):
- Decoders output unconstrained `logits` of the image shape; the image mean is
  `sigmoid(logits)` for every likelihood, so AE and VAE share one decoder.
- Per-example quantities are summed over pixels (and over latent dimensions);
  a batch loss is the mean of per-example values (`batch_mean`).
- Everything is in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from aevae_jax.errors import UserError


def sum_per_example(a: jax.Array) -> jax.Array:
    """[B, ...] -> [B]: sum over every axis but the first."""
    return a.reshape(a.shape[0], -1).sum(axis=1)


def batch_mean(per_example: jax.Array) -> jax.Array:
    """The batch reduction: [B] -> scalar mean. Per-example values are sums."""
    return jnp.mean(per_example)


def bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
    """Elementwise log Bernoulli(x | sigmoid(logits)), stable for any logits.

    log p = x log s + (1 - x) log(1 - s) = x * logits - log(1 + exp(logits)).
    Valid for x in [0, 1] (grey-level targets give the usual BCE).
    """
    return x * logits - jnp.logaddexp(0.0, logits)


def gaussian_log_prob(mean: jax.Array, x: jax.Array, log_scale: jax.Array | float) -> jax.Array:
    """Elementwise log N(x | mean, exp(log_scale)^2)."""
    log_scale = jnp.asarray(log_scale)
    return -0.5 * ((x - mean) * jnp.exp(-log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)


def squared_error(mean: jax.Array, x: jax.Array) -> jax.Array:
    """Elementwise (x - mean)^2; summed per example it is the article's ||X - X_hat||^2."""
    return (x - mean) ** 2


def diag_gaussian_log_prob(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """log N(z | mean, diag(exp(log_var))), summed over the last axis."""
    return jnp.sum(
        -0.5 * (math.log(2 * math.pi) + log_var + (z - mean) ** 2 * jnp.exp(-log_var)), axis=-1
    )


def reparameterize(key: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I): differentiable in mean, log_var."""
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * log_var) * eps


def std_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z | 0, I), summed over the last axis."""
    return jnp.sum(-0.5 * (math.log(2 * math.pi) + z**2), axis=-1)


def kl_to_std_normal(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """Per-dimension KL(N(mean, exp(log_var)) || N(0, 1)), not summed: [..., D]."""
    return 0.5 * (jnp.exp(log_var) + mean**2 - 1.0 - log_var)


def log_mean_exp(a: jax.Array, axis: int = 0) -> jax.Array:
    """log((1/K) sum_k exp(a_k)) along `axis`, computed stably."""
    return jax.nn.logsumexp(a, axis=axis) - math.log(a.shape[axis])


class Likelihood(NamedTuple):
    """p(x | z) given decoder logits. `nll` returns the per-example negative
    log-likelihood (or loss) summed over pixels: [B, ...] -> [B]."""

    name: str
    nll: Callable[[jax.Array, jax.Array], jax.Array]
    mean: Callable[[jax.Array], jax.Array]


def _bernoulli_nll(logits, x):
    return -sum_per_example(bernoulli_log_prob(logits, x))


def _mse(logits, x):
    return sum_per_example(squared_error(jax.nn.sigmoid(logits), x))


GAUSSIAN_LOG_SCALE = math.log(0.1)  # fixed pixel noise sigma = 0.1 of the 'gaussian' likelihood


def _gaussian_nll(logits, x):
    return -sum_per_example(gaussian_log_prob(jax.nn.sigmoid(logits), x, GAUSSIAN_LOG_SCALE))


LIKELIHOODS: dict[str, Likelihood] = {
    "bernoulli": Likelihood("bernoulli", _bernoulli_nll, jax.nn.sigmoid),
    # The article's AE loss. As a density it is a Gaussian with variance 1/2, up to a constant.
    "mse": Likelihood("mse", _mse, jax.nn.sigmoid),
    # A proper density (sigma = 0.1) for VAEs on grey levels.
    "gaussian": Likelihood("gaussian", _gaussian_nll, jax.nn.sigmoid),
}


def get_likelihood(name: str) -> Likelihood:
    try:
        return LIKELIHOODS[name]
    except KeyError:
        raise UserError(
            f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}"
        ) from None
