"""Maps over whole splits, vmap-based, in chunks.

Per-example functions are written for one example (a batch of one) and vectorised
with `jax.vmap`; `map_examples` runs them over a split in fixed-size chunks with
`lax.map`, padding the last chunk and dropping the padding, so results never depend
on the chunk size. Each example's randomness comes from `fold_in(key, example_index)`.
Test inputs are binarized once, by a fixed draw (`eval_inputs`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from aevae_jax.data.preprocess import preprocess
from aevae_jax.models import Batch, Encoding, Model
from aevae_jax.progress import progress_bar

TRAIN_SPLIT, TEST_SPLIT = 0, 1  # split ids of the static binarization keys


def map_examples(fn: Callable, arrays, chunk: int = 1000, offset=0):
    """Apply `fn(*per_example_arrays, index)` to every example of `arrays` (a tuple of
    [N, ...] arrays or None), vmapped within chunks and `lax.map`ped over chunks. The
    index of example i is offset + i. Returns fn's outputs stacked to [N, ...]."""
    n = next(a.shape[0] for a in arrays if a is not None)
    chunk = min(chunk, n)
    n_chunks = -(-n // chunk)

    def chunked(a):
        if a is None:
            return None
        return _padded(a, n_chunks * chunk).reshape(n_chunks, chunk, *a.shape[1:])

    index = offset + jnp.arange(n_chunks * chunk, dtype=jnp.int32).reshape(n_chunks, chunk)
    xs = (tuple(chunked(a) for a in arrays), index)
    out = jax.lax.map(lambda c: jax.vmap(fn)(*c[0], c[1]), xs)
    return jax.tree.map(lambda o: o.reshape(n_chunks * chunk, *o.shape[2:])[:n], out)


class SplitMap:
    """`fn(context, *per_example_arrays, index)` over whole splits, compiled once.

    The split runs in blocks of `block` examples from Python (one compiled function,
    the last block padded), so long evaluations show a progress bar; within a block,
    `map_examples` chunks by `chunk`. `context` (parameters, keys) is an argument,
    never a constant baked into the compiled code. `run_block(context, arrays, offset)` is
    the compiled function of one block (examples offset, offset + 1, ...)."""

    def __init__(self, fn: Callable, chunk: int = 500, block: int | None = None):
        self.block = block
        self.run_block = jax.jit(
            lambda context, arrays, offset: map_examples(
                functools.partial(fn, context), arrays, chunk, offset
            )
        )

    def __call__(self, context, arrays, desc: str | None = None, progress: bool = False):
        n = next(a.shape[0] for a in arrays if a is not None)
        if self.block is None or n <= self.block:
            return self.run_block(context, arrays, 0)
        starts = range(0, n, self.block)
        starts = progress_bar(starts, desc=desc, unit="block", enabled=progress)
        outs = []
        for s in starts:
            part = tuple(
                None if a is None else _padded(a[s : s + self.block], self.block) for a in arrays
            )
            outs.append(self.run_block(context, part, s))
            if progress:  # the bar shows finished work, not dispatched work
                jax.block_until_ready(outs[-1])
        return jax.tree.map(lambda *o: jnp.concatenate(o)[:n], *outs)


def _padded(a, size: int):
    """[n, ...] -> [size, ...], zeros after the n examples."""
    pad = size - a.shape[0]
    return jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)]) if pad else a


def evaluation_key(seed: int) -> jax.Array:
    """The key of a run's test evaluation (IWAE samples, FD samples, probes): one per
    seed, so `aevae evaluate` and `aevae compare` draw the same numbers for a run."""
    return jax.random.fold_in(jax.random.key(seed), 1000)


def eval_mode(binarize: str) -> str:
    """Test inputs are binarized once, by the fixed static test draw, whenever training
    binarizes: every model, epoch and run then sees the very same test images."""
    return "none" if binarize == "none" else "static"


@functools.partial(jax.jit, static_argnames=("binarize", "split"))
def eval_inputs(x: jax.Array, binarize: str, split: int = TEST_SPLIT) -> jax.Array:
    """A whole stored split [N, ...] as model input [N, H, W, C] float32, binarized by
    that split's fixed draw (for training images, the very draw static training uses).
    Compiled once per shape: the same bits as the eager draw, without an op-by-op
    compilation for every model evaluated."""
    index = jnp.arange(x.shape[0], dtype=jnp.int32)
    return preprocess(x, eval_mode(binarize), None, index, split=split)


def one(x, y) -> Batch:
    """One example as a batch of one."""
    return Batch(x[None], None if y is None else y[None])


def encode_example(model: Model) -> Callable:
    """(params, x, y, index) -> the Encoding of one example, for SplitMap."""
    return lambda p, xi, yi, i: jax.tree.map(lambda a: a[0], model.encode(p, one(xi, yi)))


def encode_split(model: Model, params, x: jax.Array, y=None, chunk: int = 500) -> Encoding:
    """Encoding of every example of model inputs x [N, H, W, C] (labels y), in chunks."""
    return SplitMap(encode_example(model), chunk)(params, (x, y))
