"""aevae_jax: autoencoders and variational autoencoders in JAX, compared by measurement.

Public API (heavy modules such as tfds load only when data is loaded):
    RunConfig, DataConfig, ModelConfig, OptimConfig   frozen configuration
    load_dataset, preprocess                          data
    make_model, model_names, register, Model, Batch   the model protocol and registry
    fit, make_train_epoch, make_optimizer             training
    UserError                                         the error every bad input raises
"""

from aevae_jax.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from aevae_jax.data import Dataset, load_dataset, preprocess
from aevae_jax.errors import UserError
from aevae_jax.models import Batch, Encoding, Model, make_model, model_names, register
from aevae_jax.train import fit, make_optimizer, make_streams, make_train_epoch

__all__ = [
    "Batch",
    "DataConfig",
    "Dataset",
    "Encoding",
    "Model",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "UserError",
    "fit",
    "load_dataset",
    "make_model",
    "make_optimizer",
    "make_streams",
    "make_train_epoch",
    "model_names",
    "preprocess",
    "register",
]
