"""A minimal hand-written JAX VAE step for benchmarks/step_time.py, using no project code:
what a JAX user would write from the Flax and Optax documentation.

One jitted call per step (state donated): gather the batch from the uint8 training
images on the device, scale, `jax.random.bernoulli`, encoder to (mean, log-variance),
reparameterise, decoder logits, Bernoulli NLL summed over pixels + analytic KL, mean
over the batch, `optax.adam(1e-3)`. Backbones as the project's: 'mlp' (Dense+ReLU per
hidden size) and 'conv' (flax.linen.Conv / ConvTranspose 3x3 stride 2 'SAME', then the
hidden Dense layers; the decoder mirrors it).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class Encoder(nn.Module):
    backbone: str
    hidden: tuple[int, ...]
    channels: tuple[int, ...]
    latent: int

    @nn.compact
    def __call__(self, x):
        h = x
        if self.backbone == "conv":
            for c in self.channels:
                h = nn.relu(nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME")(h))
        h = h.reshape(h.shape[0], -1)
        for w in self.hidden:
            h = nn.relu(nn.Dense(w)(h))
        h = nn.Dense(2 * self.latent)(h)
        return h[:, : self.latent], h[:, self.latent :]


class Decoder(nn.Module):
    backbone: str
    hidden: tuple[int, ...]
    channels: tuple[int, ...]
    image_shape: tuple[int, int, int]

    @nn.compact
    def __call__(self, z):
        h = z
        for w in reversed(self.hidden):
            h = nn.relu(nn.Dense(w)(h))
        height, width, c = self.image_shape
        if self.backbone == "mlp":
            return nn.Dense(math.prod(self.image_shape))(h).reshape(z.shape[0], *self.image_shape)
        s = 2 ** len(self.channels)
        h = nn.relu(nn.Dense((height // s) * (width // s) * self.channels[-1])(h))
        h = h.reshape(z.shape[0], height // s, width // s, self.channels[-1])
        for ch in reversed(self.channels[:-1]):
            h = nn.relu(nn.ConvTranspose(ch, (3, 3), strides=(2, 2), padding="SAME")(h))
        return nn.ConvTranspose(c, (3, 3), strides=(2, 2), padding="SAME")(h)


def make_minimal_vae_step(backbone, image_shape, batch_size, hidden, latent, channels):
    """(step, state): `state = step(state, images, idx, key)` runs one update on the
    examples `idx` of `images` (the uint8 training images, on the device)."""
    image_shape = tuple(image_shape)
    enc = Encoder(backbone, tuple(hidden), tuple(channels), latent)
    dec = Decoder(backbone, tuple(hidden), tuple(channels), image_shape)
    k1, k2 = jax.random.split(jax.random.key(0))
    x0 = jnp.zeros((batch_size, *image_shape))
    params = {
        "enc": enc.init(k1, x0)["params"],
        "dec": dec.init(k2, jnp.zeros((batch_size, latent)))["params"],
    }
    tx = optax.adam(1e-3)

    def loss_fn(params, x, key):
        mean, log_var = enc.apply({"params": params["enc"]}, x)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
        logits = dec.apply({"params": params["dec"]}, z)
        recon = optax.sigmoid_binary_cross_entropy(logits, x).sum(axis=(1, 2, 3))
        kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
        return jnp.mean(recon + kl)

    def step(state, images, idx, key):
        params, opt_state = state
        k_bin, k_z = jax.random.split(key)
        p = jnp.take(images, idx, axis=0).astype(jnp.float32) / 255.0
        x = jax.random.bernoulli(k_bin, p).astype(jnp.float32)
        grads = jax.grad(loss_fn)(params, x, k_z)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return jax.jit(step, donate_argnums=(0,)), (params, tx.init(params))
