"""Tiny models and hand computations (NumPy, float64) shared by the model tests, and
the loader of the experiments/ scripts."""

import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.config import ModelConfig
from aevae_jax.data.spec import DataSpec
from aevae_jax.models import Batch, make_model

TINY = DataSpec("tiny", (4, 4, 1), 3)


# Small settings where a model's defaults compile slowly in the tests that build every
# model (every path still runs: several stochastic layers, flow steps, depths).
SMALL_OPTIONS = {
    "mae": {"patch_size": 2},
    "hvae": {"stochastic_layers": 2, "channels": 4, "z_channels": 1},
    "iaf_vae": {"iaf_steps": 2, "iaf_hidden": 8},
    "planar_vae": {"flow_length": 2},
    "ladder_vae": {"ladder_hidden": 8},
    "fsq": {"levels": "3,3", "prior_hidden": 16},
    "rq_vae": {"rq_depth": 2, "prior_hidden": 16},
    "vqvae": {"prior_hidden": 16},
}


def build(name, spec=TINY, **options):
    """A registered model on tiny images (hidden 16, latent 3), its parameters, and a
    batch of six binary images (with labels where `spec` has classes)."""
    cfg = ModelConfig(name=name, hidden=(16,), latent_dim=3, options=options)
    model = make_model(cfg, spec)
    x = (jax.random.uniform(jax.random.key(0), (6, *spec.image_shape)) > 0.5).astype(jnp.float32)
    y = None if spec.num_classes is None else jnp.arange(6, dtype=jnp.int32) % spec.num_classes
    batch = Batch(x, y)
    return model, model.init(jax.random.key(1), batch), batch


def bernoulli_nll_by_hand(logits, x):
    """Per-example -log Bernoulli(x | sigmoid(logits)), summed over pixels: [B]."""
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    x = np.asarray(x, np.float64)
    return -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(len(x), -1).sum(1)


def posterior_draw_by_hand(model, params, batch, key):
    """(z, mean, log_var) [B, L] in float64: the Gaussian posterior's moments and one
    reparameterised draw with the noise of `key`."""
    q = model.encode(params, batch)
    mean, log_var = np.asarray(q.code, np.float64), np.asarray(q.log_var, np.float64)
    eps = np.asarray(jax.random.normal(key, q.code.shape), np.float64)
    return mean + np.exp(0.5 * log_var) * eps, mean, log_var


def elbo_terms_by_hand(model, params, batch, key):
    """(recon [B], analytic KL [B]) of a Gaussian-latent model with z drawn from `key`."""
    z, mean, log_var = posterior_draw_by_hand(model, params, batch, key)
    logits = model.decode(params, jnp.asarray(z, jnp.float32), batch.y)
    recon = bernoulli_nll_by_hand(logits, batch.x)
    kl = 0.5 * (np.exp(log_var) + mean**2 - 1 - log_var).sum(1)
    return recon, kl


def log_weights_by_hand(model, params, batch, key, k):
    """[k, B] float64: log p(x|z) + log N(z; 0, I) - log q(z|x) of a Gaussian-latent model
    at the k draws that `key` gives log_importance_weights."""
    q = model.encode(params, batch)
    mean, log_var = np.asarray(q.code, np.float64), np.asarray(q.log_var, np.float64)
    eps = np.asarray(jax.random.normal(key, (k, *q.code.shape)), np.float64)
    z = mean + np.exp(0.5 * log_var) * eps  # [k, B, L]
    out = []
    for j in range(k):
        logits = model.decode(params, jnp.asarray(z[j], jnp.float32), batch.y)
        log_px = -bernoulli_nll_by_hand(logits, batch.x)
        log_pz = (-0.5 * (np.log(2 * np.pi) + z[j] ** 2)).sum(1)
        log_q = (-0.5 * (np.log(2 * np.pi) + log_var + (z[j] - mean) ** 2 / np.exp(log_var))).sum(1)
        out.append(log_px + log_pz - log_q)
    return np.stack(out)


def assert_weights_match_the_loss_in_expectation(model, params, batch, key, n):
    """-E[log w] over n single-sample draws equals the mean of the loss (its closed-form
    KLs at KL weight 1), within 4 standard errors and 0.02 nats."""
    keys = jax.random.split(key, n)
    log_w = np.asarray(
        jax.vmap(lambda k: model.log_importance_weights(params, batch, k, 1)[0])(keys)
    )
    losses = np.asarray(jax.vmap(lambda k: model.loss(params, batch, k, 0)[0])(keys))
    se = np.std(log_w.mean(1)) / np.sqrt(n)
    assert abs(-log_w.mean() - losses.mean()) < 4 * se + 0.02


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str):
    """experiments/<name>.py as a module (registered in sys.modules, where dataclasses
    look their module up)."""
    spec = importlib.util.spec_from_file_location(
        f"experiment_{name}", os.path.join(ROOT, "experiments", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
