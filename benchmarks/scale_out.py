"""Scaling numbers for docs/scaling.md: seeds trained together, and bfloat16.

Seeds: the MLP VAE's epoch program (`aevae_jax.train.step.make_train_epoch`, what `fit` and
`fit_seeds` run) for S seeds in (1, 4, 16) at batch sizes (128, 1024). One seed is the
single-run program; S > 1 is the vmapped one over stacked states and keys. Per cell:
the ms per step of the program, the ms per seed-step, and the ratio of the S-seed step
to the one-seed step (S would be no better than S runs in a row; 1 would be free).
Beside it, a minimal hand-written Flax/Optax step vmapped over S seeds
(benchmarks/minimal_jax.py), the reference that the issue quotes for an H100.

Precision: the VAE's step in float32 and in bfloat16 (`--dtype`), mlp and conv at
batch 128, interleaved round by round, with the per-round ratio.

Every side of a comparison runs in the same rounds, in rotating order; each number is a
median over rounds. Writes a JSON list of records and a markdown table beside it.

    python benchmarks/scale_out.py [--quick] [--out benchmarks/results/scale_out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from minimal_jax import make_minimal_vae_step

from aevae_jax.config import DataConfig, ModelConfig, RunConfig
from aevae_jax.data.sources import load_dataset
from aevae_jax.models import make_model
from aevae_jax.study.timing import interleaved_rounds, paired_ratio
from aevae_jax.train.stages import main_stage_start
from aevae_jax.train.step import make_train_epoch, stack_trees

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "scale_out.json")
HIDDEN, LATENT = (400,), 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="seeds 1,4 at batch 128; mlp precision")
    p.add_argument("--seeds", default="1,4,16")
    p.add_argument("--batch-sizes", default="128,1024")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="steps per side per round")
    p.add_argument("--dataset", default="fashion_mnist", help="tfds name or .npz path")
    p.add_argument("--backbones", default="mlp,conv", help="of the precision comparison")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.batch_sizes, args.rounds, args.steps = "1,4", "128", 3, 5
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.backbones = ["mlp"] if args.quick else args.backbones.split(",")
    return args


def vae_config(batch: int, backbone: str = "mlp", dtype: str = "float32") -> RunConfig:
    model = ModelConfig(name="vae", backbone=backbone, hidden=HIDDEN, latent_dim=LATENT,
                        dtype=dtype)  # fmt: skip
    return RunConfig(data=DataConfig(dataset="bench"), model=model, batch_size=batch)


def project_runner(cfg: RunConfig, seeds: int, x, spec, steps: int):
    """(run, steps): `steps` steps of the project's epoch program for `seeds` seeds."""
    model = make_model(cfg.model, spec)
    starts = [
        main_stage_start(model, dataclasses.replace(cfg, seed=s), steps, x, None)
        for s in range(seeds)
    ]
    plan = starts[0][0]
    n = steps * cfg.batch_size
    epoch = make_train_epoch(
        plan.loss, plan.tx, cfg.data.binarize, cfg.batch_size, n, seeds=seeds > 1
    )
    if seeds > 1:
        state = stack_trees([s[2] for s in starts])
        keys = stack_trees([s[1] for s in starts])
    else:
        state, keys = starts[0][2], starts[0][1]
    box = {"state": epoch(state, keys, x, None, 0)[0], "epoch": 0}  # compile, warm up
    jax.block_until_ready(box["state"])

    def run():
        box["epoch"] += 1
        box["state"], metrics = epoch(box["state"], keys, x, None, box["epoch"])
        jax.block_until_ready((box["state"], metrics))

    return run, steps


def minimal_runner(batch: int, seeds: int, x, spec, steps: int):
    """(run, steps): the minimal hand-written step, vmapped over `seeds` seeds, looped
    `steps` times inside one jit (as the project scans its steps)."""
    step, state = make_minimal_vae_step("mlp", spec.image_shape, batch, HIDDEN, LATENT, ())
    raw = step.__wrapped__ if hasattr(step, "__wrapped__") else step
    many = jax.vmap(raw, in_axes=(0, None, None, 0)) if seeds > 1 else raw
    state = jax.tree.map(lambda a: jnp.stack([a] * seeds), state) if seeds > 1 else state
    idx = jnp.arange(steps * batch).reshape(steps, batch) % len(x)

    @jax.jit
    def loop(state, key):
        def body(state, i):
            keys = jax.random.split(jax.random.fold_in(key, i), seeds)
            return many(state, x, idx[i], keys if seeds > 1 else keys[0]), None

        return jax.lax.scan(body, state, jnp.arange(steps))[0]

    box = {"state": loop(state, jax.random.key(0)), "i": 0}
    jax.block_until_ready(box["state"])

    def run():
        box["i"] += 1
        box["state"] = jax.block_until_ready(loop(box["state"], jax.random.key(box["i"])))

    return run, steps


def seed_records(args, x, spec) -> list[dict]:
    records = []
    for batch in args.batch_sizes:
        runners = {}
        for s in args.seeds:
            runners[("ours", s)] = project_runner(vae_config(batch), s, x, spec, args.steps)
            runners[("minimal", s)] = minimal_runner(batch, s, x, spec, args.steps)
        times = interleaved_rounds(runners, args.rounds)
        for side in ("ours", "minimal"):
            one = times[(side, 1)]
            for s in args.seeds:
                ms = times[(side, s)]
                records.append({
                    "kind": "seeds", "program": side, "batch_size": batch, "seeds": s,
                    "step_ms": statistics.median(ms), "seed_step_ms": statistics.median(ms) / s,
                    "ratio_to_one_seed": paired_ratio(one, ms)["median"],
                })  # fmt: skip
                print(json.dumps(records[-1]), flush=True)
    return records


def precision_records(args, x, spec) -> list[dict]:
    records = []
    for backbone in args.backbones:
        runners = {
            dtype: project_runner(vae_config(128, backbone, dtype), 1, x, spec, args.steps)
            for dtype in ("float32", "bfloat16")
        }
        times = interleaved_rounds(runners, args.rounds)
        ratio = paired_ratio(times["float32"], times["bfloat16"])
        records.append({
            "kind": "precision", "backbone": backbone, "batch_size": 128,
            "float32_step_ms": statistics.median(times["float32"]),
            "bfloat16_step_ms": statistics.median(times["bfloat16"]),
            "bfloat16_over_float32": ratio["median"], "iqr": [ratio["q1"], ratio["q3"]],
        })  # fmt: skip
        print(json.dumps(records[-1]), flush=True)
    return records


def markdown(records: list[dict], device: str, seconds: float) -> str:
    lines = [
        f"# Scaling out, measured on {device} ({seconds:.0f} s)",
        "",
        "## Seeds trained together (MLP VAE, one vmapped program)",
        "",
        "| program | batch | seeds | ms per step | ms per seed-step | step / one seed's |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        if r["kind"] == "seeds":
            lines.append(
                f"| {r['program']} | {r['batch_size']} | {r['seeds']} | {r['step_ms']:.2f} | "
                f"{r['seed_step_ms']:.2f} | {r['ratio_to_one_seed']:.2f}x |"
            )
    lines += ["", "## bfloat16 against float32 (VAE, batch 128)", "",
              "| backbone | float32 ms | bfloat16 ms | bfloat16 / float32 (IQR) |",
              "|---|---|---|---|"]  # fmt: skip
    for r in records:
        if r["kind"] == "precision":
            lines.append(
                f"| {r['backbone']} | {r['float32_step_ms']:.2f} | {r['bfloat16_step_ms']:.2f} "
                f"| {r['bfloat16_over_float32']:.2f}x ({r['iqr'][0]:.2f}-{r['iqr'][1]:.2f}) |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    data = load_dataset(args.dataset)
    need = max(args.batch_sizes) * args.steps
    x = jnp.asarray(np.resize(data.x_train, (need, *data.x_train.shape[1:])))
    device = f"{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}"
    records = seed_records(args, x, data.spec) + precision_records(args, x, data.spec)
    for r in records:
        r["device"] = device
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(records, f, indent=2)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(markdown(records, device, time.perf_counter() - t0))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
