"""Frozen configuration: what to train, on which data, with which optimiser.

Every field is validated when the dataclass is built (`__post_init__`), so a bad value
fails with a `UserError` before any data is loaded or anything is compiled. Configs
round-trip through plain dicts (`to_dict` / `from_dict`), which is how a run directory
remembers how it was made.
"""

from __future__ import annotations

import dataclasses
import math
import os
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


def _positive_int(name: str, value: Any) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive integer, got {value!r}",
    )


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    require(value in options, f"{name} must be one of {', '.join(options)}; got {value!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data, how much of it, and how pixels become targets.

    dataset: a tfds name (fashion_mnist, mnist, binarized_mnist, kmnist, cifar10) or a
      path to an `.npz` file with `x_train`, `x_test` (optional `y_train`, `y_test`).
    binarize: `dynamic` draws x ~ Bernoulli(pixel) with a fresh key every step,
      `static` draws once per example (a fixed key per example index), `none` keeps
      the grey levels in [0, 1].
    train_size: use the first `train_size` training examples (None: all of them).
    data_dir: where tfds keeps prepared data sets (None: tfds' default).
    """

    dataset: str = "fashion_mnist"
    binarize: str = "dynamic"
    train_size: int | None = None
    data_dir: str | None = None

    def __post_init__(self):
        require(bool(self.dataset), "dataset must be a tfds name or a path to an .npz file")
        _choice("binarize", self.binarize, BINARIZE_MODES)
        if self.train_size is not None:
            _positive_int("train_size", self.train_size)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which model and backbone. Hidden sizes are listed from the input inwards;
    decoders mirror them. `likelihood=None` takes the model's default (AE: mse,
    VAE: bernoulli). `init` picks the layer initialisation: 'lecun' (Flax's defaults) or
    'torch' (PyTorch's nn.Linear/Conv2d defaults, to reproduce PyTorch set-ups).
    `dtype` is the compute dtype of the shared backbone (MLP and conv encoders and
    decoders): 'bfloat16' computes them in bfloat16 with float32 parameters, optimiser
    state, losses and log-densities. Model-specific networks (the masked AE's token
    encoder, the VQ-VAE's prior, the adversarial AE's discriminator) stay float32.

    `options` holds the model's own options (beta, k, codebook size, ...) as a plain
    dict; the model's registered options dataclass validates it and fills in its
    defaults (`aevae_jax.models.resolve`), so nothing model-specific lives here.
    """

    name: str = "vae"
    backbone: str = "mlp"
    hidden: tuple[int, ...] = (400,)
    latent_dim: int = 20
    activation: str = "relu"
    likelihood: str | None = None
    conv_channels: tuple[int, ...] = (32, 64)
    init: str = "lecun"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    dtype: str = "float32"

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
    """The Optax optimiser. `grad_clip` is a global-norm clip (None: no clipping);
    schedules decay over the whole run; `warmup_steps` applies to warmup_cosine."""

    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = None
    weight_decay: float = 0.0

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
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    out: str = "runs/train"
    checkpoint_every: int = 1
    # Consecutive non-finite steps (loss, gradient or update) that are skipped before the
    # run stops with an error; 1 stops at the first.
    nonfinite_patience: int = 20
    # TensorBoard event files beside metrics.jsonl: scalars every epoch, and image grids
    # (test reconstructions, prior samples) every `image_every` epochs and at the last.
    # On unless the environment sets AEVAE_TENSORBOARD=0 (the test suite does).
    tensorboard: bool = dataclasses.field(default_factory=lambda: tensorboard_default())
    image_every: int = 5
    # Keep a best checkpoint (by the model's selection metric on the test split) beside
    # the periodic ones. Off where only the last epoch is used (the experiments): on small
    # training sets its saves cost more than the epochs.
    keep_best: bool = True
    # Modules (or .py files) that register models from outside the package; a run
    # remembers them so that `evaluate`, `sample` and `--resume` find its model again.
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
            return cls(
                data=DataConfig(**d.get("data", {})),
                model=ModelConfig(**d.get("model", {})),
                optim=OptimConfig(**d.get("optim", {})),
                **{k: v for k, v in d.items() if k not in ("data", "model", "optim")},
            )
        except TypeError as e:  # unknown or missing keys in a hand-edited config
            raise UserError(f"configuration does not match RunConfig: {e}") from None


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
