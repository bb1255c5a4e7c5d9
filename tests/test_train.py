"""Training on real data: loss goes down, one seed gives the same bits, checkpoints
round-trip, and a killed run resumed ends with exactly the uninterrupted parameters."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aevae_jax.checkpoint import RunCheckpoints
from aevae_jax.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from aevae_jax.errors import UserError
from aevae_jax.evaluate import make_epoch_test, map_examples
from aevae_jax.models import make_model
from aevae_jax.optim import make_optimizer
from aevae_jax.runs import load_run
from aevae_jax.train import fit, init_state, make_streams, plan_stages


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
def test_real_train_steps_lower_the_test_loss(fashion_mnist, tmp_path, name):
    cfg = small_cfg(tmp_path / name, name=name, epochs=3)
    model = make_model(cfg.model, fashion_mnist.spec)
    keys = make_streams(cfg.seed)
    x_test = jnp.asarray(fashion_mnist.x_test[:1000])
    init, _ = init_state(model, [], keys["init"], x_test, None)
    test = make_epoch_test(model, model.loss, cfg.data.binarize)
    before = test(init, x_test, None, keys["eval"], 0)
    result = fit(cfg, dataset=fashion_mnist, progress=False)
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


def test_same_seed_gives_identical_bits_and_another_seed_does_not(fashion_mnist, tmp_path):
    a = fit(small_cfg(tmp_path / "a"), dataset=fashion_mnist, progress=False)
    b = fit(small_cfg(tmp_path / "b"), dataset=fashion_mnist, progress=False)
    c = fit(small_cfg(tmp_path / "c", seed=1), dataset=fashion_mnist, progress=False)
    assert params_equal(a.params, b.params)
    assert not params_equal(a.params, c.params)
    assert a.history[-1]["test_neg_elbo"] == b.history[-1]["test_neg_elbo"]


def test_checkpoints_round_trip_latest_and_best(fashion_mnist, tmp_path):
    cfg = small_cfg(tmp_path / "run", epochs=3)
    result = fit(cfg, dataset=fashion_mnist, progress=False)
    latest = load_run(cfg.out, "latest", dataset=fashion_mnist)
    assert params_equal(latest.params, result.params) and latest.epoch == 3
    best = load_run(cfg.out, "best", dataset=fashion_mnist)
    scores = [r["test_neg_elbo"] for r in result.history]
    assert best.epoch == 1 + int(np.argmin(scores)) and best.which == "best"


def test_best_checkpoint_is_ranked_by_the_elbo_not_the_warm_up_objective(fashion_mnist, tmp_path):
    # Under a KL warm-up the objective depends on the step (beta rises), so it cannot rank
    # epochs; the ELBO (beta = 1, K = 1) does not depend on the step and ranks them.
    model = ModelConfig(
        name="beta_vae",
        hidden=(64,),
        latent_dim=8,
        options={"beta": 1.0, "kl_schedule": "linear", "kl_warmup_steps": 1000},
    )
    cfg = small_cfg(tmp_path / "warm", model=model, epochs=3)
    result = fit(cfg, dataset=fashion_mnist, progress=False)
    test = make_epoch_test(result.model, result.model.loss, "dynamic")
    x, key = jnp.asarray(fashion_mnist.x_test[:300]), jax.random.key(0)
    early, late = test(result.params, x, None, key, 0), test(result.params, x, None, key, 1000)
    assert early["test_objective"] < late["test_objective"] - 1.0  # same params, other step
    assert early["test_neg_elbo"] == late["test_neg_elbo"]
    rows = result.history
    assert all(r["selection"] == "test_neg_elbo" for r in rows)
    best = load_run(cfg.out, "best", dataset=fashion_mnist)
    assert best.epoch == 1 + int(np.argmin([r["test_neg_elbo"] for r in rows]))


def test_existing_run_is_not_overwritten_and_resume_checks_options(fashion_mnist, tmp_path):
    cfg = small_cfg(tmp_path / "run", epochs=1)
    fit(cfg, dataset=fashion_mnist, progress=False)
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        fit(cfg, dataset=fashion_mnist, progress=False)
    changed = small_cfg(tmp_path / "run", epochs=1, batch_size=32)
    with pytest.raises(UserError, match="options differ"):
        fit(changed, resume=True, dataset=fashion_mnist, progress=False)
    with pytest.raises(UserError, match="no run to resume"):
        fit(small_cfg(tmp_path / "empty"), resume=True, dataset=fashion_mnist, progress=False)
    with pytest.raises(UserError, match="options differ"):
        fit(
            small_cfg(
                tmp_path / "run",
                epochs=1,
                model=ModelConfig(name="vae", hidden=(64,), latent_dim=8, likelihood="gaussian"),
            ),
            resume=True,
            dataset=fashion_mnist,
            progress=False,
        )
    # Extending the budget continues from the checkpoint: epochs 1 (saved) + 2 (new).
    more = fit(
        small_cfg(tmp_path / "run", epochs=2), resume=True, dataset=fashion_mnist, progress=False
    )
    assert [r["epoch"] for r in more.history] == [1, 2]


def test_batch_larger_than_data_is_an_error(fashion_mnist, tmp_path):
    with pytest.raises(UserError, match="exceeds the 1024 training examples"):
        fit(small_cfg(tmp_path / "r", batch_size=2048), dataset=fashion_mnist, progress=False)


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


# ----------------------------------------------------------------- kill and resume


def _train_cmd(npz, out, epochs, model="vae", extra=()):
    return [
        sys.executable,
        "-m",
        "aevae_jax",
        "train",
        "--model",
        model,
        "--dataset",
        npz,
        "--hidden",
        "128",
        "--latent-dim",
        "8",
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def _final_state(out, epoch):
    """Parameters and every stage's optimiser state of checkpoint `epoch` in run `out`."""
    cfg = json.load(open(os.path.join(out, "config.json")))
    run = load_run(out, "latest", need_data=False)
    plans = plan_stages(run.model, run.cfg, cfg["steps_per_epoch"])
    x = jnp.zeros((1, *run.spec.image_shape))
    params, opt_states = init_state(run.model, plans, jax.random.key(0), x, jnp.zeros(1, jnp.int32))
    tree = {
        "params": params,
        "opt_state": opt_states,
        "step": jnp.zeros((), jnp.int32),
        "epoch": np.asarray(0, np.int64),
        "root_key": np.asarray(jax.random.key_data(jax.random.key(0))),
    }
    ckpt = RunCheckpoints(out)
    restored = ckpt.restore(tree, "latest", epoch)
    ckpt.close()
    return restored


def _kill_when(cmd, env, ready, what):
    """Start `cmd`, SIGKILL it as soon as ready() holds; fail if it ends first."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not ready():
        assert proc.poll() is None, f"ended before {what}: " + proc.stderr.read().decode()
        assert time.time() < deadline, f"no {what} within 180 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


KILL_CASES = {
    # name: (model, extra flags, main epochs, checkpoints to kill after, total epochs)
    # Two optimisers (autoencoder and discriminator) in one step.
    "aae": ("aae", ("--disc-hidden", "32"), 6, (2,), 6),
    # Two stages: killed once in the autoencoder stage and once in the prior stage.
    "vqvae": (
        "vqvae",
        ("--num-codes", "16", "--code-dim", "4", "--prior-epochs", "4", "--prior-hidden", "64"),
        4,
        (2, 5),
        8,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(KILL_CASES))
def test_killed_run_resumes_to_the_uninterrupted_parameters(small_npz, tmp_path, case):
    model, extra, epochs, kill_after, total = KILL_CASES[case]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed_out = tmp_path / "killed"
    cmd = _train_cmd(small_npz, killed_out, epochs, model, extra)
    for i, epoch in enumerate(kill_after):
        _kill_when(
            cmd + (["--resume"] if i else []),
            env,
            lambda e=epoch: (killed_out / "checkpoints" / str(e)).exists(),
            f"checkpoint {epoch}",
        )
        ckpt = RunCheckpoints(str(killed_out))
        killed_at = ckpt.latest_epoch()
        ckpt.close()
        assert killed_at is not None and killed_at < total, "the run finished before the kill"

    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    straight_out = tmp_path / "straight"
    straight = subprocess.run(
        _train_cmd(small_npz, straight_out, epochs, model, extra),
        env=env,
        capture_output=True,
        text=True,
    )
    assert straight.returncode == 0, straight.stderr

    a = _final_state(str(killed_out), total)
    b = _final_state(str(straight_out), total)
    assert params_equal(a["params"], b["params"])
    assert params_equal(a["opt_state"], b["opt_state"])
    assert int(a["step"]) == int(b["step"]) == total * (2048 // 16)
    rows = [json.loads(line) for line in open(killed_out / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == list(range(1, total + 1))
    stages = [r["stage"] for r in rows]
    assert stages == ["main"] * epochs + ["prior"] * (total - epochs)


def test_resume_refuses_fewer_epochs_and_schedule_changes(fashion_mnist, tmp_path):
    cfg = small_cfg(tmp_path / "run", epochs=2)
    fit(cfg, dataset=fashion_mnist, progress=False)
    with pytest.raises(UserError, match="already trained 2 epochs"):
        fit(
            small_cfg(tmp_path / "run", epochs=1),
            resume=True,
            dataset=fashion_mnist,
            progress=False,
        )
    cos = small_cfg(tmp_path / "cos", epochs=1, optim=OptimConfig(schedule="cosine"))
    fit(cos, dataset=fashion_mnist, progress=False)
    longer = small_cfg(tmp_path / "cos", epochs=2, optim=OptimConfig(schedule="cosine"))
    with pytest.raises(UserError, match="schedule spans"):
        fit(longer, resume=True, dataset=fashion_mnist, progress=False)
    # The same options, spelled with a trailing slash, are the same run.
    same = small_cfg(str(tmp_path / "run") + "/", epochs=2)
    assert len(fit(same, resume=True, dataset=fashion_mnist, progress=False).history) == 2


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
