"""Log-densities, divergences and the one loss reduction used everywhere.

Conventions (stated once, tested in tests/test_likelihoods.py):
- Decoders output unconstrained `logits` with `channels` values per image channel
  ([B, H, W, C * channels]): one for Bernoulli, MSE and the fixed-noise Gaussian (the
  image mean is `sigmoid(logits)`, so AE and VAE share one decoder), two for the
  discretised logistic (location and log-scale per sub-pixel).
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
    """Per-dimension KL(N(mean, exp(log_var)) || N(0, 1)), not summed: [..., D].

    0.5 (exp(v) - 1 - v + mean^2) with exp(v) - 1 as expm1(v): near the prior the float32
    form exp(v) - 1 - v cancels to rounding noise (negative for |v| < ~3e-4), while
    expm1(v) >= v holds after rounding, so the KL is >= 0 and accurate there too."""
    return 0.5 * (jnp.expm1(log_var) - log_var + mean**2)


def kl_diag_gaussians(mean_q, log_var_q, mean_p, log_var_p) -> jax.Array:
    """Per-dimension KL(N(mean_q, exp(log_var_q)) || N(mean_p, exp(log_var_p))): [..., D];
    with mean_p = log_var_p = 0 it is `kl_to_std_normal`."""
    d = log_var_q - log_var_p
    return 0.5 * (jnp.expm1(d) - d + (mean_q - mean_p) ** 2 * jnp.exp(-log_var_p))


def log_mean_exp(a: jax.Array, axis: int = 0) -> jax.Array:
    """log((1/K) sum_k exp(a_k)) along `axis`, computed stably."""
    return jax.nn.logsumexp(a, axis=axis) - math.log(a.shape[axis])


def discretized_logistic_log_prob(
    mean: jax.Array, log_scale: jax.Array, x: jax.Array, bins: int = 256
) -> jax.Array:
    """Elementwise log P(x) of the discretised logistic (Salimans et al. 2017) for 8-bit
    images: x in {0, 1/255, ..., 1}, rescaled to [-1, 1] where each of the `bins` values
    owns a bin of width 2 / (bins - 1); the logistic(mean, exp(log_scale)) mass of that
    bin, the two edge bins taking the tails. Sums to one over the `bins` values.

    log(sigmoid(a) - sigmoid(b)) is computed as log sigmoid(a) + log sigmoid(-b) +
    log(1 - exp(b - a)), exact and stable without a density fallback.
    """
    half = 1.0 / (bins - 1)
    xs = 2.0 * x - 1.0
    inv_s = jnp.exp(-log_scale)
    upper = inv_s * (xs - mean + half)  # standardised upper bin edge
    lower = inv_s * (xs - mean - half)
    width = inv_s * 2.0 * half  # upper - lower > 0
    interior = jax.nn.log_sigmoid(upper) + jax.nn.log_sigmoid(-lower) + jnp.log(-jnp.expm1(-width))
    return jnp.where(
        xs < -1.0 + half,
        jax.nn.log_sigmoid(upper),  # the lowest value takes the whole lower tail
        jnp.where(xs > 1.0 - half, jax.nn.log_sigmoid(-lower), interior),
    )


class Likelihood(NamedTuple):
    """p(x | z) given decoder outputs `logits` [B, H, W, C * channels].

    nll_pixels: elementwise negative log-likelihood (or loss) [B, H, W, C];
    nll: its per-example sum over pixels [B];
    mean: the point reconstruction [B, H, W, C] in [0, 1];
    channels: decoder outputs per image channel;
    data: what the density is normalised over: "binary" ({0, 1} pixels), "8bit"
      (256 grey levels) or None (not a probability mass function: MSE, Gaussian),
      which decides where bits per dimension are reported.
    """

    name: str
    nll_pixels: Callable[[jax.Array, jax.Array], jax.Array]
    mean: Callable[[jax.Array], jax.Array]
    channels: int = 1
    data: str | None = None

    def nll(self, logits: jax.Array, x: jax.Array) -> jax.Array:
        return sum_per_example(self.nll_pixels(logits, x))


GAUSSIAN_LOG_SCALE = math.log(0.1)  # fixed pixel noise sigma = 0.1 of the 'gaussian' likelihood
# The logistic's log-scale is clipped to [-7, 7]: the floor as in PixelCNN++; above the
# ceiling the bins are flat to float32 precision (and far above it the bin width
# underflows to zero, which would make every gradient NaN).
LOGISTIC_LOG_SCALE_RANGE = (-7.0, 7.0)


def _logistic_parts(logits):
    """Decoder outputs [..., 2C] -> (location in [-1, 1] units, clipped log-scale)."""
    mean, log_scale = jnp.split(logits, 2, axis=-1)
    return mean, jnp.clip(log_scale, *LOGISTIC_LOG_SCALE_RANGE)


def _logistic_nll(logits, x):
    mean, log_scale = _logistic_parts(logits)
    return -discretized_logistic_log_prob(mean, log_scale, x)


def _logistic_median(logits):
    """The distribution's median pixel value, (clip(location, -1, 1) + 1) / 2."""
    return (jnp.clip(_logistic_parts(logits)[0], -1.0, 1.0) + 1.0) / 2.0


LIKELIHOODS: dict[str, Likelihood] = {
    "bernoulli": Likelihood(
        "bernoulli", lambda logits, x: -bernoulli_log_prob(logits, x), jax.nn.sigmoid, 1, "binary"
    ),
    # The article's AE loss. As a density it is a Gaussian with variance 1/2, up to a constant.
    "mse": Likelihood(
        "mse", lambda logits, x: squared_error(jax.nn.sigmoid(logits), x), jax.nn.sigmoid
    ),
    # A proper density (sigma = 0.1) for VAEs on grey levels.
    "gaussian": Likelihood(
        "gaussian",
        lambda logits, x: -gaussian_log_prob(jax.nn.sigmoid(logits), x, GAUSSIAN_LOG_SCALE),
        jax.nn.sigmoid,
    ),
    # For 8-bit (colour) images: needs --binarize none.
    "logistic": Likelihood("logistic", _logistic_nll, _logistic_median, 2, "8bit"),
}


def bits_per_dim(nll_nats, dims: int):
    """A negative log-likelihood in nats per example -> bits per dimension."""
    return nll_nats / (dims * math.log(2.0))


def get_likelihood(name: str) -> Likelihood:
    try:
        return LIKELIHOODS[name]
    except KeyError:
        raise UserError(
            f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}"
        ) from None
