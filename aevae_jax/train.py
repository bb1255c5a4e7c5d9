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
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from aevae_jax.checkpoint import RunCheckpoints
from aevae_jax.config import RunConfig
from aevae_jax.data import Dataset, DataSpec, load_dataset, preprocess
from aevae_jax.errors import UserError, require
from aevae_jax.evaluate import make_epoch_test, selection_metric
from aevae_jax.models import Batch, Model, import_models, make_model, resolve
from aevae_jax.optim import make_optimizer
from aevae_jax.parallel import barrier, is_primary, make_placement
from aevae_jax.progress import progress_bar

STREAMS = ("init", "data", "binarize", "model", "eval")
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
MAIN_STAGE = "main"


class TrainState(NamedTuple):
    params: Any
    opt_state: Any  # the current stage's optimiser state
    step: jax.Array  # int32 scalar: updates done so far, over all stages


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


def make_train_step(loss: Callable, tx: optax.GradientTransformation, binarize: str) -> Callable:
    """step(state, keys, x_train, y_train, idx) -> (state, metrics): one update on the
    examples `idx` [B] of the uint8 split, gathered, scaled and binarized on the device
    with the step's keys (`fold_in(stream, state.step)`). Pure and un-jitted: the epoch
    scans it, and `jax.jit(step, donate_argnums=0)` runs it one call per step."""
    update = make_update(loss, tx)

    def step_fn(state: TrainState, keys, x_train, y_train, idx):
        k_bin = jax.random.fold_in(keys["binarize"], state.step)
        k_model = jax.random.fold_in(keys["model"], state.step)
        x = preprocess(jnp.take(x_train, idx, axis=0), binarize, k_bin, idx, split=0)
        y = None if y_train is None else jnp.take(y_train, idx, axis=0)
        params, opt_state, value, metrics = update(
            state.params, state.opt_state, Batch(x, y), k_model, state.step
        )
        return TrainState(params, opt_state, state.step + 1), {"objective": value, **metrics}

    return step_fn


def make_epoch_fn(
    loss: Callable,
    tx: optax.GradientTransformation,
    binarize: str,
    batch_size: int,
    n_train: int,
    batch_sharding=None,
) -> Callable:
    """The pure, un-jitted epoch: (state, keys, x_train, y_train, epoch) -> (state, mean
    metrics). One `lax.scan` of `make_train_step` over floor(n_train / batch_size) steps
    of a fresh permutation (the remainder of each permutation is left out of that
    epoch). Images stay uint8 on the device; batches are gathered, scaled and binarized
    inside the scan. `jit`, `vmap` over seeds and sharding wrap it from outside
    (`make_train_epoch`); `batch_sharding` (a sharding of the [steps, batch] index
    array) splits every batch over a mesh's devices.
    """
    steps = n_train // batch_size
    step_fn = make_train_step(loss, tx, binarize)

    def epoch_fn(state: TrainState, keys, x_train, y_train, epoch):
        order = jax.random.permutation(jax.random.fold_in(keys["data"], epoch), n_train)
        order = order[: steps * batch_size].reshape(steps, batch_size)
        if batch_sharding is not None:
            order = jax.lax.with_sharding_constraint(order, batch_sharding)
        scan_step = lambda state, idx: step_fn(state, keys, x_train, y_train, idx)
        state, per_step = jax.lax.scan(scan_step, state, order)
        return state, jax.tree.map(jnp.mean, per_step)

    return epoch_fn


def make_train_epoch(
    loss: Callable,
    tx: optax.GradientTransformation,
    binarize: str,
    batch_size: int,
    n_train: int,
    seeds: bool = False,
    batch_sharding=None,
) -> Callable:
    """`make_epoch_fn` jitted with the state's buffers donated. With `seeds`, the state,
    keys and returned metrics carry a leading seed axis (`jax.vmap` over stacked runs
    that share the data); `batch_sharding` splits each batch over a device mesh."""
    epoch_fn = make_epoch_fn(loss, tx, binarize, batch_size, n_train, batch_sharding)
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


def ensure_writable_dir(out: str) -> None:
    """Create `out` if needed and check that files can be written there."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write_test{jax.process_index()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UserError(
            f"cannot write to the output directory {out!r} ({e.strerror}); choose a writable --out"
        ) from None


def prepare_out_dir(out: str, resume: bool) -> None:
    """Create `out` and check it is writable; refuse to overwrite a run unless resuming."""
    ensure_writable_dir(out)
    has_run = os.path.exists(os.path.join(out, CONFIG_FILE))
    if has_run and not resume:
        raise UserError(
            f"{out!r} already holds a run; pass --resume to continue it, or choose another --out"
        )
    if resume and not has_run:
        raise UserError(f"--resume: {out!r} holds no run to resume (no {CONFIG_FILE})")


def prepare_config(cfg: RunConfig) -> RunConfig:
    """`cfg` with its user modules imported (recorded by how to find them again) and its
    model resolved: name checked, likelihood and options completed. Needs no data."""
    imports = tuple(import_models(m) for m in cfg.imports)
    return dataclasses.replace(cfg, imports=imports, model=resolve(cfg.model))


def _check_resumable(cfg: RunConfig, saved: RunConfig) -> None:
    """Check that `cfg` may resume the run `saved` in cfg.out."""
    # Only the epoch budget may change on resume (and only under a constant learning
    # rate, since schedules span the whole run); anything else makes a different run.
    same_out = os.path.normpath(saved.out) == os.path.normpath(cfg.out)
    if dataclasses.replace(saved, epochs=cfg.epochs, out=cfg.out) != cfg or not same_out:
        raise UserError(
            f"--resume: the options differ from the run saved in {cfg.out!r} "
            f"(saved: {saved.to_dict()}); resume with the same options (only --epochs may "
            "change), or start a new run with another --out"
        )


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


def _read_history(path: str, up_to_epoch: int) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["epoch"] <= up_to_epoch]


def _write_history(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, path)


def write_config(out: str, cfg: RunConfig, dataset: Dataset, steps_per_epoch: int) -> None:
    """config.json: the run's configuration and a description of its data, enough to
    rebuild the model and its optimisers without loading the data set."""
    saved = {
        "run": cfg.to_dict(),
        "data_spec": dataset.spec.to_dict(),
        "steps_per_epoch": steps_per_epoch,
    }
    tmp = os.path.join(out, CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(saved, f, indent=2)
    os.replace(tmp, os.path.join(out, CONFIG_FILE))


def read_config(run_dir: str) -> tuple[RunConfig, DataSpec, int]:
    """(run config, data description, steps per epoch) from `run_dir`/config.json."""
    path = os.path.join(run_dir, CONFIG_FILE)
    seeds = [] if os.path.isfile(path) else seed_run_dirs(run_dir)
    require(
        not seeds,
        f"{run_dir!r} holds the runs of several seeds "
        f"({', '.join(os.path.basename(d) for d in seeds)}); pass one of them, e.g. "
        + (seeds[0] if seeds else ""),
    )
    require(
        os.path.isfile(path),
        f"{run_dir!r} is not a run directory (no {CONFIG_FILE}); pass the --out of an "
        "`aevae train` run",
    )
    try:
        with open(path) as f:
            saved = json.load(f)
        spec = saved["data_spec"]
        return RunConfig.from_dict(saved["run"]), DataSpec(**spec), int(saved["steps_per_epoch"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(
            f"{path} is damaged or from an older version of aevae_jax ({type(e).__name__}: "
            f"{e}); retrain the run"
        ) from None


def init_state(model: Model, plans: list[StagePlan], key, x, y):
    """Initial parameters and one optimiser state per stage: {stage: opt_state}."""
    batch = Batch(x[:1].astype(jnp.float32), None if y is None else y[:1])
    params = model.init(key, batch)
    return params, {p.name: p.tx.init(params) for p in plans}


def main_stage_start(model: Model, cfg: RunConfig, steps_per_epoch: int, x, y):
    """(plan, keys, state): the main stage's plan, the run's key streams and its initial
    train state, for running the run's own epochs or steps outside `fit` (benchmarks)."""
    plan = plan_stages(model, cfg, steps_per_epoch)[0]
    keys = make_streams(cfg.seed)
    params, opt_states = init_state(model, [plan], keys["init"], x, y)
    return plan, keys, TrainState(params, opt_states[plan.name], jnp.zeros((), jnp.int32))


def seed_dir(out: str, seed: int) -> str:
    """The run directory of seed `seed` among the seeds trained together into `out`."""
    return os.path.join(out, f"seed_{seed}")


def seed_run_dirs(out: str) -> list[str]:
    """The seed_<s> run directories (with a config.json) under `out`, by seed."""
    names = os.listdir(out) if os.path.isdir(out) else []
    seeds = sorted(
        int(n[5:])
        for n in names
        if n.startswith("seed_")
        and n[5:].isdigit()
        and os.path.isfile(os.path.join(out, n, CONFIG_FILE))
    )
    return [seed_dir(out, s) for s in seeds]


def seed_configs(cfg: RunConfig, seeds) -> list[RunConfig]:
    """One config per seed, each with its own run directory `cfg.out`/seed_<s>."""
    seeds = tuple(seeds)
    require(len(seeds) > 0, "--seeds needs at least one seed, e.g. --seeds 0,1,2")
    require(len(set(seeds)) == len(seeds), f"--seeds lists a seed twice: {seeds}")
    return [dataclasses.replace(cfg, seed=s, out=seed_dir(cfg.out, s)) for s in seeds]


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
    return fit_runs(seed_configs(cfg, seeds), resume, dataset, progress, devices)


class _Run(NamedTuple):
    """One seed's run while it trains: config, key streams, checkpoints and log."""

    cfg: RunConfig
    keys: dict
    checkpoints: RunCheckpoints
    history: list
    metrics_path: str


def _open_run(cfg: RunConfig, resume: bool) -> tuple[RunConfig, RunConfig | None]:
    """`cfg` prepared for its run directory, and the config saved there when resuming."""
    has_run = os.path.isfile(os.path.join(cfg.out, CONFIG_FILE))
    saved = read_config(cfg.out)[0] if resume and has_run else None
    if saved is not None and not cfg.imports:
        cfg = dataclasses.replace(cfg, imports=saved.imports)  # the run's own modules
    cfg = prepare_config(cfg)
    prepare_out_dir(cfg.out, resume)
    if saved is not None:
        _check_resumable(cfg, saved)
    return cfg, saved


def _resume_epoch(checkpoints: list[RunCheckpoints], resume: bool) -> int:
    """The epoch every run restarts from: the oldest latest checkpoint among the seeds (a
    run killed between two seeds' saves leaves one seed an epoch ahead)."""
    if not resume:
        return 0
    epochs = [c.latest_epoch() for c in checkpoints]
    return 0 if None in epochs else min(epochs)


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
) -> list[FitResult]:
    """Train runs that differ only in seed and run directory as one compiled program:
    one run as `fit` always did, several with the epoch vmapped over stacked states.
    With several seeds, a log row's `step_ms` is the step of the program that trains
    them all (`seeds_together` says how many), and its `epoch_seconds` that epoch's
    time divided by the number of seeds."""
    base = lambda c: dataclasses.replace(c, seed=0, out="")
    require(
        all(base(c) == base(cfgs[0]) for c in cfgs),
        "runs trained together must differ only in --seed and --out",
    )
    opened = [_open_run(c, resume) for c in cfgs]
    barrier("aevae: run directories checked")  # before process 0 writes into them
    cfg = opened[0][0]
    placement = make_placement(devices, cfg.batch_size)
    if dataset is None:
        dataset = load_dataset(cfg.data.dataset, cfg.data.data_dir)
    dataset = dataset.take_train(cfg.data.train_size)
    n_train = len(dataset.x_train)
    require(
        cfg.batch_size <= n_train,
        f"batch_size {cfg.batch_size} exceeds the {n_train} training examples; "
        "lower --batch-size or raise --train-size",
    )
    model = make_model(cfg.model, dataset.spec)
    steps_per_epoch = n_train // cfg.batch_size
    plans = plan_stages(model, cfg, steps_per_epoch)
    x_train, y_train, x_test, y_test = placement.replicate(
        (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)
    )

    checkpoints = [RunCheckpoints(c.out) for c, _ in opened]
    start_epoch = _resume_epoch(checkpoints, resume)
    runs, states = [], []
    for (c, saved), ckpt in zip(opened, checkpoints, strict=True):
        run, state = _start_run(c, saved, ckpt, start_epoch, model, plans, x_train, y_train)
        if is_primary() and (saved is None or c.epochs != saved.epochs):
            write_config(c.out, c, dataset, steps_per_epoch)
        if is_primary():
            _write_history(run.metrics_path, run.history)
        runs.append(run)
        states.append(state)

    together = len(runs) > 1
    if together:
        params, opt_states, step = stack_trees(states)
        keys = stack_trees([r.keys for r in runs])
    else:
        (params, opt_states, step), keys = states[0], runs[0].keys
    params, opt_states, step, keys = placement.replicate((params, opt_states, step, keys))

    select = selection_metric(model)
    last = total_epochs(plans)
    compiled: dict[str, tuple[Callable, Callable, float]] = {}
    seeds_text = "" if not together else f" x {len(runs)} seeds"
    bar = progress_bar(
        range(start_epoch, last),
        total=last,
        initial=start_epoch,
        desc=f"{cfg.model.name}{seeds_text} on {cfg.data.dataset}",
        unit="epoch",
        enabled=progress,
        leave=True,
    )
    for epoch in bar:
        plan = stage_at(plans, epoch)
        if plan.name not in compiled:
            compiled[plan.name] = _compile_stage(
                plan, cfg, n_train, TrainState(params, opt_states[plan.name], step), keys,
                x_train, y_train, model, together, placement,
            )  # fmt: skip
        train_epoch, test_fn, compile_seconds = compiled[plan.name]
        state = TrainState(params, opt_states[plan.name], step)
        t0 = time.perf_counter()
        state, train_metrics = train_epoch(state, keys, x_train, y_train, epoch)
        train_metrics = jax.device_get(train_metrics)
        epoch_seconds = time.perf_counter() - t0
        params, step = state.params, state.step
        opt_states = {**opt_states, plan.name: state.opt_state}
        stage_end = epoch + 1 == plan.first_epoch + plan.epochs
        periodic = (epoch + 1) % cfg.checkpoint_every == 0 or stage_end
        for i, run in enumerate(runs):
            view = functools.partial(tree_at, i=i) if together else (lambda t: t)
            run_params, run_step = view(params), view(step)
            test = test_fn(run_params, x_test, y_test, run.keys["eval"], run_step)
            row = {
                "epoch": epoch + 1,
                "stage": plan.name,
                "step": int(run_step),
                **_train_terms(view(train_metrics)),
                **test,
                "selection": select,
                "epoch_seconds": epoch_seconds / len(runs),
                "step_ms": 1000 * epoch_seconds / steps_per_epoch,
            }
            if together:  # the compiled step trains every seed: its time is theirs
                row["seeds_together"] = len(runs)
            if epoch == plan.first_epoch or epoch == start_epoch:
                row["compile_seconds"] = compile_seconds
            run.history.append(row)
            if is_primary():
                _write_history(run.metrics_path, run.history)
            run.checkpoints.save(
                epoch + 1,
                checkpoint_tree(run_params, view(opt_states), run_step, epoch + 1, run.cfg.seed),
                test[select] if plan is plans[-1] else float("nan"),  # best: last stage only
                periodic,
            )
        bar.set_postfix(
            stage=plan.name,
            objective=f"{runs[0].history[-1]['train_objective']:.2f}",
            **{select.removeprefix("test_"): f"{runs[0].history[-1][select]:.2f}"},
        )
    results = []
    for i, run in enumerate(runs):
        run.checkpoints.close()
        run_params = tree_at(params, i) if together else params
        results.append(
            FitResult(model, run_params, run.history, run.cfg.out, dataset, run.cfg.seed)
        )
    return results


def _start_run(cfg, saved, checkpoints, start_epoch, model, plans, x, y):
    """(run, (params, opt_states, step)): one seed's key streams, its initial or restored
    state at `start_epoch`, and its log up to that epoch."""
    keys = make_streams(cfg.seed)
    params, opt_states = init_state(model, plans, keys["init"], x, y)
    step = jnp.zeros((), jnp.int32)
    if start_epoch > 0:
        restored = checkpoints.restore(
            checkpoint_tree(params, opt_states, step, 0, cfg.seed), epoch=start_epoch
        )
        _check_seed(restored, cfg.seed)
        params, opt_states, step = restored["params"], restored["opt_state"], restored["step"]
    if saved is not None:
        _check_epoch_change(saved.epochs, cfg, start_epoch, len(plans))
    metrics_path = os.path.join(cfg.out, METRICS_FILE)
    history = _read_history(metrics_path, start_epoch)
    return _Run(cfg, keys, checkpoints, history, metrics_path), (params, opt_states, step)


def _train_terms(metrics: dict) -> dict:
    """An epoch's mean training metrics as log fields: the objective and the rest."""
    terms = {k: float(v) for k, v in metrics.items()}
    return {"train_objective": terms.pop("objective"), "train_terms": terms}


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
