"""The vector-quantised VAE (van den Oord et al. 2017), with a learned prior over its
code indices so that it generates.

Codes: the encoder's output is cut into `latent_dim` positions of `code_dim` numbers;
each position is replaced by its nearest vector in a codebook of `num_codes` (the code
index), and the decoder sees the quantised vectors. Gradients pass the quantiser
straight through (z_e + stop_gradient(z_q - z_e)). Per example, summed over positions
and dimensions:

    loss = -log p(x | z_q) + ||sg(z_e) - z_q||^2 + commitment * ||z_e - sg(z_q)||^2

With `ema`, the codebook is not trained by its loss term but moved to the running
mean of the encoder outputs assigned to each code (exponential moving averages of
counts and sums, decay `ema_decay`): see `ema_pull`.

Stage two ("prior", `prior_epochs` epochs): with the autoencoder frozen, an
autoregressive prior p(k_1, ..., k_P) = prod_p p(k_p | k_<p) (a MADE: masked dense
layers over one-hot indices) is fitted to the codes of the training images. Samples
draw indices position by position and decode them. With q(z|x) a point mass on the
nearest codes, log p(x) >= log p(x | z_q(x)) + log p(k(x)), which is the model's NLL
bound in nats (one importance sample is exact).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Encoding, Model, Stage, make_backbone_fns
from aevae_jax.nn.likelihoods import batch_mean, get_likelihood
from aevae_jax.nn.masked import autoregressive_masks, masked_dense
from aevae_jax.nn.optim import frozen, make_optimizer, param_groups


@dataclasses.dataclass(frozen=True)
class VQVAEOptions:
    num_codes: int = dataclasses.field(default=128, metadata={"help": "codebook size K"})
    code_dim: int = dataclasses.field(
        default=16, metadata={"help": "size D of each code vector (latent_dim positions)"}
    )
    commitment: float = dataclasses.field(
        default=0.25, metadata={"help": "weight of the commitment loss"}
    )
    ema: bool = dataclasses.field(
        default=False, metadata={"help": "update the codebook by moving averages"}
    )
    ema_decay: float = dataclasses.field(
        default=0.99, metadata={"help": "decay of the codebook moving averages"}
    )
    prior_epochs: int = dataclasses.field(
        default=10, metadata={"help": "epochs of the second stage: the prior over codes"}
    )
    prior_hidden: int = dataclasses.field(
        default=512, metadata={"help": "width of the prior's two masked hidden layers"}
    )
    prior_lr: float = dataclasses.field(
        default=1e-3, metadata={"help": "Adam learning rate of the prior"}
    )

    def __post_init__(self):
        require(self.num_codes >= 2, "--num-codes must be at least 2")
        require(self.code_dim >= 1, "--code-dim must be a positive integer")
        require(self.commitment >= 0, "--commitment must be >= 0")
        require(0 < self.ema_decay < 1, "--ema-decay must lie in (0, 1)")
        require(self.prior_epochs >= 1, "--prior-epochs must be a positive integer")
        require(self.prior_hidden >= 1, "--prior-hidden must be a positive integer")
        require(self.prior_lr > 0, "--prior-lr must be positive")


# ----------------------------------------------------------------------- quantiser


def quantize(z_e: jax.Array, codebook: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Nearest codebook vectors: z_e [..., D], codebook [K, D] -> (indices [...], z_q [..., D])."""
    d = (
        jnp.sum(z_e**2, axis=-1, keepdims=True)
        - 2.0 * z_e @ codebook.T
        + jnp.sum(codebook**2, axis=-1)
    )
    indices = jnp.argmin(d, axis=-1)
    return indices, codebook[indices]


def straight_through(z_e: jax.Array, z_q: jax.Array) -> jax.Array:
    """The value of z_q with the gradient of z_e."""
    return z_e + jax.lax.stop_gradient(z_q - z_e)


def ema_pull(param: jax.Array, target: jax.Array, decay: float) -> jax.Array:
    """A zero-valued loss term whose gradient, (1 - decay) (param - target), makes one
    plain SGD step with learning rate 1 an exponential moving average:
    param <- decay * param + (1 - decay) * target. It lets a moving-average update ride
    on the ordinary gradient step (the 'ema' parameter group uses optax.sgd(1))."""
    term = (1.0 - decay) * jnp.sum(jax.lax.stop_gradient(param - target) * param)
    return term - jax.lax.stop_gradient(term)


def ema_codebook(state: dict, eps: float = 1e-5) -> jax.Array:
    """Codebook vectors from moving-average counts [K] and sums [K, D], with Laplace
    smoothing so that unused codes keep a finite vector."""
    count = state["count"]
    n = jnp.sum(count)
    smoothed = (count + eps) / (n + count.shape[0] * eps) * n
    return state["sum"] / smoothed[:, None]


# ----------------------------------------------------------------------- prior


class MADE(nn.Module):
    """Autoregressive logits over P positions of K classes: masked dense layers over
    the one-hot indices (Germain et al. 2015, natural order), so the logits of position
    p see only positions < p; position 0 sees none (its bias is its marginal)."""

    positions: int
    classes: int
    hidden: int

    @nn.compact
    def __call__(self, indices: jax.Array) -> jax.Array:  # [B, P] int -> [B, P, K]
        p, k, h = self.positions, self.classes, self.hidden
        x = jax.nn.one_hot(indices, k).reshape(indices.shape[0], p * k)
        m1, m2, m3 = autoregressive_masks(np.repeat(np.arange(1, p + 1), k), h)
        a = nn.relu(masked_dense(self, "hidden_0", x, m1))
        a = nn.relu(masked_dense(self, "hidden_1", a, m2))
        return masked_dense(self, "logits", a, m3).reshape(-1, p, k)


def made_log_prob(made: MADE, params, indices: jax.Array) -> jax.Array:
    """[B] log p(indices) under the autoregressive prior."""
    logits = made.apply({"params": params}, indices)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.take_along_axis(log_p, indices[..., None], axis=-1)[..., 0], axis=-1)


def made_sample(made: MADE, params, key, n: int) -> jax.Array:
    """[n, P] indices drawn position by position."""

    def body(p, indices):
        logits = made.apply({"params": params}, indices)[:, p]
        draw = jax.random.categorical(jax.random.fold_in(key, p), logits)
        return indices.at[:, p].set(draw)

    return jax.lax.fori_loop(0, made.positions, body, jnp.zeros((n, made.positions), jnp.int32))


# ----------------------------------------------------------------------- model


CLAIMS = (
    Claim(
        "perplexity",
        "higher",
        lambda metrics: metrics["num_codes"] / 10,
        "the codebook is used: perplexity well above 1, at least a tenth of the codebook "
        "(van den Oord et al. 2017)",
    ),
)


@dataclasses.dataclass(frozen=True)
class VQParts:
    """The VQ-VAE's pure functions over params {"encoder", "decoder", "codebook", "prior"}:
    `latent_dim` positions of `code_dim`-vectors from a `num_codes` codebook, and the MADE
    prior over their indices."""

    likelihood: Any
    positions: int
    dim: int
    k: int
    net: Any
    made: MADE
    opts: VQVAEOptions

    def init(self, key, batch):
        k_net, k_code, k_prior = jax.random.split(key, 3)
        params = self.net.init(k_net, batch.x)
        vectors = jax.random.normal(k_code, (self.k, self.dim))
        if self.opts.ema:
            codebook = {"count": jnp.ones(self.k), "sum": vectors}
        else:
            codebook = {"vectors": vectors}
        prior = self.made.init(k_prior, jnp.zeros((1, self.made.positions), jnp.int32))["params"]
        return {**params, "codebook": codebook, "prior": prior}

    def vectors_of(self, params):
        book = params["codebook"]
        return ema_codebook(book) if self.opts.ema else book["vectors"]

    # The quantiser: what a variant of this model (residual, finite scalar) replaces.

    def quantise(self, params, z_e):
        """(indices [B, P, ...] int, z_q [B, P, dim]) of the encoder's vectors [B, P, dim]."""
        return quantize(z_e, self.vectors_of(params))

    def dequantise(self, params, indices):
        """z_q [B, P, dim] of code indices [B, P, ...]."""
        return self.vectors_of(params)[indices]

    def decoder_input(self, z_e, z_q):
        """What the decoder reads in training: z_q's value with z_e's gradient."""
        return straight_through(z_e, z_q)

    def code_terms(self, params, z_e, indices, z_q):
        """(per-example loss [B], a scalar to add to the batch mean, metrics) of the
        quantiser beside the reconstruction: the commitment, and the codebook's own term."""
        commit = jnp.sum((z_e - jax.lax.stop_gradient(z_q)) ** 2, axis=(1, 2))
        book, metrics = self.codebook_terms(params, [(indices, z_e)])
        return self.opts.commitment * commit, book, {"commitment": batch_mean(commit), **metrics}

    def codebook_terms(self, params, assigned):
        """(a scalar to add to the batch mean, metrics): the codebook's loss, or with `ema`
        its moving-average pull, over `assigned` pairs (indices [B, P], the vectors
        [B, P, dim] they were assigned from)."""
        if self.opts.ema:
            counts = sum(jnp.sum(jax.nn.one_hot(i.reshape(-1), self.k), 0) for i, _ in assigned)
            sums = sum(
                jax.nn.one_hot(i.reshape(-1), self.k).T
                @ jax.lax.stop_gradient(v.reshape(-1, self.dim))
                for i, v in assigned
            )
            book = params["codebook"]
            pull = ema_pull(book["count"], counts, self.opts.ema_decay)
            return pull + ema_pull(book["sum"], sums, self.opts.ema_decay), {}
        codebook_loss = sum(
            jnp.sum((jax.lax.stop_gradient(v) - self.vectors_of(params)[i]) ** 2, axis=(1, 2))
            for i, v in assigned
        )
        return batch_mean(codebook_loss), {"codebook": batch_mean(codebook_loss)}

    # What every quantiser shares.

    def encoder_out(self, params, x):
        return self.net.encoder(params, x).reshape(x.shape[0], self.positions, self.dim)

    def encode(self, params, batch):
        indices, z_q = self.quantise(params, self.encoder_out(params, batch.x))
        return Encoding(z_q.reshape(z_q.shape[0], -1), indices=indices.astype(jnp.int32))

    def decode(self, params, code, y=None):
        return self.net.decoder(params, code.reshape(code.shape[0], -1))

    def loss(self, params, batch, key, step):
        del key, step
        z_e = self.encoder_out(params, batch.x)
        indices, z_q = self.quantise(params, z_e)
        recon = self.likelihood.nll(self.decode(params, self.decoder_input(z_e, z_q)), batch.x)
        terms, book, metrics = self.code_terms(params, z_e, indices, z_q)
        value = batch_mean(recon + terms) + book
        metrics = {"recon": batch_mean(recon), **metrics}
        usage = jnp.mean(jax.nn.one_hot(indices.reshape(-1), self.k), axis=0)
        metrics["batch_perplexity"] = jnp.exp(-jnp.sum(usage * jnp.log(usage + 1e-12)))
        return value, metrics

    def prior_loss(self, params, batch, key, step):
        del key, step
        indices = self.encode(jax.lax.stop_gradient(params), batch).indices
        nll = -made_log_prob(self.made, params["prior"], indices.reshape(indices.shape[0], -1))
        return batch_mean(nll), {"prior_nll": batch_mean(nll)}

    def log_importance_weights(self, params, batch, key, n):
        del key  # q(z|x) is a point mass: every sample is the same
        enc = self.encode(params, batch)
        log_px = -self.likelihood.nll(self.decode(params, enc.code), batch.x)
        flat = enc.indices.reshape(enc.indices.shape[0], -1)
        log_w = log_px + made_log_prob(self.made, params["prior"], flat)
        return jnp.broadcast_to(log_w, (n, *log_w.shape))

    def sample(self, params, key, n, y=None):
        flat = made_sample(self.made, params["prior"], key, n)
        indices = flat.reshape(n, self.positions, *self.index_grid)
        z_q = self.dequantise(params, indices)
        return self.likelihood.mean(self.decode(params, z_q))

    def model(self, name: str, spec) -> Model:
        """The Model of these parts: a point posterior on the quantised code, the prior
        over its indices trained as a second stage."""
        return Model(
            name=name,
            spec=spec,
            code_shape=(self.positions * self.dim,),
            likelihood=self.likelihood,
            init=self.init,
            loss=self.loss,
            encode=self.encode,
            decode=self.decode,
            sample=self.sample,
            log_importance_weights=self.log_importance_weights,
            optimizer=self.main_optimizer,
            stages=(Stage("prior", self.prior_loss, self.prior_optimizer, self.opts.prior_epochs),),
            num_codes=self.k,
            point_posterior=True,
        )

    @property
    def index_grid(self) -> tuple[int, ...]:
        """The index axes of each position beyond the first (the residual depth)."""
        return ()

    def main_optimizer(self, optim_cfg, total_steps):
        groups = {"model": make_optimizer(optim_cfg, total_steps), "prior": frozen()}
        group_of = {"encoder": "model", "decoder": "model", "prior": "prior"}
        if self.opts.ema:
            groups["ema"] = optax.sgd(1.0)
        group_of["codebook"] = "ema" if self.opts.ema else "model"
        return param_groups(groups, group_of)

    def prior_optimizer(self, optim_cfg, total_steps):
        del optim_cfg, total_steps
        group_of = {"encoder": "rest", "decoder": "rest", "codebook": "rest", "prior": "prior"}
        return param_groups({"prior": optax.adam(self.opts.prior_lr), "rest": frozen()}, group_of)


@register("vqvae", options=VQVAEOptions, needs_density=True, claims=CLAIMS)
def make_vqvae(cfg, spec, opts: VQVAEOptions) -> Model:
    """VQ-VAE: a learned codebook, straight-through gradients, then an autoregressive prior."""
    positions, dim, k = cfg.latent_dim, opts.code_dim, opts.num_codes
    net = make_backbone_fns(cfg, spec.image_shape, positions * dim, code_dim=positions * dim)
    v = VQParts(get_likelihood(cfg.likelihood), positions, dim, k, net,
                MADE(positions, k, opts.prior_hidden), opts)  # fmt: skip
    return v.model("vqvae", spec)
