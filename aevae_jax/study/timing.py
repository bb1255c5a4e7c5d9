"""Step times of several models measured against each other, interleaved in one process.

Wall clocks of separate training runs are not comparable on a shared machine (load
changes between runs); here every model's compiled training scan runs in turn, round
after round, so each round's models see the same machine. Reported per model: the
median ms per step over rounds, and per round, so callers can form paired ratios.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp

from aevae_jax.config import RunConfig
from aevae_jax.models import Model
from aevae_jax.progress import progress_bar
from aevae_jax.train.stages import main_stage_start
from aevae_jax.train.step import make_train_epoch


def interleaved_step_times(
    runs: dict[str, tuple[Model, RunConfig]],
    x_train,
    y_train=None,
    rounds: int = 15,
    steps: int = 20,
    progress: bool = False,
) -> dict[str, dict]:
    """{name: {"step_ms": median over rounds, "rounds_ms": [per-round ms per step]}}.

    Each model's main-stage epoch function as training compiles it (gather,
    binarize, update and the non-finite guard inside one `lax.scan`, with the run's
    own optimiser) runs `steps` steps per round (fewer when the training split holds
    fewer batches) on the first training images, after a compile-and-warm-up call;
    the order of models rotates each round.
    """
    bar = progress_bar(
        total=len(runs) * (rounds + 1), desc="step times", unit="run", enabled=progress
    )
    prepared, runners = {}, {}
    for name, (model, cfg) in runs.items():
        steps_per_epoch = len(x_train) // cfg.batch_size
        n = min(steps, steps_per_epoch) * cfg.batch_size
        x, y = jnp.asarray(x_train[:n]), None if y_train is None else jnp.asarray(y_train[:n])
        # The run's own optimiser, keys and initial state.
        plan, keys, state = main_stage_start(model, cfg, steps_per_epoch, x, y)
        epoch = make_train_epoch(
            plan.loss, plan.tx, cfg.data.binarize, cfg.batch_size, n,
            nonfinite_patience=cfg.nonfinite_patience,
        )  # fmt: skip
        state, _ = epoch(state, keys, x, y, 0)  # compile and warm up
        prepared[name] = {"state": jax.block_until_ready(state), "epoch": 0}

        def run(p=prepared[name], epoch=epoch, keys=keys, x=x, y=y):
            p["epoch"] += 1
            p["state"], metrics = epoch(p["state"], keys, x, y, p["epoch"])
            jax.block_until_ready((p["state"], metrics))

        runners[name] = (run, n // cfg.batch_size)
        bar.update()
    times = interleaved_rounds(runners, rounds, bar)
    bar.close()
    return {
        name: {"step_ms": statistics.median(values), "rounds_ms": values}
        for name, values in times.items()
    }


def interleaved_rounds(runners: dict, rounds: int, bar=None) -> dict[str, list[float]]:
    """{name: [ms per step, one per round]} of `runners` {name: (run, steps)}, where
    `run()` does `steps` steps and blocks until they are done. Each round runs every
    runner once, the order rotating by one each round, so that every runner sees the
    machine's load of that round and per-round ratios pair them fairly."""
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run, steps = runners[name]
            t0 = time.perf_counter()
            run()
            times[name].append(1000 * (time.perf_counter() - t0) / steps)
            if bar is not None:
                bar.update()
    return times


def paired_ratio(a_rounds: list[float], b_rounds: list[float]) -> dict[str, float]:
    """Per-round ratios b / a: median and interquartile range."""
    ratios = sorted(b / a for a, b in zip(a_rounds, b_rounds, strict=True))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"median": statistics.median(ratios), "q1": q[0], "q3": q[2]}


def compiled_stats(fn, *args) -> dict:
    """Compile `fn` (a jitted function) for `args` and read XLA's own accounting:
    {"compile_s", "flops" (XLA's cost analysis: every arithmetic operation of one call,
    matmuls as 2 per multiply-add), "peak_bytes" (arguments + outputs + temporaries,
    less donated buffers: XLA's estimate of the call's footprint)}."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    seconds = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    mem = compiled.memory_analysis()
    peak = None
    if mem is not None:
        peak = (
            mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes
        )
    return {"compile_s": seconds, "flops": float(cost.get("flops", 0.0)), "peak_bytes": peak}


def matmul_peak_gflops(sizes=(512, 1024, 2048, 4096), repeats: int = 5) -> float:
    """The machine's f32 matrix-product speed in GFLOP/s, measured now: the best, over
    square sizes, of the median time of a jitted n x n product (2 n^3 FLOPs), each
    measurement long enough (about 0.1 s of calls) that dispatch does not count, on a GPU
    too. f32 products run at JAX's default precision (TF32 on recent NVIDIA GPUs)."""
    best = 0.0
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        product = jax.jit(jnp.matmul)
        jax.block_until_ready(product(a, b))
        t0 = time.perf_counter()
        jax.block_until_ready(product(a, b))
        calls = max(1, min(1000, int(0.1 / max(time.perf_counter() - t0, 1e-6))))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                c = product(a, b)
            jax.block_until_ready(c)
            times.append((time.perf_counter() - t0) / calls)
        best = max(best, 2 * n**3 / statistics.median(times) / 1e9)
    return best
