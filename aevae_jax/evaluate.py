"""Evaluation: metrics over a whole split, vmap-based, in fixed-size chunks.

Per-example functions are written for one example and vectorised with `jax.vmap`;
`map_examples` runs them over a split in chunks with `lax.map`, padding the last
chunk and dropping the padding, so results never depend on the chunk size. Each
example's randomness comes from `fold_in(key, example_index)`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.data import preprocess
from aevae_jax.likelihoods import (
    bernoulli_log_prob,
    kl_to_std_normal,
    squared_error,
    sum_per_example,
)
from aevae_jax.models import Batch, Model

TRAIN_SPLIT, TEST_SPLIT = 0, 1  # split ids of the static binarization keys


def map_examples(fn: Callable, arrays, chunk: int = 1000):
    """Apply `fn(*per_example_arrays, index)` to every example of `arrays` (a tuple of
    [N, ...] arrays or None), vmapped within chunks and `lax.map`ped over chunks.
    Returns fn's outputs stacked to [N, ...]."""
    n = next(a.shape[0] for a in arrays if a is not None)
    chunk = min(chunk, n)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n

    def chunked(a):
        if a is None:
            return None
        a = jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)]) if pad else a
        return a.reshape(n_chunks, chunk, *a.shape[1:])

    index = jnp.arange(n_chunks * chunk, dtype=jnp.int32).reshape(n_chunks, chunk)
    xs = (tuple(chunked(a) for a in arrays), index)
    out = jax.lax.map(lambda c: jax.vmap(fn)(*c[0], c[1]), xs)
    return jax.tree.map(lambda o: o.reshape(n_chunks * chunk, *o.shape[2:])[:n], out)


def eval_mode(binarize: str) -> str:
    """Test inputs are binarized once, by the fixed static test draw, whenever training
    binarizes: every model, epoch and run then sees the very same test images."""
    return "none" if binarize == "none" else "static"


def eval_inputs(x: jax.Array, binarize: str, split: int = TEST_SPLIT) -> jax.Array:
    """A whole stored split [N, ...] as model input [N, H, W, C] float32, binarized by
    that split's fixed draw (for training images, the very draw static training uses)."""
    index = jnp.arange(x.shape[0], dtype=jnp.int32)
    return preprocess(x, eval_mode(binarize), None, index, split=split)


def make_loss_per_example(model: Model, binarize: str) -> Callable:
    """(params, x_stored, y, key, step) -> (loss [N], metrics {name: [N]}) over a split.

    Each example is scored with the model key fold_in(key, index), so the value is the
    same whatever the chunking; the mean over N is the split's loss.
    """
    mode = eval_mode(binarize)

    def one(params, key, step, x, y, i):
        xb = preprocess(x[None], mode, None, i[None], split=TEST_SPLIT)
        batch = Batch(xb, None if y is None else y[None])
        return model.loss(params, batch, jax.random.fold_in(key, i), step)

    @jax.jit
    def losses(params, x, y, key, step):
        return map_examples(functools.partial(one, params, key, step), (x, y))

    return losses


def mean_metrics(loss: jax.Array, metrics: dict) -> dict[str, float]:
    """Split means of per-example loss and metrics as Python floats."""
    out = {"loss": float(np.mean(loss))}
    out.update({k: float(np.mean(v)) for k, v in metrics.items()})
    return out


# ------------------------------------------------------------------ reconstruction


def reconstruction_errors(model: Model, params, x: jax.Array) -> dict[str, jax.Array]:
    """Per-example reconstruction errors of x [B, H, W, C] in [0, 1] through the code mean:
    squared error summed over pixels (the article's ||X - X_hat||^2), Bernoulli
    cross-entropy in nats, and PSNR in dB (peak 1, per-pixel mean squared error)."""
    logits = model.decode(params, model.encode(params, x).mean)
    x_hat = model.likelihood.mean(logits)
    sq = sum_per_example(squared_error(x_hat, x))
    bce = -sum_per_example(bernoulli_log_prob(logits, x))
    pixels = math.prod(x.shape[1:])
    psnr = 10.0 * jnp.log10(pixels / jnp.maximum(sq, 1e-12))
    return {"mse": sq, "bce": bce, "psnr": psnr}


# ------------------------------------------------------------------ latent statistics


def encode_split(model: Model, params, x: jax.Array, chunk: int = 500):
    """Encoding of every example of model inputs x [N, H, W, C], in chunks."""
    one = lambda xi, i: jax.tree.map(lambda a: a[0], model.encode(params, xi[None]))
    return jax.jit(lambda x: map_examples(one, (x,), chunk))(x)


def active_units(means: jax.Array, threshold: float = 0.01) -> jax.Array:
    """Burda et al.: dimension u is active if Cov_x(E_q[z_u | x]) > threshold.
    means: [N, L] posterior means over a split -> number of active dimensions."""
    return jnp.sum(jnp.var(means, axis=0) > threshold)


def kl_per_dimension(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(q(z_u|x) || N(0, 1)) averaged over examples, per latent dimension: [L]."""
    return jnp.mean(kl_to_std_normal(mean, log_var), axis=0)


# ------------------------------------------------------------------ IWAE likelihood


def iwae_log_likelihood(
    log_weights: Callable, params, x: jax.Array, key: jax.Array, k: int, k_chunk: int = 100
) -> jax.Array:
    """Importance-weighted estimate log (1/K) sum_k p(x, z_k) / q(z_k | x), per example.

    log_weights(params, x [B, ...], key, c) -> [c, B] (a model's log_importance_weights).
    Sample j is drawn with its own key fold_in(key, j), so the estimate does not depend
    on `k_chunk`; the samples are vmapped in chunks of `k_chunk` and combined by a
    running log-sum-exp inside `lax.scan`, so memory is O(k_chunk). Returns [B]; for
    K = 1 it is the single-sample Monte-Carlo ELBO log p(x|z) + log p(z) - log q(z|x)
    with z drawn from fold_in(key, 0).
    """
    k_chunk = min(k_chunk, k)
    n_full = k // k_chunk

    def chunk_log_w(js):  # sample indices [c] -> log weights [c, B]
        return jax.vmap(lambda j: log_weights(params, x, jax.random.fold_in(key, j), 1)[0])(js)

    def body(total, js):
        return jnp.logaddexp(total, jax.nn.logsumexp(chunk_log_w(js), axis=0)), None

    total = jnp.full((x.shape[0],), -jnp.inf)
    full = jnp.arange(n_full * k_chunk, dtype=jnp.int32).reshape(n_full, k_chunk)
    total, _ = jax.lax.scan(body, total, full)
    if k > n_full * k_chunk:
        total, _ = body(total, jnp.arange(n_full * k_chunk, k, dtype=jnp.int32))
    return total - math.log(k)


# ------------------------------------------------------------------ sample quality


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, D]:
    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}), in float64.

    Tr (S_a S_b)^{1/2} = sum of sqrt(eigenvalues of S_a^{1/2} S_b S_a^{1/2}), a symmetric
    PSD matrix, so no non-symmetric matrix square root is needed."""
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    tr_sqrt = np.sum(np.sqrt(np.clip(middle, 0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * tr_sqrt)


# ------------------------------------------------------------------ linear probe


def linear_probe_accuracy(
    train_codes, train_labels, test_codes, test_labels, num_classes: int, steps: int = 500
) -> float:
    """Test accuracy of multinomial logistic regression on standardised codes, fitted
    full-batch with Adam (lr 0.05, weight decay 1e-4) for `steps` steps."""
    import optax

    mu, sd = jnp.mean(train_codes, 0), jnp.std(train_codes, 0) + 1e-6
    a, b = (train_codes - mu) / sd, (test_codes - mu) / sd
    params = {"w": jnp.zeros((a.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
    tx = optax.adamw(0.05, weight_decay=1e-4)

    def loss(p):
        logits = a @ p["w"] + p["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, train_labels).mean()

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=steps))(
        (params, tx.init(params))
    )
    pred = jnp.argmax(b @ params["w"] + params["b"], axis=1)
    return float(jnp.mean(pred == test_labels))


# ------------------------------------------------------------------ everything at once


def corrupt(key: jax.Array, x: jax.Array, rate: float = 0.2) -> jax.Array:
    """Salt-and-pepper noise: each pixel, with probability `rate`, becomes 0 or 1."""
    k_where, k_value = jax.random.split(key)
    hit = jax.random.bernoulli(k_where, rate, x.shape)
    value = jax.random.bernoulli(k_value, 0.5, x.shape).astype(x.dtype)
    return jnp.where(hit, value, x)


def evaluate_model(
    model: Model,
    params,
    dataset,
    binarize: str,
    key: jax.Array,
    iwae_k: int = 1000,
    classifier=None,
    n_samples: int | None = None,
    chunk: int = 500,
) -> dict:
    """The test-split metrics of one trained model, in the metrics.json vocabulary.

    What is computed follows from the model protocol: every model gets reconstruction
    (test_mse, test_bce, test_psnr), denoising (test_denoise_mse), a linear probe
    (probe_accuracy) and prior-sample FD; a stochastic encoder adds test_kl,
    kl_per_dim and active_units; `log_importance_weights` adds test_neg_elbo and
    test_nll_iwae; a model without `sample` gets expost_sample_fd as well.
    """
    from aevae_jax.samplers import decode_samples, expost_gaussian, prior_images

    keys = {
        n: jax.random.fold_in(key, i)
        for i, n in enumerate(("loss", "iwae", "samples", "expost", "noise"))
    }
    x_test = eval_inputs(jnp.asarray(dataset.x_test), binarize)
    out: dict = {}

    per_example = jax.jit(
        lambda p, x: map_examples(
            lambda xi, i: jax.tree.map(lambda a: a[0], reconstruction_errors(model, p, xi[None])),
            (x,),
            chunk,
        )
    )
    rec = per_example(params, x_test)
    out.update({f"test_{k}": float(jnp.mean(v)) for k, v in rec.items()})
    noisy = corrupt(keys["noise"], x_test)
    denoised = jax.jit(
        lambda p, xn, xc: map_examples(
            lambda a, b, i: sum_per_example(squared_error(model.reconstruct(p, a[None]), b[None]))[
                0
            ],
            (xn, xc),
            chunk,
        )
    )(params, noisy, x_test)
    out["test_denoise_mse"] = float(jnp.mean(denoised))

    encode = functools.partial(encode_split, model, chunk=chunk)
    enc_test = encode(params, x_test)
    if enc_test.log_var is not None:
        kl_dims = kl_per_dimension(enc_test.mean, enc_test.log_var)
        out["test_kl"] = float(jnp.sum(kl_dims))
        out["kl_per_dim"] = [float(v) for v in kl_dims]
        out["active_units"] = int(active_units(enc_test.mean))
        std = jnp.mean(jnp.exp(0.5 * enc_test.log_var), axis=0)  # [L]
        active = jnp.var(enc_test.mean, axis=0) > 0.01
        out["posterior_std_mean"] = float(jnp.mean(std))
        out["posterior_std_active"] = (
            float(jnp.sum(std * active) / jnp.sum(active)) if bool(active.any()) else None
        )

    if model.log_importance_weights is not None:
        losses = make_loss_per_example(model, binarize)
        loss, terms = losses(params, jnp.asarray(dataset.x_test), None, keys["loss"], 0)
        out["test_neg_elbo"] = float(jnp.mean(loss))
        out.update({f"test_{k}": float(jnp.mean(v)) for k, v in terms.items()})
        iwae = jax.jit(
            lambda p, x: map_examples(
                lambda xi, i: iwae_log_likelihood(
                    model.log_importance_weights,
                    p,
                    xi[None],
                    jax.random.fold_in(keys["iwae"], i),
                    iwae_k,
                )[0],
                (x,),
                max(1, chunk // 5),
            )
        )
        out["test_nll_iwae"] = -float(jnp.mean(iwae(params, x_test)))
        out["iwae_k"] = int(iwae_k)

    x_train = eval_inputs(jnp.asarray(dataset.x_train), binarize, split=TRAIN_SPLIT)
    enc_train = encode(params, x_train)
    if dataset.y_train is not None and dataset.y_test is not None:
        out["probe_accuracy"] = linear_probe_accuracy(
            enc_train.mean,
            jnp.asarray(dataset.y_train),
            enc_test.mean,
            jnp.asarray(dataset.y_test),
            dataset.num_classes,
        )

    if classifier is not None:
        n = n_samples or len(dataset.x_test)
        reference = classifier.features(jnp.asarray(dataset.x_test))
        prior = prior_images(model, params, keys["samples"], n)
        out["prior_sample_fd"] = frechet_distance(classifier.features(prior), reference)
        if model.sample is None:
            expost = decode_samples(
                model, params, expost_gaussian(enc_train.mean), keys["expost"], n
            )
            out["expost_sample_fd"] = frechet_distance(classifier.features(expost), reference)
    return out
