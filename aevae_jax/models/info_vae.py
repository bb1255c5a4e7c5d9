"""InfoVAE with the MMD divergence (Zhao et al. 2019): the VAE's objective with the KL term
reweighted and a divergence between the aggregate posterior q(z) and the prior added,

    loss = mean_b [recon_b + (1 - alpha) KL(q(z|x_b) || p(z))]
           + (alpha + lambda - 1) MMD^2(z ~ q(z|x) of the batch, n draws of N(0, I)),

with the IMQ-kernel MMD of nn/mmd.py on one reparameterised draw per image. alpha = 0 and
lambda = 1 is the VAE; alpha = 1 drops the per-image KL (the "MMD-VAE"). The defaults keep
the whole ELBO (alpha = 0) and add the MMD with weight lambda - 1, so the model stays a
density whose test NLL compares with the VAE's. Evaluation is the VAE's (the rate against
N(0, I), the IWAE bound); the per-epoch test objective is the per-image part.
"""

from __future__ import annotations

import dataclasses

import jax

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Model
from aevae_jax.models.vae import gaussian_latent
from aevae_jax.nn.likelihoods import batch_mean, kl_to_std_normal, reparameterize
from aevae_jax.nn.mmd import mmd_imq

MMD_STREAM = 1  # fold_in(step key, MMD_STREAM) draws the prior samples of the MMD


@dataclasses.dataclass(frozen=True)
class InfoVAEOptions:
    alpha: float = dataclasses.field(
        default=0.0, metadata={"help": "alpha: the KL term is weighted by 1 - alpha"}
    )
    info_lambda: float = dataclasses.field(
        default=100.0,
        metadata={"help": "lambda: the MMD term is weighted by alpha + lambda - 1"},
    )

    def __post_init__(self):
        require(self.alpha <= 1, f"--alpha must be at most 1 (a KL weight >= 0), got {self.alpha}")
        require(
            self.alpha + self.info_lambda - 1 >= 0,
            f"--alpha + --info-lambda - 1 weights the MMD and must be >= 0; got "
            f"{self.alpha + self.info_lambda - 1}",
        )


CLAIMS = (
    Claim(
        "latent_prior_fd",
        "lower",
        "vae",
        "the MMD term brings the aggregate posterior closer to the prior than the VAE's "
        "(Zhao et al. 2019)",
        applies=lambda o: o.get("alpha", 0) + o.get("info_lambda", 100) - 1 > 0,
    ),
)


@register("info_vae", options=InfoVAEOptions, needs_density=True, claims=CLAIMS)
def make_info_vae(cfg, spec, opts: InfoVAEOptions) -> Model:
    """InfoVAE-MMD: the ELBO's KL reweighted, plus an MMD from q(z) to N(0, I)."""
    parts = gaussian_latent(cfg, spec)
    kl_weight, mmd_weight = 1.0 - opts.alpha, opts.alpha + opts.info_lambda - 1.0

    def terms(params, batch, key):
        q = parts.encode(params, batch)
        z = reparameterize(key, q.code, q.log_var)
        recon = parts.likelihood.nll(parts.decode(params, z, batch.y), batch.x)
        kl = kl_to_std_normal(q.code, q.log_var).sum(-1)
        return z, recon, kl

    def loss(params, batch, key, step):
        del step
        z, recon, kl = terms(params, batch, key)
        prior = jax.random.normal(jax.random.fold_in(key, MMD_STREAM), z.shape)
        mmd = mmd_imq(z, prior)
        value = batch_mean(recon + kl_weight * kl) + mmd_weight * mmd
        return value, {"recon": batch_mean(recon), "kl": batch_mean(kl), "mmd": mmd}

    def test_loss(params, batch, key, step):
        del step
        _, recon, kl = terms(params, batch, key)
        value = batch_mean(recon + kl_weight * kl)
        return value, {"recon": batch_mean(recon), "kl": batch_mean(kl)}

    return dataclasses.replace(parts.model("info_vae", loss), test_loss=test_loss)
