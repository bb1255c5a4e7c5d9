"""A small RealNVP normalising flow (Dinh et al. 2017) fitted to codes by maximum
likelihood: an ex-post density that any model with continuous codes can sample from.

The codes are standardised (their mean and standard deviation, per dimension), then
`layers` affine coupling layers map them to u ~ N(0, I). Layer l keeps the dimensions
of mask m_l (alternating halves: even, then odd positions) and moves the others:

    f(x) = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x)),   log|det df/dx| = sum (1 - m) s,

with s = scale * tanh(.) and t from one MLP of two hidden layers. So
log p(z) = log N(f(standardise(z)); 0, I) + sum of the layers' log-determinants
- sum log std, and sampling runs the layers' exact inverses from u ~ N(0, I). The fit is
Adam on minibatches, every step inside one compiled `lax.scan`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from aevae_jax.errors import require
from aevae_jax.nn.likelihoods import std_normal_log_prob


class Coupling(nn.Module):
    """s and t of one coupling layer from the kept dimensions: [N, L] -> ([N, L], [N, L])."""

    hidden: int

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(self.hidden)(x))
        h = nn.relu(nn.Dense(self.hidden)(h))
        out = nn.Dense(2 * x.shape[-1], kernel_init=nn.initializers.zeros)(h)
        s, t = jnp.split(out, 2, axis=-1)
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        return scale * jnp.tanh(s), t


class Flow(NamedTuple):
    """A fitted flow: the standardisation, the coupling layers' parameters, its width."""

    mean: jax.Array
    std: jax.Array
    params: Any  # [layers] stacked parameters of `Coupling`
    hidden: int


def masks(dim: int, layers: int) -> jax.Array:
    """[layers, dim] float masks of the kept dimensions: even positions, then odd."""
    even = (jnp.arange(dim) % 2 == 0).astype(jnp.float32)
    return jnp.stack([even if i % 2 == 0 else 1 - even for i in range(layers)])


def forward(params, x: jax.Array, hidden: int) -> tuple[jax.Array, jax.Array]:
    """(u [N, L], log|det du/dx| [N]) through every coupling layer, in order."""
    net = Coupling(hidden)

    def layer(carry, p_m):
        x, log_det = carry
        p, m = p_m
        s, t = net.apply({"params": p}, m * x)
        x = m * x + (1 - m) * (x * jnp.exp(s) + t)
        return (x, log_det + jnp.sum((1 - m) * s, axis=-1)), None

    layers = jax.tree.leaves(params)[0].shape[0]
    (u, log_det), _ = jax.lax.scan(
        layer, (x, jnp.zeros(x.shape[0])), (params, masks(x.shape[1], layers))
    )
    return u, log_det


def inverse(params, u: jax.Array, hidden: int) -> jax.Array:
    """x [N, L] with forward(x) = u: the layers' inverses, last layer first."""
    net = Coupling(hidden)

    def layer(u, p_m):
        p, m = p_m
        s, t = net.apply({"params": p}, m * u)  # the kept dimensions pass unchanged
        return m * u + (1 - m) * (u - t) * jnp.exp(-s), None

    layers = jax.tree.leaves(params)[0].shape[0]
    stacked = (params, masks(u.shape[1], layers))
    x, _ = jax.lax.scan(layer, u, jax.tree.map(lambda a: a[::-1], stacked))
    return x


def flow_log_prob(f: Flow, z: jax.Array) -> jax.Array:
    """[N]: log p(z) of the codes' space (the standardisation's Jacobian included)."""
    u, log_det = forward(f.params, (z - f.mean) / f.std, f.hidden)
    return std_normal_log_prob(u) + log_det - jnp.sum(jnp.log(f.std))


def sample_flow(f: Flow, key: jax.Array, n: int) -> jax.Array:
    """[n, L] draws: u ~ N(0, I) through the inverse flow, then un-standardised."""
    u = jax.random.normal(key, (n, f.mean.shape[0]))
    return inverse(f.params, u, f.hidden) * f.std + f.mean


def init_flow(key: jax.Array, dim: int, layers: int, hidden: int):
    keys = jax.random.split(key, layers)
    x = jnp.zeros((1, dim))
    return jax.vmap(lambda k: Coupling(hidden).init(k, x)["params"])(keys)


def fit_flow(
    codes,
    key: jax.Array,
    layers: int = 6,
    hidden: int = 64,
    steps: int = 2000,
    batch: int = 256,
    lr: float = 1e-3,
) -> tuple[Flow, jax.Array]:
    """(the fitted flow, the minibatch negative log-likelihood per step [steps], in
    nats per code of the standardised space)."""
    z = jnp.asarray(codes, jnp.float32)
    require(z.ndim == 2 and z.shape[1] >= 2, f"a flow needs codes [N, L >= 2]; got {z.shape}")
    require(layers >= 1 and hidden >= 1, "--flow-layers and --flow-hidden must be positive")
    mean, std = jnp.mean(z, axis=0), jnp.std(z, axis=0) + 1e-6
    k_init, k_fit = jax.random.split(key)
    params = init_flow(k_init, z.shape[1], layers, hidden)
    params, losses = _fit((z - mean) / std, k_fit, params, hidden, steps, batch, lr)
    return Flow(mean, std, params, hidden), losses


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _fit(x, key, params, hidden, steps, batch, lr):
    tx = optax.adam(lr)

    def nll(p, xb):
        u, log_det = forward(p, xb, hidden)
        return -jnp.mean(std_normal_log_prob(u) + log_det)

    def step(carry, k):
        p, opt = carry
        xb = x[jax.random.randint(k, (batch,), 0, x.shape[0])]
        value, grads = jax.value_and_grad(nll)(p, xb)
        updates, opt = tx.update(grads, opt, p)
        return (optax.apply_updates(p, updates), opt), value

    (params, _), losses = jax.lax.scan(
        step, (params, tx.init(params)), jax.random.split(key, steps)
    )
    return params, losses
