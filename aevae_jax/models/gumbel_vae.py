"""The categorical VAE with the Gumbel-softmax relaxation (Jang et al. 2017; the Concrete
distribution of Maddison et al. 2017).

Code: `latent_dim` categorical variables of `categories` classes each; q(c|x) from the
encoder's logits, p(c) uniform. Training draws the relaxed one-hot sample
y = softmax((logits + g) / tau), g ~ Gumbel(0, 1), which the decoder reads, with the
temperature annealed per step, tau(t) = max(tau_min, tau_0 exp(-rate t)); with `hard`,
the forward pass uses the one-hot argmax of y and the gradient is y's (straight through).
The KL to the uniform prior is exact: sum_j sum_k q_jk log(q_jk K).

Evaluation uses the discrete model itself: its importance weights are
log p(x | c) + log p(c) - log q(c|x) at exact one-hot draws c ~ q(c|x) (so the -ELBO and
the IWAE NLL bound the likelihood of the discrete latent model); its code is the one-hot
most probable class of each variable (what reconstructions decode), its indices those
classes.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Encoding, Model, Prior, make_backbone_fns
from aevae_jax.nn.likelihoods import batch_mean, get_likelihood


@dataclasses.dataclass(frozen=True)
class GumbelOptions:
    categories: int = dataclasses.field(
        default=10, metadata={"help": "classes of each categorical variable"}
    )
    tau_init: float = dataclasses.field(default=1.0, metadata={"help": "initial temperature"})
    tau_min: float = dataclasses.field(default=0.5, metadata={"help": "lowest temperature"})
    tau_rate: float = dataclasses.field(
        default=3e-5, metadata={"help": "temperature decay per step, tau_0 exp(-rate t)"}
    )
    hard: bool = dataclasses.field(
        default=False, metadata={"help": "one-hot forward pass, relaxed gradient"}
    )

    def __post_init__(self):
        require(self.categories >= 2, f"--categories must be at least 2, got {self.categories}")
        require(
            0 < self.tau_min <= self.tau_init,
            f"temperatures need 0 < --tau-min <= --tau-init, got {self.tau_min}, {self.tau_init}",
        )
        require(self.tau_rate >= 0, f"--tau-rate must be >= 0, got {self.tau_rate}")


def temperature(step, opts: GumbelOptions) -> jax.Array:
    """tau at a training step: max(tau_min, tau_init exp(-rate step))."""
    return jnp.maximum(opts.tau_min, opts.tau_init * jnp.exp(-opts.tau_rate * step))


def gumbel_softmax(key, logits: jax.Array, tau, hard: bool = False) -> jax.Array:
    """A relaxed one-hot draw over the last axis; `hard`: its one-hot argmax, with the
    relaxed draw's gradient."""
    g = jax.random.gumbel(key, logits.shape, logits.dtype)
    y = jax.nn.softmax((logits + g) / tau, axis=-1)
    if not hard:
        return y
    one_hot = jax.nn.one_hot(jnp.argmax(y, axis=-1), logits.shape[-1], dtype=y.dtype)
    return y + jax.lax.stop_gradient(one_hot - y)


def kl_to_uniform(logits: jax.Array) -> jax.Array:
    """[B]: KL(q || uniform) = sum over variables and classes of q log(q K)."""
    log_q = jax.nn.log_softmax(logits, axis=-1)
    k = logits.shape[-1]
    return jnp.sum(jnp.exp(log_q) * (log_q + math.log(k)), axis=(-2, -1))


CLAIMS = (
    Claim(
        "perplexity",
        "higher",
        lambda metrics: metrics["num_codes"] / 2,
        "annealed Gumbel-softmax training uses the categories: the perplexity of the codes' "
        "most probable classes above half the classes (Jang et al. 2017)",
    ),
)


@register("gumbel_vae", options=GumbelOptions, needs_density=True, claims=CLAIMS)
def make_gumbel_vae(cfg, spec, opts: GumbelOptions) -> Model:
    """Categorical VAE trained through the Gumbel-softmax relaxation (Jang et al. 2017)."""
    n, k = cfg.latent_dim, opts.categories
    net = make_backbone_fns(cfg, spec.image_shape, encoder_out=n * k, code_dim=n * k)
    likelihood = get_likelihood(cfg.likelihood)

    def logits_of(params, batch):
        return net.encoder(params, batch.x).reshape(batch.x.shape[0], n, k)

    def decode(params, code, y=None):
        del y
        return net.decoder(params, code.reshape(code.shape[0], n * k))

    def loss(params, batch, key, step):
        logits = logits_of(params, batch)
        tau = temperature(step, opts)
        y = gumbel_softmax(key, logits, tau, opts.hard)
        recon = likelihood.nll(decode(params, y), batch.x)
        kl = kl_to_uniform(logits)
        metrics = {"recon": batch_mean(recon), "kl": batch_mean(kl), "tau": tau}
        return batch_mean(recon + kl), metrics

    def encode(params, batch):
        indices = jnp.argmax(logits_of(params, batch), axis=-1).astype(jnp.int32)
        one_hot = jax.nn.one_hot(indices, k)  # the most probable code, as decoded in training
        return Encoding(one_hot.reshape(one_hot.shape[0], n * k), indices=indices)

    def log_importance_weights(params, batch, key, m):
        logits = logits_of(params, batch)  # [B, n, k]
        b = logits.shape[0]
        c = jax.random.categorical(key, logits, shape=(m, b, n))  # exact discrete draws
        log_q = jnp.sum(
            jnp.take_along_axis(jax.nn.log_softmax(logits)[None], c[..., None], -1)[..., 0],
            axis=-1,
        )  # [m, B]
        one_hot = jax.nn.one_hot(c, k).reshape(m * b, n * k)
        x_m = jnp.broadcast_to(batch.x, (m, *batch.x.shape)).reshape(m * b, *batch.x.shape[1:])
        log_px = -likelihood.nll(decode(params, one_hot), x_m).reshape(m, b)
        return log_px - n * math.log(k) - log_q

    def prior_log_prob(params, code):
        del params
        return jnp.full(code.shape[0], -n * math.log(k))

    def prior_sample(params, key, m, y=None):
        del params, y
        c = jax.random.randint(key, (m, n), 0, k)
        return jax.nn.one_hot(c, k).reshape(m, n * k)

    def sample(params, key, m, y=None):
        return likelihood.mean(decode(params, prior_sample(params, key, m)))

    return Model(
        name="gumbel_vae", spec=spec, code_shape=(n * k,), likelihood=likelihood,
        init=lambda key, batch: net.init(key, batch.x), loss=loss, encode=encode,
        decode=decode, sample=sample, log_importance_weights=log_importance_weights,
        num_codes=k, prior=Prior(prior_log_prob, prior_sample),
    )  # fmt: skip
