"""Metric formulas against hand computations and exact answers: the aggregate
posterior's distance to N(0, I), codebook usage, and the uncertainty of a difference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aevae_jax.evaluate import metrics as M
from aevae_jax.evaluate.split import SplitMap


def test_prior_frechet_distance_of_a_diagonal_gaussian_by_hand():
    # Codes ~ N(mu, diag(s^2)) exactly (moments fixed by construction): FD to N(0, I) is
    # |mu|^2 + sum (s - 1)^2 for diagonal covariances.
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20_000, 3))
    z = (z - z.mean(0)) / z.std(0)  # exact zero mean, unit (biased) variance
    mu, s = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 1.0])
    codes = z * s + mu
    cov = np.cov(codes, rowvar=False, bias=True)
    assert np.allclose(cov, np.diag(s**2), atol=0.03)
    want = np.sum(mu**2) + np.trace(cov + np.eye(3) - 2 * _sqrtm(cov))
    assert M.prior_frechet_distance(codes) == pytest.approx(want, rel=1e-6)
    assert M.prior_frechet_distance(codes) == pytest.approx(
        np.sum(mu**2) + np.sum((s - 1) ** 2), abs=0.05
    )


def _sqrtm(a):
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(w)) @ v.T


def test_aggregate_posterior_adds_the_mean_posterior_variance():
    # q(z|x) = N(m_x, v) with m_x = +-1 equally often: q(z) has variance 1 + v.
    means = np.array([[1.0], [-1.0]] * 500)
    log_var = np.full_like(means, math.log(0.25))
    mu, cov = M.aggregate_posterior_moments(means, log_var)
    assert mu[0] == pytest.approx(0.0) and cov[0, 0] == pytest.approx(1.25)
    # A VAE whose posterior equals the prior on average is at distance zero.
    assert M.prior_frechet_distance(np.zeros((100, 2)), np.zeros((100, 2))) == pytest.approx(
        0.0, abs=1e-9
    )


def test_codebook_usage_by_hand():
    idx = np.array([[0, 0, 1, 1], [2, 2, 2, 2]])  # p = (1/4, 1/4, 1/2, 0, ...)
    out = M.codebook_usage(idx, 6)
    h = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    assert out["perplexity"] == pytest.approx(math.exp(h))
    assert out["dead_codes"] == 3 and out["num_codes"] == 6
    assert M.codebook_usage(np.zeros(10, int), 4)["perplexity"] == pytest.approx(1.0)
    assert M.codebook_usage(np.arange(8), 8)["perplexity"] == pytest.approx(8.0)


def test_paired_bootstrap_finds_real_differences_and_not_noise():
    rng = np.random.default_rng(1)
    base = rng.normal(10, 5, 2000)  # large per-image spread, shared by both models
    better = base - 0.2 + rng.normal(0, 0.1, 2000)  # a small, consistent improvement
    out = M.paired_bootstrap(better, base)
    assert out["hi"] < 0 and out["lo"] < out["diff"] < out["hi"]
    same = base + rng.normal(0, 0.1, 2000)
    tie = M.paired_bootstrap(same, base)
    assert tie["lo"] < 0 < tie["hi"]
    # Unpaired, the same 0.2 would drown in the 5-unit spread of the images: the pairing
    # is what makes the interval narrow.
    assert out["hi"] - out["lo"] < 0.05


def test_binomial_standard_error_and_bootstrap_se():
    assert M.binomial_se(0.5, 100) == pytest.approx(0.05)
    assert M.binomial_se(0.0, 100) == 0.0
    x = np.random.default_rng(0).normal(0, 2, 4000)
    se = M.bootstrap_se(lambda idx: float(x[idx].mean()), len(x), n_boot=200)
    assert se == pytest.approx(2 / math.sqrt(4000), rel=0.2)


def test_split_map_is_independent_of_blocks_and_chunks():
    x = jnp.arange(23.0)
    fn = lambda ctx, xi, i: xi * ctx + jax.random.uniform(jax.random.fold_in(jax.random.key(0), i))
    whole = SplitMap(fn, chunk=23)(2.0, (x,))
    blocked = SplitMap(fn, chunk=3, block=5)(2.0, (x,))
    assert whole.shape == (23,)
    np.testing.assert_allclose(whole, blocked, rtol=1e-6)
