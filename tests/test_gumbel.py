"""The Gumbel-softmax categorical VAE: the relaxation's limits (tau -> 0 is the Gumbel-max
draw, whose class frequencies are softmax(logits); large tau is uniform), the straight-
through hard draw, the exact KL to the uniform prior, the loss by hand, and the IWAE bound
against the exact likelihood found by enumerating every code."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY, bernoulli_nll_by_hand, build
from scipy.special import logsumexp

from aevae_jax.config import ModelConfig
from aevae_jax.errors import UserError
from aevae_jax.evaluate.scores import iwae_log_likelihood
from aevae_jax.models.base import make_backbone_fns
from aevae_jax.models.gumbel_vae import GumbelOptions, gumbel_softmax, kl_to_uniform, temperature


def posterior_probs(params, batch, k):
    """q(c|x) [B, 3, k] of build("gumbel_vae", categories=k), from its encoder's logits."""
    cfg = ModelConfig(name="gumbel_vae", hidden=(16,), latent_dim=3)
    net = make_backbone_fns(cfg, TINY.image_shape, encoder_out=3 * k, code_dim=3 * k)
    logits = np.asarray(net.encoder(params, batch.x), np.float64).reshape(len(batch.x), 3, k)
    return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


def test_relaxation_limits_and_the_gumbel_max_frequencies():
    logits = jnp.log(jnp.array([[0.6, 0.3, 0.1]]))
    key = jax.random.key(0)
    g = np.asarray(jax.random.gumbel(key, (1, 3)))
    cold = gumbel_softmax(key, logits, 1e-3)
    np.testing.assert_allclose(cold, np.eye(3)[[np.argmax(np.asarray(logits) + g)]], atol=1e-6)
    hot = gumbel_softmax(key, logits, 1e4)
    np.testing.assert_allclose(hot, np.full((1, 3), 1 / 3), atol=1e-3)
    # The argmax of the draws (any tau) is distributed as softmax(logits).
    draws = jax.vmap(lambda k: gumbel_softmax(k, logits, 0.7))(jax.random.split(key, 20000))
    freq = np.bincount(np.asarray(jnp.argmax(draws[:, 0], -1)), minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.6, 0.3, 0.1], atol=4 * np.sqrt(0.25 / 20000))


def test_hard_draw_is_one_hot_with_the_relaxed_gradient():
    logits = jax.random.normal(jax.random.key(1), (4, 2, 5))
    key, w = jax.random.key(2), jax.random.normal(jax.random.key(3), (4, 2, 5))
    hard = gumbel_softmax(key, logits, 0.5, hard=True)
    assert set(np.unique(np.asarray(hard))) <= {0.0, 1.0}
    np.testing.assert_allclose(np.asarray(hard).sum(-1), 1.0)

    def grad(h):
        return jax.grad(lambda lg: jnp.sum(w * gumbel_softmax(key, lg, 0.5, hard=h)))(logits)

    np.testing.assert_allclose(grad(True), grad(False), rtol=1e-5, atol=1e-7)


def test_kl_to_uniform_and_temperature_by_hand():
    logits = np.random.default_rng(0).normal(size=(3, 2, 4))
    q = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(kl_to_uniform(jnp.asarray(logits)), (q * np.log(q * 4)).sum((1, 2)),
                               rtol=1e-5)  # fmt: skip
    assert float(kl_to_uniform(jnp.zeros((1, 2, 4)))[0]) == pytest.approx(0.0, abs=1e-7)
    opts = GumbelOptions(tau_init=1.0, tau_min=0.5, tau_rate=1e-3)
    assert float(temperature(0, opts)) == 1.0
    assert float(temperature(100, opts)) == pytest.approx(np.exp(-0.1), rel=1e-6)
    assert float(temperature(10**5, opts)) == 0.5


def test_loss_by_hand():
    model, params, batch = build("gumbel_vae", categories=4, tau_init=0.8, tau_rate=0.0)
    key = jax.random.key(4)
    loss, metrics = model.loss(params, batch, key, 7)
    q = posterior_probs(params, batch, 4)
    # The code is the one-hot most probable class of each variable.
    one_hot = np.eye(4)[q.argmax(-1)].reshape(6, 12)
    np.testing.assert_array_equal(model.encode(params, batch).code, one_hot)
    g = np.asarray(jax.random.gumbel(key, (6, 3, 4)), np.float64)
    y = np.exp((np.log(q) + g) / 0.8)
    y /= y.sum(-1, keepdims=True)
    recon = bernoulli_nll_by_hand(model.decode(params, jnp.asarray(y.reshape(6, 12))), batch.x)
    kl = (q * np.log(q * 4)).sum((1, 2))
    assert float(metrics["recon"]) == pytest.approx(recon.mean(), rel=1e-4)
    assert float(metrics["kl"]) == pytest.approx(kl.mean(), rel=1e-4)
    assert float(loss) == pytest.approx((recon + kl).mean(), rel=1e-4)


def test_iwae_bound_reaches_the_likelihood_of_every_code_enumerated():
    model, params, batch = build("gumbel_vae", categories=3)  # 3 variables of 3 classes
    codes = np.array(list(itertools.product(range(3), repeat=3)))  # all 27
    one_hot = jnp.asarray(np.eye(3)[codes].reshape(27, 9), jnp.float32)
    log_px_c = np.stack([-bernoulli_nll_by_hand(model.decode(params, jnp.tile(c, (6, 1))),
                                                batch.x) for c in one_hot])  # fmt: skip
    exact = logsumexp(log_px_c, axis=0) - 3 * np.log(3)  # [6]: log p(x), uniform p(c)
    # Each weight by hand at the model's own draws c ~ q(c|x): log p(x|c) + log p(c) - log q(c|x).
    key = jax.random.key(5)
    log_w = np.asarray(model.log_importance_weights(params, batch, key, 50), np.float64)
    q = posterior_probs(params, batch, 3)
    logits = jnp.log(jnp.asarray(q, jnp.float32))
    c = np.asarray(jax.random.categorical(key, logits, shape=(50, 6, 3)))
    index = (c * np.array([9, 3, 1])).sum(-1)  # the enumeration's row of each draw
    log_q = np.log(np.take_along_axis(q[None], c[..., None], -1)[..., 0]).sum(-1)
    by_hand = log_px_c[index, np.arange(6)] - 3 * np.log(3) - log_q
    np.testing.assert_allclose(log_w, by_hand, rtol=1e-4, atol=1e-4)
    # So the K-sample bound rises to log p(x): within 0.03 nats at K = 20000 (its bias,
    # about Var(w) / 2K p(x)^2, is below 0.01 here), and the ELBO stays below it.
    est = iwae_log_likelihood(model.log_importance_weights, params, batch, key, 20000)
    np.testing.assert_allclose(np.asarray(est), exact, atol=0.03)
    elbo = iwae_log_likelihood(model.log_importance_weights, params, batch, key, 1)
    assert np.mean(np.asarray(elbo)) < np.mean(exact)


def test_options_name_their_remedy():
    with pytest.raises(UserError, match="--categories must be at least 2"):
        GumbelOptions(categories=1)
    with pytest.raises(UserError, match="--tau-min <= --tau-init"):
        GumbelOptions(tau_min=2.0)
