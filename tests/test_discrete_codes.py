"""FSQ and residual quantisation: FSQ's rounding onto its grid, the mixed-radix indices
and their inverse, its straight-through gradient; residual quantisation against a NumPy
nearest-neighbour search, its error shrinking with depth, and each loss by hand (depth 1
is the VQ-VAE)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import bernoulli_nll_by_hand, build

from aevae_jax.errors import UserError
from aevae_jax.models.fsq import FSQOptions, digits_to_index, fsq_round, index_to_values
from aevae_jax.models.rq_vae import RQOptions, residual_quantize


@pytest.mark.parametrize("levels", [(5, 3), (4, 5, 2)])
def test_fsq_rounds_onto_its_grid_and_indexes_every_point_once(levels):
    z = jnp.asarray(np.random.default_rng(0).normal(size=(20000, len(levels))) * 3, jnp.float32)
    digits, z_q = fsq_round(z, levels)
    digits, z_q = np.asarray(digits), np.asarray(z_q)
    for i, lv in enumerate(levels):
        half = lv // 2
        assert set(np.unique(digits[:, i])) == set(range(lv))  # every level reached
        grid = (np.arange(lv) - half) / half
        np.testing.assert_allclose(z_q[:, i], grid[digits[:, i]], atol=1e-6)
    index = np.asarray(digits_to_index(jnp.asarray(digits), levels))
    by_hand = np.zeros(len(index), int)
    for i, lv in enumerate(levels):  # mixed radix, the first digit most significant
        by_hand = by_hand * lv + digits[:, i]
    np.testing.assert_array_equal(index, by_hand)
    assert len(np.unique(index)) == np.prod(levels)
    np.testing.assert_allclose(index_to_values(jnp.asarray(index), levels), z_q, atol=1e-6)


def test_fsq_gradient_is_the_bounding_functions_straight_through():
    levels = (5, 4)
    z = jax.random.normal(jax.random.key(0), (7, 2))
    w = jax.random.normal(jax.random.key(1), (7, 2))
    g = jax.grad(lambda v: jnp.sum(w * fsq_round(v, levels)[1]))(z)
    lv = np.array(levels, np.float64)
    half_l = (lv - 1) * (1 - 1e-3) / 2
    shift = np.tan(np.where(lv % 2 == 0, 0.5, 0.0) / half_l)
    t = np.tanh(np.asarray(z, np.float64) + shift)
    expected = np.asarray(w) * (1 - t**2) * half_l / np.floor(lv / 2)
    np.testing.assert_allclose(g, expected, rtol=1e-4)


def test_fsq_trains_its_encoder_through_the_bounding_function():
    model, params, batch = build("fsq", levels="4,3")
    parts = model.init.__self__  # the FSQParts whose methods the Model holds

    def by_hand(p):  # bound, round straight through, scale, decode; nothing else
        z_q = fsq_round(parts.encoder_out(p, batch.x), (4, 3))[1]
        return jnp.mean(model.likelihood.nll(model.decode(p, z_q), batch.x))

    got = jax.grad(lambda p: model.loss(p, batch, jax.random.key(0), 0)[0])(params)
    want = jax.grad(by_hand)(params)
    for a, b in zip(jax.tree.leaves(got["encoder"]), jax.tree.leaves(want["encoder"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_fsq_loss_is_the_reconstruction_alone_by_hand():
    model, params, batch = build("fsq", levels="3,3")
    assert set(params) == {"encoder", "decoder", "prior"} and model.num_codes == 9
    loss, _ = model.loss(params, batch, jax.random.key(0), 0)
    enc = model.encode(params, batch)
    recon = bernoulli_nll_by_hand(model.decode(params, enc.code), batch.x)
    assert float(loss) == pytest.approx(recon.mean(), rel=1e-5)
    np.testing.assert_array_equal(enc.indices.shape, (6, 3))


def rq_by_hand(z, codebook, depth):
    """Greedy residual quantisation by explicit nearest-neighbour loops."""
    z, codebook = np.asarray(z, np.float64), np.asarray(codebook, np.float64)
    residual, idx, errors = z.copy(), [], []
    for _ in range(depth):
        d = ((residual[:, None, :] - codebook[None]) ** 2).sum(-1)
        k = d.argmin(1)
        residual = residual - codebook[k]
        idx.append(k)
        errors.append((residual**2).sum(1))
    return np.stack(idx, -1), np.stack(errors)


def test_residual_quantisation_matches_numpy_and_its_error_shrinks_with_depth():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(500, 4))
    # A codebook at the residuals' scales, as training gives one: its error falls at each step.
    codebook = np.concatenate([rng.normal(size=(32, 4)) * s for s in (1.0, 0.4, 0.15)])
    z32, book32 = jnp.asarray(z, jnp.float32), jnp.asarray(codebook, jnp.float32)
    idx, partial, _ = residual_quantize(z32, book32, 3)
    by_hand, errors = rq_by_hand(z, codebook, 3)
    np.testing.assert_array_equal(np.asarray(idx), by_hand)
    got = ((np.asarray(partial) - z[None]) ** 2).sum(-1)  # [depth, N]
    np.testing.assert_allclose(got, errors, rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(errors.mean(1)) < 0)
    # With the zero vector in the codebook, no step can raise any vector's error.
    with_zero = jnp.asarray(np.concatenate([codebook, np.zeros((1, 4))]), jnp.float32)
    _, partial0, _ = residual_quantize(z32, with_zero, 3)
    errors0 = ((np.asarray(partial0, np.float64) - z[None]) ** 2).sum(-1)
    assert np.all(np.diff(errors0, axis=0) <= 1e-5)


def test_rq_loss_by_hand_and_depth_one_is_the_vqvae():
    model, params, batch = build("rq_vae", rq_depth=3, code_dim=2, num_codes=8, commitment=0.5)
    loss, metrics = model.loss(params, batch, jax.random.key(0), 0)
    z_e = np.asarray(model.encode.__self__.encoder_out(params, batch.x), np.float64)  # [B, P, D]
    book = np.asarray(params["codebook"]["vectors"], np.float64)
    flat = z_e.reshape(-1, 2)
    idx, _ = rq_by_hand(flat, book, 3)
    vectors = book[idx]  # [B P, depth, D]
    partial = np.cumsum(vectors, axis=1)
    before = flat[:, None] - np.concatenate([np.zeros((len(flat), 1, 2)), partial[:, :-1]], 1)
    z_q = partial[:, -1].reshape(6, -1)
    recon = bernoulli_nll_by_hand(model.decode(params, jnp.asarray(z_q, jnp.float32)), batch.x)
    commit = ((flat[:, None] - partial) ** 2).sum((1, 2)).reshape(6, -1).sum(1)
    book_loss = ((before - vectors) ** 2).sum((1, 2)).reshape(6, -1).sum(1)
    assert float(metrics["commitment"]) == pytest.approx(commit.mean(), rel=1e-4)
    assert float(loss) == pytest.approx((recon + 0.5 * commit + book_loss).mean(), rel=1e-4)
    np.testing.assert_array_equal(model.encode(params, batch).indices.shape, (6, 3, 3))
    vq, vq_params, _ = build("vqvae", code_dim=2, num_codes=8)
    rq1, _, _ = build("rq_vae", rq_depth=1, code_dim=2, num_codes=8)
    key = jax.random.key(1)
    assert float(rq1.loss(vq_params, batch, key, 0)[0]) == float(
        vq.loss(vq_params, batch, key, 0)[0]
    )


def test_options_name_their_remedy():
    with pytest.raises(UserError, match="--levels must be integers separated by commas"):
        FSQOptions(levels="5;5")
    with pytest.raises(UserError, match="--levels must each be at least 2"):
        FSQOptions(levels="5,1")
    with pytest.raises(UserError, match="--rq-depth must be a positive integer"):
        RQOptions(rq_depth=0)
