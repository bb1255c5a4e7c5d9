"""Normalising flows on a posterior's draws: z_0 ~ N(mean, diag(var)), then
z_K = f_K(... f_1(z_0)) and log q(z_K | x) = log N(z_0) - sum_k log |det df_k / dz|.

- Planar flows (Rezende & Mohamed 2015): f(z) = z + u_hat tanh(w . z + b), with
  log |det| = log |1 + u_hat . (1 - tanh^2(w . z + b)) w|; u_hat = u + (m(w . u) - w . u)
  w / |w|^2, m(a) = -1 + softplus(a), keeps w . u_hat >= -1, so each f is invertible.
  The parameters (u, w, b) of every step are amortised: the encoder gives them per image.
- Inverse autoregressive flows (Kingma et al. 2016): (m, s) = MADE(z, h) with output d
  seeing z_<d and the encoder's context h; sigma = sigmoid(s), f(z) = sigma z +
  (1 - sigma) m, log |det| = sum log sigma; the order of z is reversed between steps.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.nn.masked import autoregressive_masks, masked_dense

# ------------------------------------------------------------------ planar


def planar_params_size(dims: int, steps: int) -> int:
    """Numbers per image that `steps` planar steps on `dims` dimensions take: u, w, b."""
    return steps * (2 * dims + 1)


def planar_step(z: jax.Array, u: jax.Array, w: jax.Array, b: jax.Array):
    """One invertible planar step on z [B, L] with u, w [B, L], b [B]: (f(z), log |det|)."""
    wu = jnp.sum(w * u, axis=-1, keepdims=True)
    u_hat = u + (jax.nn.softplus(wu) - 1.0 - wu) * w / (jnp.sum(w * w, -1, keepdims=True) + 1e-8)
    a = jnp.tanh(jnp.sum(w * z, axis=-1) + b)  # [B]
    psi = (1.0 - a**2)[:, None] * w
    log_det = jnp.log(jnp.abs(1.0 + jnp.sum(u_hat * psi, axis=-1)) + 1e-8)
    return z + u_hat * a[:, None], log_det


def planar_flow(z: jax.Array, flat: jax.Array, steps: int):
    """z [B, L] through `steps` planar steps whose parameters are `flat` [B, steps (2L +
    1)]: (z_K, summed log |det| [B])."""
    dims = z.shape[-1]
    per_step = flat.reshape(flat.shape[0], steps, 2 * dims + 1)
    total = jnp.zeros(z.shape[0], z.dtype)
    for k in range(steps):
        u, w, b = per_step[:, k, :dims], per_step[:, k, dims:-1], per_step[:, k, -1]
        z, log_det = planar_step(z, u, w, b)
        total = total + log_det
    return z, total


# ------------------------------------------------------------------ inverse autoregressive


class IAFStep(nn.Module):
    """(m, s) [B, L] of one IAF step: a two-hidden-layer MADE on z [B, L] (natural order)
    with the context h [B, C] added to its first hidden layer and to its outputs. s starts near +2
    (sigma ~ 0.88), so each step begins close to the identity (Kingma et al. 2016)."""

    hidden: int

    @nn.compact
    def __call__(self, z: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        dims = z.shape[-1]
        m1, m2, m3 = autoregressive_masks(np.arange(1, dims + 1), self.hidden)
        a = masked_dense(self, "hidden_0", z, m1) + nn.Dense(self.hidden, name="context")(h)
        a = nn.elu(a)
        a = nn.elu(masked_dense(self, "hidden_1", a, m2))
        # The context reaches every output directly, the first one (which sees no z) too.
        m = masked_dense(self, "shift", a, m3) + nn.Dense(dims, name="context_shift")(h)
        s = masked_dense(self, "gate", a, m3) + nn.Dense(dims, name="context_gate")(h) + 2.0
        return m, s


class IAF(nn.Module):
    """`steps` IAF steps, the order of z reversed between them: (z_K, summed log |det|)."""

    steps: int
    hidden: int

    @nn.compact
    def __call__(self, z: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        total = jnp.zeros(z.shape[0], z.dtype)
        for k in range(self.steps):
            if k > 0:
                z = z[:, ::-1]
            m, s = IAFStep(self.hidden, name=f"step_{k}")(z, h)
            sigma = jax.nn.sigmoid(s)
            z = sigma * z + (1.0 - sigma) * m
            total = total + jnp.sum(jax.nn.log_sigmoid(s), axis=-1)
        if self.steps % 2 == 0 and self.steps > 0:
            z = z[:, ::-1]  # back to the decoder's order
        return z, total
