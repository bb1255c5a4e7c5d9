"""The VAE with a VampPrior (Tomczak & Welling 2018): the prior is the mixture of the
model's own posteriors at K learned pseudo-inputs u_k,

    p(z) = (1/K) sum_k q(z | u_k),

so the prior moves towards the aggregate posterior while training. The encoder, decoder
and likelihood are the VAE's; the pseudo-inputs are parameters (images in (0, 1) through
a sigmoid), initialised as noisy copies of the first training image. The KL term has no
closed form: training and the evaluator's rate use the Monte Carlo estimate
log q(z|x) - log p(z) at a reparameterised z ~ q(z|x).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Batch, Claim, Model, Prior
from aevae_jax.models.vae import GaussianLatent, gaussian_latent
from aevae_jax.nn.likelihoods import batch_mean, diag_gaussian_log_prob, reparameterize


@dataclasses.dataclass(frozen=True)
class VampOptions:
    pseudo_inputs: int = dataclasses.field(
        default=500, metadata={"help": "K, the learned pseudo-inputs of the mixture prior"}
    )
    pseudo_init_noise: float = dataclasses.field(
        default=0.5, metadata={"help": "std of the logit noise around the first image at init"}
    )

    def __post_init__(self):
        require(self.pseudo_inputs >= 1, "--pseudo-inputs must be a positive integer")
        require(self.pseudo_init_noise >= 0, "--pseudo-init-noise must be >= 0")


CLAIMS = (
    Claim(
        "test_nll_iwae",
        "lower",
        "vae",
        "a VampPrior gives a lower test NLL than the standard normal prior with the same "
        "networks (Tomczak & Welling 2018, Table 2)",
    ),
)


def components(parts: GaussianLatent, params) -> tuple[jax.Array, jax.Array]:
    """The mixture's components: q(z | u_k) for every pseudo-input, means and log-variances
    [K, L]."""
    u = jax.nn.sigmoid(params["pseudo_inputs"])
    enc = parts.encode(params, Batch(u))
    return enc.code, enc.log_var


def mixture_log_prob(mean: jax.Array, log_var: jax.Array, z: jax.Array) -> jax.Array:
    """log (1/K) sum_k N(z; mean_k, diag(exp(log_var_k))) for z [B, L], components [K, L]:
    [B]."""
    per_component = diag_gaussian_log_prob(z[:, None, :], mean[None], log_var[None])  # [B, K]
    return jax.nn.logsumexp(per_component, axis=1) - math.log(mean.shape[0])


def vamp_prior(parts: GaussianLatent) -> Prior:
    def log_prob(params, z):
        return mixture_log_prob(*components(parts, params), z)

    def sample(params, key, n, y=None):
        del y
        mean, log_var = components(parts, params)
        k_pick, k_z = jax.random.split(key)
        pick = jax.random.randint(k_pick, (n,), 0, mean.shape[0])
        return reparameterize(k_z, mean[pick], log_var[pick])

    def moments(params):
        """The mixture's mean and covariance: E_k[mu_k] and
        E_k[diag(var_k) + mu_k mu_k^T] - mean mean^T."""
        mean, log_var = components(parts, params)
        mu = jnp.mean(mean, axis=0)
        outer = mean[:, :, None] * mean[:, None, :]  # [K, L, L]
        second = jnp.mean(jax.vmap(jnp.diag)(jnp.exp(log_var)) + outer, axis=0)
        return mu, second - jnp.outer(mu, mu)

    return Prior(log_prob, sample, moments=moments)


@register("vamp_vae", options=VampOptions, needs_density=True, claims=CLAIMS)
def make_vamp_vae(cfg, spec, opts: VampOptions) -> Model:
    """VampPrior VAE: the prior is a mixture of posteriors at K learned pseudo-inputs."""
    base = gaussian_latent(cfg, spec)
    parts = dataclasses.replace(
        base, log_prior=lambda params, z: mixture_log_prob(*components(base, params), z)
    )
    prior = vamp_prior(parts)

    def init(key, batch):
        k_net, k_u = jax.random.split(key)
        params = parts.init(k_net, batch)
        first = jnp.clip(batch.x[:1], 0.0, 1.0)  # init receives images in [0, 1]
        logits = jnp.log(0.8 * first + 0.1) - jnp.log(0.9 - 0.8 * first)  # logit(0.8x+0.1)
        noise = jax.random.normal(k_u, (opts.pseudo_inputs, *spec.image_shape))
        return {**params, "pseudo_inputs": logits + opts.pseudo_init_noise * noise}

    def loss(params, batch, key, step):
        del step
        q = parts.encode(params, batch)
        z = reparameterize(key, q.code, q.log_var)
        recon = parts.likelihood.nll(parts.decode(params, z, batch.y), batch.x)
        kl = diag_gaussian_log_prob(z, q.code, q.log_var) - prior.log_prob(params, z)
        return batch_mean(recon + kl), {"recon": batch_mean(recon), "kl": batch_mean(kl)}

    def sample(params, key, n, y=None):
        return parts.likelihood.mean(parts.decode(params, prior.sample(params, key, n), None))

    return dataclasses.replace(parts.model("vamp_vae", loss), init=init, sample=sample, prior=prior)
