"""Frozen configuration: what to train, on which data, with which optimiser.

Every field is validated when the dataclass is built (`__post_init__`), so a bad value
fails with a `UserError` before any data is loaded or anything is compiled. Configs
round-trip through plain dicts (`to_dict` / `from_dict`), which is how a run directory
remembers how it was made.

Each field that the command line sets says so once, in its `option(...)`: its flag, help
text, help group, choices and how a flag value is parsed (`Option`). The `aevae` parser,
the config it builds from parsed flags and the defaults a resumed run reads back are all
made from these (aevae_jax/cli/flags.py), so adding a field is one edit here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

from aevae_jax.errors import UserError, require

BINARIZE_MODES = ("dynamic", "static", "none")
BACKBONES = ("mlp", "conv")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
INITS = ("lecun", "torch")  # Flax's layer defaults, or PyTorch's (see nets.layer_init)
DTYPES = ("float32", "bfloat16")  # the networks' compute dtype; parameters stay float32
# Names checked here, before any data loads; nets.ACTIVATIONS and likelihoods.LIKELIHOODS
# hold the functions (a test keeps the names in step).
ACTIVATION_NAMES = ("relu", "tanh", "elu", "gelu", "silu", "leaky_relu")
LIKELIHOOD_NAMES = ("bernoulli", "mse", "gaussian", "logistic")

# The help groups of the options, in the order `aevae train --help` shows them.
DATA, BACKBONE, OPTIMISATION, RUN = (
    "data",
    "backbone (shared by every model)",
    "optimisation",
    "run",
)
OPTION = "option"  # the metadata key of a field's `Option`


def sizes(values) -> tuple[int, ...]:
    """Several sizes given as `512 256`, `512,256` or both -> (512, 256) (ValueError on a
    non-integer); a tuple of ints passes through."""
    return tuple(int(v) for item in values for v in str(item).split(",") if v)


@dataclasses.dataclass(frozen=True)
class Option:
    """How the command line sets one config field.

    parse: int, float or str (the flag's value), bool (a `--flag/--no-flag` pair), or
      `sizes` (one or more values, `--hidden 512 256` or `--hidden 512,256`).
    default_text: what a None default means, for --help (e.g. "all").
    unset: the parser's default is None whatever the field's, so that a command can
      tell a given flag from an absent one (None then means the field's default).
    shortcut: (flag, value, help) of a second flag that sets the field to `value`.
    """

    flag: str
    help: str
    group: str
    parse: Callable[[Any], Any]
    choices: tuple[str, ...] | None = None
    default_text: str | None = None
    unset: bool = False
    shortcut: tuple[str, Any, str] | None = None

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments that holds the flag's value."""
        return self.flag.removeprefix("--").replace("-", "_")


def option(
    default: Any = dataclasses.MISSING,
    *,
    flag: str,
    group: str,
    help: str = "",
    parse: Callable[[Any], Any] | None = None,
    default_factory: Any = dataclasses.MISSING,
    **kwargs: Any,
) -> Any:
    """A dataclass field set by the command-line flag `flag` (see `Option`); `parse`
    defaults to the type of `default` (int, float, str or bool)."""
    if parse is None:
        parse = type(default)
        if parse not in (int, float, str, bool):
            raise TypeError(f"option {flag}: say how its value is parsed (parse=)")
    meta = {OPTION: Option(flag, help, group, parse, **kwargs)}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def option_fields(cls: type | None = None, prefix: str = ""):
    """(dotted name, field, Option) of every field of RunConfig (or `cls`) that the command
    line sets, nested configs' fields included, in declaration order."""
    for f in dataclasses.fields(cls or RunConfig):
        if f.name in _NESTED:
            yield from option_fields(_NESTED[f.name], f"{prefix}{f.name}.")
        elif OPTION in f.metadata:
            yield f"{prefix}{f.name}", f, f.metadata[OPTION]


def _positive_int(name: str, value: Any) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive integer, got {value!r}",
    )


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    require(value in options, f"{name} must be one of {', '.join(options)}; got {value!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data, how much of it, and how pixels become targets. What each field means
    (the data sets `dataset` names among them) is said once, in its option's help."""

    dataset: str = option(
        "fashion_mnist",
        flag="--dataset",
        group=DATA,
        help="tfds name (fashion_mnist, mnist, binarized_mnist, kmnist, cifar10), "
        "sklearn_photos (32x32 colour patches of scikit-learn's two sample photographs, "
        "offline), sprites (32x32 shapes drawn by the project with five known factors, for "
        "the disentanglement metrics), or a path to an .npz with x_train, x_test "
        "[, y_train, y_test]",
    )
    binarize: str = option(
        "dynamic",
        flag="--binarize",
        group=DATA,
        choices=BINARIZE_MODES,
        help="dynamic: fresh Bernoulli draw every step; static: one fixed draw per example; "
        "none: grey levels in [0, 1]",
    )
    train_size: int | None = option(
        None,
        flag="--train-size",
        group=DATA,
        parse=int,
        help="use only the first N training examples",
        default_text="all",
    )
    data_dir: str | None = option(
        None,
        flag="--data-dir",
        group=DATA,
        parse=str,
        help="tfds data directory",
        default_text="tfds' own, ~/tensorflow_datasets",
    )

    def __post_init__(self):
        require(bool(self.dataset), "dataset must be a tfds name or a path to an .npz file")
        _choice("binarize", self.binarize, BINARIZE_MODES)
        if self.train_size is not None:
            _positive_int("train_size", self.train_size)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which model and backbone; the fields' options say what each means. Decoders
    mirror the encoder's sizes. `dtype` applies to the shared backbone (MLP and conv
    encoders and decoders); model-specific networks (the masked AE's token encoder, the
    VQ-VAE's prior, the adversarial AE's discriminator) stay float32.

    `name` is set by `--model` (`--models` for several), not by an option here.
    `options` holds the model's own options (beta, k, codebook size, ...) as a plain
    dict; the model's registered options dataclass validates it and fills in its
    defaults (`aevae_jax.models.resolve`), so nothing model-specific lives here.
    """

    name: str = "vae"
    backbone: str = option(
        "mlp",
        flag="--backbone",
        group=BACKBONE,
        choices=BACKBONES,
        help="dense layers (mlp), or stride-2 convolutions then dense layers (conv)",
    )
    hidden: tuple[int, ...] = option(
        (400,),
        flag="--hidden",
        group=BACKBONE,
        parse=sizes,
        help="hidden layer sizes from the input inwards, e.g. 512 256",
    )
    latent_dim: int = option(20, flag="--latent-dim", group=BACKBONE, help="size of the code")
    activation: str = option(
        "relu",
        flag="--activation",
        group=BACKBONE,
        help="one of " + ", ".join(ACTIVATION_NAMES),
    )
    likelihood: str | None = option(
        None,
        flag="--likelihood",
        group=BACKBONE,
        parse=str,
        help="bernoulli, gaussian, mse, or logistic (discretised, for 8-bit colour images "
        "with --binarize none)",
        default_text="the model's own; AE: mse, VAE: bernoulli",
    )
    conv_channels: tuple[int, ...] = option(
        (32, 64),
        flag="--conv-channels",
        group=BACKBONE,
        parse=sizes,
        help="channels of the stride-2 convolutions of --backbone conv, from the input "
        "inwards, e.g. 32 64",
    )
    init: str = option(
        "lecun",
        flag="--init",
        group=BACKBONE,
        choices=INITS,
        help="layer initialisation: Flax's defaults (lecun) or PyTorch's nn.Linear/Conv2d "
        "ones, to reproduce PyTorch set-ups (torch)",
    )
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    dtype: str = option(
        "float32",
        flag="--dtype",
        group=BACKBONE,
        choices=DTYPES,
        help="compute dtype of the networks; bfloat16 keeps float32 parameters, optimiser "
        "state, losses and log-densities",
    )

    def __post_init__(self):
        require(
            isinstance(self.options, dict),
            f"model options must be a dict of option names to values, got {self.options!r}",
        )
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "conv_channels", tuple(self.conv_channels))
        _choice("backbone", self.backbone, BACKBONES)
        _choice("init", self.init, INITS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("activation", self.activation, ACTIVATION_NAMES)
        if self.likelihood is not None:
            _choice("likelihood", self.likelihood, LIKELIHOOD_NAMES)
        _positive_int("latent_dim", self.latent_dim)
        for h in self.hidden:
            _positive_int("each hidden size", h)
        require(len(self.conv_channels) > 0, "conv_channels needs at least one entry")
        for c in self.conv_channels:
            _positive_int("each conv channel count", c)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The Optax optimiser (each field's option says what it means)."""

    optimizer: str = option("adam", flag="--optimizer", group=OPTIMISATION, choices=OPTIMIZERS)
    lr: float = option(1e-3, flag="--lr", group=OPTIMISATION, help="learning rate")
    schedule: str = option(
        "constant",
        flag="--schedule",
        group=OPTIMISATION,
        choices=SCHEDULES,
        help="learning-rate schedule; the decaying ones decay over the whole run",
    )
    warmup_steps: int = option(
        0, flag="--warmup-steps", group=OPTIMISATION, help="for warmup_cosine"
    )
    grad_clip: float | None = option(
        None,
        flag="--grad-clip",
        group=OPTIMISATION,
        parse=float,
        help="clip gradients to this global norm",
        default_text="no clipping",
    )
    weight_decay: float = option(
        0.0, flag="--weight-decay", group=OPTIMISATION, help="decoupled weight decay, for adamw"
    )

    def __post_init__(self):
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        require(
            math.isfinite(self.lr) and self.lr > 0,
            f"lr must be a positive finite number, got {self.lr!r}",
        )
        require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        require(
            self.grad_clip is None or self.grad_clip > 0,
            f"grad_clip must be positive (or omitted for no clipping), got {self.grad_clip!r}",
        )
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        require(
            self.weight_decay == 0 or self.optimizer == "adamw",
            f"weight_decay applies to adamw only; use --optimizer adamw (got {self.optimizer})",
        )
        require(
            self.warmup_steps == 0 or self.schedule == "warmup_cosine",
            "warmup_steps applies to the warmup_cosine schedule only; use --schedule "
            f"warmup_cosine (got {self.schedule})",
        )


def tensorboard_default() -> bool:
    """Whether runs write TensorBoard summaries unless told: yes, except where the
    environment variable AEVAE_TENSORBOARD is 0 (or false, no, off)."""
    return os.environ.get("AEVAE_TENSORBOARD", "1").strip().lower() not in (
        "0",
        "false",
        "no",
        "off",
    )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run: data, model, optimiser, budget, seed and output directory."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    epochs: int = option(10, flag="--epochs", group=OPTIMISATION)
    batch_size: int = option(128, flag="--batch-size", group=OPTIMISATION)
    # Unset on the parser, so that `--seed` with `--seeds` is refused.
    seed: int = option(0, flag="--seed", group=RUN, unset=True)
    out: str = option("runs/train", flag="--out", group=RUN, help="output directory")
    checkpoint_every: int = option(
        1,
        flag="--checkpoint-every",
        group=RUN,
        help="save a periodic checkpoint every N epochs",
    )
    nonfinite_patience: int = option(
        20,
        flag="--nonfinite-patience",
        group=RUN,
        help="steps whose loss, gradient or update is not finite are skipped; this many in "
        "a row stop the run with an error",
        shortcut=(
            "--stop-on-nonfinite",
            1,
            "stop at the first non-finite step (--nonfinite-patience 1)",
        ),
    )
    # On unless the environment sets AEVAE_TENSORBOARD=0 (the test suite does).
    tensorboard: bool = option(
        flag="--tensorboard",
        group=RUN,
        parse=bool,
        default_factory=lambda: tensorboard_default(),
        help="write TensorBoard summaries beside metrics.jsonl: scalars every epoch and "
        "image grids; view with `tensorboard --logdir OUT` (AEVAE_TENSORBOARD=0 in the "
        "environment turns the default off)",
    )
    image_every: int = option(
        5,
        flag="--image-every",
        group=RUN,
        help="TensorBoard image grids (test reconstructions, prior samples) every N epochs "
        "and at the last",
    )
    # Off where only the last epoch is used (the experiments): on small training sets
    # its saves cost more than the epochs.
    keep_best: bool = option(
        True,
        flag="--keep-best",
        group=RUN,
        help="keep a best checkpoint (by the model's selection metric on the test split) "
        "beside the periodic ones",
    )
    # Modules (or .py files) that register models from outside the package, set by
    # `--import`; a run remembers them so that `evaluate`, `sample` and `--resume` find
    # its model again.
    imports: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "imports", tuple(self.imports))
        require(
            self.model.likelihood != "logistic" or self.data.binarize == "none",
            "the discretised logistic likelihood models the 256 levels of 8-bit pixels; "
            f"use --binarize none with it (got --binarize {self.data.binarize})",
        )
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("checkpoint_every", self.checkpoint_every)
        _positive_int("nonfinite_patience", self.nonfinite_patience)
        _positive_int("image_every", self.image_every)
        require(isinstance(self.tensorboard, bool), "tensorboard must be true or false")
        require(isinstance(self.keep_best, bool), "keep_best must be true or false")
        require(
            isinstance(self.seed, int) and 0 <= self.seed < 2**32,
            f"seed must be an integer in [0, 2**32), got {self.seed!r}",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        try:
            nested = {k: c(**d.get(k, {})) for k, c in _NESTED.items()}
            return cls(**nested, **{k: v for k, v in d.items() if k not in _NESTED})
        except TypeError as e:  # unknown or missing keys in a hand-edited config
            raise UserError(f"configuration does not match RunConfig: {e}") from None


# The fields of RunConfig that are configs of their own.
_NESTED = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig}


def config_differences(a: RunConfig, b: RunConfig, ignore=()) -> list[str]:
    """The dotted names of the fields in which two run configs differ (e.g.
    'optim.lr', 'model.options.beta'), leaving out the top-level fields in `ignore`."""
    out = []

    def walk(x, y, prefix):
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                if not prefix and key in ignore:
                    continue
                walk(x.get(key), y.get(key), f"{prefix}{key}.")
        elif x != y:
            out.append(prefix.rstrip("."))

    walk(a.to_dict(), b.to_dict(), "")
    return out
