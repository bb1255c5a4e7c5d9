"""One epoch of every run, and what follows it: the per-epoch actions.

`EpochLoop.epoch` trains the epoch (its stage's compiled program, compiled on first
use) and then runs `ACTIONS` in order, each a function with one job. An action reads
the trained epoch (`Epoch`) and what earlier actions recorded in it (the test scores,
the log rows). The order is part of the guarantees: the non-finite guard is checked
before anything is scored, the scores before anything is written, and each run's log
row is written before its checkpoint, so a checkpoint is never ahead of its log.

Several seeds train as one program: their trees carry a leading seed axis, and an
action takes run i's part with `Training.view(i)`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from aevae_jax.config import RunConfig
from aevae_jax.errors import UserError
from aevae_jax.evaluate.scores import make_epoch_test, selection_metric
from aevae_jax.evaluate.split import eval_inputs
from aevae_jax.models import Model
from aevae_jax.train.checkpoint import RunCheckpoints, checkpoint_tree
from aevae_jax.train.parallel import Placement, is_primary
from aevae_jax.train.rundir import write_log
from aevae_jax.train.stages import MAIN_STAGE, StagePlan, stage_at, total_epochs
from aevae_jax.train.step import (
    NONFINITE_WHAT,
    Guard,
    TrainState,
    clear_guard,
    make_train_epoch,
    stack_trees,
    tree_at,
)
from aevae_jax.train.summaries import RECONSTRUCTED, Summaries, make_image_fn


class NonFiniteError(UserError):
    """Training stopped: a streak of non-finite steps reached cfg.nonfinite_patience."""


class NonFiniteWarning(UserWarning):
    """Some steps of an epoch were non-finite and skipped."""


class Run(NamedTuple):
    """One seed's run while it trains: config, key streams, checkpoints and log."""

    cfg: RunConfig
    keys: dict
    checkpoints: RunCheckpoints
    history: list
    metrics_path: str


@dataclasses.dataclass(frozen=True)
class Training:
    """What stays fixed while the runs train. `data`: (x_train, y_train, x_test, y_test)
    on the devices; `keys`: every run's key streams (stacked when there are several)."""

    cfg: RunConfig
    model: Model
    plans: list[StagePlan]
    runs: list[Run]
    placement: Placement
    data: tuple
    keys: dict
    start_epoch: int
    summaries: list[Summaries]
    image_fn: Callable | None

    @property
    def together(self) -> bool:
        return len(self.runs) > 1

    @property
    def steps(self) -> int:
        """Steps per epoch."""
        return self.data[0].shape[0] // self.cfg.batch_size

    @functools.cached_property
    def select(self) -> str:
        return selection_metric(self.model)

    def view(self, i: int) -> Callable:
        """Run i's part of a (possibly stacked) tree."""
        return functools.partial(tree_at, i=i) if self.together else (lambda t: t)


@dataclasses.dataclass
class Epoch:
    """One trained epoch of every run (0-based `index`), and what the actions recorded:
    `tests` (one dict of test scores per run) and `rows` (one log row per run)."""

    index: int
    plan: StagePlan
    state: TrainState  # after the epoch
    opt_states: dict  # every stage's optimiser state, the trained stage's updated
    metrics: dict  # the epoch's mean training metrics, on the host
    seconds: float
    compile_seconds: float  # of the stage's program
    test_fn: Callable
    tests: list[dict] = dataclasses.field(default_factory=list)
    rows: list[dict] = dataclasses.field(default_factory=list)


def check_guard(t: Training, e: Epoch) -> None:
    """NonFiniteError when a run's streak of non-finite steps reached the patience."""
    guard = jax.device_get(e.state.guard)
    for i, run in enumerate(t.runs):
        g = t.view(i)(guard)
        if int(g.streak) >= t.cfg.nonfinite_patience:
            raise NonFiniteError(
                f"{run.cfg.out}: training stopped in epoch {e.index + 1}: {int(g.streak)} "
                f"consecutive steps with a non-finite {NONFINITE_WHAT[int(g.what)]}, from "
                f"step {int(g.first_step) + 1}; they were skipped and {_kept(run)}. Train "
                "again with a lower --lr or with --grad-clip (--nonfinite-patience sets how "
                "many such steps in a row are skipped)"
            )


def score(t: Training, e: Epoch) -> None:
    """Every run's test scores of the epoch's parameters."""
    _, _, x_test, y_test = t.data
    views = [t.view(i) for i in range(len(t.runs))]
    e.tests = [
        e.test_fn(view(e.state.params), x_test, y_test, run.keys["eval"], view(e.state.step))
        for view, run in zip(views, t.runs, strict=True)
    ]


def check_tests(t: Training, e: Epoch) -> None:
    """NonFiniteError when a run's test scores are not finite: the parameters are finite
    (every update was checked) but the model's outputs overflow."""
    for run, scores in zip(t.runs, e.tests, strict=True):
        for key in ("test_objective", t.select):
            if not np.isfinite(scores[key]):
                raise NonFiniteError(
                    f"{run.cfg.out}: training stopped after epoch {e.index + 1}: its {key} is "
                    f"not finite (the model diverged); {_kept(run)}. Train again with a lower "
                    "--lr or with --grad-clip"
                )


def log_rows(t: Training, e: Epoch) -> None:
    """Every run's log row of the epoch."""
    e.rows = [_row(t, e, i) for i in range(len(t.runs))]


def _row(t: Training, e: Epoch, i: int) -> dict:
    view = t.view(i)
    row = {
        "epoch": e.index + 1,
        "stage": e.plan.name,
        "step": int(view(e.state.step)),
        **train_terms(view(e.metrics)),
        **e.tests[i],
        "selection": t.select,
        "epoch_seconds": e.seconds / len(t.runs),
        "step_ms": 1000 * e.seconds / t.steps,
    }
    if t.together:  # the compiled step trains every seed: its time is theirs
        row["seeds_together"] = len(t.runs)
    if e.index == e.plan.first_epoch or e.index == t.start_epoch:
        row["compile_seconds"] = e.compile_seconds
    return row


def train_terms(metrics: dict) -> dict:
    """An epoch's mean training metrics as log fields: the objective, the number of
    skipped (non-finite) steps and the rest."""
    terms = {k: float(v) for k, v in metrics.items()}
    skipped = int(terms.pop("skipped_steps"))
    return {
        "train_objective": terms.pop("objective"),
        "train_terms": terms,
        "skipped_steps": skipped,
    }


def warn_skipped(t: Training, e: Epoch) -> None:
    """A NonFiniteWarning for each run that skipped steps in the epoch."""
    for run, row in zip(t.runs, e.rows, strict=True):
        if row["skipped_steps"]:
            warnings.warn(
                f"{run.cfg.out}: epoch {e.index + 1} skipped {row['skipped_steps']} of "
                f"{t.steps} steps whose loss, gradient or update was not finite",
                NonFiniteWarning,
                2,
            )


def write_metrics(t: Training, e: Epoch) -> None:
    """Each run's row onto its history and, on the primary process, its metrics.jsonl."""
    for run, row in zip(t.runs, e.rows, strict=True):
        run.history.append(row)
        if is_primary():
            write_log(run.metrics_path, run.history)


def write_scalars(t: Training, e: Epoch) -> None:
    """Each run's row as TensorBoard scalars (nothing when summaries are off)."""
    for summaries, row in zip(t.summaries, e.rows, strict=True):
        summaries.scalars(row)


def save_checkpoints(t: Training, e: Epoch) -> None:
    """Each run's checkpoint of the epoch: the latest every cfg.checkpoint_every epochs
    and at each stage's end; a candidate for the best in the last stage only (and only
    with cfg.keep_best)."""
    stage_end = e.index + 1 == e.plan.first_epoch + e.plan.epochs
    periodic = (e.index + 1) % t.cfg.checkpoint_every == 0 or stage_end
    scored = e.plan is t.plans[-1] and t.cfg.keep_best
    for i, (run, scores) in enumerate(zip(t.runs, e.tests, strict=True)):
        view = t.view(i)
        tree = checkpoint_tree(view(e.state.params), view(e.opt_states), view(e.state.step),
                               e.index + 1, run.cfg.seed)  # fmt: skip
        run.checkpoints.save(e.index + 1, tree, scores[t.select] if scored else math.nan, periodic)


def write_images(t: Training, e: Epoch) -> None:
    """Every run's reconstruction and sample grids, when this epoch is due."""
    last = e.index + 1 == total_epochs(t.plans)
    if t.image_fn is None or not ((e.index + 1) % t.cfg.image_every == 0 or last):
        return
    _, _, x_test, y_test = t.data
    x = eval_inputs(x_test[:RECONSTRUCTED], t.cfg.data.binarize)
    y = None if y_test is None else y_test[:RECONSTRUCTED]
    key = jax.random.key(t.cfg.seed)  # the same draws every epoch
    for i, summaries in enumerate(t.summaries):
        recon, samples = t.image_fn(t.view(i)(e.state.params), x, y, key)
        summaries.images(e.index + 1, x, recon, samples)


ACTIONS: tuple[Callable[[Training, Epoch], None], ...] = (
    check_guard,
    score,
    check_tests,
    log_rows,
    warn_skipped,
    write_metrics,
    write_scalars,
    save_checkpoints,
    write_images,
)


def _kept(run: Run) -> str:
    last = run.checkpoints.latest_epoch()
    if not last:
        return "no checkpoint had been saved yet"
    return (
        f"the last good checkpoint, epoch {last} in {run.checkpoints.latest.directory}, is intact"
    )


class Compiled(NamedTuple):
    """A stage's compiled epoch, its per-epoch test function, and compile seconds."""

    train_epoch: Callable
    test_fn: Callable
    seconds: float


def compile_stage(t: Training, plan: StagePlan, state: TrainState) -> Compiled:
    epoch_fn = make_train_epoch(
        plan.loss,
        plan.tx,
        t.cfg.data.binarize,
        t.cfg.batch_size,
        t.data[0].shape[0],
        seeds=t.together,
        batch_sharding=t.placement.batch_sharding(),
        nonfinite_patience=t.cfg.nonfinite_patience,
    )
    x_train, y_train, _, _ = t.data
    t0 = time.perf_counter()
    compiled = epoch_fn.lower(state, t.keys, x_train, y_train, plan.first_epoch).compile()
    seconds = time.perf_counter() - t0
    # The per-epoch test scores each test image on its own; a main-stage loss that uses
    # statistics of the whole batch comes with a per-image version (Model.test_loss).
    model = t.model
    test_loss = model.test_loss if plan.name == MAIN_STAGE and model.test_loss else plan.loss
    return Compiled(compiled, make_epoch_test(model, test_loss, t.cfg.data.binarize), seconds)


class EpochLoop:
    """Every run's epochs: train one, then run `actions` (default ACTIONS) on it."""

    def __init__(self, cfg: RunConfig, model: Model, plans: list[StagePlan], runs: list[Run],
                 placement: Placement, data: tuple, keys: dict, start_epoch: int = 0,
                 num_classes: int | None = None, actions=ACTIONS):  # fmt: skip
        on = cfg.tensorboard and is_primary()
        summaries = [Summaries(r.cfg.out, on, start_epoch) for r in runs]
        image_fn = make_image_fn(model, num_classes) if on else None
        self.training = Training(cfg, model, plans, runs, placement, data, keys, start_epoch,
                                 summaries, image_fn)  # fmt: skip
        self.actions = actions
        self.compiled: dict[str, Compiled] = {}
        self.guard = self._fresh_guard()

    def close(self) -> None:
        for s in self.training.summaries:
            s.close()

    def _fresh_guard(self) -> Guard:
        """No streak of non-finite steps, for every run (a streak starts afresh at a
        resume and at each stage: it is not saved in checkpoints)."""
        t = self.training
        guards = [clear_guard() for _ in t.runs]
        return t.placement.replicate(stack_trees(guards) if t.together else guards[0])

    def train(self, epoch: int, params, opt_states: dict, step) -> Epoch:
        """Epoch `epoch` (0-based) of every run, in its stage's compiled program."""
        t = self.training
        plan = stage_at(t.plans, epoch)
        if epoch == plan.first_epoch and epoch != t.start_epoch:
            self.guard = self._fresh_guard()
        state = TrainState(params, opt_states[plan.name], step, self.guard)
        if plan.name not in self.compiled:
            self.compiled[plan.name] = compile_stage(t, plan, state)
        compiled = self.compiled[plan.name]
        x_train, y_train, _, _ = t.data
        t0 = time.perf_counter()
        state, metrics = compiled.train_epoch(state, t.keys, x_train, y_train, epoch)
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - t0
        self.guard = state.guard
        opt_states = {**opt_states, plan.name: state.opt_state}
        return Epoch(epoch, plan, state, opt_states, metrics, seconds, compiled.seconds,
                     compiled.test_fn)  # fmt: skip

    def epoch(self, epoch: int, params, opt_states: dict, step) -> tuple[Any, dict, Any]:
        """Train epoch `epoch`, run the actions on it; (params, opt_states, step) after."""
        e = self.train(epoch, params, opt_states, step)
        for action in self.actions:
            action(self.training, e)
        return e.state.params, e.opt_states, e.state.step

    def save_latest(self, epoch: int, params, opt_states: dict, step) -> None:
        """Save epoch `epoch` as every run's latest checkpoint, unless it is already."""
        t = self.training
        for i, run in enumerate(t.runs):
            if run.checkpoints.latest_epoch() == epoch + 1:
                continue
            view = t.view(i)
            tree = checkpoint_tree(view(params), view(opt_states), view(step), epoch + 1,
                                   run.cfg.seed)  # fmt: skip
            run.checkpoints.save(epoch + 1, tree, float("nan"), periodic=True)
