"""A Gaussian mixture fitted to codes by expectation-maximisation, in JAX: the ex-post
density of Ghosh et al. 2020 (RAE), usable by any model with continuous codes.

p(z) = sum_k w_k N(z; m_k, S_k), full covariances. EM from means at k distinct codes
drawn with the key, every covariance at the codes' covariance, equal weights; each
iteration is one E-step (responsibilities r_nk proportional to w_k N(z_n; m_k, S_k))
and one M-step (w_k = N_k / N, m_k = sum_n r_nk z_n / N_k, S_k = the responsibility-
weighted covariance + ridge I, with N_k = sum_n r_nk). The ridge, a fraction of the codes'
mean variance, keeps every S_k positive definite (a component that collapses onto a few
codes otherwise has a singular covariance). The whole fit is one compiled `lax.scan`.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from aevae_jax.errors import require


class GMM(NamedTuple):
    """weights [K], means [K, L], chols [K, L, L] (lower Cholesky factors of the S_k)."""

    weights: jax.Array
    means: jax.Array
    chols: jax.Array


def component_log_probs(g: GMM, z: jax.Array) -> jax.Array:
    """[N, K]: log w_k + log N(z_n; m_k, S_k)."""
    diff = z[:, None, :] - g.means[None]  # [N, K, L]
    white = jax.vmap(lambda c, d: solve_triangular(c, d.T, lower=True).T, (0, 1), 1)(
        g.chols, diff
    )  # [N, K, L]
    log_det = jnp.sum(jnp.log(jnp.diagonal(g.chols, axis1=1, axis2=2)), axis=1)  # [K]
    dim = z.shape[1]
    log_norm = -0.5 * jnp.sum(white**2, -1) - log_det - 0.5 * dim * math.log(2 * math.pi)
    return jnp.log(g.weights) + log_norm


def gmm_log_prob(g: GMM, z: jax.Array) -> jax.Array:
    """[N]: log p(z_n) under the mixture."""
    return jax.nn.logsumexp(component_log_probs(g, z), axis=1)


def responsibilities(g: GMM, z: jax.Array) -> jax.Array:
    """[N, K]: the E-step's posterior p(k | z_n)."""
    return jax.nn.softmax(component_log_probs(g, z), axis=1)


def m_step(z: jax.Array, resp: jax.Array, ridge: float) -> GMM:
    """The mixture that maximises the expected log-likelihood under `resp` (ridge added)."""
    nk = jnp.sum(resp, axis=0) + 1e-10  # [K]; a component with no mass stays finite
    means = (resp.T @ z) / nk[:, None]
    diff = z[:, None, :] - means[None]  # [N, K, L]
    cov = jnp.einsum("nk,nki,nkj->kij", resp, diff, diff) / nk[:, None, None]
    cov = cov + ridge * jnp.eye(z.shape[1])
    return GMM(nk / jnp.sum(nk), means, jnp.linalg.cholesky(cov))


def initial_gmm(z: jax.Array, key: jax.Array, k: int, ridge: float) -> GMM:
    """Means at k distinct codes, covariances at the codes' own, equal weights."""
    means = z[jax.random.choice(key, z.shape[0], (k,), replace=False)]
    cov = jnp.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1])
    chol = jnp.linalg.cholesky(cov + ridge * jnp.eye(z.shape[1]))
    return GMM(jnp.full(k, 1.0 / k), means, jnp.broadcast_to(chol, (k, *chol.shape)))


def fit_gmm(
    codes, key: jax.Array, components: int = 10, iterations: int = 100, ridge: float = 1e-4
) -> tuple[GMM, jax.Array]:
    """(the fitted mixture, the mean log-likelihood of the codes before each M-step
    [iterations]: non-decreasing, as EM guarantees, up to the ridge). `ridge` is a
    fraction of the codes' mean variance."""
    z = jnp.asarray(codes, jnp.float32)
    require(z.ndim == 2, f"a mixture is fitted to codes [N, L]; got shape {z.shape}")
    require(components >= 1, f"--gmm-components must be at least 1, got {components}")
    require(
        z.shape[0] >= components,
        f"{components} mixture components need at least as many codes; got {z.shape[0]}",
    )
    return _fit(z, key, components, iterations, ridge)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _fit(z, key, components, iterations, ridge):
    ridge_abs = ridge * jnp.mean(jnp.var(z, axis=0)) + 1e-12

    def step(g, _):
        log_p = component_log_probs(g, z)
        resp = jax.nn.softmax(log_p, axis=1)
        return m_step(z, resp, ridge_abs), jnp.mean(jax.nn.logsumexp(log_p, axis=1))

    return jax.lax.scan(step, initial_gmm(z, key, components, ridge_abs), None, iterations)


def sample_gmm(g: GMM, key: jax.Array, n: int) -> jax.Array:
    """[n, L] draws: a component by its weight, then its Gaussian."""
    k_c, k_e = jax.random.split(key)
    c = jax.random.categorical(k_c, jnp.log(g.weights), shape=(n,))
    eps = jax.random.normal(k_e, (n, g.means.shape[1]))
    return g.means[c] + jnp.einsum("nij,nj->ni", g.chols[c], eps)
