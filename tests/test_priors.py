"""The prior in the model protocol: N(0, I) against its formulas, the VampPrior's mixture
density, moments and rate against NumPy and Monte Carlo, and the two-stochastic-layer
VAE's weights and hierarchy against a hand computation; the evaluator reads each model's
own prior (its rate, q(z)-to-prior distance and samples)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY, bernoulli_nll_by_hand, build
from scipy.special import logsumexp

from aevae_jax.data.spec import Dataset
from aevae_jax.evaluate.evaluation import evaluate_model
from aevae_jax.evaluate.groups import RATE_SAMPLES, gaussian_code_metrics
from aevae_jax.evaluate.split import encode_split
from aevae_jax.models import Batch
from aevae_jax.models.priors import standard_normal
from aevae_jax.study.report import ELBO_GAP_SES, elbo_gap_ses


def gauss_logpdf(z, mean, log_var):
    """log N(z; mean, diag(exp(log_var))) summed over the last axis, float64."""
    z, mean, log_var = (np.asarray(a, np.float64) for a in (z, mean, log_var))
    return np.sum(-0.5 * (np.log(2 * np.pi) + log_var + (z - mean) ** 2 / np.exp(log_var)), -1)


def test_standard_normal_prior_by_hand():
    prior = standard_normal((3,))
    z = np.array([[0.0, 1.0, -2.0], [0.5, 0.5, 0.5]], np.float32)
    np.testing.assert_allclose(prior.log_prob(None, jnp.asarray(z)), gauss_logpdf(z, 0, 0),
                               rtol=1e-6)  # fmt: skip
    mean, log_var = jnp.asarray([[0.3, -1.0, 0.0]]), jnp.asarray([[0.0, -2.0, 1.0]])
    enc = type("E", (), {"code": mean, "log_var": log_var})()
    kl = 0.5 * np.sum(np.exp(log_var) + np.asarray(mean) ** 2 - 1 - np.asarray(log_var))
    assert float(prior.kl(None, enc)[0]) == pytest.approx(kl, rel=1e-6)
    mu, cov = prior.moments(None)
    assert np.array_equal(mu, np.zeros(3)) and np.array_equal(cov, np.eye(3))
    draws = prior.sample(None, jax.random.key(0), 20_000)
    assert draws.shape == (20_000, 3) and abs(float(jnp.std(draws)) - 1) < 0.02


@pytest.fixture(scope="module")
def vamp():
    return build("vamp_vae", pseudo_inputs=5)


def test_vamp_prior_is_the_mixture_of_posteriors_at_the_pseudo_inputs(vamp):
    model, params, _ = vamp
    u = jax.nn.sigmoid(params["pseudo_inputs"])
    assert u.shape == (5, *TINY.image_shape)
    q = model.encode(params, Batch(u))  # the components, through the model's own encoder
    z = np.asarray(jax.random.normal(jax.random.key(3), (7, 3)))
    by_hand = logsumexp(
        gauss_logpdf(z[:, None], np.asarray(q.code)[None], np.asarray(q.log_var)[None]), axis=1
    ) - np.log(5)
    np.testing.assert_allclose(model.prior.log_prob(params, jnp.asarray(z)), by_hand, rtol=1e-5)


def test_vamp_prior_moments_and_samples_agree(vamp):
    model, params, _ = vamp
    mean, log_var = (np.asarray(a, np.float64) for a in components_of(model, params))
    mu = mean.mean(0)
    cov = np.mean(
        [np.diag(np.exp(lv)) + np.outer(m, m) for m, lv in zip(mean, log_var, strict=False)], 0
    )
    got_mu, got_cov = model.prior.moments(params)
    np.testing.assert_allclose(got_mu, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_cov, cov - np.outer(mu, mu), rtol=1e-4, atol=1e-6)
    draws = np.asarray(model.prior.sample(params, jax.random.key(1), 200_000), np.float64)
    np.testing.assert_allclose(draws.mean(0), mu, atol=0.02)
    np.testing.assert_allclose(np.cov(draws, rowvar=False), cov - np.outer(mu, mu), atol=0.03)


def components_of(model, params):
    q = model.encode(params, Batch(jax.nn.sigmoid(params["pseudo_inputs"])))
    return q.code, q.log_var


def test_vamp_rate_is_against_its_own_prior_and_matches_a_monte_carlo_estimate(vamp):
    model, params, batch = vamp
    assert model.prior.kl is None  # no closed form: the evaluator estimates the rate
    enc = encode_split(model, params, batch.x)
    metrics, per_image = gaussian_code_metrics(model, params, enc, batch.x, None,
                                               jax.random.key(5))  # fmt: skip
    # An independent NumPy estimate with many draws: E_q[log q(z|x) - log p(z)].
    rng = np.random.default_rng(0)
    mean, log_var = np.asarray(enc.code, np.float64), np.asarray(enc.log_var, np.float64)
    cm, clv = (np.asarray(a, np.float64) for a in components_of(model, params))
    z = mean + np.exp(0.5 * log_var) * rng.standard_normal((20_000, *mean.shape))
    log_q = gauss_logpdf(z, mean, log_var)
    log_p = logsumexp(gauss_logpdf(z[..., None, :], cm, clv), axis=-1) - np.log(len(cm))
    mc = (log_q - log_p).mean(0)  # [B]
    # The evaluator averages RATE_SAMPLES draws per image: within 4 of its standard errors.
    se = (log_q - log_p).std(0) / np.sqrt(RATE_SAMPLES)
    assert np.all(np.abs(per_image["kl"] - mc) < 4 * se + 1e-3)
    # ... and it is not the KL to N(0, I), which a model with a learned prior does not pay.
    to_std_normal = 0.5 * np.sum(np.exp(log_var) + mean**2 - 1 - log_var, axis=1)
    assert abs(metrics["test_kl"] - mc.mean()) < 4 * np.sqrt(np.sum(se**2)) / len(se) + 1e-3
    assert abs(metrics["test_kl"] - to_std_normal.mean()) > 0.05


def test_vamp_loss_is_recon_plus_the_single_sample_kl_by_hand(vamp):
    model, params, batch = vamp
    key = jax.random.key(9)
    loss, terms = model.loss(params, batch, key, 0)
    q = model.encode(params, batch)
    z = np.asarray(q.code) + np.exp(0.5 * np.asarray(q.log_var)) * np.asarray(
        jax.random.normal(key, q.code.shape)
    )
    log_p = np.asarray(model.prior.log_prob(params, jnp.asarray(z, jnp.float32)))
    kl = gauss_logpdf(z, q.code, q.log_var) - log_p
    assert float(terms["kl"]) == pytest.approx(kl.mean(), rel=1e-4, abs=1e-4)
    log_w = model.log_importance_weights(params, batch, key, 1)[0]
    # One importance weight at the same key is the negative of the loss' terms per image.
    assert float(-jnp.mean(log_w)) == pytest.approx(float(loss), rel=1e-4)


@pytest.fixture(scope="module")
def two_layer():
    return build("two_layer_vae", top_dim=2, top_hidden=8)


def mlp_gaussian(p, h):
    """(mean, log_var) of the hierarchy's small MLP (Dense, ReLU, Dense) by hand, float64."""
    w0, b0 = (np.asarray(p["Dense_0"][k], np.float64) for k in ("kernel", "bias"))
    w1, b1 = (np.asarray(p["Dense_1"][k], np.float64) for k in ("kernel", "bias"))
    out = np.maximum(np.asarray(h, np.float64) @ w0 + b0, 0) @ w1 + b1
    return np.split(out, 2, axis=-1)


def test_two_layer_weights_posterior_and_prior_by_hand(two_layer):
    model, params, batch = two_layer
    key = jax.random.key(4)
    # log_importance_weights(key, k) draws sample j with jax.random.split(key, k)[j].
    (z1, z2), log_q = model.posterior(params, batch, jax.random.split(key, 1)[0])
    q1 = model.encode(params, batch)
    # The encoding: z1's Gaussian, and above it z2's Gaussian at z1's mean.
    top_at_mean = mlp_gaussian(params["up"], q1.code)
    np.testing.assert_allclose(q1.layers[0].code, top_at_mean[0], rtol=1e-4, atol=1e-5)
    # log q(z1, z2 | x) = log q(z1 | x) + log q(z2 | z1), the second at the drawn z1.
    mean2, log_var2 = mlp_gaussian(params["up"], z1)
    want_q = gauss_logpdf(z1, q1.code, q1.log_var) + gauss_logpdf(z2, mean2, log_var2)
    np.testing.assert_allclose(log_q, want_q, rtol=1e-5, atol=1e-4)
    # log p(z1, z2) = log N(z2; 0, I) + log p(z1 | z2).
    mean1, log_var1 = mlp_gaussian(params["down"], z2)
    want_p = gauss_logpdf(z2, 0, 0) + gauss_logpdf(z1, mean1, log_var1)
    np.testing.assert_allclose(model.prior.log_prob(params, (z1, z2)), want_p, rtol=1e-5,
                               atol=1e-4)  # fmt: skip
    # The importance weight at the same key: log p(x | z1) + log p(z1, z2) - log q.
    log_px = -bernoulli_nll_by_hand(model.decode(params, z1, None), batch.x)
    np.testing.assert_allclose(model.log_importance_weights(params, batch, key, 1)[0],
                               log_px + want_p - want_q, rtol=1e-5, atol=1e-3)  # fmt: skip
    # The loss is the negative single-sample ELBO at that draw.
    loss, terms = model.loss(params, batch, jax.random.split(key, 1)[0], 0)
    assert float(loss) == pytest.approx(float(np.mean(-(log_px + want_p - want_q))), rel=1e-5)
    assert float(terms["kl"]) == pytest.approx(float(np.mean(want_q - want_p)), rel=1e-4)


def test_two_layer_prior_samples_follow_the_hierarchy(two_layer):
    model, params, _ = two_layer
    z1, z2 = model.prior.sample(params, jax.random.key(8), 50_000)
    assert z1.shape == (50_000, 3) and z2.shape == (50_000, 2)
    assert abs(float(jnp.mean(z2))) < 0.02 and abs(float(jnp.std(z2)) - 1) < 0.02
    # z1 given z2 is N(mean1(z2), var1(z2)): its standardised residuals are N(0, 1).
    mean1, log_var1 = mlp_gaussian(params["down"], z2)
    r = (np.asarray(z1, np.float64) - mean1) / np.exp(0.5 * log_var1)
    assert abs(r.mean()) < 0.02 and abs(r.std() - 1) < 0.02
    assert model.sample(params, jax.random.key(8), 4).shape == (4, *TINY.image_shape)


def tamed(params):
    """The hierarchy's and encoder's last layers scaled down: posteriors and p(z1 | z2)
    near unit variance, so that Monte Carlo estimates of an untrained model are not
    dominated by a few extreme draws."""
    scale = lambda p: {**p, "kernel": p["kernel"] * 0.1}
    out = dict(params)
    for name in ("up", "down"):
        if name in params:
            out[name] = {**params[name], "Dense_1": scale(params[name]["Dense_1"])}
    return out


def test_the_evaluator_reads_each_models_own_prior(two_layer, vamp):
    x = (np.random.default_rng(0).random((300, *TINY.image_shape)) < 0.4).astype(np.uint8) * 255
    ds = Dataset("tiny", x, x)
    for model, params, _ in (two_layer, vamp):
        params = tamed(params)
        m = evaluate_model(model, params, ds, "none", jax.random.key(0), iwae_k=4).metrics
        # The -ELBO is distortion + rate within noise: the rate is the bound's own KL.
        # (The report's rule: within ELBO_GAP_SES standard errors of zero.)
        assert elbo_gap_ses(m) < ELBO_GAP_SES, (model.name, m["elbo_gap"])
        assert m["test_kl"] > 0 and np.isfinite(m["latent_prior_fd"])
        assert "kl_per_dim" not in m  # no factorised closed form for these priors
        assert ("active_units_z2" in m) == (model.name == "two_layer_vae")
