"""Every registered model's train step and evaluation; then the generative variants,
each against its formula and its own mechanism: beta-VAE's schedules, IWAE's bound, the
conditional VAE's labels, the VQ-VAE's quantiser, EMA codebook and prior stage, and the
adversarial AE's two players. (The reconstruction variants: test_reconstruction_variants.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    SMALL_OPTIONS,
    TINY,
    bernoulli_nll_by_hand,
    build,
    elbo_terms_by_hand,
    log_weights_by_hand,
)
from scipy.special import logsumexp

from aevae_jax.config import ModelConfig, OptimConfig
from aevae_jax.data.spec import Dataset
from aevae_jax.evaluate.evaluation import evaluate_model
from aevae_jax.evaluate.samplers import SamplerOptions, with_claimed
from aevae_jax.evaluate.scores import iwae_log_likelihood
from aevae_jax.models import Batch, make_model, model_info, model_names
from aevae_jax.models.aae import discriminator_losses, generator_losses
from aevae_jax.models.beta_vae import BetaVAEOptions, beta_at
from aevae_jax.models.vqvae import MADE, ema_pull, made_log_prob, quantize, straight_through
from aevae_jax.nn.optim import frozen, param_groups
from aevae_jax.train.stages import plan_stages
from aevae_jax.train.step import make_update


def leaves_equal(a, b) -> bool:
    return all(
        bool(np.array_equal(x, y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def changed(before, after) -> dict[str, bool]:
    """Per top-level parameter group: did any of its arrays change?"""
    return {k: not leaves_equal(before[k], after[k]) for k in before}


class _RunCfg:  # what plan_stages reads of a RunConfig
    optim = OptimConfig()
    epochs = 1


# ----------------------------------------------------------------- every model


# Options that make a model's mechanism act on 4x4 images (a 2x2 grid of patches).


class PixelClassifier:
    """A stand-in for the FD classifier on 4x4 images (the evaluation's interface): the
    pixels are the features, and the class is the number of lit pixels modulo 3."""

    def features(self, x, progress=False):
        return np.asarray(x, np.float64).reshape(len(x), -1)

    def features_and_predictions(self, x, progress=False):
        f = self.features(x)
        return f, np.round(f.sum(1) * 255).astype(int) % 3


@pytest.mark.parametrize("name", model_names())
def test_a_train_step_changes_the_weights_and_evaluation_does_not(name):
    model, params, batch = build(name, **SMALL_OPTIONS.get(name, {}))
    plans = plan_stages(model, _RunCfg, steps_per_epoch=10)
    plan = plans[0]
    update = jax.jit(make_update(plan.loss, plan.tx))
    new, _, value, _ = update(params, plan.tx.init(params), batch, jax.random.key(2), 0)
    moved = changed(params, new)
    assert moved["encoder"] and moved["decoder"] and np.isfinite(float(value))
    if "prior" in moved:  # the VQ-VAE's prior waits for its own stage
        assert not moved["prior"]
        stage = plans[1]
        later = jax.jit(make_update(stage.loss, stage.tx))(
            new, stage.tx.init(new), batch, jax.random.key(3), 1
        )[0]
        groups = {"encoder", "decoder", "prior"} | ({"codebook"} if name != "fsq" else set())
        assert set(new) == groups, (name, set(new))  # FSQ rounds: it has no codebook
        assert changed(new, later) == {group: group == "prior" for group in new}

    # Evaluation reads the parameters and never changes them (nor consumes their buffers).
    x_u8 = np.asarray(np.random.default_rng(0).integers(0, 256, (40, 4, 4, 1)), np.uint8)
    y = np.arange(40, dtype=np.int32) % 3
    factors = np.stack([np.arange(16) % 2, np.arange(16) // 2 % 4], 1).astype(np.int32)
    ds = Dataset("tiny", x_u8[:24], x_u8[24:], y[:24], y[24:], ("a", "b", "c"), factors, ("f", "g"))
    snapshot = jax.tree.map(np.array, new)
    samplers = with_claimed(SamplerOptions(), model_info(name).claims)  # as compare does
    ev = evaluate_model(model, new, ds, "dynamic", jax.random.key(4), iwae_k=3,
                        classifier=PixelClassifier(), chunk=8, samplers=samplers)  # fmt: skip
    assert leaves_equal(snapshot, new)
    assert np.isfinite(ev.metrics["test_mse"]) and 0 <= ev.metrics["probe_accuracy"] <= 1
    assert np.isfinite(ev.metrics["prior_sample_fd"])
    # Known factors: the disentanglement metrics of continuous codes, each within [0, 1].
    for key in ("mig", "sap", "dci_disentanglement", "dci_completeness", "factorvae_score"):
        assert (key in ev.metrics) == (model.num_codes is None), (name, key)
        assert 0 <= ev.metrics.get(key, 0) <= 1 + 1e-9, (name, key)
    # The report can check each of the model's claims: its evaluation produces the metric,
    # and the model it is compared with is registered (the zoo test trains a subset).
    for claim in model_info(name).claims:
        assert np.isfinite(ev.metrics[claim.metric]), (name, claim.metric)
        if isinstance(claim.than, str) and claim.than != "chance":
            assert claim.than in model_names(), (name, claim.than)


# ----------------------------------------------------------------- beta-VAE


def test_beta_schedules_at_given_steps():
    lin = BetaVAEOptions(beta=4.0, kl_schedule="linear", kl_warmup_steps=100)
    assert [float(beta_at(lin, s)) for s in (0, 25, 100, 500)] == [0.0, 1.0, 4.0, 4.0]
    cyc = BetaVAEOptions(beta=2.0, kl_schedule="cyclical", kl_cycle_steps=100, kl_cycle_ramp=0.5)
    values = [float(beta_at(cyc, s)) for s in (0, 25, 50, 99, 100, 125)]
    assert values == pytest.approx([0.0, 1.0, 2.0, 2.0, 0.0, 1.0])
    assert float(beta_at(BetaVAEOptions(beta=3.0), 12345)) == 3.0


def test_beta_vae_loss_by_hand_at_a_warm_up_step():
    model, params, batch = build("beta_vae", beta=4.0, kl_schedule="linear", kl_warmup_steps=10)
    key = jax.random.key(7)
    loss, metrics = model.loss(params, batch, key, 5)
    recon, kl = elbo_terms_by_hand(model, params, batch, key)
    assert float(metrics["beta"]) == pytest.approx(2.0)
    assert float(loss) == pytest.approx((recon + 2.0 * kl).mean(), rel=1e-4)
    assert float(metrics["kl"]) == pytest.approx(kl.mean(), rel=1e-4)


# ----------------------------------------------------------------- IWAE


def test_iwae_loss_is_the_k_sample_bound_by_hand():
    model, params, batch = build("iwae", k=4)
    key = jax.random.key(3)
    loss, _ = model.loss(params, batch, key, 0)
    log_w = log_weights_by_hand(model, params, batch, key, 4)
    by_hand = -(logsumexp(log_w, axis=0) - np.log(4)).mean()
    assert float(loss) == pytest.approx(by_hand, rel=1e-4)


def test_iwae_with_one_sample_is_the_vaes_elbo_for_the_same_key():
    iwae, params, batch = build("iwae", k=1)
    vae = make_model(ModelConfig(name="vae", hidden=(16,), latent_dim=3), TINY)
    key = jax.random.key(9)
    loss, _ = iwae.loss(params, batch, key, 0)
    # The same z as the VAE's loss draws from the key; the bound is the Monte-Carlo ELBO.
    _, vae_terms = vae.loss(params, batch, key, 0)
    log_w = log_weights_by_hand(iwae, params, batch, key, 1)[0]
    recon, _ = elbo_terms_by_hand(vae, params, batch, key)
    assert float(loss) == pytest.approx(-log_w.mean(), rel=1e-5)
    assert float(vae_terms["recon"]) == pytest.approx(recon.mean(), rel=1e-5)
    # And the evaluator's K = 1 estimate is this very bound.
    est = iwae_log_likelihood(iwae.log_importance_weights, params, batch, key, 1)
    w0 = log_weights_by_hand(iwae, params, batch, jax.random.fold_in(key, 0), 1)[0]
    np.testing.assert_allclose(np.asarray(est), w0, rtol=1e-5)


# ----------------------------------------------------------------- conditional VAE


def test_cvae_loss_by_hand_and_labels_matter():
    model, params, batch = build("cvae")
    key = jax.random.key(4)
    loss, _ = model.loss(params, batch, key, 0)
    recon, kl = elbo_terms_by_hand(model, params, batch, key)
    assert float(loss) == pytest.approx((recon + kl).mean(), rel=1e-4)
    other = Batch(batch.x, (batch.y + 1) % 3)
    assert not np.allclose(model.loss(params, other, key, 0)[0], loss)
    a = model.sample(params, jax.random.key(5), 6, jnp.zeros(6, jnp.int32))
    b = model.sample(params, jax.random.key(5), 6, jnp.full(6, 2, jnp.int32))
    assert a.shape == (6, 4, 4, 1) and float(jnp.max(jnp.abs(a - b))) > 1e-4
    # The encoder sees the label too: q(z|x, y) moves with y.
    assert not np.allclose(model.encode(params, batch).code, model.encode(params, other).code)


# ----------------------------------------------------------------- VQ-VAE


def test_vq_assignment_matches_a_numpy_nearest_neighbour_search():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 5, 3)).astype(np.float32)
    book = rng.normal(size=(11, 3)).astype(np.float32)
    idx, z_q = quantize(jnp.asarray(z), jnp.asarray(book))
    dist = ((z[:, :, None, :] - book[None, None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(idx), dist.argmin(-1))
    np.testing.assert_allclose(np.asarray(z_q), book[dist.argmin(-1)])


def test_straight_through_gradient_passes_the_quantiser_unchanged():
    z_e = jnp.array([[0.3, -1.2], [2.0, 0.1]])
    z_q = jnp.array([[0.0, -1.0], [2.5, 0.0]])
    f = lambda z: jnp.sum(jnp.sin(straight_through(z, z_q)))
    np.testing.assert_allclose(straight_through(z_e, z_q), z_q)
    np.testing.assert_allclose(jax.grad(f)(z_e), np.cos(np.asarray(z_q)), rtol=1e-6)


def test_vqvae_loss_by_hand():
    model, params, batch = build("vqvae", num_codes=5, code_dim=2, commitment=0.25)
    loss, metrics = model.loss(params, batch, None, 0)
    z_e = np.asarray(model_encoder_out(model, params, batch), np.float64)  # [B, P, D]
    book = np.asarray(params["codebook"]["vectors"], np.float64)
    idx = ((z_e[:, :, None] - book[None, None]) ** 2).sum(-1).argmin(-1)
    z_q = book[idx]
    logits = model.decode(params, jnp.asarray(z_q.reshape(6, -1), jnp.float32))
    recon = bernoulli_nll_by_hand(logits, batch.x)
    sq = ((z_e - z_q) ** 2).sum((1, 2))
    assert float(loss) == pytest.approx((recon + sq + 0.25 * sq).mean(), rel=1e-4)
    np.testing.assert_array_equal(np.asarray(model.encode(params, batch).indices), idx)
    assert float(metrics["commitment"]) == pytest.approx(sq.mean(), rel=1e-4)


def model_encoder_out(model, params, batch):
    """z_e: the VQ-VAE encoder's output before quantisation, from its code and indices."""
    from aevae_jax.models.base import make_backbone_fns

    cfg = ModelConfig(name="vqvae", hidden=(16,), latent_dim=3)
    net = make_backbone_fns(cfg, TINY.image_shape, 3 * 2, code_dim=3 * 2)
    return net.encoder(params, batch.x).reshape(6, 3, 2)


def test_ema_pull_makes_sgd_a_moving_average():
    p, t = jnp.array([1.0, -2.0, 4.0]), jnp.array([3.0, 0.0, 4.0])
    assert float(ema_pull(p, t, 0.9)) == 0.0
    g = jax.grad(lambda q: ema_pull(q, t, 0.9))(p)
    np.testing.assert_allclose(p - g, 0.9 * p + 0.1 * t, rtol=1e-6)


def test_vqvae_ema_codebook_moves_to_the_moving_average_of_assignments():
    model, params, batch = build("vqvae", num_codes=5, code_dim=2, ema=True, ema_decay=0.8)
    plan = plan_stages(model, _RunCfg, 10)[0]
    new = make_update(plan.loss, plan.tx)(params, plan.tx.init(params), batch, None, 0)[0]
    idx = np.asarray(model.encode(params, batch).indices).ravel()
    counts = np.bincount(idx, minlength=5)
    np.testing.assert_allclose(
        new["codebook"]["count"],
        0.8 * np.asarray(params["codebook"]["count"]) + 0.2 * counts,
        rtol=1e-5,
    )
    z_e = np.asarray(model_encoder_out(model, params, batch), np.float64).reshape(-1, 2)
    sums = np.zeros((5, 2))
    np.add.at(sums, idx, z_e)  # the sum of the encoder outputs assigned to each code
    np.testing.assert_allclose(
        new["codebook"]["sum"],
        0.8 * np.asarray(params["codebook"]["sum"]) + 0.2 * sums,
        rtol=1e-5,
        atol=1e-6,
    )


def test_made_prior_is_autoregressive_and_normalised():
    made = MADE(positions=3, classes=4, hidden=16)
    params = made.init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))["params"]
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape), params)
    grid = jnp.array(np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3))
    log_p = made_log_prob(made, params, grid)
    assert float(jax.nn.logsumexp(log_p)) == pytest.approx(0.0, abs=1e-5)  # sums to one
    # The logits of position p do not depend on positions >= p.
    logits = made.apply({"params": params}, grid)
    same_prefix = np.asarray((grid[:, 0] == 1) & (grid[:, 1] == 2))
    rows = np.asarray(logits)[same_prefix]  # the last position varies; no logit may see it
    np.testing.assert_allclose(rows, np.broadcast_to(rows[:1], rows.shape), rtol=1e-5, atol=1e-6)
    first = np.asarray(logits)[:, 0]  # position 0 sees nothing: its logits are one marginal
    np.testing.assert_allclose(first, np.broadcast_to(first[:1], first.shape), rtol=1e-5)


# ----------------------------------------------------------------- adversarial AE


def test_aae_players_move_only_through_their_own_losses():
    model, params, batch = build("aae", adv_weight=2.0)
    key = jax.random.key(8)
    grads = jax.grad(lambda p: model.loss(p, batch, key, 0)[0])(params)
    from aevae_jax.models.base import make_backbone_fns
    from aevae_jax.nn.backbones import MLPEncoder

    net = make_backbone_fns(
        ModelConfig(name="aae", hidden=(16,), latent_dim=3), TINY.image_shape, 3
    )
    disc = MLPEncoder((256, 256), 1)
    critic = lambda dp, z: disc.apply({"params": dp}, z)[:, 0]

    def autoencoder_loss(enc_dec):
        z = net.encoder(enc_dec, batch.x)
        recon = jnp.sum((jax.nn.sigmoid(net.decoder(enc_dec, z)) - batch.x) ** 2, axis=(1, 2, 3))
        return jnp.mean(recon + 2.0 * generator_losses(critic(params["discriminator"], z)))

    def discriminator_loss(dp):
        z = net.encoder(params, batch.x)
        real = critic(dp, jax.random.normal(key, z.shape))
        return jnp.mean(discriminator_losses(real, critic(dp, z)))

    g_ae = jax.grad(autoencoder_loss)({"encoder": params["encoder"], "decoder": params["decoder"]})
    g_d = jax.grad(discriminator_loss)(params["discriminator"])
    for got, want in (
        (grads["encoder"], g_ae["encoder"]),
        (grads["decoder"], g_ae["decoder"]),
        (grads["discriminator"], g_d),
    ):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def test_aae_discriminator_has_its_own_optimiser():
    model, params, batch = build("aae", disc_lr=1e-5)
    tx = model.optimizer(OptimConfig(lr=1e-2), 10)
    new = make_update(model.loss, tx)(params, tx.init(params), batch, jax.random.key(0), 0)[0]
    step = lambda k: max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(new[k]), jax.tree.leaves(params[k]), strict=True)
    )
    # Adam's first step moves each weight by about its learning rate.
    assert step("encoder") == pytest.approx(1e-2, rel=0.05)
    assert step("discriminator") == pytest.approx(1e-5, rel=0.05)


def test_param_groups_need_every_parameter_and_frozen_means_frozen():
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    tx = param_groups(
        {"train": optax.adamw(0.1, weight_decay=0.5), "stay": frozen()}, {"a": "train", "b": "stay"}
    )
    updates, _ = tx.update({"a": jnp.ones(3), "b": jnp.ones(2)}, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert not np.allclose(new["a"], 1.0) and np.array_equal(new["b"], params["b"])
    with pytest.raises(ValueError, match="belong to no group"):
        param_groups({"train": optax.sgd(1.0)}, {"a": "train"}).init(params)
