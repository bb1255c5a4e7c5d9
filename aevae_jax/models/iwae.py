"""The importance-weighted autoencoder (Burda et al. 2016): the VAE's networks trained
on the k-sample bound log (1/k) sum_j p(x, z_j) / q(z_j|x), z_j ~ q(z|x), which is
tighter than the ELBO for k > 1 and equals the single-sample (Monte-Carlo) ELBO at
k = 1.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Model
from aevae_jax.models.vae import gaussian_latent
from aevae_jax.nn.likelihoods import batch_mean, log_mean_exp


@dataclasses.dataclass(frozen=True)
class IWAEOptions:
    k: int = dataclasses.field(
        default=5, metadata={"help": "importance samples in the training bound"}
    )

    def __post_init__(self):
        require(self.k >= 1, f"--k must be a positive integer, got {self.k}")


CLAIMS = (
    Claim(
        "test_nll_iwae",
        "lower",
        "vae",
        "training on the k-sample bound gives a test NLL at or below the VAE's "
        "(Burda et al. 2016, Table 1)",
    ),
)


@register("iwae", options=IWAEOptions, needs_density=True, claims=CLAIMS)
def make_iwae(cfg, spec, opts: IWAEOptions) -> Model:
    """IWAE: the VAE trained on the k-sample importance-weighted bound."""
    parts = gaussian_latent(cfg, spec)

    def loss(params, batch, key, step):
        del step
        log_w = parts.log_importance_weights(params, batch, key, opts.k)  # [k, B]
        bound = log_mean_exp(log_w, axis=0)
        spread = jnp.mean(jnp.std(log_w, axis=0))  # how unequal the importance weights are
        return -batch_mean(bound), {"iwae_bound": batch_mean(bound), "log_w_std": spread}

    return parts.model("iwae", loss)
