"""The masked autoencoder (He et al. 2022), sized for small images: random p x p patches
are hidden from the encoder, the decoder reconstructs the whole image from the code, and
the loss covers the hidden patches only,

    loss = mean_b sum_{hidden pixels i of example b} nll_i(decoder(encoder(visible)), x).

Encoders (option `encoder`):
- tokens (default): a patch-token transformer. Each patch is embedded linearly; a hidden
  patch's embedding is replaced by one learned mask token (as in SimMIM, Xie et al. 2022,
  rather than dropped as in MAE: the evaluator's masks and full images leave varying
  numbers of patches visible, which one compiled encoder then handles alike); learned
  position embeddings; `depth` pre-norm blocks of multi-head self-attention and a GELU
  MLP (Flax's default initialisers: the run's --activation and --init apply to the
  backbone only); the mean over tokens goes through a dense layer to the code.
- backbone: the run's MLP or conv encoder over the image with hidden pixels set to 0.
The decoder is the run's backbone decoder (mlp or conv), as for every other model.

Exactly round(mask_ratio * patches) patches are hidden in each training image, drawn
from the step's key. At evaluation nothing is hidden unless the batch carries a mask
(`Batch.mask`, the evaluator's inpainting test), which the encoder then honours.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from aevae_jax.errors import require
from aevae_jax.models import register
from aevae_jax.models.ae import point_code
from aevae_jax.models.base import Batch, Claim, Encoding, Model
from aevae_jax.nn.corruption import check_patches, patch_mask, patch_visibility, pixel_mask
from aevae_jax.nn.likelihoods import batch_mean, sum_per_example

MASK_STREAM = 1  # fold_in(step key, MASK_STREAM) draws the step's patch mask
ENCODERS = ("tokens", "backbone")


@dataclasses.dataclass(frozen=True)
class MAEOptions:
    mask_ratio: float = dataclasses.field(
        default=0.5, metadata={"help": "fraction of patches hidden from the encoder"}
    )
    patch_size: int = dataclasses.field(
        default=4, metadata={"help": "patch side in pixels (divides the image side)"}
    )
    encoder: str = dataclasses.field(
        default="tokens", metadata={"help": "tokens (patch transformer) or backbone"}
    )
    token_dim: int = dataclasses.field(default=64, metadata={"help": "tokens: embedding width"})
    depth: int = dataclasses.field(default=2, metadata={"help": "tokens: transformer blocks"})
    heads: int = dataclasses.field(default=4, metadata={"help": "tokens: attention heads"})

    def __post_init__(self):
        require(0 < self.mask_ratio < 1, f"--mask-ratio must lie in (0, 1), got {self.mask_ratio}")
        require(self.patch_size > 0, f"--patch-size must be positive, got {self.patch_size}")
        require(
            self.encoder in ENCODERS,
            f"--encoder must be one of {', '.join(ENCODERS)}; got {self.encoder!r}",
        )
        require(self.depth >= 0, f"--depth must be >= 0, got {self.depth}")
        require(
            self.token_dim > 0 and self.heads > 0 and self.token_dim % self.heads == 0,
            f"--token-dim ({self.token_dim}) must be a positive multiple of --heads ({self.heads})",
        )


def patchify(x: jax.Array, patch: int) -> jax.Array:
    """[B, H, W, C] -> [B, (H/p) * (W/p), p * p * C], patches in row-major order."""
    b, h, w, c = x.shape
    t = x.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(b, (h // patch) * (w // patch), patch * patch * c)


class PatchTokenEncoder(nn.Module):
    """Patches -> tokens (mask token where hidden) -> transformer -> mean -> Dense(out)."""

    patch: int
    out_dim: int
    dim: int = 64
    depth: int = 2
    heads: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, visible: jax.Array) -> jax.Array:
        tokens = nn.Dense(self.dim)(patchify(x, self.patch))  # [B, N, D]
        mask_token = self.param("mask_token", nn.initializers.normal(0.02), (self.dim,))
        tokens = jnp.where(visible[..., None] > 0, tokens, mask_token)
        pos = self.param("position", nn.initializers.normal(0.02), tokens.shape[1:])
        h = tokens + pos
        for _ in range(self.depth):
            h = h + nn.MultiHeadDotProductAttention(self.heads)(nn.LayerNorm()(h))
            u = nn.LayerNorm()(h)
            h = h + nn.Dense(self.dim)(nn.gelu(nn.Dense(2 * self.dim)(u)))
        return nn.Dense(self.out_dim)(jnp.mean(nn.LayerNorm()(h), axis=1))


def hidden_patch_loss(likelihood, logits, x, mask) -> jax.Array:
    """Per example: the likelihood's loss summed over hidden pixels (mask 0) only: [B]."""
    return sum_per_example(likelihood.nll_pixels(logits, x) * (1.0 - mask))


CLAIMS = (
    Claim(
        "test_inpaint_mse",
        "lower",
        "ae",
        "a masked AE reconstructs hidden patches better than an AE that never saw masking "
        "(He et al. 2022)",
    ),
)


@register("mae", options=MAEOptions, likelihood="mse", claims=CLAIMS)
def make_mae(cfg, spec, opts: MAEOptions) -> Model:
    """Masked autoencoder: reconstructs randomly hidden patches (patch-token encoder)."""
    grid = check_patches(spec.image_shape, opts.patch_size)
    parts = point_code(cfg, spec)  # the backbone's decoder (and encoder, for "backbone")
    net = parts.net
    tokens = PatchTokenEncoder(
        opts.patch_size, cfg.latent_dim, opts.token_dim, opts.depth, opts.heads
    )
    n_patches = grid[0] * grid[1]

    def init(key, batch):
        k_net, k_tok = jax.random.split(key)
        params = net.init(k_net, batch.x)
        if opts.encoder == "tokens":
            visible = jnp.ones((batch.x.shape[0], n_patches), jnp.float32)
            params["encoder"] = tokens.init(k_tok, batch.x, visible)["params"]
        return params

    def encode(params, batch):
        mask = batch.mask
        x = batch.x if mask is None else batch.x * mask
        if opts.encoder == "backbone":
            return Encoding(net.encoder(params, x))
        visible = (
            jnp.ones((x.shape[0], n_patches), jnp.float32)
            if mask is None
            else patch_visibility(mask, opts.patch_size)
        )
        return Encoding(tokens.apply({"params": params["encoder"]}, x, visible))

    def loss(params, batch, key, step):
        del step
        k_mask = jax.random.fold_in(key, MASK_STREAM)
        mask = pixel_mask(
            patch_mask(k_mask, batch.x.shape[0], grid, opts.mask_ratio), opts.patch_size
        )
        code = encode(params, Batch(batch.x * mask, batch.y, mask)).code
        logits = parts.decode(params, code)
        value = batch_mean(hidden_patch_loss(parts.likelihood, logits, batch.x, mask))
        return value, {"recon_hidden": value}

    return parts.model("mae", loss, init=init, encode=encode)
