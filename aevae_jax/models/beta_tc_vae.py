"""beta-TC-VAE (Chen et al. 2018): the VAE with its KL term split into the index-code
mutual information, the total correlation of q(z) and the dimension-wise KL, and the total
correlation weighted by beta:

    loss = mean_b recon_b + alpha I(x; z) + beta TC(q(z)) + gamma sum_d KL(q(z_d) || p(z_d)),

each part the minibatch-weighted sampling estimate over the batch (nn/total_correlation.py,
with `dataset_size` the N of the training split: it shifts the reported parts by
constants and leaves the gradients alone). alpha = beta = gamma = 1 is the VAE's ELBO up to
the estimator's bias. The ELBO (beta = 1) is what evaluation and the best checkpoint use.
"""

from __future__ import annotations

import dataclasses

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Model
from aevae_jax.models.vae import gaussian_latent, neg_elbo_loss
from aevae_jax.nn.likelihoods import batch_mean, reparameterize
from aevae_jax.nn.total_correlation import mws_decomposition


@dataclasses.dataclass(frozen=True)
class BetaTCVAEOptions:
    tc_beta: float = dataclasses.field(
        default=6.0, metadata={"help": "beta, the weight of the total correlation"}
    )
    mi_alpha: float = dataclasses.field(
        default=1.0, metadata={"help": "alpha, the weight of the index-code mutual information"}
    )
    dwkl_gamma: float = dataclasses.field(
        default=1.0, metadata={"help": "gamma, the weight of the dimension-wise KL"}
    )
    dataset_size: int = dataclasses.field(
        default=60_000,
        metadata={"help": "N of the minibatch-weighted estimate (moves the logged parts only)"},
    )

    def __post_init__(self):
        for flag, v in (("--tc-beta", self.tc_beta), ("--mi-alpha", self.mi_alpha),
                        ("--dwkl-gamma", self.dwkl_gamma)):  # fmt: skip
            require(v >= 0, f"{flag} must be >= 0, got {v}")
        require(self.dataset_size >= 1, "--dataset-size must be a positive integer")


CLAIMS = (
    Claim(
        "test_total_correlation",
        "lower",
        "vae",
        "penalising the total correlation makes q(z) more factorised than the VAE's "
        "(Chen et al. 2018)",
        applies=lambda o: o.get("tc_beta", 6.0) > 1,
    ),
)


@register("beta_tc_vae", options=BetaTCVAEOptions, needs_density=True, claims=CLAIMS)
def make_beta_tc_vae(cfg, spec, opts: BetaTCVAEOptions) -> Model:
    """beta-TC-VAE: the KL split into MI, total correlation and dimension-wise KL."""
    parts = gaussian_latent(cfg, spec)

    def loss(params, batch, key, step):
        del step
        q = parts.encode(params, batch)
        z = reparameterize(key, q.code, q.log_var)
        recon = batch_mean(parts.likelihood.nll(parts.decode(params, z, batch.y), batch.x))
        d = mws_decomposition(z, q.code, q.log_var, opts.dataset_size)
        weighted = opts.mi_alpha * d["mi"] + opts.tc_beta * d["tc"] + opts.dwkl_gamma * d["dwkl"]
        value = recon + weighted
        return value, {"recon": recon, **d}

    return dataclasses.replace(parts.model("beta_tc_vae", loss), test_loss=neg_elbo_loss(parts))
