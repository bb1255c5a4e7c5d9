"""The detection experiments end to end in quick mode (experiments/anomaly.py and
experiments/uncertainty.py, sharing one model cache), the offline OOD sets of
aevae_jax/data/ood.py, and the rank correlation the uncertainty experiment adds."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aevae_jax.data import ood
from aevae_jax.evaluate import metrics as M
from tests.helpers import load_script


@pytest.fixture(scope="module")
def cache(experiment_cache):
    return experiment_cache


def _quick(small_npz, out, cache) -> list[str]:
    return [
        "--quick",
        "--dataset",
        small_npz,
        "--out",
        str(out),
        "--cache",
        cache,
        "--quiet",
        "--no-tensorboard",
    ]


def _aurocs(tree):
    """Every per-seed AUROC list in a nested dict."""
    if isinstance(tree, dict):
        return [v for t in tree.values() for v in _aurocs(t)]
    return [tree]


# ------------------------------------------------------------------ OOD sets


def test_digit_recipe_by_hand():
    # A full-intensity 8 x 8 digit fills the 20 x 20 box with 255 and leaves the 4-pixel
    # border black; bilinear rows sum to 1 and match jax.image.resize's "linear".
    framed = ood.frame_digits(np.full((1, 8, 8), 16.0))
    assert framed.shape == (1, 28, 28, 1) and framed.dtype == np.uint8
    assert (framed[0, 4:24, 4:24] == 255).all()
    assert framed.sum() == 255 * 20 * 20
    m = ood.linear_matrix(8, 20)
    np.testing.assert_allclose(m.sum(1), 1.0)
    x = np.random.default_rng(0).random((8, 8))
    ref = jax.image.resize(jnp.asarray(x, jnp.float32), (20, 20), "linear", antialias=False)
    np.testing.assert_allclose(m @ x @ m.T, np.asarray(ref), atol=1e-5)
    # greyscale: BT.601 luma of pure red, green, blue; central crop of a 32 x 32 patch
    patch = np.zeros((3, 32, 32, 3), np.uint8)
    for i in range(3):
        patch[i, ..., i] = 255
    patch[:, 1, 1] = 255  # outside the central 28 x 28: cropped away
    grey = ood.grey_patches(patch)
    assert grey.shape == (3, 28, 28, 1)
    assert [int(g.max()) for g in grey] == [76, 150, 29]  # rint(255 * weight)


def test_ood_sets_shapes_and_determinism(small_data):
    sets = ood.ood_sets(50, small_data.x_test)
    again = ood.ood_sets(50, small_data.x_test)
    assert tuple(sets) == ood.SET_NAMES == ("digits", "photos", "noise", "flipped")
    for name, x in sets.items():
        assert x.shape == (50, 28, 28, 1) and x.dtype == np.uint8, name
        np.testing.assert_array_equal(x, again[name])
    whole = ood.ood_sets()
    assert [len(x) for x in whole.values()] == [1797, 1900, ood.NOISE_COUNT]
    digits = whole["digits"]
    assert digits[:, :4].max() == 0 and digits[:, 24:].max() == 0  # black border
    assert digits[:, :, :4].max() == 0 and digits[:, :, 24:].max() == 0
    assert np.abs(whole["noise"].astype(float).mean() - 127.5) < 1.0
    np.testing.assert_array_equal(sets["flipped"][0, 0], small_data.x_test[0, -1])


def test_score_sets_splits_one_call_back_into_sets():
    calls = []

    def score(x):
        calls.append(len(x))
        return {"sum": x.sum(axis=(1, 2)), "first": x[:, 0, 0]}

    sets = {"a": np.ones((3, 2, 2)), "b": np.zeros((1, 2, 2)), "c": np.full((2, 2, 2), 2.0)}
    scored = ood.score_sets(score, sets)
    assert calls == [6] and list(scored) == ["a", "b", "c"]
    np.testing.assert_array_equal(scored["a"]["sum"], [4, 4, 4])
    np.testing.assert_array_equal(scored["b"]["sum"], [0])
    np.testing.assert_array_equal(scored["c"]["first"], [2, 2])


# ------------------------------------------------------------------ rank correlation


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, 60).astype(float)  # many ties
    b = a + rng.normal(size=60)
    assert M.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert M.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    np.testing.assert_array_equal(M.average_ranks([5.0, 1.0, 5.0, 2.0]), [3.5, 1, 3.5, 2])


def test_uncertainty_verdicts_by_hand():
    unc = load_script("uncertainty")
    seeds = lambda m, sd=0.01: [m - sd, m, m + sd]
    row = {f"{m}/{k}/auroc": seeds(0.9) for m, k, _ in unc.SCORES}
    row["vae/posterior_var/auroc"] = seeds(0.2)
    summary = {
        unc.IN: {"rho/posterior_var": seeds(-0.5, 0.1), "rho/nll_iwae": seeds(0.05, 0.1)},
        "noisy": row,
    }
    v = unc.verdicts(summary)
    assert v[0].startswith("AUROC of noisy against the test images: the AE's recon. error is")
    assert "no measurable difference between the VAE's NLL (IWAE)" in v[1]
    assert v[2].startswith("The VAE's posterior variance is LOWER") and "noisy (AUROC 0.200" in v[2]
    assert "runs against its own" in v[3] and "does not measurably track" in v[4]
    assert "the NLL is better than posterior variance by 0.550" in v[5] and len(v) == 6


# ------------------------------------------------------------------ experiments


def test_anomaly_verdicts_follow_the_seed_spread():
    an = load_script("anomaly")
    seeds = lambda m, sd=0.01: [m - sd, m, m + sd]  # mean m, std sd
    table = {
        "ae": {"recon_sse": {0: seeds(0.80), 1: seeds(0.90)}},
        "vae": {
            "neg_elbo": {0: seeds(0.70), 1: seeds(0.80)},
            "nll_iwae": {0: seeds(0.71), 1: seeds(0.80)},
            "recon_sse": {0: seeds(0.60), 1: seeds(0.70)},
        },
    }
    np.testing.assert_allclose(an.seed_means(table["ae"]["recon_sse"]), [0.84, 0.85, 0.86])
    assert an.best_score(table, "vae")[0] == "nll_iwae"
    v = an.one_class_verdicts(table)
    assert len(v) == 4  # best against best, then the three pairs of AE and VAE scores
    assert "the AE's recon. error is better than the VAE's NLL (IWAE) by 0.095" in v[0]
    assert "no measurable difference between -ELBO (K = 1) and the IWAE NLL bound" in v[2]
    ood_table = {
        "ae": {"recon_sse": {"digits": seeds(0.2)}},
        "vae": {k: {"digits": seeds(0.45, 0.1)} for k in ("neg_elbo", "nll_iwae", "recon_sse")},
    }
    v = an.ood_verdicts(ood_table, ["digits"])
    assert len(v) == 3 and v[2].startswith("OOD digits: ranked as MORE normal")
    assert "the AE's recon. error 0.200 ± 0.010" in v[2] and "VAE" not in v[2]  # 0.45 + 0.1


def test_anomaly_quick(small_npz, cache, tmp_path):
    out = tmp_path / "anomaly"
    record = load_script("anomaly").main(_quick(small_npz, out, cache))
    for f in ("anomaly.md", "anomaly.json", "anomaly_one_class.png", "anomaly_ood.png"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "anomaly.json").read_text())
    assert saved["classes"] == [0, 1] and saved["models"] == ["vae"]
    columns = {"vae/neg_elbo", "vae/nll_iwae", "vae/recon_sse"}
    assert set(saved["one_class_auroc"]) == columns == set(saved["mean_auroc"])
    assert set(saved["ood_auroc"]) == columns | {"ae/recon_sse"}
    assert saved["ood_sets"] == {"digits": 512, "photos": 512, "noise": 512, "flipped": 512}
    per_class = _aurocs(saved["one_class_auroc"])
    ood_values = _aurocs(saved["ood_auroc"])
    assert len(per_class) == 3 * 2 and len(ood_values) == 4 * 4
    for seeds in per_class + ood_values + list(saved["mean_auroc"].values()):
        assert len(seeds) == 3 and all(0.0 <= v <= 1.0 for v in seeds)
    # the mean over classes is the mean of the per-class values, seed by seed
    nll = saved["one_class_auroc"]["vae/nll_iwae"]
    np.testing.assert_allclose(
        saved["mean_auroc"]["vae/nll_iwae"], np.mean([nll["0"], nll["1"]], 0)
    )
    assert any("-ELBO (K = 1)" in v for v in record["verdicts"])
    assert sum(v.startswith("OOD AUROC on ") for v in record["verdicts"]) == 2 * 4
    text = (out / "anomaly.md").read_text()
    assert "stand-in for MNIST" in text and "### Verdicts" in text


def test_uncertainty_quick(small_npz, cache, tmp_path):
    out = tmp_path / "uncertainty"
    record = load_script("uncertainty").main(_quick(small_npz, out, cache))
    for f in ("uncertainty.md", "uncertainty.json", "uncertainty.png"):
        assert (out / f).is_file(), f
    per_set = json.loads((out / "uncertainty.json").read_text())["per_set"]
    assert len(per_set) == 8 and "test (in)" in per_set
    for name, row in per_set.items():
        for key, seeds in row.items():
            assert len(seeds) == 3 and all(np.isfinite(seeds)), (name, key)
            if key.endswith("/auroc"):
                assert all(0.0 <= v <= 1.0 for v in seeds)
            if key.startswith("rho/"):
                assert all(-1.0 <= v <= 1.0 for v in seeds)
            if key == "vae/posterior_var/mean":
                assert all(v > 0 for v in seeds)
    assert "vae/nll_iwae/auroc" not in per_set["test (in)"]
    assert 7 * 2 + 3 <= len(record["verdicts"]) <= 7 * 2 + 5
    assert any(v.startswith("Calibration on the test images") for v in record["verdicts"])
