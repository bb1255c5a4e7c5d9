"""The `aevae` command: smoke runs on real subsets, and every user mistake ends in one
clear line and exit status 2, never a traceback."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aevae_jax.cli.main import main
from aevae_jax.models import model_names


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.slow
def test_console_script_trains_on_a_small_fashion_mnist_subset(small_npz, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "aevae_jax",
        "train",
        "--model",
        "vae",
        "--dataset",
        small_npz,
        "--backbone",
        "mlp",
        "--hidden",
        "400",
        "--latent-dim",
        "20",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--lr",
        "1e-3",
        "--binarize",
        "dynamic",
        "--train-size",
        "1024",
        "--seed",
        "0",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "test_neg_elbo" in done.stdout and "Traceback" not in done.stderr
    assert {"config.json", "metrics.jsonl", "checkpoints", "best"} <= set(os.listdir(out))
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["epoch"] == 1 and np.isfinite(row["test_neg_elbo"]) and row["step"] == 8
    cfg = json.loads((out / "config.json").read_text())["run"]
    assert cfg["model"]["hidden"] == [400] and cfg["data"]["train_size"] == 1024


def test_help_lists_the_documented_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in [
        "--model",
        "--dataset",
        "--backbone",
        "--hidden",
        "--latent-dim",
        "--epochs",
        "--batch-size",
        "--lr",
        "--binarize",
        "--train-size",
        "--seed",
        "--out",
        "--resume",
    ]:
        assert flag in text


def test_conv_backbone_and_npz_in_process(small_npz, tmp_path, capsys):
    code = main(
        [
            "train",
            "--model",
            "ae",
            "--dataset",
            small_npz,
            "--backbone",
            "conv",
            "--hidden",
            "32",
            "--latent-dim",
            "4",
            "--epochs",
            "1",
            "--batch-size",
            "256",
            "--train-size",
            "512",
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ]
    )
    assert code == 0
    assert "ae on" in capsys.readouterr().out


def _npz(tmp_path, x_train, x_test=None):
    path = tmp_path / "user.npz"
    np.savez(path, x_train=x_train, x_test=x_train[:4] if x_test is None else x_test)
    return str(path)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model", "gan"], "unknown model 'gan'"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--epochs", "0"], "epochs must be a positive integer"),
        (["--batch-size", "-5"], "batch_size must be a positive integer"),
        (["--latent-dim", "0"], "latent_dim must be a positive integer"),
        (["--hidden", "0"], "each hidden size must be a positive integer"),
        (["--hidden", "abc"], "--hidden takes integers"),
        (["--conv-channels", "32,x"], "--conv-channels takes integers"),
        (["--conv-channels", "0"], "each conv channel count must be a positive integer"),
        (["--train-size", "0"], "train_size must be a positive integer"),
        (["--lr", "-1"], "lr must be a positive finite number"),
        (["--activation", "swishy"], "activation must be one of relu"),
        (["--likelihood", "poisson"], "likelihood must be one of bernoulli"),
        (["--seeds", "0,x"], "--seeds takes comma-separated integers"),
        (["--seeds", ","], "--seeds needs at least one seed"),
        (["--seeds", "1,1"], "--seeds lists a seed twice"),
        (["--seed", "1", "--seeds", "0,1"], "--seed and --seeds exclude each other"),
        (["--devices", "2"], "--devices must be between 1 and the 1 device"),
        (["--batch-size", "-5", "--devices", "1"], "batch_size must be a positive integer"),
        (["--process-id", "0"], "--process-id applies with --distributed only"),
        (["--distributed", "--process-id", "0"], "go together"),
        (
            ["--distributed", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "-1"],
            "--process-id must be in [0, --num-processes)",
        ),
    ],
)
def test_bad_options_exit_2_with_one_line(extra, message, tmp_path, capsys):
    code, err = run_cli(["train", "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # a failed run leaves no directory behind


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda t: _npz(t, np.full((8, 8, 8), np.nan, np.float32)), "NaN"),
        (lambda t: _npz(t, np.full((8, 8, 8), 2.0, np.float32)), "[0, 1]"),
        (lambda t: _npz(t, np.zeros((8, 64), np.uint8)), "[N, H, W]"),
    ],
)
def test_bad_user_data_exits_2(make, message, tmp_path, capsys):
    code, err = run_cli(
        ["train", "--dataset", make(tmp_path), "--batch-size", "4", "--out", str(tmp_path / "o")],
        capsys,
    )
    assert code == 2 and message in err and "Traceback" not in err


def test_unwritable_output_directory_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_cli(["train", "--out", str(blocker / "sub")], capsys)
    assert code == 2 and "choose a writable --out" in err


# ----------------------------------------------------------------- models and their options


def test_help_lists_the_registered_models_one_line_each(capsys):
    for args in (["--help"], ["train", "--help"], ["compare", "--help"]):
        with pytest.raises(SystemExit):
            main(args)
        text = capsys.readouterr().out
        for name in ("ae", "vae", "beta_vae", "iwae", "cvae", "vqvae", "aae"):
            line = next(li for li in text.splitlines() if li.strip().startswith(name + " "))
            assert len(line.split()) > 2, line


def test_model_options_become_flags_with_their_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", "beta_vae", "--help"])
    text = capsys.readouterr().out
    assert "--beta FLOAT" in text and "beta_vae: 4.0" in text and "--kl-schedule" in text
    with pytest.raises(SystemExit):
        main(["compare", "--models", "iwae,vqvae", "--help"])
    text = capsys.readouterr().out
    assert "--k INT" in text and "--num-codes INT" in text and "--ema, --no-ema" in text
    assert "\noptions of iwae, vqvae:\n" in text
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "--prior-epochs (default 10)" in text and "vqvae: VQ-VAE" in text
    # Every registered model's options together: no name clashes with a general flag, and
    # an option that two models share shows each one's default.
    with pytest.raises(SystemExit) as stop:
        main(["compare", "--models", ",".join(model_names()), "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "beta_vae: 10000" in text and "hvae: 2000" in text  # --kl-warmup-steps


def test_train_help_heads_the_options_of_its_model_alone(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", "beta_vae", "--help"])
    text = capsys.readouterr().out
    assert "\noptions of beta_vae:\n" in text
    headers = [line for line in text.splitlines() if line.startswith("options of")]
    assert headers == ["options of beta_vae:"]  # not the compare pair's ae, vae
    with pytest.raises(SystemExit):
        main(["train", "--model", "iwae", "--help"])
    text = capsys.readouterr().out
    assert "options of iwae:" in text and "--beta" not in text


def test_model_options_reach_config_json(small_npz, tmp_path, capsys):
    out = tmp_path / "b"
    args = [
        "train",
        "--model",
        "beta_vae",
        "--beta",
        "2",
        "--kl-schedule",
        "linear",
        "--dataset",
        small_npz,
        "--hidden",
        "32",
        "--latent-dim",
        "4",
        "--epochs",
        "1",
        "--batch-size",
        "256",
        "--train-size",
        "512",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0, capsys.readouterr().err
    options = json.loads((out / "config.json").read_text())["run"]["model"]["options"]
    assert options["beta"] == 2.0 and options["kl_schedule"] == "linear"
    assert options["kl_warmup_steps"] == 10000  # defaults recorded too
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["train_terms"]["beta"] < 2.0  # warming up


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--model", "beta_vae", "--beta", "-1"], "--beta must be >= 0"),
        (["--model", "beta_vae", "--kl-schedule", "steep"], "--kl-schedule must be one of"),
        (["--model", "iwae", "--k", "0"], "--k must be a positive integer"),
        (["--model", "vae", "--likelihood", "mse"], "needs a normalised likelihood"),
        (["--import", "/nonexistent/models.py"], "no such file"),
        (["--import", "no_such_module_xyz"], "pass an importable module name"),
    ],
)
def test_bad_model_options_exit_2_with_one_line(extra, message, tmp_path, capsys):
    code, err = run_cli(["train", "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o" / "config.json").exists()
