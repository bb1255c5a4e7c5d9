"""The `aevae` command line.

`aevae train` trains one model; every general option maps onto a field of RunConfig
(see config.py), and defaults reproduce the pytorch/examples VAE setup (MLP 784-400-20,
ReLU, Adam 1e-3, batch 128, dynamic binarization, 10 epochs). Each model's own options
become flags built from its registered options dataclass (`--beta`, `--k`, ...), shown
by `--help` once `--model` (or `--models`) names it and listed by `aevae models`.
`--import MODULE_OR_FILE` adds models registered outside the package.

A user mistake ends with one line on stderr, naming the remedy, and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

from aevae_jax.config import (
    BACKBONES,
    BINARIZE_MODES,
    DTYPES,
    INITS,
    OPTIMIZERS,
    SCHEDULES,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
)
from aevae_jax.errors import UserError, require

# The main job's budget: 30 epochs of AE and VAE on Fashion-MNIST stay well inside
# 10 minutes on a 2-core CPU (README has the measured time).
COMPARE_EPOCHS = 30
# The zoo's budget: every registered model on Fashion-MNIST in well under half an hour
# on a 2-core CPU (README.md states the measured time).
ZOO_EPOCHS, ZOO_IWAE_K = 10, 100
MAX_SAMPLES = 4096  # aevae sample: a 64 x 64 grid
DEFAULT_MODEL = "vae"  # aevae train
DEFAULT_MODELS = "ae,vae"  # aevae compare, and the article's pair
OPTION_PREFIX = "model_option__"


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
        help="tfds name (fashion_mnist, mnist, binarized_mnist, kmnist, cifar10), "
        "sklearn_photos (32x32 colour patches of scikit-learn's two sample photographs, "
        "offline), or a path to an .npz with x_train, x_test [, y_train, y_test] "
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
    g = p.add_argument_group("backbone (shared by every model)")
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
        "--dtype",
        choices=DTYPES,
        default=m.dtype,
        help="compute dtype of the networks; bfloat16 keeps float32 parameters, optimiser "
        "state, losses and log-densities (default: %(default)s)",
    )
    g.add_argument(
        "--likelihood",
        default=None,
        help="bernoulli, gaussian, mse, or logistic (discretised, for 8-bit colour images "
        "with --binarize none) (default: the model's own; AE: mse, VAE: bernoulli)",
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
    g.add_argument("--seed", type=int, default=None, help=f"default: {r.seed}")
    g.add_argument(
        "--seeds",
        default=None,
        help="train these seeds at once in one compiled program, e.g. 0,1,2; each seed's "
        "run goes to OUT/seed_<s> and reports give mean ± std over them",
    )
    g.add_argument("--out", default=out_default, help="output directory (default: %(default)s)")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=r.checkpoint_every,
        help="save a periodic checkpoint every N epochs (default: %(default)s)",
    )
    g.add_argument(
        "--nonfinite-patience",
        type=int,
        default=r.nonfinite_patience,
        help="steps whose loss, gradient or update is not finite are skipped; this many in "
        "a row stop the run with an error (default: %(default)s)",
    )
    g.add_argument(
        "--stop-on-nonfinite",
        dest="nonfinite_patience",
        action="store_const",
        const=1,
        help="stop at the first non-finite step (--nonfinite-patience 1)",
    )
    g.add_argument(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        default=r.tensorboard,
        help="write no TensorBoard summaries (default: scalars every epoch and image grids "
        "beside metrics.jsonl; view with `tensorboard --logdir OUT`)",
    )
    g.add_argument(
        "--image-every",
        type=int,
        default=r.image_every,
        help="TensorBoard image grids (reconstructions, prior samples) every N epochs and at "
        "the last (default: %(default)s)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar")
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


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """'0,1,2' -> (0, 1, 2); None stays None."""
    if text is None:
        return None
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(
            f"--seeds takes comma-separated integers, e.g. 0,1,2; got {text!r}"
        ) from None
    require(len(seeds) > 0, f"--seeds needs at least one seed, e.g. 0,1,2; got {text!r}")
    return seeds


def seeds_from_args(args: argparse.Namespace) -> tuple[int, ...] | None:
    """--seeds as a tuple (None without it); --seed and --seeds exclude each other."""
    seeds = parse_seeds(args.seeds)
    require(
        seeds is None or args.seed is None,
        "--seed and --seeds exclude each other: pass --seeds 0,1,2 for several seeds",
    )
    return seeds


def add_model_options(p: argparse.ArgumentParser, names: list[str]) -> None:
    """Flags for the own options of the models `names` (unknown names are skipped: the
    command reports them). An option several models share is one flag for all."""
    from aevae_jax.models import model_info, model_names, option_type

    seen: dict[str, list[str]] = {}
    fields = {}
    for name in names:
        if name not in model_names():
            continue
        info = model_info(name)
        for f in info.option_fields():
            seen.setdefault(f.name, []).append(f"{name}: {f.default}")
            fields.setdefault(f.name, (f, info.options))
    if not fields:
        return
    g = p.add_argument_group(f"options of {', '.join(n for n in names if n in model_names())}")
    for opt, (f, owner) in fields.items():
        kind = option_type(f, owner)
        flag = "--" + opt.replace("_", "-")
        text = f.metadata.get("help", opt)
        kwargs: dict = {"default": None, "dest": OPTION_PREFIX + opt}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = kind.__name__.upper()
        try:
            g.add_argument(flag, help=f"{text} (default: {'; '.join(seen[opt])})", **kwargs)
        except argparse.ArgumentError:
            raise UserError(
                f"the option {opt!r} of model {names} clashes with a general flag {flag}; "
                "rename it in the model's options dataclass"
            ) from None


def model_options_from_args(args: argparse.Namespace) -> dict:
    """The model options given on the command line (flags left at None are not given)."""
    return {
        k.removeprefix(OPTION_PREFIX): v
        for k, v in vars(args).items()
        if k.startswith(OPTION_PREFIX) and v is not None
    }


def run_config_from_args(args: argparse.Namespace, model: str, options: dict) -> RunConfig:
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
            options=options,
            dtype=args.dtype,
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
        seed=RunConfig.seed if args.seed is None else args.seed,
        out=args.out,
        checkpoint_every=args.checkpoint_every,
        nonfinite_patience=args.nonfinite_patience,
        tensorboard=args.tensorboard,
        image_every=args.image_every,
        imports=tuple(args.imports),
    )


def cmd_train(args: argparse.Namespace) -> int:
    from aevae_jax.evaluate.metrics import summarize_seeds
    from aevae_jax.train.fit import fit, fit_seeds

    cfg = run_config_from_args(args, args.model, model_options_from_args(args))
    seeds = seeds_from_args(args)
    kw = dict(resume=args.resume, progress=not args.quiet, devices=args.devices)
    results = [fit(cfg, **kw)] if seeds is None else fit_seeds(cfg, seeds, **kw)
    if not all(r.history for r in results):
        print(f"nothing to train: {cfg.out} is complete and its metrics.jsonl is missing")
        return 0
    for result in results:
        last = result.history[-1]
        select = last["selection"]
        print(
            f"{cfg.model.name} on {cfg.data.dataset}, seed {result.seed}: epoch "
            f"{last['epoch']} ({last['stage']}), train objective "
            f"{_num(last['train_objective'])}, test objective {_num(last['test_objective'])}, "
            f"{select} {_num(last[select])} nats/image, {last['step_ms']:.2f} ms/step -> "
            f"{os.path.abspath(result.run_dir)}"
        )
    if len(results) > 1:
        summary = summarize_seeds([r.history[-1] for r in results])
        spread = lambda key: f"{_num(summary[key])} ± {_num(summary['std'].get(key, 0.0))}"
        print(
            f"over {len(results)} seeds: test objective {spread('test_objective')}, "
            f"{select} {spread(select)} (mean ± sample std)"
        )
    return 0


def _num(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def single_host(args: argparse.Namespace, command: str) -> None:
    require(
        not args.distributed,
        f"aevae {command} runs on one host; train each model with `aevae train "
        "--distributed`, then evaluate its run directory on one host",
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from aevae_jax.study.compare import parse_models, run_compare

    models = parse_models(args.models)
    pair = parse_models(args.pair)
    require(len(pair) == 2, f"--pair takes two model names, e.g. ae,vae; got {args.pair!r}")
    cfg = run_config_from_args(args, models[0], {})
    command = "aevae " + " ".join(sys.argv[1:]) if args.argv is None else args.argv
    metrics = run_compare(
        cfg,
        models=models,
        options=model_options_from_args(args),
        pair=pair,
        iwae_k=args.iwae_k,
        timing_rounds=args.timing_rounds,
        resume=args.resume,
        quiet=args.quiet,
        command=command.strip(),
        seeds=seeds_from_args(args),
        devices=args.devices,
    )
    for name, m in metrics["models"].items():
        parts = [f"MSE {m['test_mse']:.2f}"]
        for key, label in (
            ("test_neg_elbo", "-ELBO"),
            ("test_nll_iwae", "NLL"),
            ("prior_sample_fd", "prior FD"),
        ):
            if m.get(key) is not None:
                parts.append(f"{label} {m[key]:.2f}")
        print(f"{name:>10}: " + ", ".join(parts))
    print(f"report: {os.path.join(os.path.abspath(cfg.out), 'report.md')}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from aevae_jax.study.compare import parse_models
    from aevae_jax.study.zoo import run_zoo

    models = parse_models(args.models) if args.models else None
    cfg = run_config_from_args(args, models[0] if models else "ae", {})
    command = "aevae " + " ".join(sys.argv[1:]) if args.argv is None else args.argv
    zoo = run_zoo(
        cfg,
        models=models,
        options=model_options_from_args(args),
        iwae_k=args.iwae_k,
        timing_rounds=args.timing_rounds,
        resume=args.resume,
        quiet=args.quiet,
        command=command.strip(),
        seeds=seeds_from_args(args),
        devices=args.devices,
    )
    print(f"{len(zoo['rows'])} models in {zoo['wall_seconds']:.0f} s")
    print(f"table: {os.path.join(os.path.abspath(cfg.out), 'zoo.md')}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from aevae_jax.evaluate.metrics import summarize_seeds
    from aevae_jax.study.compare import _jsonable
    from aevae_jax.train.runs import expand_runs

    require(args.iwae_k > 0, f"--iwae-k must be a positive integer, got {args.iwae_k}")
    if args.json:  # fail now, not after minutes of evaluation
        parent = os.path.dirname(os.path.abspath(args.json))
        require(
            os.path.isdir(parent) and os.access(parent, os.W_OK) and not os.path.isdir(args.json),
            f"cannot write --json {args.json!r}: name a file in a writable directory",
        )
    results = list(_evaluate_runs(expand_runs(args.run), args))
    if len(results) == 1:
        out = results[0]
    else:
        skip = ("run", "checkpoint", "seed", "epoch")
        metrics = [{k: v for k, v in r.items() if k not in skip} for r in results]
        summary = summarize_seeds(metrics)
        per_seed, std = summary.pop("per_seed"), summary.pop("std")
        out = {"runs": [r["run"] for r in results], "seeds": [r["seed"] for r in results],
               "epochs": [r["epoch"] for r in results], "mean": summary, "std": std,
               "per_run": per_seed}  # fmt: skip
    text = json.dumps(_jsonable(out), indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def _evaluate_runs(run_dirs: list[str], args: argparse.Namespace):
    """Each run's test metrics (the runs must share a model and a data set)."""
    from aevae_jax.config import config_differences
    from aevae_jax.data.sources import load_dataset
    from aevae_jax.evaluate.classifier import load_or_train_classifier
    from aevae_jax.evaluate.evaluation import evaluate_model, evaluation_key
    from aevae_jax.train.runs import load_run

    first = load_run(run_dirs[0], args.checkpoint, need_data=False)
    full = load_dataset(first.cfg.data.dataset, first.cfg.data.data_dir)
    classifier = None if args.no_fd else load_or_train_classifier(full, progress=True)
    for run_dir in run_dirs:
        run = load_run(run_dir, args.checkpoint, dataset=full)
        differ = config_differences(first.cfg, run.cfg, ignore=("seed", "out"))
        require(
            not differ,
            f"--run: {run_dir!r} and {run_dirs[0]!r} differ in {', '.join(differ)}; several "
            "runs are averaged only when they differ in their seed alone",
        )
        evaluation = evaluate_model(
            run.model,
            run.params,
            run.dataset,
            run.cfg.data.binarize,
            evaluation_key(run.cfg.seed),
            iwae_k=args.iwae_k,
            classifier=classifier,
            progress=True,
        )
        yield {
            "run": os.path.abspath(run_dir),
            "model": run.model.name,
            "seed": run.cfg.seed,
            "checkpoint": run.which,
            "epoch": run.epoch,
            **evaluation.metrics,
        }


def cmd_sample(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from aevae_jax.evaluate.evaluation import TRAIN_SPLIT, encode_split, eval_inputs
    from aevae_jax.evaluate.samplers import decode_samples, expost_gaussian, prior_images
    from aevae_jax.study.figures import image_grid
    from aevae_jax.train.runs import load_run

    require(
        0 < args.n <= MAX_SAMPLES,
        f"--n must be an integer in [1, {MAX_SAMPLES}] (one PNG grid); got {args.n}. For more "
        "images, call aevae_jax.evaluate.samplers.prior_images from Python in chunks",
    )
    require(0 <= args.seed < 2**32, f"--seed must be an integer in [0, 2**32), got {args.seed}")
    require(args.out.endswith(".png"), f"--out must name a .png file, got {args.out!r}")
    require(not os.path.isdir(args.out), f"--out {args.out!r} is a directory; name a .png file")
    parent = os.path.dirname(os.path.abspath(args.out))
    require(
        os.path.isdir(parent) and os.access(parent, os.W_OK),
        f"cannot write {args.out!r}: {parent} is not a writable directory",
    )
    run = load_run(args.run, args.checkpoint, need_data=args.sampler == "expost")
    model, key = run.model, jax.random.key(args.seed)
    y, labels, cols = None, None, None
    if model.conditional:
        classes = run.spec.num_classes
        if args.label is not None:
            require(0 <= args.label < classes, f"--label must lie in [0, {classes - 1}]")
            y = jnp.full((args.n,), args.label, jnp.int32)
        else:  # a row per class
            cols = max(1, args.n // classes)
            y = jnp.repeat(jnp.arange(classes), cols)
            names = run.spec.class_names or [str(c) for c in range(classes)]
            labels = list(names)
    else:
        require(
            args.label is None,
            f"--label applies to conditional models; {model.name} is not conditioned on labels",
        )
    n = args.n if y is None else len(y)
    if args.sampler == "prior":
        images = prior_images(model, run.params, key, n, y)
    else:
        x = eval_inputs(jnp.asarray(run.dataset.x_train), run.cfg.data.binarize, TRAIN_SPLIT)
        y_train = None if run.dataset.y_train is None else jnp.asarray(run.dataset.y_train)
        codes = encode_split(model, run.params, x, y_train)
        require(
            codes.indices is None,
            f"--sampler expost needs continuous codes; {model.name} "
            "has discrete ones (use --sampler prior)",
        )
        images = decode_samples(model, run.params, expost_gaussian(codes.features), key, n, y)
    images = np.asarray(images)
    require(
        np.isfinite(images).all(),
        f"the samples of {args.run!r} are not finite: its parameters have diverged (see its "
        "metrics.jsonl); train it again with a lower --lr or with --grad-clip",
    )
    image_grid(
        args.out,
        images,
        f"{model.name}: {n} samples ({args.sampler}), seed {args.seed}",
        labels=labels,
        cols=cols,
    )
    print(os.path.abspath(args.out))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from aevae_jax.study.report import rewrite

    require(
        os.path.isfile(os.path.join(args.dir, "metrics.json")),
        f"{args.dir!r} holds no metrics.json; pass the --out of an `aevae compare` run",
    )
    print(os.path.abspath(rewrite(args.dir)))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from aevae_jax.models import model_info, model_names

    for name in model_names():
        info = model_info(name)
        print(f"{name}: {info.summary}")
        flags = [f"likelihood {info.default_likelihood}"]
        if info.needs_labels:
            flags.append("needs labels")
        print(f"    ({', '.join(flags)}; from {info.module})")
        for f in info.option_fields():
            print(
                f"    --{f.name.replace('_', '-')} (default {f.default}): "
                f"{f.metadata.get('help', '')}"
            )
    return 0


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


def build_parser(
    selected: list[str] | None = None, train_defaults: dict | None = None
) -> argparse.ArgumentParser:
    """The parser; `selected` names the models whose own option flags it accepts, and
    `train_defaults` replaces `aevae train`'s defaults (a resumed run's options)."""
    selected = selected or []
    parser = argparse.ArgumentParser(
        prog="aevae",
        description="Autoencoders vs variational autoencoders in JAX.",
        epilog=models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_import_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, **kwargs) -> argparse.ArgumentParser:
        """A subcommand that runs `func`; every one takes --import."""
        p = sub.add_parser(name, allow_abbrev=False, **kwargs)
        add_import_option(p)
        p.set_defaults(func=func)
        return p

    p = command(
        "train",
        cmd_train,
        help="train one model",
        description="Train one model; writes config.json, metrics.jsonl and orbax "
        "checkpoints (latest and best) into --out. Pass --model NAME with --help to see "
        "that model's own options.",
        epilog=models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help="registered model name (default: %(default)s)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    add_train_options(p, out_default="runs/train")
    add_model_options(p, selected)
    p.set_defaults(**(train_defaults or {}))

    p = command(
        "compare",
        cmd_compare,
        help="the main job: train several models alike, evaluate each, write a report",
        description="Train every model of --models with the same backbone, latent size, "
        "data and budget; evaluate each with every metric that applies; write "
        "metrics.json, report.md and PNG figures into --out. Reconstruction models (those "
        "whose default likelihood is mse: ae, dae, sparse_ae, mae, aae) keep their MSE loss; "
        "--likelihood sets the others'.",
        epilog=models_epilog(),
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
    add_train_options(p, out_default="runs/compare", epochs_default=COMPARE_EPOCHS)
    add_model_options(p, selected)

    p = command(
        "zoo",
        cmd_zoo,
        help="every registered model under one budget, in one table (zoo.md, zoo.json)",
        description="Train every registered model (or --models) with the same data, "
        "backbone and budget, evaluate each, and write zoo.json, zoo.md and overview.png "
        "(a row of reconstructions and of samples per model) into --out, beside what "
        "`aevae compare` writes. Models that need labels are skipped on unlabelled data.",
        epilog=models_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--models", default=None, help="comma-separated model names (default: every one)"
    )
    add_comparison_options(p, iwae_k=ZOO_IWAE_K, timing_rounds=5)
    add_train_options(p, out_default="runs/zoo", epochs_default=ZOO_EPOCHS)
    add_model_options(p, selected)

    p = command(
        "evaluate",
        cmd_evaluate,
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

    p = command(
        "sample",
        cmd_sample,
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
        "--sampler", choices=("prior", "expost"), default="prior", help="default: %(default)s"
    )
    p.add_argument("--label", type=int, default=None, help="class to draw (conditional models)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")

    p = command(
        "report",
        cmd_report,
        help="write a comparison's report.md anew from its metrics.json",
        description="Re-render report.md of an `aevae compare` directory from its "
        "metrics.json and figures (for instance after an update of the verdict logic); "
        "nothing is trained or evaluated.",
    )
    p.add_argument("dir", help="the --out directory of an `aevae compare` run")

    p = command(
        "models",
        cmd_models,
        help="list the registered models with their options and defaults",
        description="Every registered model (the package's, installed packages' entry "
        "points, and --import'ed modules) with its options and defaults.",
    )
    return parser


def _preparse(argv: list[str]) -> argparse.Namespace:
    """--import, --model and --models, read before the full parser is built (they decide
    which models exist and which option flags the parser accepts)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--import", dest="imports", action="append", default=[])
    pre.add_argument("--model", dest="model_given", default=None)
    pre.add_argument("--models", default=None)
    pre.add_argument("--resume", action="store_true")
    pre.add_argument("--out", default=None)
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(argv)
    known.model = known.model_given or DEFAULT_MODEL
    return known


def check_foreign_options(unknown: list[str], selected: list[str]) -> None:
    """A flag the parser does not know that is another model's option gets a UserError
    naming that model (argparse would only say 'unrecognized arguments')."""
    from aevae_jax.models import model_info, model_names

    if not unknown:
        return
    owners: dict[str, list[str]] = {}
    for name in model_names():
        for f in model_info(name).option_fields():
            owners.setdefault("--" + f.name.replace("_", "-"), []).append(name)
    for arg in unknown:
        flag = arg.split("=")[0]
        if flag in owners:
            raise UserError(
                f"{flag} is an option of {', '.join(owners[flag])}, not of "
                f"{', '.join(selected)}; name {owners[flag][0]} in --model (or --models), or "
                "see `aevae models` for each model's options"
            )


def selected_models(known: argparse.Namespace) -> list[str]:
    """The models whose option flags the parser accepts: --model and --models, or, for
    `aevae zoo` without --models, every registered model."""
    from aevae_jax.models import model_names

    if known.command == "zoo" and known.models is None:
        return model_names()
    models = (known.models or DEFAULT_MODELS).split(",")
    return list(dict.fromkeys(s.strip() for s in [known.model, *models] if s.strip()))


def start_processes(args: argparse.Namespace) -> None:
    """--distributed: join the other hosts before anything touches a device."""
    options = ("coordinator", "num_processes", "process_id")
    given = [a for a in options if getattr(args, a, None) is not None]
    if not getattr(args, "distributed", False):
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} applies with --distributed only")
        return
    from aevae_jax.train.parallel import initialize_distributed

    if args.func is not cmd_train:
        single_host(args, args.command)
    n, i = args.num_processes, args.process_id
    require(
        (n is None) == (i is None) == (args.coordinator is None),
        "--coordinator, --num-processes and --process-id go together (or none of them, on "
        "a TPU slice or under SLURM)",
    )
    require(
        n is None or (n >= 1 and 0 <= i < n),
        f"--process-id must be in [0, --num-processes) and --num-processes >= 1; got "
        f"--process-id {i} --num-processes {n}",
    )
    initialize_distributed(args.coordinator, n, i)


def resume_defaults(known: argparse.Namespace) -> dict | None:
    """For `aevae train --resume --out DIR`: the options of the run saved in DIR (or of
    the seeds' runs under it) as the parser's defaults, so that no other option is
    needed; None when there is no such run."""
    from aevae_jax.train.rundir import has_run, read_config, seed_run_dirs

    if known.command != "train" or not known.resume or known.out is None:
        return None
    seeds = [] if has_run(known.out) else seed_run_dirs(known.out)
    if not seeds and not has_run(known.out):
        return None
    cfg = read_config(seeds[0] if seeds else known.out)[0]
    d, m, o = cfg.data, cfg.model, cfg.optim
    defaults = dict(
        model=m.name, dataset=d.dataset, binarize=d.binarize, train_size=d.train_size,
        data_dir=d.data_dir, backbone=m.backbone, hidden=[str(h) for h in m.hidden],
        latent_dim=m.latent_dim, activation=m.activation, init=m.init, dtype=m.dtype,
        likelihood=m.likelihood, optimizer=o.optimizer, lr=o.lr, schedule=o.schedule,
        warmup_steps=o.warmup_steps, weight_decay=o.weight_decay, grad_clip=o.grad_clip,
        epochs=cfg.epochs, batch_size=cfg.batch_size, checkpoint_every=cfg.checkpoint_every,
        nonfinite_patience=cfg.nonfinite_patience, seed=None if seeds else cfg.seed,
        tensorboard=cfg.tensorboard, image_every=cfg.image_every,
        seeds=",".join(os.path.basename(s).removeprefix("seed_") for s in seeds) or None,
        saved_imports=list(cfg.imports),
        **{OPTION_PREFIX + k: v for k, v in m.options.items()},
    )  # fmt: skip
    return defaults


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"aevae: warning: {message}", file=sys.stderr)


def _interrupted(args: argparse.Namespace, e: KeyboardInterrupt) -> int:
    from aevae_jax.train.fit import TrainingInterrupted, resume_hint

    if isinstance(e, TrainingInterrupted):
        text = str(e)
    elif getattr(args, "func", None) is cmd_train:
        text = "interrupted; " + resume_hint(args.out)
    else:
        text = "interrupted"
    print(f"aevae: {text}", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    from aevae_jax.models import import_models

    raw = sys.argv[1:] if argv is None else list(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            known = _preparse(raw)
            defaults = resume_defaults(known)
            if defaults is not None:
                known.imports = [*defaults.pop("saved_imports"), *known.imports]
                if known.model_given is None:
                    known.model = defaults["model"]
            for module in known.imports:
                import_models(module)
            parser = build_parser(selected_models(known), train_defaults=defaults)
            _, unknown = parser.parse_known_args(raw)
            given = [known.model] if known.command == "train" else selected_models(known)
            check_foreign_options(unknown, given)
        except UserError as e:
            print(f"aevae: error: {e}", file=sys.stderr)
            return 2
        args = parser.parse_args(raw)
        args.imports = known.imports
        args.argv = None if argv is None else "aevae " + " ".join(argv)
        try:
            start_processes(args)
            return args.func(args)
        except UserError as e:
            print(f"aevae: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:
            return _interrupted(args, e)


if __name__ == "__main__":
    sys.exit(main())
