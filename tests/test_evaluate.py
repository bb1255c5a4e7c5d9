"""Evaluation metrics against exact answers: a linear-Gaussian model's likelihood for
IWAE, SciPy for the Frechet distance, hand computations for PSNR, KL and active units."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg, stats

from aevae_jax.config import ModelConfig
from aevae_jax.data.spec import DataSpec
from aevae_jax.evaluate import metrics as M
from aevae_jax.evaluate import scores, split
from aevae_jax.evaluate.samplers import expost_gaussian, standard_normal
from aevae_jax.models import Batch, Encoding, Model, make_model
from aevae_jax.nn import likelihoods as L
from aevae_jax.nn.likelihoods import get_likelihood

# ------------------------------------------------------------ IWAE: linear-Gaussian


def linear_gaussian(d=5, latent=2, s=0.5, seed=0):
    """p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I); q(z|x) = the exact posterior's mean
    with its variances doubled, so the importance weights vary."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, latent)).astype(np.float32)
    b = rng.normal(size=d).astype(np.float32)
    post_cov = np.linalg.inv(np.eye(latent) + W.T @ W / s**2)
    A = (post_cov @ W.T / s**2).astype(np.float32)  # posterior mean = A (x - b)
    q_log_var = np.log(2 * np.diag(post_cov)).astype(np.float32)

    def log_weights(params, x, key, k):
        mean = (x - b) @ A.T  # [B, L]
        log_var = jnp.broadcast_to(q_log_var, mean.shape)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, (k, *mean.shape))
        x_mean = z @ W.T + b  # [k, B, d]
        log_px_z = jnp.sum(L.gaussian_log_prob(x_mean, x, math.log(s)), axis=-1)
        return log_px_z + L.std_normal_log_prob(z) - L.diag_gaussian_log_prob(z, mean, log_var)

    exact = stats.multivariate_normal(b, W @ W.T + s**2 * np.eye(d))
    return log_weights, exact


def test_iwae_matches_the_exact_linear_gaussian_likelihood_at_large_k():
    log_weights, exact = linear_gaussian()
    x = exact.rvs(size=8, random_state=1).astype(np.float32)
    est = scores.iwae_log_likelihood(
        log_weights, None, jnp.asarray(x), jax.random.key(0), 20_000, k_chunk=1000
    )
    np.testing.assert_allclose(np.asarray(est), exact.logpdf(x), atol=0.1)


def test_iwae_does_not_decrease_with_k_on_average():
    log_weights, exact = linear_gaussian(seed=3)
    x = jnp.asarray(exact.rvs(size=200, random_state=2).astype(np.float32))
    means = []
    for k in (1, 10, 100, 1000):
        per_key = [
            scores.iwae_log_likelihood(log_weights, None, x, jax.random.key(s), k, 100)
            for s in range(4)
        ]
        means.append(float(jnp.mean(jnp.stack(per_key))))
    assert means == sorted(means)
    assert means[-1] <= float(np.mean(exact.logpdf(np.asarray(x)))) + 0.02  # a lower bound


def test_iwae_does_not_depend_on_the_chunk_size():
    log_weights, exact = linear_gaussian()
    x = jnp.asarray(exact.rvs(size=4, random_state=5).astype(np.float32))
    a = scores.iwae_log_likelihood(log_weights, None, x, jax.random.key(0), 250, k_chunk=100)
    b = scores.iwae_log_likelihood(log_weights, None, x, jax.random.key(0), 250, k_chunk=7)
    c = scores.iwae_log_likelihood(log_weights, None, x, jax.random.key(1), 250, k_chunk=100)
    assert a.shape == (4,)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert not np.allclose(a, c)


def test_iwae_with_one_sample_is_the_single_sample_elbo_of_the_same_key():
    model = make_model(
        ModelConfig(name="vae", hidden=(16,), latent_dim=3), DataSpec("t", (4, 4, 1))
    )
    x = (jax.random.uniform(jax.random.key(0), (6, 4, 4, 1)) > 0.5).astype(jnp.float32)
    params = model.init(jax.random.key(1), Batch(x))
    key = jax.random.key(9)
    est = scores.iwae_log_likelihood(model.log_importance_weights, params, Batch(x), key, 1)
    # The same z the VAE's training loss draws from the key of the first (only) chunk:
    k0 = jax.random.fold_in(key, 0)
    q = model.encode(params, Batch(x))
    z = q.code + jnp.exp(0.5 * q.log_var) * jax.random.normal(k0, q.code.shape)
    log_px_z = -model.likelihood.nll(model.decode(params, z, None), x)
    elbo_mc = log_px_z + L.std_normal_log_prob(z) - L.diag_gaussian_log_prob(z, q.code, q.log_var)
    np.testing.assert_allclose(np.asarray(est), np.asarray(elbo_mc), rtol=1e-5)
    _, metrics = model.loss(params, Batch(x), k0, 0)
    assert float(metrics["recon"]) == pytest.approx(-float(jnp.mean(log_px_z)), rel=1e-5)


# ------------------------------------------------------------ latent statistics


def test_active_units_counts_dimensions_whose_mean_varies():
    rng = np.random.default_rng(0)
    means = np.stack(
        [
            rng.normal(0, 1.0, 5000),
            rng.normal(3, 0.2, 5000),
            rng.normal(0, 0.05, 5000),
            np.full(5000, 7.0),
        ],
        axis=1,
    )
    # variances: 1.0, 0.04, 0.0025, 0 -> two above the 0.01 threshold
    assert int(M.active_units(jnp.asarray(means))) == 2


def test_kl_per_dimension_by_hand():
    mean = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
    log_var = jnp.array([[0.0, math.log(4.0)], [0.0, math.log(4.0)]])
    want = [0.5 * 1.0, 0.5 * (4 - 1 - math.log(4))]  # 0.5 m^2 ; 0.5 (s2 - 1 - ln s2)
    np.testing.assert_allclose(M.kl_per_dimension(mean, log_var), want, rtol=1e-6)


# ------------------------------------------------------------ reconstruction, PSNR


def constant_model(logit: float, shape=(2, 2, 1)) -> Model:
    """A 'model' whose decoder always outputs one logit: exact errors by hand."""
    return Model(
        name="const",
        spec=DataSpec("const", shape),
        code_shape=(1,),
        likelihood=get_likelihood("bernoulli"),
        init=lambda key, batch: {},
        loss=lambda p, b, k, s: (0.0, {}),
        encode=lambda p, b: Encoding(jnp.zeros((b.x.shape[0], 1))),
        decode=lambda p, z, y=None: jnp.full((z.shape[0], *shape), logit),
    )


def test_reconstruction_errors_and_psnr_by_hand():
    model = constant_model(0.0)  # x_hat = 0.5 everywhere
    x = jnp.array([[[[1.0], [0.0]], [[1.0], [1.0]]]])  # 4 pixels
    out = scores.reconstruction_errors(model, {}, Batch(x))
    assert float(out["mse"][0]) == pytest.approx(4 * 0.25)  # sum of (x - 0.5)^2
    assert float(out["bce"][0]) == pytest.approx(4 * math.log(2), rel=1e-6)
    assert float(out["recon_nll"][0]) == pytest.approx(4 * math.log(2), rel=1e-6)
    # PSNR = 10 log10(peak^2 / per-pixel MSE) = 10 log10(1 / 0.25)
    assert float(out["psnr"][0]) == pytest.approx(10 * math.log10(4.0), rel=1e-6)


# ------------------------------------------------------------ Frechet distance


def test_frechet_distance_against_scipy_sqrtm_and_zero_for_identical_sets():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 6))
    b = rng.normal(size=(1500, 6)) @ rng.normal(size=(6, 6)) * 0.5 + 1.0
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b).real
    want = np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * covmean)
    assert M.frechet_distance(a, b) == pytest.approx(want, rel=1e-6)
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert M.frechet_distance(a, b) > 1.0


# ------------------------------------------------------------ linear probe, samplers


def test_linear_probe_separates_separable_codes_and_not_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    centres = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    codes = centres[labels] + rng.normal(size=(3000, 2)) * 0.5
    acc = M.linear_probe_accuracy(
        jnp.asarray(codes[:2000]),
        jnp.asarray(labels[:2000]),
        jnp.asarray(codes[2000:]),
        jnp.asarray(labels[2000:]),
        3,
    )
    assert acc == 1.0
    noise = rng.normal(size=(3000, 2))
    chance = M.linear_probe_accuracy(
        jnp.asarray(noise[:2000]),
        jnp.asarray(labels[:2000]),
        jnp.asarray(noise[2000:]),
        jnp.asarray(labels[2000:]),
        3,
    )
    assert chance < 0.45


def test_expost_gaussian_recovers_the_code_distribution():
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 0.8], [0.8, 0.5]])
    codes = rng.multivariate_normal([1.0, -2.0], cov, size=20_000)
    z = np.asarray(expost_gaussian(jnp.asarray(codes, jnp.float32))(jax.random.key(0), 20_000))
    np.testing.assert_allclose(z.mean(0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(np.cov(z, rowvar=False), cov, atol=0.06)
    s = standard_normal(3)(jax.random.key(1), 5)
    assert s.shape == (5, 3)


def test_map_examples_pads_and_drops_the_remainder():
    out = split.map_examples(lambda x, i: x * 0 + i, (jnp.ones(7),), chunk=3)
    np.testing.assert_array_equal(out, np.arange(7))


def test_every_metric_group_named_in_the_catalogue_exists_and_labels_resolve():
    from aevae_jax.evaluate import catalogue
    from aevae_jax.evaluate.groups import GROUPS

    groups = {g.name for g in GROUPS} | {"study", "experiment"}
    assert {m.group for m in catalogue.CATALOGUE} <= groups
    assert len(catalogue.BY_KEY) == len(catalogue.CATALOGUE)  # each key stated once
    assert [c.header for c in catalogue.columns()][:2] == ["MSE", "PSNR dB"]
    # Layer-j versions of latent metrics resolve to their layer-1 entry, others do not.
    assert catalogue.entry("active_units_z2").layer == "z2"
    assert "layer z2" in catalogue.label("posterior_std_mean_z2")
    assert catalogue.entry("test_mse_z2") is None and catalogue.entry("no_such") is None
    assert not catalogue.lower_is_better("probe_accuracy") and catalogue.lower_is_better("test_mse")
