"""The Ladder VAE (Sønderby et al. 2016): a hierarchy z_L -> ... -> z_1 -> x whose
inference network runs bottom up, then top down, merging at each layer what the data
say with what the layer above predicts.

Bottom up: d_1 and (mu_1, log s_1^2) from the backbone's encoder, d_i = MLP(d_{i-1}) with
(mu_i, log s_i^2) for each layer above. Top down: q(z_L | x) = N(mu_L, s_L^2); for
i < L, p(z_i | z_{i+1}) = N(m_i, v_i) from an MLP of z_{i+1}, and q(z_i | .) is the
precision-weighted product of the two Gaussians, variance 1 / (s_i^-2 + v_i^-1) and mean
(mu_i s_i^-2 + m_i v_i^-1) times it. The generative model shares p(z_i | z_{i+1}) with
the inference (the paper's parameter sharing); p(z_L) = N(0, I); the decoder reads z_1.

Loss: the single-sample -ELBO, recon + sum_i KL(q(z_i | .) || p(z_i | z_{i+1})), each KL
in closed form given the sampled layer above (reported per layer, kl_z1, kl_z2, ...).
The importance weights are log p(x, z) - log q(z | x) at joint draws.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from aevae_jax.errors import int_list, require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Encoding, Model, Prior, make_backbone_fns
from aevae_jax.nn.backbones import MLPEncoder
from aevae_jax.nn.likelihoods import (
    batch_mean,
    diag_gaussian_log_prob,
    get_likelihood,
    kl_diag_gaussians,
    reparameterize,
    std_normal_log_prob,
)


@dataclasses.dataclass(frozen=True)
class LadderOptions:
    ladder_dims: str = dataclasses.field(
        default="10", metadata={"help": "sizes of the layers above z1, bottom up (comma list)"}
    )
    ladder_hidden: int = dataclasses.field(
        default=100, metadata={"help": "hidden units of the networks between layers"}
    )

    def __post_init__(self):
        parse_dims(self.ladder_dims)
        require(self.ladder_hidden >= 1, "--ladder-hidden must be a positive integer")


def parse_dims(text: str) -> tuple[int, ...]:
    return int_list(text, "--ladder-dims", "10 or 16,8", 1)


def precision_weighted(mean_a, log_var_a, mean_b, log_var_b):
    """(mean, log_var) of the normalised product of two diagonal Gaussians."""
    prec_a, prec_b = jnp.exp(-log_var_a), jnp.exp(-log_var_b)
    log_var = -jnp.logaddexp(-log_var_a, -log_var_b)
    return (mean_a * prec_a + mean_b * prec_b) * jnp.exp(log_var), log_var


CLAIMS = (
    Claim("test_nll_iwae", "lower", "two_layer_vae",
          "precision-weighted top-down inference gives a test NLL below a hierarchy of the "
          "same layers with bottom-up inference (Sønderby et al. 2016, Table 1)"),
    Claim("test_nll_iwae", "lower", "vae",
          "the Ladder VAE's test NLL is below the one-layer VAE's (Sønderby et al. 2016)"),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Ladder:
    """Pure functions over params {"encoder", "decoder", "up_i", "down_i"}; dims bottom
    first (dims[0] = latent_dim, the decoder's layer)."""

    net: object
    likelihood: object
    dims: tuple[int, ...]
    hidden: int
    up: tuple[MLPEncoder, ...]  # d_{i-1} -> (mu_i, log s_i^2, d_i), i = 2..L
    down: tuple[MLPEncoder, ...]  # z_{i+1} -> (m_i, log v_i), i = 1..L-1

    def init(self, key, batch):
        keys = jax.random.split(key, 1 + len(self.up) + len(self.down))
        params = self.net.init(keys[0], batch.x)
        for i, up in enumerate(self.up):
            params[f"up_{i + 2}"] = up.init(keys[1 + i], jnp.zeros((1, self.hidden)))["params"]
        for i, down in enumerate(self.down):
            z = jnp.zeros((1, self.dims[i + 1]))
            params[f"down_{i + 1}"] = down.init(keys[1 + len(self.up) + i], z)["params"]
        return params

    def bottom_up(self, params, x):
        """[(mu_i, log s_i^2)] for i = 1..L: what the data say of each layer."""
        dim = self.dims[0]
        h = self.net.encoder(params, x)
        out, d = [(h[:, :dim], h[:, dim : 2 * dim])], h[:, 2 * dim :]
        for i, up in enumerate(self.up):
            dim = self.dims[i + 1]
            h = up.apply({"params": params[f"up_{i + 2}"]}, jax.nn.relu(d))
            out.append((h[:, :dim], h[:, dim : 2 * dim]))
            d = h[:, 2 * dim :]
        return out

    def prior_of(self, params, i, z_above):
        """(m_i, log v_i) of p(z_i | z_{i+1}), i = 1..L-1."""
        h = self.down[i - 1].apply({"params": params[f"down_{i}"]}, z_above)
        return jnp.split(h, 2, axis=-1)

    def top_down(self, params, batch, draw):
        """Walk down from z_L: (z bottom first, log q [B], KL per layer bottom first [B]
        each, the posteriors (mean, log_var) bottom first); `draw(i, mean, log_var)` gives
        layer i's value (a sample, or the mean)."""
        data = self.bottom_up(params, batch.x)
        top = len(self.dims)
        mean, log_var = data[-1]
        z = draw(top, mean, log_var)
        zs, posts = [z], [(mean, log_var)]
        log_q = diag_gaussian_log_prob(z, mean, log_var)
        kls = [jnp.sum(kl_diag_gaussians(mean, log_var, 0.0, 0.0), -1)]
        for i in range(top - 1, 0, -1):
            m_p, lv_p = self.prior_of(params, i, z)
            mean, log_var = precision_weighted(*data[i - 1], m_p, lv_p)
            z = draw(i, mean, log_var)
            log_q = log_q + diag_gaussian_log_prob(z, mean, log_var)
            kls.append(jnp.sum(kl_diag_gaussians(mean, log_var, m_p, lv_p), -1))
            zs.append(z)
            posts.append((mean, log_var))
        return tuple(zs[::-1]), log_q, kls[::-1], posts[::-1]

    def posterior(self, params, batch, key):
        draw = lambda i, m, lv: reparameterize(jax.random.fold_in(key, i), m, lv)
        zs, log_q, _, _ = self.top_down(params, batch, draw)
        return zs, log_q

    def encode(self, params, batch) -> Encoding:
        _, _, _, posts = self.top_down(params, batch, lambda i, m, lv: m)
        (mean, log_var), *above = posts
        return Encoding(mean, log_var, layers=tuple(Encoding(m, lv) for m, lv in above))

    def decode(self, params, z, y=None):
        del y
        return self.net.decoder(params, z)

    def prior_log_prob(self, params, zs):
        log_p = std_normal_log_prob(zs[-1])
        for i in range(1, len(self.dims)):
            m_p, lv_p = self.prior_of(params, i, zs[i])
            log_p = log_p + diag_gaussian_log_prob(zs[i - 1], m_p, lv_p)
        return log_p

    def prior_sample(self, params, key, n, y=None):
        del y
        z = jax.random.normal(jax.random.fold_in(key, len(self.dims)), (n, self.dims[-1]))
        zs = [z]
        for i in range(len(self.dims) - 1, 0, -1):
            z = reparameterize(jax.random.fold_in(key, i), *self.prior_of(params, i, z))
            zs.append(z)
        return tuple(zs[::-1])

    def loss(self, params, batch, key, step):
        del step
        draw = lambda i, m, lv: reparameterize(jax.random.fold_in(key, i), m, lv)
        zs, _, kls, _ = self.top_down(params, batch, draw)
        recon = self.likelihood.nll(self.decode(params, zs[0]), batch.x)
        metrics = {"recon": batch_mean(recon), "kl": batch_mean(sum(kls))}
        metrics.update({f"kl_z{i + 1}": batch_mean(kl) for i, kl in enumerate(kls)})
        return batch_mean(recon + sum(kls)), metrics

    def log_importance_weights(self, params, batch, key, k):
        def one(kk):
            zs, log_q = self.posterior(params, batch, kk)
            log_px = -self.likelihood.nll(self.decode(params, zs[0]), batch.x)
            return log_px + self.prior_log_prob(params, zs) - log_q

        return jax.vmap(one)(jax.random.split(key, k))

    def sample(self, params, key, n, y=None):
        return self.likelihood.mean(self.decode(params, self.prior_sample(params, key, n)[0]))


@register("ladder_vae", options=LadderOptions, needs_density=True, claims=CLAIMS)
def make_ladder_vae(cfg, spec, opts: LadderOptions) -> Model:
    """Ladder VAE: top-down inference merged with bottom-up evidence (Sønderby et al. 2016)."""
    dims = (cfg.latent_dim, *parse_dims(opts.ladder_dims))
    h = opts.ladder_hidden
    net = make_backbone_fns(cfg, spec.image_shape, encoder_out=2 * dims[0] + h)
    mlp = lambda out: MLPEncoder((h,), out, cfg.activation, cfg.init)
    up = tuple(mlp(2 * d + h) for d in dims[1:])
    down = tuple(mlp(2 * d) for d in dims[:-1])
    lad = Ladder(net, get_likelihood(cfg.likelihood), dims, h, up, down)
    return Model(
        name="ladder_vae", spec=spec, code_shape=(dims[0],), likelihood=lad.likelihood,
        init=lad.init, loss=lad.loss, encode=lad.encode, decode=lad.decode, sample=lad.sample,
        log_importance_weights=lad.log_importance_weights,
        prior=Prior(lad.prior_log_prob, lad.prior_sample), posterior=lad.posterior,
        top_down_posterior=True,
    )  # fmt: skip
