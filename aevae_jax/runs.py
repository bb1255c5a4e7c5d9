"""A finished (or interrupted) run directory, read back: its config, history, model
and the parameters of its best or latest checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.checkpoint import RunCheckpoints
from aevae_jax.config import RunConfig
from aevae_jax.data import Dataset, load_dataset
from aevae_jax.errors import UserError, require
from aevae_jax.models import Model, make_model
from aevae_jax.train import CONFIG_FILE, METRICS_FILE, make_optimizer


@dataclasses.dataclass
class LoadedRun:
    cfg: RunConfig
    model: Model
    params: Any
    epoch: int
    which: str  # "best" or "latest"
    history: list[dict]
    dataset: Dataset  # with the run's training subset applied


def read_history(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_run(run_dir: str, which: str = "best", dataset: Dataset | None = None) -> LoadedRun:
    """Read `run_dir` (made by `aevae train` or `fit`); `which` is 'best' or 'latest'
    (best falls back to latest when there is none)."""
    config_path = os.path.join(run_dir, CONFIG_FILE)
    require(
        os.path.isfile(config_path),
        f"{run_dir!r} is not a run directory (no {CONFIG_FILE}); pass the --out of an "
        "`aevae train` run",
    )
    with open(config_path) as f:
        cfg = RunConfig.from_dict(json.load(f))
    if dataset is None:
        dataset = load_dataset(cfg.data.dataset, cfg.data.data_dir)
    dataset = dataset.take_train(cfg.data.train_size)
    model = make_model(cfg.model, dataset.image_shape)
    tx = make_optimizer(cfg.optim, 1)
    example = jnp.zeros((1, *dataset.image_shape), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), example)
    template = {
        "params": params,
        "opt_state": jax.eval_shape(tx.init, params),
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "epoch": np.asarray(0, np.int64),
        "root_key": np.zeros(2, np.uint32),
    }
    checkpoints = RunCheckpoints(run_dir)
    try:
        if which == "best" and checkpoints.best.best_step() is None:
            which = "latest"
        if checkpoints.latest_epoch() is None and which == "latest":
            raise UserError(f"{run_dir!r} has no checkpoint yet; train it first")
        restored = checkpoints.restore(template, which)
    finally:
        checkpoints.close()
    return LoadedRun(
        cfg,
        model,
        restored["params"],
        int(restored["epoch"]),
        which,
        read_history(run_dir),
        dataset,
    )
