"""The model protocol: a frozen bundle of pure functions, shaped like an optax
transformation. The trainer, evaluator and command line read what a model can do
from which fields are set (`sample`, `log_importance_weights`, `make_update`),
never from its name.

Shapes: images x [B, H, W, C] float32 in [0, 1]; codes z [B, latent_dim];
decoder outputs are logits of the image shape (mean image = likelihood.mean(logits)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from aevae_jax.likelihoods import Likelihood

Params = Any  # a pytree of arrays
Metrics = dict[str, jax.Array]


class Batch(NamedTuple):
    """One batch as the model sees it: preprocessed images and (optional) labels."""

    x: jax.Array  # [B, H, W, C] float32 in [0, 1]
    y: jax.Array | None = None  # [B] int32 class labels, where the data set has them


class Encoding(NamedTuple):
    """What an encoder says about x: a code (`mean`) and, for stochastic encoders,
    the log-variance of a diagonal Gaussian q(z|x). Deterministic encoders leave
    `log_var` as None."""

    mean: jax.Array  # [B, latent_dim]
    log_var: jax.Array | None = None  # [B, latent_dim]


@dataclasses.dataclass(frozen=True)
class Model:
    """A model: pure functions of explicit parameters and keys.

    init(key, x) -> params
    loss(params, batch, key, step) -> (scalar, metrics): the training objective, a
        batch mean of per-example sums (see likelihoods.py); metrics are batch means.
    encode(params, x) -> Encoding
    decode(params, z) -> logits [B, H, W, C]
    sample(params, key, n) -> images [n, H, W, C] in [0, 1] (generative models only)
    log_importance_weights(params, x, key, k) -> [k, B] values of
        log p(x, z_k) - log q(z_k | x), z_k ~ q(z|x) (where a density is defined)
    make_update(optimizer) -> update(params, opt_state, batch, key, step) ->
        (params, opt_state, metrics): only for models whose update is not one
        gradient step of `loss` (e.g. several optimisers); None uses the default.
    """

    name: str
    latent_dim: int
    image_shape: tuple[int, ...]
    likelihood: Likelihood
    init: Callable[[jax.Array, jax.Array], Params]
    loss: Callable[[Params, Batch, jax.Array, jax.Array], tuple[jax.Array, Metrics]]
    encode: Callable[[Params, jax.Array], Encoding]
    decode: Callable[[Params, jax.Array], jax.Array]
    sample: Callable[[Params, jax.Array, int], jax.Array] | None = None
    log_importance_weights: Callable[[Params, jax.Array, jax.Array, int], jax.Array] | None = None
    make_update: Callable[[Any], Callable] | None = None

    def reconstruct(self, params: Params, x: jax.Array) -> jax.Array:
        """Mean reconstruction of x through the code's mean: [B, H, W, C] in [0, 1]."""
        return self.likelihood.mean(self.decode(params, self.encode(params, x).mean))


class Backbone(NamedTuple):
    """Pure functions over an encoder/decoder pair; params = {"encoder", "decoder"}."""

    init: Callable[[jax.Array, jax.Array], Params]
    encoder: Callable[[Params, jax.Array], jax.Array]  # x -> features [B, encoder_out]
    decoder: Callable[[Params, jax.Array], jax.Array]  # z -> logits [B, H, W, C]


def make_backbone_fns(cfg, image_shape: tuple[int, ...], encoder_out: int) -> Backbone:
    """The shared backbone of `cfg` (a ModelConfig) as pure functions."""
    import jax.numpy as jnp

    from aevae_jax.nets import make_backbone

    enc, dec = make_backbone(
        cfg.backbone,
        image_shape,
        encoder_out,
        cfg.hidden,
        cfg.activation,
        cfg.conv_channels,
        cfg.init,
    )

    def init(key, x):
        k_enc, k_dec = jax.random.split(key)
        z = jnp.zeros((x.shape[0], cfg.latent_dim), x.dtype)
        return {
            "encoder": enc.init(k_enc, x)["params"],
            "decoder": dec.init(k_dec, z)["params"],
        }

    def encoder(params, x):
        return enc.apply({"params": params["encoder"]}, x)

    def decoder(params, z):
        return dec.apply({"params": params["decoder"]}, z)

    return Backbone(init, encoder, decoder)
