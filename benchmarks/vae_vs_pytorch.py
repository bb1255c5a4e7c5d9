"""Our JAX VAE against a plain PyTorch VAE: same machine, same process, same data.

What it measures
----------------
Both sides train the pytorch/examples VAE setup on Fashion-MNIST:

- MLP 784-400-20: encoder 784 -> 400 ReLU -> two heads of 20 (mean, log-variance);
  decoder 20 -> 400 ReLU -> 784 logits.
- Adam, lr 1e-3, batch 128, dynamic binarization (a fresh Bernoulli draw of the grey
  levels every step).
- Loss: Bernoulli NLL summed over pixels (BCE with logits, sum) + analytic KL summed
  over latent dimensions, mean over the batch.
- Each epoch a fresh random permutation and floor(N / 128) full batches (the
  remainder is dropped), as in `aevae_jax.train.fit`.

The data is loaded once with `aevae_jax.data.sources.load_dataset` and the same uint8 arrays
go to both sides. The JAX side is `aevae_jax.train.fit.fit` (one compiled `lax.scan` per
epoch). The PyTorch side is written plainly, with PyTorch's own default Linear init
(it differs from Flax's): it is what a user would otherwise run.

Reported, per side:
- the test loss after the last epoch: the single-sample negative ELBO (nats per
  image) on the whole test split, binarized once with a fixed key / Generator;
- ms per training step: JAX, the median over epochs (first epoch excluded) of epoch
  time / steps; PyTorch, the same per-epoch figure plus the median of individual
  step times after a warm-up (the first steps of the first epoch excluded);
- the ratio torch / JAX of the per-epoch figures.

The test loss is evaluated outside the timed epochs on both sides. With --epochs 1
there is no later epoch to take the median over, so that one epoch is used (and the
JSON says so).

Run it
------
    pip install torch==2.13.0          # the optional CPU baseline (extra "torch")
    python benchmarks/vae_vs_pytorch.py                    # 10 epochs, 60k / 10k
    python benchmarks/vae_vs_pytorch.py --epochs 1 --train-size 2048   # a quick check
    python benchmarks/vae_vs_pytorch.py --jax-init torch   # both sides with PyTorch's init

It prints a small table and writes every number, the machine, the versions and the
command line to --json (default benchmarks/results/vae_vs_pytorch.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time

import numpy as np

MISSING_TORCH = "install the optional PyTorch baseline: pip install torch==2.13.0"
DEFAULT_JSON = os.path.join(os.path.dirname(__file__), "results", "vae_vs_pytorch.json")

IMAGE_DIM = 28 * 28
HIDDEN = 400
LATENT = 20
LR = 1e-3
BATCH_SIZE = 128
TORCH_EVAL_SEED = 1234  # the fixed Generator of the PyTorch test binarization and noise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="use the first N training images (default: all 60000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of both sides (default 0)")
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=10,
        help="PyTorch steps of the first epoch left out of the step-time median (default 10)",
    )
    p.add_argument(
        "--jax-init",
        choices=("lecun", "torch"),
        default="lecun",
        help="layer initialisation of the JAX side: Flax's defaults (lecun, the library "
        "default) or PyTorch's (torch), which makes both sides start from the same "
        "distribution (default lecun)",
    )
    p.add_argument("--json", default=DEFAULT_JSON, help="where to write the results")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.train_size is not None and args.train_size < BATCH_SIZE:
        p.error(f"--train-size must be at least the batch size {BATCH_SIZE}")
    return args


def import_torch():
    """torch, or exit 2 with one line naming the install command."""
    try:
        import torch
    except ImportError:
        print(MISSING_TORCH, file=sys.stderr)
        sys.exit(2)
    return torch


def median_excluding_first(values: list[float]) -> tuple[float, int]:
    """Median of values[1:] (of values when there is only one); and how many were used."""
    used = values[1:] if len(values) > 1 else values
    return statistics.median(used), len(used)


def history_summary(history: list[dict]) -> dict:
    """What both sides report from their per-epoch history: the last test loss and its
    terms, and the median ms/step over epochs (first epoch excluded)."""
    step_ms, epochs_used = median_excluding_first([row["step_ms"] for row in history])
    return {
        "test_loss": history[-1]["test_loss"],
        "test_recon": history[-1]["test_recon"],
        "test_kl": history[-1]["test_kl"],
        "step_ms_epoch_median": step_ms,
        "epochs_in_median": epochs_used,
    }


# ----------------------------------------------------------------------------- JAX


def run_jax(dataset, args: argparse.Namespace) -> dict:
    """Train with `aevae_jax.train.fit.fit` and return its test loss and timings."""
    from aevae_jax.config import DataConfig, ModelConfig, OptimConfig, RunConfig
    from aevae_jax.train.fit import fit

    with tempfile.TemporaryDirectory(prefix="vae_vs_pytorch_") as tmp:
        cfg = RunConfig(
            data=DataConfig("fashion_mnist", binarize="dynamic", train_size=args.train_size),
            model=ModelConfig(
                name="vae",
                backbone="mlp",
                hidden=(HIDDEN,),
                latent_dim=LATENT,
                activation="relu",
                likelihood="bernoulli",
                init=args.jax_init,
            ),
            optim=OptimConfig(optimizer="adam", lr=LR, schedule="constant"),
            epochs=args.epochs,
            batch_size=BATCH_SIZE,
            seed=args.seed,
            out=os.path.join(tmp, "run"),
            checkpoint_every=args.epochs,  # checkpoints are outside the timed epochs anyway
        )
        t0 = time.perf_counter()
        result = fit(cfg, dataset=dataset, progress=False)
        wall = time.perf_counter() - t0

    # The VAE's test objective is its single-sample -ELBO with the analytic KL, the
    # quantity the PyTorch side reports; its terms are the reconstruction and the KL.
    history = [
        {
            **row,
            "test_loss": row["test_objective"],
            "test_recon": row["test_terms"]["recon"],
            "test_kl": row["test_terms"]["kl"],
        }
        for row in result.history
    ]
    return {
        **history_summary(history),
        "compile_seconds": history[0]["compile_seconds"],
        "wall_seconds": wall,
        "steps_per_epoch": history[0]["step"],
        "history": history,
    }


# ----------------------------------------------------------------------------- PyTorch


def make_torch_vae(torch):
    """The pytorch/examples VAE layers (fc1, fc21, fc22, fc3, fc4), default init."""
    nn = torch.nn
    return nn.ModuleDict(
        {
            "fc1": nn.Linear(IMAGE_DIM, HIDDEN),
            "fc21": nn.Linear(HIDDEN, LATENT),  # mean
            "fc22": nn.Linear(HIDDEN, LATENT),  # log-variance
            "fc3": nn.Linear(LATENT, HIDDEN),
            "fc4": nn.Linear(HIDDEN, IMAGE_DIM),  # logits
        }
    )


def torch_neg_elbo(torch, vae, x, eps):
    """Per-image negative ELBO [B] and its parts, with the standard-normal noise `eps`."""
    F = torch.nn.functional
    h = F.relu(vae["fc1"](x))
    mean, log_var = vae["fc21"](h), vae["fc22"](h)
    z = mean + torch.exp(0.5 * log_var) * eps
    logits = vae["fc4"](F.relu(vae["fc3"](z)))
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
    kl = 0.5 * (torch.exp(log_var) + mean**2 - 1.0 - log_var).sum(dim=1)
    return recon + kl, recon, kl


def to_unit_float(torch, images: np.ndarray):
    """uint8 images [N, 28, 28, 1] -> float32 tensor [N, 784] in [0, 1]."""
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)


def torch_train_epoch(torch, vae, opt, x_train, step_times: list[float]) -> float:
    """One epoch of full batches in a fresh order; appends each step's seconds to
    `step_times` and returns the epoch's seconds."""
    n = len(x_train)
    steps = n // BATCH_SIZE
    t_epoch = time.perf_counter()
    order = torch.randperm(n)[: steps * BATCH_SIZE].view(steps, BATCH_SIZE)
    for idx in order:
        t0 = time.perf_counter()
        x = torch.bernoulli(x_train[idx])  # dynamic binarization: a fresh draw per step
        eps = torch.randn(BATCH_SIZE, LATENT)
        loss = torch_neg_elbo(torch, vae, x, eps)[0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step_times.append(time.perf_counter() - t0)
    return time.perf_counter() - t_epoch


def torch_test_loss(torch, vae, p_test) -> dict[str, float]:
    """Single-sample negative ELBO per image on the whole test split, binarized once
    (and with noise drawn) from a Generator with a fixed seed."""
    g = torch.Generator().manual_seed(TORCH_EVAL_SEED)
    x = torch.bernoulli(p_test, generator=g)
    eps = torch.randn(len(x), LATENT, generator=g)
    with torch.no_grad():
        loss, recon, kl = torch_neg_elbo(torch, vae, x, eps)
    return {"loss": loss.mean().item(), "recon": recon.mean().item(), "kl": kl.mean().item()}


def run_torch(torch, dataset, args: argparse.Namespace) -> dict:
    """Train the PyTorch VAE on CPU and return its test loss and timings."""
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    train = dataset.take_train(args.train_size)
    x_train = to_unit_float(torch, train.x_train)
    p_test = to_unit_float(torch, dataset.x_test)
    vae = make_torch_vae(torch)
    opt = torch.optim.Adam(vae.parameters(), lr=LR)

    history, step_times = [], []
    steps = len(x_train) // BATCH_SIZE
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        epoch_seconds = torch_train_epoch(torch, vae, opt, x_train, step_times)
        test = torch_test_loss(torch, vae, p_test)
        history.append(
            {
                "epoch": epoch + 1,
                **{f"test_{k}": v for k, v in test.items()},
                "epoch_seconds": epoch_seconds,
                "step_ms": 1000 * epoch_seconds / steps,
            }
        )
    wall = time.perf_counter() - t0

    timed_steps = step_times[args.warmup_steps :] or step_times
    return {
        **history_summary(history),
        "step_ms_step_median": 1000 * statistics.median(timed_steps),
        "steps_in_step_median": len(timed_steps),
        "wall_seconds": wall,
        "steps_per_epoch": steps,
        "threads": torch.get_num_threads(),
        "history": history,
    }


# ----------------------------------------------------------------------------- report


def machine_info(load_before: tuple[float, ...]) -> dict:
    """The machine, with its 1/5/15-minute load averages before and after the runs: on a
    shared machine a load above the core count means the timings were contended."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
    }


def versions(torch) -> dict:
    import flax
    import jax
    import jaxlib
    import optax

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "jax_backend": jax.default_backend(),
        "flax": flax.__version__,
        "optax": optax.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def comparison(jax_res: dict, torch_res: dict) -> dict:
    return {
        "test_loss_diff_torch_minus_jax": torch_res["test_loss"] - jax_res["test_loss"],
        "step_ms_ratio_torch_over_jax": torch_res["step_ms_epoch_median"]
        / jax_res["step_ms_epoch_median"],
    }


def format_table(jax_res: dict, torch_res: dict, cmp: dict, setup: dict) -> str:
    rows = [
        ("", "JAX", "PyTorch"),
        ("test -ELBO (nats)", f"{jax_res['test_loss']:.2f}", f"{torch_res['test_loss']:.2f}"),
        (
            "ms/step (epoch median)",
            f"{jax_res['step_ms_epoch_median']:.3f}",
            f"{torch_res['step_ms_epoch_median']:.3f}",
        ),
        ("ms/step (step median)", "-", f"{torch_res['step_ms_step_median']:.3f}"),
        ("compile (s)", f"{jax_res['compile_seconds']:.2f}", "-"),
    ]
    lines = [
        f"VAE MLP 784-400-20 on Fashion-MNIST: {setup['epochs']} epochs, "
        f"{setup['train_size']} train / {setup['test_size']} test images, batch {BATCH_SIZE}, "
        f"{setup['steps_per_epoch']} steps/epoch",
        *(f"{a:<24}{b:>10}{c:>10}" for a, b, c in rows),
        f"test loss difference (PyTorch - JAX): {cmp['test_loss_diff_torch_minus_jax']:+.2f} nats",
        f"ms/step ratio (PyTorch / JAX): {cmp['step_ms_ratio_torch_over_jax']:.2f}",
    ]
    return "\n".join(lines)


def load_note(machine: dict) -> str:
    before, after = machine["loadavg_before"][0], machine["loadavg_after"][0]
    note = f"1-min load average before / after: {before:.2f} / {after:.2f}"
    note += f" on {machine['cpu_count']} cores"
    if max(before, after) > (machine["cpu_count"] or 1):
        note += " (other processes shared the CPUs: the timings are contended)"
    return note


def write_json(path: str, report: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch = import_torch()  # fail in a second, before loading data or compiling

    from aevae_jax.data.sources import load_dataset
    from aevae_jax.errors import UserError

    try:
        dataset = load_dataset("fashion_mnist")
        n_train = len(dataset.take_train(args.train_size).x_train)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    setup = {
        "dataset": "fashion_mnist",
        "model": f"MLP {IMAGE_DIM}-{HIDDEN}-{LATENT}, ReLU",
        "optimizer": f"Adam lr {LR}",
        "batch_size": BATCH_SIZE,
        "binarization": "dynamic",
        "epochs": args.epochs,
        "train_size": n_train,
        "test_size": len(dataset.x_test),
        "steps_per_epoch": n_train // BATCH_SIZE,
        "seed": args.seed,
        "init": (
            "JAX: Flax Dense defaults (lecun_normal, zero bias)"
            if args.jax_init == "lecun"
            else "JAX: PyTorch's rule (uniform +-1/sqrt(fan_in) kernel and bias)"
        )
        + "; PyTorch: nn.Linear defaults (kaiming_uniform a=sqrt(5), uniform bias)",
    }

    load_before = os.getloadavg()
    print("training the JAX VAE ...", file=sys.stderr, flush=True)
    jax_res = run_jax(dataset, args)
    print("training the PyTorch VAE ...", file=sys.stderr, flush=True)
    torch_res = run_torch(torch, dataset, args)
    cmp = comparison(jax_res, torch_res)

    print(format_table(jax_res, torch_res, cmp, setup))
    report = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "setup": setup,
        "machine": machine_info(load_before),
        "versions": versions(torch),
        "jax": jax_res,
        "torch": torch_res,
        "comparison": cmp,
    }
    print(load_note(report["machine"]))
    write_json(args.json, report)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
