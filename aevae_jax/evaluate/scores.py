"""Per-example scores of a model: the single-sample -ELBO, the IWAE bound, the
reconstruction errors through the code and under the evaluator's fixed corruptions, and
the per-epoch test that ranks checkpoints.

The training objective is never used to report a likelihood: the test -ELBO is the
importance-weighted estimate with K = 1 (`log_importance_weights`, the model's own
prior, beta = 1); the objective is reported under its own name (`test_objective`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.data.preprocess import preprocess
from aevae_jax.evaluate import metrics as M
from aevae_jax.evaluate.split import TEST_SPLIT, SplitMap, eval_mode, one
from aevae_jax.models import Batch, Model
from aevae_jax.nn.corruption import patch_grid, patch_mask, pixel_mask
from aevae_jax.nn.likelihoods import (
    bernoulli_log_prob,
    squared_error,
    sum_per_example,
)


def neg_elbo(model: Model, params, batch: Batch, key) -> jax.Array:
    """[B] single-sample negative ELBO: -log w with K = 1 (true prior, beta = 1)."""
    return -iwae_log_likelihood(model.log_importance_weights, params, batch, key, 1)


def recon_nll(model: Model, params, batch: Batch) -> jax.Array:
    """[B] -log p(x | code) through the deterministic code (the Gaussian's mean)."""
    code = model.encode(params, batch).code
    return model.likelihood.nll(model.decode(params, code, batch.y), batch.x)


def selection_metric(model: Model) -> str:
    """The step-independent test metric that ranks checkpoints: the -ELBO where the
    model defines a density, else the reconstruction NLL (the AE's MSE)."""
    return "test_neg_elbo" if model.log_importance_weights is not None else "test_recon_nll"


def make_epoch_test(model: Model, loss: Callable, binarize: str, chunk: int = 1000) -> Callable:
    """(params, x_stored, y, key, step) -> {"test_objective", "test_terms",
    selection_metric: value}: split means, for the per-epoch log and the best checkpoint.

    The objective is `loss` (the stage's training objective, at `step`); each example's
    key is fold_in(key, index), so values do not depend on the chunking."""
    mode = eval_mode(binarize)
    select = selection_metric(model)

    def per_example(context, x, y, i):
        params, key, step = context
        batch = Batch(
            preprocess(x[None], mode, None, i[None], split=TEST_SPLIT),
            None if y is None else y[None],
        )
        value, terms = loss(params, batch, jax.random.fold_in(jax.random.fold_in(key, 0), i), step)
        k_sel = jax.random.fold_in(jax.random.fold_in(key, 1), i)
        selected = (
            neg_elbo(model, params, batch, k_sel)[0]
            if select == "test_neg_elbo"
            else recon_nll(model, params, batch)[0]
        )
        return value, terms, selected

    run = SplitMap(per_example, chunk)

    def test(params, x, y, key, step) -> dict:
        value, terms, selected = jax.device_get(run((params, key, step), (x, y)))
        return {
            "test_objective": float(np.mean(value)),
            "test_terms": {k: float(np.mean(v)) for k, v in terms.items()},
            select: float(np.mean(selected)),
        }

    return test


def reconstruction_errors(model: Model, params, batch: Batch) -> dict[str, jax.Array]:
    """Per-example reconstruction errors through the code: squared error summed over
    pixels (the article's ||X - X_hat||^2), PSNR in dB (peak 1, per-pixel mean squared
    error), the model's own -log p(x | code), and the Bernoulli cross-entropy in nats
    where the decoder gives one logit per sub-pixel."""
    logits = model.decode(params, model.encode(params, batch).code, batch.y)
    x = batch.x
    sq = sum_per_example(squared_error(model.likelihood.mean(logits), x))
    errors = {
        "mse": sq,
        "psnr": M.psnr(sq, math.prod(x.shape[1:])),
        "recon_nll": model.likelihood.nll(logits, x),
    }
    if model.likelihood.channels == 1:  # decoder outputs are Bernoulli logits
        errors["bce"] = -sum_per_example(bernoulli_log_prob(logits, x))
    return errors


# The evaluator's fixed tests, the same for every model: salt-and-pepper noise on 20% of
# the pixels (denoising), and round(0.5 n) of the n 4 x 4 patches hidden (inpainting;
# Python rounds half to even: 24 of 49 on 28 x 28 images, 32 of 64 on 32 x 32).
EVAL_NOISE = ("salt_and_pepper", 0.2)


EVAL_PATCH, EVAL_MASK_RATIO = 4, 0.5


def inpainting_text(image_shape=None) -> str:
    """How many patches the inpainting test hides, in words: "24 of the 49 4x4 patches"
    for `image_shape` [H, W, C] (the rule alone without one)."""
    grid = None if image_shape is None else patch_grid(tuple(image_shape), EVAL_PATCH)
    if grid is None:
        return f"round({EVAL_MASK_RATIO} n) of the n {EVAL_PATCH}x{EVAL_PATCH} patches"
    n = grid[0] * grid[1]
    return f"{round(EVAL_MASK_RATIO * n)} of the {n} {EVAL_PATCH}x{EVAL_PATCH} patches"


def inpainting_mask(key: jax.Array, image_shape: tuple[int, ...]) -> jax.Array | None:
    """One test image's pixel visibility [H, W, 1] for the inpainting test (None where
    EVAL_PATCH does not divide the image)."""
    grid = patch_grid(image_shape, EVAL_PATCH)
    if grid is None:
        return None
    return pixel_mask(patch_mask(key, 1, grid, EVAL_MASK_RATIO), EVAL_PATCH)[0]


def iwae_log_likelihood(
    log_weights: Callable, params, batch, key: jax.Array, k: int, k_chunk: int = 100
) -> jax.Array:
    """Importance-weighted estimate log (1/K) sum_k p(x, z_k) / q(z_k | x), per example.

    log_weights(params, batch, key, c) -> [c, B] (a model's log_importance_weights).
    Sample j is drawn with its own key fold_in(key, j), so the estimate does not depend
    on `k_chunk`; the samples are vmapped in chunks of `k_chunk` and combined by a
    running log-sum-exp inside `lax.scan`, so memory is O(k_chunk). Returns [B]; for
    K = 1 it is the single-sample Monte-Carlo ELBO log p(x|z) + log p(z) - log q(z|x)
    with z drawn from fold_in(key, 0).
    """
    k_chunk = min(k_chunk, k)
    n_full = k // k_chunk
    b = jax.tree.leaves(batch)[0].shape[0]

    def chunk_log_w(js):  # sample indices [c] -> log weights [c, B]
        return jax.vmap(lambda j: log_weights(params, batch, jax.random.fold_in(key, j), 1)[0])(js)

    def body(total, js):
        return jnp.logaddexp(total, jax.nn.logsumexp(chunk_log_w(js), axis=0)), None

    total = jnp.full((b,), -jnp.inf)
    full = jnp.arange(n_full * k_chunk, dtype=jnp.int32).reshape(n_full, k_chunk)
    total, _ = jax.lax.scan(body, total, full)
    if k > n_full * k_chunk:
        total, _ = body(total, jnp.arange(n_full * k_chunk, k, dtype=jnp.int32))
    return total - math.log(k)


def iwae_bound(model: Model, k: int) -> Callable:
    """Per example: the K-sample bound log (1/K) sum_k w_k, with the example's own key."""

    def bound(context, xi, yi, i):
        params, key = context
        return iwae_log_likelihood(
            model.log_importance_weights, params, one(xi, yi), jax.random.fold_in(key, i), k
        )[0]

    return bound
