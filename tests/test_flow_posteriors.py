"""Flow posteriors: each step's log-determinant against a brute-force Jacobian, the IAF's
autoregressive structure, planar invertibility, and the planar and IAF VAEs' ELBO
against a hand computation from its parts (base Gaussian, flow, prior, Bernoulli)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import bernoulli_nll_by_hand, build

from aevae_jax.errors import UserError
from aevae_jax.models.flow_vae import IAFOptions, PlanarOptions
from aevae_jax.nn.posterior_flows import IAF, IAFStep, planar_flow, planar_step


def log_det_by_jacobian(f, z):
    """[B] log |det df/dz| of a map f: [L] -> [L], from its full Jacobian per example."""
    jac = jax.vmap(jax.jacfwd(f))(z)
    return np.linalg.slogdet(np.asarray(jac, np.float64))[1]


def test_planar_log_det_is_the_jacobians_and_steps_stay_invertible():
    key = jax.random.split(jax.random.key(0), 4)
    z = jax.random.normal(key[0], (5, 3))
    # u anti-parallel to w (w . u < -1): the u_hat correction keeps the step invertible.
    w = jax.random.normal(key[1], (5, 3))
    u = -3.0 * w
    b = jax.random.normal(key[2], (5,))
    _, log_det = planar_step(z, u, w, b)

    def one(zi, ui, wi, bi):
        return planar_step(zi[None], ui[None], wi[None], bi[None])[0][0]

    jac = jax.vmap(jax.jacfwd(one))(z, u, w, b)
    exact = np.linalg.slogdet(np.asarray(jac, np.float64))
    assert np.all(exact[0] > 0)  # det > 0 everywhere: orientation kept, never singular
    np.testing.assert_allclose(log_det, exact[1], rtol=1e-4, atol=1e-5)
    # Several amortised steps: the sum of their log-determinants.
    flat = jax.random.normal(key[3], (5, 4 * 7))
    z4, total = planar_flow(z, flat, 4)
    exact4 = [
        log_det_by_jacobian(lambda v, f=f: planar_flow(v[None], f[None], 4)[0][0], z[i : i + 1])
        for i, f in enumerate(flat)
    ]
    np.testing.assert_allclose(total, np.concatenate(exact4), rtol=1e-4, atol=1e-5)
    assert z4.shape == z.shape


def test_iaf_step_is_autoregressive_and_its_log_det_is_the_jacobians():
    z = jax.random.normal(jax.random.key(1), (4, 5))
    h = jax.random.normal(jax.random.key(2), (4, 3))
    step = IAFStep(16)
    params = step.init(jax.random.key(3), z, h)
    # Output d (shift and gate) depends on z_<d only: its Jacobian is strictly lower.
    for out in (0, 1):
        one = jax.jacfwd(lambda v, c, o=out: step.apply(params, v[None], c[None])[o][0])
        jac = np.asarray(jax.vmap(one)(z, h))  # [B, L, L]
        assert np.all(np.triu(jac) == 0) and np.any(np.tril(jac, -1) != 0)
    # Every output, the first (which sees no z) too, depends on the encoder's context.
    for out in (0, 1):
        one = jax.jacfwd(lambda c, v, o=out: step.apply(params, v[None], c[None])[o][0])
        assert np.all(np.abs(np.asarray(jax.vmap(one)(h, z))).sum(-1) > 0)
    iaf = IAF(3, 16)
    p = iaf.init(jax.random.key(4), z, h)
    out, log_det = iaf.apply(p, z, h)
    rows = [log_det_by_jacobian(lambda v, c=c: iaf.apply(p, v[None], c[None])[0][0], z[i : i + 1])
            for i, c in enumerate(h)]  # fmt: skip
    np.testing.assert_allclose(log_det, np.concatenate(rows), rtol=1e-4, atol=1e-5)
    assert out.shape == z.shape


@pytest.mark.parametrize(
    "name,options",
    [("planar_vae", {"flow_length": 3}), ("iaf_vae", {"iaf_steps": 2, "iaf_hidden": 8})],
)
def test_flow_vae_elbo_by_hand(name, options):
    model, params, batch = build(name, **options)
    key = jax.random.key(6)
    loss, metrics = model.loss(params, batch, key, 0)
    # By hand: z0 from the key's noise, the flow, then each log-density in float64.
    parts = model.init.__self__  # the FlowPosterior whose methods the Model holds
    h = np.asarray(parts.net.encoder(params, batch.x), np.float64)
    dims = 3
    mean, log_var, context = h[:, :dims], h[:, dims : 2 * dims], h[:, 2 * dims :]
    eps = np.asarray(jax.random.normal(key, (1, 6, dims)), np.float64)[0]
    z0 = mean + np.exp(0.5 * log_var) * eps
    flow = parts.flow
    z, _ = flow(params, jnp.asarray(z0, jnp.float32), jnp.asarray(context, jnp.float32))
    log_det = np.concatenate([
        log_det_by_jacobian(lambda v, c=c: flow(params, v[None], c[None])[0][0],
                            jnp.asarray(z0[i : i + 1], jnp.float32))
        for i, c in enumerate(jnp.asarray(context, jnp.float32))])  # fmt: skip
    log_q = (-0.5 * (np.log(2 * np.pi) + log_var + (z0 - mean) ** 2 / np.exp(log_var))).sum(1)
    log_q -= log_det
    z = np.asarray(z, np.float64)
    log_p = (-0.5 * (np.log(2 * np.pi) + z**2)).sum(1)
    recon = bernoulli_nll_by_hand(model.decode(params, jnp.asarray(z, jnp.float32)), batch.x)
    assert float(metrics["recon"]) == pytest.approx(recon.mean(), rel=1e-4)
    assert float(metrics["kl"]) == pytest.approx((log_q - log_p).mean(), rel=1e-3, abs=1e-4)
    assert float(loss) == pytest.approx((recon + log_q - log_p).mean(), rel=1e-4)
    # The importance weights at K = 1 are this bound; the posterior's draw is its z.
    log_w = model.log_importance_weights(params, batch, key, 1)[0]
    np.testing.assert_allclose(-log_w, recon + log_q - log_p, rtol=1e-4)
    z_post, log_q_post = model.posterior(params, batch, key)
    np.testing.assert_allclose(z_post, z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_q_post, log_q, rtol=1e-4, atol=1e-4)


def test_flow_options_name_their_remedy():
    with pytest.raises(UserError, match="--flow-length must be at least 1"):
        PlanarOptions(flow_length=0)
    with pytest.raises(UserError, match="--iaf-steps must be at least 1"):
        IAFOptions(iaf_steps=0)
