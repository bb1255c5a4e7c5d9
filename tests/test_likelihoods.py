"""Every formula against a hand computation, SciPy, or a Monte-Carlo estimate."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from aevae_jax.nn import likelihoods as L


def test_bernoulli_log_prob_matches_hand_computation():
    logits = jnp.array([-2.0, 0.0, 3.0])
    x = jnp.array([1.0, 0.0, 0.25])
    s = 1 / (1 + np.exp(-np.array([-2.0, 0.0, 3.0])))
    expected = np.array([1.0, 0.0, 0.25]) * np.log(s) + (1 - np.array([1.0, 0.0, 0.25])) * np.log(
        1 - s
    )
    np.testing.assert_allclose(L.bernoulli_log_prob(logits, x), expected, rtol=1e-6)


def test_bernoulli_log_prob_is_stable_for_extreme_logits():
    logits = jnp.array([-200.0, 200.0, -200.0, 200.0])
    x = jnp.array([0.0, 1.0, 1.0, 0.0])
    out = np.asarray(L.bernoulli_log_prob(logits, x))
    np.testing.assert_allclose(out, [0.0, 0.0, -200.0, -200.0], atol=1e-5)
    assert np.all(np.isfinite(out))


def test_gaussian_log_prob_matches_scipy():
    x, mean, log_scale = 0.3, 0.7, math.log(0.2)
    got = float(L.gaussian_log_prob(jnp.array(mean), jnp.array(x), log_scale))
    assert got == pytest.approx(stats.norm(mean, 0.2).logpdf(x), rel=1e-6)


def test_diag_gaussian_and_std_normal_log_prob_match_scipy():
    rng = np.random.default_rng(0)
    z, mean, log_var = rng.normal(size=(3, 4))
    cov = np.diag(np.exp(log_var))
    want = stats.multivariate_normal(mean, cov).logpdf(z)
    assert float(L.diag_gaussian_log_prob(z, mean, log_var)) == pytest.approx(want, rel=1e-5)
    want0 = stats.multivariate_normal(np.zeros(4), np.eye(4)).logpdf(z)
    assert float(L.std_normal_log_prob(jnp.asarray(z))) == pytest.approx(want0, rel=1e-5)


def test_kl_matches_closed_form_by_hand():
    # KL(N(1, 4) || N(0, 1)) = 0.5 * (4 + 1 - 1 - ln 4)
    got = float(L.kl_to_std_normal(jnp.array(1.0), jnp.array(math.log(4.0))))
    assert got == pytest.approx(0.5 * (4 + 1 - 1 - math.log(4)), rel=1e-6)
    assert float(L.kl_to_std_normal(jnp.array(0.0), jnp.array(0.0))) == 0.0


def test_kl_matches_monte_carlo_estimate():
    mean = jnp.array([0.5, -1.0, 2.0])
    log_var = jnp.array([0.0, -1.5, 0.7])
    n = 400_000
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(jax.random.key(0), (n, 3))
    log_ratio = L.diag_gaussian_log_prob(z, mean, log_var) - L.std_normal_log_prob(z)
    mc, se = float(jnp.mean(log_ratio)), float(jnp.std(log_ratio)) / math.sqrt(n)
    exact = float(jnp.sum(L.kl_to_std_normal(mean, log_var)))
    assert abs(mc - exact) < 4 * se + 1e-3


def test_log_mean_exp_is_stable_and_exact():
    a = jnp.array([[1000.0, 1000.0], [1000.0 + math.log(3.0), 1000.0]])
    got = np.asarray(L.log_mean_exp(a, axis=0))
    np.testing.assert_allclose(got, [1000.0 + math.log(2.0), 1000.0], rtol=1e-6)


def test_reduction_is_sum_over_pixels_mean_over_batch():
    x = jnp.arange(2 * 2 * 2 * 1, dtype=jnp.float32).reshape(2, 2, 2, 1) / 8
    per_example = L.sum_per_example(x)
    np.testing.assert_allclose(per_example, [(0 + 1 + 2 + 3) / 8, (4 + 5 + 6 + 7) / 8])
    assert float(L.batch_mean(per_example)) == pytest.approx(28 / 8 / 2)


def test_mse_is_the_articles_squared_error_through_sigmoid():
    logits = jnp.array([[[[0.0], [2.0]]]])  # [1, 1, 2, 1]
    x = jnp.array([[[[1.0], [0.0]]]])
    s = 1 / (1 + math.exp(-2.0))
    want = (1 - 0.5) ** 2 + (0 - s) ** 2
    assert float(L.get_likelihood("mse").nll(logits, x)[0]) == pytest.approx(want, rel=1e-6)


def test_unknown_likelihood_names_the_choices():
    with pytest.raises(L.UserError, match="bernoulli"):
        L.get_likelihood("poisson")
