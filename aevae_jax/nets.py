"""Backbones shared by every model: MLP and convolutional encoders and decoders.

Flax linen modules used as pure functions (`module.apply({"params": p}, x)`).
Encoders map images [B, H, W, C] to features [B, out_dim]; decoders map codes
[B, latent] to logits [B, H, W, C]. A model chooses `out_dim` (AE: latent,
VAE: 2 * latent for mean and log-variance) and never builds layers itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aevae_jax.errors import UserError

ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "leaky_relu": nn.leaky_relu,
}


def get_activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise UserError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


class MLPEncoder(nn.Module):
    """Flatten, then Dense+activation per hidden size, then Dense(out_dim)."""

    hidden: Sequence[int]
    out_dim: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        h = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        return nn.Dense(self.out_dim)(h)


class MLPDecoder(nn.Module):
    """Dense+activation per hidden size (innermost first), then Dense to pixels."""

    hidden: Sequence[int]
    image_shape: tuple[int, ...]
    activation: str = "relu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        h = z
        for width in reversed(tuple(self.hidden)):
            h = act(nn.Dense(width)(h))
        h = nn.Dense(math.prod(self.image_shape))(h)
        return h.reshape(z.shape[0], *self.image_shape)


class ConvEncoder(nn.Module):
    """Stride-2 3x3 convolutions (one per channel count), then hidden Dense layers
    and Dense(out_dim). Each convolution halves height and width."""

    channels: Sequence[int]
    hidden: Sequence[int]
    out_dim: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        h = x
        for c in self.channels:
            h = act(nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME")(h))
        h = h.reshape(h.shape[0], -1)
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        return nn.Dense(self.out_dim)(h)


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: Dense layers to a [H/2^n, W/2^n, C_last] map, then
    stride-2 transposed convolutions back to [H, W, C]."""

    channels: Sequence[int]
    hidden: Sequence[int]
    image_shape: tuple[int, ...]
    activation: str = "relu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        height, width, out_channels = self.image_shape
        scale = 2 ** len(self.channels)
        channels = tuple(self.channels)
        h = z
        for w in reversed(tuple(self.hidden)):
            h = act(nn.Dense(w)(h))
        h = act(nn.Dense((height // scale) * (width // scale) * channels[-1])(h))
        h = h.reshape(z.shape[0], height // scale, width // scale, channels[-1])
        for c in reversed(channels[:-1]):
            h = act(nn.ConvTranspose(c, (3, 3), strides=(2, 2), padding="SAME")(h))
        return nn.ConvTranspose(out_channels, (3, 3), strides=(2, 2), padding="SAME")(h)


def make_backbone(
    kind: str,
    image_shape: tuple[int, ...],
    encoder_out: int,
    hidden: Sequence[int],
    activation: str,
    conv_channels: Sequence[int] = (32, 64),
) -> tuple[nn.Module, nn.Module]:
    """The (encoder, decoder) pair for `kind` ('mlp' or 'conv') and an image shape."""
    get_activation(activation)  # fail on a bad name before any tracing
    if kind == "mlp":
        return (
            MLPEncoder(tuple(hidden), encoder_out, activation),
            MLPDecoder(tuple(hidden), tuple(image_shape), activation),
        )
    if kind == "conv":
        scale = 2 ** len(conv_channels)
        if len(image_shape) != 3 or image_shape[0] % scale or image_shape[1] % scale:
            raise UserError(
                f"the conv backbone with {len(conv_channels)} stride-2 layers needs images "
                f"[H, W, C] with H and W divisible by {scale}; got {tuple(image_shape)}. "
                "Use --backbone mlp, or pad/crop the images (28x28 and 32x32 work)."
            )
        return (
            ConvEncoder(tuple(conv_channels), tuple(hidden), encoder_out, activation),
            ConvDecoder(tuple(conv_channels), tuple(hidden), tuple(image_shape), activation),
        )
    raise UserError(f"unknown backbone {kind!r}; choose mlp or conv")
