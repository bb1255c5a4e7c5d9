"""The pure compiled kernel of training: the key streams, one step and one epoch.

Randomness: the run's root key `jax.random.key(seed)` is split once into named
streams (`make_streams`); the epoch's data order is `permutation(fold_in(data,
epoch))` and every per-step key is `fold_in(stream, step)`. So a resumed run draws
exactly the numbers of an uninterrupted one, and one seed gives the same bits.

Faults: a step whose loss or gradient is not finite is skipped inside the compiled
step (`make_guarded_update`), and `TrainState.guard` counts the streak; the host reads
it after the epoch (`actions.check_guard`). Nothing here touches files or the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from aevae_jax.data.preprocess import preprocess
from aevae_jax.models import Batch

STREAMS = ("init", "data", "binarize", "model", "eval")


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


def make_streams(seed: int) -> dict[str, jax.Array]:
    """Named key streams from one root key; fold_in by position keeps each stream fixed
    when new streams are appended."""
    root = jax.random.key(seed)
    return {name: jax.random.fold_in(root, i) for i, name in enumerate(STREAMS)}


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


def stack_trees(trees: list) -> Any:
    """[tree per seed] -> one tree whose leaves have a leading seed axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def tree_at(tree: Any, i: int) -> Any:
    """The i-th seed's tree from a stacked one."""
    return jax.tree.map(lambda a: a[i], tree)
