"""MIWAE, CIWAE and PIWAE (Rainforth et al. 2018): each bound against a NumPy hand
computation from the log-weights, each objective at its VAE/IWAE corners, and PIWAE's
mechanism on its own (the decoder's gradient is the IWAE bound's, the encoder's the
MIWAE bound's)."""

import jax
import numpy as np
import pytest
from helpers import build, log_weights_by_hand
from scipy.special import logsumexp

from aevae_jax.errors import UserError
from aevae_jax.models.multi_sample import CIWAEOptions, GroupedOptions, ciwae_bound, miwae_bound


def iwae_by_hand(log_w):
    return logsumexp(log_w, axis=0) - np.log(len(log_w))


def test_bounds_by_hand_and_their_order():
    log_w = np.random.default_rng(0).normal(size=(6, 5)) * 3
    # MIWAE(2, 3): the mean of the bounds of draws 0-2 and 3-5.
    by_hand = (iwae_by_hand(log_w[:3]) + iwae_by_hand(log_w[3:])) / 2
    np.testing.assert_allclose(miwae_bound(log_w, 2), by_hand, rtol=1e-5)
    np.testing.assert_allclose(miwae_bound(log_w, 1), iwae_by_hand(log_w), rtol=1e-5)
    np.testing.assert_allclose(miwae_bound(log_w, 6), log_w.mean(0), rtol=1e-5)
    mix = 0.3 * log_w.mean(0) + 0.7 * iwae_by_hand(log_w)
    np.testing.assert_allclose(ciwae_bound(log_w, 0.3), mix, rtol=1e-5)
    # ELBO <= MIWAE(2, 3) <= IWAE(6) for every example (Jensen, per group).
    assert np.all(log_w.mean(0) <= by_hand + 1e-9)
    assert np.all(by_hand <= iwae_by_hand(log_w) + 1e-9)


@pytest.mark.parametrize(
    "name,options,bound",
    [
        ("miwae", {"m": 2, "k": 2}, lambda w: miwae_bound(w, 2)),
        ("ciwae", {"k": 4, "ciwae_beta": 0.25}, lambda w: ciwae_bound(w, 0.25)),
        ("piwae", {"m": 2, "k": 2}, iwae_by_hand),  # the value is the IWAE bound
    ],
)
def test_each_loss_is_its_bound_of_the_hand_computed_weights(name, options, bound):
    model, params, batch = build(name, **options)
    key = jax.random.key(3)
    loss, metrics = model.loss(params, batch, key, 0)
    log_w = log_weights_by_hand(model, params, batch, key, 4)
    expected = np.mean(np.asarray(bound(log_w)))
    assert float(loss) == pytest.approx(-expected, rel=1e-4)
    assert float(metrics[f"{name}_bound"]) == pytest.approx(expected, rel=1e-4)


def test_corners_are_the_iwae_and_the_vae_for_the_same_key():
    key = jax.random.key(5)
    iwae, params, batch = build("iwae", k=3)
    target = float(iwae.loss(params, batch, key, 0)[0])
    for name, options in (("miwae", {"m": 1, "k": 3}), ("ciwae", {"k": 3, "ciwae_beta": 0.0}),
                          ("piwae", {"m": 1, "k": 3})):  # fmt: skip
        model, _, _ = build(name, **options)
        assert float(model.loss(params, batch, key, 0)[0]) == pytest.approx(target, rel=1e-6)
    elbo = -log_weights_by_hand(iwae, params, batch, key, 3).mean()
    ciwae, _, _ = build("ciwae", k=3, ciwae_beta=1.0)
    assert float(ciwae.loss(params, batch, key, 0)[0]) == pytest.approx(elbo, rel=1e-5)


def test_piwae_trains_the_decoder_on_iwae_and_the_encoder_on_miwae():
    piwae, params, batch = build("piwae", m=2, k=3)
    miwae, _, _ = build("miwae", m=2, k=3)
    iwae, _, _ = build("iwae", k=6)
    key = jax.random.key(7)

    def grad(model):
        return jax.grad(lambda p: model.loss(p, batch, key, 0)[0])(params)

    g, g_iwae, g_miwae = grad(piwae), grad(iwae), grad(miwae)
    for part, reference in (("decoder", g_iwae), ("encoder", g_miwae)):
        for a, b in zip(jax.tree.leaves(g[part]), jax.tree.leaves(reference[part]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The two differ: the split is not a no-op on these weights.
    enc_iwae, enc_miwae = jax.tree.leaves(g_iwae["encoder"]), jax.tree.leaves(g_miwae["encoder"])
    pairs = zip(enc_iwae, enc_miwae, strict=True)
    assert any(not np.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in pairs)


def test_options_name_their_remedy():
    with pytest.raises(UserError, match="--m must be a positive integer"):
        GroupedOptions(m=0)
    with pytest.raises(UserError, match=r"--ciwae-beta must lie in \[0, 1\]"):
        CIWAEOptions(ciwae_beta=1.5)
