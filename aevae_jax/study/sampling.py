"""New images from a trained run: codes drawn from the model's prior (N(0, I) for models
without one), from N(0, I) ("normal"), or from an ex-post density fitted to its training
codes ("expost": a Gaussian; "gmm": a Gaussian mixture; "flow": a RealNVP flow; see
evaluate/samplers.py), decoded. A conditional model draws a row per class, or one class
throughout.

Sampling from the prior loads no data set: the model comes from config.json alone.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.errors import require
from aevae_jax.evaluate.samplers import (
    EXPOST,
    SAMPLER_NAMES,
    SamplerOptions,
    decode_samples,
    fit_sampler,
    prior_images,
    standard_normal,
)
from aevae_jax.evaluate.split import TRAIN_SPLIT, encode_split, eval_inputs
from aevae_jax.train.runs import LoadedRun, load_run


@dataclasses.dataclass(frozen=True)
class Samples:
    """Decoded samples [n, H, W, C] in [0, 1], laid out for a grid: `cols` wide with a
    row label each (a row per class), or near-square (both None)."""

    images: np.ndarray
    title: str
    labels: list[str] | None = None
    cols: int | None = None


def class_layout(run: LoadedRun, n: int, label: int | None):
    """(labels y, row labels, columns) of `n` samples of `run`: None for an
    unconditional model; class `label` throughout; else a row of n // classes per class."""
    model = run.model
    if not model.conditional:
        require(
            label is None,
            f"--label applies to conditional models; {model.name} is not conditioned on labels",
        )
        return None, None, None
    classes = run.spec.num_classes
    if label is not None:
        require(0 <= label < classes, f"--label must lie in [0, {classes - 1}]")
        return jnp.full((n,), label, jnp.int32), None, None
    cols = max(1, n // classes)
    names = run.spec.class_names or [str(c) for c in range(classes)]
    return jnp.repeat(jnp.arange(classes), cols), list(names), cols


def expost_images(
    run: LoadedRun, key: jax.Array, n: int, y=None, sampler: str = "expost", opts=None
) -> jax.Array:
    """`n` images decoded from the ex-post `sampler` fitted to the codes of the run's
    training split (`key` splits into the fit's key and the draws')."""
    model = run.model
    x = eval_inputs(jnp.asarray(run.dataset.x_train), run.cfg.data.binarize, TRAIN_SPLIT)
    y_train = None if run.dataset.y_train is None else jnp.asarray(run.dataset.y_train)
    codes = encode_split(model, run.params, x, y_train)
    require(
        codes.indices is None,
        f"--sampler {sampler} needs continuous codes; {model.name} "
        "has discrete ones (use --sampler prior)",
    )
    fit_key, draw_key = jax.random.split(key)
    fitted = fit_sampler(sampler, codes.features, fit_key, opts or SamplerOptions())
    return decode_samples(model, run.params, fitted, draw_key, n, y)


def sample_run(
    run_dir: str,
    n: int,
    sampler: str = "prior",
    label: int | None = None,
    seed: int = 0,
    checkpoint: str = "best",
    opts: SamplerOptions | None = None,
) -> Samples:
    """`n` samples of the run in `run_dir` (about `n`, a whole row per class, for a
    conditional model without `label`); a UserError if they are not finite."""
    require(sampler in SAMPLER_NAMES, f"--sampler must be one of {', '.join(SAMPLER_NAMES)}")
    run = load_run(run_dir, checkpoint, need_data=sampler in EXPOST)
    key = jax.random.key(seed)
    y, labels, cols = class_layout(run, n, label)
    n = n if y is None else len(y)
    if sampler == "prior":
        images = prior_images(run.model, run.params, key, n, y)
    elif sampler == "normal":
        latent = standard_normal(int(np.prod(run.model.code_shape)))
        images = decode_samples(run.model, run.params, latent, key, n, y)
    else:
        images = expost_images(run, key, n, y, sampler, opts)
    images = np.asarray(images)
    require(
        np.isfinite(images).all(),
        f"the samples of {run_dir!r} are not finite: its parameters have diverged (see its "
        "metrics.jsonl); train it again with a lower --lr or with --grad-clip",
    )
    title = f"{run.model.name}: {n} samples ({sampler}), seed {seed}"
    return Samples(images, title, labels, cols)
