"""A run's stages and its initial state.

A model trains its main objective for `cfg.epochs` epochs, then each of its further
`stages` (a VQ-VAE's prior) for that stage's epochs. Epochs are counted over the whole
run; each stage has its own optimiser, and its own optimiser state, which every
checkpoint holds, so `--resume` continues in whichever stage the run was killed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from aevae_jax.config import RunConfig
from aevae_jax.data.preprocess import to_unit_interval
from aevae_jax.models import Batch, Model
from aevae_jax.nn.optim import make_optimizer
from aevae_jax.train.step import TrainState, clear_guard, make_streams

MAIN_STAGE = "main"


class StagePlan(NamedTuple):
    """One stage of a run: its objective, optimiser and epochs [first, first + epochs)."""

    name: str
    loss: Callable
    tx: optax.GradientTransformation
    first_epoch: int
    epochs: int


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


def init_state(model: Model, plans: list[StagePlan], key, x, y):
    """Initial parameters and one optimiser state per stage: {stage: opt_state}, from the
    first image of `x` (stored images: scaled to [0, 1], as every batch is). One compiled
    program (run eagerly, the initialisers compile dozens of small ones)."""

    def init(key, x, y):
        params = model.init(key, Batch(to_unit_interval(x), y))
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
