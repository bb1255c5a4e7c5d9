"""Numerical faults: a step whose loss, gradient or update is not finite is skipped inside
the compiled step (parameters and optimiser state unchanged) and counted; a streak of
`nonfinite_patience` such steps stops the run with one error that names the step, what
went non-finite and the last good checkpoint, which stays intact."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import aevae_jax.models as registry
from aevae_jax.cli.main import main
from aevae_jax.config import DataConfig, ModelConfig, RunConfig
from aevae_jax.train.actions import NonFiniteError
from aevae_jax.train.fit import fit
from aevae_jax.train.runs import load_run
from aevae_jax.train.step import NONFINITE_WHAT, TrainState, make_epoch_fn, make_train_step


def linear_loss(params, batch, key, step):
    """Squared error of a linear map of the flattened images to 1: finite wherever x is."""
    pred = batch.x.reshape(len(batch.x), -1) @ params["w"]
    return jnp.mean((pred - 1.0) ** 2), {"pred": jnp.mean(pred)}


def images(n=8, bad=()):
    """n float images [n, 2, 2, 1] in [0, 1]; NaN planted in the examples `bad`."""
    x = np.linspace(0.1, 0.9, n * 4, dtype=np.float32).reshape(n, 2, 2, 1)
    for i in bad:
        x[i, 0, 0, 0] = np.nan
    return jnp.asarray(x)


def start(tx):
    params = {"w": jnp.full((4,), 0.1, jnp.float32)}
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))


def same(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


KEYS = {"binarize": jax.random.key(1), "model": jax.random.key(2)}


def test_a_nan_planted_in_a_batch_skips_that_update_only():
    tx = optax.adam(0.1)
    step = jax.jit(make_train_step(linear_loss, tx, "none", nonfinite_patience=5))
    x = images(bad=(5,))
    state = start(tx)
    good, m_good = step(state, KEYS, x, None, jnp.array([0, 1]))
    assert bool(m_good["applied"]) and int(good.guard.streak) == 0
    assert not same(good.params, state.params)

    bad, m_bad = step(good, KEYS, x, None, jnp.array([4, 5]))
    assert not bool(m_bad["applied"]) and np.isnan(float(m_bad["objective"]))
    assert same(bad.params, good.params) and same(bad.opt_state, good.opt_state)
    assert int(bad.step) == 2  # the step is counted (its keys are used up)
    assert (int(bad.guard.streak), int(bad.guard.first_step)) == (1, 1)
    assert NONFINITE_WHAT[int(bad.guard.what)] == "loss"

    again, m_again = step(bad, KEYS, x, None, jnp.array([2, 3]))
    assert bool(m_again["applied"]) and int(again.guard.streak) == 0
    # The update after the skipped one is the update the good state would have taken.
    direct, _ = step(good, KEYS, x, None, jnp.array([2, 3]))
    assert same(again.params, direct.params) and same(again.opt_state, direct.opt_state)


def test_a_non_finite_gradient_is_named_and_an_overflowing_update_caught_next_step():
    x = images()
    sqrt_loss = lambda p, b, k, s: (jnp.sum(jnp.sqrt(jnp.abs(p["w"]))), {})  # d/dw at 0: inf
    tx = optax.sgd(1.0)
    state = TrainState({"w": jnp.zeros(4)}, tx.init({"w": jnp.zeros(4)}), jnp.zeros((), jnp.int32))
    out, m = make_train_step(sqrt_loss, tx, "none")(state, KEYS, x, None, jnp.array([0]))
    assert NONFINITE_WHAT[int(out.guard.what)] == "gradient" and not bool(m["applied"])
    assert same(out.params, state.params)

    # A finite loss and gradient times a finite rate overflow the parameters: that step
    # is taken, and the next one, whose loss is then infinite, is skipped.
    steep = lambda p, b, k, s: (jnp.sum(10.0 * p["w"]), {})  # gradient 10 everywhere
    huge = optax.sgd(1e38)
    step = make_train_step(steep, huge, "none")
    first, m1 = step(start(huge), KEYS, x, None, jnp.array([0]))
    second, m2 = step(first, KEYS, x, None, jnp.array([1]))
    assert bool(m1["applied"]) and not bool(jnp.all(jnp.isfinite(first.params["w"])))
    assert not bool(m2["applied"]) and NONFINITE_WHAT[int(second.guard.what)] == "loss"
    assert (int(second.guard.streak), int(second.guard.first_step)) == (1, 1)


def test_a_streak_at_the_patience_freezes_the_state_and_epoch_means_skip_it():
    tx = optax.sgd(0.05)
    x = images(n=8, bad=(2, 3, 4, 5))  # steps 1 and 2 (batches of 2, in order) are NaN
    step = make_train_step(linear_loss, tx, "none", nonfinite_patience=2)
    state = start(tx)
    applied = []
    for idx in ([0, 1], [2, 3], [4, 5], [6, 7]):
        state, m = step(state, KEYS, x, None, jnp.array(idx))
        applied.append(bool(m["applied"]))
    # The fourth batch is finite but comes after two non-finite steps in a row: frozen.
    assert applied == [True, False, False, False]
    assert (int(state.guard.streak), int(state.guard.first_step)) == (2, 1)

    # The epoch (one scan over a permutation) averages the applied steps only.
    epoch = jax.jit(make_epoch_fn(linear_loss, tx, "none", 2, 8))
    keys = {**KEYS, "data": jax.random.key(3)}
    _, metrics = epoch(start(tx), keys, images(n=8, bad=(0,)), None, 0)
    assert int(metrics["skipped_steps"]) == 1
    assert np.isfinite(float(metrics["objective"])) and np.isfinite(float(metrics["pred"]))


@pytest.fixture
def nan_after_24(monkeypatch):
    """A registered VAE whose training loss is NaN from its step 24 on: a run that
    diverges (the per-epoch test, one image at a time, stays finite)."""
    registry.model_names()  # load the package's models before copying the registry
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    vae = registry.model_info("vae").factory

    @registry.register("vae_nan_after_24", needs_density=True)
    def make(cfg, spec, opts):
        model = vae(cfg, spec, opts)
        loss = model.loss

        def diverging(params, batch, key, step):
            value, terms = loss(params, batch, key, step)
            if len(batch.x) == 1:  # the per-epoch test
                return value, terms
            return value + jnp.where(step >= 24, jnp.nan, 0.0), terms

        return dataclasses.replace(model, loss=diverging)

    return "vae_nan_after_24"


def cfg_for(tmp_path, name, patience):
    return RunConfig(
        data=DataConfig(train_size=256),
        model=ModelConfig(name=name, hidden=(32,), latent_dim=4),
        epochs=8,
        batch_size=32,
        out=str(tmp_path / "run"),
        nonfinite_patience=patience,
    )


def test_a_diverging_run_stops_naming_step_quantity_and_intact_checkpoint(
    nan_after_24, small_data, tmp_path
):
    cfg = cfg_for(tmp_path, nan_after_24, patience=3)  # 8 steps an epoch: step 25 is epoch 4's
    with pytest.raises(NonFiniteError) as err:
        fit(cfg, dataset=small_data, progress=False)
    text = str(err.value)
    assert "epoch 4" in text and "3 consecutive steps with a non-finite loss" in text
    assert "from step 25" in text and "epoch 3 in" in text and "--grad-clip" in text
    run = load_run(cfg.out, "latest", need_data=False)
    assert run.epoch == 3 and all(
        np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(run.params)
    )
    rows = [json.loads(line) for line in open(os.path.join(cfg.out, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # the stopped epoch is not logged


def test_stop_on_nonfinite_stops_at_the_first(nan_after_24, small_npz, tmp_path, capsys):
    out = tmp_path / "first"
    code = main(["train", "--model", nan_after_24, "--dataset", small_npz, "--train-size",
                 "256", "--hidden", "32", "--latent-dim", "4", "--batch-size", "32",
                 "--epochs", "8", "--out", str(out), "--quiet", "--stop-on-nonfinite"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert "1 consecutive steps with a non-finite loss, from step 25" in err[0]


def test_a_real_divergence_from_lr_1000_exits_2_and_logs_strict_json(small_npz, tmp_path, capsys):
    out = tmp_path / "lr1000"
    code = main(["train", "--dataset", small_npz, "--train-size", "256", "--hidden", "32",
                 "--latent-dim", "4", "--batch-size", "32", "--epochs", "3", "--lr", "1000",
                 "--out", str(out), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "not finite (the model diverged)" in err and "--lr" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    text = (out / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    for line in text.splitlines():
        json.loads(line)
