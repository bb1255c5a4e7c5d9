"""The flags of training: the general ones, made from the config fields' options
(`aevae_jax.config.option`), and each model's own, made from its options dataclass; and
the way back, from parsed flags to a RunConfig, and from a saved RunConfig to parser
defaults (`aevae train --resume --out DIR`)."""

from __future__ import annotations

import argparse
import functools

from aevae_jax.config import Option, RunConfig, option_fields, sizes
from aevae_jax.errors import UserError, require

OPTION_PREFIX = "model_option__"  # the dest of a model option's flag: prefix + option name


def shown(value) -> str:
    """A default as --help shows it: several sizes as `512 256`, a switch as on/off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value)
    return str(value)


def option_help(opt: Option, default, field_default) -> str:
    """The help of `opt`'s flag, ending in its default (`default_text` for a None one)."""
    if default is None:
        text = opt.default_text or shown(field_default)
    else:
        text = shown(default)
    line = f"{opt.help} (default: {text})" if opt.help else f"default: {text}"
    return line.replace("%", "%%")  # argparse formats help with %


def option_kwargs(opt: Option) -> dict:
    """How argparse reads `opt`'s flag: a --flag/--no-flag pair, one or more values
    (parsed after argparse, see `config_from_args`), or one value of a type."""
    if opt.parse is bool:
        return {"action": argparse.BooleanOptionalAction}
    if opt.parse is sizes:
        return {"nargs": "+"}
    return {"type": opt.parse, "choices": opt.choices}


def value_at(cfg, path: str):
    """The value of the dotted field `path` (e.g. 'model.hidden') of `cfg`."""
    return functools.reduce(getattr, path.split("."), cfg)


def add_config_options(p: argparse.ArgumentParser, defaults: dict | None = None) -> dict:
    """A flag for each config field with an option, in the option's help group, in field
    order; `defaults` (by dest) replaces the fields' defaults: a command's own, or a
    resumed run's. Returns the help groups by title, for the flags beside them."""
    defaults = defaults or {}
    base, groups = RunConfig(), {}
    for path, _, opt in option_fields():
        if opt.group not in groups:
            groups[opt.group] = p.add_argument_group(opt.group)
        g, field_default = groups[opt.group], value_at(base, path)
        default = defaults.get(opt.dest, None if opt.unset else field_default)
        g.add_argument(
            opt.flag,
            dest=opt.dest,
            default=default,
            help=option_help(opt, default, field_default),
            **option_kwargs(opt),
        )
        if opt.shortcut:
            flag, const, text = opt.shortcut
            g.add_argument(flag, dest=opt.dest, action="store_const", const=const, help=text)
    return groups


def flag_value(opt: Option, value):
    """A parsed flag's value as the config field's (several sizes become a tuple)."""
    if opt.parse is not sizes:
        return value
    try:
        return sizes(value)
    except ValueError:
        raise UserError(
            f"{opt.flag} takes integers, e.g. {opt.flag} 512 256; got {value}"
        ) from None


def config_from_args(args: argparse.Namespace, model: str, options: dict) -> RunConfig:
    """The RunConfig of parsed flags, for `model` with its own `options`; a field whose
    flag is unset (None, see Option.unset) keeps its default."""
    tree: dict = {"model": {"name": model, "options": options}, "imports": tuple(args.imports)}
    for path, _, opt in option_fields():
        value = getattr(args, opt.dest)
        if value is None and opt.unset:
            continue
        *parents, leaf = path.split(".")
        node = functools.reduce(lambda d, key: d.setdefault(key, {}), parents, tree)
        node[leaf] = flag_value(opt, value)
    return RunConfig.from_dict(tree)


def defaults_from_config(cfg: RunConfig) -> dict:
    """Parser defaults (by dest) that reproduce `cfg`: its model (--model), its model's
    options and each field with an option. Its imports are not flags: the caller
    imports them before the parser is built."""
    defaults = {opt.dest: value_at(cfg, path) for path, _, opt in option_fields()}
    defaults["model"] = cfg.model.name
    defaults.update({OPTION_PREFIX + k: v for k, v in cfg.model.options.items()})
    return defaults


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


def model_flag(option_name: str) -> str:
    return "--" + option_name.replace("_", "-")


def add_model_options(p: argparse.ArgumentParser, names: list[str]) -> None:
    """Flags for the own options of the models `names` (unknown names are skipped: the
    command reports them). An option several models share is one flag for all."""
    from aevae_jax.models import model_info, model_names, option_type

    known = [n for n in names if n in model_names()]
    seen: dict[str, list[str]] = {}
    fields = {}
    for name in known:
        info = model_info(name)
        for f in info.option_fields():
            seen.setdefault(f.name, []).append(f"{name}: {f.default}")
            fields.setdefault(f.name, (f, info.options))
    if not fields:
        return
    g = p.add_argument_group(f"options of {', '.join(known)}")
    for opt, (f, owner) in fields.items():
        kind = option_type(f, owner)
        kwargs: dict = {"default": None, "dest": OPTION_PREFIX + opt}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = kind.__name__.upper()
        text = f"{f.metadata.get('help', opt)} (default: {'; '.join(seen[opt])})"
        try:
            g.add_argument(model_flag(opt), help=text, **kwargs)
        except argparse.ArgumentError:
            raise UserError(
                f"the option {opt!r} of model {names} clashes with a general flag "
                f"{model_flag(opt)}; rename it in the model's options dataclass"
            ) from None


def model_options_from_args(args: argparse.Namespace) -> dict:
    """The model options given on the command line (flags left at None are not given)."""
    return {
        k.removeprefix(OPTION_PREFIX): v
        for k, v in vars(args).items()
        if k.startswith(OPTION_PREFIX) and v is not None
    }


def check_foreign_options(unknown: list[str], selected: list[str]) -> None:
    """A flag the parser does not know that is another model's option gets a UserError
    naming that model (argparse would only say 'unrecognized arguments')."""
    from aevae_jax.models import model_info, model_names

    if not unknown:
        return
    owners: dict[str, list[str]] = {}
    for name in model_names():
        for f in model_info(name).option_fields():
            owners.setdefault(model_flag(f.name), []).append(name)
    for arg in unknown:
        flag = arg.split("=")[0]
        if flag in owners:
            raise UserError(
                f"{flag} is an option of {', '.join(owners[flag])}, not of "
                f"{', '.join(selected)}; name {owners[flag][0]} in --model (or --models), or "
                "see `aevae models` for each model's options"
            )
