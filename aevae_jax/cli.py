"""The `aevae` command line.

`aevae train` trains one model; every option maps onto a field of RunConfig (see
config.py), and defaults reproduce the pytorch/examples VAE setup (MLP 784-400-20,
ReLU, Adam 1e-3, batch 128, dynamic binarization, 10 epochs). A user mistake ends
with one line on stderr, naming the remedy, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from aevae_jax.config import (
    BACKBONES,
    BINARIZE_MODES,
    INITS,
    OPTIMIZERS,
    SCHEDULES,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
)
from aevae_jax.errors import UserError

# The main job's budget: 30 epochs of AE and VAE on Fashion-MNIST stay well inside
# 10 minutes on a 2-core CPU (README has the measured time).
COMPARE_EPOCHS = 30


def _sizes(values: list[str]) -> tuple[int, ...]:
    """`--hidden 512 256` or `--hidden 512,256` -> (512, 256)."""
    try:
        return tuple(int(v) for item in values for v in item.split(",") if v)
    except ValueError:
        raise UserError(f"--hidden takes integers, e.g. --hidden 512 256; got {values}") from None


def add_train_options(
    p: argparse.ArgumentParser, out_default: str, epochs_default: int | None = None
) -> None:
    d, m, o, r = DataConfig(), ModelConfig(), OptimConfig(), RunConfig()
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default=d.dataset,
        help="tfds name (fashion_mnist, mnist, binarized_mnist, kmnist, cifar10) "
        "or a path to an .npz with x_train, x_test [, y_train, y_test] "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--binarize",
        choices=BINARIZE_MODES,
        default=d.binarize,
        help="dynamic: fresh Bernoulli draw every step; static: one fixed draw; "
        "none: grey levels (default: %(default)s)",
    )
    g.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="use only the first N training examples (default: all)",
    )
    g.add_argument(
        "--data-dir",
        default=None,
        help="tfds data directory (default: tfds' own, ~/tensorflow_datasets)",
    )
    g = p.add_argument_group("model")
    g.add_argument("--backbone", choices=BACKBONES, default=m.backbone, help="default: %(default)s")
    g.add_argument(
        "--hidden",
        nargs="+",
        default=[str(h) for h in m.hidden],
        help="hidden layer sizes from the input inwards, e.g. 512 256 (default: %(default)s)",
    )
    g.add_argument("--latent-dim", type=int, default=m.latent_dim, help="default: %(default)s")
    g.add_argument("--activation", default=m.activation, help="default: %(default)s")
    g.add_argument(
        "--init",
        choices=INITS,
        default=m.init,
        help="layer initialisation: Flax's defaults (lecun) or PyTorch's (torch) "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--likelihood",
        default=None,
        help="bernoulli, gaussian or mse (default: the model's own; AE: mse, VAE: bernoulli)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=o.optimizer, help="default: %(default)s"
    )
    g.add_argument("--lr", type=float, default=o.lr, help="learning rate (default: %(default)s)")
    g.add_argument("--schedule", choices=SCHEDULES, default=o.schedule, help="default: %(default)s")
    g.add_argument(
        "--warmup-steps",
        type=int,
        default=o.warmup_steps,
        help="for warmup_cosine (default: %(default)s)",
    )
    g.add_argument(
        "--weight-decay",
        type=float,
        default=o.weight_decay,
        help="decoupled weight decay, for adamw (default: %(default)s)",
    )
    g.add_argument(
        "--grad-clip",
        type=float,
        default=None,
        help="clip gradients to this global norm (default: no clipping)",
    )
    g.add_argument(
        "--epochs", type=int, default=epochs_default or r.epochs, help="default: %(default)s"
    )
    g.add_argument("--batch-size", type=int, default=r.batch_size, help="default: %(default)s")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=r.seed, help="default: %(default)s")
    g.add_argument("--out", default=out_default, help="output directory (default: %(default)s)")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=r.checkpoint_every,
        help="save a periodic checkpoint every N epochs (default: %(default)s)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def run_config_from_args(args: argparse.Namespace, model: str) -> RunConfig:
    return RunConfig(
        data=DataConfig(args.dataset, args.binarize, args.train_size, args.data_dir),
        model=ModelConfig(
            name=model,
            backbone=args.backbone,
            hidden=_sizes(args.hidden),
            latent_dim=args.latent_dim,
            activation=args.activation,
            likelihood=args.likelihood,
            init=args.init,
        ),
        optim=OptimConfig(
            optimizer=args.optimizer,
            lr=args.lr,
            schedule=args.schedule,
            warmup_steps=args.warmup_steps,
            grad_clip=args.grad_clip,
            weight_decay=args.weight_decay,
        ),
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        out=args.out,
        checkpoint_every=args.checkpoint_every,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from aevae_jax.models import make_model, model_names
    from aevae_jax.train import fit

    cfg = run_config_from_args(args, args.model)
    if args.model not in model_names():
        make_model(cfg.model, (28, 28, 1))  # raises the unknown-model error before data loads
    result = fit(cfg, resume=args.resume, progress=not args.quiet)
    if not result.history:
        print(f"nothing to train: {cfg.out} is complete and its metrics.jsonl is missing")
        return 0
    last = result.history[-1]
    print(
        f"{cfg.model.name} on {cfg.data.dataset}: epoch {last['epoch']}, "
        f"train loss {last['train_loss']:.3f}, test loss {last['test_loss']:.3f} nats/image, "
        f"{last['step_ms']:.2f} ms/step -> {os.path.abspath(cfg.out)}"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from aevae_jax.compare import run_compare

    cfg = run_config_from_args(args, "vae")
    command = "aevae compare " + " ".join(sys.argv[2:]) if args.argv is None else args.argv
    metrics = run_compare(
        cfg, iwae_k=args.iwae_k, resume=args.resume, quiet=args.quiet, command=command.strip()
    )
    ae, vae = metrics["models"]["ae"], metrics["models"]["vae"]
    print(
        f"AE  test MSE {ae['test_mse']:.2f}, prior-sample FD {ae.get('prior_sample_fd', 'n/a')}\n"
        f"VAE test MSE {vae['test_mse']:.2f}, -ELBO {vae['test_neg_elbo']:.2f}, "
        f"IWAE NLL {vae['test_nll_iwae']:.2f} (K={vae['iwae_k']}), "
        f"prior-sample FD {vae.get('prior_sample_fd', 'n/a')}\n"
        f"report: {os.path.join(os.path.abspath(cfg.out), 'report.md')}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    import jax

    from aevae_jax.classifier import load_or_train_classifier
    from aevae_jax.data import load_dataset
    from aevae_jax.errors import require
    from aevae_jax.evaluate import evaluate_model
    from aevae_jax.runs import load_run

    require(args.iwae_k > 0, f"--iwae-k must be a positive integer, got {args.iwae_k}")
    if args.json:  # fail now, not after minutes of evaluation
        parent = os.path.dirname(os.path.abspath(args.json))
        require(
            os.path.isdir(parent) and os.access(parent, os.W_OK),
            f"cannot write --json {args.json!r}: {parent} is not a writable directory",
        )
    run = load_run(args.run, args.checkpoint)
    full = load_dataset(run.cfg.data.dataset, run.cfg.data.data_dir)
    classifier = None if args.no_fd else load_or_train_classifier(full)
    metrics = evaluate_model(
        run.model,
        run.params,
        run.dataset,
        run.cfg.data.binarize,
        jax.random.fold_in(jax.random.key(run.cfg.seed), 1000),
        iwae_k=args.iwae_k,
        classifier=classifier,
    )
    result = {
        "run": os.path.abspath(args.run),
        "model": run.model.name,
        "checkpoint": run.which,
        "epoch": run.epoch,
        **metrics,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from aevae_jax.errors import require
    from aevae_jax.evaluate import TRAIN_SPLIT, encode_split, eval_inputs
    from aevae_jax.report import image_grid
    from aevae_jax.runs import load_run
    from aevae_jax.samplers import decode_samples, expost_gaussian, prior_images

    require(args.n > 0, f"--n must be a positive integer, got {args.n}")
    require(args.out.endswith(".png"), f"--out must name a .png file, got {args.out!r}")
    parent = os.path.dirname(os.path.abspath(args.out))
    require(
        os.path.isdir(parent) and os.access(parent, os.W_OK),
        f"cannot write {args.out!r}: {parent} is not a writable directory",
    )
    run = load_run(args.run, args.checkpoint)
    key = jax.random.key(args.seed)
    if args.sampler == "prior":
        images = prior_images(run.model, run.params, key, args.n)
    else:
        x = eval_inputs(jnp.asarray(run.dataset.x_train), run.cfg.data.binarize, TRAIN_SPLIT)
        codes = encode_split(run.model, run.params, x).mean
        images = decode_samples(run.model, run.params, expost_gaussian(codes), key, args.n)
    image_grid(
        args.out,
        np.asarray(images),
        f"{run.model.name}: {args.n} samples ({args.sampler}), seed {args.seed}",
    )
    print(os.path.abspath(args.out))
    return 0


def add_run_options(p: argparse.ArgumentParser) -> None:
    """--run and --checkpoint: which trained run, and which of its checkpoints."""
    p.add_argument("--run", required=True, help="the --out directory of an `aevae train` run")
    p.add_argument(
        "--checkpoint",
        choices=("best", "latest"),
        default="best",
        help="the lowest-test-loss checkpoint, or the last one (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aevae",
        description="Autoencoders vs variational autoencoders in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "train",
        help="train one model",
        description="Train one model; writes config.json, metrics.jsonl and orbax "
        "checkpoints (latest and best) into --out.",
    )
    p.add_argument("--model", default="vae", help="registered model name (default: %(default)s)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    add_train_options(p, out_default="runs/train")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "compare",
        help="the main job: train an AE and a VAE alike, evaluate both, write a report",
        description="Train an AE and a VAE with the same backbone, latent size, data and "
        "budget; evaluate both; write metrics.json, report.md and PNG figures into --out. "
        "The AE always trains on MSE; --likelihood sets the VAE's.",
    )
    p.add_argument(
        "--iwae-k",
        type=int,
        default=1000,
        help="importance samples for the VAE log-likelihood (5000 for the paper "
        "protocol; default: %(default)s)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs already in --out (finished ones are not retrained)",
    )
    add_train_options(p, out_default="runs/compare", epochs_default=COMPARE_EPOCHS)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "evaluate",
        help="test metrics of a trained run",
        description="Test-split metrics of a run's best (or latest) checkpoint, in the "
        "metrics.json vocabulary.",
    )
    add_run_options(p)
    p.add_argument("--iwae-k", type=int, default=1000, help="default: %(default)s")
    p.add_argument("--json", default=None, help="also write the metrics to this file")
    p.add_argument(
        "--no-fd", action="store_true", help="skip the sample Frechet distance (and its classifier)"
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "sample",
        help="a PNG grid of new images from a trained run",
        description="Decode sampled codes of a trained run into a PNG grid: the model's "
        "prior (N(0, I) for every model here), or a Gaussian fitted to its training codes.",
    )
    add_run_options(p)
    p.add_argument("--n", type=int, default=64, help="number of images (default: %(default)s)")
    p.add_argument("--out", required=True, help="the PNG file to write")
    p.add_argument(
        "--sampler", choices=("prior", "expost"), default="prior", help="default: %(default)s"
    )
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else "aevae " + " ".join(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"aevae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aevae: interrupted; resume with the same command and --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
