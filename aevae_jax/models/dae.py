"""The denoising autoencoder (Vincent et al. 2008, 2010): the encoder sees a corrupted
input x~ = C(x), the decoder must give back the clean x; the loss is the AE's
reconstruction error against the clean image, sum over pixels, batch mean.

The corruption (gaussian, masking or salt_and_pepper, see corruption.py) is drawn inside
the compiled step from the step's key, folded into a stream of its own: it is the same
for the same seed and step, and new at every step. Evaluation never corrupts: encode and
reconstruct act on the input they are given.
"""

from __future__ import annotations

import jax

from aevae_jax.models import register
from aevae_jax.models.ae import point_code
from aevae_jax.models.base import Batch, Claim, Model
from aevae_jax.nn.corruption import NoiseOptions, corrupt
from aevae_jax.nn.likelihoods import batch_mean

NOISE_STREAM = 1  # fold_in(step key, NOISE_STREAM) draws the step's corruption


def noisy_input(batch: Batch, key: jax.Array, opts: NoiseOptions) -> Batch:
    """The batch with x corrupted by the model's noise, drawn from the step's key."""
    x = corrupt(jax.random.fold_in(key, NOISE_STREAM), batch.x, opts.noise, opts.noise_level)
    return batch._replace(x=x)


CLAIMS = (
    Claim(
        "test_denoise_mse",
        "lower",
        "ae",
        "a denoising AE reconstructs corrupted inputs better than a plain AE (Vincent et al. 2008)",
    ),
)


@register("dae", options=NoiseOptions, likelihood="mse", claims=CLAIMS)
def make_dae(cfg, spec, opts: NoiseOptions) -> Model:
    """Denoising autoencoder: reconstructs the clean image from a corrupted one."""
    parts = point_code(cfg, spec)

    def loss(params, batch, key, step):
        del step
        value = batch_mean(parts.recon(params, noisy_input(batch, key, opts), batch.x))
        return value, {"recon": value}

    return parts.model("dae", loss)
