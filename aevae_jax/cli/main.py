"""The `aevae` command line: `main`, its two-pass parsing, and how errors and Ctrl-C end.

`aevae train` trains one model; every general option maps onto a field of RunConfig
(each field's `option(...)` in config.py states its flag), and defaults reproduce the
pytorch/examples VAE setup (MLP 784-400-20, ReLU, Adam 1e-3, batch 128, dynamic
binarization, 10 epochs). Each model's own options become flags built from its
registered options dataclass (`--beta`, `--k`, ...), shown by `--help` once `--model`
(or `--models`) names it and listed by `aevae models`. `--import MODULE_OR_FILE` adds
models registered outside the package.

Parsing takes two passes because the first decides what the parser accepts: --import
(which models exist), --model/--models (whose option flags) and, for `train --resume
--out DIR`, the saved run (the parser's defaults). The commands are in commands.py, the
parser in parser.py, the flags in flags.py.

A user mistake ends with one line on stderr, naming the remedy, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from aevae_jax.cli.commands import cmd_train, single_host
from aevae_jax.cli.flags import check_foreign_options, defaults_from_config
from aevae_jax.cli.parser import DEFAULT_MODEL, DEFAULT_MODELS, build_parser
from aevae_jax.errors import UserError, require


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


def selected_models(known: argparse.Namespace) -> list[str]:
    """The models whose option flags the parser accepts: `train`'s --model; the
    --models of `compare` (default: the article's pair) and `zoo` (default: every
    registered model)."""
    from aevae_jax.models import model_names

    if known.command == "train":
        return [known.model]
    if known.command == "zoo" and known.models is None:
        return model_names()
    models = (known.models or DEFAULT_MODELS).split(",")
    return list(dict.fromkeys(s.strip() for s in models if s.strip()))


def resume_defaults(known: argparse.Namespace) -> dict | None:
    """For `aevae train --resume --out DIR`: the options of the run saved in DIR (or of
    the seeds' runs under it) as the parser's defaults, so that no other option is
    needed, and its imports (`saved_imports`); None when there is no such run."""
    from aevae_jax.train.rundir import has_run, read_config, seed_run_dirs

    if known.command != "train" or not known.resume or known.out is None:
        return None
    seeds = [] if has_run(known.out) else seed_run_dirs(known.out)
    if not seeds and not has_run(known.out):
        return None
    cfg = read_config(seeds[0] if seeds else known.out)[0]
    defaults = defaults_from_config(cfg)
    del defaults["out"]  # --out is given: it names the run
    if seeds:
        defaults["seed"] = None
        defaults["seeds"] = ",".join(os.path.basename(s).removeprefix("seed_") for s in seeds)
    defaults["saved_imports"] = list(cfg.imports)
    return defaults


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


def _parser_for(raw: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The first pass: imports, models and a resumed run's defaults decide the parser;
    a flag of a model not selected is refused here. Returns the parser and the imports."""
    from aevae_jax.models import import_models

    known = _preparse(raw)
    defaults = resume_defaults(known)
    if defaults is not None:
        known.imports = [*defaults.pop("saved_imports"), *known.imports]
        if known.model_given is None:
            known.model = defaults["model"]
    for module in known.imports:
        import_models(module)
    selected = selected_models(known)
    parser = build_parser(selected, train_defaults=defaults)
    _, unknown = parser.parse_known_args(raw)
    check_foreign_options(unknown, selected)
    return parser, known.imports


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            parser, imports = _parser_for(raw)
        except UserError as e:
            print(f"aevae: error: {e}", file=sys.stderr)
            return 2
        args = parser.parse_args(raw)
        args.imports = imports
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
