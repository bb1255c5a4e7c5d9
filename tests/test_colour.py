"""Colour images: the discretised logistic likelihood against its definition, bits per
dimension, the offline colour data set, and a VAE trained on it end to end."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit

from aevae_jax.cli.main import main
from aevae_jax.config import DataConfig, ModelConfig, RunConfig
from aevae_jax.data.sources import PHOTO_TEST_COLUMNS, load_dataset
from aevae_jax.errors import UserError
from aevae_jax.nn.likelihoods import bits_per_dim, discretized_logistic_log_prob, get_likelihood

LEVELS = np.arange(256) / 255.0


def logistic_cdf(v, mean, scale):
    return expit((v - mean) / scale)


@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (0.9, -5.0), (-1.3, 0.5), (0.2, -7.0)])
def test_discretised_logistic_is_the_bin_mass_and_sums_to_one(mean, log_scale):
    got = np.asarray(
        discretized_logistic_log_prob(jnp.float32(mean), jnp.float32(log_scale), LEVELS),
        np.float64,
    )
    assert np.exp(got).sum() == pytest.approx(1.0, abs=1e-5)
    # by hand, in float64: CDF differences over bins of width 2/255 on [-1, 1]
    s, v = math.exp(log_scale), 2 * LEVELS - 1
    upper = np.where(LEVELS < 1, logistic_cdf(v + 1 / 255, mean, s), 1.0)
    lower = np.where(LEVELS > 0, logistic_cdf(v - 1 / 255, mean, s), 0.0)
    want = upper - lower
    big = want > 1e-30  # where float64 still resolves the mass
    np.testing.assert_allclose(np.exp(got[big]), want[big], rtol=2e-3, atol=1e-7)


def test_logistic_likelihood_takes_two_outputs_per_channel_and_a_median_in_range():
    lik = get_likelihood("logistic")
    assert lik.channels == 2 and lik.data == "8bit"
    outputs = jnp.concatenate([jnp.full((1, 2, 2, 3), 1.7), jnp.full((1, 2, 2, 3), -2.0)], -1)
    np.testing.assert_allclose(lik.mean(outputs), 1.0)  # the location clipped to [-1, 1]
    x = jnp.full((1, 2, 2, 3), 128 / 255)
    assert lik.nll(outputs, x).shape == (1,)


def test_logistic_gradients_stay_finite_at_extreme_outputs():
    import jax

    lik = get_likelihood("logistic")
    x = jnp.asarray([0.0, 128 / 255, 1.0]).reshape(1, 1, 3, 1)
    for location, log_scale in [(0.0, 90.0), (0.0, -90.0), (50.0, 0.0), (-50.0, -7.0)]:
        outputs = jnp.concatenate([jnp.full_like(x, location), jnp.full_like(x, log_scale)], -1)
        grad = jax.grad(lambda o: lik.nll(o, x).sum())(outputs)
        assert np.all(np.isfinite(np.asarray(grad))), (location, log_scale)


def test_bits_per_dimension_by_hand():
    assert bits_per_dim(3072 * math.log(2) * 4.5, 3072) == pytest.approx(4.5)


def test_logistic_needs_the_grey_levels():
    with pytest.raises(UserError, match="--binarize none"):
        RunConfig(model=ModelConfig(likelihood="logistic"))
    RunConfig(data=DataConfig(binarize="none"), model=ModelConfig(likelihood="logistic"))


def test_offline_colour_set_is_split_by_columns_of_the_photographs():
    from sklearn.datasets import load_sample_images

    ds = load_dataset("sklearn_photos")
    assert ds.x_train.shape == (1550, 32, 32, 3) and ds.x_test.shape == (350, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.class_names == ("china", "flower")
    assert np.bincount(ds.y_train).tolist() == [775, 775]
    china = load_sample_images().images[0]
    cut = china.shape[1] - PHOTO_TEST_COLUMNS
    np.testing.assert_array_equal(ds.x_test[0], china[0:32, cut : cut + 32])
    np.testing.assert_array_equal(ds.x_train[1], china[0:32, 16:48])
    per_row = (cut - 32) // 16 + 1  # the last patch of a row ends where the test columns begin
    np.testing.assert_array_equal(ds.x_train[per_row - 1], china[0:32, cut - 32 : cut])
    train = {p.tobytes() for p in ds.x_train}
    assert not any(p.tobytes() in train for p in ds.x_test)


def test_a_vae_trains_on_the_colour_photos_and_reports_bits_per_dim(tmp_path, capsys):
    # The MLP backbone keeps this quick (XLA's CPU convolutions are slow); the conv
    # backbone with this likelihood is built and scored in test_models.py, and trained
    # by experiments/colour_vae.sh.
    run = tmp_path / "colour"
    args = (
        "train --model vae --dataset sklearn_photos --backbone mlp --likelihood logistic "
        "--binarize none --hidden 64 --latent-dim 8 --epochs 2 --batch-size 64 --train-size 384 "
        "--quiet"
    )
    code = main([*args.split(), "--out", str(run)])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert rows[-1]["test_neg_elbo"] < rows[0]["test_neg_elbo"]
    out = tmp_path / "eval.json"
    args = ["evaluate", "--run", str(run), "--iwae-k", "5", "--no-fd", "--json", str(out)]
    assert main(args) == 0
    m = json.loads(out.read_text())
    assert m["test_bpd"] == pytest.approx(m["test_neg_elbo"] / (3072 * math.log(2)))
    assert 0 < m["test_bpd_iwae"] <= m["test_bpd"] + 0.01
