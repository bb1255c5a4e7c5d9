"""Damaged and moved run directories: a truncated or corrupted checkpoint is detected on
restore and the previous one is used, with a warning that names what was skipped (one
clear error when none is usable); the best checkpoint still tracks the best epoch after
a resume; a run directory that was moved, copied or is named another way resumes,
evaluates and samples; a damaged config.json or metrics.jsonl is named, not a traceback."""

import dataclasses
import json
import os
import shutil
import warnings

import jax
import numpy as np
import pytest

from aevae_jax.cli.main import main
from aevae_jax.config import DataConfig, ModelConfig, RunConfig
from aevae_jax.data.spec import Dataset
from aevae_jax.errors import UserError
from aevae_jax.evaluate.evaluation import evaluate_model
from aevae_jax.train.checkpoint import CheckpointWarning, RunCheckpoints
from aevae_jax.train.fit import fit
from aevae_jax.train.rundir import RunWarning
from aevae_jax.train.runs import load_run
from tests import kill_resume
from tests.helpers import build


def tiny_cfg(out, epochs=3, checkpoint_every=1):
    return RunConfig(
        data=DataConfig(train_size=256),
        model=ModelConfig(hidden=(32,), latent_dim=4),
        epochs=epochs,
        batch_size=32,
        out=str(out),
        checkpoint_every=checkpoint_every,
    )


def same(a, b) -> bool:
    equal = jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)
    return all(jax.tree.leaves(equal))


@pytest.fixture(scope="module")
def trained(small_data, tmp_path_factory):
    """A finished 3-epoch VAE run: periodic checkpoints 2 and 3, and a best one."""
    out = tmp_path_factory.mktemp("trained") / "run"
    fit(tiny_cfg(out), dataset=small_data, progress=False)
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    return copy


def array_files(checkpoint_dir) -> list[str]:
    """The files that hold a checkpoint's array data, largest first."""
    found = [
        os.path.join(root, name)
        for root, _, names in os.walk(checkpoint_dir)
        for name in names
        if os.sep + "d" in root
    ]
    return sorted(found, key=os.path.getsize, reverse=True)


def truncate(checkpoint_dir):
    path = array_files(checkpoint_dir)[0]
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def flip_bytes(checkpoint_dir):
    """Corrupt the largest data file in place, keeping its size."""
    path = array_files(checkpoint_dir)[0]
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
    open(path, "wb").write(bytes(data))


def best_epoch(run_dir) -> int:
    checkpoints = RunCheckpoints(str(run_dir))
    try:
        return checkpoints.best.best_step()
    finally:
        checkpoints.close()


@pytest.mark.parametrize("damage", [truncate, flip_bytes])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(run_copy, damage):
    damage(run_copy / "checkpoints" / "3")
    with pytest.warns(CheckpointWarning, match=r"checkpoints/3 is damaged .*; skipping it"):
        run = load_run(str(run_copy), "latest", need_data=False)
    assert (run.which, run.epoch) == ("latest", 2)


def test_a_damaged_best_checkpoint_falls_back_to_the_latest(run_copy, capsys):
    damage = run_copy / "best" / str(best_epoch(run_copy))
    truncate(damage)
    with pytest.warns(CheckpointWarning, match="best/"):
        run = load_run(str(run_copy), "best", need_data=False)
    assert (run.which, run.epoch) == ("latest", 3)
    # The command line says the same in one warning line, and samples from the fallback.
    png = run_copy.parent / "s.png"
    assert main(["sample", "--run", str(run_copy), "--n", "4", "--out", str(png)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aevae: warning: checkpoint") and png.exists()


def test_no_usable_checkpoint_is_one_clear_error(run_copy, capsys):
    for folder in ("checkpoints/2", "checkpoints/3", f"best/{best_epoch(run_copy)}"):
        flip_bytes(run_copy / folder)
    with pytest.warns(CheckpointWarning), pytest.raises(UserError, match="no usable checkpoint"):
        load_run(str(run_copy), "best", need_data=False)
    code = main(["sample", "--run", str(run_copy), "--n", "4", "--out", str(run_copy / "s.png")])
    err = capsys.readouterr().err
    assert code == 2 and "no usable checkpoint" in err and "Traceback" not in err


def test_resume_from_a_damaged_latest_checkpoint_equals_a_straight_run(
    run_copy, small_data, tmp_path
):
    truncate(run_copy / "checkpoints" / "3")
    with pytest.warns(CheckpointWarning, match="checkpoints/3"):
        resumed = fit(tiny_cfg(run_copy, epochs=4), resume=True, dataset=small_data, progress=False)
    straight = fit(tiny_cfg(tmp_path / "straight", epochs=4), dataset=small_data, progress=False)
    assert same(resumed.params, straight.params)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    # The damaged folder was replaced by epoch 3 trained again: it restores cleanly now.
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        assert int(kill_resume._restore(str(run_copy), 3)["epoch"]) == 3


class Killed(Exception):
    """Stands for SIGKILL in-process: nothing after the raise runs."""


def test_best_checkpoint_tracks_the_best_epoch_after_a_resume(small_data, tmp_path, monkeypatch):
    """--checkpoint-every 3, killed after epoch 4: resume from epoch 3, and epochs 4-6
    are offered as the best again (orbax refuses to save epoch 4 a second time, so the
    old best would stay)."""
    out = tmp_path / "killed"
    original = RunCheckpoints.save

    def save_then_die(self, epoch, tree, score, periodic):
        original(self, epoch, tree, score, periodic)
        if epoch == 4:
            raise Killed

    monkeypatch.setattr(RunCheckpoints, "save", save_then_die)
    with pytest.raises(Killed):
        fit(tiny_cfg(out, epochs=6, checkpoint_every=3), dataset=small_data, progress=False)
    monkeypatch.setattr(RunCheckpoints, "save", original)
    # The best checkpoint on disk claims epoch 4 with a score no replay can beat, as if
    # the killed process had trained another trajectory (other devices, other flags):
    # the resumed run must train epoch 4 again and rank its own epochs.
    checkpoints = RunCheckpoints(str(out))
    for step in checkpoints.best.all_steps():
        checkpoints.best.delete(step)
    checkpoints.save(4, kill_resume._restore(str(out), 3), -1e9, periodic=False)
    checkpoints.close()
    resumed = fit(
        tiny_cfg(out, epochs=6, checkpoint_every=3), resume=True, dataset=small_data,
        progress=False,
    )  # fmt: skip
    straight_out = tmp_path / "straight"
    fit(tiny_cfg(straight_out, epochs=6, checkpoint_every=3), dataset=small_data, progress=False)
    select = resumed.history[0]["selection"]
    best = min(resumed.history, key=lambda r: r[select])["epoch"]
    assert best_epoch(out) == best_epoch(straight_out) == best
    assert same(
        load_run(str(out), "best", need_data=False).params,
        load_run(str(straight_out), "best", need_data=False).params,
    )


def test_a_moved_run_resumes_evaluates_and_samples_from_anywhere(
    small_npz, tmp_path, monkeypatch, capsys
):
    data_dir = os.path.dirname(small_npz)
    monkeypatch.chdir(data_dir)  # the data file given by a relative path
    first = tmp_path / "first"
    args = ["train", "--dataset", os.path.basename(small_npz), "--train-size", "256",
            "--hidden", "32", "--latent-dim", "4", "--batch-size", "32", "--quiet"]  # fmt: skip
    assert main([*args, "--epochs", "2", "--out", str(first)]) == 0
    saved = json.loads((first / "config.json").read_text())["run"]
    assert saved["out"] == "." and saved["data"]["dataset"] == small_npz
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    monkeypatch.chdir(tmp_path / "elsewhere")
    # Only --resume and --out (spelled another way) are needed; --epochs may grow.
    assert main(["train", "--resume", "--out", "./moved/../moved", "--epochs", "3"]) == 0
    rows = [json.loads(line) for line in open(moved / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert load_run("moved", "latest").dataset is not None  # the data file is found
    assert main(["sample", "--run", "moved", "--n", "4", "--out", "s.png"]) == 0
    capsys.readouterr()


def test_resume_names_the_options_that_differ(trained, capsys):
    code = main(["train", "--resume", "--out", str(trained), "--lr", "0.01", "--hidden", "16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and len(err) < 400
    assert "optim.lr: saved 0.001, given 0.01" in err and "model.hidden" in err


def test_damaged_config_and_log_are_named(run_copy, small_data, capsys):
    log = run_copy / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], '{"epoch": 2, "stage": "ma', lines[2]]) + "\n")
    with pytest.warns(RunWarning, match="metrics.jsonl line 2 is damaged"):
        resumed = fit(tiny_cfg(run_copy, epochs=4), resume=True, dataset=small_data, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 3, 4]

    (run_copy / "config.json").write_text('{"run": {"epochs": ')
    code = main(["evaluate", "--run", str(run_copy), "--no-fd", "--iwae-k", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "config.json is damaged" in err and "Traceback" not in err


def test_a_checkpoint_with_non_finite_parameters_is_refused_by_evaluate_and_sample(
    run_copy, capsys
):
    """Only finite steps are saved now, but a run from elsewhere (or an older version)
    may hold NaN parameters: sample writes no PNG, evaluate stops before minutes of work."""
    tree = kill_resume._restore(str(run_copy), 3)
    tree["params"] = jax.tree.map(lambda a: a * np.nan, tree["params"])
    checkpoints = RunCheckpoints(str(run_copy))
    for step in checkpoints.best.all_steps():
        checkpoints.best.delete(step)
    checkpoints.save(4, tree, -1.0, periodic=False)
    checkpoints.close()
    png = run_copy / "nan.png"
    assert main(["sample", "--run", str(run_copy), "--n", "4", "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert "are not finite" in err and "Traceback" not in err and not png.exists()
    # evaluate_model (what `aevae evaluate` runs) stops after the reconstructions, before
    # the importance sampling: here on a tiny model and data set, to stay quick.
    model, params, _ = build("vae")
    x = np.zeros((6, 4, 4, 1), np.uint8)
    tiny = Dataset("tiny", x, x, np.arange(6) % 3, np.arange(6) % 3)
    nan_params = jax.tree.map(lambda a: a * np.nan, params)
    with pytest.raises(UserError, match="not finite: its parameters have diverged"):
        evaluate_model(model, nan_params, tiny, "none", jax.random.key(0), iwae_k=2)


def test_without_keep_best_only_periodic_checkpoints_are_saved(small_data, tmp_path):
    cfg = dataclasses.replace(tiny_cfg(tmp_path / "run", epochs=2, checkpoint_every=2),
                              keep_best=False)  # fmt: skip
    fit(cfg, dataset=small_data, progress=False)
    checkpoints = RunCheckpoints(cfg.out)
    try:
        assert checkpoints.best.best_step() is None
        assert checkpoints.latest_epoch() == 2
    finally:
        checkpoints.close()
    assert load_run(cfg.out, "best", dataset=small_data).which == "latest"
