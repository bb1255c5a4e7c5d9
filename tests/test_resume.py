"""Stop and resume a model whose state is more than one optimiser: a two-stage model (the
VQ-VAE, stopped once in each stage), stopped right after a checkpoint and resumed, ends
with exactly the parameters, every stage's optimiser state and the log of an
uninterrupted run. The stop is in-process (nothing after the save runs, as after a
SIGKILL); real SIGKILLs at random moments are tests/kill_resume.py's, on the VAE."""

import pytest

from aevae_jax.config import DataConfig, ModelConfig, RunConfig
from aevae_jax.train.checkpoint import RunCheckpoints
from aevae_jax.train.fit import fit
from tests import kill_resume


class Killed(Exception):
    """Stands for SIGKILL: raised right after a checkpoint was written."""


CASES = {
    # name: (model, its options, main epochs, stop after these epochs, total epochs)
    "vqvae": (
        "vqvae",
        {"num_codes": 16, "code_dim": 4, "prior_epochs": 3, "prior_hidden": 64},
        3,
        (2, 4),  # once in the autoencoder stage, once in the prior stage
        6,
    ),
}


def case_cfg(out, name, options, epochs):
    return RunConfig(
        data=DataConfig(train_size=256),
        model=ModelConfig(name=name, hidden=(64,), latent_dim=4, options=options),
        epochs=epochs,
        batch_size=32,
        out=str(out),
    )


@pytest.mark.parametrize("case", list(CASES))
def test_stopped_runs_resume_to_the_uninterrupted_state(case, small_data, tmp_path, monkeypatch):
    name, options, epochs, stops, total = CASES[case]
    out = tmp_path / "stopped"
    cfg = case_cfg(out, name, options, epochs)
    original = RunCheckpoints.save
    for i, stop in enumerate(stops):

        def save_then_die(self, epoch, tree, score, periodic, stop=stop):
            original(self, epoch, tree, score, periodic)
            if epoch == stop:
                raise Killed

        monkeypatch.setattr(RunCheckpoints, "save", save_then_die)
        with pytest.raises(Killed):
            fit(cfg, resume=i > 0, dataset=small_data, progress=False)
    monkeypatch.setattr(RunCheckpoints, "save", original)
    resumed = fit(cfg, resume=True, dataset=small_data, progress=False)
    straight_out = tmp_path / "straight"
    fit(case_cfg(straight_out, name, options, epochs), dataset=small_data, progress=False)
    kill_resume.compare_runs(str(out), str(straight_out), total)
    stages = [r["stage"] for r in resumed.history]
    assert stages == ["main"] * epochs + ["prior"] * (total - epochs)
