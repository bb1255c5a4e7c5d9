"""The run's life: open its run directories (fresh, or resumed from their newest intact
checkpoint), load the data, train every epoch (`actions.EpochLoop`) and stop: at the
last epoch, on Ctrl-C (after the epoch, with a checkpoint: `TrainingInterrupted`), or on
a streak of non-finite steps (`actions.NonFiniteError`).

`fit(cfg)` is the whole run: load data, build the model, train with a progress bar,
evaluate on the test split each epoch, write `config.json`, `metrics.jsonl` (one line
per epoch) and orbax checkpoints (periodic and best) under `cfg.out`. The best
checkpoint is ranked by a step-independent metric (`evaluate.selection_metric`),
among the epochs of the last stage. Several seeds train as one program (`fit_seeds`),
each in a run directory of its own.

A resume starts from the newest intact checkpoint (the newest that every seed has) and
trains the later epochs again, drawing the numbers an uninterrupted run draws (see
`step`). docs/reliability.md ("What survives what") lists each guarantee with its test.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.config import RunConfig
from aevae_jax.data.sources import describe_dataset, load_dataset
from aevae_jax.data.spec import Dataset, DataShape, DataSpec, describe_arrays, require_train_size
from aevae_jax.data.validate import validate_dataset
from aevae_jax.errors import require
from aevae_jax.models import Model, import_models, make_model, resolve
from aevae_jax.progress import progress_bar
from aevae_jax.train.actions import EpochLoop, Run
from aevae_jax.train.checkpoint import RunCheckpoints, checkpoint_tree
from aevae_jax.train.interrupts import stop_on_sigint
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
from aevae_jax.train.stages import init_state, plan_stages, total_epochs
from aevae_jax.train.step import make_streams, stack_trees, tree_at
from aevae_jax.writing import number


@dataclasses.dataclass
class FitResult:
    model: Model
    params: Any
    history: list[dict]
    run_dir: str
    dataset: Dataset
    seed: int = 0


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
    dataset = _load_data(cfg, dataset)
    model = make_model(cfg.model, dataset.spec)
    steps_per_epoch = len(dataset.x_train) // cfg.batch_size
    plans = plan_stages(model, cfg, steps_per_epoch)
    data = placement.replicate((dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test))
    checkpoints = [RunCheckpoints(c.out) for c, _ in opened]
    closing: list = checkpoints[:]  # closed however the loop ends
    try:
        runs, state, start_epoch = _start_runs(
            opened, checkpoints, model, plans, data[0], data[1], dataset.spec, steps_per_epoch
        )
        params, opt_states, step, keys = placement.replicate(state)
        loop = EpochLoop(cfg, model, plans, runs, placement, data, keys, start_epoch,
                         dataset.num_classes)  # fmt: skip
        closing.append(loop)
        params = _train(loop, (params, opt_states, step), progress, named_out)
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


def _load_data(cfg: RunConfig, dataset: Dataset | None) -> Dataset:
    """The run's data (`dataset`, checked, or cfg's, loaded), its training subset taken;
    whatever can be checked against the data's shape is checked before it loads."""
    if dataset is None:
        check_against_data(cfg, describe_dataset(cfg.data.dataset, cfg.data.data_dir))
        dataset = load_dataset(cfg.data.dataset, cfg.data.data_dir)
    else:
        dataset = validate_dataset(dataset)
        check_against_data(cfg, describe_arrays(dataset))
    return dataset.take_train(cfg.data.train_size)


def _train(loop: EpochLoop, state: tuple, progress: bool, named_out: str) -> Any:
    """Every epoch from the loop's start to the last, under a progress bar; the params
    after the last. A Ctrl-C stops after the epoch, with a checkpoint of it."""
    t = loop.training
    params, opt_states, step = state
    last = total_epochs(t.plans)
    seeds_text = "" if len(t.runs) == 1 else f" x {len(t.runs)} seeds"
    bar = progress_bar(
        range(t.start_epoch, last),
        total=last,
        initial=t.start_epoch,
        desc=f"{t.cfg.model.name}{seeds_text} on {t.cfg.data.dataset}",
        unit="epoch",
        enabled=progress,
        leave=True,
    )
    with stop_on_sigint() as stop_requested:
        for epoch in bar:
            params, opt_states, step = loop.epoch(epoch, params, opt_states, step)
            row = t.runs[0].history[-1]
            select = row["selection"]
            bar.set_postfix(
                stage=row["stage"],
                objective=number(row["train_objective"]),
                **{select.removeprefix("test_"): number(row[select])},
            )
            if any_process(stop_requested()) and epoch + 1 < last:
                loop.save_latest(epoch, params, opt_states, step)
                raise TrainingInterrupted(
                    f"stopped after epoch {epoch + 1} (Ctrl-C); " + resume_hint(named_out)
                )
    return params


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
        runs.append(Run(c, keys, ckpt, history, metrics_path))
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


def _check_seed(restored: dict, seed: int) -> None:
    require(
        np.array_equal(restored["root_key"], jax.random.key_data(jax.random.key(seed))),
        "--resume: the checkpoint was made with another seed; resume with the same --seed",
    )
