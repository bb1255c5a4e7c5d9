"""The ex-post samplers on their own: the Gaussian mixture's EM against a NumPy hand
computation and its monotone likelihood, the RealNVP flow's log-determinant against a
brute-force Jacobian and its exact inverse, and the registry that `aevae sample` and the
evaluation read."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from aevae_jax.errors import UserError
from aevae_jax.evaluate.flow import fit_flow, flow_log_prob, forward, init_flow, inverse
from aevae_jax.evaluate.gmm import (
    GMM,
    fit_gmm,
    gmm_log_prob,
    m_step,
    responsibilities,
    sample_gmm,
)
from aevae_jax.evaluate.samplers import EXPOST, SamplerOptions, fit_sampler, with_claimed


def two_clusters(n=2000, seed=0):
    """Codes from 0.3 N((-3, 0), 0.5 I) + 0.7 N((2, 1), [[1, .6], [.6, 1]])."""
    rng = np.random.default_rng(seed)
    first = rng.random(n) < 0.3
    a = rng.normal(size=(n, 2)) * np.sqrt(0.5) + [-3.0, 0.0]
    b = rng.multivariate_normal([2.0, 1.0], [[1.0, 0.6], [0.6, 1.0]], size=n)
    return np.where(first[:, None], a, b).astype(np.float32), first


def test_gmm_density_and_e_step_match_scipy():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(3, 2))
    covs = [np.array([[1.0, 0.3], [0.3, 0.5]]), np.eye(2) * 0.2, np.array([[2.0, -1], [-1, 1]])]
    weights = np.array([0.2, 0.5, 0.3])
    g = GMM(jnp.asarray(weights), jnp.asarray(means), jnp.asarray(np.linalg.cholesky(covs)))
    z = rng.normal(size=(7, 2)).astype(np.float32)
    dens = np.stack(
        [
            w * multivariate_normal(m, c).pdf(z)
            for w, m, c in zip(weights, means, covs, strict=True)
        ],
        1,
    )
    np.testing.assert_allclose(gmm_log_prob(g, jnp.asarray(z)), np.log(dens.sum(1)), rtol=1e-5)
    np.testing.assert_allclose(
        responsibilities(g, jnp.asarray(z)), dens / dens.sum(1, keepdims=True), rtol=1e-4, atol=1e-6
    )


def test_m_step_is_the_weighted_maximum_likelihood_by_hand():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(50, 3))
    r = rng.dirichlet(np.ones(2), size=50)
    g = m_step(jnp.asarray(z, jnp.float32), jnp.asarray(r, jnp.float32), ridge=0.0)
    for k in range(2):
        w = r[:, k]
        mean = (w[:, None] * z).sum(0) / w.sum()
        cov = ((z - mean).T * w) @ (z - mean) / w.sum()
        np.testing.assert_allclose(g.weights[k], w.sum() / 50, rtol=1e-5)
        np.testing.assert_allclose(g.means[k], mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(g.chols[k] @ g.chols[k].T, cov, rtol=1e-4, atol=1e-5)


def test_em_increases_the_likelihood_and_recovers_two_clusters():
    z, _ = two_clusters()
    g, curve = fit_gmm(z, jax.random.key(0), components=2, iterations=60, ridge=0.0)
    curve = np.asarray(curve)
    assert np.all(np.diff(curve) >= -1e-4), curve  # EM never lowers the likelihood
    order = np.argsort(np.asarray(g.means)[:, 0])
    np.testing.assert_allclose(np.asarray(g.weights)[order], [0.3, 0.7], atol=0.03)
    np.testing.assert_allclose(np.asarray(g.means)[order], [[-3, 0], [2, 1]], atol=0.1)
    draws = np.asarray(sample_gmm(g, jax.random.key(1), 20_000))
    np.testing.assert_allclose(draws.mean(0), z.mean(0), atol=0.06)
    # The same key gives the same fit, bit for bit.
    again, _ = fit_gmm(z, jax.random.key(0), components=2, iterations=60, ridge=0.0)
    assert np.array_equal(np.asarray(again.means), np.asarray(g.means))


def test_gmm_refuses_more_components_than_codes():
    with pytest.raises(UserError, match="need at least as many codes"):
        fit_gmm(np.zeros((3, 2)), jax.random.key(0), components=5)


def test_flow_log_det_is_the_jacobians_and_the_inverse_is_exact():
    params = init_flow(jax.random.key(0), 5, layers=4, hidden=8)
    # Move the zero-initialised output layers so that every coupling acts.
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape), params)
    x = jax.random.normal(jax.random.key(2), (6, 5))
    u, log_det = forward(params, x, 8)
    jac = jax.vmap(jax.jacfwd(lambda v: forward(params, v[None], 8)[0][0]))(x)
    np.testing.assert_allclose(
        log_det, np.linalg.slogdet(np.asarray(jac, np.float64))[1], rtol=1e-4, atol=1e-4
    )
    assert not np.allclose(u, x)
    np.testing.assert_allclose(inverse(params, u, 8), x, rtol=1e-4, atol=1e-5)


def test_flow_fits_a_curved_density_better_than_a_gaussian():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4000, 1))
    z = np.concatenate([a, a**2 + 0.3 * rng.normal(size=(4000, 1))], 1).astype(np.float32)
    f, losses = fit_flow(z[:3000], jax.random.key(0), layers=4, hidden=32, steps=300, lr=3e-3)
    assert float(np.mean(losses[-50:])) < float(np.mean(losses[:50]))
    held_out = z[3000:]
    gauss = multivariate_normal(z[:3000].mean(0), np.cov(z[:3000], rowvar=False))
    assert (
        float(jnp.mean(flow_log_prob(f, jnp.asarray(held_out))))
        > np.mean(gauss.logpdf(held_out)) + 0.2
    )


@pytest.mark.parametrize("name", list(EXPOST))
def test_every_expost_sampler_draws_codes_of_the_right_shape(name):
    z, _ = two_clusters(500)
    opts = SamplerOptions(names=(name,), gmm_components=2, flow_steps=50)
    sampler = fit_sampler(name, z, jax.random.key(0), opts)
    draws = sampler(jax.random.key(1), 300)
    assert draws.shape == (300, 2) and np.isfinite(np.asarray(draws)).all()
    assert np.array_equal(np.asarray(draws), np.asarray(sampler(jax.random.key(1), 300)))


def test_sampler_options_name_the_remedy():
    with pytest.raises(UserError, match=r"unknown ex-post sampler 'gaussian'.*expost, gmm, flow"):
        SamplerOptions(names=("gaussian",))
    with pytest.raises(UserError, match="twice"):
        SamplerOptions(names=("gmm", "gmm"))
    with pytest.raises(UserError, match="--gmm-components"):
        SamplerOptions(gmm_components=0)


def test_report_lists_every_scored_sampler_beside_the_others():
    from aevae_jax.study.report import samplers_section

    m = {
        "models": {
            "ae": {"prior_sample_fd": 60.0, "prior_sample_fd_se": 0.5, "gmm_sample_fd": 20.25,
                   "gmm_sample_fd_se": 0.4, "gmm_sample_precision": 0.7,
                   "gmm_sample_recall": 0.3},
            "vae": {"prior_sample_fd": 30.0, "prior_sample_fd_se": 0.6},
        }
    }  # fmt: skip
    lines = samplers_section(m)
    rows = [line for line in lines if line.startswith("| ae") or line.startswith("| vae")]
    assert rows == [
        "| ae | prior | 60.00 ± 0.50 | n/a | n/a |",
        "| ae | ex-post Gaussian-mixture | 20.25 ± 0.40 | 0.700 | 0.300 |",
        "| vae | prior | 30.00 ± 0.60 | n/a | n/a |",
    ]
    assert samplers_section({"models": {"ae": {"test_mse": 1.0}}}) == []


def test_a_comparison_adds_the_samplers_its_models_claims_are_checked_on():
    from aevae_jax.models import model_info

    plain = SamplerOptions()
    assert with_claimed(plain, model_info("vae").claims) is plain
    assert with_claimed(plain, model_info("rae_l2").claims).names == ("expost", "gmm")
    both = SamplerOptions(names=("gmm", "expost"))
    assert with_claimed(both, model_info("rae_gp").claims).names == ("gmm", "expost")
