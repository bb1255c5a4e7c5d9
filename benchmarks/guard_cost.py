"""What the non-finite guard costs: the VAE's training step with the guard (every step
checks its loss and its gradient's global norm, and takes the update under `lax.cond`:
what `fit` runs) against the same step without it (`skip_nonfinite=False`), mlp and
conv at batch 128 on Fashion-MNIST.

Both sides run the run's compiled epoch scan (`aevae_jax.train.step.make_train_epoch`) in
the same rounds, in rotating order; each number is a median over rounds, and the ratio
is the median of per-round ratios (with its interquartile range). Writes JSON and a
markdown table.

    python benchmarks/guard_cost.py [--rounds 15] [--steps 40] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp

from aevae_jax.config import ModelConfig, RunConfig
from aevae_jax.data.sources import load_dataset
from aevae_jax.models import make_model
from aevae_jax.study.timing import interleaved_rounds, paired_ratio
from aevae_jax.train.stages import main_stage_start
from aevae_jax.train.step import make_train_epoch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "guard_cost.json")


def runner(backbone: str, guard: bool, x, spec, steps: int):
    """(run, steps): `steps` steps of the VAE's epoch scan per call, blocking."""
    cfg = RunConfig(model=ModelConfig(name="vae", backbone=backbone), batch_size=128)
    model = make_model(cfg.model, spec)
    plan, keys, state = main_stage_start(model, cfg, steps, x, None)
    epoch = make_train_epoch(
        plan.loss, plan.tx, "dynamic", cfg.batch_size, len(x), skip_nonfinite=guard
    )
    box = {"state": jax.block_until_ready(epoch(state, keys, x, None, 0)[0]), "epoch": 0}

    def run():
        box["epoch"] += 1
        box["state"], metrics = epoch(box["state"], keys, x, None, box["epoch"])
        jax.block_until_ready((box["state"], metrics))

    return run, steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=40, help="steps per side per round")
    p.add_argument("--backbones", default="mlp,conv")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    data = load_dataset("fashion_mnist")
    x = jnp.asarray(data.x_train[: args.steps * 128])
    records = []
    for backbone in args.backbones.split(","):
        runners = {g: runner(backbone, g, x, data.spec, args.steps) for g in (False, True)}
        times = interleaved_rounds(runners, args.rounds)
        ratio = paired_ratio(times[False], times[True])
        records.append({
            "backbone": backbone, "batch_size": 128,
            "unguarded_step_ms": statistics.median(times[False]),
            "guarded_step_ms": statistics.median(times[True]),
            "guarded_over_unguarded": ratio["median"], "iqr": [ratio["q1"], ratio["q3"]],
        })  # fmt: skip
        print(json.dumps(records[-1]), flush=True)
    seconds = time.perf_counter() - t0
    device = jax.devices()[0].device_kind
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"device": device, "seconds": seconds, "records": records}, f, indent=2)
    lines = [
        f"# The non-finite guard's cost, measured on {device} ({seconds:.0f} s)",
        "",
        "| backbone | batch | without guard ms | with guard ms | with / without (IQR) |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['backbone']} | {r['batch_size']} | {r['unguarded_step_ms']:.3f} | "
            f"{r['guarded_step_ms']:.3f} | {r['guarded_over_unguarded']:.3f}x "
            f"({r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}) |"
        )
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
