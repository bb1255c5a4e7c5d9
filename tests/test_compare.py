"""The main job end to end on a small real subset, and the commands that read a run."""

import json
import os

import numpy as np
import pytest

from aevae_jax import report
from aevae_jax.cli import main
from aevae_jax.compare import interpolation_pairs

ROWS = ["Objective", "Latent space", "Loss", "Sampling", "Generative ability", "Applications"]


COMPARE_ARGS = "--epochs 2 --hidden 64 --latent-dim 8 --batch-size 64 --iwae-k 20 --quiet"


@pytest.fixture(scope="module")
def comparison(small_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    saved = os.environ.get("AEVAE_CACHE")
    os.environ["AEVAE_CACHE"] = str(tmp_path_factory.mktemp("cache"))  # a fresh classifier
    try:
        code = main(["compare", "--dataset", small_npz, "--out", str(out), *COMPARE_ARGS.split()])
    finally:
        if saved is None:
            os.environ.pop("AEVAE_CACHE")
        else:
            os.environ["AEVAE_CACHE"] = saved
    assert code == 0
    return out


def test_compare_writes_every_file_and_finite_metrics(comparison):
    files = set(os.listdir(comparison))
    assert {"metrics.json", "report.md", "ae", "vae"} <= files
    assert set(report.FIGURES.values()) <= files
    for png in report.FIGURES.values():
        with open(comparison / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    m = json.loads((comparison / "metrics.json").read_text())
    assert m["dataset"] == "fmnist_small" and m["config"]["train_size"] == 2048
    ae, vae = m["models"]["ae"], m["models"]["vae"]
    for k in [
        "test_mse",
        "test_bce",
        "test_psnr",
        "probe_accuracy",
        "prior_sample_fd",
        "expost_sample_fd",
        "train_seconds",
        "step_ms",
    ]:
        assert np.isfinite(ae[k]), k
    for k in [
        "test_mse",
        "test_bce",
        "test_psnr",
        "test_neg_elbo",
        "test_kl",
        "test_nll_iwae",
        "probe_accuracy",
        "prior_sample_fd",
        "train_seconds",
        "step_ms",
    ]:
        assert np.isfinite(vae[k]), k
    assert vae["iwae_k"] == 20 and 0 <= vae["active_units"] <= 8
    assert "test_nll_iwae" not in ae and "expost_sample_fd" not in vae
    # The IWAE bound is at least as tight as the single-sample ELBO.
    assert vae["test_nll_iwae"] <= vae["test_neg_elbo"] + 0.5
    assert vae["test_neg_elbo"] == pytest.approx(vae["test_recon"] + vae["test_kl"], abs=0.05)


def test_report_has_every_row_of_the_articles_table(comparison):
    text = (comparison / "report.md").read_text()
    for row in ROWS:
        line = next(line for line in text.splitlines() if line.startswith(f"| {row} |"))
        # Five cells: pipes inside cells (q(z|x)) must be escaped to keep the table whole.
        assert line.replace("\\|", "").count("|") == 6, line
    for png in report.FIGURES.values():
        assert f"({png})" in text


def test_verdicts_follow_the_numbers():
    def metrics(fd_ae, fd_vae, fd_ex, mse_ae, mse_vae):
        base = dict(test_mse=0, test_psnr=0, test_denoise_mse=1, test_loss=1, step_ms=1.0)
        ae = {
            **base,
            "test_mse": mse_ae,
            "prior_sample_fd": fd_ae,
            "expost_sample_fd": fd_ex,
            "probe_accuracy": 0.8,
        }
        vae = {
            **base,
            "test_mse": mse_vae,
            "prior_sample_fd": fd_vae,
            "test_neg_elbo": 10.0,
            "test_recon": 8.0,
            "test_kl": 2.0,
            "active_units": 3,
            "kl_per_dim": [1, 1, 0],
            "posterior_std_active": 0.5,
            "iwae_k": 10,
            "test_nll_iwae": 9.5,
            "probe_accuracy": 0.7,
            "test_denoise_mse": 2,
        }
        return {"config": {"latent_dim": 3}, "models": {"ae": ae, "vae": vae}}

    rows = {r["row"]: r["verdict"] for r in report.verdicts(metrics(60, 30, 45, 1, 2))}
    assert (
        rows["Generative ability"].startswith("Supported") and "50%" in rows["Generative ability"]
    )
    assert rows["Objective"].startswith("Supported")
    rows = {r["row"]: r["verdict"] for r in report.verdicts(metrics(30, 60, 20, 3, 2))}
    assert rows["Generative ability"].startswith("Not supported")
    assert rows["Objective"].startswith("Not supported")
    rows = {r["row"]: r["verdict"] for r in report.verdicts(metrics(60, 30, 20, 1, 2))}
    assert "does better still" in rows["Generative ability"]
    rows = {r["row"]: r["verdict"] for r in report.verdicts(metrics(60, 30, 70, 1, 2))}
    assert "does not help" in rows["Generative ability"] and "%" not in rows["Generative ability"]
    # The AE has the better probe (0.8 vs 0.7) but the VAE denoises better: each credited.
    m = metrics(60, 30, 45, 1, 2)
    m["models"]["vae"]["test_denoise_mse"] = 0.5
    rows = {r["row"]: r["verdict"] for r in report.verdicts(m)}
    assert rows["Applications"].startswith("Partly supported")
    assert "the AE's codes are the better features" in rows["Applications"]
    assert "the VAE denoises as well or better" in rows["Applications"]
    # One active unit of three: only partly a distribution over informative codes.
    m["models"]["vae"].update(active_units=1, posterior_std_active=0.3)
    rows = {r["row"]: r["verdict"] for r in report.verdicts(m)}
    assert rows["Latent space"].startswith("Partly") and "only 1 of 3" in rows["Latent space"]


def test_evaluate_and_sample_read_a_run(comparison, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    code = main(
        ["evaluate", "--run", str(comparison / "vae"), "--iwae-k", "10", "--json", str(out_json)]
    )
    assert code == 0
    m = json.loads(out_json.read_text())
    assert m["model"] == "vae" and m["iwae_k"] == 10 and np.isfinite(m["test_nll_iwae"])
    assert m["checkpoint"] == "best" and 1 <= m["epoch"] <= 2
    capsys.readouterr()
    png = tmp_path / "s.png"
    assert (
        main(
            [
                "sample",
                "--run",
                str(comparison / "ae"),
                "--n",
                "16",
                "--out",
                str(png),
                "--sampler",
                "expost",
            ]
        )
        == 0
    )
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_compare_refuses_to_overwrite_and_resume_reuses(comparison, capsys):
    code = main(["compare", "--dataset", "x.npz", "--out", str(comparison)])
    assert code == 2 and "already holds a comparison" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["evaluate", "--run", "/nonexistent"], "not a run directory"),
        (["sample", "--run", "/nonexistent", "--out", "x.png"], "not a run directory"),
        (["sample", "--run", "r", "--out", "x.jpg"], "must name a .png"),
        (["sample", "--run", "r", "--n", "0", "--out", "x.png"], "--n must be a positive"),
        (["evaluate", "--run", "r", "--iwae-k", "0"], "--iwae-k must be a positive"),
    ],
)
def test_reader_commands_reject_bad_input(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_eval_inputs_of_the_training_split_are_the_static_training_draw():
    import jax
    import jax.numpy as jnp

    from aevae_jax.data import preprocess
    from aevae_jax.evaluate import TRAIN_SPLIT, eval_inputs

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
