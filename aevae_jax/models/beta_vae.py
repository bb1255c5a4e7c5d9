"""The beta-VAE (Higgins et al. 2017): the VAE with the KL term weighted by beta,
-E_q[log p(x|z)] + beta_t KL(q(z|x) || p(z)). beta > 1 trades reconstruction
(distortion) for a smaller, more factorised code (rate); beta_t may follow a schedule:

- constant: beta_t = beta;
- linear (KL warm-up, Bowman et al. 2016): beta_t = beta * min(1, t / kl_warmup_steps);
- cyclical (Fu et al. 2019): in every period of kl_cycle_steps, beta_t rises linearly
  from 0 to beta over the first kl_cycle_ramp fraction, then stays at beta.

The schedule makes the objective depend on the step; evaluation and the best
checkpoint use the step-independent ELBO (beta = 1) instead.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Model
from aevae_jax.models.vae import gaussian_latent
from aevae_jax.nn.likelihoods import batch_mean

KL_SCHEDULES = ("constant", "linear", "cyclical")


@dataclasses.dataclass(frozen=True)
class BetaVAEOptions:
    beta: float = dataclasses.field(
        default=4.0, metadata={"help": "weight of the KL term (1 is the plain VAE)"}
    )
    kl_schedule: str = dataclasses.field(
        default="constant", metadata={"help": "constant, linear (KL warm-up) or cyclical"}
    )
    kl_warmup_steps: int = dataclasses.field(
        default=10_000, metadata={"help": "linear: steps over which beta rises from 0"}
    )
    kl_cycle_steps: int = dataclasses.field(
        default=5_000, metadata={"help": "cyclical: steps per cycle"}
    )
    kl_cycle_ramp: float = dataclasses.field(
        default=0.5, metadata={"help": "cyclical: fraction of each cycle spent rising"}
    )

    def __post_init__(self):
        require(self.beta >= 0, f"--beta must be >= 0, got {self.beta}")
        require(
            self.kl_schedule in KL_SCHEDULES,
            f"--kl-schedule must be one of {', '.join(KL_SCHEDULES)}; got {self.kl_schedule!r}",
        )
        require(self.kl_warmup_steps > 0, "--kl-warmup-steps must be a positive integer")
        require(self.kl_cycle_steps > 0, "--kl-cycle-steps must be a positive integer")
        require(0 < self.kl_cycle_ramp <= 1, "--kl-cycle-ramp must lie in (0, 1]")


def beta_at(opts: BetaVAEOptions, step) -> jnp.ndarray:
    """The KL weight at training step `step` (0-based), as float32."""
    t = jnp.asarray(step, jnp.float32)
    if opts.kl_schedule == "linear":
        return opts.beta * jnp.minimum(1.0, t / opts.kl_warmup_steps)
    if opts.kl_schedule == "cyclical":
        phase = jnp.mod(t, opts.kl_cycle_steps) / opts.kl_cycle_steps
        return opts.beta * jnp.minimum(1.0, phase / opts.kl_cycle_ramp)
    return jnp.asarray(opts.beta, jnp.float32)


def _beta_above_one(options: dict) -> bool:
    return options.get("beta", 1.0) > 1.0


CLAIMS = (
    Claim(
        "test_kl",
        "lower",
        "vae",
        "beta > 1 lowers the rate, KL(q(z|x) || p(z)) (Higgins et al. 2017; Alemi et al. 2018)",
        _beta_above_one,
    ),
    Claim(
        "test_distortion",
        "higher",
        "vae",
        "beta > 1 raises the distortion, E_q[-log p(x|z)] (Alemi et al. 2018)",
        _beta_above_one,
    ),
)


@register("beta_vae", options=BetaVAEOptions, needs_density=True, claims=CLAIMS)
def make_beta_vae(cfg, spec, opts: BetaVAEOptions) -> Model:
    """beta-VAE: the KL term weighted by beta, with constant, warm-up or cyclical schedules."""
    parts = gaussian_latent(cfg, spec)

    def loss(params, batch, key, step):
        recon, kl = parts.elbo_terms(params, batch, key)
        beta = beta_at(opts, step)
        value = batch_mean(recon + beta * kl)
        return value, {"recon": batch_mean(recon), "kl": batch_mean(kl), "beta": beta}

    return parts.model("beta_vae", loss)
