"""The VAE with two stochastic layers of Burda et al. (2016): z2 -> z1 -> x.

Generative model: p(z2) = N(0, I), p(z1 | z2) a diagonal Gaussian from a small MLP of z2,
p(x | z1) the shared backbone's decoder. Inference: q(z1 | x) from the backbone's encoder,
q(z2 | z1) from a small MLP of z1, so q(z1, z2 | x) = q(z1 | x) q(z2 | z1). Trained on the
single-sample ELBO

    log p(x | z1) + log p(z1 | z2) + log p(z2) - log q(z1 | x) - log q(z2 | z1),

with z1 and z2 reparameterised. The decoder reads z1 (`Encoding.code`, the bottom layer);
z2 is `Encoding.layers[0]` (its Gaussian at the mean of q(z1 | x)); the prior over
(z1, z2) is the model's own (`Model.prior`), and `Model.posterior` draws both layers, so
the evaluator's rate is the KL of the whole hierarchy.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Encoding, Model, Prior
from aevae_jax.models.vae import gaussian_latent
from aevae_jax.nn.backbones import MLPEncoder
from aevae_jax.nn.likelihoods import (
    batch_mean,
    diag_gaussian_log_prob,
    reparameterize,
    std_normal_log_prob,
)


@dataclasses.dataclass(frozen=True)
class TwoLayerOptions:
    top_dim: int = dataclasses.field(default=10, metadata={"help": "size of the top layer z2"})
    top_hidden: int = dataclasses.field(
        default=100, metadata={"help": "hidden units of the z1 <-> z2 networks"}
    )

    def __post_init__(self):
        require(self.top_dim >= 1, "--top-dim must be a positive integer")
        require(self.top_hidden >= 1, "--top-hidden must be a positive integer")


CLAIMS = (
    Claim(
        "test_nll_iwae",
        "lower",
        "vae",
        "a second stochastic layer gives a test NLL at or below the one-layer VAE's "
        "(Burda et al. 2016, Table 1: 86.76 to 85.33 nats on MNIST)",
    ),
)


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """The two layers' networks as pure functions of params {"encoder", "decoder", "up",
    "down"}; `base` is the one-layer VAE's parts (backbone, likelihood)."""

    base: object
    up: MLPEncoder  # z1 -> (mean, log_var) of q(z2 | z1)
    down: MLPEncoder  # z2 -> (mean, log_var) of p(z1 | z2)
    top_dim: int

    def init(self, key, batch):
        k_base, k_up, k_down = jax.random.split(key, 3)
        params = self.base.init(k_base, batch)
        z1 = jnp.zeros((1, self.base.latent_dim))
        z2 = jnp.zeros((1, self.top_dim))
        up, down = self.up.init(k_up, z1)["params"], self.down.init(k_down, z2)["params"]
        return {**params, "up": up, "down": down}

    def gaussian(self, net, params, name, h):
        return jnp.split(net.apply({"params": params[name]}, h), 2, axis=-1)

    def encode(self, params, batch) -> Encoding:
        q1 = self.base.encode(params, batch)
        mean2, log_var2 = self.gaussian(self.up, params, "up", q1.code)
        return q1._replace(layers=(Encoding(mean2, log_var2),))

    def posterior(self, params, batch, key):
        """((z1, z2), log q(z1, z2 | x) [B]): one reparameterised draw of both layers."""
        k1, k2 = jax.random.split(key)
        q1 = self.base.encode(params, batch)
        z1 = reparameterize(k1, q1.code, q1.log_var)
        mean2, log_var2 = self.gaussian(self.up, params, "up", z1)
        z2 = reparameterize(k2, mean2, log_var2)
        log_q = diag_gaussian_log_prob(z1, q1.code, q1.log_var)
        return (z1, z2), log_q + diag_gaussian_log_prob(z2, mean2, log_var2)

    def prior_log_prob(self, params, z):
        z1, z2 = z
        mean1, log_var1 = self.gaussian(self.down, params, "down", z2)
        return std_normal_log_prob(z2) + diag_gaussian_log_prob(z1, mean1, log_var1)

    def prior_sample(self, params, key, n, y=None):
        del y
        k2, k1 = jax.random.split(key)
        z2 = jax.random.normal(k2, (n, self.top_dim))
        mean1, log_var1 = self.gaussian(self.down, params, "down", z2)
        return reparameterize(k1, mean1, log_var1), z2

    def log_weight(self, params, batch, key):
        """[B]: log p(x, z1, z2) - log q(z1, z2 | x) at one draw from q."""
        z, log_q = self.posterior(params, batch, key)
        log_px = -self.base.likelihood.nll(self.base.decode(params, z[0], batch.y), batch.x)
        return log_px + self.prior_log_prob(params, z) - log_q

    def log_importance_weights(self, params, batch, key, k):
        keys = jax.random.split(key, k)
        return jax.vmap(lambda kk: self.log_weight(params, batch, kk))(keys)  # [k, B]


def hierarchy(cfg, spec, opts: TwoLayerOptions) -> Hierarchy:
    base = gaussian_latent(cfg, spec)
    mlp = lambda out: MLPEncoder((opts.top_hidden,), 2 * out, cfg.activation, cfg.init)
    return Hierarchy(base, mlp(opts.top_dim), mlp(cfg.latent_dim), opts.top_dim)


@register("two_layer_vae", options=TwoLayerOptions, needs_density=True, claims=CLAIMS)
def make_two_layer_vae(cfg, spec, opts: TwoLayerOptions) -> Model:
    """Two-stochastic-layer VAE (z2 -> z1 -> x), Burda et al. 2016."""
    h = hierarchy(cfg, spec, opts)

    def loss(params, batch, key, step):
        del step
        z, log_q = h.posterior(params, batch, key)
        recon = h.base.likelihood.nll(h.base.decode(params, z[0], batch.y), batch.x)
        kl = log_q - h.prior_log_prob(params, z)
        return batch_mean(recon + kl), {"recon": batch_mean(recon), "kl": batch_mean(kl)}

    def sample(params, key, n, y=None):
        z1, _ = h.prior_sample(params, key, n)
        return h.base.likelihood.mean(h.base.decode(params, z1, None))

    return Model(
        name="two_layer_vae",
        spec=spec,
        code_shape=(cfg.latent_dim,),
        likelihood=h.base.likelihood,
        init=h.init,
        loss=loss,
        encode=h.encode,
        decode=h.base.decode,
        sample=sample,
        log_importance_weights=h.log_importance_weights,
        prior=Prior(h.prior_log_prob, h.prior_sample),
        posterior=h.posterior,
    )
