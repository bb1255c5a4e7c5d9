"""The model registry: a name maps to a factory `(ModelConfig, DataSpec, options) -> Model`.

A new model is one new file that decorates its factory with
`@register("name", options=MyOptions)`:
- every module of this package is imported on first use;
- installed packages add theirs through the entry-point group `aevae_jax.models`
  (each entry point names a module, imported on first use);
- a local module or `.py` file is added with `import_models(...)` (the `--import`
  option of every command), and a run remembers it in its config.

A model's own options are a small frozen dataclass registered with it; the command
line builds flags, `--help` text and config.json entries from its fields. Callers
use `make_model`, never an if-chain on names.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pkgutil
import sys
import typing
from collections.abc import Callable
from typing import Any

from aevae_jax.config import ModelConfig
from aevae_jax.data.spec import DataSpec
from aevae_jax.errors import UserError, require
from aevae_jax.models.base import Batch, Claim, Encoding, Model, Prior, Stage

__all__ = [
    "Batch",
    "Claim",
    "Encoding",
    "Model",
    "ModelInfo",
    "Prior",
    "Stage",
    "import_models",
    "make_model",
    "model_info",
    "model_names",
    "register",
    "resolve",
]

ENTRY_POINT_GROUP = "aevae_jax.models"
Factory = Callable[[ModelConfig, DataSpec, Any], Model]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A registered model: its factory, options dataclass, one-line summary, the
    likelihood it trains with by default, and the module that registered it."""

    name: str
    factory: Factory
    options: type | None
    summary: str
    default_likelihood: str
    needs_density: bool  # refuses the unnormalised 'mse' likelihood
    needs_labels: bool
    module: str
    claims: tuple[Claim, ...] = ()

    def option_fields(self) -> list[dataclasses.Field]:
        return [] if self.options is None else list(dataclasses.fields(self.options))

    def option_defaults(self) -> dict[str, Any]:
        return {} if self.options is None else dataclasses.asdict(self.options())


_REGISTRY: dict[str, ModelInfo] = {}
_loaded = False


def register(
    name: str,
    options: type | None = None,
    likelihood: str = "bernoulli",
    needs_density: bool = False,
    needs_labels: bool = False,
    summary: str | None = None,
    claims: tuple[Claim, ...] = (),
) -> Callable[[Factory], Factory]:
    """Decorator: make `factory(cfg, spec, opts)` buildable as model `name`.

    options: a frozen dataclass of the model's own options (None: it has none); its
      fields need defaults, scalar types (bool, int, float, str) and may carry
      `metadata={"help": ...}`; `__post_init__` should raise UserError on bad values.
    likelihood: the default likelihood p(x|z) ("mse" for plain reconstruction models).
    summary: one line for `aevae --help` and `aevae models` (default: the first line of
      the factory's docstring).
    claims: what the literature says of the model (`Claim`), checked by `aevae compare`.
    """

    def add(factory: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(_twice(name, _REGISTRY[name].factory, factory))
        if options is not None:
            _check_options_class(name, options)
        line = summary or (factory.__doc__ or name).strip().splitlines()[0]
        _REGISTRY[name] = ModelInfo(
            name,
            factory,
            options,
            line,
            likelihood,
            needs_density,
            needs_labels,
            factory.__module__,
            tuple(claims),
        )
        return factory

    return add


def _twice(name: str, old: Factory, new: Factory) -> str:
    """Why a name is registered twice, and what to do about it."""
    where = lambda f: f"{f.__module__} ({getattr(sys.modules.get(f.__module__), '__file__', '?')})"
    same_file = where(old).split(" ", 1)[1] == where(new).split(" ", 1)[1]
    hint = (
        "the same file was imported under two module names; import it once (a script that "
        "imports the file itself should let `--import`/`load_run` find it in sys.modules, "
        "or call aevae_jax.import_models(path) instead of importing it)"
        if same_file
        else "rename one of them"
    )
    return f"model name {name!r} is registered twice, by {where(old)} and {where(new)}: {hint}"


# What each option type accepts: bools are not ints here, and ints are accepted as floats.
_ACCEPTS = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def option_type(f: dataclasses.Field, owner: type) -> type:
    """The Python type of an option field (string annotations resolved)."""
    hints = typing.get_type_hints(owner)
    return hints[f.name]


def _check_options_class(name: str, options: type) -> None:
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"options of model {name!r} must be a dataclass")
    for f in dataclasses.fields(options):
        if f.default is dataclasses.MISSING:
            raise TypeError(f"option {name}.{f.name} needs a default")
        if option_type(f, options) not in _ACCEPTS:
            raise TypeError(f"option {name}.{f.name} must be a bool, int, float or str")


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # a broken third-party package must not break the others
            print(
                f"aevae: warning: models from entry point {ep.value!r} failed: {e}", file=sys.stderr
            )


def import_models(spec: str) -> str:
    """Import a module that registers models: a dotted module name, or a path to a
    `.py` file. Returns how to find it again (the module name, or the file's absolute
    path), which a run records in its config."""
    _load_all()
    if spec.endswith(".py"):
        path = os.path.abspath(spec)
        require(os.path.isfile(path), f"--import {spec!r}: no such file")
        if _loaded_from(path):  # already imported, under whatever module name
            return path
        module_name = "aevae_user_models_" + os.path.splitext(os.path.basename(path))[0]
        loaded = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loaded)
        sys.modules[module_name] = module
        try:
            loaded.loader.exec_module(module)
        except UserError:
            raise
        except Exception as e:
            del sys.modules[module_name]
            raise UserError(f"--import {spec!r} failed: {type(e).__name__}: {e}") from None
        return path
    try:
        importlib.import_module(spec)
    except ImportError as e:
        raise UserError(
            f"--import {spec!r}: {e}; pass an importable module name or a path to a .py file"
        ) from None
    return spec


def _loaded_from(path: str) -> bool:
    """Whether a loaded module was executed from the file `path`."""
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and os.path.abspath(file) == path:
            return True
    return False


def model_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    _load_all()
    if name not in _REGISTRY:
        raise UserError(
            f"unknown model {name!r}; choose one of {', '.join(model_names())} "
            "(or register your own and pass --import MODULE)"
        )
    return _REGISTRY[name]


def resolve(cfg: ModelConfig) -> ModelConfig:
    """`cfg` with its name checked, its likelihood set (the model's default when None)
    and its options validated and completed with the model's defaults. Fails with one
    UserError naming the remedy; needs no data."""
    info = model_info(cfg.name)
    likelihood = cfg.likelihood or info.default_likelihood
    require(
        not (info.needs_density and likelihood == "mse"),
        f"the {cfg.name} model needs a normalised likelihood; use --likelihood bernoulli "
        "or gaussian",
    )
    options = resolve_options(info, cfg.options)
    return dataclasses.replace(cfg, likelihood=likelihood, options=options)


def resolve_options(info: ModelInfo, given: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in info.option_fields()}
    unknown = sorted(set(given) - known)
    require(
        not unknown,
        f"the {info.name} model has no option {', '.join(unknown)}; its options are "
        f"{', '.join(sorted(known)) or 'none'} (see `aevae models`)",
    )
    if info.options is None:
        return {}
    values = {**info.option_defaults(), **given}
    for f in info.option_fields():
        values[f.name] = _coerce(info.name, f.name, option_type(f, info.options), values[f.name])
    opts = info.options(**values)  # __post_init__ validates
    return dataclasses.asdict(opts)


def _coerce(model: str, name: str, kind: type, value: Any) -> Any:
    require(
        _ACCEPTS[kind](value), f"option {name} of {model} must be a {kind.__name__}, got {value!r}"
    )
    return float(value) if kind is float else value


def make_model(cfg: ModelConfig, spec: DataSpec) -> Model:
    """Build the registered model `cfg.name` for data described by `spec`."""
    cfg = resolve(cfg)
    info = model_info(cfg.name)
    require(
        not info.needs_labels or spec.num_classes is not None,
        f"the {cfg.name} model is conditioned on class labels, but {spec.name} has none; "
        "use a labelled data set (or an .npz with y_train and y_test)",
    )
    opts = None if info.options is None else info.options(**cfg.options)
    return info.factory(cfg, spec, opts)
