"""The aggregate posterior's densities from a set of diagonal-Gaussian posteriors, and the
decomposition of the KL term they give (Chen et al. 2018, "Isolating sources of
disentanglement"):

    E_x KL(q(z|x) || p(z)) = I(x; z) + TC(q(z)) + sum_d KL(q(z_d) || p(z_d)),
    I = E[log q(z|x) - log q(z)],  TC = E[log q(z) - sum_d log q(z_d)],
    dimension-wise KL = E[sum_d log q(z_d) - log p(z_d)].

q(z) is the mixture of the posteriors of M images standing for a data set of N:
log q(z_i) = logsumexp_j log q(z_i | x_j) - log(N M), and likewise per dimension for
q(z_id) (minibatch-weighted sampling, MWS). N only shifts the estimates by constants:
it moves the reported numbers, never the gradients. With M = N the images themselves
(an evaluation over a whole split), N M is replaced by N: the exact mixture.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def pairwise_log_q(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """[B, M, L]: log N(z_id; mean_jd, exp(log_var_jd)) for codes z [B, L] and the
    posteriors (mean, log_var) [M, L]."""
    diff = z[:, None, :] - mean[None]
    return -0.5 * (math.log(2 * math.pi) + log_var[None] + diff**2 * jnp.exp(-log_var[None]))


def aggregate_log_densities(z, mean, log_var, log_norm: float) -> tuple[jax.Array, jax.Array]:
    """(log q(z_i) [B], sum_d log q(z_id) [B]) under the mixture of the M posteriors, each
    sum divided by exp(log_norm) (log(N M) for MWS, log M for the exact mixture)."""
    pairs = pairwise_log_q(z, mean, log_var)  # [B, M, L]
    log_qz = jax.nn.logsumexp(jnp.sum(pairs, -1), axis=1) - log_norm
    log_qzd = jnp.sum(jax.nn.logsumexp(pairs, axis=1) - log_norm, axis=-1)
    return log_qz, log_qzd


def mws_decomposition(z, mean, log_var, dataset_size: int) -> dict[str, jax.Array]:
    """The minibatch-weighted estimates of the KL's three parts over a batch whose codes z
    [B, L] were drawn from its own posteriors (mean, log_var) [B, L], and p(z) = N(0, I):
    {"mi", "tc", "dwkl"}, each a batch mean."""
    b = z.shape[0]
    log_qz, log_qzd = aggregate_log_densities(z, mean, log_var, math.log(dataset_size * b))
    log_qz_x = jnp.sum(
        -0.5 * (math.log(2 * math.pi) + log_var + (z - mean) ** 2 * jnp.exp(-log_var)), -1
    )
    log_pz = jnp.sum(-0.5 * (math.log(2 * math.pi) + z**2), -1)
    return {
        "mi": jnp.mean(log_qz_x - log_qz),
        "tc": jnp.mean(log_qz - log_qzd),
        "dwkl": jnp.mean(log_qzd - log_pz),
    }


def total_correlation(z, mean, log_var, chunk: int = 250) -> jax.Array:
    """[N] per code, log q(z_i) - sum_d log q(z_id) under the exact mixture of the N
    posteriors (mean, log_var) [N, L], at codes z [N, L] drawn from them; its mean is
    TC(q(z)) in nats. Computed in chunks of codes: memory O(chunk N L)."""
    n = z.shape[0]
    pad = (-n) % chunk
    zc = jnp.pad(z, ((0, pad), (0, 0))).reshape(-1, chunk, z.shape[1])
    log_norm = math.log(n)

    def one(block):
        log_qz, log_qzd = aggregate_log_densities(block, mean, log_var, log_norm)
        return log_qz - log_qzd

    return jax.lax.map(one, zc).reshape(-1)[:n]
