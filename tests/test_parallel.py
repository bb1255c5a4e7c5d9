"""Data parallelism on four (virtual) CPU devices: the batch is really split over the
mesh, parameters are replicated, and the trajectory is the one-device trajectory. And
multi-host: two local processes joined by `jax.distributed` train as one.

These tests need four devices, which JAX only makes on a CPU when XLA_FLAGS asks
before JAX starts: `test_on_four_virtual_devices` (run by the normal suite) starts a
pytest of this file in a subprocess with `--xla_force_host_platform_device_count=4`;
in the suite's own process the four-device tests skip.
"""

import json
import os
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from aevae_jax.config import DataConfig, ModelConfig
from aevae_jax.errors import UserError
from aevae_jax.train.fit import fit, fit_seeds
from aevae_jax.train.parallel import DATA_AXIS, make_placement
from aevae_jax.train.runs import load_run
from aevae_jax.train.step import TrainState, make_streams, make_train_epoch
from tests.test_seeds import assert_trees_close
from tests.test_train import small_cfg

DEVICES_FLAG = "--xla_force_host_platform_device_count=4"
NEEDS_FOUR = pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 devices (module doc)")


def test_on_four_virtual_devices(small_npz):
    if jax.device_count() >= 4:
        pytest.skip("already on four devices")
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {DEVICES_FLAG}",
           "AEVAE_TEST_SMALL_NPZ": small_npz}  # fmt: skip
    # A session of its own: its own caches, which it removes when done (the suite's
    # caches, which its conftest would otherwise remove, stay).
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_TESTRUNUID", "JAX_COMPILATION_CACHE_DIR",
                 "AEVAE_CACHE"):  # fmt: skip
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0",
         __file__, "-m", "four_devices"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.match(r"4 passed\b", summary) and "skipped" not in summary, done.stdout[-2000:]


@pytest.mark.four_devices
@NEEDS_FOUR
def test_the_batch_is_split_over_the_mesh():
    placement = make_placement(4, batch_size=8)
    seen = {}

    def loss(params, batch, key, step):
        jax.debug.inspect_array_sharding(batch.x, callback=lambda s: seen.setdefault("x", s))
        err = batch.x.reshape(len(batch.x), -1) * params["w"]
        return jnp.mean(jnp.sum(err**2, axis=1)), {}

    tx = optax.sgd(0.1)
    params = {"w": jnp.ones((16,))}
    state = placement.replicate(TrainState(params, tx.init(params), jnp.zeros((), jnp.int32)))
    x = placement.replicate(np.arange(32 * 16, dtype=np.uint8).reshape(32, 4, 4, 1))
    epoch = make_train_epoch(loss, tx, "none", 8, 32, batch_sharding=placement.batch_sharding())
    state, _ = epoch(state, placement.replicate(make_streams(0)), x, None, 0)
    x_sharding = seen["x"]
    assert x_sharding.shard_shape((8, 4, 4, 1)) == (2, 4, 4, 1)
    assert len(x_sharding.device_set) == 4
    assert x_sharding.is_equivalent_to(NamedSharding(placement.mesh, PartitionSpec(DATA_AXIS)), 4)
    w = state.params["w"]
    assert w.sharding.is_fully_replicated and len(w.sharding.device_set) == 4


@pytest.mark.four_devices
@NEEDS_FOUR
def test_four_devices_follow_the_one_device_trajectory(small_data, tmp_path):
    one = fit(small_cfg(tmp_path / "one"), dataset=small_data, progress=False, devices=1)
    four = fit(small_cfg(tmp_path / "four"), dataset=small_data, progress=False, devices=4)
    assert_trees_close(four.params, one.params)
    for a, b in zip(one.history, four.history, strict=True):
        np.testing.assert_allclose(a["train_objective"], b["train_objective"], rtol=1e-5)
        np.testing.assert_allclose(a["test_objective"], b["test_objective"], rtol=1e-5)
    leaf = jax.tree.leaves(four.params)[0]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
    assert len(jax.tree.leaves(one.params)[0].sharding.device_set) == 1


@pytest.mark.four_devices
@NEEDS_FOUR
def test_seeds_and_devices_compose(small_data, tmp_path):
    cfg = small_cfg(tmp_path / "a")
    one = fit_seeds(cfg, (0, 1), dataset=small_data, progress=False, devices=1)
    two = fit_seeds(small_cfg(tmp_path / "b"), (0, 1), dataset=small_data, progress=False,
                    devices=2)  # fmt: skip
    for a, b in zip(one, two, strict=True):
        assert_trees_close(a.params, b.params)


@pytest.mark.four_devices
@NEEDS_FOUR
def test_device_counts_are_checked():
    with pytest.raises(UserError, match="divisible by 4"):
        make_placement(4, batch_size=6)
    with pytest.raises(UserError, match="between 1 and the 4"):
        make_placement(5, batch_size=10)
    assert make_placement(None, batch_size=8).devices == 4
    assert make_placement(1, batch_size=6).mesh is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_as_one(small_npz, small_data, tmp_path):
    """`aevae train --distributed` in two local processes (one CPU device each, Gloo
    between them): one trajectory, the one-process one; files written once."""
    if jax.device_count() >= 4:
        pytest.skip("run by the suite's own process")
    out = tmp_path / "two"
    options = ["--dataset", small_npz, "--train-size", "512", "--epochs", "2", "--hidden", "32",
               "--batch-size", "64",
               "--latent-dim", "4", "--out", str(out), "--quiet"]  # fmt: skip
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aevae_jax",
                "train",
                *options,
                "--distributed",
                "--coordinator",
                f"localhost:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stderr[-3000:]
    # Both processes report the same run, with the same numbers.
    reports = [stdout.strip().splitlines()[-1].split(" nats/image")[0] for stdout, _ in outputs]
    assert reports[0] == reports[1] and "test_neg_elbo" in reports[0]
    one = fit(small_cfg(tmp_path / "one", data=DataConfig(train_size=512),
                        model=ModelConfig(hidden=(32,), latent_dim=4)),
              dataset=small_data, progress=False)  # fmt: skip
    two = load_run(str(out), "latest", dataset=small_data)
    assert_trees_close(two.params, one.params)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r, r_one in zip(rows, one.history, strict=True):
        np.testing.assert_allclose(r["test_objective"], r_one["test_objective"], rtol=1e-5)
    assert sorted(os.listdir(out / "checkpoints")) == ["1", "2"]
