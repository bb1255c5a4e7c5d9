"""Bad input, tried as a new user would: wrong values, bad files, bad data, damaged or
missing run directories, across train, evaluate, sample and compare. Each ends with one
line on stderr naming the remedy and exit status 2, never a traceback; a training run
fails before its data loads and leaves no directory behind. (tests/test_cli.py holds the
plain option-value cases; this table adds the rest.)"""

import shutil

import numpy as np
import pytest

import aevae_jax.study.compare as compare
import aevae_jax.train.fit as train
from aevae_jax.cli.main import main
from aevae_jax.config import DataConfig, ModelConfig, RunConfig


@pytest.fixture(scope="module")
def files(small_data, small_npz, tmp_path_factory):
    """A finished run, a run directory without checkpoints, and bad data files."""
    root = tmp_path_factory.mktemp("bad_input")
    run = root / "run"
    cfg = RunConfig(
        data=DataConfig(dataset=small_npz, train_size=256),
        model=ModelConfig(hidden=(32,), latent_dim=4),
        epochs=2,
        batch_size=32,
        out=str(run),
    )
    train.fit(cfg, dataset=small_data, progress=False)
    empty = root / "no_checkpoint"
    empty.mkdir()
    shutil.copy(run / "config.json", empty / "config.json")
    x = np.zeros((16, 28, 28), np.uint8)
    np.savez(root / "unlabelled.npz", x_train=x, x_test=x[:4])
    odd = np.zeros((16, 30, 30), np.uint8)
    np.savez(root / "odd_size.npz", x_train=odd, x_test=odd[:4])
    np.savez(root / "mismatch.npz", x_train=x, x_test=np.zeros((4, 32, 32), np.uint8))
    y = np.arange(16) * 1000
    np.savez(root / "labels.npz", x_train=x, x_test=x[:4], y_train=y, y_test=y[:4])
    (root / "noise.npz").write_bytes(np.random.default_rng(0).bytes(500))
    (root / "data.txt").write_text("1 2 3")
    (root / "a_file").write_text("x")
    (root / "dir.png").mkdir()
    return {"root": str(root), "run": str(run), "empty": str(empty), "npz": small_npz}


TRAIN = [
    (["--lr", "inf"], "lr must be a positive finite number"),
    (["--lr", "nan"], "lr must be a positive finite number"),
    (["--nonfinite-patience", "0"], "nonfinite_patience must be a positive integer"),
    (["--seed", "-1"], "seed must be an integer in [0, 2**32)"),
    (["--checkpoint-every", "0"], "checkpoint_every must be a positive integer"),
    (["--likelihood", "logistic"], "use --binarize none"),
    (["--weight-decay", "0.1"], "applies to adamw only"),
    (["--out", "{root}/a_file"], "is a file; name a directory"),
    (["--dataset", "{root}"], "is a directory"),
    (["--dataset", "{root}/data.txt"], "is not an .npz file"),
    (["--dataset", "{root}/noise.npz"], "is not a readable .npz file"),
    (["--dataset", "{root}/missing.npz"], "no such data file"),
    (["--dataset", "{root}/mismatch.npz"], "both splits need the same image shape"),
    (["--dataset", "{root}/labels.npz"], "at most 1000 classes"),
    (["--dataset", "{root}/unlabelled.npz", "--model", "cvae"], "conditioned on class labels"),
    (["--dataset", "{root}/odd_size.npz", "--backbone", "conv"], "divisible by 4"),
    (["--dataset", "{npz}", "--batch-size", "100000"], "exceeds the 2048 training examples"),
    (["--dataset", "{npz}", "--train-size", "1000000"], "larger than the training split"),
    (["--resume", "--out", "{run}", "--model", "ae"], "model.name: saved 'vae', given 'ae'"),
]
OTHERS = [
    (["train", "--model", "ae", "--beta", "2"], "--beta is an option of beta_vae, not of ae"),
    (["train", "--resume", "--out", "{run}", "--epochs", "1"], "has already trained 2 epochs"),
    (["evaluate", "--run", "{root}/nowhere"], "is not a run directory"),
    (["evaluate", "--run", "{empty}"], "has no checkpoint yet; train it first"),
    (["evaluate", "--run", "{run}", "--json", "{root}"], "cannot write --json"),
    (["evaluate", "--run", "{run}", "--iwae-k", "0"], "--iwae-k must be a positive integer"),
    (["evaluate", "--run", "{run}", "{run}"], "--run names a run twice"),
    (["sample", "--run", "{run}", "--out", "s.png", "--n", "0"], "--n must be an integer"),
    (["sample", "--run", "{run}", "--out", "s.png", "--n", "100000000"], "in [1, 4096]"),
    (["sample", "--run", "{run}", "--out", "{root}/dir.png"], "is a directory; name a .png"),
    (["sample", "--run", "{run}", "--out", "s.jpg"], "must name a .png file"),
    (["sample", "--run", "{run}", "--out", "s.png", "--seed", "-1"], "[0, 2**32)"),
    (["sample", "--run", "{run}", "--out", "s.png", "--label", "3"], "--label applies to"),
    (["sample", "--run", "{root}/nowhere", "--out", "s.png"], "is not a run directory"),
    (["compare", "--models", "ae,nosuch", "--out", "{root}/c"], "unknown model 'nosuch'"),
    (["compare", "--pair", "ae", "--out", "{root}/c"], "--pair takes two model names"),
    (["compare", "--timing-rounds", "1", "--out", "{root}/c"], "at least 2"),
    (["compare", "--distributed", "--out", "{root}/c"], "runs on one host"),
    (
        ["compare", "--dataset", "{root}/odd_size.npz", "--backbone", "conv", "--out", "{root}/c"],
        "divisible by 4",
    ),
]


@pytest.fixture
def no_data_loads(monkeypatch):
    """Checks must fail before any data set is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("the data set was loaded before the configuration was checked")

    monkeypatch.setattr(train, "load_dataset", refuse)
    monkeypatch.setattr(compare, "load_dataset", refuse)


def one_error_line(argv, files, capsys, tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    code = main([a.format(**files) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("aevae: error: ") and "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("extra,message", TRAIN, ids=[" ".join(a) for a, _ in TRAIN])
def test_bad_training_input_fails_before_the_data_loads(
    extra, message, files, capsys, tmp_path, monkeypatch, no_data_loads
):
    out = tmp_path / "new" / "out"
    line = one_error_line(["train", "--out", str(out), *extra], files, capsys, tmp_path,
                          monkeypatch)  # fmt: skip
    assert message in line
    assert not (tmp_path / "new").exists()  # a failed run leaves no directory behind


@pytest.mark.parametrize("argv,message", OTHERS, ids=[" ".join(a[:2]) for a, _ in OTHERS])
def test_bad_input_to_resume_evaluate_sample_and_compare(
    argv, message, files, capsys, tmp_path, monkeypatch
):
    assert message in one_error_line(argv, files, capsys, tmp_path, monkeypatch)
