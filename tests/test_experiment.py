"""The experiments' scaffolding (aevae_jax/experiment.py): seed statistics and the
verdict rule by hand, option checks, the training cache's key, and latent_2d.py's quick
mode end to end."""

import json
import os

import numpy as np
import pytest
import scaffold as X

from aevae_jax import Batch
from aevae_jax.data.sources import load_dataset
from aevae_jax.errors import UserError
from aevae_jax.evaluate import catalogue
from tests.helpers import load_script


def test_mean_std_and_pm_by_hand():
    assert X.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample std, ddof 1
    assert X.pm([0.5, 0.7, 0.9], 1, scale=100) == "70.0 ± 20.0"


def test_the_verdict_rule():
    a, b = [1.0, 2.0, 3.0], [4.5, 5.0, 5.5]  # gap 3.0 > spread 1.0 + 0.5
    assert X.differs(a, b)
    assert X.verdict("score", "A", a, "B", b, higher_better=True) == (
        "score: B is better than A by 3.00 (seed spread 1.50)."
    )
    assert X.verdict("error", "A", a, "B", b, higher_better=False).startswith("error: A is better")
    c = [3.0, 4.0, 5.0]  # gap 2.0 within 1.0 + 1.0
    assert not X.differs(a, c)
    assert X.verdict("score", "A", a, "C", c, True) == (
        "score: no measurable difference between A and C (gap 2.00 within the seed spread 2.00)."
    )


def parsed(*argv):
    p = X.parser("demo", "a demo")
    return X.setting("demo", p.parse_args(list(argv)), list(argv))


@pytest.mark.parametrize(
    "argv,message",
    [(["--seeds", "0"], "at least two seeds"), (["--seeds", "0,0,1"], "repeats a seed"),
     (["--seeds", "a,b"], "integers separated by commas"), (["--epochs", "0"], "--epochs"),
     (["--iwae-k", "0"], "--iwae-k")],
)  # fmt: skip
def test_bad_options_are_one_clear_error(argv, message):
    with pytest.raises(UserError, match=message):
        parsed(*argv)


def test_quick_mode_and_defaults():
    s = parsed()
    assert (s.seeds, s.epochs, s.out, s.iwae_k) == ((0, 1, 2), 10, "experiments/results/demo", 100)
    q = parsed("--quick")
    assert (q.epochs, q.iwae_k, q.out) == (1, 8, "runs/experiments/quick/demo")


def test_the_cache_key_is_the_training_configuration(tmp_path):
    s = parsed("--cache", str(tmp_path))
    data = X.Data(None, "fashion_mnist")
    vae = X.run_config(s, data, "vae")
    same = X.run_config(parsed("--cache", str(tmp_path), "--no-tensorboard"), data, "vae")
    assert X.cache_dir(s, vae) == X.cache_dir(s, same)  # logging is not training
    assert X.cache_dir(s, vae) != X.cache_dir(s, X.run_config(s, data, "vae", latent_dim=8))
    assert X.cache_dir(s, vae) != X.cache_dir(s, X.run_config(s, data, "vae", epochs=3))
    assert os.path.basename(X.cache_dir(s, vae)).startswith("vae-L16-")


def test_save_npz_round_trips_and_keeps_an_existing_file(small_npz, tmp_path):
    ds = X.subset(load_dataset(small_npz), 100, 50)
    path = X.save_npz(ds, str(tmp_path / "d" / "sub.npz"))
    back = load_dataset(path)
    np.testing.assert_array_equal(back.x_train, ds.x_train)
    np.testing.assert_array_equal(back.y_test, ds.y_test)
    before = os.path.getmtime(path)
    X.save_npz(X.subset(ds, 10, 10), path)  # kept: a name stands for one content
    assert os.path.getmtime(path) == before and len(load_dataset(path).x_train) == 100
    assert not [f for f in os.listdir(tmp_path / "d") if f.endswith(".tmp.npz")]


def test_latent_2d_quick_end_to_end(small_npz, tmp_path):
    out = tmp_path / "out"
    argv = ["--quick", "--dataset", small_npz, "--out", str(out), "--cache",
            str(tmp_path / "cache"), "--quiet", "--no-tensorboard"]  # fmt: skip
    record = load_script("latent_2d").main(argv)
    saved = json.loads((out / "latent_2d.json").read_text())
    assert saved["seeds"] == [0, 1, 2] and saved["quick"] is True
    for name in ("ae", "vae"):
        rows = saved["per_seed"][name]
        assert len(rows) == 3
        for r in rows:
            assert 0 <= r["knn_accuracy"] <= 1 and 0 <= r["probe_accuracy"] <= 1
            assert np.isfinite(r["test_mse"]) and r["latent_prior_fd"] >= 0
            assert all(catalogue.entry(k) is not None for k in r), r.keys()  # one catalogue
    assert len(record["verdicts"]) == 4
    text = (out / "latent_2d.md").read_text()
    assert "| kNN (k = 5) accuracy of the codes (%) |" in text and "![" in text
    assert (out / "latent_2d.png").stat().st_size > 10_000
    # both models are in the cache, named by model and latent size, each with its seeds
    cached = sorted(d for d in os.listdir(tmp_path / "cache") if d not in ("data", "jax"))
    assert [d.split("-")[:2] for d in cached] == [["ae", "L2"], ["vae", "L2"]]
    for d in cached:
        assert sorted(os.listdir(tmp_path / "cache" / d)) == ["seed_0", "seed_1", "seed_2"]


def test_scores_match_the_evaluator_per_image(small_data, tmp_path):
    import jax

    from aevae_jax.config import DataConfig, ModelConfig, RunConfig
    from aevae_jax.evaluate.evaluation import evaluate_model
    from aevae_jax.train.fit import fit

    cfg = RunConfig(data=DataConfig(train_size=256), model=ModelConfig(hidden=(32,), latent_dim=4),
                    epochs=1, batch_size=32, out=str(tmp_path / "vae"))  # fmt: skip
    result = fit(cfg, dataset=small_data, progress=False)
    x = X.inputs(small_data.x_test)
    got = X.scores(result, x, jax.random.key(0), iwae_k=20)
    ev = evaluate_model(
        result.model, result.params, small_data, "dynamic", jax.random.key(1), iwae_k=20
    )
    np.testing.assert_allclose(got["recon_sse"], ev.per_image["mse"], rtol=1e-5)
    enc = result.model.encode(result.params, Batch(x))
    np.testing.assert_allclose(
        got["posterior_var"], np.exp(np.asarray(enc.log_var)).mean(1), rtol=1e-5
    )
    # IWAE with K = 20 is a tighter bound than K = 1 on average, both estimate ~ the same NLL
    assert got["nll_iwae"].mean() < got["neg_elbo"].mean()
    assert (
        abs(got["neg_elbo"].mean() - ev.metrics["test_neg_elbo"])
        < 0.02 * ev.metrics["test_neg_elbo"]
    )
    again = X.scores(result, x, jax.random.key(0), iwae_k=20)  # the cached maps: same bits
    for k in got:
        np.testing.assert_array_equal(got[k], again[k])
