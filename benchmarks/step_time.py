"""Training-step speed of every registered model, with same-run baselines.

For each model, backbone (mlp, conv) and batch size it measures the project's training
step two ways, each after compilation:
- `step_ms_scan`: inside the epoch's `lax.scan` (aevae_jax.train.step.make_train_epoch, how
  `aevae train` runs);
- `step_ms_jit`: as one jitted call per step (aevae_jax.train.step.make_train_step, jitted
  with the state donated), as a user's own loop would call it;
and beside them, in the same process and interleaved round by round (so that every
side sees the same machine load):
- `minimal_jax_step_ms`: a minimal hand-written Flax/Optax VAE step with no project code
  (benchmarks/minimal_jax.py), one jitted call per step, for the VAE. It is what a user
  would write from the documentation: `jax.random.bernoulli` (32 random bits per pixel),
  `flax.linen.Conv` (XLA's convolutions), no metrics beyond the loss;
- `torch_step_ms`: PyTorch eager, the same architecture and work (benchmarks/
  torch_baselines.py), for the AE and the VAE, where torch is installed (on the GPU when
  torch sees one).
Every side gathers its batch from the uint8 training images on the device, scales and
binarizes it (a fresh Bernoulli draw per step) and takes an Adam step. Ratios are
medians of per-round ratios: `torch_ratio` = PyTorch time / ours, `minimal_jax_ratio` =
minimal JAX / ours (above 1: ours is faster), both against the scan step, how `aevae
train` runs; `*_ratio_vs_jit` compare with our per-step jitted call instead.

Also per record: compile time of the epoch (`compile_s`); XLA's FLOP count of one step
(`gflops_per_step`, from its cost analysis), the FLOP/s achieved inside the scan and
its percentage of the machine's f32 matmul speed measured at the start of the same run
(`peak_gflops`, `pct_of_peak`); XLA's estimate of one step's memory (`peak_mem_mb`:
arguments + outputs + temporaries, less donated buffers); for the MLP VAE, a hand count
of its FLOPs (`hand_gflops_per_step`) beside XLA's.

Run it
------
    python benchmarks/step_time.py --quick         # VAE, mlp and conv, batch 128: minutes
    python benchmarks/step_time.py                 # every model x backbone x 64/128/512
    python benchmarks/step_time.py --dataset data/fashion_mnist.npz   # without tfds

It prints a markdown table and writes the records to --out (a JSON list) and the table,
with the command and the machine, beside it (.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from minimal_jax import make_minimal_vae_step
from torch_baselines import import_torch, make_torch_step

from aevae_jax.config import DataConfig, ModelConfig, RunConfig
from aevae_jax.data.sources import load_dataset
from aevae_jax.data.spec import DataSpec
from aevae_jax.errors import UserError
from aevae_jax.models import make_model, model_names
from aevae_jax.nn.conv import resolve_impl
from aevae_jax.study.timing import (
    compiled_stats,
    interleaved_rounds,
    matmul_peak_gflops,
    paired_ratio,
)
from aevae_jax.train.fit import prepare_config
from aevae_jax.train.stages import main_stage_start
from aevae_jax.train.step import make_train_epoch, make_train_step

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "step_time.json")
HIDDEN, LATENT, CHANNELS = (400,), 20, (32, 64)
COLUMNS = [
    ("model", "model", "{}"),
    ("backbone", "backbone", "{}"),
    ("batch_size", "batch", "{}"),
    ("step_ms_scan", "scan ms", "{:.2f}"),
    ("step_ms_jit", "jit ms", "{:.2f}"),
    ("compile_s", "compile s", "{:.1f}"),
    ("images_per_s", "images/s", "{:,.0f}"),
    ("gflops_per_step", "GFLOP/step", "{:.3f}"),
    ("hand_gflops_per_step", "hand count", "{:.3f}"),
    ("pct_of_peak", "% of matmul peak", "{:.0f}"),
    ("torch_step_ms", "PyTorch ms", "{:.2f}"),
    ("torch_ratio", "PyTorch / ours", "{:.2f}x"),
    ("minimal_jax_step_ms", "minimal JAX ms", "{:.2f}"),
    ("minimal_jax_ratio", "minimal JAX / ours", "{:.2f}x"),
    ("peak_mem_mb", "memory MB", "{:.0f}"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the VAE on mlp and conv at batch 128")
    p.add_argument("--models", default=None, help="comma-separated (default: every model)")
    p.add_argument("--backbones", default="mlp,conv")
    p.add_argument("--batch-sizes", default="64,128,512")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    p.add_argument("--steps", type=int, default=20, help="steps per side per round (20)")
    p.add_argument("--dataset", default="fashion_mnist", help="tfds name or .npz path")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON records (and a .md table beside)")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.backbones, args.batch_sizes = "vae", "mlp,conv", "128"
    args.models = args.models.split(",") if args.models else list(model_names())
    args.backbones = args.backbones.split(",")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    return args


def hand_flops_mlp_vae(batch: int, dims: int, hidden: int, latent: int) -> float:
    """Matmul FLOPs of one step of the MLP VAE with one hidden layer (dims-hidden-2*latent,
    latent-hidden-dims): the forward products, the same again for the weight gradients,
    and again for the input gradients of every layer but the first (its input is data)."""
    forward = 2 * batch * (dims * hidden + hidden * 2 * latent + latent * hidden + hidden * dims)
    return 3 * forward - 2 * batch * dims * hidden


def project_runners(name, backbone, batch, x_train, y_train, steps):
    """The scan and per-step jit runners of a registered model ({name: (run, steps)}),
    and its compile time and XLA's counts for one step."""
    cfg = prepare_config(
        RunConfig(
            data=DataConfig(dataset="bench"),
            model=ModelConfig(
                name=name,
                backbone=backbone,
                hidden=HIDDEN,
                latent_dim=LATENT,
                conv_channels=CHANNELS,
            ),
            batch_size=batch,
        )
    )
    spec_classes = None if y_train is None else int(y_train.max()) + 1
    model = make_model(cfg.model, DataSpec("bench", x_train.shape[1:], spec_classes))
    n = steps * batch
    x = jnp.asarray(x_train[:n])  # on the device once, as `aevae train` keeps it
    y = None if y_train is None else jnp.asarray(y_train[:n])
    plan, keys, state = main_stage_start(model, cfg, steps, x, y)
    epoch = make_train_epoch(plan.loss, plan.tx, cfg.data.binarize, batch, n)
    step = jax.jit(make_train_step(plan.loss, plan.tx, cfg.data.binarize), donate_argnums=(0,))
    rows = batch_indices(n, batch)
    stats = compiled_stats(step, state, keys, x, y, rows[0])
    stats["compile_s"] = compiled_stats(epoch, state, keys, x, y, 0)["compile_s"]
    box = {"epoch": 0}
    box["scan"], _ = epoch(state, keys, x, y, 0)  # warm up
    box["jit"], _ = step(jax.tree.map(jnp.copy, box["scan"]), keys, x, y, rows[0])
    jax.block_until_ready(box)

    def run_scan():
        box["epoch"] += 1
        box["scan"], metrics = epoch(box["scan"], keys, x, y, box["epoch"])
        jax.block_until_ready((box["scan"], metrics))

    def run_jit():
        state = box["jit"]
        for idx in rows:
            state, _ = step(state, keys, x, y, idx)
        box["jit"] = jax.block_until_ready(state)

    return {"scan": (run_scan, steps), "jit": (run_jit, steps)}, stats


def batch_indices(n, batch):
    """One epoch's batches of example indices, each its own device array (made before
    any timing, so that no side pays for slicing)."""
    order = jax.random.permutation(jax.random.key(1), n).reshape(n // batch, batch)
    return [jax.block_until_ready(order[i]) for i in range(n // batch)]


def minimal_runner(backbone, batch, x_train, steps):
    step, state = make_minimal_vae_step(
        backbone, x_train.shape[1:], batch, HIDDEN, LATENT, CHANNELS
    )
    images = jnp.asarray(x_train[: steps * batch])
    rows = batch_indices(steps * batch, batch)
    keys = list(jax.random.split(jax.random.key(2), steps))
    box = {"state": jax.block_until_ready(step(state, images, rows[0], keys[0]))}

    def run():
        s = box["state"]
        for idx, key in zip(rows, keys, strict=True):
            s = step(s, images, idx, key)
        box["state"] = jax.block_until_ready(s)

    return run, steps


def torch_runner(torch, name, backbone, batch, x_train, steps):
    step = make_torch_step(
        torch, name, backbone, x_train[: steps * batch], batch, HIDDEN, LATENT, CHANNELS
    )
    if step is None:
        return None
    for _ in range(3):
        step()  # warm up

    def run():
        for _ in range(steps):
            step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return run, steps


def measure(name, backbone, batch, x_train, y_train, args, torch, peak) -> dict:
    steps = args.steps
    runners, stats = project_runners(name, backbone, batch, x_train, y_train, steps)
    if name == "vae":
        runners["minimal_jax"] = minimal_runner(backbone, batch, x_train, steps)
    if torch is not None:
        runner = torch_runner(torch, name, backbone, batch, x_train, steps)
        if runner is not None:
            runners["torch"] = runner
    times = interleaved_rounds(runners, args.rounds)
    scan_ms = statistics.median(times["scan"])
    achieved = stats["flops"] / (scan_ms / 1000) / 1e9
    record = {
        "model": name,
        "backbone": backbone,
        "batch_size": batch,
        "steps_timed": args.rounds * steps,
        "step_ms_scan": scan_ms,
        "step_ms_jit": statistics.median(times["jit"]),
        "compile_s": stats["compile_s"],
        "images_per_s": batch / scan_ms * 1000,
        "gflops_per_step": stats["flops"] / 1e9,
        "hand_gflops_per_step": None,
        "achieved_gflops": achieved,
        "peak_gflops": peak,
        "pct_of_peak": 100 * achieved / peak,
        "peak_mem_mb": None if stats["peak_bytes"] is None else stats["peak_bytes"] / 2**20,
        "device": jax.devices()[0].device_kind,
        "conv_impl": resolve_impl("auto") if backbone == "conv" else None,
    }
    for side in ("torch", "minimal_jax"):
        record[f"{side}_step_ms"] = record[f"{side}_ratio"] = None
        if side in times:
            record[f"{side}_step_ms"] = statistics.median(times[side])
            ratio = paired_ratio(times["scan"], times[side])
            record[f"{side}_ratio"] = ratio["median"]
            record[f"{side}_ratio_iqr"] = [ratio["q1"], ratio["q3"]]
            # The same comparison with our per-step jitted call: one dispatch per step
            # on both sides.
            record[f"{side}_ratio_vs_jit"] = paired_ratio(times["jit"], times[side])["median"]
    if name == "vae" and backbone == "mlp" and len(HIDDEN) == 1:
        dims = int(np.prod(x_train.shape[1:]))
        record["hand_gflops_per_step"] = hand_flops_mlp_vae(batch, dims, HIDDEN[0], LATENT) / 1e9
    return record


def markdown(records) -> str:
    head = "| " + " | ".join(c[1] for c in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = []
    for r in records:
        cells = [("-" if r.get(k) is None else fmt.format(r[k])) for k, _, fmt in COLUMNS]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "loadavg": os.getloadavg(),
    }


def main(argv=None):
    args = parse_args(argv)
    torch = None if args.no_torch else import_torch()
    ds = load_dataset(args.dataset)
    x_train, y_train = ds.x_train, ds.y_train
    print(
        f"device: {jax.devices()[0].device_kind}; torch: {torch.__version__ if torch else 'absent'}"
    )
    peak = matmul_peak_gflops()
    print(f"f32 matmul peak measured now: {peak:.1f} GFLOP/s")
    records = []
    for backbone in args.backbones:
        for batch in args.batch_sizes:
            for name in args.models:
                t0 = time.perf_counter()
                try:
                    record = measure(name, backbone, batch, x_train, y_train, args, torch, peak)
                except UserError as e:  # a model that cannot run this configuration
                    print(f"{name}/{backbone}/{batch}: skipped ({type(e).__name__}: {e})")
                    continue
                records.append(record)
                print(
                    f"{name:10s} {backbone:4s} {batch:4d}: scan {record['step_ms_scan']:.2f} ms, "
                    f"jit {record['step_ms_jit']:.2f} ms, {record['pct_of_peak']:.0f}% of peak, "
                    f"torch ratio {record['torch_ratio'] or float('nan'):.2f}, "
                    f"minimal JAX ratio {record['minimal_jax_ratio'] or float('nan'):.2f} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    table = markdown(records)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(records, f, indent=1)
    meta = json.dumps({"command": " ".join(sys.argv), **machine()})
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(f"Run: `{meta}`\n\n{table}\n")
    return records


if __name__ == "__main__":
    main()
