"""Backbones shared by every model: MLP and convolutional encoders and decoders.

Flax linen modules used as pure functions (`module.apply({"params": p}, x, cond)`).
Encoders map images [B, H, W, C] to features [B, out_dim]; decoders map codes
[B, latent] to logits [B, H, W, C]. A model chooses `out_dim` (AE: latent,
VAE: 2 * latent for mean and log-variance) and never builds layers itself.
An optional conditioning vector `cond` [B, C] (a one-hot label) is concatenated to the
flattened input of the dense layers of both networks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aevae_jax.config import INITS
from aevae_jax.errors import UserError
from aevae_jax.nn.conv import Conv, ConvTranspose, resolve_impl

ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "leaky_relu": nn.leaky_relu,
}


def layer_init(init: str, fan_in: int) -> dict:
    """Initialisers of a Dense/Conv layer with `fan_in` inputs per output.

    'lecun': Flax's defaults (truncated-normal kernel with variance 1/fan_in, zero bias).
    'torch': PyTorch's nn.Linear/nn.Conv2d defaults, kernel and bias both
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), to reproduce PyTorch set-ups exactly.
    """
    if init == "lecun":
        return {}
    if init == "torch":
        bound = 1.0 / math.sqrt(fan_in)
        return {
            "kernel_init": nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
            "bias_init": lambda key, shape, dtype=jnp.float32: jax.random.uniform(
                key, shape, dtype, -bound, bound
            ),
        }
    raise UserError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")


def dense(features: int, h: jax.Array, init: str) -> jax.Array:
    """A Dense layer computing in `h`'s dtype, with float32 parameters."""
    return nn.Dense(features, dtype=h.dtype, **layer_init(init, h.shape[-1]))(h)


def conv(kind, features: int, h: jax.Array, init: str, impl: str) -> jax.Array:
    """A 3x3 stride-2 'SAME' (transposed) convolution (`aevae_jax.nn.conv`: Flax's function
    and parameters, computed by `impl`). PyTorch's rule takes fan_in from the weight's
    second axis: input channels for Conv2d, output channels for ConvTranspose2d; 'torch'
    init follows it."""
    fan_in = 9 * (features if kind is ConvTranspose else h.shape[-1])
    return kind(features, impl, **layer_init(init, fan_in))(h)


def get_activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise UserError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


def with_cond(h: jax.Array, cond: jax.Array | None) -> jax.Array:
    """[B, F] features, with the conditioning vector [B, C] appended when there is one."""
    return h if cond is None else jnp.concatenate([h, cond.astype(h.dtype)], axis=-1)


class MLPEncoder(nn.Module):
    """Flatten, then Dense+activation per hidden size, then Dense(out_dim)."""

    hidden: Sequence[int]
    out_dim: int
    activation: str = "relu"
    init_scheme: str = "lecun"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        act = get_activation(self.activation)
        h = with_cond(x.reshape(x.shape[0], -1).astype(self.dtype), cond)
        for width in self.hidden:
            h = act(dense(width, h, self.init_scheme))
        return dense(self.out_dim, h, self.init_scheme).astype(jnp.float32)


class MLPDecoder(nn.Module):
    """Dense+activation per hidden size (innermost first), then Dense to pixels."""

    hidden: Sequence[int]
    image_shape: tuple[int, ...]
    activation: str = "relu"
    init_scheme: str = "lecun"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        act = get_activation(self.activation)
        h = with_cond(z.astype(self.dtype), cond)
        for width in reversed(tuple(self.hidden)):
            h = act(dense(width, h, self.init_scheme))
        h = dense(math.prod(self.image_shape), h, self.init_scheme)
        return h.reshape(z.shape[0], *self.image_shape).astype(jnp.float32)


class ConvEncoder(nn.Module):
    """Stride-2 3x3 convolutions (one per channel count), then hidden Dense layers
    and Dense(out_dim). Each convolution halves height and width."""

    channels: Sequence[int]
    hidden: Sequence[int]
    out_dim: int
    activation: str = "relu"
    init_scheme: str = "lecun"
    conv_impl: str = "auto"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        act = get_activation(self.activation)
        h = x.astype(self.dtype)
        for c in self.channels:
            h = act(conv(Conv, c, h, self.init_scheme, self.conv_impl))
        h = with_cond(h.reshape(h.shape[0], -1), cond)
        for width in self.hidden:
            h = act(dense(width, h, self.init_scheme))
        return dense(self.out_dim, h, self.init_scheme).astype(jnp.float32)


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: Dense layers to a [H/2^n, W/2^n, C_last] map, then
    stride-2 transposed convolutions back to [H, W, C]."""

    channels: Sequence[int]
    hidden: Sequence[int]
    image_shape: tuple[int, ...]
    activation: str = "relu"
    init_scheme: str = "lecun"
    conv_impl: str = "auto"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, z: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        act = get_activation(self.activation)
        height, width, out_channels = self.image_shape
        scale = 2 ** len(self.channels)
        channels = tuple(self.channels)
        h = with_cond(z.astype(self.dtype), cond)
        for w in reversed(tuple(self.hidden)):
            h = act(dense(w, h, self.init_scheme))
        h = act(dense((height // scale) * (width // scale) * channels[-1], h, self.init_scheme))
        h = h.reshape(z.shape[0], height // scale, width // scale, channels[-1])
        for c in reversed(channels[:-1]):
            h = act(conv(ConvTranspose, c, h, self.init_scheme, self.conv_impl))
        out = conv(ConvTranspose, out_channels, h, self.init_scheme, self.conv_impl)
        return out.astype(jnp.float32)


def make_backbone(
    kind: str,
    image_shape: tuple[int, ...],
    encoder_out: int,
    hidden: Sequence[int],
    activation: str,
    conv_channels: Sequence[int] = (32, 64),
    init: str = "lecun",
    outputs_per_channel: int = 1,
    conv_impl: str = "auto",
    dtype: str = "float32",
) -> tuple[nn.Module, nn.Module]:
    """The (encoder, decoder) pair for `kind` ('mlp' or 'conv') and an image shape
    [H, W, C]; the decoder outputs [H, W, C * outputs_per_channel] (the likelihood's
    parameters per sub-pixel). `conv_impl` picks how the convolutions are computed
    (`aevae_jax.nn.conv`; the function and parameters are the same). `dtype` is the
    networks' compute dtype (float32 or bfloat16): parameters stay float32 and both
    networks return float32, so losses and log-densities are computed in float32."""
    get_activation(activation)  # fail on bad names before any tracing
    layer_init(init, 1)
    out_shape = (*image_shape[:-1], image_shape[-1] * outputs_per_channel)
    if kind == "mlp":
        return (
            MLPEncoder(tuple(hidden), encoder_out, activation, init, dtype),
            MLPDecoder(tuple(hidden), out_shape, activation, init, dtype),
        )
    if kind == "conv":
        resolve_impl(conv_impl)
        scale = 2 ** len(conv_channels)
        if len(image_shape) != 3 or image_shape[0] % scale or image_shape[1] % scale:
            raise UserError(
                f"the conv backbone with {len(conv_channels)} stride-2 layers needs images "
                f"[H, W, C] with H and W divisible by {scale}; got {tuple(image_shape)}. "
                "Use --backbone mlp, or pad/crop the images (28x28 and 32x32 work)."
            )
        return (
            ConvEncoder(
                tuple(conv_channels), tuple(hidden), encoder_out, activation, init, conv_impl, dtype
            ),
            ConvDecoder(
                tuple(conv_channels), tuple(hidden), out_shape, activation, init, conv_impl, dtype
            ),
        )
    raise UserError(f"unknown backbone {kind!r}; choose mlp or conv")
