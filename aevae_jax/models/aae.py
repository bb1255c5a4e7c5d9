"""The adversarial autoencoder (Makhzani et al. 2016): a deterministic autoencoder
whose aggregate posterior q(z) is pushed towards the prior N(0, I) by a discriminator
on the code, so that decoding prior draws gives images.

One compiled step trains both players from one scalar, with `stop_gradient` deciding
which loss reaches which parameters:
- autoencoder (encoder, decoder): reconstruction + adv_weight * the non-saturating
  generator loss -log D(f(x)), with the discriminator's parameters held fixed;
- discriminator: -log D(z_prior) - log(1 - D(f(x))), with the codes held fixed.
So the encoder moves only through the autoencoder's loss and the discriminator only
through its own; `optim.param_groups` gives each its own Optax optimiser (the
discriminator's learning rate is `disc_lr`). Both update simultaneously, as in a
GAN's simultaneous gradient step, rather than in the paper's alternating phases.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Encoding, Model, make_backbone_fns
from aevae_jax.models.priors import standard_normal
from aevae_jax.nn.backbones import MLPEncoder
from aevae_jax.nn.likelihoods import batch_mean, get_likelihood
from aevae_jax.nn.optim import make_optimizer, param_groups


@dataclasses.dataclass(frozen=True)
class AAEOptions:
    adv_weight: float = dataclasses.field(
        default=1.0, metadata={"help": "weight of the generator loss in the autoencoder's loss"}
    )
    disc_lr: float = dataclasses.field(
        default=2e-4, metadata={"help": "the discriminator's Adam learning rate"}
    )
    disc_hidden: int = dataclasses.field(
        default=256, metadata={"help": "width of the discriminator's two hidden layers"}
    )

    def __post_init__(self):
        require(self.adv_weight >= 0, f"--adv-weight must be >= 0, got {self.adv_weight}")
        require(self.disc_lr > 0, f"--disc-lr must be positive, got {self.disc_lr}")
        require(self.disc_hidden > 0, "--disc-hidden must be a positive integer")


GROUPS = {"encoder": "autoencoder", "decoder": "autoencoder", "discriminator": "discriminator"}


def discriminator_losses(d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
    """[B] -log D(real) - log(1 - D(fake)) from logits: the discriminator's cross-entropy."""
    return jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake)


def mlp_critic(width: int, cfg):
    """(init(key, dim) -> params, logits(params, z [B, dim]) -> [B]): the discriminator on
    codes that the AAE and FactorVAE use, an MLP with two hidden layers of `width`."""
    disc = MLPEncoder((width, width), 1, cfg.activation, cfg.init)

    def init(key, dim):
        return disc.init(key, jnp.zeros((1, dim)))["params"]

    def logits(params, z):
        return disc.apply({"params": params}, z)[:, 0]

    return init, logits


def generator_losses(d_fake: jax.Array) -> jax.Array:
    """[B] the non-saturating generator loss -log D(fake) from logits."""
    return jax.nn.softplus(-d_fake)


CLAIMS = (
    Claim(
        "latent_prior_fd",
        "lower",
        "ae",
        "the adversarial loss brings the aggregate posterior closer to N(0, I) than a "
        "plain AE's codes (Makhzani et al. 2016)",
    ),
)


@register("aae", options=AAEOptions, likelihood="mse", claims=CLAIMS)
def make_aae(cfg, spec, opts: AAEOptions) -> Model:
    """Adversarial AE: a discriminator on the code pushes q(z) towards N(0, I)."""
    likelihood = get_likelihood(cfg.likelihood)
    net = make_backbone_fns(cfg, spec.image_shape, encoder_out=cfg.latent_dim)
    critic_init, critic = mlp_critic(opts.disc_hidden, cfg)

    def init(key, batch):
        k_net, k_disc = jax.random.split(key)
        params = net.init(k_net, batch.x)
        return {**params, "discriminator": critic_init(k_disc, cfg.latent_dim)}

    def encode(params, batch):
        return Encoding(net.encoder(params, batch.x))

    def decode(params, code, y=None):
        return net.decoder(params, code)

    def loss(params, batch, key, step):
        del step
        z = net.encoder(params, batch.x)
        recon = likelihood.nll(net.decoder(params, z), batch.x)
        # The generator sees a frozen discriminator; the discriminator sees frozen codes.
        gen = generator_losses(critic(jax.lax.stop_gradient(params["discriminator"]), z))
        d_real = critic(params["discriminator"], jax.random.normal(key, z.shape))
        d_fake = critic(params["discriminator"], jax.lax.stop_gradient(z))
        disc_loss = discriminator_losses(d_real, d_fake)
        value = batch_mean(recon + opts.adv_weight * gen + disc_loss)
        accuracy = 0.5 * (jnp.mean(d_real > 0) + jnp.mean(d_fake < 0))
        return value, {
            "recon": batch_mean(recon),
            "generator": batch_mean(gen),
            "discriminator": batch_mean(disc_loss),
            "disc_accuracy": accuracy,
        }

    def sample(params, key, n, y=None):
        z = jax.random.normal(key, (n, cfg.latent_dim))
        return likelihood.mean(net.decoder(params, z))

    return Model(
        name="aae",
        spec=spec,
        code_shape=(cfg.latent_dim,),
        likelihood=likelihood,
        init=init,
        loss=loss,
        encode=encode,
        decode=decode,
        sample=sample,
        optimizer=players_optimizer(opts),
        prior=standard_normal((cfg.latent_dim,)),  # what the discriminator matches q(z) to
    )


def players_optimizer(opts: AAEOptions):
    """The two players' optimisers: the run's for the autoencoder, Adam(disc_lr, b1=0.5)
    for the discriminator."""

    def optimizer(optim_cfg, total_steps):
        return param_groups(
            {
                "autoencoder": make_optimizer(optim_cfg, total_steps),
                "discriminator": optax.adam(opts.disc_lr, b1=0.5),
            },
            GROUPS,
        )

    return optimizer
