"""Latent samplers, kept apart from models so that any sampler works with any
autoencoder: a sampler draws codes z [n, L]; the model's decoder turns them into images.

- `standard_normal`: z ~ N(0, I), the VAE's prior; through an AE's decoder it is the
  article's "limited generative ability" case.
- `expost_gaussian`: a full-covariance Gaussian fitted to training codes after
  training (ex-post density estimation, Ghosh et al. 2020), a cheap fix for AEs.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from aevae_jax.models import Model

Sampler = Callable[[jax.Array, int], jax.Array]  # (key, n) -> codes [n, L]


def standard_normal(latent_dim: int) -> Sampler:
    return lambda key, n: jax.random.normal(key, (n, latent_dim))


def expost_gaussian(codes: jax.Array, ridge: float = 1e-6) -> Sampler:
    """N(mean, cov) of codes [N, L], sampled through its Cholesky factor; a small ridge
    keeps the covariance positive definite."""
    mean = jnp.mean(codes, axis=0)
    cov = jnp.cov(codes, rowvar=False) + ridge * jnp.eye(codes.shape[1])
    chol = jnp.linalg.cholesky(cov)
    return lambda key, n: mean + jax.random.normal(key, (n, mean.shape[0])) @ chol.T


def decode_samples(model: Model, params, sampler: Sampler, key: jax.Array, n: int, y=None):
    """Images [n, H, W, C] in [0, 1]: the likelihood's mean at sampled codes (reshaped
    to the model's code shape; labels y [n] for conditional decoders)."""
    codes = sampler(key, n).reshape(n, *model.code_shape)
    return model.likelihood.mean(model.decode(params, codes, y))


def prior_images(model: Model, params, key: jax.Array, n: int, y=None) -> jax.Array:
    """The model's own `sample` where it has one, else draws of its prior (N(0, I) for
    models without one) through its decoder. Conditional models take labels y [n] (None:
    the model draws them)."""
    if model.sample is not None:
        return model.sample(params, key, n, y)
    if model.prior is not None:
        z = model.prior.sample(params, key, n, y)
        return model.likelihood.mean(model.decode(params, z[0] if isinstance(z, tuple) else z, y))
    return decode_samples(model, params, standard_normal(model.latent_dim), key, n, y)
