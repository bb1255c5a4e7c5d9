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
    OPTIMIZERS,
    SCHEDULES,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
)
from aevae_jax.errors import UserError


def _sizes(values: list[str]) -> tuple[int, ...]:
    """`--hidden 512 256` or `--hidden 512,256` -> (512, 256)."""
    try:
        return tuple(int(v) for item in values for v in item.split(",") if v)
    except ValueError:
        raise UserError(f"--hidden takes integers, e.g. --hidden 512 256; got {values}") from None


def add_train_options(p: argparse.ArgumentParser, out_default: str) -> None:
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
        "--grad-clip",
        type=float,
        default=None,
        help="clip gradients to this global norm (default: no clipping)",
    )
    g.add_argument("--epochs", type=int, default=r.epochs, help="default: %(default)s")
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
        ),
        optim=OptimConfig(
            optimizer=args.optimizer,
            lr=args.lr,
            schedule=args.schedule,
            warmup_steps=args.warmup_steps,
            grad_clip=args.grad_clip,
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
    last = result.history[-1]
    print(
        f"{cfg.model.name} on {cfg.data.dataset}: epoch {last['epoch']}, "
        f"train loss {last['train_loss']:.3f}, test loss {last['test_loss']:.3f} nats/image, "
        f"{last['step_ms']:.2f} ms/step -> {os.path.abspath(cfg.out)}"
    )
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
