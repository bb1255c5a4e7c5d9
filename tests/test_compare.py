"""The main job end to end on a small real subset: `aevae zoo` over a covering subset of
the registered models (which runs `aevae compare` and summarises it), the report's
verdicts against the numbers, and the commands that read a run. (Every registered model's
evaluation, and that it produces the metric of each of its claims: test_variants.py.)"""

import json
import os

import numpy as np
import pytest

from aevae_jax.cli.main import main
from aevae_jax.evaluate import catalogue
from aevae_jax.study.article import article_rows
from aevae_jax.study.claims import check_claims
from aevae_jax.study.figures import interpolation_pairs
from aevae_jax.study.report import ELBO_GAP_SES, elbo_gap_ses
from aevae_jax.study.zoo import zoo_models

ROWS = ["Objective", "Latent space", "Loss", "Sampling", "Generative ability", "Applications"]
# One model of each kind the report treats apart: the article's pair (ae, vae), a code
# report of its own (sparse_ae), options in the config (beta_vae), priors of their own and
# two stochastic layers (vamp_vae, two_layer_vae), labels (cvae), a discrete code with a
# prior stage (vqvae). The zoo's order is kept.
MODELS = list(zoo_models(["ae", "sparse_ae", "vae", "beta_vae", "vamp_vae", "two_layer_vae",
                          "cvae", "vqvae"])[0])  # fmt: skip
COMPARE_ARGS = (
    "--epochs 1 --hidden 64 --latent-dim 8 --batch-size 128 --iwae-k 10 --quiet --timing-rounds 2 "
    "--prior-epochs 1 --num-codes 32 --prior-hidden 64 --pseudo-inputs 16 --top-hidden 16"
)
FIGURES = [
    "overview.png",
    "reconstructions.png",
    "samples.png",
    "interpolations.png",
    "latent_2d.png",
    "training_curves.png",
    "rate_distortion.png",
    "cvae_by_class.png",
    "vqvae_codebook.png",
]


# The zoo's data: the first ZOO_TRAIN training and ZOO_TEST test images of the small
# subset, under the subset's name (every model trains and is scored alike; the zoo is bound
# by compiling its models' programs, so fewer images cost less only where they are run).
ZOO_TRAIN, ZOO_TEST = 512, 256


@pytest.fixture(scope="module")
def comparison(small_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("zoo")
    data = base / "data" / "fmnist_small.npz"
    data.parent.mkdir()
    np.savez(data, x_train=small_data.x_train[:ZOO_TRAIN], y_train=small_data.y_train[:ZOO_TRAIN],
             x_test=small_data.x_test[:ZOO_TEST], y_test=small_data.y_test[:ZOO_TEST])  # fmt: skip
    out = base / "zoo"
    saved = os.environ.get("AEVAE_CACHE")
    os.environ["AEVAE_CACHE"] = str(base / "classifiers")  # a fresh classifier
    try:
        args = ["zoo", "--dataset", str(data), "--models", ",".join(MODELS)]
        code = main([*args, "--out", str(out), *COMPARE_ARGS.split()])
    finally:
        if saved is None:
            os.environ.pop("AEVAE_CACHE")
        else:
            os.environ["AEVAE_CACHE"] = saved
    assert code == 0
    return out


def test_zoo_has_every_model_in_its_table_with_n_a_where_a_metric_does_not_apply(comparison):
    assert MODELS[:2] == ["ae", "sparse_ae"]
    zoo = json.loads((comparison / "zoo.json").read_text())
    assert list(zoo["rows"]) == MODELS and zoo["wall_seconds"] > 0
    assert zoo["rows"]["ae"]["test_nll_iwae"] == "n/a" and zoo["rows"]["ae"]["test_kl"] == "n/a"
    assert zoo["rows"]["vqvae"]["perplexity"] != "n/a" and zoo["rows"]["vae"]["perplexity"] == "n/a"
    assert zoo["rows"]["cvae"]["conditional_sample_accuracy"] != "n/a"
    for name, row in zoo["rows"].items():
        for key in ("test_mse", "test_psnr", "test_denoise_mse", "test_inpaint_mse", "step_ms"):
            assert np.isfinite(row[key]), (name, key)
    text = (comparison / "zoo.md").read_text()
    for name in MODELS:
        assert any(line.startswith(f"| {name} |") for line in text.splitlines()), name
    assert "n/a" in text and "(overview.png)" in text and zoo["command"] in text
    assert "## Samples, by sampler" in text and "| ae | ex-post Gaussian |" in text
    claims = {c["model"] for c in zoo["claims"]}
    assert claims == {"sparse_ae", "beta_vae", "vamp_vae", "two_layer_vae", "cvae", "vqvae"}


def test_compare_writes_every_file_and_finite_metrics(comparison):
    files = set(os.listdir(comparison))
    assert {"metrics.json", "report.md", "per_image.npz", *MODELS} <= files
    assert set(FIGURES) <= files
    for png in FIGURES:
        with open(comparison / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    m = json.loads((comparison / "metrics.json").read_text())
    assert m["dataset"] == "fmnist_small" and m["config"]["train_size"] == ZOO_TRAIN
    assert list(m["models"]) == MODELS
    every = [
        "test_mse",
        "test_psnr",
        "test_denoise_mse",
        "test_recon_nll",
        "probe_accuracy",
        "prior_sample_fd",
        "step_ms",
        "parameters",
    ]
    for name, r in m["models"].items():
        for k in every:
            assert np.isfinite(r[k]), (name, k)
    # Every number the evaluation and the comparison report is in the metric catalogue
    # (the sparse AE's own code_report numbers and the run's bookkeeping aside).
    bookkeeping = {"options", "likelihood", "train_seconds", "eval_seconds"}
    for name, r in m["models"].items():
        unknown = [k for k in r if catalogue.entry(k) is None and k not in bookkeeping]
        assert all(name == "sparse_ae" and k.startswith("code_") for k in unknown), unknown
    density = {"vae", "beta_vae", "cvae", "vqvae", "vamp_vae", "two_layer_vae"}
    for name, r in m["models"].items():
        assert (r.get("test_nll_iwae") is not None) == (name in density), name
        assert ("test_bpd" in r) == (name in density), name  # binarized data: a mass function
        # The default ex-post sampler, for continuous codes (others: --samplers, below).
        assert ("expost_sample_fd" in r) == (name != "vqvae"), name
        assert 0 <= r.get("expost_sample_recall", 0) <= 1, name
        assert "gmm_sample_fd" not in r, name
        assert ("latent_prior_fd" in r) == (name != "vqvae"), name
        assert ("code_sparsity" in r) == (name != "vqvae"), name
    assert "code_mean_activation" in m["models"]["sparse_ae"]
    vae, vq, cvae = m["models"]["vae"], m["models"]["vqvae"], m["models"]["cvae"]
    assert vae["test_bpd"] == pytest.approx(vae["test_neg_elbo"] / (784 * np.log(2)))
    assert vae["iwae_k"] == 10 and vq["iwae_k"] == 1  # a point posterior needs one sample
    assert vq["test_nll_iwae"] == pytest.approx(vq["test_neg_elbo"], rel=1e-6)
    assert vq["num_codes"] == 32 and vq["dead_codes"] < 32
    assert cvae["conditional_sample_n"] == ZOO_TEST
    # The IWAE bound is at least as tight as the single-sample ELBO.
    assert vae["test_nll_iwae"] <= vae["test_neg_elbo"] + 0.5
    gap = vae["elbo_gap"]  # -ELBO = distortion + KL, up to sampling noise
    assert gap["lo"] - 0.5 <= 0 <= gap["hi"] + 0.5
    assert m["models"]["beta_vae"]["options"]["beta"] == 4.0
    assert m["models"]["ae"]["likelihood"] == "mse" and vae["likelihood"] == "bernoulli"
    assert {c["model"] for c in m["claims"]} == {
        "sparse_ae",
        "beta_vae",
        "cvae",
        "vqvae",
        "vamp_vae",
        "two_layer_vae",
    }
    # The models with priors of their own report their rate against them: their -ELBO is
    # distortion + KL within the report's rule (4 standard errors).
    for name in ("vamp_vae", "two_layer_vae"):
        assert elbo_gap_ses(m["models"][name]) < ELBO_GAP_SES, name
    assert "active_units_z2" in m["models"]["two_layer_vae"]


def test_runs_of_a_comparison_record_their_stages(comparison):
    rows = [json.loads(line) for line in open(comparison / "vqvae" / "metrics.jsonl")]
    assert [r["stage"] for r in rows] == ["main", "prior"]
    assert all(r["selection"] == "test_neg_elbo" for r in rows)
    cfg = json.loads((comparison / "beta_vae" / "config.json").read_text())
    assert cfg["run"]["model"]["options"]["kl_schedule"] == "constant"
    assert cfg["data_spec"]["num_classes"] == 10


def test_report_has_the_articles_table_every_model_and_the_claims(comparison):
    text = (comparison / "report.md").read_text()
    for row in ROWS:
        line = next(line for line in text.splitlines() if line.startswith(f"| {row} |"))
        # Five cells: pipes inside cells (q(z|x)) must be escaped to keep the table whole.
        assert line.replace("\\|", "").count("|") == 6, line
    for name in MODELS:
        assert any(line.startswith(f"| {name} |") for line in text.splitlines()), name
    assert "## What the literature says, checked" in text
    for png in FIGURES:
        assert f"({png})" in text


def fake_metrics(mse=(1.0, 2.0), fd=(60.0, 30.0, 45.0), denoise=(1.0, 2.0), probe=(0.8, 0.7)):
    """Metrics of a two-model comparison with intervals derived from the given numbers:
    differences of 0 are ties, anything else is clearly measured."""

    def comp(a, b):
        d = b - a
        return {"diff": d, "lo": d - 0.01 if d else -0.1, "hi": d + 0.01 if d else 0.1}

    base = dict(test_psnr=0, test_recon_nll=1, step_ms=1.0, probe_n=1000)
    ae = {
        **base,
        "test_mse": mse[0],
        "prior_sample_fd": fd[0],
        "prior_sample_fd_se": 0.5,
        "expost_sample_fd": fd[2],
        "expost_sample_fd_se": 0.5,
        "probe_accuracy": probe[0],
        "test_denoise_mse": denoise[0],
    }
    vae = {
        **base,
        "test_mse": mse[1],
        "prior_sample_fd": fd[1],
        "prior_sample_fd_se": 0.5,
        "test_neg_elbo": 10.0,
        "test_distortion": 8.0,
        "test_kl": 2.0,
        "active_units": 3,
        "kl_per_dim": [1, 1, 0],
        "posterior_std_active": 0.5,
        "iwae_k": 10,
        "test_nll_iwae": 9.5,
        "probe_accuracy": probe[1],
        "test_denoise_mse": denoise[1],
        "elbo_gap": {"diff": 0.0, "lo": -0.1, "hi": 0.1},
    }
    comparisons = {
        "vae-ae": {
            "test_mse": comp(mse[0], mse[1]),
            "test_denoise_mse": comp(denoise[0], denoise[1]),
            "probe_accuracy": comp(probe[0], probe[1]),
            "prior_sample_fd": comp(fd[0], fd[1]),
        }
    }
    return {
        "config": {"latent_dim": 3, "pair": ["ae", "vae"]},
        "models": {"ae": ae, "vae": vae},
        "comparisons": comparisons,
        "step_time_ratios": {"vae/ae": {"median": 1.3, "q1": 1.2, "q3": 1.4}},
    }


def verdicts(m):
    return {r["row"]: r["verdict"] for r in article_rows(m)}


def test_verdicts_follow_the_numbers():
    rows = verdicts(fake_metrics())
    assert rows["Objective"].startswith("Supported: the AE reconstructs better")
    assert rows["Generative ability"].startswith("Supported")
    assert "narrows the gap" in rows["Generative ability"]
    assert rows["Sampling"].startswith("Supported: the VAE draws") and "+30%" in rows["Sampling"]
    rows = verdicts(fake_metrics(mse=(3.0, 2.0), fd=(30.0, 60.0, 20.0)))
    assert "the VAE reconstructs better" in rows["Objective"]
    assert rows["Generative ability"].startswith("Not supported: AE decodes")
    rows = verdicts(fake_metrics(fd=(60.0, 30.0, 20.0)))
    assert "does better still" in rows["Generative ability"]
    rows = verdicts(fake_metrics(fd=(60.0, 30.0, 30.0)))
    assert "no measurable difference" in rows["Generative ability"]
    # The best of the fitted samplers speaks for the AE, each one listed.
    m = fake_metrics(fd=(60.0, 30.0, 35.0))
    m["models"]["ae"].update(gmm_sample_fd=4.0, gmm_sample_fd_se=0.1)
    row = next(r for r in article_rows(m) if r["row"] == "Generative ability")
    assert "ex-post Gaussian 35.00, AE ex-post Gaussian-mixture 4.00 +- 0.10" in row["measured"]
    assert "an ex-post Gaussian-mixture fitted to the AE's codes" in row["verdict"]
    assert "does better still (FD 4.00)" in row["verdict"]
    # Equal numbers (87.0% vs 87.0%) are no measurable difference, not a win.
    rows = verdicts(fake_metrics(mse=(2.0, 2.0), probe=(0.87, 0.87)))
    assert "no measurable difference in reconstruction" in rows["Objective"]
    assert "no measurable difference in probe accuracy" in rows["Applications"]
    assert "better features" not in rows["Applications"]
    # The AE has the better probe but the VAE denoises better: each credited.
    rows = verdicts(fake_metrics(denoise=(2.0, 1.0)))
    assert rows["Applications"].startswith("Partly supported")
    assert "the AE's codes are the better features" in rows["Applications"]
    assert "the VAE denoises better" in rows["Applications"]
    # The -ELBO and its terms: noise-sized gaps pass, a gap of many standard errors does not.
    m = fake_metrics()
    m["models"]["vae"]["elbo_gap"] = {"diff": 0.11, "lo": 0.01, "hi": 0.21}  # ~2 s.e.
    assert verdicts(m)["Loss"].startswith("Supported")
    m["models"]["vae"]["elbo_gap"] = {"diff": 1.0, "lo": 0.9, "hi": 1.1}  # ~20 s.e.
    assert verdicts(m)["Loss"].startswith("Not checked")
    m = fake_metrics()
    m["step_time_ratios"]["vae/ae"] = {"median": 1.02, "q1": 0.95, "q3": 1.1}
    assert "not measurably slower" in verdicts(m)["Sampling"]
    m["models"]["vae"].update(active_units=1, posterior_std_active=0.3)
    assert verdicts(m)["Latent space"].startswith("Partly")


def test_claims_follow_the_numbers():
    def metrics(diff):
        lo, hi = diff - 0.1, diff + 0.1
        return {
            "config": {"num_classes": 10},
            "models": {
                "vae": {"test_nll_iwae": 100.0},
                "iwae": {"test_nll_iwae": 100.0 + diff},
                "cvae": {"conditional_sample_accuracy": 0.12, "conditional_sample_n": 100},
            },
            "comparisons": {"iwae-vae": {"test_nll_iwae": {"diff": diff, "lo": lo, "hi": hi}}},
        }

    def verdict(m, model):
        return next(c["verdict"] for c in check_claims(m) if c["model"] == model)

    assert verdict(metrics(-1.0), "iwae") == "Supported"
    assert verdict(metrics(+1.0), "iwae") == "Not supported"
    assert verdict(metrics(0.0), "iwae") == "No measurable difference"
    # 12% on 100 samples is within noise of 10% chance: not "far above chance".
    assert verdict(metrics(0.0), "cvae") == "Not supported"
    m = metrics(0.0)
    m["models"]["cvae"].update(conditional_sample_accuracy=0.8)
    assert verdict(m, "cvae") == "Supported"


def test_evaluate_and_sample_read_a_run(comparison, tmp_path, capsys, monkeypatch):
    # The zoo's classifier, which it trained on this data (the same fingerprint): read back.
    monkeypatch.setenv("AEVAE_CACHE", str(comparison.parent / "classifiers"))
    out_json = tmp_path / "eval.json"
    args = ["evaluate", "--run", str(comparison / "vae"), "--iwae-k", "10", "--json", str(out_json)]
    assert main([*args, "--samplers", "expost,gmm", "--gmm-components", "3"]) == 0
    m = json.loads(out_json.read_text())
    assert m["model"] == "vae" and m["iwae_k"] == 10 and np.isfinite(m["test_nll_iwae"])
    assert m["checkpoint"] == "best" and m["epoch"] == 1
    # A fitted mixture's samples are scored beside the prior's, with their uncertainty.
    for sampler in ("prior", "expost", "gmm"):
        assert np.isfinite(m[f"{sampler}_sample_fd"]) and m[f"{sampler}_sample_fd_se"] > 0
        assert 0 <= m[f"{sampler}_sample_precision"] <= 1
    capsys.readouterr()
    png = tmp_path / "s.png"
    args = ["sample", "--run", str(comparison / "ae"), "--n", "16", "--out", str(png)]
    assert main([*args, "--sampler", "expost"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"

    # From the prior, no data set is loaded: the model comes from config.json alone.
    import aevae_jax.train.runs

    def no_data(*a, **k):
        raise AssertionError("sample from the prior loaded a data set")

    monkeypatch.setattr(aevae_jax.train.runs, "load_dataset", no_data)
    for name in ("vqvae", "cvae", "vamp_vae"):
        target = tmp_path / f"{name}.png"
        assert (
            main(["sample", "--run", str(comparison / name), "--n", "20", "--out", str(target)])
            == 0
        ), capsys.readouterr().err
        assert target.read_bytes()[:4] == b"\x89PNG"
    assert (
        main(
            [
                "sample",
                "--run",
                str(comparison / "cvae"),
                "--label",
                "3",
                "--out",
                str(tmp_path / "c3.png"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sample",
                "--run",
                str(comparison / "vae"),
                "--label",
                "3",
                "--out",
                str(tmp_path / "v.png"),
            ]
        )
        == 2
    )
    assert "conditional models" in capsys.readouterr().err


def test_report_is_rendered_again_from_metrics_json(comparison, capsys):
    before = (comparison / "report.md").read_text()
    (comparison / "report.md").unlink()
    assert main(["report", str(comparison)]) == 0
    assert (comparison / "report.md").read_text() == before
    assert main(["report", str(comparison / "vae")]) == 2
    assert "holds no metrics.json" in capsys.readouterr().err


def test_compare_refuses_to_overwrite(comparison, capsys):
    code = main(["compare", "--dataset", "x.npz", "--out", str(comparison)])
    assert code == 2 and "already holds a comparison" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["evaluate", "--run", "/nonexistent"], "not a run directory"),
        (["sample", "--run", "/nonexistent", "--out", "x.png"], "not a run directory"),
        (["sample", "--run", "r", "--out", "x.jpg"], "must name a .png"),
        (["sample", "--run", "r", "--n", "0", "--out", "x.png"], "--n must be an integer in [1,"),
        (["sample", "--run", "r", "--seed", "-1", "--out", "x.png"], "--seed must be"),
        (["evaluate", "--run", "r", "--iwae-k", "0"], "--iwae-k must be a positive"),
        (["compare", "--models", "ae,gan"], "unknown model 'gan'"),
        (["compare", "--models", "ae,ae"], "lists a model twice"),
        (["compare", "--pair", "ae"], "--pair takes two model names"),
    ],
)
def test_reader_commands_reject_bad_input(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_eval_inputs_of_the_training_split_are_the_static_training_draw():
    import jax
    import jax.numpy as jnp

    from aevae_jax.data.preprocess import preprocess
    from aevae_jax.evaluate.split import TRAIN_SPLIT, eval_inputs

    x = jnp.full((5, 4, 4, 1), 100, jnp.uint8)
    train = eval_inputs(x, "dynamic", TRAIN_SPLIT)
    static = preprocess(x, "static", jax.random.key(3), jnp.arange(5), split=0)
    np.testing.assert_array_equal(train, static)
    assert not np.array_equal(train, eval_inputs(x, "dynamic"))  # the test split's own draw


def test_interpolation_pairs_cross_classes():
    labels = np.array([3, 3, 1, 1, 2, 5, 5, 0])
    pairs = interpolation_pairs(labels)
    assert pairs == [(0, 2), (3, 4), (5, 7)]
    assert all(labels[a] != labels[b] for a, b in pairs)
    assert interpolation_pairs(labels, limit=4) == [(0, 2)]  # never past the images shown
    assert interpolation_pairs(None, limit=6) == [(0, 1), (2, 3), (4, 5)]
