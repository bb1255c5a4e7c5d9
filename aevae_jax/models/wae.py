"""The Wasserstein autoencoder with the MMD penalty, WAE-MMD (Tolstikhin et al. 2018):
a deterministic autoencoder whose aggregate posterior q(z) is pulled towards the prior
N(0, I) by the maximum mean discrepancy between the batch's codes and as many prior
draws, with the inverse multiquadratic kernel (nn/mmd.py):

    loss = mean_b recon_b + mmd_weight * MMD^2(codes of the batch, n draws of N(0, I)),

recon the likelihood's reconstruction cost (squared error by default, the paper's c(x, y)
= ||x - y||^2). The prior draws come from the step's key. Unlike the adversarial AE's
discriminator, the penalty has no parameters and no second optimiser. New images decode
prior draws, so the model has a prior and a `sample` of its own.

The penalty is a statistic of the whole batch: the per-epoch test objective is the
reconstruction of each test image (`test_loss`), and the model reports the MMD of the test
codes to the prior (`code_mmd`, over the first MMD_CODES codes) in `code_report`.
"""

from __future__ import annotations

import dataclasses

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.ae import point_code
from aevae_jax.models.base import Claim, Encoding, Model
from aevae_jax.models.priors import standard_normal
from aevae_jax.nn.likelihoods import batch_mean
from aevae_jax.nn.mmd import mmd_imq

MMD_CODES = 2000  # test codes of code_report's MMD (its cost grows as the square)


@dataclasses.dataclass(frozen=True)
class WAEOptions:
    mmd_weight: float = dataclasses.field(
        default=10.0, metadata={"help": "lambda, the weight of the MMD penalty (the paper's 10)"}
    )

    def __post_init__(self):
        require(self.mmd_weight >= 0, f"--mmd-weight must be >= 0, got {self.mmd_weight}")


CLAIMS = (
    Claim(
        "prior_sample_fd",
        "lower",
        "ae",
        "the MMD penalty makes prior samples decode to better images than a plain AE's "
        "(Tolstikhin et al. 2018)",
    ),
    Claim(
        "latent_prior_fd",
        "lower",
        "ae",
        "the MMD penalty brings the aggregate posterior closer to N(0, I) than a plain AE's "
        "codes (Tolstikhin et al. 2018)",
    ),
)


@register("wae", options=WAEOptions, likelihood="mse", claims=CLAIMS)
def make_wae(cfg, spec, opts: WAEOptions) -> Model:
    """WAE-MMD: an AE whose codes match N(0, I) by an IMQ-kernel MMD penalty."""
    parts = point_code(cfg, spec)
    prior = standard_normal((cfg.latent_dim,))

    def loss(params, batch, key, step):
        del step
        code = parts.encode(params, batch).code
        recon = batch_mean(parts.likelihood.nll(parts.decode(params, code), batch.x))
        mmd = mmd_imq(code, prior.sample(params, key, code.shape[0]))
        return recon + opts.mmd_weight * mmd, {"recon": recon, "mmd": mmd}

    def test_loss(params, batch, key, step):
        del key, step
        recon = batch_mean(parts.recon(params, batch, batch.x))
        return recon, {"recon": recon}

    def sample(params, key, n, y=None):
        return parts.likelihood.mean(parts.decode(params, prior.sample(params, key, n)))

    def code_report(params, codes: Encoding, key) -> dict:
        z = codes.features[:MMD_CODES]
        return {"code_mmd": float(mmd_imq(z, prior.sample(params, key, z.shape[0])))}

    return parts.model(
        "wae", loss, test_loss=test_loss, sample=sample, prior=prior, code_report=code_report
    )
