"""The two-stage VAE (Dai & Wipf 2019): a VAE, then a second, small VAE trained on the
first one's codes, whose prior draws, decoded twice, are the model's samples.

Dai & Wipf argue that a VAE's aggregate posterior q(z) does not match its prior N(0, I)
(the "holes" that prior samples fall into), and that a second VAE on z ~ q(z|x) learns
q(z) well because its data are low-dimensional. Stage one is the VAE of vae.py, trained
for the run's epochs; stage two ("second", `--second-epochs` more epochs, its own Adam,
the first stage frozen) fits

    q(u|z) = N(mu(z), diag sigma^2(z)),  p(u) = N(0, I),  p(z|u) = N(m(u), gamma I),

with gamma a learned scalar, as in the paper, on z ~ q(z|x) drawn with the step's key:
loss = E_q[-log p(z|u)] + KL(q(u|z) || N(0, I)), per-code sums, batch mean. Samples:
u ~ N(0, I), z = m(u), images = the first decoder's mean at z.

The likelihood numbers (the -ELBO, the IWAE NLL, the rate) are the first stage's, under
its prior N(0, I); the second stage changes only where samples come from, which the
evaluator's prior-sample FD measures.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Model, Stage
from aevae_jax.models.vae import gaussian_latent, neg_elbo_loss
from aevae_jax.nn.backbones import MLPEncoder
from aevae_jax.nn.likelihoods import batch_mean, kl_to_std_normal, reparameterize
from aevae_jax.nn.optim import frozen, make_optimizer, param_groups


@dataclasses.dataclass(frozen=True)
class TwoStageOptions:
    second_epochs: int = dataclasses.field(
        default=10, metadata={"help": "epochs of the second VAE, after the first"}
    )
    second_hidden: int = dataclasses.field(
        default=256, metadata={"help": "width of the second VAE's two hidden layers"}
    )
    second_lr: float = dataclasses.field(
        default=1e-3, metadata={"help": "the second VAE's Adam learning rate"}
    )

    def __post_init__(self):
        require(self.second_epochs >= 1, "--second-epochs must be a positive integer")
        require(self.second_hidden > 0, "--second-hidden must be a positive integer")
        require(self.second_lr > 0, f"--second-lr must be positive, got {self.second_lr}")


def gaussian_nll(z: jax.Array, mean: jax.Array, log_gamma: jax.Array) -> jax.Array:
    """[B] -log N(z; mean, gamma I), summed over the code's dimensions."""
    d = z.shape[-1]
    sq = jnp.sum((z - mean) ** 2, axis=-1)
    return 0.5 * (sq * jnp.exp(-log_gamma) + d * log_gamma + d * math.log(2 * math.pi))


CLAIMS = (
    Claim(
        "prior_sample_fd",
        "lower",
        "vae",
        "sampling through a second VAE fitted to the codes gives better samples than the "
        "VAE's N(0, I) prior (Dai & Wipf 2019)",
    ),
)


@register("two_stage_vae", options=TwoStageOptions, needs_density=True, claims=CLAIMS)
def make_two_stage_vae(cfg, spec, opts: TwoStageOptions) -> Model:
    """Two-stage VAE: a VAE, then a second VAE on its codes for sampling."""
    parts = gaussian_latent(cfg, spec)
    dim, h = cfg.latent_dim, opts.second_hidden
    enc2 = MLPEncoder((h, h), 2 * dim, cfg.activation, cfg.init)
    dec2 = MLPEncoder((h, h), dim, cfg.activation, cfg.init)

    def init(key, batch):
        k_net, k_enc, k_dec = jax.random.split(key, 3)
        z = jnp.zeros((batch.x.shape[0], dim))
        second = {
            "encoder": enc2.init(k_enc, z)["params"],
            "decoder": dec2.init(k_dec, z)["params"],
            "log_gamma": jnp.zeros(()),
        }
        return {**parts.init(k_net, batch), "second": second}

    def second_terms(second, z, key):
        """(-log p(z|u) [B], KL(q(u|z) || N(0, I)) [B]) with u ~ q(u|z) from `key`."""
        mean, log_var = jnp.split(enc2.apply({"params": second["encoder"]}, z), 2, axis=-1)
        u = reparameterize(key, mean, log_var)
        m = dec2.apply({"params": second["decoder"]}, u)
        kl = jnp.sum(kl_to_std_normal(mean, log_var), axis=-1)
        return gaussian_nll(z, m, second["log_gamma"]), kl

    def second_loss(params, batch, key, step):
        del step
        k_z, k_u = jax.random.split(key)
        q = parts.encode(jax.lax.stop_gradient(params), batch)
        z = reparameterize(k_z, q.code, q.log_var)
        recon, kl = second_terms(params["second"], z, k_u)
        return batch_mean(recon + kl), {
            "second_recon": batch_mean(recon),
            "second_kl": batch_mean(kl),
            "gamma": jnp.exp(params["second"]["log_gamma"]),
        }

    def sample(params, key, n, y=None):
        u = jax.random.normal(key, (n, dim))
        z = dec2.apply({"params": params["second"]["decoder"]}, u)
        return parts.likelihood.mean(parts.decode(params, z))

    groups = {"encoder": "first", "decoder": "first", "second": "second"}

    def main_optimizer(optim_cfg, total_steps):
        return param_groups({"first": make_optimizer(optim_cfg, total_steps),
                             "second": frozen()}, groups)  # fmt: skip

    def second_optimizer(optim_cfg, total_steps):
        del optim_cfg, total_steps
        return param_groups({"first": frozen(), "second": optax.adam(opts.second_lr)}, groups)

    model = parts.model("two_stage_vae", neg_elbo_loss(parts))
    return dataclasses.replace(
        model,
        init=init,
        sample=sample,
        optimizer=main_optimizer,
        stages=(Stage("second", second_loss, second_optimizer, opts.second_epochs),),
    )
