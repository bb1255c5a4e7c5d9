"""The variational autoencoder (Kingma & Welling 2014), and the parts every model
with a diagonal-Gaussian posterior shares (beta-VAE, IWAE, conditional VAE).

q(z|x) = N(mean(x), diag(exp(log_var(x)))), p(z) = N(0, I), p(x|z) from the
likelihood (default Bernoulli on decoder logits). The loss is the negative ELBO,
-E_q[log p(x|z)] + KL(q(z|x) || p(z)), with one reparameterised sample and the
KL in closed form: per-example sums, batch mean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from aevae_jax.data.spec import DataSpec
from aevae_jax.models import register
from aevae_jax.models.base import Backbone, Encoding, Model, make_backbone_fns, one_hot_labels
from aevae_jax.models.priors import standard_normal
from aevae_jax.nn.likelihoods import (
    Likelihood,
    batch_mean,
    diag_gaussian_log_prob,
    get_likelihood,
    kl_to_std_normal,
    reparameterize,
    std_normal_log_prob,
)


@dataclasses.dataclass(frozen=True)
class GaussianLatent:
    """Encoder to (mean, log_var), decoder from z, prior N(0, I); with `conditional`,
    both networks also see the one-hot label. Every method is pure."""

    spec: DataSpec
    latent_dim: int
    likelihood: Likelihood
    net: Backbone
    conditional: bool = False
    # log p(z) of codes [N, L] given the parameters, for a prior other than N(0, I)
    # (None: N(0, I)); `Model.prior` states the same density for the evaluator.
    log_prior: Callable[[Any, jax.Array], jax.Array] | None = None

    def cond(self, y):
        return one_hot_labels(y, self.spec) if self.conditional else None

    def init(self, key, batch):
        y = batch.y if batch.y is not None else jnp.zeros(batch.x.shape[0], jnp.int32)
        return self.net.init(key, batch.x, self.cond(y))

    def encode(self, params, batch) -> Encoding:
        h = self.net.encoder(params, batch.x, self.cond(batch.y))
        mean, log_var = jnp.split(h, 2, axis=-1)
        return Encoding(mean, log_var)

    def decode(self, params, z, y=None):
        return self.net.decoder(params, z, self.cond(y))

    def elbo_terms(self, params, batch, key, target=None):
        """Per-example (-E_q log p(target|z) with one reparameterised sample z ~
        q(z|batch.x), analytic KL): [B], [B]. The target defaults to batch.x."""
        q = self.encode(params, batch)
        z = reparameterize(key, q.code, q.log_var)
        target = batch.x if target is None else target
        recon = self.likelihood.nll(self.decode(params, z, batch.y), target)
        kl = jnp.sum(kl_to_std_normal(q.code, q.log_var), axis=-1)
        return recon, kl

    def log_importance_weights(self, params, batch, key, k):
        """[k, B]: log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x); p(z) = N(0, I)
        unless `log_prior` says otherwise."""
        q = self.encode(params, batch)
        eps = jax.random.normal(key, (k, *q.code.shape), q.code.dtype)
        z = q.code + jnp.exp(0.5 * q.log_var) * eps  # [k, B, L]
        b = batch.x.shape[0]
        y_k = None if batch.y is None else jnp.tile(batch.y, k)
        logits = self.decode(params, z.reshape(k * b, self.latent_dim), y_k)
        x_k = jnp.broadcast_to(batch.x, (k, *batch.x.shape)).reshape(k * b, *batch.x.shape[1:])
        log_px_z = -self.likelihood.nll(logits, x_k).reshape(k, b)
        if self.log_prior is None:
            log_pz = std_normal_log_prob(z)
        else:
            log_pz = self.log_prior(params, z.reshape(k * b, self.latent_dim)).reshape(k, b)
        return log_px_z + log_pz - diag_gaussian_log_prob(z, q.code, q.log_var)

    def sample(self, params, key, n, y=None):
        """Decoder means at z ~ N(0, I); a conditional model draws uniform labels when
        `y` is None."""
        k_z, k_y = jax.random.split(key)
        if self.conditional and y is None:
            y = jax.random.randint(k_y, (n,), 0, self.spec.num_classes)
        z = jax.random.normal(k_z, (n, self.latent_dim))
        return self.likelihood.mean(self.decode(params, z, y))

    def model(self, name: str, loss) -> Model:
        return Model(
            name=name,
            spec=self.spec,
            code_shape=(self.latent_dim,),
            likelihood=self.likelihood,
            init=self.init,
            loss=loss,
            encode=self.encode,
            decode=self.decode,
            sample=self.sample,
            log_importance_weights=self.log_importance_weights,
            conditional=self.conditional,
            prior=standard_normal((self.latent_dim,)),
        )


def gaussian_latent(cfg, spec: DataSpec, conditional: bool = False) -> GaussianLatent:
    net = make_backbone_fns(cfg, spec.image_shape, encoder_out=2 * cfg.latent_dim)
    return GaussianLatent(spec, cfg.latent_dim, get_likelihood(cfg.likelihood), net, conditional)


def neg_elbo_loss(parts: GaussianLatent):
    """The negative ELBO objective: batch mean of recon + analytic KL."""

    def loss(params, batch, key, step):
        del step
        recon, kl = parts.elbo_terms(params, batch, key)
        return batch_mean(recon + kl), {"recon": batch_mean(recon), "kl": batch_mean(kl)}

    return loss


@register("vae", needs_density=True)
def make_vae(cfg, spec, opts) -> Model:
    """Variational autoencoder: Gaussian q(z|x), N(0, I) prior, negative-ELBO loss."""
    del opts
    parts = gaussian_latent(cfg, spec)
    return parts.model("vae", neg_elbo_loss(parts))
