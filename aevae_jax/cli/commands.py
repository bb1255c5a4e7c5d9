"""What each `aevae` command does: check its arguments, call the library, print the
outcome. Library imports are local, so that `aevae --help` and a mistyped flag answer
without importing JAX's numerics."""

from __future__ import annotations

import argparse
import os
import sys

from aevae_jax.cli.flags import config_from_args, model_options_from_args, seeds_from_args
from aevae_jax.errors import require
from aevae_jax.writing import json_text, number, write_json

MAX_SAMPLES = 4096  # aevae sample: a 64 x 64 grid


def cmd_train(args: argparse.Namespace) -> int:
    from aevae_jax.evaluate.metrics import summarize_seeds
    from aevae_jax.train.fit import fit, fit_seeds

    cfg = config_from_args(args, args.model, model_options_from_args(args))
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
            f"{number(last['train_objective'], 3)}, test objective "
            f"{number(last['test_objective'], 3)}, {select} {number(last[select], 3)} "
            f"nats/image, {number(last['step_ms'])} ms/step -> "
            f"{os.path.abspath(result.run_dir)}"
        )
    if len(results) > 1:
        summary = summarize_seeds([r.history[-1] for r in results])
        spread = lambda key: (
            f"{number(summary[key], 3)} ± {number(summary['std'].get(key, 0.0), 3)}"
        )
        print(
            f"over {len(results)} seeds: test objective {spread('test_objective')}, "
            f"{select} {spread(select)} (mean ± sample std)"
        )
    return 0


def single_host(args: argparse.Namespace, command: str) -> None:
    require(
        not args.distributed,
        f"aevae {command} runs on one host; train each model with `aevae train "
        "--distributed`, then evaluate its run directory on one host",
    )


def command_line(args: argparse.Namespace) -> str:
    """The command as typed (recorded in a comparison's report)."""
    command = "aevae " + " ".join(sys.argv[1:]) if args.argv is None else args.argv
    return command.strip()


def study_options(args: argparse.Namespace) -> dict:
    """The arguments `run_compare` and `run_zoo` share, from the parsed flags."""
    return dict(
        options=model_options_from_args(args),
        iwae_k=args.iwae_k,
        timing_rounds=args.timing_rounds,
        resume=args.resume,
        quiet=args.quiet,
        command=command_line(args),
        seeds=seeds_from_args(args),
        devices=args.devices,
        samplers=sampler_options_from_args(args),
    )


def sampler_options_from_args(args: argparse.Namespace):
    """--samplers and --gmm-components as samplers.SamplerOptions."""
    from aevae_jax.evaluate.samplers import SamplerOptions

    names = tuple(n.strip() for n in args.samplers.split(",") if n.strip())
    return SamplerOptions(names, gmm_components=args.gmm_components)


def cmd_compare(args: argparse.Namespace) -> int:
    from aevae_jax.study.compare import parse_models, run_compare

    models = parse_models(args.models)
    pair = parse_models(args.pair)
    require(len(pair) == 2, f"--pair takes two model names, e.g. ae,vae; got {args.pair!r}")
    cfg = config_from_args(args, models[0], {})
    metrics = run_compare(cfg, models=models, pair=pair, **study_options(args))
    for name, m in metrics["models"].items():
        parts = [f"MSE {number(m['test_mse'])}"]
        for key, label in (
            ("test_neg_elbo", "-ELBO"),
            ("test_nll_iwae", "NLL"),
            ("prior_sample_fd", "prior FD"),
        ):
            if m.get(key) is not None:
                parts.append(f"{label} {number(m[key])}")
        print(f"{name:>10}: " + ", ".join(parts))
    print(f"report: {os.path.join(os.path.abspath(cfg.out), 'report.md')}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from aevae_jax.study.compare import parse_models
    from aevae_jax.study.zoo import run_zoo

    models = parse_models(args.models) if args.models else None
    cfg = config_from_args(args, models[0] if models else "ae", {})
    zoo = run_zoo(cfg, models=models, **study_options(args))
    print(f"{len(zoo['rows'])} models in {number(zoo['wall_seconds'], 0)} s")
    print(f"table: {os.path.join(os.path.abspath(cfg.out), 'zoo.md')}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from aevae_jax.study.evaluate_runs import evaluate_runs

    require(args.iwae_k > 0, f"--iwae-k must be a positive integer, got {args.iwae_k}")
    if args.json:  # fail now, not after minutes of evaluation
        parent = os.path.dirname(os.path.abspath(args.json))
        require(
            os.path.isdir(parent) and os.access(parent, os.W_OK) and not os.path.isdir(args.json),
            f"cannot write --json {args.json!r}: name a file in a writable directory",
        )
    samplers = sampler_options_from_args(args)
    metrics = evaluate_runs(
        args.run, args.checkpoint, iwae_k=args.iwae_k, fd=not args.no_fd, samplers=samplers
    )
    if args.json:
        write_json(args.json, metrics)
    print(json_text(metrics))
    return 0


def check_sample_args(args: argparse.Namespace) -> None:
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


def cmd_sample(args: argparse.Namespace) -> int:
    from aevae_jax.evaluate.samplers import SamplerOptions
    from aevae_jax.study.figures import image_grid
    from aevae_jax.study.sampling import sample_run

    check_sample_args(args)
    opts = SamplerOptions(gmm_components=args.gmm_components)
    s = sample_run(args.run, args.n, args.sampler, args.label, args.seed, args.checkpoint, opts)
    image_grid(args.out, s.images, s.title, labels=s.labels, cols=s.cols)
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
