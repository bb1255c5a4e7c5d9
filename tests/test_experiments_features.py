"""experiments/denoising.py and experiments/representation.py end to end in --quick mode
on a small real subset, sharing one model cache (the quick AE and VAE at latent 16
serve both), and their own formulas against NumPy."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import load_script


@pytest.fixture(scope="module")
def cache(experiment_cache):
    return experiment_cache


def quick_argv(small_npz, out, cache) -> list[str]:
    return ["--quick", "--dataset", small_npz, "--out", str(out), "--cache", cache,
            "--quiet", "--no-tensorboard"]  # fmt: skip


def finite_seeds(values, n=3) -> bool:
    return len(values) == n and all(v is not None and math.isfinite(v) for v in values)


# ------------------------------------------------------------------ denoising


def test_denoising_quick(small_npz, cache, tmp_path):
    D = load_script("denoising")
    out = tmp_path / "out"
    argv = quick_argv(small_npz, out, cache)
    record = D.main(argv)
    for f in ("denoising.md", "denoising.json", "denoising.png"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "denoising.json").read_text())
    assert saved["verdicts"] == record["verdicts"]
    names = saved["corruptions"]
    assert names[0] == "none" and len(names) == len(D.CORRUPTIONS)
    assert saved["gaussian_clipped"] is True
    assert saved["train_noise"] == {"kind": "salt_and_pepper", "level": 0.2}
    for target in ("binarized", "grey"):
        for m in D.MODELS:
            for c in names:
                assert finite_seeds(saved["psnr"][target][m][c]), (target, m, c)
                assert all(0 < v < 60 for v in saved["psnr"][target][m][c])
        noisy = saved["noisy_input_psnr"][target]
        assert all(math.isfinite(noisy[c]) for c in names[1:])
        # more noise, further from the clean image
        assert noisy["gaussian 0.1"] > noisy["gaussian 0.3"] > noisy["gaussian 0.5"]
    assert saved["noisy_input_psnr"]["binarized"]["none"] is None  # identical: infinite
    assert math.isfinite(saved["noisy_input_psnr"]["grey"]["none"])
    assert len(saved["verdicts"]) == 3 * len(names)
    assert all("PSNR" in v and ("better" in v or "no measurable" in v) for v in saved["verdicts"])
    text = (out / "denoising.md").read_text()
    assert text.count("| corruption | corrupted input | AE | VAE | DAE | DVAE |") == 2

    # The clean row is the models' ordinary reconstruction: the experiment framework's
    # own per-image squared errors give the same PSNR.
    import scaffold as X

    s = X.setting("denoising", D.X.parser("denoising", "").parse_args(argv), argv)
    data = X.load(s)
    runs = X.trained(s, data, X.run_config(s, data, "ae"))  # from the cache
    x = X.inputs(data.dataset.x_test)
    for r, reported in zip(runs, saved["psnr"]["binarized"]["ae"]["none"], strict=True):
        sse = X.scores(r, x, None)["recon_sse"]
        expected = np.mean(10 * np.log10(784 / np.asarray(sse, np.float64)))
        assert reported == pytest.approx(expected, abs=1e-3)


def test_denoising_corruptions_are_fixed_and_clipped():
    D = load_script("denoising")
    x = (jax.random.uniform(jax.random.key(0), (6, 28, 28, 1)) > 0.5).astype(jnp.float32)
    keys = D.corruption_keys(len(D.CORRUPTIONS))
    assert D.corrupted(x, None, keys[0]) is x
    for c, k in zip(D.CORRUPTIONS[1:], keys[1:], strict=True):
        a, b = D.corrupted(x, c, k), D.corrupted(x, c, k)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same key, same bits
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
        assert not np.array_equal(np.asarray(a), np.asarray(x))
    gauss = np.asarray(D.corrupted(x, ("gaussian", 0.5), keys[3]))
    assert 0.0 < np.mean((gauss == 0.0) | (gauss == 1.0)) < 1.0  # clipped, not all


def test_denoising_psnr_matches_numpy():
    D = load_script("denoising")
    sse = np.array([1.0, 7.84, 78.4, 0.5])
    np.testing.assert_allclose(
        D.psnr_per_image(sse, 784), 10 * np.log10(784 / sse), rtol=1e-5
    )  # 784 pixels, peak 1: 1 -> 28.94 dB, 7.84 -> 20 dB
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 28, 28, 1)), rng.random((5, 28, 28, 1))
    expected = np.mean(10 * np.log10(784 / ((a - b) ** 2).sum(axis=(1, 2, 3))))
    assert D.mean_psnr(a, jnp.asarray(b)) == pytest.approx(expected, rel=1e-5)


def test_denoising_default_training_noise_shares_the_models():
    D = load_script("denoising")
    args = D.X.parser("d", "").parse_args([])
    args.train_noise, args.train_noise_level = "salt_and_pepper", 0.2
    assert D.train_options(args) == {}
    args.train_noise, args.train_noise_level = "gaussian", 0.3
    assert D.train_options(args) == {"noise": "gaussian", "noise_level": 0.3}


# ------------------------------------------------------------------ representation


def test_representation_quick(small_npz, cache, tmp_path):
    R = load_script("representation")
    out = tmp_path / "out"
    record = R.main(quick_argv(small_npz, out, cache))
    for f in ("representation.md", "representation.json", "representation.png"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "representation.json").read_text())
    assert saved["verdicts"] == record["verdicts"]
    sizes = [str(L) for L in R.QUICK_SIZES]
    assert saved["sizes"] == list(R.QUICK_SIZES)
    for m in R.MODELS:
        for L in sizes:
            for k in ("probe", "knn"):
                values = saved["accuracy"][m][L][k]
                assert finite_seeds(values), (m, L, k)
                assert all(0.0 <= v <= 1.0 for v in values)
            assert saved["train_seconds"][m][L] > 0
    for L in sizes:
        assert all(0.1 < saved["pca"][L][k] <= 1.0 for k in ("probe", "knn"))  # above chance
    # per size: AE vs VAE, and each model vs PCA
    assert len(saved["verdicts"]) == len(sizes) * (1 + len(R.MODELS))
    assert all("linear probe" in v for v in saved["verdicts"])
    assert "PCA probe" in (out / "representation.md").read_text()


def test_representation_pca_of_every_size_from_one_fit():
    from aevae_jax.evaluate import metrics as M

    x = np.random.default_rng(0).normal(size=(200, 30)) @ np.diag(np.linspace(3, 0.1, 30))
    _, big, _ = M.pca_fit(x, 8)
    _, small, _ = M.pca_fit(x, 3)
    np.testing.assert_allclose(big[:3], small)


def test_representation_vq_layout():
    R = load_script("representation")
    import scaffold as X

    s = X.setting("r", X.parser("r", "").parse_args([]), [])
    data = X.Data(None, "fashion_mnist")
    cfg = R.model_config(s, data, "vqvae", 8, 2)
    assert cfg.model.latent_dim == 4 and cfg.model.options["code_dim"] == 2
    assert R.model_config(s, data, "vqvae", 2, 4) is None  # 4 does not divide 2
    assert R.model_config(s, data, "vqvae", 16, 1).model.latent_dim == 16
    ae = R.model_config(s, data, "ae", 16, 1)
    assert ae == X.run_config(s, data, "ae")  # the shared standard AE (at equal epochs)
    assert R.parse_sizes(None, True) == R.QUICK_SIZES
    assert R.parse_sizes("2,8", False) == (2, 8)
