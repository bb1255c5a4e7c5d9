"""Latent samplers, kept apart from models so that any sampler works with any
autoencoder: a sampler draws codes z [n, L]; the model's decoder turns them into images.

- "prior": the model's own prior (`prior_images`: its `sample`, or draws of
  `Model.prior`), z ~ N(0, I) for a model without one; through an AE's decoder that is
  the article's "limited generative ability" case.
- "normal": z ~ N(0, I) for any model (`standard_normal`).
- the ex-post samplers, fitted to the training codes after training (ex-post density
  estimation, Ghosh et al. 2020), for any model with continuous codes (`EXPOST`):
  "expost", a full-covariance Gaussian; "gmm", a Gaussian mixture fitted by EM (gmm.py);
  "flow", a RealNVP flow fitted by maximum likelihood (flow.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from aevae_jax.errors import require
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


# ------------------------------------------------------------------ ex-post samplers


@dataclasses.dataclass(frozen=True)
class SamplerOptions:
    """Which ex-post samplers an evaluation scores, and their settings. The default is
    the cheapest, the ex-post Gaussian; the main job (experiments/main_comparison.sh)
    adds the mixture and the flow."""

    names: tuple[str, ...] = ("expost",)
    gmm_components: int = 10
    flow_steps: int = 2000

    def __post_init__(self):
        unknown = [n for n in self.names if n not in EXPOST]
        require(
            not unknown,
            f"unknown ex-post sampler {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(EXPOST)}",
        )
        require(len(set(self.names)) == len(self.names), "--samplers lists a sampler twice")
        require(self.gmm_components >= 1, "--gmm-components must be a positive integer")
        require(self.flow_steps >= 1, "--flow-steps must be a positive integer")


class ExPost(NamedTuple):
    """label: how reports name it; fit(codes [N, L], key, options) -> Sampler."""

    label: str
    fit: Callable[[jax.Array, jax.Array, SamplerOptions], Sampler]


def _gaussian(codes, key, opts):
    del key, opts
    return expost_gaussian(codes)


def _gmm(codes, key, opts):
    from aevae_jax.evaluate.gmm import fit_gmm, sample_gmm

    g, _ = fit_gmm(codes, key, opts.gmm_components)
    return lambda k, n: sample_gmm(g, k, n)


def _flow(codes, key, opts):
    from aevae_jax.evaluate.flow import fit_flow, sample_flow

    f, _ = fit_flow(codes, key, steps=opts.flow_steps)
    return lambda k, n: sample_flow(f, k, n)


EXPOST: dict[str, ExPost] = {
    "expost": ExPost("ex-post Gaussian", _gaussian),
    "gmm": ExPost("ex-post Gaussian mixture (EM)", _gmm),
    "flow": ExPost("ex-post RealNVP flow", _flow),
}
SAMPLER_NAMES = ("prior", "normal", *EXPOST)


def with_claimed(opts: SamplerOptions, claims) -> SamplerOptions:
    """`opts` plus the ex-post samplers whose metrics (`<name>_sample_...`) any of
    `claims` (models.Claim) is checked on, so that a comparison can check every claim
    of its models (the RAE's is on the mixture's samples)."""
    extra = tuple(
        name
        for name in EXPOST
        if name not in opts.names and any(c.metric.startswith(f"{name}_sample_") for c in claims)
    )
    return dataclasses.replace(opts, names=opts.names + extra) if extra else opts


def fit_sampler(name: str, codes, key: jax.Array, opts: SamplerOptions | None = None) -> Sampler:
    """The ex-post sampler `name` fitted to training codes [N, L] (`key`: its fit's draws)."""
    require(name in EXPOST, f"unknown ex-post sampler {name!r}; choose from {', '.join(EXPOST)}")
    return EXPOST[name].fit(jnp.asarray(codes, jnp.float32), key, opts or SamplerOptions())
