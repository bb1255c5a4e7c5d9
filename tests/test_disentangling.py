"""The disentangling VAEs' mechanisms and losses against NumPy hand computations: the
aggregate posterior's densities and the KL decomposition behind beta-TC-VAE, the total
correlation the evaluator reports, DIP-VAE's covariance penalties, and FactorVAE's
permutation and two players."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import bernoulli_nll_by_hand, build, elbo_terms_by_hand, posterior_draw_by_hand
from scipy.special import logsumexp
from scipy.stats import norm

from aevae_jax.models.dip_vae import code_covariance, dip_penalty
from aevae_jax.models.factor_vae import permute_dims
from aevae_jax.nn.total_correlation import (
    aggregate_log_densities,
    mws_decomposition,
    total_correlation,
)


def posteriors(b=6, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    mean, log_var = rng.normal(size=(b, dim)), rng.normal(size=(b, dim)) * 0.3 - 0.5
    z = mean + np.exp(0.5 * log_var) * rng.normal(size=(b, dim))
    return z, mean, log_var


def mixture_by_hand(z, mean, log_var, log_norm):
    """(log q(z_i), sum_d log q(z_id)) by explicit sums over the mixture's components."""
    std = np.exp(0.5 * log_var)
    comp = norm.logpdf(z[:, None, :], mean[None], std[None])  # [B, M, L]
    return logsumexp(comp.sum(-1), axis=1) - log_norm, (logsumexp(comp, axis=1) - log_norm).sum(-1)


def test_aggregate_densities_match_the_mixture_by_hand():
    z, mean, log_var = posteriors()
    got = aggregate_log_densities(*(jnp.asarray(a, jnp.float32) for a in (z, mean, log_var)), 2.5)
    for g, want in zip(got, mixture_by_hand(z, mean, log_var, 2.5), strict=True):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)


def test_mws_parts_sum_to_the_monte_carlo_kl_and_tc_is_by_hand():
    z, mean, log_var = posteriors(b=8)
    d = mws_decomposition(*(jnp.asarray(a, jnp.float32) for a in (z, mean, log_var)), 1000)
    log_qz, log_qzd = mixture_by_hand(z, mean, log_var, np.log(1000 * 8))
    assert float(d["tc"]) == pytest.approx(np.mean(log_qz - log_qzd), rel=1e-4)
    log_q = norm.logpdf(z, mean, np.exp(0.5 * log_var)).sum(1)
    log_p = norm.logpdf(z).sum(1)
    total = float(d["mi"] + d["tc"] + d["dwkl"])
    assert total == pytest.approx(np.mean(log_q - log_p), rel=1e-4, abs=1e-4)


def test_total_correlation_is_near_zero_for_independent_codes_and_large_for_copies():
    rng = np.random.default_rng(1)
    n = 1500
    mean = rng.normal(size=(n, 2))
    log_var = np.full((n, 2), np.log(0.05))
    z = mean + np.sqrt(0.05) * rng.normal(size=(n, 2))
    independent = np.asarray(
        total_correlation(*(jnp.asarray(a, jnp.float32) for a in (z, mean, log_var)))
    )
    copied = np.stack([mean[:, 0], mean[:, 0]], 1)
    zc = copied + np.sqrt(0.05) * rng.normal(size=(n, 2))
    dependent = np.asarray(
        total_correlation(*(jnp.asarray(a, jnp.float32) for a in (zc, copied, log_var)))
    )
    assert independent.shape == (n,)
    assert abs(independent.mean()) < 0.1 and dependent.mean() > 1.0
    # Chunking changes nothing; the per-image values are the mixture's by hand.
    args = [jnp.asarray(a[:50], jnp.float32) for a in (z, mean, log_var)]
    a, b = total_correlation(*args, chunk=7), total_correlation(*args, chunk=50)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    log_qz, log_qzd = mixture_by_hand(z[:50], mean[:50], log_var[:50], np.log(50))
    np.testing.assert_allclose(a, log_qz - log_qzd, rtol=1e-4, atol=1e-4)


def test_beta_tc_vae_loss_by_hand_and_its_vae_corner():
    model, params, batch = build("beta_tc_vae", tc_beta=4.0, mi_alpha=0.5, dwkl_gamma=2.0,
                                 dataset_size=100)  # fmt: skip
    key = jax.random.key(3)
    value, metrics = model.loss(params, batch, key, 0)
    z, mean, log_var = posterior_draw_by_hand(model, params, batch, key)
    recon = bernoulli_nll_by_hand(model.decode(params, jnp.asarray(z, jnp.float32)), batch.x)
    log_qz, log_qzd = mixture_by_hand(z, mean, log_var, np.log(100 * 6))
    log_q = norm.logpdf(z, mean, np.exp(0.5 * log_var)).sum(1)
    log_p = norm.logpdf(z).sum(1)
    mi, tc, dwkl = (np.mean(v) for v in (log_q - log_qz, log_qz - log_qzd, log_qzd - log_p))
    assert float(metrics["tc"]) == pytest.approx(tc, rel=1e-4, abs=1e-4)
    expected = np.mean(recon) + 0.5 * mi + 4.0 * tc + 2.0 * dwkl
    assert float(value) == pytest.approx(expected, rel=1e-4)
    # alpha = beta = gamma = 1: recon + the single-sample KL estimate log q(z|x) - log p(z).
    ones, _, _ = build("beta_tc_vae", tc_beta=1.0)
    corner = float(ones.loss(params, batch, key, 0)[0])
    assert corner == pytest.approx(np.mean(recon + log_q - log_p), rel=1e-4)


@pytest.mark.parametrize("variant", ["i", "ii"])
def test_dip_vae_covariance_and_loss_by_hand(variant):
    name = f"dip_vae_{variant}"
    model, params, batch = build(name, lambda_od=3.0, lambda_d=5.0)
    key = jax.random.key(4)
    value, metrics = model.loss(params, batch, key, 0)
    q = model.encode(params, batch)
    mean, log_var = np.asarray(q.code, np.float64), np.asarray(q.log_var, np.float64)
    cov = np.cov(mean, rowvar=False, bias=True)
    if variant == "ii":
        cov = cov + np.diag(np.exp(log_var).mean(0))
    np.testing.assert_allclose(
        code_covariance(q.code, q.log_var, variant), cov, rtol=1e-4, atol=1e-6
    )
    penalty = 3.0 * (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) + 5.0 * np.sum(
        (np.diag(cov) - 1) ** 2
    )
    assert float(dip_penalty(jnp.asarray(cov), 3.0, 5.0)) == pytest.approx(penalty, rel=1e-5)
    vae, _, _ = build("vae")
    elbo = float(vae.loss(params, batch, key, 0)[0])
    assert float(value) == pytest.approx(elbo + penalty, rel=1e-4)
    assert float(metrics["dip"]) == pytest.approx(penalty, rel=1e-4)


def test_permuting_dimensions_keeps_each_marginal_and_breaks_their_dependence():
    z = jnp.stack([jnp.arange(512.0), jnp.arange(512.0)], 1)  # two copies: fully dependent
    p = np.asarray(permute_dims(jax.random.key(0), z))
    for j in range(2):
        assert sorted(p[:, j].tolist()) == list(range(512))  # each column a permutation
    assert abs(np.corrcoef(p, rowvar=False)[0, 1]) < 0.15  # of its own
    assert np.array_equal(p, np.asarray(permute_dims(jax.random.key(0), z)))


def test_factor_vae_loss_by_hand_and_its_players_gradients():
    model, params, batch = build("factor_vae", gamma=3.0, disc_hidden=8)
    key = jax.random.key(5)
    value, metrics = model.loss(params, batch, key, 0)
    k_z, k_perm = jax.random.split(key)
    recon, kl = elbo_terms_by_hand(model, params, batch, k_z)
    z, _, _ = posterior_draw_by_hand(model, params, batch, k_z)

    def logit(v):  # the discriminator's two ReLU layers and its output, by hand
        h = np.asarray(v, np.float64)
        layers = sorted(params["discriminator"])
        for i, name in enumerate(layers):
            w = params["discriminator"][name]
            h = h @ np.asarray(w["kernel"], np.float64) + np.asarray(w["bias"], np.float64)
            h = np.maximum(h, 0) if i < len(layers) - 1 else h
        return h[:, 0]

    tc = logit(z)
    d_joint, d_product = logit(z), logit(permute_dims(k_perm, jnp.asarray(z, jnp.float32)))
    disc = np.log1p(np.exp(-d_joint)) + np.log1p(np.exp(d_product))
    expected = np.mean(recon + kl + 3.0 * tc + disc)
    assert float(value) == pytest.approx(expected, rel=1e-4)
    assert float(metrics["tc_estimate"]) == pytest.approx(np.mean(tc), rel=1e-4, abs=1e-5)
    # The discriminator's loss moves only it; the TC penalty moves only the VAE.
    grads = jax.grad(lambda p: model.loss(p, batch, key, 0)[0])(params)
    no_tc, _, _ = build("factor_vae", gamma=0.0, disc_hidden=8)
    grads0 = jax.grad(lambda p: no_tc.loss(p, batch, key, 0)[0])(params)
    np.testing.assert_allclose(
        grads["discriminator"]["Dense_0"]["kernel"],
        grads0["discriminator"]["Dense_0"]["kernel"],
        rtol=1e-5,
        atol=1e-7,
    )
    enc = lambda g: np.asarray(jax.tree.leaves(g["encoder"])[0])
    assert not np.allclose(enc(grads), enc(grads0))
    # Its test objective is the VAE's -ELBO.
    vae, _, _ = build("vae")
    assert float(model.test_loss(params, batch, key, 0)[0]) == pytest.approx(
        float(vae.loss(params, batch, key, 0)[0]), rel=1e-6
    )
