"""Evaluation of one trained model over the test split: the metric groups of groups.py in
order, each where the model has the capability it needs. catalogue.py says what every
number means; nothing here depends on a model's name.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from aevae_jax.evaluate.groups import GROUPS, KEY_NAMES, Context
from aevae_jax.evaluate.samplers import SamplerOptions
from aevae_jax.models import Model


@dataclasses.dataclass
class Evaluation:
    """metrics: split-level numbers (the metrics.json vocabulary); per_image: the
    per-test-image values behind the means, for paired comparisons between models."""

    metrics: dict
    per_image: dict[str, np.ndarray]


def evaluate_model(
    model: Model,
    params,
    dataset,
    binarize: str,
    key: jax.Array,
    iwae_k: int = 1000,
    classifier=None,
    n_samples: int | None = None,
    chunk: int = 500,
    progress: bool = False,
    samplers: SamplerOptions | None = None,
) -> Evaluation:
    """The test-split metrics of one trained model (see catalogue.py for every key).

    Every model gets the reconstruction group (MSE, PSNR, NLL through the code, denoising
    and inpainting errors); then, by capability: a Gaussian q(z|x) the rate against the
    model's own prior, the distortion and the posterior's shape per layer; continuous
    codes the distance of q(z) to the prior and the codes' sparsity; discrete codes the
    codebook's use; the model's own `code_report`; a density (log_importance_weights)
    the -ELBO (K = 1) and the IWAE NLL (K = iwae_k, one sample for point posteriors), in
    bits per dimension where the likelihood is a mass function of the data; labels a
    linear probe; a domain classifier the sample FDs (`n_samples` samples; default one per
    test image; the prior's and each of `samplers`' ex-post samplers', default the
    ex-post Gaussian and mixture). `key` is the run's evaluation key (`split.evaluation_key`).
    """
    keys = {n: jax.random.fold_in(key, i) for i, n in enumerate(KEY_NAMES)}
    ctx = Context(model, params, dataset, binarize, keys, iwae_k, classifier, n_samples,
                  chunk, progress, samplers or SamplerOptions())  # fmt: skip
    for group in GROUPS:
        if group.applies(ctx):
            group.run(ctx)
    return Evaluation(ctx.metrics, ctx.per_image)
