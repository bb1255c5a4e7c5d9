"""Residual quantisation (RQ-VAE, Lee et al. 2022): the VQ-VAE's vector at each position
quantised `rq_depth` times, each time the residual that the codes so far leave, by one
shared codebook; the code is the sum of the depth's vectors, its indices [B, P, depth],
and the autoregressive prior reads them position by position, depth by depth.

With r_0 = z_e, k_d = argmin_k |r_{d-1} - e_k|, r_d = r_{d-1} - e_{k_d}, and the partial
sums z_d = e_{k_1} + ... + e_{k_d} (z_q = z_depth), per example, summed over positions:

    loss = -log p(x | z_q) + commitment * sum_d |z_e - sg(z_d)|^2 + codebook term,

the codebook term sum_d |sg(r_{d-1}) - e_{k_d}|^2 (or, with --ema, moving averages of the
residuals assigned to each code). Depth 1 is the VQ-VAE.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Model, make_backbone_fns
from aevae_jax.models.vqvae import MADE, VQParts, VQVAEOptions, quantize
from aevae_jax.nn.likelihoods import batch_mean, get_likelihood


@dataclasses.dataclass(frozen=True)
class RQOptions(VQVAEOptions):
    rq_depth: int = dataclasses.field(
        default=2, metadata={"help": "quantisation steps per position (1: the VQ-VAE)"}
    )

    def __post_init__(self):
        super().__post_init__()
        require(self.rq_depth >= 1, f"--rq-depth must be a positive integer, got {self.rq_depth}")


def residual_quantize(z_e: jax.Array, codebook: jax.Array, depth: int):
    """(indices [..., depth], partial sums [depth, ..., D], residuals before each step
    [depth, ..., D]) of z_e [..., D]; the last partial sum is the quantised vector."""
    residual, total = z_e, jnp.zeros_like(z_e)
    indices, partial, before = [], [], []
    for _ in range(depth):
        before.append(residual)
        k, e = quantize(residual, codebook)
        total = total + e
        residual = residual - e
        indices.append(k)
        partial.append(total)
    return jnp.stack(indices, -1), jnp.stack(partial), jnp.stack(before)


@dataclasses.dataclass(frozen=True)
class RQParts(VQParts):
    """The VQ-VAE's functions with a residual quantiser of `depth` steps."""

    depth: int = 1

    def quantise(self, params, z_e):
        indices, partial, _ = residual_quantize(z_e, self.vectors_of(params), self.depth)
        return indices, partial[-1]

    def dequantise(self, params, indices):
        return jnp.sum(self.vectors_of(params)[indices], axis=-2)

    def code_terms(self, params, z_e, indices, z_q):
        # The partial sums and residuals from the indices the quantiser already chose
        # (no second nearest-neighbour search): depth first, [depth, B, P, D].
        vectors = jnp.moveaxis(self.vectors_of(params)[indices], -2, 0)
        partial = jnp.cumsum(vectors, axis=0)
        before = z_e[None] - (partial - vectors)
        commit = jnp.sum((z_e[None] - jax.lax.stop_gradient(partial)) ** 2, axis=(0, 2, 3))
        assigned = [(indices[..., d], before[d]) for d in range(self.depth)]
        book, metrics = self.codebook_terms(params, assigned)
        return self.opts.commitment * commit, book, {"commitment": batch_mean(commit), **metrics}

    @property
    def index_grid(self) -> tuple[int, ...]:
        return (self.depth,)


CLAIMS = (
    Claim(
        "test_mse",
        "lower",
        "vqvae",
        "quantising the residuals again reconstructs better than one VQ codebook of the "
        "same size (Lee et al. 2022)",
    ),
    Claim(
        "perplexity",
        "higher",
        lambda metrics: metrics["num_codes"] / 10,
        "the shared codebook is used at every depth: perplexity at least a tenth of the "
        "codebook (Lee et al. 2022)",
    ),
)


@register("rq_vae", options=RQOptions, needs_density=True, claims=CLAIMS)
def make_rq_vae(cfg, spec, opts: RQOptions) -> Model:
    """RQ-VAE: residual quantisation with one shared codebook, then an autoregressive prior."""
    positions, dim, k = cfg.latent_dim, opts.code_dim, opts.num_codes
    net = make_backbone_fns(cfg, spec.image_shape, positions * dim, code_dim=positions * dim)
    made = MADE(positions * opts.rq_depth, k, opts.prior_hidden)
    v = RQParts(get_likelihood(cfg.likelihood), positions, dim, k, net, made, opts, opts.rq_depth)
    return v.model("rq_vae", spec)
