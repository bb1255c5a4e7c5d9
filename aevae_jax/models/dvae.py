"""The denoising VAE (Im et al. 2017): the VAE's encoder sees a corrupted input
x~ = C(x), and the likelihood scores the clean x,

    loss = -E_{q(z|x~)}[log p(x|z)] + KL(q(z|x~) || p(z)),

with one reparameterised sample and the analytic KL. The corruption is that of the
denoising AE (see dae.py and corruption.py), so denoising is compared within each family.
Evaluation, like every VAE's, encodes the input it is given: the reported -ELBO and IWAE
bound use q(z|x) on clean test images, a valid importance distribution for p(x).
"""

from __future__ import annotations

import jax

from aevae_jax.models import register
from aevae_jax.models.base import Claim, Model
from aevae_jax.models.dae import noisy_input
from aevae_jax.models.vae import gaussian_latent
from aevae_jax.nn.corruption import NoiseOptions
from aevae_jax.nn.likelihoods import batch_mean

CLAIMS = (
    Claim(
        "test_denoise_mse",
        "lower",
        "vae",
        "a denoising VAE reconstructs corrupted inputs better than a plain VAE (Im et al. 2017)",
    ),
)


@register("dvae", options=NoiseOptions, needs_density=True, claims=CLAIMS)
def make_dvae(cfg, spec, opts: NoiseOptions) -> Model:
    """Denoising VAE: q(z|corrupted x), the likelihood of the clean x."""
    parts = gaussian_latent(cfg, spec)

    def loss(params, batch, key, step):
        del step
        noisy = noisy_input(batch, key, opts)  # from fold_in(key, NOISE_STREAM)
        recon, kl = parts.elbo_terms(params, noisy, jax.random.fold_in(key, 0), target=batch.x)
        return batch_mean(recon + kl), {"recon": batch_mean(recon), "kl": batch_mean(kl)}

    return parts.model("dvae", loss)
