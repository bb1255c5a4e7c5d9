"""Training: one compiled `lax.scan` per epoch, stages, checkpoints and logs.

Randomness: the run's root key `jax.random.key(seed)` is split once into named
streams (`make_streams`); the epoch's data order is `permutation(fold_in(data,
epoch))` and every per-step key is `fold_in(stream, step)`. So a resumed run draws
exactly the numbers of an uninterrupted one, and one seed gives the same bits.

Stages: a model trains its main objective for `cfg.epochs` epochs, then each of its
further `stages` (a VQ-VAE's prior) for that stage's epochs. Epochs are counted over
the whole run; each stage has its own optimiser state, all of which every checkpoint
holds, so `--resume` continues in whichever stage the run was killed.

`fit(cfg)` is the whole run: load data, build the model, train with a progress bar,
evaluate on the test split each epoch, write `config.json`, `metrics.jsonl` (one line
per epoch) and orbax checkpoints (periodic and best) under `cfg.out`. The best
checkpoint is ranked by a step-independent metric (`evaluate.selection_metric`),
among the epochs of the last stage.

Faults: a step whose loss or gradient is not finite is skipped inside the compiled
step (`make_guarded_update`), and a streak of them stops the run (`NonFiniteError`);
Ctrl-C stops after the epoch with a checkpoint (`TrainingInterrupted`); a resume
starts from the newest intact checkpoint and trains later epochs again. README.md's
"What survives what" lists each guarantee with its test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from aevae_jax.config import RunConfig
from aevae_jax.data.preprocess import preprocess
from aevae_jax.data.sources import describe_dataset, load_dataset
from aevae_jax.data.spec import Dataset, DataShape, DataSpec, describe_arrays, require_train_size
from aevae_jax.data.validate import validate_dataset
from aevae_jax.errors import UserError, require
from aevae_jax.evaluate.evaluation import eval_inputs, make_epoch_test, selection_metric
from aevae_jax.models import Batch, Model, import_models, make_model, resolve
from aevae_jax.nn.optim import make_optimizer
from aevae_jax.progress import progress_bar
from aevae_jax.train.checkpoint import RunCheckpoints
from aevae_jax.train.parallel import any_process, barrier, is_primary, make_placement
from aevae_jax.train.rundir import (
    METRICS_FILE,
    check_resumable,
    has_run,
    new_dirs,
    prepare_out_dir,
    read_config,
    read_log,
    remove_unused,
    seed_dir,
    seed_run_dirs,
    write_config,
    write_log,
)
from aevae_jax.train.summaries import RECONSTRUCTED, Summaries, make_image_fn

STREAMS = ("init", "data", "binarize", "model", "eval")
MAIN_STAGE = "main"


# What went non-finite in a step, in the order it is checked (0: nothing).
NONFINITE_WHAT = ("", "loss", "gradient")


class Guard(NamedTuple):
    """The current streak of consecutive non-finite steps (int32 scalars): its length, its
    first step, and what went non-finite there (an index into NONFINITE_WHAT)."""

    streak: jax.Array
    first_step: jax.Array
    what: jax.Array


def clear_guard() -> Guard:
    """No streak (three distinct buffers: the epoch donates its state)."""
    return Guard(*(jnp.zeros((), jnp.int32) for _ in Guard._fields))


class TrainState(NamedTuple):
    params: Any
    opt_state: Any  # the current stage's optimiser state
    step: jax.Array  # int32 scalar: steps taken so far (skipped ones too), over all stages
    guard: Guard | None = None  # None: no non-finite streak (the epoch starts one)


class StagePlan(NamedTuple):
    """One stage of a run: its objective, optimiser and epochs [first, first + epochs)."""

    name: str
    loss: Callable
    tx: optax.GradientTransformation
    first_epoch: int
    epochs: int


def make_streams(seed: int) -> dict[str, jax.Array]:
    """Named key streams from one root key; fold_in by position keeps each stream fixed
    when new streams are appended."""
    root = jax.random.key(seed)
    return {name: jax.random.fold_in(root, i) for i, name in enumerate(STREAMS)}


def model_optimizer(model: Model, cfg, total_steps: int) -> optax.GradientTransformation:
    """The main stage's optimiser: the model's own (`model.optimizer`) or the run's."""
    build = model.optimizer or make_optimizer
    return build(cfg, total_steps)


def plan_stages(model: Model, cfg: RunConfig, steps_per_epoch: int) -> list[StagePlan]:
    """The main stage for cfg.epochs, then the model's further stages in order."""
    plans = [
        StagePlan(
            MAIN_STAGE,
            model.loss,
            model_optimizer(model, cfg.optim, steps_per_epoch * cfg.epochs),
            0,
            cfg.epochs,
        )
    ]
    for stage in model.stages:
        first = plans[-1].first_epoch + plans[-1].epochs
        tx = stage.optimizer(cfg.optim, steps_per_epoch * stage.epochs)
        plans.append(StagePlan(stage.name, stage.loss, tx, first, stage.epochs))
    return plans


def stage_at(plans: list[StagePlan], epoch: int) -> StagePlan:
    """The stage that trains epoch `epoch` (0-based)."""
    return next(p for p in plans if epoch < p.first_epoch + p.epochs)


def total_epochs(plans: list[StagePlan]) -> int:
    return plans[-1].first_epoch + plans[-1].epochs


def make_update(loss: Callable, tx: optax.GradientTransformation) -> Callable:
    """update(params, opt_state, batch, key, step) -> (params, opt_state, loss, metrics):
    one gradient step of `loss`. Parameter groups with their own rules (several
    optimisers, frozen or EMA parameters) live in `tx` (see optim.param_groups)."""

    def update(params, opt_state, batch, key, step):
        (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params, batch, key, step)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value, metrics

    return update


def make_guarded_update(loss: Callable, tx: optax.GradientTransformation) -> Callable:
    """update(params, opt_state, batch, key, step, allowed) -> (params, opt_state, loss,
    metrics, what): make_update's step where the loss and the gradient are finite and
    `allowed`; otherwise params and opt_state come back as they were. `what` is what was
    not finite (an index into NONFINITE_WHAT): the loss, else the gradient's global norm
    (one reduction, non-finite when any element is, or when the squares overflow). The
    update runs under `lax.cond`, so on one device a skipped step costs no update, and a
    taken one only the two checks: +4% on the MLP VAE's step, +1% on the conv one
    (benchmarks/guard_cost.py).
    An update that overflows the parameters shows as a non-finite loss at the next step,
    which is then skipped, as are all after it, until the run stops."""

    def update(params, opt_state, batch, key, step, allowed):
        (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params, batch, key, step)
        bad_loss, bad_grad = ~jnp.isfinite(value), ~jnp.isfinite(optax.global_norm(grads))
        what = jnp.select([bad_loss, bad_grad], [1, 2], 0).astype(jnp.int32)

        def take(_):
            updates, new_opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), new_opt_state

        params, opt_state = jax.lax.cond(
            allowed & (what == 0), take, lambda _: (params, opt_state), None
        )
        return params, opt_state, value, metrics, what

    return update


def make_train_step(
    loss: Callable,
    tx: optax.GradientTransformation,
    binarize: str,
    nonfinite_patience: int | None = None,
    skip_nonfinite: bool = True,
) -> Callable:
    """step(state, keys, x_train, y_train, idx) -> (state, metrics): one update on the
    examples `idx` [B] of the uint8 split, gathered, scaled and binarized on the device
    with the step's keys (`fold_in(stream, state.step)`). Pure and un-jitted: the epoch
    scans it, and `jax.jit(step, donate_argnums=0)` runs it one call per step.

    A step whose loss or gradient is not finite is skipped (`make_guarded_update`): the
    parameters and optimiser state stay as they were, `metrics["applied"]` is False and
    `state.guard` counts the streak. Once a streak reaches `nonfinite_patience` steps
    (None: never), the state is frozen: no later step of the epoch changes it, and the
    caller stops the run. `skip_nonfinite=False` applies every update unchecked (what
    benchmarks/guard_cost.py compares with)."""
    guarded, plain = make_guarded_update(loss, tx), make_update(loss, tx)

    def step_fn(state: TrainState, keys, x_train, y_train, idx):
        guard = clear_guard() if state.guard is None else state.guard
        k_bin = jax.random.fold_in(keys["binarize"], state.step)
        k_model = jax.random.fold_in(keys["model"], state.step)
        x = preprocess(jnp.take(x_train, idx, axis=0), binarize, k_bin, idx, split=0)
        y = None if y_train is None else jnp.take(y_train, idx, axis=0)
        batch = Batch(x, y)
        if not skip_nonfinite:
            params, opt_state, value, metrics = plain(
                state.params, state.opt_state, batch, k_model, state.step
            )
            done = TrainState(params, opt_state, state.step + 1, guard)
            return done, {"objective": value, **metrics, "applied": jnp.array(True)}
        frozen = guard.streak >= (nonfinite_patience or jnp.iinfo(jnp.int32).max)
        params, opt_state, value, metrics, what = guarded(
            state.params, state.opt_state, batch, k_model, state.step, ~frozen
        )
        starts = (guard.streak == 0) & ~frozen
        guard = Guard(
            jnp.where(frozen, guard.streak, jnp.where(what == 0, 0, guard.streak + 1)),
            jnp.where(starts, state.step, guard.first_step),
            jnp.where(starts, what, guard.what),
        )
        state = TrainState(params, opt_state, state.step + 1, guard)
        return state, {"objective": value, **metrics, "applied": (what == 0) & ~frozen}

    return step_fn


def make_epoch_fn(
    loss: Callable,
    tx: optax.GradientTransformation,
    binarize: str,
    batch_size: int,
    n_train: int,
    batch_sharding=None,
    nonfinite_patience: int | None = None,
    skip_nonfinite: bool = True,
) -> Callable:
    """The pure, un-jitted epoch: (state, keys, x_train, y_train, epoch) -> (state,
    metrics). One `lax.scan` of `make_train_step` over floor(n_train / batch_size) steps
    of a fresh permutation (the remainder of each permutation is left out of that
    epoch). Images stay uint8 on the device; batches are gathered, scaled and binarized
    inside the scan. `jit`, `vmap` over seeds and sharding wrap it from outside
    (`make_train_epoch`); `batch_sharding` (a sharding of the [steps, batch] index
    array) splits every batch over a mesh's devices.

    The metrics are means over the steps that were applied, and `skipped_steps` counts
    the others (non-finite, see make_train_step); an epoch with none applied has NaN means.
    """
    steps = n_train // batch_size
    step_fn = make_train_step(loss, tx, binarize, nonfinite_patience, skip_nonfinite)

    def epoch_fn(state: TrainState, keys, x_train, y_train, epoch):
        if state.guard is None:
            state = state._replace(guard=clear_guard())
        order = jax.random.permutation(jax.random.fold_in(keys["data"], epoch), n_train)
        order = order[: steps * batch_size].reshape(steps, batch_size)
        if batch_sharding is not None:
            order = jax.lax.with_sharding_constraint(order, batch_sharding)
        scan_step = lambda state, idx: step_fn(state, keys, x_train, y_train, idx)
        state, per_step = jax.lax.scan(scan_step, state, order)
        applied = per_step.pop("applied")
        n = jnp.sum(applied)
        mean = lambda v: jnp.sum(jnp.where(applied, v, 0.0)) / n
        return state, {**jax.tree.map(mean, per_step), "skipped_steps": steps - n}

    return epoch_fn


def make_train_epoch(
    loss: Callable,
    tx: optax.GradientTransformation,
    binarize: str,
    batch_size: int,
    n_train: int,
    seeds: bool = False,
    batch_sharding=None,
    nonfinite_patience: int | None = None,
    skip_nonfinite: bool = True,
) -> Callable:
    """`make_epoch_fn` jitted with the state's buffers donated. With `seeds`, the state,
    keys and returned metrics carry a leading seed axis (`jax.vmap` over stacked runs
    that share the data); `batch_sharding` splits each batch over a device mesh."""
    epoch_fn = make_epoch_fn(
        loss, tx, binarize, batch_size, n_train, batch_sharding, nonfinite_patience,
        skip_nonfinite,
    )  # fmt: skip
    if seeds:
        epoch_fn = jax.vmap(epoch_fn, in_axes=(0, 0, None, None, None))
    if batch_sharding is None:
        return jax.jit(epoch_fn, donate_argnums=(0,))
    # The state and metrics come back replicated, as they went in: every process can
    # read them, and the next epoch takes them as they are.
    replicated = NamedSharding(batch_sharding.mesh, PartitionSpec())
    return jax.jit(epoch_fn, donate_argnums=(0,), out_shardings=replicated)


@dataclasses.dataclass
class FitResult:
    model: Model
    params: Any
    history: list[dict]
    run_dir: str
    dataset: Dataset
    seed: int = 0


class NonFiniteError(UserError):
    """Training stopped: a streak of non-finite steps reached cfg.nonfinite_patience."""


class NonFiniteWarning(UserWarning):
    """Some steps of an epoch were non-finite and skipped."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a checkpoint; the message says how to resume."""


def prepare_config(cfg: RunConfig) -> RunConfig:
    """`cfg` with its user modules imported (recorded by how to find them again), its data
    files as absolute paths, and its model resolved: name checked, likelihood and options
    completed. Needs no data."""
    imports = tuple(import_models(m) for m in cfg.imports)
    data = cfg.data
    if data.dataset.endswith(".npz"):
        data = dataclasses.replace(data, dataset=os.path.abspath(data.dataset))
    if data.data_dir is not None:
        data = dataclasses.replace(data, data_dir=os.path.abspath(data.data_dir))
    return dataclasses.replace(cfg, imports=imports, data=data, model=resolve(cfg.model))


def check_against_data(cfg: RunConfig, shape: DataShape) -> DataSpec:
    """Everything in `cfg` that depends on the data, checked against its shape alone (no
    arrays): the training subset, the batch size, the model's needs (labels, image size
    of the conv backbone). Returns the data's description."""
    make_model(cfg.model, shape.spec)  # labels, image-size rules, options
    n_train = shape.n_train
    if cfg.data.train_size is not None:
        require_train_size(cfg.data.train_size, n_train, cfg.data.dataset)
        n_train = cfg.data.train_size
    require(
        cfg.batch_size <= n_train,
        f"batch_size {cfg.batch_size} exceeds the {n_train} training examples; "
        "lower --batch-size or raise --train-size",
    )
    return shape.spec


def _check_epoch_change(saved_epochs: int, cfg: RunConfig, done: int, stages: int) -> None:
    """--epochs may change on resume only under a constant learning rate, never below
    the epochs done, and for a model with later stages only while its main stage runs."""
    if cfg.epochs == saved_epochs:
        return
    require(
        stages == 1 or done < min(saved_epochs, cfg.epochs),
        f"--resume: this model's later training stages have begun (after the main stage's "
        f"{saved_epochs} epochs); resume with --epochs {saved_epochs}",
    )
    require(
        cfg.epochs >= done,
        f"--resume: the run in {cfg.out!r} has already trained {done} epochs; "
        f"pass --epochs {done} or more",
    )
    require(
        cfg.optim.schedule == "constant",
        f"--resume: the {cfg.optim.schedule} schedule spans the run's {saved_epochs} epochs; "
        f"changing --epochs would change it mid-run. Resume with --epochs {saved_epochs}",
    )


def init_state(model: Model, plans: list[StagePlan], key, x, y):
    """Initial parameters and one optimiser state per stage: {stage: opt_state}. One
    compiled program (run eagerly, the initialisers compile dozens of small ones)."""

    def init(key, x, y):
        params = model.init(key, Batch(x.astype(jnp.float32), y))
        return params, {p.name: p.tx.init(params) for p in plans}

    return jax.jit(init)(key, x[:1], None if y is None else y[:1])


def main_stage_start(model: Model, cfg: RunConfig, steps_per_epoch: int, x, y):
    """(plan, keys, state): the main stage's plan, the run's key streams and its initial
    train state, for running the run's own epochs or steps outside `fit` (benchmarks)."""
    plan = plan_stages(model, cfg, steps_per_epoch)[0]
    keys = make_streams(cfg.seed)
    params, opt_states = init_state(model, [plan], keys["init"], x, y)
    step = jnp.zeros((), jnp.int32)
    return plan, keys, TrainState(params, opt_states[plan.name], step, clear_guard())


def seed_configs(cfg: RunConfig, seeds) -> list[RunConfig]:
    """One config per seed, each with its own run directory `cfg.out`/seed_<s>."""
    seeds = tuple(seeds)
    require(len(seeds) > 0, "--seeds needs at least one seed, e.g. --seeds 0,1,2")
    require(len(set(seeds)) == len(seeds), f"--seeds lists a seed twice: {seeds}")
    return [dataclasses.replace(cfg, seed=s, out=seed_dir(cfg.out, s)) for s in seeds]


def resume_hint(out: str) -> str:
    """How to go on with the run (or the seeds' runs) in `out`, for an interrupted one."""
    dirs = seed_run_dirs(out) or ([out] if has_run(out) else [])
    if not dirs:
        return f"nothing was saved in {out}; run the same command again"
    epochs = []
    for d in dirs:
        checkpoints = RunCheckpoints(d)
        epochs.append(checkpoints.latest_epoch() or 0)
        checkpoints.close()
    return (
        f"resume from epoch {min(epochs)} with `aevae train --resume --out {out}`"
        if min(epochs)
        else f"no checkpoint yet; `aevae train --resume --out {out}` starts it again"
    )


def fit(
    cfg: RunConfig,
    resume: bool = False,
    dataset: Dataset | None = None,
    progress: bool = True,
    devices: int | None = None,
) -> FitResult:
    """Train `cfg` to its last epoch (from its latest checkpoint when `resume`), on
    `devices` devices (None: all local ones) with the batch split over them."""
    return fit_runs([cfg], resume, dataset, progress, devices)[0]


def fit_seeds(
    cfg: RunConfig,
    seeds,
    resume: bool = False,
    dataset: Dataset | None = None,
    progress: bool = True,
    devices: int | None = None,
) -> list[FitResult]:
    """Train `cfg` for every seed in `seeds` at once, each in `cfg.out`/seed_<s>; the
    same data order, keys and numbers as `fit` with that seed, to float tolerance."""
    return fit_runs(seed_configs(cfg, seeds), resume, dataset, progress, devices, cfg.out)


class _Run(NamedTuple):
    """One seed's run while it trains: config, key streams, checkpoints and log."""

    cfg: RunConfig
    keys: dict
    checkpoints: RunCheckpoints
    history: list
    metrics_path: str


def _open_run(cfg: RunConfig, resume: bool) -> tuple[RunConfig, RunConfig | None]:
    """`cfg` prepared for its run directory, and the config saved there when resuming."""
    saved = read_config(cfg.out)[0] if resume and has_run(cfg.out) else None
    if saved is not None and not cfg.imports:
        cfg = dataclasses.replace(cfg, imports=saved.imports)  # the run's own modules
    cfg = prepare_config(cfg)
    prepare_out_dir(cfg.out, resume)
    if saved is not None:
        check_resumable(cfg, saved)
    return cfg, saved


def stack_trees(trees: list) -> Any:
    """[tree per seed] -> one tree whose leaves have a leading seed axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def tree_at(tree: Any, i: int) -> Any:
    """The i-th seed's tree from a stacked one."""
    return jax.tree.map(lambda a: a[i], tree)


def fit_runs(
    cfgs: list[RunConfig],
    resume: bool = False,
    dataset: Dataset | None = None,
    progress: bool = True,
    devices: int | None = None,
    named_out: str | None = None,
) -> list[FitResult]:
    """Train runs that differ only in seed and run directory as one compiled program:
    one run as `fit` always did, several with the epoch vmapped over stacked states.
    With several seeds, a log row's `step_ms` is the step of the program that trains
    them all (`seeds_together` says how many), and its `epoch_seconds` that epoch's
    time divided by the number of seeds.

    Everything that can be checked without the data (options, model against the data's
    shape, batch size, the run directory) is checked before the data loads. A run that
    fails before it wrote its config.json leaves no directory behind. Ctrl-C stops
    after the current epoch, with a checkpoint (`TrainingInterrupted`); a streak of
    non-finite steps stops with `NonFiniteError`. `named_out`: the directory the user
    named, for messages (default: the first run's)."""
    base = lambda c: dataclasses.replace(c, seed=0, out="")
    require(
        all(base(c) == base(cfgs[0]) for c in cfgs),
        "runs trained together must differ only in --seed and --out",
    )
    created = [d for c in cfgs for d in new_dirs(c.out)]
    try:
        return _fit_runs(cfgs, resume, dataset, progress, devices, named_out or cfgs[0].out)
    except BaseException:
        if is_primary():
            remove_unused([c.out for c in cfgs], created)
        raise


def _fit_runs(cfgs, resume, dataset, progress, devices, named_out) -> list[FitResult]:
    opened = [_open_run(c, resume) for c in cfgs]
    barrier("aevae: run directories checked")  # before process 0 writes into them
    cfg = opened[0][0]
    placement = make_placement(devices, cfg.batch_size)
    if dataset is None:
        check_against_data(cfg, describe_dataset(cfg.data.dataset, cfg.data.data_dir))
        dataset = load_dataset(cfg.data.dataset, cfg.data.data_dir)
    else:
        dataset = validate_dataset(dataset)
        check_against_data(cfg, describe_arrays(dataset))
    dataset = dataset.take_train(cfg.data.train_size)
    n_train = len(dataset.x_train)
    model = make_model(cfg.model, dataset.spec)
    steps_per_epoch = n_train // cfg.batch_size
    plans = plan_stages(model, cfg, steps_per_epoch)
    x_train, y_train, x_test, y_test = placement.replicate(
        (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)
    )

    checkpoints = [RunCheckpoints(c.out) for c, _ in opened]
    closing: list = checkpoints[:]  # closed however the loop ends
    try:
        runs, state, start_epoch = _start_runs(
            opened, checkpoints, model, plans, x_train, y_train, dataset.spec, steps_per_epoch
        )
        params, opt_states, step, keys = placement.replicate(state)
        last = total_epochs(plans)
        seeds_text = "" if len(runs) == 1 else f" x {len(runs)} seeds"
        bar = progress_bar(
            range(start_epoch, last),
            total=last,
            initial=start_epoch,
            desc=f"{cfg.model.name}{seeds_text} on {cfg.data.dataset}",
            unit="epoch",
            enabled=progress,
            leave=True,
        )
        loop = _EpochLoop(cfg, model, plans, runs, placement, n_train, steps_per_epoch,
                          start_epoch, dataset.num_classes)  # fmt: skip
        closing.append(loop)
        with _stop_on_sigint() as stop_requested:
            for epoch in bar:
                params, opt_states, step = loop.epoch(
                    epoch, params, opt_states, step, keys, (x_train, y_train, x_test, y_test),
                    start_epoch,
                )  # fmt: skip
                last_row = runs[0].history[-1]
                select = last_row["selection"]
                bar.set_postfix(
                    stage=last_row["stage"],
                    objective=_fmt(last_row["train_objective"]),
                    **{select.removeprefix("test_"): _fmt(last_row[select])},
                )
                if any_process(stop_requested()) and epoch + 1 < last:
                    loop.checkpoint(epoch, params, opt_states, step)
                    raise TrainingInterrupted(
                        f"stopped after epoch {epoch + 1} (Ctrl-C); " + resume_hint(named_out)
                    )
    finally:
        for c in closing:
            c.close()
    results = []
    for i, run in enumerate(runs):
        run_params = tree_at(params, i) if len(runs) > 1 else params
        results.append(
            FitResult(model, run_params, run.history, run.cfg.out, dataset, run.cfg.seed)
        )
    return results


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.2f}"


def _start_runs(opened, checkpoints, model, plans, x, y, spec, steps_per_epoch):
    """(runs, (params, opt_states, step, keys), start epoch): every run's key streams,
    state and log, at the newest epoch whose checkpoint every run still has intact
    (stacked over seeds when there are several). Once every check has passed, later
    checkpoints are deleted (those epochs are trained again) and config.json and
    metrics.jsonl are written."""
    fresh = []
    for c, _ in opened:
        keys = make_streams(c.seed)
        params, opt_states = init_state(model, plans, keys["init"], x, y)
        fresh.append((keys, (params, opt_states, jnp.zeros((), jnp.int32))))
    start_epoch, states = 0, [state for _, state in fresh]
    if any(saved is not None for _, saved in opened):
        start_epoch, states = _restore_common_epoch(opened, checkpoints, states)
    for c, saved in opened:
        if saved is not None:
            _check_epoch_change(saved.epochs, c, start_epoch, len(plans))
    runs = []
    for (c, saved), ckpt, (keys, _) in zip(opened, checkpoints, fresh, strict=True):
        ckpt.rewind(start_epoch)
        metrics_path = os.path.join(c.out, METRICS_FILE)
        history = read_log(metrics_path, start_epoch)
        if is_primary():
            if saved is None or dataclasses.replace(saved, out=c.out) != c:
                write_config(c.out, c, spec, steps_per_epoch)
            write_log(metrics_path, history)
        runs.append(_Run(c, keys, ckpt, history, metrics_path))
    if len(runs) == 1:
        return runs, (*states[0], runs[0].keys), start_epoch
    keys = stack_trees([r.keys for r in runs])
    return runs, (*stack_trees(states), keys), start_epoch


def _restore_common_epoch(opened, checkpoints, fresh):
    """(epoch, states): each run's newest intact checkpoint at or before the newest epoch
    that all of them have. A run killed between two seeds' saves leaves one seed a
    checkpoint ahead, and a damaged checkpoint sends its run back one; going further
    back than one checkpoint period would discard a run's training, and is refused."""
    newest, at_most = None, None
    while True:
        got = []
        for (c, saved), ckpt, (params, opt_states, step) in zip(
            opened, checkpoints, fresh, strict=True
        ):
            template = checkpoint_tree(params, opt_states, step, 0, c.seed)
            got.append(ckpt.restore_newest(template, at_most) if saved else (None, 0))
        epochs = [epoch for _, epoch in got]
        newest = newest or epochs
        if all(e == epochs[0] for e in epochs):
            break
        at_most = min(epochs)
    period = opened[0][0].checkpoint_every
    for (c, _), ahead in zip(opened, newest, strict=True):
        require(
            ahead - epochs[0] <= period,
            f"--resume: {c.out} has an intact checkpoint of epoch {ahead}, but the seeds "
            f"trained with it have none after epoch {epochs[0]}: resuming them together "
            f"would discard {ahead - epochs[0]} epochs of its training. Resume the seeds "
            "apart (each seed_<s> folder is a run of its own), or start again",
        )
    states = []
    for (c, _), (tree, _), state in zip(opened, got, fresh, strict=True):
        if tree is None:
            states.append(state)
            continue
        _check_seed(tree, c.seed)
        states.append((tree["params"], tree["opt_state"], tree["step"]))
    return epochs[0], states


class _EpochLoop:
    """One epoch of every run: train (the stage's compiled epoch), check the non-finite
    guard, test, log and checkpoint."""

    def __init__(self, cfg, model, plans, runs, placement, n_train, steps_per_epoch,
                 start_epoch=0, num_classes=None):  # fmt: skip
        self.cfg, self.model, self.plans, self.runs = cfg, model, plans, runs
        self.placement, self.n_train, self.steps = placement, n_train, steps_per_epoch
        self.select = selection_metric(model)
        self.together = len(runs) > 1
        self.compiled: dict[str, tuple[Callable, Callable, float]] = {}
        self.guard = self._fresh_guard()
        on = cfg.tensorboard and is_primary()
        self.summaries = [Summaries(r.cfg.out, on, start_epoch) for r in runs]
        self.image_fn = make_image_fn(model, num_classes) if on else None

    def close(self) -> None:
        for s in self.summaries:
            s.close()

    def _images(self, epoch: int, params, x_test, y_test) -> None:
        """Every run's reconstruction and sample grids, when this epoch is due."""
        last = epoch + 1 == total_epochs(self.plans)
        if self.image_fn is None or not ((epoch + 1) % self.cfg.image_every == 0 or last):
            return
        n = RECONSTRUCTED
        x = eval_inputs(x_test[:n], self.cfg.data.binarize)
        y = None if y_test is None else y_test[:n]
        key = jax.random.key(self.cfg.seed)  # the same draws every epoch
        for i, summaries in enumerate(self.summaries):
            recon, samples = self.image_fn(self.view(i)(params), x, y, key)
            summaries.images(epoch + 1, x, recon, samples)

    def _fresh_guard(self) -> Guard:
        """No streak of non-finite steps, for every run (a streak starts afresh at a
        resume and at each stage: it is not saved in checkpoints)."""
        guards = [clear_guard() for _ in self.runs]
        return self.placement.replicate(stack_trees(guards) if self.together else guards[0])

    def view(self, i: int) -> Callable:
        """Run i's part of a (possibly stacked) tree."""
        return functools.partial(tree_at, i=i) if self.together else (lambda t: t)

    def epoch(self, epoch, params, opt_states, step, keys, data, start_epoch):
        x_train, y_train, x_test, y_test = data
        plan = stage_at(self.plans, epoch)
        if epoch == plan.first_epoch and epoch != start_epoch:
            self.guard = self._fresh_guard()
        state = TrainState(params, opt_states[plan.name], step, self.guard)
        if plan.name not in self.compiled:
            self.compiled[plan.name] = _compile_stage(
                plan, self.cfg, self.n_train, state, keys, x_train, y_train, self.model,
                self.together, self.placement,
            )  # fmt: skip
        train_epoch, test_fn, compile_seconds = self.compiled[plan.name]
        t0 = time.perf_counter()
        state, train_metrics = train_epoch(state, keys, x_train, y_train, epoch)
        train_metrics = jax.device_get(train_metrics)
        epoch_seconds = time.perf_counter() - t0
        self._check_guard(state.guard, epoch)
        params, step, self.guard = state.params, state.step, state.guard
        opt_states = {**opt_states, plan.name: state.opt_state}
        stage_end = epoch + 1 == plan.first_epoch + plan.epochs
        periodic = (epoch + 1) % self.cfg.checkpoint_every == 0 or stage_end
        views = [self.view(i) for i in range(len(self.runs))]
        tests = [
            test_fn(view(params), x_test, y_test, run.keys["eval"], view(step))
            for view, run in zip(views, self.runs, strict=True)
        ]
        for run, test in zip(self.runs, tests, strict=True):
            self._check_test(run, test, epoch)
        for view, run, test in zip(views, self.runs, tests, strict=True):
            run_params, run_step = view(params), view(step)
            row = {
                "epoch": epoch + 1,
                "stage": plan.name,
                "step": int(run_step),
                **_train_terms(view(train_metrics)),
                **test,
                "selection": self.select,
                "epoch_seconds": epoch_seconds / len(self.runs),
                "step_ms": 1000 * epoch_seconds / self.steps,
            }
            if self.together:  # the compiled step trains every seed: its time is theirs
                row["seeds_together"] = len(self.runs)
            if epoch == plan.first_epoch or epoch == start_epoch:
                row["compile_seconds"] = compile_seconds
            if row["skipped_steps"]:
                warnings.warn(
                    f"{run.cfg.out}: epoch {epoch + 1} skipped {row['skipped_steps']} of "
                    f"{self.steps} steps whose loss, gradient or update was not finite",
                    NonFiniteWarning,
                    2,
                )
            run.history.append(row)
            if is_primary():
                write_log(run.metrics_path, run.history)
            self.summaries[self.runs.index(run)].scalars(row)
            run.checkpoints.save(
                epoch + 1,
                checkpoint_tree(run_params, view(opt_states), run_step, epoch + 1, run.cfg.seed),
                # the best checkpoint: scored in the last stage only, and when kept
                test[self.select] if plan is self.plans[-1] and self.cfg.keep_best else math.nan,
                periodic,
            )
        self._images(epoch, params, x_test, y_test)
        return params, opt_states, step

    def checkpoint(self, epoch, params, opt_states, step) -> None:
        """Save epoch `epoch` as every run's latest checkpoint, unless it is already."""
        for i, run in enumerate(self.runs):
            if run.checkpoints.latest_epoch() == epoch + 1:
                continue
            view = self.view(i)
            tree = checkpoint_tree(view(params), view(opt_states), view(step), epoch + 1,
                                   run.cfg.seed)  # fmt: skip
            run.checkpoints.save(epoch + 1, tree, float("nan"), periodic=True)

    def _check_guard(self, guard: Guard, epoch: int) -> None:
        """NonFiniteError when a run's streak of non-finite steps reached the patience."""
        guard = jax.device_get(guard)
        for i, run in enumerate(self.runs):
            g = self.view(i)(guard)
            if int(g.streak) >= self.cfg.nonfinite_patience:
                raise NonFiniteError(
                    f"{run.cfg.out}: training stopped in epoch {epoch + 1}: {int(g.streak)} "
                    f"consecutive steps with a non-finite {NONFINITE_WHAT[int(g.what)]}, from "
                    f"step {int(g.first_step) + 1}; they were skipped and {_kept(run)}. Train "
                    "again with a lower --lr or with --grad-clip (--nonfinite-patience sets how "
                    "many such steps in a row are skipped)"
                )

    def _check_test(self, run: _Run, test: dict, epoch: int) -> None:
        """NonFiniteError when the epoch's test scores are not finite: the parameters are
        finite (every update was checked) but the model's outputs overflow."""
        for key in ("test_objective", self.select):
            if not np.isfinite(test[key]):
                raise NonFiniteError(
                    f"{run.cfg.out}: training stopped after epoch {epoch + 1}: its {key} is not "
                    f"finite (the model diverged); {_kept(run)}. Train again with a lower --lr "
                    "or with --grad-clip"
                )


def _kept(run: _Run) -> str:
    last = run.checkpoints.latest_epoch()
    if not last:
        return "no checkpoint had been saved yet"
    return (
        f"the last good checkpoint, epoch {last} in {run.checkpoints.latest.directory}, is intact"
    )


@contextlib.contextmanager
def _stop_on_sigint():
    """Within the block, a first Ctrl-C asks training to stop after the current epoch
    (which then saves a checkpoint); a second one stops at once. Yields a function that
    says whether a stop was asked for. Outside the main thread, Ctrl-C is left alone."""
    asked = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(True)
        print(
            "\naevae: stopping after this epoch, with a checkpoint (Ctrl-C again: now)",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(asked)
    finally:
        signal.signal(signal.SIGINT, previous)


def _train_terms(metrics: dict) -> dict:
    """An epoch's mean training metrics as log fields: the objective, the number of
    skipped (non-finite) steps and the rest."""
    terms = {k: float(v) for k, v in metrics.items()}
    skipped = int(terms.pop("skipped_steps"))
    return {
        "train_objective": terms.pop("objective"),
        "train_terms": terms,
        "skipped_steps": skipped,
    }


def _check_seed(restored: dict, seed: int) -> None:
    require(
        np.array_equal(restored["root_key"], jax.random.key_data(jax.random.key(seed))),
        "--resume: the checkpoint was made with another seed; resume with the same --seed",
    )


def _compile_stage(plan, cfg, n_train, state, keys, x_train, y_train, model, seeds, placement):
    """The compiled epoch of a stage, its per-epoch test function, and compile seconds."""
    epoch_fn = make_train_epoch(
        plan.loss,
        plan.tx,
        cfg.data.binarize,
        cfg.batch_size,
        n_train,
        seeds=seeds,
        batch_sharding=placement.batch_sharding(),
        nonfinite_patience=cfg.nonfinite_patience,
    )
    t0 = time.perf_counter()
    compiled = epoch_fn.lower(state, keys, x_train, y_train, plan.first_epoch).compile()
    seconds = time.perf_counter() - t0
    # The per-epoch test scores each test image on its own; a main-stage loss that uses
    # statistics of the whole batch comes with a per-image version (Model.test_loss).
    test_loss = model.test_loss if plan.name == MAIN_STAGE and model.test_loss else plan.loss
    return compiled, make_epoch_test(model, test_loss, cfg.data.binarize), seconds


def checkpoint_tree(params, opt_states: dict, step, epoch: int, seed: int) -> dict:
    """What a checkpoint holds: parameters, every stage's optimiser state, the step and
    epoch reached, and the root key (every stream, data order and per-step key derives
    from it)."""
    return {
        "params": params,
        "opt_state": opt_states,
        "step": step,
        "epoch": np.asarray(epoch, np.int64),
        "root_key": np.asarray(jax.random.key_data(jax.random.key(seed))),
    }
