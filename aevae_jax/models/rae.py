"""Regularised autoencoders, RAE (Ghosh et al. 2020): a deterministic autoencoder whose
code is kept small and whose decoder is kept smooth, made generative afterwards by an
ex-post density fitted to its codes (the paper's ten-component Gaussian mixture: the
"gmm" sampler of evaluate/samplers.py), in place of the VAE's noise and KL term:

    loss = mean_b recon_b + embedding_weight * mean_b ||z_b||^2 / 2 + reg_weight * R,

- rae_l2: R = ||theta_D||^2, the squared L2 norm of every decoder parameter;
- rae_gp: R = mean_b ||J_D(z_b)||_F^2, the decoder's squared Jacobian norm at the codes,
  estimated without bias by Hutchinson's trick, ||J||_F^2 = E_v ||J^T v||^2 with
  v ~ N(0, I) over the decoder's outputs (one vector-Jacobian product per step, drawn
  from the step's key).

The defaults are those of pythae's reproduction on MNIST (embedding 1e-6, regulariser
1e-3). The model has no prior: prior samples are the plain AE's z ~ N(0, I) case, and
its generative numbers are those of the ex-post samplers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.ae import point_code
from aevae_jax.models.base import Claim, Model
from aevae_jax.nn.likelihoods import batch_mean


@dataclasses.dataclass(frozen=True)
class RAEOptions:
    embedding_weight: float = dataclasses.field(
        default=1e-6, metadata={"help": "beta, the weight of ||z||^2 / 2"}
    )
    reg_weight: float = dataclasses.field(
        default=1e-3, metadata={"help": "lambda, the weight of the decoder regulariser"}
    )

    def __post_init__(self):
        require(self.embedding_weight >= 0, "--embedding-weight must be >= 0")
        require(self.reg_weight >= 0, "--reg-weight must be >= 0")


def decoder_l2(params) -> jax.Array:
    """||theta_D||^2: the sum of squares of every decoder parameter."""
    return sum(jnp.sum(a**2) for a in jax.tree.leaves(params["decoder"]))


def jacobian_norm_estimate(decode, z: jax.Array, key: jax.Array) -> jax.Array:
    """[B] an unbiased estimate of ||d decode(z_b) / d z_b||_F^2 per example: ||J^T v||^2
    with v ~ N(0, I) over the outputs (the examples are independent, so one
    vector-Jacobian product of the batch gives every example's)."""
    out, vjp = jax.vjp(decode, z)
    v = jax.random.normal(key, out.shape, out.dtype)
    (g,) = vjp(v)
    return jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)


CLAIMS = (
    Claim(
        "gmm_sample_fd",
        "lower",
        "ae",
        "a regularised decoder makes ex-post mixture samples better than a plain AE's "
        "(Ghosh et al. 2020)",
    ),
)


def make_rae(name: str, regulariser: str):
    def make(cfg, spec, opts: RAEOptions) -> Model:
        parts = point_code(cfg, spec)

        def penalty(params, code, key):
            if regulariser == "l2":
                return decoder_l2(params)
            decode = lambda z: parts.decode(params, z)
            return batch_mean(jacobian_norm_estimate(decode, code, key))

        def loss(params, batch, key, step):
            del step
            code = parts.encode(params, batch).code
            recon = batch_mean(parts.likelihood.nll(parts.decode(params, code), batch.x))
            embedding = batch_mean(0.5 * jnp.sum(code**2, axis=-1))
            reg = penalty(params, code, key)
            value = recon + opts.embedding_weight * embedding + opts.reg_weight * reg
            return value, {"recon": recon, "embedding": embedding, "decoder_reg": reg}

        return parts.model(name, loss)

    return make


for _name, _reg, _summary in (
    ("rae_l2", "l2", "RAE-L2: an AE with small codes and an L2 penalty on the decoder's weights."),
    ("rae_gp", "gp", "RAE-GP: an AE with small codes and a decoder-Jacobian gradient penalty."),
):
    register(_name, RAEOptions, likelihood="mse", summary=_summary, claims=CLAIMS)(
        make_rae(_name, _reg)
    )
