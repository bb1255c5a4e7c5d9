"""aevae_jax: autoencoders and variational autoencoders in JAX, compared by measurement.

Public API (heavy modules such as tfds load only when data is loaded):
    RunConfig, DataConfig, ModelConfig, OptimConfig      frozen configuration
    load_dataset, Dataset, DataSpec, preprocess          data
    Model, Batch, Encoding, Stage, Prior, Claim          the model protocol
    register, make_model, model_names, model_info,       the registry
      import_models
    make_optimizer, param_groups, frozen                 optimisers
    fit, FitResult, make_train_epoch, make_streams       training
    fit_seeds, make_epoch_fn                             several seeds in one program
    make_placement, Placement, initialize_distributed    devices and hosts
    load_run, LoadedRun                                  reading a run back
    evaluate_model, iwae_log_likelihood                  evaluation
    prior_images, expost_gaussian, decode_samples        sampling
    run_compare, run_zoo                                 several models compared; the zoo
    UserError                                            the error every bad input raises
"""

from aevae_jax.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from aevae_jax.data.preprocess import preprocess
from aevae_jax.data.sources import load_dataset
from aevae_jax.data.spec import Dataset, DataSpec
from aevae_jax.errors import UserError
from aevae_jax.evaluate.evaluation import evaluate_model
from aevae_jax.evaluate.samplers import decode_samples, expost_gaussian, prior_images
from aevae_jax.evaluate.scores import iwae_log_likelihood
from aevae_jax.models import (
    Batch,
    Claim,
    Encoding,
    Model,
    Prior,
    Stage,
    import_models,
    make_model,
    model_info,
    model_names,
    register,
)
from aevae_jax.nn.optim import frozen, make_optimizer, param_groups
from aevae_jax.train.fit import FitResult, fit, fit_seeds
from aevae_jax.train.parallel import Placement, initialize_distributed, make_placement
from aevae_jax.train.runs import LoadedRun, load_run
from aevae_jax.train.step import make_epoch_fn, make_streams, make_train_epoch

__all__ = [
    "Batch",
    "Claim",
    "DataConfig",
    "DataSpec",
    "Dataset",
    "Encoding",
    "FitResult",
    "LoadedRun",
    "Model",
    "ModelConfig",
    "OptimConfig",
    "Placement",
    "Prior",
    "RunConfig",
    "Stage",
    "UserError",
    "decode_samples",
    "evaluate_model",
    "expost_gaussian",
    "fit",
    "fit_seeds",
    "frozen",
    "import_models",
    "initialize_distributed",
    "iwae_log_likelihood",
    "load_dataset",
    "load_run",
    "make_epoch_fn",
    "make_model",
    "make_optimizer",
    "make_placement",
    "make_streams",
    "make_train_epoch",
    "model_info",
    "model_names",
    "param_groups",
    "preprocess",
    "prior_images",
    "register",
    "run_compare",
    "run_zoo",
]

# The comparison and the zoo bring matplotlib and the classifier: imported on first use.
_LAZY = {"run_compare": "aevae_jax.study.compare", "run_zoo": "aevae_jax.study.zoo"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aevae_jax' has no attribute {name!r}")
