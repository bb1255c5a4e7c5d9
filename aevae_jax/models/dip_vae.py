"""DIP-VAE I and II (Kumar et al. 2018): the VAE's ELBO plus a penalty that moves the
covariance of the aggregate posterior towards the identity (disentangled inferred priors):

    loss = -ELBO + lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2,

with C the batch covariance of the posterior means, Cov[E(z|x)] (DIP-VAE-I), or of q(z)
itself, Cov[E(z|x)] + E[diag Var(z|x)] (DIP-VAE-II). The paper's settings: lambda_d =
10 lambda_od for I, lambda_d = lambda_od for II.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Model
from aevae_jax.models.vae import gaussian_latent, neg_elbo_loss
from aevae_jax.nn.likelihoods import batch_mean


def _options(d_default: float):
    @dataclasses.dataclass(frozen=True)
    class DIPVAEOptions:
        lambda_od: float = dataclasses.field(
            default=10.0, metadata={"help": "weight of the off-diagonal covariance penalty"}
        )
        lambda_d: float = dataclasses.field(
            default=d_default, metadata={"help": "weight of the diagonal (variance - 1) penalty"}
        )

        def __post_init__(self):
            require(self.lambda_od >= 0, "--lambda-od must be >= 0")
            require(self.lambda_d >= 0, "--lambda-d must be >= 0")

    return DIPVAEOptions


DIPVAEIOptions, DIPVAEIIOptions = _options(100.0), _options(10.0)


def code_covariance(mean: jax.Array, log_var: jax.Array, variant: str) -> jax.Array:
    """[L, L] the batch covariance of the means, plus the mean posterior variance on the
    diagonal for variant "ii"."""
    centred = mean - jnp.mean(mean, axis=0)
    cov = centred.T @ centred / mean.shape[0]
    return cov + jnp.diag(jnp.mean(jnp.exp(log_var), axis=0)) if variant == "ii" else cov


def dip_penalty(cov: jax.Array, lambda_od: float, lambda_d: float) -> jax.Array:
    diag = jnp.diagonal(cov)
    off = cov - jnp.diag(diag)
    return lambda_od * jnp.sum(off**2) + lambda_d * jnp.sum((diag - 1.0) ** 2)


CLAIMS = (
    Claim(
        "test_total_correlation",
        "lower",
        "vae",
        "matching the aggregate posterior's covariance to the identity makes q(z) more "
        "factorised than the VAE's (Kumar et al. 2018)",
    ),
)


def make_dip_vae(name: str, variant: str):
    def make(cfg, spec, opts) -> Model:
        parts = gaussian_latent(cfg, spec)

        def loss(params, batch, key, step):
            del step
            recon, kl = parts.elbo_terms(params, batch, key)
            q = parts.encode(params, batch)
            penalty = dip_penalty(code_covariance(q.code, q.log_var, variant),
                                  opts.lambda_od, opts.lambda_d)  # fmt: skip
            value = batch_mean(recon + kl) + penalty
            return value, {"recon": batch_mean(recon), "kl": batch_mean(kl), "dip": penalty}

        return dataclasses.replace(parts.model(name, loss), test_loss=neg_elbo_loss(parts))

    return make


for _name, _variant, _opts, _what in (
    ("dip_vae_i", "i", DIPVAEIOptions, "the posterior means"),
    ("dip_vae_ii", "ii", DIPVAEIIOptions, "q(z)"),
):
    register(_name, _opts, needs_density=True, claims=CLAIMS,
             summary=f"DIP-VAE-{_variant.upper()}: the ELBO plus a penalty moving the "
             f"covariance of {_what} towards I.")(make_dip_vae(_name, _variant))  # fmt: skip
