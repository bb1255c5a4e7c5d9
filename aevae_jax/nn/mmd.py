"""The maximum mean discrepancy between a batch of codes and draws of the prior, with the
inverse multiquadratic kernel of the Wasserstein autoencoder (Tolstikhin et al. 2018):

    k_c(x, y) = c / (c + ||x - y||^2),   c = s * 2 * L * var,   s in SCALES,

summed over the scales (L: the code's dimension, var: the prior's variance per dimension,
1 for N(0, I)); the paper sums the same seven. MMD^2 is estimated without bias by the
U-statistic of n codes q and n prior draws p:

    MMD^2 = sum_{i != j} [k(q_i, q_j) + k(p_i, p_j)] / (n (n - 1)) - 2 sum_{i, j} k(q_i, p_j) / n^2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """[N, M] ||a_i - b_j||^2, never negative."""
    d = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2 * a @ b.T
    return jnp.maximum(d, 0.0)


def imq_kernel(a: jax.Array, b: jax.Array, var: float = 1.0, scales=SCALES) -> jax.Array:
    """[N, M] sum over scales s of c / (c + ||a_i - b_j||^2), c = 2 L var s."""
    d = squared_distances(a, b)
    base = 2.0 * a.shape[1] * var
    return sum(base * s / (base * s + d) for s in scales)


def mmd_imq(codes: jax.Array, prior: jax.Array, var: float = 1.0, scales=SCALES) -> jax.Array:
    """The unbiased estimate of MMD^2 between codes [n, L] and prior draws [n, L]."""
    n = codes.shape[0]
    off, pairs = 1.0 - jnp.eye(n), max(n * (n - 1), 1)  # one code: no pairs, no estimate
    k_qq = jnp.sum(imq_kernel(codes, codes, var, scales) * off) / pairs
    k_pp = jnp.sum(imq_kernel(prior, prior, var, scales) * off) / pairs
    k_qp = jnp.mean(imq_kernel(codes, prior, var, scales))
    return k_qq + k_pp - 2.0 * k_qp
