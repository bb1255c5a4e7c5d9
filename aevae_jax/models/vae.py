"""The variational autoencoder (Kingma & Welling 2014).

q(z|x) = N(mean(x), diag(exp(log_var(x)))), p(z) = N(0, I), p(x|z) from the
likelihood (default Bernoulli on decoder logits). The loss is the negative ELBO,
-E_q[log p(x|z)] + KL(q(z|x) || p(z)), with one reparameterised sample and the
KL in closed form: per-example sums, batch mean.
"""

import jax
import jax.numpy as jnp

from aevae_jax.errors import UserError
from aevae_jax.likelihoods import (
    batch_mean,
    diag_gaussian_log_prob,
    get_likelihood,
    kl_to_std_normal,
    std_normal_log_prob,
)
from aevae_jax.models import register
from aevae_jax.models.base import Encoding, Model, make_backbone_fns


def reparameterize(key: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I): differentiable in mean, log_var."""
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * log_var) * eps


@register("vae")
def make_vae(cfg, image_shape) -> Model:
    likelihood = get_likelihood(cfg.likelihood or "bernoulli")
    if likelihood.name == "mse":
        raise UserError(
            "the VAE needs a normalised likelihood; use --likelihood bernoulli or gaussian"
        )
    net = make_backbone_fns(cfg, image_shape, encoder_out=2 * cfg.latent_dim)

    def encode(params, x):
        mean, log_var = jnp.split(net.encoder(params, x), 2, axis=-1)
        return Encoding(mean, log_var)

    def loss(params, batch, key, step):
        del step
        q = encode(params, batch.x)
        z = reparameterize(key, q.mean, q.log_var)
        recon = likelihood.nll(net.decoder(params, z), batch.x)
        kl = jnp.sum(kl_to_std_normal(q.mean, q.log_var), axis=-1)
        value = batch_mean(recon + kl)
        return value, {"recon": batch_mean(recon), "kl": batch_mean(kl)}

    def sample(params, key, n):
        z = jax.random.normal(key, (n, cfg.latent_dim))
        return likelihood.mean(net.decoder(params, z))

    def log_importance_weights(params, x, key, k):
        q = encode(params, x)
        eps = jax.random.normal(key, (k, *q.mean.shape), q.mean.dtype)
        z = q.mean + jnp.exp(0.5 * q.log_var) * eps  # [k, B, L]
        logits = net.decoder(params, z.reshape(-1, cfg.latent_dim))
        x_k = jnp.broadcast_to(x, (k, *x.shape)).reshape(-1, *x.shape[1:])
        log_px_z = -likelihood.nll(logits, x_k).reshape(k, -1)
        return log_px_z + std_normal_log_prob(z) - diag_gaussian_log_prob(z, q.mean, q.log_var)

    return Model(
        name="vae",
        latent_dim=cfg.latent_dim,
        image_shape=image_shape,
        likelihood=likelihood,
        init=net.init,
        loss=loss,
        encode=encode,
        decode=net.decoder,
        sample=sample,
        log_importance_weights=log_importance_weights,
    )
