"""Evaluation: metrics over a whole split, vmap-based, in fixed-size chunks.

Per-example functions are written for one example and vectorised with `jax.vmap`;
`map_examples` runs them over a split in chunks with `lax.map`, padding the last
chunk and dropping the padding, so results never depend on the chunk size. Each
example's randomness comes from `fold_in(key, example_index)`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.data import preprocess
from aevae_jax.models import Batch, Model

TEST_SPLIT = 1  # split id for static binarization keys


def map_examples(fn: Callable, arrays, chunk: int = 1000):
    """Apply `fn(*per_example_arrays, index)` to every example of `arrays` (a tuple of
    [N, ...] arrays or None), vmapped within chunks and `lax.map`ped over chunks.
    Returns fn's outputs stacked to [N, ...]."""
    n = next(a.shape[0] for a in arrays if a is not None)
    chunk = min(chunk, n)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n

    def chunked(a):
        if a is None:
            return None
        a = jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)]) if pad else a
        return a.reshape(n_chunks, chunk, *a.shape[1:])

    index = jnp.arange(n_chunks * chunk, dtype=jnp.int32).reshape(n_chunks, chunk)
    xs = (tuple(chunked(a) for a in arrays), index)
    out = jax.lax.map(lambda c: jax.vmap(fn)(*c[0], c[1]), xs)
    return jax.tree.map(lambda o: o.reshape(n_chunks * chunk, *o.shape[2:])[:n], out)


def make_loss_per_example(model: Model, binarize: str) -> Callable:
    """(params, x_stored, y, key, step) -> (loss [N], metrics {name: [N]}) over a split.

    Each example is preprocessed and scored with keys from fold_in(key, index), so the
    value is the same whatever the chunking; the mean over N is the split's loss.
    """

    def one(params, key, step, x, y, i):
        k_bin, k_model = jax.random.split(jax.random.fold_in(key, i))
        xb = preprocess(x[None], binarize, k_bin, i[None], split=TEST_SPLIT)
        batch = Batch(xb, None if y is None else y[None])
        return model.loss(params, batch, k_model, step)

    @jax.jit
    def losses(params, x, y, key, step):
        return map_examples(functools.partial(one, params, key, step), (x, y))

    return losses


def mean_metrics(loss: jax.Array, metrics: dict) -> dict[str, float]:
    """Split means of per-example loss and metrics as Python floats."""
    out = {"loss": float(np.mean(loss))}
    out.update({k: float(np.mean(v)) for k, v in metrics.items()})
    return out
