"""Property-based tests (hypothesis) of the likelihoods, the KL, the importance weights and
the reductions, over generated values rather than a few hand-picked ones:

- every likelihood's per-pixel NLL, per-example NLL and gradient are finite for any
  logits with |logit| <= 1e30 (float32) and any 8-bit target; the NLL of each pmf
  (Bernoulli, discretised logistic) is >= 0 and the pmf sums to one over its support;
  MSE lies in [0, 1]; the Gaussian NLL is bounded below by its density's peak;
- the Gaussian log-densities of reparameterised draws are finite for log-variances in
  [-30, 30] and |mean| <= 1e4 (the code states no range; exp(+-30) is far inside
  float32), agree with each other and peak at the mean;
- KL(N(mean, exp(log_var)) || N(0, 1)), for |mean| <= 1e3 and log_var in [-30, 30], is
  >= 0, 0 at the prior, > 0 wherever the exact (float64) KL exceeds 1e-12, and within
  float32 rounding of the float64 formula, near the prior too;
- log_mean_exp equals a float64 log-sum-exp and is finite for |a| up to the float32 maximum;
- the K-sample IWAE bound of log-normal weights (exact log p = mu + sigma^2 / 2) does not
  decrease with K on average, rises strictly for sigma >= 0.5 and stays below log p;
  it is the log-mean-exp of its own weights for any sample chunk;
- reductions do not depend on how a split is cut: per-example NLLs and KLs, batch means and
  kl_per_dimension of a batch agree with those of its two parts; map_examples, SplitMap and
  make_epoch_test give the same values for chunks of 1, 7 and 1000.

Every function is compiled once (fixed shapes, varying values); the settings are
derandomized and use no example database, so a run is the same everywhere.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import logsumexp

from aevae_jax.config import ModelConfig
from aevae_jax.data.spec import DataSpec
from aevae_jax.evaluate import metrics as M
from aevae_jax.evaluate import scores, split
from aevae_jax.models import Batch, make_model
from aevae_jax.nn import likelihoods as L

EPS = float(np.finfo(np.float32).eps)
F32_MAX = float(np.finfo(np.float32).max)
NAMES = tuple(L.LIKELIHOODS)


def props(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None)


def floats(lo: float, hi: float):
    """float32 values in [lo, hi] (bounds rounded to float32)."""
    return st.floats(float(np.float32(lo)), float(np.float32(hi)), width=32)


def arrays(shape, elements, dtype=np.float32):
    return hnp.arrays(dtype, shape, elements=elements)


def levels(shape):
    """8-bit targets k / 255 (0 and 1 included), as the likelihoods see them."""
    return arrays(shape, st.integers(0, 255), np.uint8).map(lambda a: a / np.float32(255))


seeds = st.integers(0, 2**31 - 1)

# ------------------------------------------------------------ likelihoods


@functools.partial(jax.jit, static_argnames="name")
def nll_terms(name, logits, x):
    lik = L.get_likelihood(name)
    logits = logits[..., : lik.channels]
    grad = jax.grad(lambda lg: jnp.sum(lik.nll_pixels(lg, x)))(logits)
    return lik.nll_pixels(logits, x), lik.nll(logits, x), grad


@pytest.mark.parametrize("name", NAMES)
@props(60)
@given(logits=arrays((2, 3, 3, 2), floats(-1e30, 1e30)), x=levels((2, 3, 3, 1)))
def test_nll_and_its_gradient_are_finite_and_in_range_for_extreme_logits(name, logits, x):
    pixels, per_example, grad = map(np.asarray, nll_terms(name, logits, x))
    assert np.isfinite(pixels).all() and np.isfinite(per_example).all()
    assert np.isfinite(grad).all()
    if name in ("bernoulli", "logistic"):  # probability mass functions: log P <= 0
        assert (pixels >= 0).all()
    elif name == "mse":
        assert ((pixels >= 0) & (pixels <= 1)).all()
    else:  # N(x | mean, 0.1^2) <= 1 / (0.1 sqrt(2 pi))
        assert (pixels >= L.GAUSSIAN_LOG_SCALE + 0.5 * math.log(2 * math.pi) - 1e-6).all()


@jax.jit
def pmf_totals(logits, params):
    """Total mass of Bernoulli(sigmoid(logits)) over {0, 1} and of the discretised
    logistic (location, log-scale = params[0], params[1]) over the 256 levels."""
    bern = jnp.exp(L.bernoulli_log_prob(logits, 0.0)) + jnp.exp(L.bernoulli_log_prob(logits, 1.0))
    x = jnp.arange(256, dtype=jnp.float32)[:, None] / 255
    logits_2 = jnp.broadcast_to(params.reshape(1, -1), (256, params.size))
    logistic = jnp.exp(-L.get_likelihood("logistic").nll_pixels(logits_2, x)).sum(axis=0)
    return bern, logistic


@props(60)
@given(logits=arrays((8,), floats(-1e30, 1e30)), params=arrays((2,), floats(-1e4, 1e4)))
@example(logits=np.full(8, 9.0, np.float32), params=np.zeros(2, np.float32))
@example(logits=np.full(8, 8.000519, np.float32), params=np.zeros(2, np.float32))
def test_pmfs_sum_to_one_for_any_parameters(logits, params):
    bern, logistic = pmf_totals(logits, params)
    # log p(x=1) = l - softplus(l) cancels for logits of about 4 to 16: softplus(l) is
    # rounded to half an ulp of l, so the mass is 1 to within 4 eps (the largest deviation
    # over a grid of 2e6 logits in [-40, 40] is 4.0 eps, at l = 8.0005; at l = 9, 3 eps).
    np.testing.assert_allclose(bern, 1.0, atol=4 * EPS)
    np.testing.assert_allclose(logistic, 1.0, atol=1e-5)  # 256 float32 terms


@jax.jit
def gaussian_terms(key, mean, log_var):
    z = L.reparameterize(key, mean, log_var)
    by_diag = L.diag_gaussian_log_prob(z, mean, log_var)
    by_scale = jnp.sum(L.gaussian_log_prob(mean, z, 0.5 * log_var), axis=-1)
    peak = L.diag_gaussian_log_prob(mean, mean, log_var)
    return by_diag, by_scale, peak, L.std_normal_log_prob(z)


@props(80)
@given(seed=seeds, mean=arrays((4, 6), floats(-1e4, 1e4)), log_var=arrays((4, 6), floats(-30, 30)))
def test_gaussian_log_densities_are_finite_for_extreme_log_variances(seed, mean, log_var):
    by_diag, by_scale, peak, prior = map(
        np.asarray, gaussian_terms(jax.random.key(seed), mean, log_var)
    )
    assert np.isfinite(by_diag).all() and np.isfinite(by_scale).all() and np.isfinite(prior).all()
    scale = np.sum(np.abs(log_var) + 2.0, axis=-1) + np.abs(by_diag)  # magnitude of the terms
    np.testing.assert_array_less(np.abs(by_diag - by_scale), 1e-5 * scale)
    assert (by_diag <= peak + 1e-5 * scale).all()


# ------------------------------------------------------------ KL


def near_zero_or(lo: float, hi: float):
    """Values near 0 (where the KL cancels) as often as values across [lo, hi]."""
    return st.one_of(floats(-1e-3, 1e-3), floats(lo, hi))


kl = jax.jit(L.kl_to_std_normal)


@props(150)
@given(
    mean=arrays((16,), near_zero_or(-1e3, 1e3)),
    log_var=arrays((16,), near_zero_or(-30, 30)),
)
def test_kl_is_nonnegative_zero_only_at_the_prior_and_matches_float64(mean, log_var):
    got = np.asarray(kl(mean, log_var), np.float64)
    m, v = mean.astype(np.float64), log_var.astype(np.float64)
    exact = 0.5 * (np.expm1(v) - v + m**2)  # float64, exact to ~1e-16 relative
    assert (got >= 0).all()
    at_prior = (mean == 0) & (log_var == 0)
    assert (got[at_prior] == 0).all()
    assert (got[exact > 1e-12] > 0).all()
    # float32 rounding of each term, not of the constant 1 the terms cancel against
    tol = 4 * EPS * (np.abs(np.expm1(v)) + np.abs(v) + m**2) + 1e-37
    np.testing.assert_array_less(np.abs(got - exact), tol)


@props(40)
@given(mean=arrays((8, 5), floats(-10, 10)), log_var=arrays((8, 5), floats(-10, 10)))
def test_kl_per_dimension_is_the_batch_mean_of_the_kl(mean, log_var):
    per_dim = np.asarray(M.kl_per_dimension(mean, log_var), np.float64)
    m, v = mean.astype(np.float64), log_var.astype(np.float64)
    exact = np.mean(0.5 * (np.expm1(v) - v + m**2), axis=0)
    np.testing.assert_allclose(per_dim, exact, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ log-mean-exp, IWAE

log_mean_exp = jax.jit(L.log_mean_exp, static_argnames="axis")


@props(80)
@given(a=arrays((16, 3), floats(-F32_MAX, F32_MAX)))
def test_log_mean_exp_is_finite_and_matches_float64(a):
    got = np.asarray(log_mean_exp(a, axis=0), np.float64)
    a64 = a.astype(np.float64)
    want = logsumexp(a64, axis=0) - math.log(16)
    assert np.isfinite(got).all()
    tol = 4 * EPS * (np.abs(a64).max(axis=0) + math.log(16)) + 1e-6
    np.testing.assert_array_less(np.abs(got - want), tol)
    # between the largest term less log K and the largest term
    assert (got >= a64.max(axis=0) - math.log(16) - tol).all()
    assert (got <= a64.max(axis=0) + tol).all()


def lognormal_log_weights(params, batch, key, k):
    """log w ~ N(mu, sigma^2) per example, so log p = log E[w] = mu + sigma^2 / 2 exactly."""
    mu, sigma = params
    return mu + sigma * jax.random.normal(key, (k, batch.shape[0]))


iwae = jax.jit(
    functools.partial(scores.iwae_log_likelihood, lognormal_log_weights),
    static_argnames=("k", "k_chunk"),
)
N_IWAE = 4000


@props(25)
@given(mu=floats(-100, 100), sigma=floats(0, 3), seed=seeds)
def test_iwae_bound_rises_with_k_on_average_and_stays_below_log_p(mu, sigma, seed):
    params, key = (jnp.float32(mu), jnp.float32(sigma)), jax.random.key(seed)
    batch = jnp.zeros(N_IWAE)
    # One key for every K: sample j is the same draw for each K, so the K-sample bounds of
    # an example are nested and their differences have a small variance.
    bound = {k: np.asarray(iwae(params, batch, key, k=k), np.float64) for k in (1, 4, 16)}
    se = lambda d: d.std() / math.sqrt(N_IWAE)
    slack = 8 * EPS * (abs(mu) + 1)  # rounding of log-weights near mu
    for small, large in ((1, 4), (4, 16)):
        d = bound[large] - bound[small]
        assert d.mean() >= -4 * se(d) - slack
    log_p = mu + sigma**2 / 2
    for b in bound.values():
        assert b.mean() <= log_p + 4 * se(b) + slack
    if sigma >= 0.5:
        d = bound[16] - bound[1]
        assert d.mean() > 4 * se(d)


@jax.jit
def direct_log_mean_exp(params, batch, key):
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(16))
    w = jax.vmap(lambda kj: lognormal_log_weights(params, batch, kj, 1)[0])(keys)
    return L.log_mean_exp(w, axis=0), jnp.max(jnp.abs(w))


@props(40)
@given(mu=floats(-1e6, 1e6), sigma=floats(0, 1e3), seed=seeds)
def test_iwae_is_the_log_mean_exp_of_its_weights_for_any_sample_chunk(mu, sigma, seed):
    params, key, batch = (jnp.float32(mu), jnp.float32(sigma)), jax.random.key(seed), jnp.zeros(8)
    want, w_max = direct_log_mean_exp(params, batch, key)
    tol = 16 * EPS * (float(w_max) + 3)  # one rounding per running log-add-exp
    for k_chunk in (1, 5, 16):  # 5: three chunks and a remainder of one
        got = iwae(params, batch, key, k=16, k_chunk=k_chunk)
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)


# ------------------------------------------------------------ reductions


@functools.partial(jax.jit, static_argnames="name")
def reductions(name, logits, x, mean, log_var):
    lik = L.get_likelihood(name)
    nll = lik.nll(logits[..., : lik.channels], x)
    kl_ = jnp.sum(L.kl_to_std_normal(mean, log_var), axis=-1)
    return nll, kl_, L.batch_mean(nll), M.kl_per_dimension(mean, log_var)


CUT = 3  # 8 examples as 3 + 5


@props(30)
@given(
    logits=arrays((8, 3, 3, 2), floats(-30, 30)),
    x=levels((8, 3, 3, 1)),
    mean=arrays((8, 4), floats(-10, 10)),
    log_var=arrays((8, 4), floats(-10, 10)),
)
def test_reductions_of_a_batch_agree_with_those_of_its_parts(logits, x, mean, log_var):
    for name in NAMES:
        whole = reductions(name, logits, x, mean, log_var)
        head = reductions(name, logits[:CUT], x[:CUT], mean[:CUT], log_var[:CUT])
        tail = reductions(name, logits[CUT:], x[CUT:], mean[CUT:], log_var[CUT:])
        for i in (0, 1):  # per-example NLL, KL
            np.testing.assert_allclose(whole[i], np.concatenate([head[i], tail[i]]), rtol=1e-6)
        for i in (2, 3):  # batch mean of the NLL, kl_per_dimension: weighted by part size
            parts = (CUT * np.asarray(head[i]) + (8 - CUT) * np.asarray(tail[i])) / 8
            np.testing.assert_allclose(whole[i], parts, rtol=1e-5, atol=1e-5)


def per_example(key, mean, log_var, none, i):
    """A per-example evaluation with its own randomness: KL and log q at a drawn z."""
    assert none is None
    z = L.reparameterize(jax.random.fold_in(key, i), mean, log_var)
    kl_ = jnp.sum(L.kl_to_std_normal(mean, log_var))
    return {"kl": kl_, "log_q": L.diag_gaussian_log_prob(z, mean, log_var), "z": z}


mapped = jax.jit(
    lambda key, mean, log_var, chunk: split.map_examples(
        functools.partial(per_example, key), (mean, log_var, None), chunk
    ),
    static_argnames="chunk",
)
blocked = split.SplitMap(per_example, chunk=7, block=10)  # Python blocks of 10, chunks of 7


@props(30)
@given(
    seed=seeds, mean=arrays((23, 3), floats(-100, 100)), log_var=arrays((23, 3), floats(-30, 30))
)
def test_map_examples_does_not_depend_on_the_chunk_size(seed, mean, log_var):
    key = jax.random.key(seed)
    index = jnp.arange(23, dtype=jnp.int32)
    want = jax.vmap(functools.partial(per_example, key), (0, 0, None, 0))(
        mean, log_var, None, index
    )
    outs = [mapped(key, mean, log_var, chunk=c) for c in (7, 1000)]
    outs.append(blocked(key, (mean, log_var, None)))
    for out in outs:
        for name, value in want.items():
            np.testing.assert_allclose(out[name], value, rtol=1e-6, atol=1e-6, err_msg=name)


@functools.cache
def tiny_vae():
    model = make_model(ModelConfig(name="vae", hidden=(8,), latent_dim=2), DataSpec("t", (4, 4, 1)))
    tests = {c: scores.make_epoch_test(model, model.loss, "dynamic", chunk=c) for c in (7, 1000)}
    return jax.jit(model.init), tests


@props(8)
@given(
    images=arrays((13, 4, 4, 1), st.integers(0, 255), np.uint8),
    seed=seeds,
    step=st.integers(0, 10_000),
)
def test_epoch_test_means_do_not_depend_on_the_chunk_size(images, seed, step):
    init, tests = tiny_vae()
    x = jnp.asarray(images)
    params = init(jax.random.key(seed), Batch(x.astype(jnp.float32) / 255))
    key = jax.random.fold_in(jax.random.key(seed), 1)
    results = {c: test(params, x, None, key, step) for c, test in tests.items()}
    want = results[1000]
    assert set(want) == {"test_objective", "test_terms", "test_neg_elbo"}
    for got in results.values():
        assert got["test_objective"] == pytest.approx(want["test_objective"], rel=1e-6)
        assert got["test_neg_elbo"] == pytest.approx(want["test_neg_elbo"], rel=1e-6)
        assert got["test_terms"] == pytest.approx(want["test_terms"], rel=1e-6, abs=1e-6)
