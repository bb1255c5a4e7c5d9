"""Optax optimisers: the run's optimiser from its config, and parameter groups.

A model that owns its optimisation (an adversarial AE's discriminator with its own
learning rate, a VQ-VAE's EMA codebook, a second training stage that trains only a
prior) returns one `optax.GradientTransformation` built with `param_groups`: each
top-level entry of the parameter dict belongs to a named group, and each group has its
own transformation. The trainer then runs one gradient step of one scalar loss; which
parameter moves by which rule is the optimiser's business, not the trainer's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from aevae_jax.config import OptimConfig
from aevae_jax.errors import require


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """Adam / AdamW / SGD(momentum 0.9) with a learning-rate schedule and optional
    global-norm gradient clipping. Schedules decay over `total_steps`."""
    decay_steps = max(total_steps, 1)
    require(
        cfg.warmup_steps < decay_steps or cfg.schedule != "warmup_cosine",
        f"warmup_steps {cfg.warmup_steps} must be fewer than the run's {decay_steps} steps",
    )
    schedules: dict[str, Callable[[], optax.Schedule]] = {
        "constant": lambda: optax.constant_schedule(cfg.lr),
        "cosine": lambda: optax.cosine_decay_schedule(cfg.lr, decay_steps),
        "warmup_cosine": lambda: optax.warmup_cosine_decay_schedule(
            0.0, cfg.lr, cfg.warmup_steps, decay_steps
        ),
    }
    lr = schedules[cfg.schedule]()
    optimizers: dict[str, Callable[[], optax.GradientTransformation]] = {
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr, weight_decay=cfg.weight_decay),
        "sgd": lambda: optax.sgd(lr, momentum=0.9),
    }
    tx = optimizers[cfg.optimizer]()
    if cfg.grad_clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    return tx


def frozen() -> optax.GradientTransformation:
    """Leaves its parameters exactly unchanged (no weight decay, no momentum)."""
    return optax.set_to_zero()


def param_groups(
    transforms: Mapping[str, optax.GradientTransformation], group_of: Mapping[str, str]
) -> optax.GradientTransformation:
    """One transformation over a parameter dict whose top-level entries fall into
    groups: `group_of` maps each top-level key to a group name of `transforms`.

    Every top-level key must be assigned, so a parameter added to a model later can
    never be trained by accident with a default rule."""
    unknown = sorted(set(group_of.values()) - set(transforms))
    if unknown:
        raise ValueError(f"param_groups: groups {unknown} have no transformation")

    def labels(params):
        missing = sorted(set(params) - set(group_of))
        if missing:
            raise ValueError(f"param_groups: parameters {missing} belong to no group")
        return {k: _label_tree(v, group_of[k]) for k, v in params.items()}

    return optax.multi_transform(dict(transforms), labels)


def _label_tree(tree, label: str):
    import jax

    return jax.tree.map(lambda _: label, tree)


class SkipState(NamedTuple):
    inner: optax.OptState
    skipped: jax.Array  # int32: steps skipped so far


def skip_large_gradients(
    inner: optax.GradientTransformation, max_norm: float
) -> optax.GradientTransformation:
    """`inner`, except that a step whose gradient has a global norm above `max_norm` (or a
    non-finite one) is skipped: zero updates and `inner`'s state unchanged; `skipped`
    counts them. The guard of deep hierarchical VAEs (Child 2021), whose rare huge
    gradients would otherwise undo training. max_norm = inf: never skips."""

    def init(params):
        return SkipState(inner.init(params), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        norm = optax.global_norm(updates)
        skip = jnp.logical_or(norm > max_norm, ~jnp.isfinite(norm))
        new_updates, new_inner = inner.update(updates, state.inner, params)
        pick = lambda old, new: jnp.where(skip, old, new)
        zeros = jax.tree.map(jnp.zeros_like, new_updates)
        return jax.tree.map(pick, zeros, new_updates), SkipState(
            jax.tree.map(pick, state.inner, new_inner), state.skipped + skip.astype(jnp.int32)
        )

    return optax.GradientTransformation(init, update)
