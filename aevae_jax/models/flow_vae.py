"""VAEs whose posterior is a normalising flow on the diagonal Gaussian (see
nn/posterior_flows.py): planar flows with amortised parameters (Rezende & Mohamed 2015)
and inverse autoregressive flows with an encoder context (Kingma et al. 2016).

q(z|x): z_0 ~ N(mean(x), diag(exp(log_var(x)))), z = f_K(... f_1(z_0)), log q(z|x) =
log N(z_0) - sum log |det|; p(z) = N(0, I). The loss is the single-sample negative ELBO,
E_q[-log p(x|z) + log q(z|x) - log p(z)] (no closed-form KL); the importance weights
carry the same log-determinants. The code the decoder reads for reconstructions and
features is the flow of the Gaussian's mean, f(mean(x)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from aevae_jax.data.spec import DataSpec
from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Backbone, Claim, Encoding, Model, Prior, make_backbone_fns
from aevae_jax.models.priors import standard_normal
from aevae_jax.nn.likelihoods import (
    Likelihood,
    batch_mean,
    diag_gaussian_log_prob,
    get_likelihood,
    std_normal_log_prob,
)
from aevae_jax.nn.posterior_flows import IAF, planar_flow, planar_params_size


@dataclasses.dataclass(frozen=True)
class PlanarOptions:
    flow_length: int = dataclasses.field(default=8, metadata={"help": "planar flow steps"})

    def __post_init__(self):
        require(self.flow_length >= 1, f"--flow-length must be at least 1, got {self.flow_length}")


@dataclasses.dataclass(frozen=True)
class IAFOptions:
    iaf_steps: int = dataclasses.field(default=2, metadata={"help": "IAF steps"})
    iaf_hidden: int = dataclasses.field(
        default=256, metadata={"help": "hidden units of each IAF step's MADE"}
    )

    def __post_init__(self):
        require(self.iaf_steps >= 1, f"--iaf-steps must be at least 1, got {self.iaf_steps}")
        require(self.iaf_hidden >= 1, f"--iaf-hidden must be positive, got {self.iaf_hidden}")


CLAIMS = (
    Claim("test_inference_gap", "lower", "vae",
          "a flow posterior narrows the gap between the ELBO and log p(x) that a diagonal "
          "Gaussian leaves (Rezende & Mohamed 2015; Kingma et al. 2016)"),
    Claim("test_neg_elbo", "lower", "vae",
          "a flow posterior gives a better ELBO than the diagonal Gaussian with the same "
          "networks (Rezende & Mohamed 2015, Table 2; Kingma et al. 2016, Table 2)"),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class FlowPosterior:
    """The encoder's Gaussian, its flow and the VAE's decoder, as pure functions.
    `extra`: the encoder's numbers per image beyond (mean, log_var), the flow's context;
    `flow(params, z0 [N, L], context [N, extra]) -> (z [N, L], log |det| [N])`;
    `init_flow(key, z0, context)`: the flow's own parameters (None: it has none)."""

    net: Backbone
    likelihood: Likelihood
    latent_dim: int
    extra: int
    flow: Callable
    init_flow: Callable

    def gaussian(self, params, batch):
        h = self.net.encoder(params, batch.x)
        return jnp.split(h, [self.latent_dim, 2 * self.latent_dim], axis=-1)

    def init(self, key, batch):
        k_net, k_flow = jax.random.split(key)
        params = self.net.init(k_net, batch.x)
        b = batch.x.shape[0]
        flow = self.init_flow(k_flow, jnp.zeros((b, self.latent_dim)), jnp.zeros((b, self.extra)))
        return params if flow is None else {**params, "flow": flow}

    def encode(self, params, batch) -> Encoding:
        mean, _, context = self.gaussian(params, batch)
        return Encoding(self.flow(params, mean, context)[0])

    def decode(self, params, z, y=None):
        del y
        return self.net.decoder(params, z)

    def draws(self, params, batch, eps):
        """z [k, B, L] and log q(z|x) [k, B] at the base noise eps [k, B, L]."""
        mean, log_var, context = self.gaussian(params, batch)
        k, b, dims = eps.shape
        z0 = mean + jnp.exp(0.5 * log_var) * eps
        log_q0 = diag_gaussian_log_prob(z0, mean, log_var)
        ctx = jnp.broadcast_to(context, (k, *context.shape)).reshape(k * b, -1)
        z, log_det = self.flow(params, z0.reshape(k * b, dims), ctx)
        return z.reshape(k, b, dims), log_q0 - log_det.reshape(k, b)

    def weight_terms(self, params, batch, key, k):
        """(log p(x|z), log p(z), log q(z|x)), each [k, B], at k draws z ~ q(z|x)."""
        b = batch.x.shape[0]
        z, log_q = self.draws(params, batch, jax.random.normal(key, (k, b, self.latent_dim)))
        logits = self.decode(params, z.reshape(k * b, self.latent_dim))
        x_k = jnp.broadcast_to(batch.x, (k, *batch.x.shape)).reshape(k * b, *batch.x.shape[1:])
        return -self.likelihood.nll(logits, x_k).reshape(k, b), std_normal_log_prob(z), log_q

    def log_importance_weights(self, params, batch, key, k):
        log_px_z, log_pz, log_q = self.weight_terms(params, batch, key, k)
        return log_px_z + log_pz - log_q

    def posterior(self, params, batch, key):
        """(z [B, L], log q(z|x) [B]): one draw."""
        eps = jax.random.normal(key, (1, batch.x.shape[0], self.latent_dim))
        z, log_q = self.draws(params, batch, eps)
        return z[0], log_q[0]

    def loss(self, params, batch, key, step):
        """The single-sample negative ELBO, its KL by the draw's log-densities."""
        del step
        log_px_z, log_pz, log_q = self.weight_terms(params, batch, key, 1)
        recon, kl = -log_px_z[0], log_q[0] - log_pz[0]
        return batch_mean(recon + kl), {"recon": batch_mean(recon), "kl": batch_mean(kl)}

    def sample(self, params, key, n, y=None):
        del y
        z = jax.random.normal(key, (n, self.latent_dim))
        return self.likelihood.mean(self.decode(params, z))

    def model(self, name: str, spec: DataSpec) -> Model:
        gaussian = standard_normal((self.latent_dim,))
        return Model(
            name=name, spec=spec, code_shape=(self.latent_dim,), likelihood=self.likelihood,
            init=self.init, loss=self.loss, encode=self.encode, decode=self.decode,
            sample=self.sample, log_importance_weights=self.log_importance_weights,
            posterior=self.posterior,
            # N(0, I) without the closed-form KL of a Gaussian posterior: the evaluator's
            # rate is the Monte Carlo mean of log q(z|x) - log p(z) over posterior draws.
            prior=Prior(gaussian.log_prob, gaussian.sample, moments=gaussian.moments),
        )  # fmt: skip


@register("planar_vae", options=PlanarOptions, needs_density=True, claims=CLAIMS)
def make_planar_vae(cfg, spec, opts: PlanarOptions) -> Model:
    """The VAE with a planar-flow posterior of amortised steps (Rezende & Mohamed 2015)."""
    steps, dims = opts.flow_length, cfg.latent_dim
    extra = planar_params_size(dims, steps)
    net = make_backbone_fns(cfg, spec.image_shape, encoder_out=2 * dims + extra)

    def flow(params, z0, context):
        del params
        return planar_flow(z0, context, steps)

    parts = FlowPosterior(net, get_likelihood(cfg.likelihood), dims, extra, flow, lambda *_: None)
    return parts.model("planar_vae", spec)


@register("iaf_vae", options=IAFOptions, needs_density=True, claims=CLAIMS)
def make_iaf_vae(cfg, spec, opts: IAFOptions) -> Model:
    """The VAE with an inverse-autoregressive-flow posterior (Kingma et al. 2016)."""
    dims = cfg.latent_dim
    iaf = IAF(opts.iaf_steps, opts.iaf_hidden)
    net = make_backbone_fns(cfg, spec.image_shape, encoder_out=3 * dims)

    def flow(params, z0, context):
        return iaf.apply({"params": params["flow"]}, z0, context)

    def init_flow(key, z0, context):
        return iaf.init(key, z0, context)["params"]

    parts = FlowPosterior(net, get_likelihood(cfg.likelihood), dims, dims, flow, init_flow)
    return parts.model("iaf_vae", spec)
