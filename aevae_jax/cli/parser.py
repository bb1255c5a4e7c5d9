"""The `aevae` argument parser: one short function per command. Training's general
flags come from the config fields' options (flags.add_config_options); the flags here
are the ones that are not config fields."""

from __future__ import annotations

import argparse

from aevae_jax.cli import commands
from aevae_jax.cli.flags import add_config_options, add_model_options
from aevae_jax.config import RUN
from aevae_jax.evaluate.samplers import EXPOST, SAMPLER_NAMES, SamplerOptions

# The main job's budget: 30 epochs of AE and VAE on Fashion-MNIST stay well inside
# 10 minutes on a 2-core CPU (README has the measured time).
COMPARE_EPOCHS = 30
# The zoo's budget: every registered model on Fashion-MNIST in well under half an hour
# on a 2-core CPU (README.md states the measured time).
ZOO_EPOCHS, ZOO_IWAE_K = 10, 100
DEFAULT_MODEL = "vae"  # aevae train
DEFAULT_MODELS = "ae,vae"  # aevae compare, and the article's pair


def build_parser(
    selected: list[str] | None = None, train_defaults: dict | None = None
) -> argparse.ArgumentParser:
    """The parser; `selected` names the models whose own option flags it accepts, and
    `train_defaults` replaces `aevae train`'s defaults (a resumed run's options)."""
    epilog = models_epilog()
    parser = argparse.ArgumentParser(
        prog="aevae",
        description="Autoencoders vs variational autoencoders in JAX.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_import_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train(sub, epilog, selected or [], train_defaults or {})
    add_compare(sub, epilog, selected or [])
    add_zoo(sub, epilog, selected or [])
    add_evaluate(sub)
    add_sample(sub)
    add_report(sub)
    add_models(sub)
    return parser


def command(sub, name: str, func, **kwargs) -> argparse.ArgumentParser:
    """A subcommand that runs `func`; every one takes --import."""
    p = sub.add_parser(name, allow_abbrev=False, **kwargs)
    add_import_option(p)
    p.set_defaults(func=func)
    return p


def add_train(sub, epilog: str, selected: list[str], defaults: dict) -> None:
    p = command(
        sub,
        "train",
        commands.cmd_train,
        help="train one model",
        description="Train one model; writes config.json, metrics.jsonl and orbax "
        "checkpoints (latest and best) into --out. Pass --model NAME with --help to see "
        "that model's own options.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help="registered model name (default: %(default)s)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    add_train_options(p, defaults)
    add_model_options(p, selected)
    p.set_defaults(**defaults)


def add_compare(sub, epilog: str, selected: list[str]) -> None:
    p = command(
        sub,
        "compare",
        commands.cmd_compare,
        help="the main job: train several models alike, evaluate each, write a report",
        description="Train every model of --models with the same backbone, latent size, "
        "data and budget; evaluate each with every metric that applies; write "
        "metrics.json, report.md and PNG figures into --out. Reconstruction models (those "
        "whose default likelihood is mse: ae, dae, sparse_ae, mae, aae) keep their MSE loss; "
        "--likelihood sets the others'.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--models",
        default=DEFAULT_MODELS,
        help="comma-separated registered model names (default: %(default)s)",
    )
    p.add_argument(
        "--pair",
        default=DEFAULT_MODELS,
        help="the two models of the article's table, autoencoder first (default: %(default)s)",
    )
    add_comparison_options(p, iwae_k=1000, timing_rounds=15)
    add_train_options(p, {"out": "runs/compare", "epochs": COMPARE_EPOCHS})
    add_model_options(p, selected)


def add_zoo(sub, epilog: str, selected: list[str]) -> None:
    p = command(
        sub,
        "zoo",
        commands.cmd_zoo,
        help="every registered model under one budget, in one table (zoo.md, zoo.json)",
        description="Train every registered model (or --models) with the same data, "
        "backbone and budget, evaluate each, and write zoo.json, zoo.md and overview.png "
        "(a row of reconstructions and of samples per model) into --out, beside what "
        "`aevae compare` writes. Models that need labels are skipped on unlabelled data.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--models", default=None, help="comma-separated model names (default: every one)"
    )
    add_comparison_options(p, iwae_k=ZOO_IWAE_K, timing_rounds=5)
    add_train_options(p, {"out": "runs/zoo", "epochs": ZOO_EPOCHS})
    add_model_options(p, selected)


def add_evaluate(sub) -> None:
    p = command(
        sub,
        "evaluate",
        commands.cmd_evaluate,
        help="test metrics of a trained run",
        description="Test-split metrics of a run's best (or latest) checkpoint, in the "
        "metrics.json vocabulary. Several runs (seeds): each run's metrics, then their mean "
        "and sample standard deviation.",
    )
    add_run_options(p, several=True)
    p.add_argument("--iwae-k", type=int, default=1000, help="default: %(default)s")
    p.add_argument("--json", default=None, help="also write the metrics to this file")
    p.add_argument(
        "--no-fd", action="store_true", help="skip the sample Frechet distance (and its classifier)"
    )
    add_sampler_options(p)


def add_sample(sub) -> None:
    p = command(
        sub,
        "sample",
        commands.cmd_sample,
        help="a PNG grid of new images from a trained run",
        description="Decode sampled codes of a trained run into a PNG grid: the model's "
        "prior (N(0, I) codes for models without one), or a Gaussian fitted to its "
        "training codes. Conditional models draw a row per class, or --label's class. "
        "Sampling from the prior loads no data set.",
    )
    add_run_options(p)
    p.add_argument("--n", type=int, default=64, help="number of images (default: %(default)s)")
    p.add_argument("--out", required=True, help="the PNG file to write")
    p.add_argument(
        "--sampler",
        choices=SAMPLER_NAMES,
        default="prior",
        help="prior: the model's own (N(0, I) without one); normal: N(0, I); expost, gmm, "
        "flow: a Gaussian, a Gaussian mixture or a RealNVP flow fitted to the training "
        "codes (default: %(default)s)",
    )
    p.add_argument(
        "--gmm-components",
        type=int,
        default=SamplerOptions().gmm_components,
        help="components of --sampler gmm's mixture (default: %(default)s)",
    )
    p.add_argument("--label", type=int, default=None, help="class to draw (conditional models)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")


def add_report(sub) -> None:
    p = command(
        sub,
        "report",
        commands.cmd_report,
        help="write a comparison's report.md anew from its metrics.json",
        description="Re-render report.md of an `aevae compare` directory from its "
        "metrics.json and figures (for instance after an update of the verdict logic); "
        "nothing is trained or evaluated.",
    )
    p.add_argument("dir", help="the --out directory of an `aevae compare` run")


def add_models(sub) -> None:
    command(
        sub,
        "models",
        commands.cmd_models,
        help="list the registered models with their options and defaults",
        description="Every registered model (the package's, installed packages' entry "
        "points, and --import'ed modules) with its options and defaults.",
    )


def add_train_options(p: argparse.ArgumentParser, defaults: dict) -> None:
    """Training's flags: the config fields' (with `defaults` by dest), --seeds and
    --quiet beside them, and the devices and hosts to train on."""
    run = add_config_options(p, defaults)[RUN]
    run.add_argument(
        "--seeds",
        default=None,
        help="train these seeds at once in one compiled program, e.g. 0,1,2; each seed's "
        "run goes to OUT/seed_<s> and reports give mean ± std over them",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("devices and hosts")
    g.add_argument(
        "--devices",
        type=int,
        default=None,
        help="data parallelism: split each batch over this many local devices, parameters "
        "replicated (default: all the devices JAX sees)",
    )
    g.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host: call jax.distributed.initialize() first (TPU slices and SLURM "
        "need nothing more; elsewhere add the three options below on every host)",
    )
    g.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (--distributed)")
    g.add_argument("--num-processes", type=int, default=None, help="(--distributed)")
    g.add_argument("--process-id", type=int, default=None, help="this host's index (--distributed)")


def add_run_options(p: argparse.ArgumentParser, several: bool = False) -> None:
    """--run and --checkpoint: which trained run(s), and which of their checkpoints."""
    if several:
        p.add_argument(
            "--run",
            required=True,
            nargs="+",
            help="the --out directory of an `aevae train` run; several (or the --out of "
            "`aevae train --seeds`) give mean and std over them",
        )
    else:
        p.add_argument("--run", required=True, help="the --out directory of an `aevae train` run")
    p.add_argument(
        "--checkpoint",
        choices=("best", "latest"),
        default="best",
        help="the checkpoint with the best step-independent test score (the -ELBO, or the "
        "reconstruction NLL), or the last one (default: %(default)s)",
    )


def add_comparison_options(p: argparse.ArgumentParser, iwae_k: int, timing_rounds: int) -> None:
    """The options `aevae compare` and `aevae zoo` share, beyond training's."""
    p.add_argument(
        "--iwae-k",
        type=int,
        default=iwae_k,
        help="importance samples for the log-likelihood (5000 for the paper "
        "protocol; default: %(default)s)",
    )
    p.add_argument(
        "--timing-rounds",
        type=int,
        default=timing_rounds,
        help="rounds of the interleaved step-time benchmark (default: %(default)s)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs already in --out (finished ones are not retrained)",
    )
    add_sampler_options(p)


def add_sampler_options(p: argparse.ArgumentParser) -> None:
    """The ex-post samplers an evaluation scores (compare, zoo, evaluate)."""
    d = SamplerOptions()
    p.add_argument(
        "--samplers",
        default=",".join(d.names),
        help="ex-post samplers fitted to the training codes of every model with continuous "
        f"codes, scored beside the prior (comma-separated: {', '.join(EXPOST)}; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--gmm-components",
        type=int,
        default=d.gmm_components,
        help="components of the gmm sampler's mixture (default: %(default)s)",
    )


def add_import_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import a module or .py file that registers models (repeatable); a run remembers it",
    )


def models_epilog() -> str:
    from aevae_jax.models import model_info, model_names

    width = max(len(n) for n in model_names())
    lines = [f"  {n:<{width}}  {model_info(n).summary}" for n in model_names()]
    return "registered models (`aevae models` lists their options):\n" + "\n".join(lines)
