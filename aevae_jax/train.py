"""Training: Optax update, one compiled `lax.scan` per epoch, checkpoints and logs.

Randomness: the run's root key `jax.random.key(seed)` is split once into named
streams (`make_streams`); the epoch's data order is `permutation(fold_in(data,
epoch))` and every per-step key is `fold_in(stream, step)`. So a resumed run draws
exactly the numbers of an uninterrupted one, and one seed gives the same bits.

`fit(cfg)` is the whole run: load data, build the model, train with a progress bar,
evaluate the test loss each epoch, write `config.json`, `metrics.jsonl` (one line
per epoch) and orbax checkpoints (periodic and best) under `cfg.out`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aevae_jax.checkpoint import RunCheckpoints
from aevae_jax.config import OptimConfig, RunConfig
from aevae_jax.data import Dataset, load_dataset, preprocess
from aevae_jax.errors import UserError, require
from aevae_jax.evaluate import make_loss_per_example, mean_metrics
from aevae_jax.models import Batch, Model, make_model

STREAMS = ("init", "data", "binarize", "model", "eval")
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array  # int32 scalar: updates done so far


def make_streams(seed: int) -> dict[str, jax.Array]:
    """Named key streams from one root key; fold_in by position keeps each stream fixed
    when new streams are appended."""
    root = jax.random.key(seed)
    return {name: jax.random.fold_in(root, i) for i, name in enumerate(STREAMS)}


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """Adam / AdamW / SGD(momentum 0.9) with a learning-rate schedule and optional
    global-norm gradient clipping."""
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


def make_update(model: Model, tx: optax.GradientTransformation) -> Callable:
    """update(params, opt_state, batch, key, step) -> (params, opt_state, loss, metrics).

    One gradient step of `model.loss`, unless the model brings its own update
    (`model.make_update`, e.g. several optimisers in one step)."""
    if model.make_update is not None:
        return model.make_update(tx)

    def update(params, opt_state, batch, key, step):
        (loss, metrics), grads = jax.value_and_grad(model.loss, has_aux=True)(
            params, batch, key, step
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, metrics

    return update


def make_train_epoch(
    model: Model, tx: optax.GradientTransformation, binarize: str, batch_size: int, n_train: int
) -> Callable:
    """The jitted epoch: (state, keys, x_train, y_train, epoch) -> (state, mean metrics).

    One `lax.scan` over floor(n_train / batch_size) steps of a fresh permutation
    (the remainder of each permutation is left out of that epoch). Images stay uint8
    on the device; batches are gathered, scaled and binarized inside the scan. The
    state's buffers are donated.
    """
    steps = n_train // batch_size
    update = make_update(model, tx)

    def epoch_fn(state: TrainState, keys, x_train, y_train, epoch):
        order = jax.random.permutation(jax.random.fold_in(keys["data"], epoch), n_train)
        order = order[: steps * batch_size].reshape(steps, batch_size)

        def step_fn(state: TrainState, idx):
            k_bin = jax.random.fold_in(keys["binarize"], state.step)
            k_model = jax.random.fold_in(keys["model"], state.step)
            x = preprocess(jnp.take(x_train, idx, axis=0), binarize, k_bin, idx, split=0)
            y = None if y_train is None else jnp.take(y_train, idx, axis=0)
            params, opt_state, loss, metrics = update(
                state.params, state.opt_state, Batch(x, y), k_model, state.step
            )
            return TrainState(params, opt_state, state.step + 1), {"loss": loss, **metrics}

        state, per_step = jax.lax.scan(step_fn, state, order)
        return state, jax.tree.map(jnp.mean, per_step)

    return jax.jit(epoch_fn, donate_argnums=(0,))


@dataclasses.dataclass
class FitResult:
    model: Model
    params: Any
    history: list[dict]
    run_dir: str
    dataset: Dataset


def ensure_writable_dir(out: str) -> None:
    """Create `out` if needed and check that files can be written there."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write_test")
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


def _check_resumable(cfg: RunConfig, out: str) -> RunConfig:
    """The run saved in `out`, after checking that `cfg` may resume it."""
    with open(os.path.join(out, CONFIG_FILE)) as f:
        saved = RunConfig.from_dict(json.load(f))
    # Only the epoch budget may change on resume (and only under a constant learning
    # rate, since schedules span the whole run); anything else makes a different run.
    same_out = os.path.normpath(saved.out) == os.path.normpath(cfg.out)
    if dataclasses.replace(saved, epochs=cfg.epochs, out=cfg.out) != cfg or not same_out:
        raise UserError(
            f"--resume: the options differ from the run saved in {out!r} "
            f"(saved: {saved.to_dict()}); resume with the same options (only --epochs may "
            "change), or start a new run with another --out"
        )
    return saved


def _check_epoch_change(saved_epochs: int, cfg: RunConfig, done: int) -> None:
    require(
        cfg.epochs >= done,
        f"--resume: the run in {cfg.out!r} has already trained {done} epochs; "
        f"pass --epochs {done} or more",
    )
    require(
        cfg.epochs == saved_epochs or cfg.optim.schedule == "constant",
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


def fit(
    cfg: RunConfig,
    resume: bool = False,
    dataset: Dataset | None = None,
    progress: bool = True,
) -> FitResult:
    """Train `cfg` to its last epoch (from its latest checkpoint when `resume`)."""
    out = cfg.out
    prepare_out_dir(out, resume)
    saved = _check_resumable(cfg, out) if resume else None
    if dataset is None:
        dataset = load_dataset(cfg.data.dataset, cfg.data.data_dir)
    dataset = dataset.take_train(cfg.data.train_size)
    n_train = len(dataset.x_train)
    require(
        cfg.batch_size <= n_train,
        f"batch_size {cfg.batch_size} exceeds the {n_train} training examples; "
        "lower --batch-size or raise --train-size",
    )
    model = make_model(cfg.model, dataset.image_shape)
    steps_per_epoch = n_train // cfg.batch_size
    tx = make_optimizer(cfg.optim, steps_per_epoch * cfg.epochs)
    keys = make_streams(cfg.seed)

    x_train = jnp.asarray(dataset.x_train)
    y_train = None if dataset.y_train is None else jnp.asarray(dataset.y_train)
    x_test = jnp.asarray(dataset.x_test)
    y_test = None if dataset.y_test is None else jnp.asarray(dataset.y_test)

    params = model.init(keys["init"], x_train[:1].astype(jnp.float32))
    state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))
    checkpoints = RunCheckpoints(out)
    start_epoch = 0
    if resume and checkpoints.latest_epoch() is not None:
        restored = checkpoints.restore(_checkpoint_tree(state, 0, cfg.seed))
        require(
            np.array_equal(restored["root_key"], jax.random.key_data(jax.random.key(cfg.seed))),
            "--resume: the checkpoint was made with another seed; resume with the same --seed",
        )
        state = TrainState(restored["params"], restored["opt_state"], restored["step"])
        start_epoch = int(restored["epoch"])
    if saved is not None:
        _check_epoch_change(saved.epochs, cfg, start_epoch)
    if saved is None or cfg.epochs != saved.epochs:
        with open(os.path.join(out, CONFIG_FILE), "w") as f:
            json.dump(cfg.to_dict(), f, indent=2)

    metrics_path = os.path.join(out, METRICS_FILE)
    history = _read_history(metrics_path, start_epoch)
    _write_history(metrics_path, history)

    train_epoch = make_train_epoch(model, tx, cfg.data.binarize, cfg.batch_size, n_train)
    test_losses = make_loss_per_example(model, cfg.data.binarize)
    eval_key = keys["eval"]

    t0 = time.perf_counter()
    train_epoch = train_epoch.lower(state, keys, x_train, y_train, 0).compile()
    compile_seconds = time.perf_counter() - t0

    bar = _progress(range(start_epoch, cfg.epochs), cfg, progress, start_epoch)
    for epoch in bar:
        t0 = time.perf_counter()
        state, train_metrics = train_epoch(state, keys, x_train, y_train, epoch)
        train_metrics = jax.device_get(train_metrics)
        epoch_seconds = time.perf_counter() - t0
        test = mean_metrics(*test_losses(state.params, x_test, y_test, eval_key, state.step))
        row = {
            "epoch": epoch + 1,
            "step": int(state.step),
            **{f"train_{k}": float(v) for k, v in train_metrics.items()},
            **{f"test_{k}": v for k, v in test.items()},
            "epoch_seconds": epoch_seconds,
            "step_ms": 1000 * epoch_seconds / steps_per_epoch,
        }
        if epoch == start_epoch:
            row["compile_seconds"] = compile_seconds
        history.append(row)
        _write_history(metrics_path, history)
        periodic = (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs
        checkpoints.save(
            epoch + 1, _checkpoint_tree(state, epoch + 1, cfg.seed), test["loss"], periodic
        )
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(train=f"{row['train_loss']:.2f}", test=f"{test['loss']:.2f}")
    checkpoints.close()
    return FitResult(model, state.params, history, out, dataset)


def _checkpoint_tree(state: TrainState, epoch: int, seed: int) -> dict:
    """What a checkpoint holds: the train state, the epoch reached and the root key
    (every stream, data order and per-step key derives from it)."""
    return {
        "params": state.params,
        "opt_state": state.opt_state,
        "step": state.step,
        "epoch": np.asarray(epoch, np.int64),
        "root_key": np.asarray(jax.random.key_data(jax.random.key(seed))),
    }


def _progress(epochs, cfg: RunConfig, enabled: bool, start: int):
    if not enabled:
        return epochs
    from tqdm.auto import tqdm

    return tqdm(
        epochs,
        total=cfg.epochs,
        initial=start,
        desc=f"{cfg.model.name} on {cfg.data.dataset}",
        unit="epoch",
        dynamic_ncols=True,
    )
