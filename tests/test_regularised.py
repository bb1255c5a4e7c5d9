"""The regularised autoencoders, each loss against a NumPy hand computation and each
mechanism on its own: the IMQ-kernel MMD's U-statistic (WAE-MMD, InfoVAE), the decoder's
L2 norm and the Hutchinson estimate of its Jacobian norm (RAE-L2, RAE-GP)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import bernoulli_nll_by_hand, build, posterior_draw_by_hand

from aevae_jax.errors import UserError
from aevae_jax.models.info_vae import MMD_STREAM, InfoVAEOptions
from aevae_jax.models.rae import decoder_l2, jacobian_norm_estimate
from aevae_jax.nn.mmd import SCALES, mmd_imq


def mmd_by_hand(q, p, var=1.0):
    """The unbiased MMD^2 with the multi-scale IMQ kernel, by explicit loops."""
    q, p = np.asarray(q, np.float64), np.asarray(p, np.float64)
    n, dim = q.shape

    def k(a, b):
        d = np.sum((a - b) ** 2)
        return sum(2 * dim * var * s / (2 * dim * var * s + d) for s in SCALES)

    qq = sum(k(q[i], q[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    pp = sum(k(p[i], p[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    qp = sum(k(q[i], p[j]) for i in range(n) for j in range(n)) / n**2
    return qq + pp - 2 * qp


def test_mmd_is_the_u_statistic_by_hand_and_tells_distributions_apart():
    rng = np.random.default_rng(0)
    q, p = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.5
    got = mmd_imq(jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32))
    assert float(got) == pytest.approx(mmd_by_hand(q, p), rel=1e-4)
    # Unbiased: near zero on average for two samples of one distribution, and clearly
    # positive for samples of two.
    same = [float(mmd_imq(*jax.random.normal(jax.random.key(i), (2, 64, 4)))) for i in range(40)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(40)
    shifted = jax.random.normal(jax.random.key(99), (64, 4)) + 1.0
    assert float(mmd_imq(shifted, jax.random.normal(jax.random.key(98), (64, 4)))) > 10 * np.std(
        same
    )


def test_wae_loss_is_reconstruction_plus_weighted_mmd_by_hand():
    model, params, batch = build("wae", mmd_weight=3.0)
    key = jax.random.key(5)
    value, metrics = model.loss(params, batch, key, 0)
    code = model.encode(params, batch).code
    x_hat = model.likelihood.mean(model.decode(params, code))
    recon = np.mean(np.sum((np.asarray(batch.x) - np.asarray(x_hat)) ** 2, axis=(1, 2, 3)))
    prior = jax.random.normal(key, code.shape)  # the prior's draw of the step's key
    mmd = mmd_by_hand(code, prior)
    assert float(metrics["recon"]) == pytest.approx(recon, rel=1e-5)
    assert float(metrics["mmd"]) == pytest.approx(mmd, rel=1e-4, abs=1e-6)
    assert float(value) == pytest.approx(recon + 3.0 * mmd, rel=1e-5)
    assert model.sample(params, jax.random.key(1), 4).shape == (4, 4, 4, 1)


def test_info_vae_loss_by_hand_and_its_vae_corner():
    model, params, batch = build("info_vae", alpha=0.5, info_lambda=3.0)
    key = jax.random.key(7)
    value, metrics = model.loss(params, batch, key, 0)
    z, mean, log_var = posterior_draw_by_hand(model, params, batch, key)
    recon = bernoulli_nll_by_hand(model.decode(params, jnp.asarray(z, jnp.float32)), batch.x)
    kl = 0.5 * (np.exp(log_var) + mean**2 - 1 - log_var).sum(1)
    prior = jax.random.normal(jax.random.fold_in(key, MMD_STREAM), mean.shape)
    mmd = mmd_by_hand(z, prior)
    expected = np.mean(recon + 0.5 * kl) + (0.5 + 3.0 - 1) * mmd
    assert float(value) == pytest.approx(expected, rel=1e-4)
    assert float(metrics["mmd"]) == pytest.approx(mmd, rel=1e-3, abs=1e-6)
    # alpha = 0, lambda = 1: the VAE's negative ELBO for the same key.
    vae, vae_params, _ = build("vae")
    corner, _, _ = build("info_vae", alpha=0.0, info_lambda=1.0)
    a = corner.loss(vae_params, batch, key, 0)[0]
    b = vae.loss(vae_params, batch, key, 0)[0]
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_info_vae_options_name_their_remedy():
    with pytest.raises(UserError, match="--alpha must be at most 1"):
        InfoVAEOptions(alpha=2.0)
    with pytest.raises(UserError, match="weights the MMD"):
        InfoVAEOptions(alpha=0.0, info_lambda=0.5)


def test_rae_l2_loss_by_hand():
    model, params, batch = build("rae_l2", embedding_weight=0.1, reg_weight=0.01)
    value, metrics = model.loss(params, batch, jax.random.key(0), 0)
    code = np.asarray(model.encode(params, batch).code, np.float64)
    x_hat = model.likelihood.mean(model.decode(params, jnp.asarray(code, jnp.float32)))
    recon = np.mean(np.sum((np.asarray(batch.x) - np.asarray(x_hat)) ** 2, axis=(1, 2, 3)))
    l2 = sum(np.sum(np.asarray(a, np.float64) ** 2) for a in jax.tree.leaves(params["decoder"]))
    embedding = np.mean(0.5 * np.sum(code**2, 1))
    assert float(decoder_l2(params)) == pytest.approx(l2, rel=1e-5)
    assert float(metrics["embedding"]) == pytest.approx(embedding, rel=1e-5)
    assert float(value) == pytest.approx(recon + 0.1 * embedding + 0.01 * l2, rel=1e-5)


def test_hutchinson_estimate_of_the_decoder_jacobian_norm_is_unbiased():
    model, params, batch = build("rae_gp")
    z = model.encode(params, batch).code

    def decode(v):
        return model.decode(params, v)

    jac = jax.vmap(jax.jacfwd(lambda v: decode(v[None])[0]))(z)  # [B, H, W, C, L]
    exact = np.sum(np.asarray(jac, np.float64) ** 2, axis=(1, 2, 3, 4))
    keys = jax.random.split(jax.random.key(0), 400)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: jacobian_norm_estimate(decode, z, k)))(keys))
    mean, se = np.mean(draws, 0), np.std(draws, 0) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) < 4 * se + 1e-6), (mean, exact)
    # The model's penalty is that estimate, drawn from the step's key.
    _, metrics = model.loss(params, batch, jax.random.key(3), 0)
    est = np.mean(np.asarray(jacobian_norm_estimate(decode, z, jax.random.key(3))))
    assert float(metrics["decoder_reg"]) == pytest.approx(est, rel=1e-5)
