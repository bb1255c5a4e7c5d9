"""Finite scalar quantisation (Mentzer et al. 2023): the VQ-VAE with its codebook replaced
by rounding, and the same autoregressive prior over the code indices.

Each of the `latent_dim` positions holds d = len(levels) numbers; number i is bounded to
L_i levels, z_i = tanh(z_e,i + shift_i) h_i - offset_i with h_i = (L_i - 1)(1 - eps) / 2,
offset_i = 1/2 for even L_i (else 0) and shift_i = tan(offset_i / h_i), as in the paper's
code, so the rounded values are the L_i integers -floor(L_i / 2) .. L_i - 1 - floor(L_i / 2);
then rounded with a straight-through gradient and divided by floor(L_i / 2).
The implied codebook is the grid of prod(L_i) points; a position's index is its digits
in mixed radix. No codebook or commitment loss: the loss is -log p(x | z_q) alone.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aevae_jax.errors import int_list, require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Model, make_backbone_fns
from aevae_jax.models.vqvae import MADE, VQParts, straight_through
from aevae_jax.nn.likelihoods import get_likelihood
from aevae_jax.nn.optim import frozen, make_optimizer, param_groups


@dataclasses.dataclass(frozen=True)
class FSQOptions:
    levels: str = dataclasses.field(
        default="5,5,5", metadata={"help": "levels of each number of a position (comma list)"}
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
        parse_levels(self.levels)
        require(self.prior_epochs >= 1, "--prior-epochs must be a positive integer")
        require(self.prior_hidden >= 1, "--prior-hidden must be a positive integer")
        require(self.prior_lr > 0, "--prior-lr must be positive")


def parse_levels(text: str) -> tuple[int, ...]:
    """'8,5,5' -> (8, 5, 5); every level an integer of at least 2."""
    levels = int_list(text, "--levels", "5,5,5", 2)
    require(math.prod(levels) <= 65536, f"--levels {text!r} imply over 65536 codes; use fewer")
    return levels


def fsq_round(z_e: jax.Array, levels: tuple[int, ...], eps: float = 1e-3):
    """(digits [..., d] int in [0, L_i), z_q [..., d] in [-1, 1]) of z_e [..., d]."""
    lv = jnp.asarray(levels, z_e.dtype)
    half_l = (lv - 1) * (1 - eps) / 2
    offset = jnp.where(lv % 2 == 0, 0.5, 0.0)
    shift = jnp.tan(offset / half_l)  # as the paper's code has it (arctanh fails at L = 2)
    bounded = jnp.tanh(z_e + shift) * half_l - offset
    rounded = straight_through(bounded, jnp.round(bounded))
    half_width = jnp.floor(lv / 2)
    digits = (jnp.round(bounded) + half_width).astype(jnp.int32)
    return digits, rounded / half_width


def digits_to_index(digits: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """Mixed-radix index [...] of digits [..., d] (the first digit most significant)."""
    radix = np.concatenate([np.cumprod(levels[::-1])[::-1][1:], [1]]).astype(np.int32)
    return jnp.sum(digits * radix, axis=-1)


def index_to_values(index: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """z_q [..., d] of mixed-radix indices [...]: the inverse of digits_to_index."""
    radix = np.concatenate([np.cumprod(levels[::-1])[::-1][1:], [1]]).astype(np.int32)
    digits = (index[..., None] // radix) % np.asarray(levels)
    half_width = np.floor(np.asarray(levels) / 2)
    return (digits - half_width).astype(jnp.float32) / half_width


@dataclasses.dataclass(frozen=True)
class FSQParts(VQParts):
    """The VQ-VAE's functions with rounding for the codebook: params {"encoder",
    "decoder", "prior"}."""

    levels: tuple[int, ...] = ()

    def init(self, key, batch):
        k_net, k_prior = jax.random.split(key)
        prior = self.made.init(k_prior, jnp.zeros((1, self.made.positions), jnp.int32))["params"]
        return {**self.net.init(k_net, batch.x), "prior": prior}

    def quantise(self, params, z_e):
        digits, z_q = fsq_round(z_e, self.levels)
        return digits_to_index(digits, self.levels), z_q

    def dequantise(self, params, indices):
        return index_to_values(indices, self.levels)

    def decoder_input(self, z_e, z_q):
        return z_q  # fsq_round already passes the bounding function's gradient

    def code_terms(self, params, z_e, indices, z_q):
        return jnp.zeros(z_e.shape[0]), 0.0, {}

    def main_optimizer(self, optim_cfg, total_steps):
        groups = {"model": make_optimizer(optim_cfg, total_steps), "prior": frozen()}
        return param_groups(groups, {"encoder": "model", "decoder": "model", "prior": "prior"})

    def prior_optimizer(self, optim_cfg, total_steps):
        del optim_cfg, total_steps
        groups = {"prior": optax.adam(self.opts.prior_lr), "rest": frozen()}
        return param_groups(groups, {"encoder": "rest", "decoder": "rest", "prior": "prior"})


CLAIMS = (
    Claim(
        "dead_codes",
        "lower",
        lambda metrics: metrics["num_codes"] / 10,
        "rounding uses the implied codebook without auxiliary losses: fewer than a tenth "
        "of the codes never used (Mentzer et al. 2023)",
    ),
)


@register("fsq", options=FSQOptions, needs_density=True, claims=CLAIMS)
def make_fsq(cfg, spec, opts: FSQOptions) -> Model:
    """FSQ: codes rounded to a fixed grid (no codebook), then an autoregressive prior."""
    levels = parse_levels(opts.levels)
    positions, dim, k = cfg.latent_dim, len(levels), math.prod(levels)
    net = make_backbone_fns(cfg, spec.image_shape, positions * dim, code_dim=positions * dim)
    v = FSQParts(get_likelihood(cfg.likelihood), positions, dim, k, net,
                 MADE(positions, k, opts.prior_hidden), opts, levels)  # fmt: skip
    return v.model("fsq", spec)
