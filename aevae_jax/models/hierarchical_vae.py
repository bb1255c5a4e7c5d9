"""A top-down hierarchical conv VAE in the manner of NVAE and VDVAE (Vahdat & Kautz 2020;
Child 2021): spatial latents at the resolution of a residual conv network's last feature
map, generated one layer after another.

Networks (its own; --backbone does not apply): bottom up, a stride-2 convolution and a
residual cell per halving, to e [B, H/4, W/4, C]. Top down, from a learned state h_0
[H/4, W/4, C], for each stochastic layer i = 1..L:
  p(z_i | z_<i) = N(m_p, v_p) and a state update from a residual cell of h,
  q(z_i | z_<i, x) = N(m_q, v_q) from a residual cell of [h, e],
  h <- cell(h + proj(z_i) + the prior's update).
The decoder upsamples the last h (two stride-2 transposed convolutions with a cell) to the
likelihood's parameters. Residual cells are 1x1 -> 3x3 -> 3x3 -> 1x1 bottlenecks with
their last layer starting at zero (each cell starts as the identity).

Loss: recon + beta(t) sum_i KL(q_i || p_i), each KL in closed form given the layers above
(reported per layer: kl_z1 is the layer nearest the data, the last generated), with a
linear KL warm-up beta(t) = min(1, t / kl-warmup-steps). The optimiser skips any step whose
gradient norm exceeds --skip-threshold (nn/optim.skip_large_gradients). The code is every
layer's z, flattened and concatenated in generation order; `decode` runs the top-down
pass with those values.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.base import Claim, Encoding, Model, Prior
from aevae_jax.nn.conv import Conv, ConvTranspose, resolve_impl
from aevae_jax.nn.likelihoods import (
    batch_mean,
    diag_gaussian_log_prob,
    get_likelihood,
    kl_diag_gaussians,
)
from aevae_jax.nn.optim import make_optimizer, skip_large_gradients


@dataclasses.dataclass(frozen=True)
class HVAEOptions:
    stochastic_layers: int = dataclasses.field(
        default=4, metadata={"help": "stochastic layers of the top-down hierarchy"}
    )
    z_channels: int = dataclasses.field(
        default=2, metadata={"help": "latent channels per layer, at H/4 x W/4"}
    )
    channels: int = dataclasses.field(
        default=32, metadata={"help": "channels of the top-down state"}
    )
    kl_warmup_steps: int = dataclasses.field(
        default=2000, metadata={"help": "steps of the linear KL warm-up (0: none)"}
    )
    skip_threshold: float = dataclasses.field(
        default=1e5, metadata={"help": "skip steps whose gradient norm exceeds it"}
    )

    def __post_init__(self):
        require(self.stochastic_layers >= 1, "--stochastic-layers must be a positive integer")
        require(self.z_channels >= 1, "--z-channels must be a positive integer")
        require(self.channels >= 2, "--channels must be at least 2")
        require(self.kl_warmup_steps >= 0, "--kl-warmup-steps must be >= 0")
        require(self.skip_threshold > 0, "--skip-threshold must be positive (inf: never skip)")


def conv3x3(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
    """Stride-1 'SAME' 3x3 convolution: nine shifted copies and one matrix product
    ('im2col', fast on CPU) or XLA's convolution."""
    if resolve_impl(impl) == "xla":
        dims = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=dims)
    _, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], -1)
    return cols @ kernel.reshape(9 * c, -1)


class Conv3(nn.Module):
    features: int
    impl: str = "auto"
    zero: bool = False

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.zeros if self.zero else nn.initializers.lecun_normal()
        kernel = self.param("kernel", init, (3, 3, x.shape[-1], self.features))
        return conv3x3(x, kernel, self.impl) + self.param("bias", nn.initializers.zeros,
                                                          (self.features,))  # fmt: skip


class Cell(nn.Module):
    """Residual bottleneck x + f(x) with f = 1x1 -> 3x3 -> 3x3 -> 1x1 (GELU between), its
    last layer zero at init; `out` other than x's channels adds a 1x1 skip."""

    out: int
    impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        mid = max(self.out // 4, 1)
        h = nn.Dense(mid)(nn.gelu(x))
        h = Conv3(mid, self.impl)(nn.gelu(h))
        h = Conv3(mid, self.impl)(nn.gelu(h))
        h = nn.Dense(self.out, kernel_init=nn.initializers.zeros)(nn.gelu(h))
        skip = x if x.shape[-1] == self.out else nn.Dense(self.out)(x)
        return skip + h


class HierarchicalNet(nn.Module):
    """The networks; `top_down(e, choose)` walks the layers, `choose(i, q, p)` giving
    layer i's z from its posterior q (None without data) and prior p, each (mean, log_var)."""

    out_channels: int
    layers: int
    z_channels: int
    channels: int
    grid: tuple[int, int]  # (H / 4, W / 4)
    impl: str = "auto"

    def setup(self):
        c, zc = self.channels, self.z_channels
        self.h_top = self.param("h_top", nn.initializers.zeros, (*self.grid, c))
        self.stem, self.stem_cell = Conv(c // 2, self.impl), Cell(c // 2, self.impl)
        self.down, self.down_cell = Conv(c, self.impl), Cell(c, self.impl)
        self.prior_cells = [Cell(c, self.impl) for _ in range(self.layers)]
        self.prior_out = [nn.Dense(2 * zc + c, kernel_init=nn.initializers.zeros)
                          for _ in range(self.layers)]  # fmt: skip
        self.post_cells = [Cell(c, self.impl) for _ in range(self.layers)]
        self.post_out = [nn.Dense(2 * zc) for _ in range(self.layers)]
        self.z_proj = [nn.Dense(c) for _ in range(self.layers)]
        self.res_cells = [Cell(c, self.impl) for _ in range(self.layers)]
        self.up, self.up_cell = ConvTranspose(c // 2, self.impl), Cell(c // 2, self.impl)
        self.out = ConvTranspose(self.out_channels, self.impl)

    def features(self, x):
        h = self.stem_cell(nn.gelu(self.stem(x)))
        return self.down_cell(nn.gelu(self.down(h)))

    def top_down(self, e, choose, shape):
        """(logits, zs, posteriors, priors), each list in generation order."""
        zc = self.z_channels
        h = jnp.broadcast_to(self.h_top, (shape[0], *self.h_top.shape))
        zs, posts, priors = [], [], []
        for i in range(self.layers):
            p_out = self.prior_out[i](self.prior_cells[i](h))
            prior = (p_out[..., :zc], p_out[..., zc : 2 * zc])
            post = None
            if e is not None:
                q_out = self.post_out[i](self.post_cells[i](jnp.concatenate([h, e], -1)))
                post = (q_out[..., :zc], q_out[..., zc:])
            z = choose(i, post, prior)
            h = self.res_cells[i](h + self.z_proj[i](z) + p_out[..., 2 * zc :])
            zs.append(z), posts.append(post), priors.append(prior)
        logits = self.out(nn.gelu(self.up_cell(nn.gelu(self.up(h)))))
        return logits, zs, posts, priors

    def __call__(self, x):  # init: every parameter
        e = self.features(x)
        return self.top_down(e, lambda i, q, p: q[0], e.shape)


# The inference network's submodules; every other one is the generative model's.
INFERENCE = ("stem", "down", "post_")

CLAIMS = (
    Claim("test_nll_iwae", "lower", "vae",
          "a deep top-down hierarchy of spatial latents beats the one-layer VAE's test NLL at "
          "the same budget (Vahdat & Kautz 2020; Child 2021)"),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Hierarchical:
    """Pure functions of the network's parameters; codes [B, L * h * w * zc] hold every
    layer's z in generation order."""

    net: HierarchicalNet
    likelihood: object
    grid: tuple[int, int]  # (H / 4, W / 4)
    opts: HVAEOptions

    @property
    def layer_size(self) -> int:
        return self.grid[0] * self.grid[1] * self.opts.z_channels

    def run(self, params, x, choose, n=None):
        """The top-down pass (with the data's bottom-up features when x is given)."""
        variables = {"params": {**params["encoder"], **params["decoder"]}}
        if x is None:
            shape = (n, *self.grid, self.opts.channels)
            return self.net.apply(variables, None, choose, shape, method="top_down")

        def both(module, x):
            e = module.features(x)
            return module.top_down(e, choose, e.shape)

        return self.net.apply(variables, x, method=both)

    def split(self, code):
        per = code.reshape(code.shape[0], self.opts.stochastic_layers, *self.grid, -1)
        return [per[:, i] for i in range(self.opts.stochastic_layers)]

    @staticmethod
    def flat(zs):
        return jnp.concatenate([z.reshape(z.shape[0], -1) for z in zs], axis=-1)

    def init(self, key, batch):
        """{"encoder": the inference network's parameters (bottom up, and each layer's
        q), "decoder": the generative model's}."""
        params = self.net.init(key, batch.x)["params"]
        inference = lambda name: name.startswith(INFERENCE)
        return {
            "encoder": {k: v for k, v in params.items() if inference(k)},
            "decoder": {k: v for k, v in params.items() if not inference(k)},
        }

    def draw(self, key):
        def choose(i, q, p):
            mean, log_var = q if q is not None else p
            eps = jax.random.normal(jax.random.fold_in(key, i), mean.shape, mean.dtype)
            return mean + jnp.exp(0.5 * log_var) * eps

        return choose

    def layer_kls(self, posts, priors):
        """[B] per layer, generation order: KL(q_i || p_i) in closed form."""
        pairs = zip(posts, priors, strict=True)
        return [jnp.sum(kl_diag_gaussians(*q, *p), axis=(1, 2, 3)) for q, p in pairs]

    def loss(self, params, batch, key, step):
        logits, _, posts, priors = self.run(params, batch.x, self.draw(key))
        recon = self.likelihood.nll(logits, batch.x)
        kls = self.layer_kls(posts, priors)
        warm = self.opts.kl_warmup_steps
        beta = jnp.minimum(1.0, (step + 1) / warm) if warm else jnp.float32(1.0)
        kl = sum(kls)
        metrics = {"recon": batch_mean(recon), "kl": batch_mean(kl), "kl_weight": beta}
        n = len(kls)
        metrics.update({f"kl_z{n - i}": batch_mean(v) for i, v in enumerate(kls)})
        return batch_mean(recon + beta * kl), metrics

    def log_weight(self, params, batch, key):
        logits, zs, posts, priors = self.run(params, batch.x, self.draw(key))
        log_px = -self.likelihood.nll(logits, batch.x)
        log_p = sum(gauss_sum(z, *p) for z, p in zip(zs, priors, strict=True))
        log_q = sum(gauss_sum(z, *q) for z, q in zip(zs, posts, strict=True))
        return log_px + log_p - log_q

    def log_importance_weights(self, params, batch, key, k):
        return jax.vmap(lambda kk: self.log_weight(params, batch, kk))(jax.random.split(key, k))

    def posterior(self, params, batch, key):
        _, zs, posts, _ = self.run(params, batch.x, self.draw(key))
        return self.flat(zs), sum(gauss_sum(z, *q) for z, q in zip(zs, posts, strict=True))

    def encode(self, params, batch) -> Encoding:
        _, _, posts, _ = self.run(params, batch.x, lambda i, q, p: q[0])
        return Encoding(self.flat([q[0] for q in posts]), self.flat([q[1] for q in posts]))

    def given(self, code):
        layers = self.split(code)
        return lambda i, q, p: layers[i]

    def decode(self, params, code, y=None):
        del y
        return self.run(params, None, self.given(code), n=code.shape[0])[0]

    def prior_log_prob(self, params, code):
        _, zs, _, priors = self.run(params, None, self.given(code), n=code.shape[0])
        return sum(gauss_sum(z, *p) for z, p in zip(zs, priors, strict=True))

    def prior_sample(self, params, key, n, y=None):
        del y
        return self.flat(self.run(params, None, self.draw(key), n=n)[1])

    def sample(self, params, key, n, y=None):
        logits = self.run(params, None, self.draw(key), n=n)[0]
        return self.likelihood.mean(logits)

    def optimizer(self, optim_cfg, total_steps):
        inner = make_optimizer(optim_cfg, total_steps)
        return skip_large_gradients(inner, self.opts.skip_threshold)


def gauss_sum(z, mean, log_var):
    """[B]: log N(z; mean, diag(exp(log_var))) summed over a layer's grid and channels."""
    return jnp.sum(diag_gaussian_log_prob(z, mean, log_var), axis=(1, 2))


@register("hvae", options=HVAEOptions, needs_density=True, claims=CLAIMS)
def make_hvae(cfg, spec, opts: HVAEOptions) -> Model:
    """Top-down hierarchical conv VAE (NVAE/VDVAE manner): spatial latent layers."""
    height, width, channels = spec.image_shape
    require(
        height % 4 == 0 and width % 4 == 0,
        f"hvae's network halves the image twice; it needs H and W divisible by 4, got "
        f"{spec.image_shape}",
    )
    likelihood = get_likelihood(cfg.likelihood)
    grid = (height // 4, width // 4)
    net = HierarchicalNet(channels * likelihood.channels, opts.stochastic_layers,
                          opts.z_channels, opts.channels, grid)  # fmt: skip
    h = Hierarchical(net, likelihood, grid, opts)
    return Model(
        name="hvae", spec=spec, code_shape=(opts.stochastic_layers * h.layer_size,),
        likelihood=likelihood, init=h.init, loss=h.loss, encode=h.encode, decode=h.decode,
        sample=h.sample, log_importance_weights=h.log_importance_weights,
        optimizer=h.optimizer, prior=Prior(h.prior_log_prob, h.prior_sample),
        posterior=h.posterior, top_down_posterior=True,
    )  # fmt: skip
