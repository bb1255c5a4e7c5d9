"""The hierarchical conv VAE: its stride-1 convolution against XLA's, the decoder's
top-down pass reproducing the posterior's, the loss by hand (per-layer closed-form KLs,
the KL warm-up), the importance weights by hand and against the closed-form ELBO in
expectation; and the optimiser's skip-on-huge-gradient guard."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_weights_match_the_loss_in_expectation, bernoulli_nll_by_hand, build

from aevae_jax.config import ModelConfig
from aevae_jax.data.spec import DataSpec
from aevae_jax.errors import UserError
from aevae_jax.models import make_model
from aevae_jax.models.hierarchical_vae import HVAEOptions, conv3x3
from aevae_jax.nn.optim import skip_large_gradients

OPTS = {"stochastic_layers": 3, "z_channels": 2, "channels": 8, "kl_warmup_steps": 10}


def test_stride_one_convolution_matches_xlas():
    x = jax.random.normal(jax.random.key(0), (2, 7, 5, 3))
    k = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    np.testing.assert_allclose(conv3x3(x, k, "im2col"), conv3x3(x, k, "xla"), rtol=1e-5, atol=1e-5)


def log_normal(z, m, lv):
    z, m, lv = (np.asarray(a, np.float64) for a in (z, m, lv))
    return (-0.5 * (np.log(2 * np.pi) + lv + (z - m) ** 2 / np.exp(lv))).reshape(len(z), -1).sum(1)


def test_loss_and_weights_by_hand_and_decode_replays_the_top_down_pass():
    model, params, batch = build("hvae", **OPTS)
    h = model.init.__self__  # the Hierarchical whose methods the Model holds
    key = jax.random.key(2)
    logits, zs, posts, priors = h.run(params, batch.x, h.draw(key))
    kls = []
    for (mq, lq), (mp, lp) in zip(posts, priors, strict=True):
        mq, lq, mp, lp = (np.asarray(a, np.float64) for a in (mq, lq, mp, lp))
        kl = 0.5 * (lp - lq + (np.exp(lq) + (mq - mp) ** 2) / np.exp(lp) - 1)
        kls.append(kl.reshape(6, -1).sum(1))
    recon = bernoulli_nll_by_hand(logits, batch.x)
    for step, beta in ((0, 0.1), (4, 0.5), (50, 1.0)):
        loss, metrics = model.loss(params, batch, key, step)
        assert float(metrics["kl_weight"]) == pytest.approx(beta)
        assert float(loss) == pytest.approx(np.mean(recon + beta * sum(kls)), rel=1e-4)
    for j, kl in enumerate(kls):  # kl_z1: the last generated layer, nearest the data
        assert float(metrics[f"kl_z{3 - j}"]) == pytest.approx(kl.mean(), rel=1e-3, abs=1e-5)
    # The code is every layer's z; decoding it replays the same top-down pass.
    code, log_q = model.posterior(params, batch, key)
    np.testing.assert_allclose(model.decode(params, code), logits, rtol=1e-5, atol=1e-5)
    q_by_hand = sum(log_normal(z, *q) for z, q in zip(zs, posts, strict=True))
    p_by_hand = sum(log_normal(z, *p) for z, p in zip(zs, priors, strict=True))
    np.testing.assert_allclose(log_q, q_by_hand, rtol=1e-4)
    np.testing.assert_allclose(model.prior.log_prob(params, code), p_by_hand, rtol=1e-4)
    log_w = h.log_weight(params, batch, key)
    np.testing.assert_allclose(log_w, -recon + p_by_hand - q_by_hand, rtol=1e-4)


def test_importance_weights_agree_with_the_closed_form_elbo_in_expectation():
    model, params, batch = build("hvae", **{**OPTS, "kl_warmup_steps": 0})
    assert_weights_match_the_loss_in_expectation(model, params, batch, jax.random.key(3), 2000)
    assert model.sample(params, jax.random.key(4), 5).shape == (5, 4, 4, 1)


def test_huge_gradients_are_skipped_and_others_pass_unchanged():
    params = {"w": jnp.ones(3)}
    inner = optax.adam(0.1)
    tx = skip_large_gradients(inner, max_norm=10.0)
    state = tx.init(params)
    small = {"w": jnp.array([1.0, -2.0, 0.5])}
    updates, state1 = tx.update(small, state, params)
    expected, inner1 = inner.update(small, inner.init(params), params)
    np.testing.assert_array_equal(updates["w"], expected["w"])
    assert int(state1.skipped) == 0
    for bad in ({"w": jnp.array([100.0, 0.0, 0.0])}, {"w": jnp.array([jnp.nan, 0.0, 0.0])}):
        updates, state2 = tx.update(bad, state1, params)
        np.testing.assert_array_equal(updates["w"], 0.0)
        assert int(state2.skipped) == 1
        for a, b in zip(jax.tree.leaves(state2.inner), jax.tree.leaves(inner1), strict=True):
            np.testing.assert_array_equal(a, b)  # the moments did not see the huge step


def test_options_and_shapes_name_their_remedy():
    with pytest.raises(UserError, match="--stochastic-layers must be a positive integer"):
        HVAEOptions(stochastic_layers=0)
    with pytest.raises(UserError, match="divisible by 4"):
        make_model(ModelConfig(name="hvae"), DataSpec("odd", (30, 30, 1), None))
