"""A finished (or interrupted) run directory, read back: its config, history, model
and the parameters of its best or latest checkpoint.

The model is rebuilt from config.json alone (its data description included), so
reading a run needs the data set only where the caller needs data: `aevae sample`
from the prior loads none.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp

from aevae_jax.config import RunConfig
from aevae_jax.data.sources import load_dataset
from aevae_jax.data.spec import Dataset, DataSpec
from aevae_jax.errors import require
from aevae_jax.models import Model, import_models, make_model
from aevae_jax.train.checkpoint import RunCheckpoints, checkpoint_tree
from aevae_jax.train.rundir import METRICS_FILE, has_run, read_config, read_log, seed_run_dirs
from aevae_jax.train.stages import init_state, plan_stages


@dataclasses.dataclass
class LoadedRun:
    cfg: RunConfig
    spec: DataSpec
    model: Model
    params: Any
    epoch: int
    which: str  # "best" or "latest"
    history: list[dict]
    dataset: Dataset | None  # with the run's training subset applied; None if not loaded


def expand_runs(paths) -> list[str]:
    """Run directories from `paths`: a directory of `aevae train --seeds` (holding
    seed_<s>/ runs and no config.json of its own) stands for its seeds' runs, by seed."""
    out = []
    for path in paths:
        seeds = [] if has_run(path) else seed_run_dirs(path)
        out += seeds or [path]
    unique = list(dict.fromkeys(os.path.realpath(p) for p in out))
    require(
        len(unique) == len(out),
        "--run names a run twice (a --seeds directory stands for all its seed_<s> runs)",
    )
    return out


def read_history(run_dir: str) -> list[dict]:
    return read_log(os.path.join(run_dir, METRICS_FILE))


def checkpoint_template(model: Model, cfg: RunConfig, spec: DataSpec, steps_per_epoch: int):
    """The structure of the run's checkpoints (ShapeDtypeStructs, nothing computed), to
    restore one into."""
    plans = plan_stages(model, cfg, steps_per_epoch)
    x = jnp.zeros((1, *spec.image_shape), jnp.float32)
    y = None if spec.num_classes is None else jnp.zeros((1,), jnp.int32)
    params, opt_states = jax.eval_shape(
        lambda k: init_state(model, plans, k, x, y), jax.random.key(0)
    )
    step = jax.ShapeDtypeStruct((), jnp.int32)
    return checkpoint_tree(params, opt_states, step, 0, cfg.seed)


def load_run(
    run_dir: str, which: str = "best", dataset: Dataset | None = None, need_data: bool = True
) -> LoadedRun:
    """Read `run_dir` (made by `aevae train` or `fit`); `which` is 'best' or 'latest'
    (best falls back to latest when there is none). With need_data=False and no
    `dataset`, no data set is loaded."""
    cfg, spec, steps_per_epoch = read_config(run_dir)
    for module in cfg.imports:
        import_models(module)
    if dataset is None and need_data:
        dataset = load_dataset(cfg.data.dataset, cfg.data.data_dir)
    if dataset is not None:
        dataset = dataset.take_train(cfg.data.train_size)
    model = make_model(cfg.model, spec)
    template = checkpoint_template(model, cfg, spec, steps_per_epoch)
    checkpoints = RunCheckpoints(run_dir)
    try:
        require(
            checkpoints.latest_epoch() is not None or checkpoints.best.best_step() is not None,
            f"{run_dir!r} has no checkpoint yet; train it first",
        )
        restored, which, _ = checkpoints.restore(template, which)
    finally:
        checkpoints.close()
    return LoadedRun(
        cfg,
        spec,
        model,
        restored["params"],
        int(restored["epoch"]),
        which,
        read_history(run_dir),
        dataset,
    )
