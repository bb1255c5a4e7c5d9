"""The preprocessing applied inside compiled steps: stored images to [0, 1], and
binarization (dynamic: a fresh keyed Bernoulli draw per step; static: one fixed draw per
example index; none).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from aevae_jax.errors import UserError

# The statically binarized copy is one fixed draw, the same for every run and seed.
_STATIC_BINARIZATION_SEED = 20_140_101


def to_unit_interval(x: jax.Array) -> jax.Array:
    """Stored images -> float32 in [0, 1] (uint8 / 255; floats unchanged)."""
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32)


def static_binarization_key(split: int) -> jax.Array:
    """The fixed key of the static draw for a split (0: train, 1: test)."""
    return jax.random.fold_in(jax.random.key(_STATIC_BINARIZATION_SEED), split)


# Dynamic binarization compares 16 random bits per pixel with a threshold: two pixels per
# 32-bit word of the key's generator, so a step hashes half as many counters as a float
# uniform per pixel (2.5x cheaper: 0.27 ms instead of 0.66 ms for a batch of 128 28x28
# images here). P(x = 1) is within 2^-17 of the intensity (the float draw it replaces:
# about 2^-23); no fixed number of random bits gives k / 255 exactly.
BINARIZE_BITS = 16


def bernoulli_threshold(x: jax.Array) -> jax.Array:
    """The number t of the 2^16 values of a 16-bit draw u for which the pixel is 1 (u < t):
    round(p * 2^16) for intensity p. On uint8 data p = k / 255 and t = round(k * 2^16 / 255),
    computed in integers, so P(x = 1) = t / 2^16 is within 2^-17 of k / 255 and exactly 0
    and 1 at k = 0 and 255."""
    scale = 2**BINARIZE_BITS
    if x.dtype == jnp.uint8:
        return (x.astype(jnp.uint32) * scale + 127) // 255
    return jnp.round(x.astype(jnp.float32) * scale).astype(jnp.uint32)  # validated in [0, 1]


def bernoulli_pixels(key: jax.Array, x: jax.Array) -> jax.Array:
    """x ~ Bernoulli(intensity) per pixel of a batch [B, ...] of stored images (uint8, or
    floats in [0, 1]), as float32 0/1, from 16 random bits per pixel (`bernoulli_threshold`).
    Example b's bits are the words of row b of one draw [B, ceil(D / 2)], so the draw does
    not depend on how the batch is laid out over devices."""
    batch, dims = x.shape[0], math.prod(x.shape[1:])
    words = jax.random.bits(key, (batch, (dims + 1) // 2), jnp.uint32)
    u = jnp.concatenate([words >> 16, words & 0xFFFF], axis=1)[:, :dims]
    return (u.reshape(x.shape) < bernoulli_threshold(x)).astype(jnp.float32)


def preprocess(
    x: jax.Array, mode: str, key: jax.Array, index: jax.Array | None = None, split: int = 0
) -> jax.Array:
    """Stored batch [B, H, W, C] -> model input float32 [B, H, W, C] (runs inside jit).

    mode 'dynamic': x ~ Bernoulli(pixel) with `key` (`bernoulli_pixels`); 'static': each
    example drawn with a key fixed by (split, example `index`), so it is the same every
    epoch and run; 'none': grey levels.
    """
    if mode == "dynamic":
        return bernoulli_pixels(key, x)
    p = to_unit_interval(x)
    if mode == "none":
        return p
    if mode == "static":
        base = static_binarization_key(split)
        draw = lambda i, pi: jax.random.bernoulli(jax.random.fold_in(base, i), pi)
        return jax.vmap(draw)(index, p).astype(jnp.float32)
    raise UserError(f"unknown binarize mode {mode!r}; choose dynamic, static or none")
