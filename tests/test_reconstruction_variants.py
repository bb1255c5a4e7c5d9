"""The reconstruction variants against their formulas and their own mechanisms: the
denoising AE's and VAE's keyed corruption and clean targets, the sparse AE's penalties,
and the masked AE's patch masks and hidden-patch loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import bernoulli_nll_by_hand, build

from aevae_jax.data.spec import DataSpec
from aevae_jax.errors import UserError
from aevae_jax.evaluate.metrics import hoyer_sparsity
from aevae_jax.evaluate.scores import EVAL_MASK_RATIO, inpainting_mask, inpainting_text
from aevae_jax.models import Batch, resolve
from aevae_jax.models.dae import NOISE_STREAM
from aevae_jax.models.mae import MASK_STREAM, hidden_patch_loss, patchify
from aevae_jax.models.sparse_ae import SparseAEOptions, sparsity_penalties
from aevae_jax.nn.corruption import (
    NoiseOptions,
    check_patches,
    corrupt,
    patch_mask,
    patch_visibility,
    pixel_mask,
)


def sigmoid(a):
    return 1 / (1 + np.exp(-np.asarray(a, np.float64)))


# ----------------------------------------------------------------- corruption


def test_each_corruption_by_its_definition():
    x = jnp.full((200, 10, 10, 1), 0.5)
    key = jax.random.key(0)
    sp = np.asarray(corrupt(key, x, "salt_and_pepper", 0.3))
    hit = sp != 0.5
    assert set(np.unique(sp[hit])) == {0.0, 1.0}
    assert hit.mean() == pytest.approx(0.3, abs=0.01)
    assert (sp[hit] == 1).mean() == pytest.approx(0.5, abs=0.02)
    masked = np.asarray(corrupt(key, x, "masking", 0.25))
    assert set(np.unique(masked)) == {0.0, 0.5}
    assert (masked == 0).mean() == pytest.approx(0.25, abs=0.01)
    noise = np.asarray(corrupt(key, x, "gaussian", 0.1)) - 0.5
    assert noise.mean() == pytest.approx(0.0, abs=0.002)
    assert noise.std() == pytest.approx(0.1, rel=0.02)
    # keyed: the same key gives the same bits, another key other ones
    assert np.array_equal(sp, np.asarray(corrupt(key, x, "salt_and_pepper", 0.3)))
    assert not np.array_equal(sp, np.asarray(corrupt(jax.random.key(1), x, "salt_and_pepper", 0.3)))


def test_noise_options_refuse_bad_levels():
    with pytest.raises(UserError, match="--noise-level"):
        NoiseOptions("masking", 1.5)
    with pytest.raises(UserError, match="--noise must be"):
        NoiseOptions("blur", 0.1)


def test_dae_loss_is_the_clean_target_error_of_the_step_s_corrupted_input():
    model, params, batch = build("dae", noise="masking", noise_level=0.5)
    key = jax.random.key(5)
    loss, _ = model.loss(params, batch, key, 0)
    noisy = corrupt(jax.random.fold_in(key, NOISE_STREAM), batch.x, "masking", 0.5)
    assert not np.array_equal(noisy, batch.x)
    mean = sigmoid(model.decode(params, model.encode(params, Batch(noisy)).code))
    want = ((mean - np.asarray(batch.x)) ** 2).reshape(len(mean), -1).sum(1).mean()
    assert float(loss) == pytest.approx(want, rel=1e-5)
    # reproducible for a step's key, different at the next step's key
    assert float(model.loss(params, batch, key, 0)[0]) == float(loss)
    assert float(model.loss(params, batch, jax.random.key(6), 0)[0]) != float(loss)


def test_dvae_loss_scores_the_clean_image_under_q_of_the_corrupted_one():
    model, params, batch = build("dvae", noise="gaussian", noise_level=0.3)
    key = jax.random.key(8)
    loss, terms = model.loss(params, batch, key, 0)
    noisy = corrupt(jax.random.fold_in(key, NOISE_STREAM), batch.x, "gaussian", 0.3)
    q = model.encode(params, Batch(noisy, batch.y))
    mean, log_var = np.asarray(q.code, np.float64), np.asarray(q.log_var, np.float64)
    eps = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), q.code.shape))
    z = mean + np.exp(0.5 * log_var) * eps
    recon = bernoulli_nll_by_hand(model.decode(params, jnp.asarray(z, jnp.float32)), batch.x)
    kl = 0.5 * (np.exp(log_var) + mean**2 - 1 - log_var).sum(1)
    assert float(loss) == pytest.approx((recon + kl).mean(), rel=1e-4)
    assert float(terms["kl"]) == pytest.approx(kl.mean(), rel=1e-4)


# ----------------------------------------------------------------- sparse AE


def test_sparsity_penalties_by_hand():
    codes = np.array([[0.1, 0.9, 0.5], [0.3, 0.1, 0.5]])
    opts = SparseAEOptions(rho=0.2)
    l1, kl = sparsity_penalties(jnp.asarray(codes), opts)
    assert float(l1) == pytest.approx(np.abs(codes).sum(1).mean(), rel=1e-6)
    r = codes.mean(0)  # 0.2, 0.5, 0.5
    want = (0.2 * np.log(0.2 / r) + 0.8 * np.log(0.8 / (1 - r))).sum()
    assert float(kl) == pytest.approx(want, rel=1e-5)
    assert float(sparsity_penalties(jnp.full((4, 3), 0.2), opts)[1]) == pytest.approx(0, abs=1e-6)


def test_sparse_ae_loss_adds_the_weighted_penalties_to_the_reconstruction():
    model, params, batch = build("sparse_ae", l1_weight=0.3, kl_weight=2.0, rho=0.1)
    loss, _ = model.loss(params, batch, jax.random.key(0), 0)
    codes = np.asarray(model.encode(params, batch).code, np.float64)
    assert codes.min() > 0 and codes.max() < 1  # sigmoid codes
    mean = sigmoid(model.decode(params, jnp.asarray(codes, jnp.float32)))
    recon = ((mean - np.asarray(batch.x)) ** 2).reshape(len(mean), -1).sum(1).mean()
    r = codes.mean(0)
    kl = (0.1 * np.log(0.1 / r) + 0.9 * np.log(0.9 / (1 - r))).sum()
    want = recon + 0.3 * np.abs(codes).sum(1).mean() + 2.0 * kl
    assert float(loss) == pytest.approx(want, rel=1e-5)
    report = model.code_report(params, model.encode(params, batch), jax.random.key(0))
    assert report["code_mean_activation"] == pytest.approx(codes.mean(), rel=1e-5)


def test_sparse_ae_refuses_the_kl_penalty_on_unbounded_codes():
    with pytest.raises(UserError, match="--code-activation sigmoid"):
        SparseAEOptions(code_activation="relu")
    SparseAEOptions(code_activation="relu", kl_weight=0.0)  # L1 alone is fine


def test_hoyer_sparsity_by_hand():
    codes = np.array([[0.0, 0.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(hoyer_sparsity(codes), [1.0, 0.0, 1.0])
    v = np.array([[1.0, 2.0, 0.0, 0.0]])  # (2 - 3 / sqrt(5)) / (2 - 1)
    np.testing.assert_allclose(hoyer_sparsity(v), [2 - 3 / np.sqrt(5)])
    np.testing.assert_allclose(hoyer_sparsity(5 * v), hoyer_sparsity(v))  # blind to scale


# ----------------------------------------------------------------- masked AE


def test_patch_mask_hides_exactly_the_ratio_and_differs_per_example():
    m = np.asarray(patch_mask(jax.random.key(0), 64, (7, 7), 0.75))
    assert m.shape == (64, 7, 7)
    assert np.all((1 - m).reshape(64, -1).sum(1) == round(0.75 * 49))
    assert len({row.tobytes() for row in m}) == 64
    pixels = np.asarray(pixel_mask(jnp.asarray(m), 4))
    assert pixels.shape == (64, 28, 28, 1)
    np.testing.assert_array_equal(pixels[3, 4:8, 8:12, 0], m[3, 1, 2])
    np.testing.assert_array_equal(patch_visibility(jnp.asarray(pixels), 4), m.reshape(64, -1))


def test_patchify_orders_patches_row_major():
    x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    p = np.asarray(patchify(x, 2))
    assert p.shape == (2, 4, 4)
    np.testing.assert_array_equal(p[0, 1], [2, 3, 6, 7])  # top-right patch
    np.testing.assert_array_equal(p[1, 2], [24, 25, 28, 29])  # bottom-left patch


def test_hidden_patch_loss_covers_only_hidden_pixels():
    model, params, batch = build("mae", patch_size=2)
    mask = pixel_mask(patch_mask(jax.random.key(1), 6, (2, 2), 0.5), 2)
    logits = model.decode(params, model.encode(params, batch).code)
    base = hidden_patch_loss(model.likelihood, logits, batch.x, mask)
    visible_changed = hidden_patch_loss(model.likelihood, logits + 5.0 * mask, batch.x, mask)
    np.testing.assert_allclose(visible_changed, base, rtol=1e-6)
    hidden_changed = hidden_patch_loss(model.likelihood, logits + 5.0 * (1 - mask), batch.x, mask)
    assert np.all(np.asarray(hidden_changed) != np.asarray(base))


def test_mae_loss_by_hand_with_the_step_s_mask():
    model, params, batch = build("mae", patch_size=2, mask_ratio=0.5)
    key = jax.random.key(4)
    loss, _ = model.loss(params, batch, key, 0)
    mask = pixel_mask(patch_mask(jax.random.fold_in(key, MASK_STREAM), 6, (2, 2), 0.5), 2)
    seen = Batch(batch.x * mask, batch.y, mask)
    mean = sigmoid(model.decode(params, model.encode(params, seen).code))
    hidden = 1 - np.asarray(mask)
    want = (((mean - np.asarray(batch.x)) ** 2) * hidden).reshape(6, -1).sum(1).mean()
    assert float(loss) == pytest.approx(want, rel=1e-5)
    # the encoder honours the mask: the same pixels, told hidden, give another code
    told = model.encode(params, seen).code
    untold = model.encode(params, Batch(batch.x * mask, batch.y)).code
    assert not np.allclose(told, untold)


@pytest.mark.parametrize("encoder", ["tokens", "backbone"])
def test_mae_builds_on_both_backbones_for_colour_images(encoder):
    spec = DataSpec("c", (8, 8, 3), None)
    model, params, batch = build("mae", spec, patch_size=4, encoder=encoder)
    assert model.reconstruct(params, batch).shape == (6, 8, 8, 3)


def test_mae_refuses_a_patch_that_does_not_divide_the_image():
    with pytest.raises(UserError, match="patch size 3 must divide"):
        check_patches((28, 28, 1), 3)
    with pytest.raises(UserError, match="--token-dim"):
        resolve_mae(token_dim=30, heads=4)


def resolve_mae(**options):
    from aevae_jax.config import ModelConfig

    return resolve(ModelConfig(name="mae", options=options))


def test_inpainting_mask_of_the_evaluator():
    m = np.asarray(inpainting_mask(jax.random.key(0), (28, 28, 1)))
    assert m.shape == (28, 28, 1)
    assert (1 - m).sum() == round(EVAL_MASK_RATIO * 49) * 16
    assert inpainting_mask(jax.random.key(0), (30, 30, 1)) is None
    # The reports' words count the hidden patches as the mask does (half to even).
    for shape in ((28, 28, 1), (32, 32, 3)):
        hidden = (1 - np.asarray(inpainting_mask(jax.random.key(1), shape))).sum() / 16
        assert inpainting_text(shape).startswith(f"{hidden:.0f} of the ")
    assert inpainting_text((28, 28, 1)) == "24 of the 49 4x4 patches"
    assert inpainting_text((32, 32, 3)) == "32 of the 64 4x4 patches"
    assert inpainting_text(None) == "round(0.5 n) of the n 4x4 patches"


def test_corruption_tests_of_the_evaluator_draw_per_image_whatever_the_split_size():
    from aevae_jax.data.spec import Dataset
    from aevae_jax.evaluate.evaluation import evaluate_model

    spec = DataSpec("e", (8, 8, 1), None)
    model, params, _ = build("ae", spec)
    x = np.random.default_rng(0).integers(0, 256, (30, 8, 8, 1)).astype(np.uint8)
    small = Dataset("e", x[:10], x[10:18])
    large = Dataset("e", x[:10], x[10:30])
    key = jax.random.key(3)
    a = evaluate_model(model, params, small, "static", key, chunk=3).per_image
    b = evaluate_model(model, params, large, "static", key, chunk=7).per_image
    for name in ("denoise_mse", "inpaint_mse"):
        np.testing.assert_allclose(a[name], b[name][:8], rtol=1e-5)
        assert np.all(b[name] > 0), name
