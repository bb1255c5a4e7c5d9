"""TensorBoard summaries: every logged number is a scalar at its epoch, image grids at
the configured period and the last epoch, read back with TensorBoard's own reader; a
resumed run's replayed epochs are not drawn twice; --no-tensorboard writes nothing."""

import glob
import os
import shutil

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from aevae_jax.cli.main import main
from aevae_jax.config import DataConfig, ModelConfig, RunConfig
from aevae_jax.train.fit import fit
from aevae_jax.train.rundir import read_log
from aevae_jax.train.summaries import grid, scalar_tag


def cfg(out, small_npz, model="vae", epochs=3, **kw):
    return RunConfig(
        data=DataConfig(dataset=small_npz, train_size=256),
        model=ModelConfig(name=model, hidden=(32,), latent_dim=4),
        epochs=epochs,
        batch_size=32,
        out=str(out),
        tensorboard=True,  # the suite's default is off (conftest.py)
        **kw,
    )


def events(run_dir) -> EventAccumulator:
    return EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0}).Reload()


def test_scalars_mirror_the_log_and_images_follow_the_period(small_npz, tmp_path):
    out = tmp_path / "run"
    fit(cfg(out, small_npz, image_every=2), progress=False)
    acc, log = events(out), read_log(os.path.join(out, "metrics.jsonl"))
    for name in ("train_objective", "test_neg_elbo", "test_objective", "step_ms"):
        got = acc.Scalars(scalar_tag(name))
        assert [e.step for e in got] == [1, 2, 3]
        np.testing.assert_allclose([e.value for e in got], [r[name] for r in log], rtol=1e-6)
    assert "test/neg_elbo" in acc.Tags()["scalars"] and "time/step_ms" in acc.Tags()["scalars"]
    recon = acc.Images("images/reconstructions")
    assert [e.step for e in recon] == [2, 3]  # the period, then the last epoch
    assert (recon[0].height, recon[0].width) == (2 * 29 - 1, 8 * 29 - 1)  # inputs over outputs
    samples = acc.Images("images/samples")
    assert [e.step for e in samples] == [2, 3] and samples[0].width == 4 * 29 - 1


def test_a_resume_does_not_draw_replayed_epochs_twice(small_npz, tmp_path):
    out = tmp_path / "run"
    fit(cfg(out, small_npz, model="ae", epochs=3), progress=False)
    # The epoch-3 checkpoint lost (a kill before it was saved): the resume replays epoch 3.
    for path in glob.glob(os.path.join(out, "checkpoints", "3")) + glob.glob(
        os.path.join(out, "manifests", "latest-3.json")
    ):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    shutil.rmtree(os.path.join(out, "best"))
    fit(cfg(out, small_npz, model="ae", epochs=4), resume=True, progress=False)
    assert len(glob.glob(os.path.join(out, "events.out.tfevents.*"))) == 2
    steps = [e.step for e in events(out).Scalars("test/objective")]
    assert steps == [1, 2, 3, 4]


def test_no_tensorboard_writes_no_events(small_npz, tmp_path, monkeypatch):
    monkeypatch.setenv("AEVAE_TENSORBOARD", "1")  # on by default, as outside the suite
    out = tmp_path / "run"
    argv = ["train", "--model", "ae", "--dataset", small_npz, "--train-size", "256",
            "--hidden", "32", "--latent-dim", "4", "--batch-size", "32", "--epochs", "1",
            "--out", str(out), "--quiet", "--no-tensorboard"]  # fmt: skip
    assert main(argv) == 0
    assert os.path.exists(out / "metrics.jsonl")
    assert not glob.glob(str(out / "events.out.tfevents.*"))


def test_image_every_must_be_positive(capsys):
    assert main(["train", "--image-every", "0", "--out", "/nonexistent/never"]) == 2
    assert "image_every must be a positive integer" in capsys.readouterr().err


def test_grid_lays_images_out_by_rows_with_white_gaps():
    images = np.stack([np.full((2, 3, 1), v, np.float32) for v in (0.1, 0.2, 0.3)])
    g = grid(images, cols=2)
    assert g.shape == (2 * 3 - 1, 2 * 4 - 1, 1)
    assert g[0, 0, 0] == np.float32(0.1) and g[0, 4, 0] == np.float32(0.2)
    assert g[3, 0, 0] == np.float32(0.3) and g[3, 4, 0] == 1.0  # the empty cell stays white
    assert (g[2] == 1.0).all() and (g[:, 3] == 1.0).all()  # the gaps


@pytest.mark.parametrize(
    "name,tag",
    [("train_objective", "train/objective"), ("test_mse", "test/mse"),
     ("epoch_seconds", "time/epoch_seconds"), ("skipped_steps", "train/skipped_steps")],
)  # fmt: skip
def test_scalar_tags(name, tag):
    assert scalar_tag(name) == tag


def test_seeds_trained_together_each_get_their_summaries(small_npz, tmp_path):
    from aevae_jax.train.fit import fit_seeds

    out = tmp_path / "seeds"
    fit_seeds(cfg(out, small_npz, model="cvae", epochs=1), [0, 1], progress=False)
    for seed in (0, 1):
        acc = events(out / f"seed_{seed}")
        assert [e.step for e in acc.Scalars("test/objective")] == [1]
        assert [e.step for e in acc.Images("images/samples")] == [1]  # class-conditional


def test_the_environment_sets_the_default(monkeypatch):
    for value, on in (("0", False), ("off", False), ("1", True)):
        monkeypatch.setenv("AEVAE_TENSORBOARD", value)
        assert RunConfig().tensorboard is on
    monkeypatch.delenv("AEVAE_TENSORBOARD")
    assert RunConfig().tensorboard is True
