"""The autoencoder: a deterministic code z = f(x), trained on reconstruction.

Default loss is the article's MSE, sum over pixels of (x - x_hat)^2, mean over
the batch, with x_hat = sigmoid(decoder logits). It has no prior, so no `sample`:
evaluation draws from it with samplers that sit outside the model.

`PointCode` holds the parts every autoencoder with a deterministic code shares (the
denoising and sparse AEs build on it), as `GaussianLatent` in vae.py does for the VAEs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from aevae_jax.data.spec import DataSpec
from aevae_jax.models import register
from aevae_jax.models.base import Backbone, Encoding, Model, make_backbone_fns
from aevae_jax.nn.likelihoods import Likelihood, batch_mean, get_likelihood


@dataclasses.dataclass(frozen=True)
class PointCode:
    """Encoder to a point code (through `activation`), decoder back; no prior. Every
    method is pure."""

    spec: DataSpec
    latent_dim: int
    likelihood: Likelihood
    net: Backbone
    activation: Callable[[jax.Array], jax.Array] = lambda h: h

    def init(self, key, batch):
        return self.net.init(key, batch.x)

    def encode(self, params, batch) -> Encoding:
        return Encoding(self.activation(self.net.encoder(params, batch.x)))

    def decode(self, params, code, y=None):
        return self.net.decoder(params, code)

    def recon(self, params, batch, target) -> jax.Array:
        """Per-example -log p(target | decode(encode(batch))): [B]."""
        return self.likelihood.nll(self.decode(params, self.encode(params, batch).code), target)

    def model(self, name: str, loss, **fields) -> Model:
        """The Model of these parts; `fields` add to them or replace them (a masked AE
        brings its own init and encode)."""
        own = {"init": self.init, "encode": self.encode, "decode": self.decode}
        return Model(
            name=name,
            spec=self.spec,
            code_shape=(self.latent_dim,),
            likelihood=self.likelihood,
            loss=loss,
            **{**own, **fields},
        )


def point_code(cfg, spec: DataSpec, activation=None) -> PointCode:
    net = make_backbone_fns(cfg, spec.image_shape, encoder_out=cfg.latent_dim)
    parts = PointCode(spec, cfg.latent_dim, get_likelihood(cfg.likelihood), net)
    return parts if activation is None else dataclasses.replace(parts, activation=activation)


@register("ae", likelihood="mse")
def make_ae(cfg, spec, opts) -> Model:
    """Autoencoder: a deterministic code trained on reconstruction (MSE)."""
    del opts
    parts = point_code(cfg, spec)

    def loss(params, batch, key, step):
        del key, step  # deterministic
        value = batch_mean(parts.recon(params, batch, batch.x))
        return value, {"recon": value}

    return parts.model("ae", loss)
