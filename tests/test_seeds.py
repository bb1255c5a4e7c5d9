"""Several seeds in one compiled program: each seed's numbers are those of its own
sequential run (to float tolerance), each seed has a full run directory, a killed
multi-seed run resumes, and the statistics over seeds are checked by hand."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from aevae_jax.cli.main import main
from aevae_jax.config import DataConfig, ModelConfig, config_differences
from aevae_jax.errors import UserError
from aevae_jax.evaluate import metrics as M
from aevae_jax.study import report
from aevae_jax.study.verdicts import compare_metric
from aevae_jax.study.zoo import zoo_rows
from aevae_jax.train.fit import fit, fit_seeds, seed_configs
from aevae_jax.train.runs import load_run
from tests.test_train import small_cfg

# vmapped or sharded matmuls sum in another order than single ones, and Adam divides by
# the root of tiny second moments, so rounding differences grow: after 2 epochs (32 Adam
# steps at lr 1e-3) parameters agree to 1e-4 absolute, a tenth of one step (the largest
# difference seen is 1.6e-5); the logged losses to 1e-5 relative.
RTOL, ATOL = 1e-4, 1e-4


def assert_trees_close(a, b, rtol=RTOL, atol=ATOL):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["vae", "vqvae"])  # vqvae: a second training stage
def test_seeds_together_equal_sequential_runs(small_data, tmp_path, name):
    options = {"prior_epochs": 1, "num_codes": 16, "prior_hidden": 32} if name == "vqvae" else {}
    model = ModelConfig(name=name, hidden=(64,), latent_dim=8, options=options)
    data = DataConfig(train_size=512)
    cfg = small_cfg(tmp_path / "together", name=name, model=model, data=data)
    together = fit_seeds(cfg, (3, 5), dataset=small_data, progress=False)
    for seed, got in zip((3, 5), together, strict=True):
        alone_cfg = small_cfg(tmp_path / f"alone{seed}", seed=seed, model=model, data=data)
        alone = fit(alone_cfg, dataset=small_data, progress=False)
        assert got.run_dir == os.path.join(cfg.out, f"seed_{seed}")
        assert_trees_close(got.params, alone.params)
        assert len(got.history) == len(alone.history)
        for r_got, r_alone in zip(got.history, alone.history, strict=True):
            assert r_got["seeds_together"] == 2 and r_got["step"] == r_alone["step"]
            for key in ("train_objective", "test_objective", r_alone["selection"]):
                np.testing.assert_allclose(r_got[key], r_alone[key], rtol=1e-5)
    # Different seeds really differ, and each run directory reads back on its own.
    a, b = (jax.tree.leaves(r.params)[0] for r in together)
    assert not np.allclose(a, b)
    loaded = load_run(together[1].run_dir, "latest", dataset=small_data)
    assert loaded.cfg.seed == 5 and loaded.epoch == together[1].history[-1]["epoch"]
    assert_trees_close(loaded.params, together[1].params, rtol=0, atol=0)
    with open(os.path.join(together[0].run_dir, "config.json")) as f:
        saved = json.load(f)["run"]
    assert saved["seed"] == 3 and saved["out"] == "."  # the run directory, wherever it is


def test_seeds_resume_from_the_oldest_checkpoint(small_data, tmp_path):
    small = lambda out, epochs: small_cfg(out, epochs=epochs, data=DataConfig(train_size=512))
    kw = dict(dataset=small_data, progress=False)
    straight = fit_seeds(small(tmp_path / "s", 3), (0, 1), **kw)
    fit_seeds(small(tmp_path / "r", 1), (0, 1), **kw)
    # Seed 1 one epoch ahead, as if killed between the two seeds' saves.
    fit(seed_configs(small(tmp_path / "r", 2), (1,))[0], resume=True, **kw)
    resumed = fit_seeds(small(tmp_path / "r", 3), (0, 1), resume=True, **kw)
    for got, want in zip(resumed, straight, strict=True):
        assert [r["epoch"] for r in got.history] == [1, 2, 3]
        assert_trees_close(got.params, want.params)
        with open(os.path.join(got.run_dir, "metrics.jsonl")) as f:
            assert [json.loads(line)["epoch"] for line in f] == [1, 2, 3]
        assert sorted(os.listdir(os.path.join(got.run_dir, "checkpoints"))) == ["2", "3"]


def test_only_the_primary_process_writes_logs_and_configs(small_data, tmp_path, monkeypatch):
    import aevae_jax.train.actions as actions
    import aevae_jax.train.fit as train

    for module in (train, actions):  # the run's files; the epoch's log rows
        monkeypatch.setattr(module, "is_primary", lambda: False)
    result = fit(small_cfg(tmp_path / "p1", data=DataConfig(train_size=256), epochs=1),
                 dataset=small_data, progress=False)  # fmt: skip
    files = set(os.listdir(result.run_dir))
    assert "config.json" not in files and "metrics.jsonl" not in files
    assert os.listdir(os.path.join(result.run_dir, "checkpoints")) == ["1"]  # orbax: all


def test_bad_seed_lists_fail_clearly(tmp_path):
    with pytest.raises(UserError, match="twice"):
        seed_configs(small_cfg(tmp_path), (1, 1))
    with pytest.raises(UserError, match="at least one"):
        seed_configs(small_cfg(tmp_path), ())
    with pytest.raises(UserError, match="seed must be"):
        seed_configs(small_cfg(tmp_path), (0, -1))


def test_train_seeds_command_and_evaluate_over_its_runs(small_npz, tmp_path, capsys):
    out = tmp_path / "s"
    args = ["--dataset", small_npz, "--epochs", "1", "--hidden", "32", "--latent-dim", "4"]
    assert main(["train", *args, "--seeds", "2,0", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "seed 2:" in printed and "seed 0:" in printed and "over 2 seeds" in printed
    assert sorted(os.listdir(out)) == ["seed_0", "seed_2"]
    assert main(["evaluate", "--run", str(out), "--no-fd", "--iwae-k", "4"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [os.path.basename(r) for r in shown["runs"]] == ["seed_0", "seed_2"]
    values = [r["test_neg_elbo"] for r in shown["per_run"]]
    assert shown["seeds"] == [0, 2] and "seed" not in shown["mean"]
    np.testing.assert_allclose(shown["mean"]["test_neg_elbo"], np.mean(values), rtol=1e-12)
    np.testing.assert_allclose(shown["std"]["test_neg_elbo"], np.std(values, ddof=1), rtol=1e-12)
    code = main(["sample", "--run", str(out), "--n", "4", "--out", str(tmp_path / "s.png")])
    assert (
        code == 2 and "holds the runs of several seeds (seed_0, seed_2)" in capsys.readouterr().err
    )
    # One run of the pair on its own gives that run's numbers.
    assert main(["evaluate", "--run", str(out / "seed_2"), "--no-fd", "--iwae-k", "4"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["test_neg_elbo"] == shown["per_run"][1]["test_neg_elbo"]


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 200):
        exact = stats.t.ppf(0.975, df)
        assert abs(M.t_quantile_975(df) - exact) <= 5e-5, df  # the table has 4 decimals
    with pytest.raises(ValueError):
        M.t_quantile_975(0)


def test_seed_paired_interval_by_hand():
    a, b = [10.0, 12.0, 11.0], [9.0, 10.0, 10.5]
    d = np.array([-1.0, -2.0, -0.5])  # b - a per seed
    half = 4.3027 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 dof)
    got = M.seed_paired_interval(a, b)
    np.testing.assert_allclose([got["diff"], got["lo"], got["hi"]],
                               [d.mean(), d.mean() - half, d.mean() + half], rtol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="two seeds"):
        M.seed_paired_interval([1.0], [2.0])


def test_summarize_seeds_means_stds_and_what_is_not_a_number():
    per_seed = [
        {"mse": 1.0, "au": 3, "fd": None, "name": "vae", "flag": True, "nan": 1.0, "k": 10},
        {"mse": 3.0, "au": 4, "fd": 2.0, "name": "vae", "flag": False, "nan": np.nan, "k": 10},
    ]
    s = M.summarize_seeds(per_seed)
    assert s["mse"] == 2.0 and s["au"] == 3.5 and s["name"] == "vae" and s["flag"] is True
    assert s["fd"] is None and s["nan"] is None
    assert s["k"] == 10 and isinstance(s["k"], int)  # shared by every seed: kept as it is
    np.testing.assert_allclose(s["std"]["mse"], np.sqrt(2.0))
    assert set(s["std"]) == {"mse", "au"} and s["per_seed"] == per_seed
    assert M.summarize_seeds(per_seed[:1])["std"] == {}


def seeds_metrics(a_values, b_values) -> dict:
    """A comparison's metrics dict for models a and b over seeds, as compare writes it."""
    per = {n: [{"test_mse": v, "parameters": 10} for v in vals]
           for n, vals in (("a", a_values), ("b", b_values))}  # fmt: skip
    models = {n: {**M.summarize_seeds(p), "seeds": [0, 1, 2]} for n, p in per.items()}
    return {"models": models, "config": {"seed": 0, "seeds": [0, 1, 2]}}


def test_comparisons_over_seeds_are_paired_by_seed_and_shown_as_mean_and_std():
    m = seeds_metrics([10.0, 12.0, 11.0], [9.0, 10.0, 10.5])
    c = compare_metric("test_mse", "a", "b", {}, m["models"])
    assert c["method"] == "paired by seed, t with 2 dof"
    want = M.seed_paired_interval([10.0, 12.0, 11.0], [9.0, 10.0, 10.5])
    assert (c["diff"], c["lo"], c["hi"]) == (want["diff"], want["lo"], want["hi"])
    table = "\n".join(report.models_table(m))
    assert "| a | 11.00 ± 1.00 |" in table and "| 10 |" in table  # parameters: shared
    rows = zoo_rows(m)
    assert rows["b"]["test_mse"] == 9.833333333333334 and rows["b"]["test_mse_std"] > 0
    assert "parameters_std" not in rows["b"]
    assert report.seeds_text(m["config"]) == "seeds 0, 1, 2 (trained together)"
    assert report.seeds_text({"seed": 4}) == "seed 4"


def test_config_differences_name_the_fields():
    a = small_cfg("x")
    b = dataclasses.replace(a, seed=3, out="y", optim=dataclasses.replace(a.optim, lr=0.1))
    assert config_differences(a, b) == ["optim.lr", "out", "seed"]
    assert config_differences(a, b, ignore=("seed", "out")) == ["optim.lr"]
    assert config_differences(a, a) == []
