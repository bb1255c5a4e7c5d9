"""The Ladder VAE: the precision-weighted merge against the product of two Gaussians, the
Gaussian-to-Gaussian KL, the top-down ELBO by hand (bottom-up evidence, merge, per-layer
closed-form KL), and its importance weights agreeing with that ELBO in expectation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_weights_match_the_loss_in_expectation, bernoulli_nll_by_hand, build

from aevae_jax.errors import UserError
from aevae_jax.models.ladder_vae import LadderOptions, precision_weighted
from aevae_jax.nn.likelihoods import kl_diag_gaussians, kl_to_std_normal


def log_normal(z, m, lv):
    return -0.5 * (np.log(2 * np.pi) + lv + (z - m) ** 2 / np.exp(lv))


def test_precision_weighted_merge_is_the_normalised_product():
    rng = np.random.default_rng(0)
    ma, la, mb, lb = (rng.normal(size=(4, 3)) for _ in range(4))
    m, lv = (np.asarray(a, np.float64) for a in precision_weighted(ma, la, mb, lb))
    np.testing.assert_allclose(np.exp(-lv), np.exp(-la) + np.exp(-lb), rtol=1e-5)
    # log N(z; a) + log N(z; b) - log N(z; merged) does not depend on z.
    gaps = [log_normal(z, ma, la) + log_normal(z, mb, lb) - log_normal(z, m, lv)
            for z in rng.normal(size=(5, 4, 3)) * 2]  # fmt: skip
    np.testing.assert_allclose(np.ptp(np.stack(gaps), axis=0), 0, atol=1e-4)


def test_kl_between_diagonal_gaussians_by_hand_and_by_sampling():
    rng = np.random.default_rng(1)
    mq, lq, mp, lp = (rng.normal(size=(3,)) for _ in range(4))
    by_hand = 0.5 * (lp - lq + (np.exp(lq) + (mq - mp) ** 2) / np.exp(lp) - 1)
    np.testing.assert_allclose(kl_diag_gaussians(mq, lq, mp, lp), by_hand, rtol=1e-5)
    z = mq + np.exp(0.5 * lq) * rng.normal(size=(200000, 3))
    mc = np.mean(log_normal(z, mq, lq) - log_normal(z, mp, lp), axis=0)
    np.testing.assert_allclose(mc, by_hand, atol=0.02)
    np.testing.assert_allclose(kl_diag_gaussians(mq, lq, 0.0, 0.0), kl_to_std_normal(mq, lq),
                               rtol=1e-6)  # fmt: skip


def test_ladder_elbo_by_hand():
    model, params, batch = build("ladder_vae", ladder_dims="2,2", ladder_hidden=8)
    lad = model.init.__self__  # the Ladder whose methods the Model holds
    key = jax.random.key(3)
    loss, metrics = model.loss(params, batch, key, 0)
    data = [
        tuple(np.asarray(a, np.float64) for a in pair) for pair in lad.bottom_up(params, batch.x)
    ]
    assert [d[0].shape[1] for d in data] == [3, 2, 2]

    def noise(i, dim):
        return np.asarray(jax.random.normal(jax.random.fold_in(key, i), (6, dim)), np.float64)

    mean, lv = data[2]
    z = mean + np.exp(0.5 * lv) * noise(3, 2)
    kls = {3: (0.5 * (np.exp(lv) + mean**2 - 1 - lv)).sum(1)}
    for i in (2, 1):
        m_p, lv_p = (
            np.asarray(a, np.float64) for a in lad.prior_of(params, i, jnp.asarray(z, jnp.float32))
        )
        prec = np.exp(-data[i - 1][1]) + np.exp(-lv_p)
        lv = -np.log(prec)
        mean = (data[i - 1][0] * np.exp(-data[i - 1][1]) + m_p * np.exp(-lv_p)) / prec
        kls[i] = (0.5 * (lv_p - lv + (np.exp(lv) + (mean - m_p) ** 2) / np.exp(lv_p) - 1)).sum(1)
        z = mean + np.exp(0.5 * lv) * noise(i, mean.shape[1])
    recon = bernoulli_nll_by_hand(model.decode(params, jnp.asarray(z, jnp.float32)), batch.x)
    for i in (1, 2, 3):
        assert float(metrics[f"kl_z{i}"]) == pytest.approx(kls[i].mean(), rel=1e-3, abs=1e-5)
    total = recon + kls[1] + kls[2] + kls[3]
    assert float(loss) == pytest.approx(total.mean(), rel=1e-4)


def test_importance_weights_agree_with_the_closed_form_elbo_in_expectation():
    model, params, batch = build("ladder_vae", ladder_dims="2", ladder_hidden=8)
    assert_weights_match_the_loss_in_expectation(model, params, batch, jax.random.key(4), 4000)
    # Prior samples come in layers, bottom first, and have finite log-densities.
    zs = model.prior.sample(params, jax.random.key(5), 7, None)
    assert [z.shape for z in zs] == [(7, 3), (7, 2)]
    assert np.all(np.isfinite(np.asarray(model.prior.log_prob(params, zs))))


def test_options_name_their_remedy():
    with pytest.raises(UserError, match="--ladder-dims must be integers"):
        LadderOptions(ladder_dims="ten")
    with pytest.raises(UserError, match="--ladder-dims must each be at least 1"):
        LadderOptions(ladder_dims="4,0")
