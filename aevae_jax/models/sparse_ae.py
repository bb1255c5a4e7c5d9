"""The sparse autoencoder: the AE's reconstruction error plus penalties that push the
code towards few active units (Ng 2011, "Sparse autoencoder" notes; Makhzani & Frey 2013):

    loss = mean_b recon_b + l1_weight * mean_b sum_j |z_bj|
           + kl_weight * sum_j KL(rho || rho_hat_j),   rho_hat_j = mean_b z_bj,

KL(rho || r) = rho log(rho / r) + (1 - rho) log((1 - rho) / (1 - r)), the divergence of
Bernoulli(rho) from Bernoulli(r). rho_hat is the unit's mean activation over the training
batch, so the KL penalty needs codes in (0, 1): the code passes through a sigmoid (or a
ReLU or nothing, with the L1 penalty alone).

The batch enters the training objective only. Codes, reconstructions and every reported
metric are per example: the per-epoch test objective (`test_loss`) is the reconstruction
and L1 penalty of each test image, and the model reports the mean activation and the KL
penalty over the whole test split (`code_report`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.ae import point_code
from aevae_jax.models.base import Claim, Encoding, Model
from aevae_jax.nn.likelihoods import batch_mean

CODE_ACTIVATIONS = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "linear": lambda h: h}
_EPS = 1e-6  # keeps rho_hat inside (0, 1) where a sigmoid saturates in float32


@dataclasses.dataclass(frozen=True)
class SparseAEOptions:
    l1_weight: float = dataclasses.field(
        default=0.5, metadata={"help": "weight of the L1 penalty sum_j |z_j| (0: off)"}
    )
    kl_weight: float = dataclasses.field(
        default=2.0, metadata={"help": "weight of the KL-sparsity penalty (0: off)"}
    )
    rho: float = dataclasses.field(
        default=0.05, metadata={"help": "target mean activation of each code unit"}
    )
    code_activation: str = dataclasses.field(
        default="sigmoid", metadata={"help": "sigmoid, relu or linear (KL needs sigmoid)"}
    )

    def __post_init__(self):
        require(self.l1_weight >= 0, f"--l1-weight must be >= 0, got {self.l1_weight}")
        require(self.kl_weight >= 0, f"--kl-weight must be >= 0, got {self.kl_weight}")
        require(0 < self.rho < 1, f"--rho must lie in (0, 1), got {self.rho}")
        require(
            self.code_activation in CODE_ACTIVATIONS,
            f"--code-activation must be one of {', '.join(CODE_ACTIVATIONS)}; "
            f"got {self.code_activation!r}",
        )
        require(
            self.kl_weight == 0 or self.code_activation == "sigmoid",
            "the KL-sparsity penalty needs codes in (0, 1): use --code-activation sigmoid, "
            "or --kl-weight 0 for the L1 penalty alone",
        )


def bernoulli_kl(rho: float, rho_hat: jax.Array) -> jax.Array:
    """Elementwise KL(Bernoulli(rho) || Bernoulli(rho_hat))."""
    r = jnp.clip(rho_hat, _EPS, 1 - _EPS)
    return rho * jnp.log(rho / r) + (1 - rho) * jnp.log((1 - rho) / (1 - r))


def sparsity_penalties(codes: jax.Array, opts: SparseAEOptions) -> tuple[jax.Array, jax.Array]:
    """(batch mean of sum_j |z_j|, sum_j KL(rho || batch-mean activation of unit j))."""
    l1 = batch_mean(jnp.sum(jnp.abs(codes), axis=-1))
    kl = jnp.sum(bernoulli_kl(opts.rho, jnp.mean(codes, axis=0)))
    return l1, kl


CLAIMS = (
    Claim(
        "code_sparsity",
        "higher",
        "ae",
        "sparsity penalties make codes sparser than a plain AE's (Hoyer measure; Ng 2011)",
    ),
)


@register("sparse_ae", options=SparseAEOptions, likelihood="mse", claims=CLAIMS)
def make_sparse_ae(cfg, spec, opts: SparseAEOptions) -> Model:
    """Sparse autoencoder: L1 and KL-sparsity penalties on the code."""
    parts = point_code(cfg, spec, CODE_ACTIVATIONS[opts.code_activation])

    def terms(params, batch):
        code = parts.encode(params, batch).code
        recon = batch_mean(parts.likelihood.nll(parts.decode(params, code), batch.x))
        l1, kl = sparsity_penalties(code, opts)
        return recon, l1, kl

    def loss(params, batch, key, step):
        del key, step
        recon, l1, kl = terms(params, batch)
        value = recon + opts.l1_weight * l1 + opts.kl_weight * kl
        return value, {"recon": recon, "l1": l1, "kl_sparsity": kl}

    def test_loss(params, batch, key, step):
        """Per image: the reconstruction and the L1 penalty (the KL penalty is a
        statistic of a whole batch; code_report gives it over the whole test split)."""
        del key, step
        recon, l1, _ = terms(params, batch)
        return recon + opts.l1_weight * l1, {"recon": recon, "l1": l1}

    def code_report(params, codes: Encoding, key) -> dict:
        del params, key  # statistics of the codes alone
        l1, kl = sparsity_penalties(codes.features, opts)
        report = {"code_mean_activation": float(jnp.mean(codes.features)), "code_l1": float(l1)}
        if opts.code_activation == "sigmoid":  # the KL needs activations in (0, 1)
            report["code_kl_sparsity"] = float(kl)
        return report

    return parts.model("sparse_ae", loss, test_loss=test_loss, code_report=code_report)
