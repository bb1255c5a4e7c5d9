"""Kill and resume: a training process killed with SIGKILL and resumed ends with exactly
the parameters and optimiser states of an uninterrupted run, for a model with two
optimisers (the AAE) and for both stages of a two-stage model (the VQ-VAE). The default
model's kill loop is tests/kill_resume.py."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aevae_jax.checkpoint import RunCheckpoints
from aevae_jax.cli import main
from aevae_jax.runs import load_run
from aevae_jax.train import init_state, plan_stages


def params_equal(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b)))


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
    restored, _, _ = ckpt.restore(tree, "latest", epoch)
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
    # (the VAE: tests/test_interrupts.py and tests/kill_resume.py)
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
    # The uninterrupted reference runs in this process: the same command, the same code.
    straight_out = tmp_path / "straight"
    assert main(_train_cmd(small_npz, straight_out, epochs, model, extra)[3:]) == 0

    a = _final_state(str(killed_out), total)
    b = _final_state(str(straight_out), total)
    assert params_equal(a["params"], b["params"])
    assert params_equal(a["opt_state"], b["opt_state"])
    assert int(a["step"]) == int(b["step"]) == total * (2048 // 16)
    rows = [json.loads(line) for line in open(killed_out / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == list(range(1, total + 1))
    stages = [r["stage"] for r in rows]
    assert stages == ["main"] * epochs + ["prior"] * (total - epochs)
