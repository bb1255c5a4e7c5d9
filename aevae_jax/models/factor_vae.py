"""FactorVAE (Kim & Mnih 2018): the VAE plus gamma times the total correlation of q(z),
estimated by a discriminator that tells codes z ~ q(z) from codes whose dimensions were
shuffled independently across the batch (draws of the product of the marginals):

    TC(q(z)) = KL(q(z) || prod_j q(z_j)) ~ E_q[log D(z) / (1 - D(z))] = E_q[logit D(z)].

One compiled step trains both players from one scalar, as aae.py does, with
`stop_gradient` deciding which loss reaches which parameters:
- VAE (encoder, decoder): -ELBO + gamma * logit D(z), the discriminator held fixed;
- discriminator: -log D(z) - log(1 - D(permuted z)), the codes held fixed.
Each player has its own optimiser (`optim.param_groups`; the discriminator's is the
paper's Adam(disc_lr, b1=0.5, b2=0.9)). The paper draws the permuted codes from a second
batch; here they come from the same batch, shuffled with the step's key (a common
simplification that halves the encoder's work). The -ELBO (gamma = 0) is what
evaluation and the best checkpoint use.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.aae import discriminator_losses, mlp_critic
from aevae_jax.models.base import Claim, Model
from aevae_jax.models.vae import gaussian_latent, neg_elbo_loss
from aevae_jax.nn.likelihoods import batch_mean, kl_to_std_normal, reparameterize
from aevae_jax.nn.optim import make_optimizer, param_groups


@dataclasses.dataclass(frozen=True)
class FactorVAEOptions:
    gamma: float = dataclasses.field(
        default=10.0, metadata={"help": "gamma, the weight of the total-correlation estimate"}
    )
    disc_lr: float = dataclasses.field(
        default=1e-4, metadata={"help": "the discriminator's Adam learning rate"}
    )
    disc_hidden: int = dataclasses.field(
        default=256, metadata={"help": "width of the discriminator's two hidden layers"}
    )

    def __post_init__(self):
        require(self.gamma >= 0, f"--gamma must be >= 0, got {self.gamma}")
        require(self.disc_lr > 0, f"--disc-lr must be positive, got {self.disc_lr}")
        require(self.disc_hidden > 0, "--disc-hidden must be a positive integer")


GROUPS = {"encoder": "vae", "decoder": "vae", "discriminator": "discriminator"}


def permute_dims(key: jax.Array, z: jax.Array) -> jax.Array:
    """z [B, L] with each column shuffled by its own permutation of the batch: draws of
    prod_j q(z_j) when the rows are draws of q(z)."""
    keys = jax.random.split(key, z.shape[1])
    return jax.vmap(lambda k, col: jax.random.permutation(k, col), (0, 1), 1)(keys, z)


CLAIMS = (
    Claim(
        "test_total_correlation",
        "lower",
        "vae",
        "the discriminator's total-correlation penalty makes q(z) more factorised than the "
        "VAE's (Kim & Mnih 2018)",
        applies=lambda o: o.get("gamma", 10.0) > 0,
    ),
    Claim(
        "factorvae_score",
        "higher",
        "beta_vae",
        "penalising the total correlation disentangles better than beta-VAE's whole-KL "
        "penalty (Kim & Mnih 2018; data with known factors only)",
    ),
)


@register("factor_vae", options=FactorVAEOptions, needs_density=True, claims=CLAIMS)
def make_factor_vae(cfg, spec, opts: FactorVAEOptions) -> Model:
    """FactorVAE: a discriminator on permuted codes estimates the total correlation."""
    parts = gaussian_latent(cfg, spec)
    critic_init, critic = mlp_critic(opts.disc_hidden, cfg)  # logit D: z from q(z)

    def init(key, batch):
        k_net, k_disc = jax.random.split(key)
        return {**parts.init(k_net, batch), "discriminator": critic_init(k_disc, cfg.latent_dim)}

    def loss(params, batch, key, step):
        del step
        k_z, k_perm = jax.random.split(key)
        q = parts.encode(params, batch)
        z = reparameterize(k_z, q.code, q.log_var)
        recon = parts.likelihood.nll(parts.decode(params, z, batch.y), batch.x)
        kl = jnp.sum(kl_to_std_normal(q.code, q.log_var), axis=-1)
        tc = critic(jax.lax.stop_gradient(params["discriminator"]), z)  # [B] logit D(z)
        fixed = jax.lax.stop_gradient(z)
        d_joint = critic(params["discriminator"], fixed)
        d_product = critic(params["discriminator"], permute_dims(k_perm, fixed))
        disc_loss = discriminator_losses(d_joint, d_product)
        value = batch_mean(recon + kl + opts.gamma * tc + disc_loss)
        accuracy = 0.5 * (jnp.mean(d_joint > 0) + jnp.mean(d_product < 0))
        return value, {
            "recon": batch_mean(recon),
            "kl": batch_mean(kl),
            "tc_estimate": batch_mean(tc),
            "discriminator": batch_mean(disc_loss),
            "disc_accuracy": accuracy,
        }

    def optimizer(optim_cfg, total_steps):
        return param_groups(
            {
                "vae": make_optimizer(optim_cfg, total_steps),
                "discriminator": optax.adam(opts.disc_lr, b1=0.5, b2=0.9),
            },
            GROUPS,
        )

    model = parts.model("factor_vae", loss)
    return dataclasses.replace(
        model, init=init, optimizer=optimizer, test_loss=neg_elbo_loss(parts)
    )
