"""Multi-sample objectives beyond the IWAE (Rainforth et al. 2018, "Tighter variational
bounds are not necessarily better"): the VAE's networks trained on a mix of the ELBO
and the importance-weighted bound, because a tighter bound trains a better decoder and
a worse encoder.

With log-weights log w = log p(x, z) - log q(z|x), z ~ q(z|x), per example:
- MIWAE(M, K): the mean over M groups of the K-sample IWAE bound of each group;
- CIWAE(beta, K): beta ELBO_K + (1 - beta) IWAE_K on the same K draws, where ELBO_K is
  the mean of the K log-weights;
- PIWAE(M, K): the decoder ascends the IWAE bound of all M K draws, the encoder the
  MIWAE(M, K) bound of the same draws (the parameters each bound may move are chosen
  with stop_gradient, so one loss value carries both gradients).

Each is the VAE at its corner (M = K = 1; beta = 1). Evaluation is the VAE's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Model
from aevae_jax.models.vae import gaussian_latent
from aevae_jax.nn.likelihoods import batch_mean, log_mean_exp


@dataclasses.dataclass(frozen=True)
class GroupedOptions:
    m: int = dataclasses.field(default=2, metadata={"help": "groups of importance samples"})
    k: int = dataclasses.field(default=3, metadata={"help": "importance samples per group"})

    def __post_init__(self):
        require(self.m >= 1, f"--m must be a positive integer, got {self.m}")
        require(self.k >= 1, f"--k must be a positive integer, got {self.k}")


@dataclasses.dataclass(frozen=True)
class CIWAEOptions:
    k: int = dataclasses.field(default=5, metadata={"help": "importance samples in the bound"})
    ciwae_beta: float = dataclasses.field(
        default=0.5, metadata={"help": "weight of the ELBO (1 - it: of the IWAE bound)"}
    )

    def __post_init__(self):
        require(self.k >= 1, f"--k must be a positive integer, got {self.k}")
        require(
            0.0 <= self.ciwae_beta <= 1.0,
            f"--ciwae-beta must lie in [0, 1] (1: the ELBO, 0: IWAE), got {self.ciwae_beta}",
        )


def miwae_bound(log_w: jax.Array, m: int) -> jax.Array:
    """[B]: the mean over m groups of the IWAE bound of each, from log-weights [m k, B]."""
    return jnp.mean(log_mean_exp(log_w.reshape(m, -1, log_w.shape[-1]), axis=1), axis=0)


def ciwae_bound(log_w: jax.Array, beta: float) -> jax.Array:
    """[B]: beta ELBO_K + (1 - beta) IWAE_K from log-weights [K, B]."""
    return beta * jnp.mean(log_w, axis=0) + (1.0 - beta) * log_mean_exp(log_w, axis=0)


def with_frozen(params, part: str):
    """`params` with `part` ("encoder" or "decoder") behind stop_gradient."""
    return {**params, part: jax.lax.stop_gradient(params[part])}


_INFERENCE_CLAIM = (
    "a bound looser than IWAE's trains a better inference network: a smaller gap between "
    "the ELBO and the NLL than IWAE's (Rainforth et al. 2018)"
)
_GENERATIVE_CLAIM = (
    "the decoder keeps the multi-sample gain: a test NLL at or below the VAE's "
    "(Rainforth et al. 2018)"
)


def _claims(generative: bool) -> tuple[Claim, ...]:
    inference = Claim("test_inference_gap", "lower", "iwae", _INFERENCE_CLAIM)
    if not generative:
        return (inference,)
    return (inference, Claim("test_nll_iwae", "lower", "vae", _GENERATIVE_CLAIM))


def _model(cfg, spec, name: str, bound) -> Model:
    """The VAE's networks trained on the negative batch mean of `bound(parts, params,
    batch, key)` [B]."""
    parts = gaussian_latent(cfg, spec)

    def loss(params, batch, key, step):
        del step
        value = bound(parts, params, batch, key)
        return -batch_mean(value), {f"{name}_bound": batch_mean(value)}

    return parts.model(name, loss)


@register("miwae", options=GroupedOptions, needs_density=True, claims=_claims(True))
def make_miwae(cfg, spec, opts: GroupedOptions) -> Model:
    """MIWAE: the mean of M K-sample IWAE bounds (Rainforth et al. 2018)."""

    def bound(parts, params, batch, key):
        log_w = parts.log_importance_weights(params, batch, key, opts.m * opts.k)
        return miwae_bound(log_w, opts.m)

    return _model(cfg, spec, "miwae", bound)


@register("ciwae", options=CIWAEOptions, needs_density=True, claims=_claims(False))
def make_ciwae(cfg, spec, opts: CIWAEOptions) -> Model:
    """CIWAE: a convex mix of the ELBO and the IWAE bound (Rainforth et al. 2018)."""

    def bound(parts, params, batch, key):
        log_w = parts.log_importance_weights(params, batch, key, opts.k)
        return ciwae_bound(log_w, opts.ciwae_beta)

    return _model(cfg, spec, "ciwae", bound)


@register("piwae", options=GroupedOptions, needs_density=True, claims=_claims(True))
def make_piwae(cfg, spec, opts: GroupedOptions) -> Model:
    """PIWAE: the decoder on the IWAE bound, the encoder on MIWAE (Rainforth et al. 2018)."""
    n = opts.m * opts.k

    def bound(parts, params, batch, key):
        # The same draws for both (the same key); each bound's gradient reaches only its
        # own network, and both values are the same numbers as without stop_gradient.
        generative = log_mean_exp(
            parts.log_importance_weights(with_frozen(params, "encoder"), batch, key, n), axis=0
        )
        log_w = parts.log_importance_weights(with_frozen(params, "decoder"), batch, key, n)
        inference = miwae_bound(log_w, opts.m)
        # The value reported is the IWAE bound; the inference term adds its gradient alone.
        return generative + inference - jax.lax.stop_gradient(inference)

    return _model(cfg, spec, "piwae", bound)
