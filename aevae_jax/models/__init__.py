"""The model registry: a name maps to a factory `(ModelConfig, image_shape) -> Model`.

A new model is one new file in this package that decorates its factory with
`@register("name")`; every module here is imported on first use, so nothing else
changes. Callers use `make_model`, never an if-chain on names.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from aevae_jax.config import ModelConfig
from aevae_jax.errors import UserError
from aevae_jax.models.base import Batch, Encoding, Model

__all__ = ["Batch", "Encoding", "Model", "make_model", "model_names", "register"]

Factory = Callable[[ModelConfig, tuple[int, ...]], Model]
_REGISTRY: dict[str, Factory] = {}
_loaded = False


def register(name: str) -> Callable[[Factory], Factory]:
    """Decorator: make `factory` buildable as `make_model(ModelConfig(name=name), ...)`."""

    def add(factory: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return add


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True


def model_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def make_model(cfg: ModelConfig, image_shape: tuple[int, ...]) -> Model:
    """Build the registered model `cfg.name` for images of `image_shape` [H, W, C]."""
    _load_all()
    if cfg.name not in _REGISTRY:
        raise UserError(f"unknown model {cfg.name!r}; choose one of {', '.join(model_names())}")
    return _REGISTRY[cfg.name](cfg, tuple(image_shape))
