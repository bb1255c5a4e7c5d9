"""Training on real data: loss goes down, one seed gives the same bits, checkpoints
round-trip and the best one is ranked by a step-independent score, resume checks its
options (killing and resuming a real process is in test_resume.py)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aevae_jax.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from aevae_jax.data.preprocess import to_unit_interval
from aevae_jax.errors import UserError
from aevae_jax.evaluate.scores import make_epoch_test
from aevae_jax.evaluate.split import map_examples
from aevae_jax.models import make_model
from aevae_jax.nn.optim import make_optimizer
from aevae_jax.train.fit import fit
from aevae_jax.train.runs import load_run
from aevae_jax.train.stages import init_state
from aevae_jax.train.step import make_streams


def small_cfg(out, name="vae", **kw):
    base = dict(
        data=DataConfig(train_size=1024),
        model=ModelConfig(name=name, hidden=(64,), latent_dim=8),
        epochs=2,
        batch_size=64,
        out=str(out),
    )
    base.update(kw)
    return RunConfig(**base)


def params_equal(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b)))


@pytest.mark.parametrize("name", ["ae", "vae"])
def test_real_train_steps_lower_the_test_loss(small_data, tmp_path, name):
    cfg = small_cfg(tmp_path / name, name=name, epochs=3)
    model = make_model(cfg.model, small_data.spec)
    keys = make_streams(cfg.seed)
    x_test = jnp.asarray(small_data.x_test[:1000])
    init, _ = init_state(model, [], keys["init"], x_test, None)
    test = make_epoch_test(model, model.loss, cfg.data.binarize)
    before = test(init, x_test, None, keys["eval"], 0)
    result = fit(cfg, dataset=small_data, progress=False)
    after = test(result.params, x_test, None, keys["eval"], 0)
    assert after["test_objective"] < 0.7 * before["test_objective"]
    select = "test_neg_elbo" if name == "vae" else "test_recon_nll"
    assert after[select] < 0.7 * before[select]
    rows = result.history
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["step"] == 3 * 16
    assert rows[-1]["train_objective"] < rows[0]["train_objective"]
    assert all(r["selection"] == select and r["stage"] == "main" for r in rows)
    with open(tmp_path / name / "metrics.jsonl") as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2, 3]


def test_same_seed_gives_identical_bits_and_another_seed_does_not(small_data, tmp_path):
    a = fit(small_cfg(tmp_path / "a"), dataset=small_data, progress=False)
    b = fit(small_cfg(tmp_path / "b"), dataset=small_data, progress=False)
    c = fit(small_cfg(tmp_path / "c", seed=1), dataset=small_data, progress=False)
    assert params_equal(a.params, b.params)
    assert not params_equal(a.params, c.params)
    assert a.history[-1]["test_neg_elbo"] == b.history[-1]["test_neg_elbo"]


def test_checkpoints_round_trip_latest_and_best(small_data, tmp_path):
    cfg = small_cfg(tmp_path / "run", epochs=3)
    result = fit(cfg, dataset=small_data, progress=False)
    latest = load_run(cfg.out, "latest", dataset=small_data)
    assert params_equal(latest.params, result.params) and latest.epoch == 3
    best = load_run(cfg.out, "best", dataset=small_data)
    scores = [r["test_neg_elbo"] for r in result.history]
    assert best.epoch == 1 + int(np.argmin(scores)) and best.which == "best"


def test_best_checkpoint_is_ranked_by_the_elbo_not_the_warm_up_objective(small_data, tmp_path):
    # Under a KL warm-up the objective depends on the step (beta rises), so it cannot rank
    # epochs; the ELBO (beta = 1, K = 1) does not depend on the step and ranks them.
    model = ModelConfig(
        name="beta_vae",
        hidden=(64,),
        latent_dim=8,
        options={"beta": 1.0, "kl_schedule": "linear", "kl_warmup_steps": 1000},
    )
    cfg = small_cfg(tmp_path / "warm", model=model, epochs=3)
    result = fit(cfg, dataset=small_data, progress=False)
    test = make_epoch_test(result.model, result.model.loss, "dynamic")
    x, key = jnp.asarray(small_data.x_test[:300]), jax.random.key(0)
    early, late = test(result.params, x, None, key, 0), test(result.params, x, None, key, 1000)
    assert early["test_objective"] < late["test_objective"] - 1.0  # same params, other step
    assert early["test_neg_elbo"] == late["test_neg_elbo"]
    rows = result.history
    assert all(r["selection"] == "test_neg_elbo" for r in rows)
    best = load_run(cfg.out, "best", dataset=small_data)
    assert best.epoch == 1 + int(np.argmin([r["test_neg_elbo"] for r in rows]))


def test_existing_run_is_not_overwritten_and_resume_checks_options(small_data, tmp_path):
    cfg = small_cfg(tmp_path / "run", epochs=1)
    fit(cfg, dataset=small_data, progress=False)
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        fit(cfg, dataset=small_data, progress=False)
    changed = small_cfg(tmp_path / "run", epochs=1, batch_size=32)
    with pytest.raises(UserError, match="was trained with other options"):
        fit(changed, resume=True, dataset=small_data, progress=False)
    with pytest.raises(UserError, match="was trained with other options"):
        fit(
            small_cfg(
                tmp_path / "run",
                epochs=1,
                model=ModelConfig(name="vae", hidden=(64,), latent_dim=8, likelihood="gaussian"),
            ),
            resume=True,
            dataset=small_data,
            progress=False,
        )
    # Extending the budget continues from the checkpoint: epochs 1 (saved) + 2 (new).
    more = fit(
        small_cfg(tmp_path / "run", epochs=2), resume=True, dataset=small_data, progress=False
    )
    assert [r["epoch"] for r in more.history] == [1, 2]


def test_batch_larger_than_data_is_an_error(small_data, tmp_path):
    with pytest.raises(UserError, match="exceeds the 1024 training examples"):
        fit(small_cfg(tmp_path / "r", batch_size=2048), dataset=small_data, progress=False)


def test_optimizer_options_build_and_clip():
    params = {"w": jnp.ones(3)}
    for opt in ("adam", "adamw", "sgd"):
        for schedule in ("constant", "cosine", "warmup_cosine"):
            warmup = 2 if schedule == "warmup_cosine" else 0
            tx = make_optimizer(
                OptimConfig(optimizer=opt, schedule=schedule, warmup_steps=warmup), 10
            )
            tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    tx = make_optimizer(OptimConfig(optimizer="sgd", lr=1.0, grad_clip=1.0), 10)
    updates, _ = tx.update({"w": jnp.full(3, 100.0)}, tx.init(params), params)
    assert float(optax.global_norm(updates)) == pytest.approx(1.0, rel=1e-5)


def test_map_examples_is_independent_of_chunk_size():
    x = jnp.arange(10.0)
    fn = lambda xi, i: xi * 2 + jax.random.uniform(jax.random.fold_in(jax.random.key(0), i))
    a = map_examples(fn, (x,), chunk=3)
    b = map_examples(fn, (x,), chunk=10)
    assert a.shape == (10,)
    np.testing.assert_array_equal(a, b)


def test_resume_refuses_fewer_epochs_and_schedule_changes(small_data, tmp_path):
    cfg = small_cfg(tmp_path / "run", epochs=2)
    fit(cfg, dataset=small_data, progress=False)
    with pytest.raises(UserError, match="already trained 2 epochs"):
        fit(
            small_cfg(tmp_path / "run", epochs=1),
            resume=True,
            dataset=small_data,
            progress=False,
        )
    cos = small_cfg(tmp_path / "cos", epochs=1, optim=OptimConfig(schedule="cosine"))
    fit(cos, dataset=small_data, progress=False)
    longer = small_cfg(tmp_path / "cos", epochs=2, optim=OptimConfig(schedule="cosine"))
    with pytest.raises(UserError, match="schedule spans"):
        fit(longer, resume=True, dataset=small_data, progress=False)
    # The same options, spelled with a trailing slash, are the same run.
    same = small_cfg(str(tmp_path / "run") + "/", epochs=2)
    assert len(fit(same, resume=True, dataset=small_data, progress=False).history) == 2


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(optimizer="adam", weight_decay=0.1), "adamw only"),
        (dict(schedule="constant", warmup_steps=10), "warmup_cosine schedule only"),
    ],
)
def test_optimizer_options_that_would_be_ignored_are_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        OptimConfig(**kwargs)


def test_warmup_longer_than_the_run_is_an_error():
    with pytest.raises(UserError, match="fewer than the run's 10 steps"):
        make_optimizer(OptimConfig(schedule="warmup_cosine", warmup_steps=10), 10)


def test_init_sees_the_first_training_image_in_the_unit_interval(small_data):
    """A model that initialises from data (pseudo-inputs, a data-dependent init) gets the
    image as every batch has it: float32 in [0, 1], not the stored uint8 levels."""
    model = make_model(ModelConfig(name="vae", hidden=(64,), latent_dim=8), small_data.spec)
    seen = dataclasses.replace(model, init=lambda key, batch: {"x": batch.x})
    x_train = jnp.asarray(small_data.x_train)
    assert x_train.dtype == jnp.uint8 and int(x_train[0].max()) > 1
    params, _ = init_state(seen, [], jax.random.key(0), x_train, None)
    x = np.asarray(params["x"])
    assert x.dtype == np.float32 and x.shape == (1, *small_data.spec.image_shape)
    assert 0 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(x, jax.jit(to_unit_interval)(x_train[:1]))  # as compiled
