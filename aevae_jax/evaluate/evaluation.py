"""Evaluation: metrics of a trained model over a whole split, vmap-based, in chunks.

Per-example functions are written for one example (a batch of one) and vectorised
with `jax.vmap`; `map_examples` runs them over a split in fixed-size chunks with
`lax.map`, padding the last chunk and dropping the padding, so results never depend
on the chunk size. Each example's randomness comes from `fold_in(key, example_index)`.

What is computed follows from the model protocol, never from a model's name, and the
training objective is never used to report a likelihood: the test -ELBO is the
importance-weighted estimate with K = 1 (`log_importance_weights`, true prior,
beta = 1); the objective is reported under its own name (`test_objective`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.data.preprocess import preprocess
from aevae_jax.errors import require
from aevae_jax.evaluate import metrics as M
from aevae_jax.models import Batch, Encoding, Model
from aevae_jax.nn.corruption import corrupt, patch_grid, patch_mask, pixel_mask
from aevae_jax.nn.likelihoods import (
    bernoulli_log_prob,
    bits_per_dim,
    kl_to_std_normal,
    reparameterize,
    squared_error,
    sum_per_example,
)
from aevae_jax.progress import progress_bar

TRAIN_SPLIT, TEST_SPLIT = 0, 1  # split ids of the static binarization keys


# ------------------------------------------------------------------ running over a split


def map_examples(fn: Callable, arrays, chunk: int = 1000, offset=0):
    """Apply `fn(*per_example_arrays, index)` to every example of `arrays` (a tuple of
    [N, ...] arrays or None), vmapped within chunks and `lax.map`ped over chunks. The
    index of example i is offset + i. Returns fn's outputs stacked to [N, ...]."""
    n = next(a.shape[0] for a in arrays if a is not None)
    chunk = min(chunk, n)
    n_chunks = -(-n // chunk)

    def chunked(a):
        if a is None:
            return None
        return _padded(a, n_chunks * chunk).reshape(n_chunks, chunk, *a.shape[1:])

    index = offset + jnp.arange(n_chunks * chunk, dtype=jnp.int32).reshape(n_chunks, chunk)
    xs = (tuple(chunked(a) for a in arrays), index)
    out = jax.lax.map(lambda c: jax.vmap(fn)(*c[0], c[1]), xs)
    return jax.tree.map(lambda o: o.reshape(n_chunks * chunk, *o.shape[2:])[:n], out)


class SplitMap:
    """`fn(context, *per_example_arrays, index)` over whole splits, compiled once.

    The split runs in blocks of `block` examples from Python (one compiled function,
    the last block padded), so long evaluations show a progress bar; within a block,
    `map_examples` chunks by `chunk`. `context` (parameters, keys) is an argument,
    never a constant baked into the compiled code. `run_block(context, arrays, offset)` is
    the compiled function of one block (examples offset, offset + 1, ...)."""

    def __init__(self, fn: Callable, chunk: int = 500, block: int | None = None):
        self.block = block
        self.run_block = jax.jit(
            lambda context, arrays, offset: map_examples(
                functools.partial(fn, context), arrays, chunk, offset
            )
        )

    def __call__(self, context, arrays, desc: str | None = None, progress: bool = False):
        n = next(a.shape[0] for a in arrays if a is not None)
        if self.block is None or n <= self.block:
            return self.run_block(context, arrays, 0)
        starts = range(0, n, self.block)
        starts = progress_bar(starts, desc=desc, unit="block", enabled=progress)
        outs = []
        for s in starts:
            part = tuple(
                None if a is None else _padded(a[s : s + self.block], self.block) for a in arrays
            )
            outs.append(self.run_block(context, part, s))
            if progress:  # the bar shows finished work, not dispatched work
                jax.block_until_ready(outs[-1])
        return jax.tree.map(lambda *o: jnp.concatenate(o)[:n], *outs)


def _padded(a, size: int):
    """[n, ...] -> [size, ...], zeros after the n examples."""
    pad = size - a.shape[0]
    return jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)]) if pad else a


def evaluation_key(seed: int) -> jax.Array:
    """The key of a run's test evaluation (IWAE samples, FD samples, probes): one per
    seed, so `aevae evaluate` and `aevae compare` draw the same numbers for a run."""
    return jax.random.fold_in(jax.random.key(seed), 1000)


def eval_mode(binarize: str) -> str:
    """Test inputs are binarized once, by the fixed static test draw, whenever training
    binarizes: every model, epoch and run then sees the very same test images."""
    return "none" if binarize == "none" else "static"


@functools.partial(jax.jit, static_argnames=("binarize", "split"))
def eval_inputs(x: jax.Array, binarize: str, split: int = TEST_SPLIT) -> jax.Array:
    """A whole stored split [N, ...] as model input [N, H, W, C] float32, binarized by
    that split's fixed draw (for training images, the very draw static training uses).
    Compiled once per shape: the same bits as the eager draw, without an op-by-op
    compilation for every model evaluated."""
    index = jnp.arange(x.shape[0], dtype=jnp.int32)
    return preprocess(x, eval_mode(binarize), None, index, split=split)


def one(x, y) -> Batch:
    """One example as a batch of one."""
    return Batch(x[None], None if y is None else y[None])


# ------------------------------------------------------------------ per-example scores


def neg_elbo(model: Model, params, batch: Batch, key) -> jax.Array:
    """[B] single-sample negative ELBO: -log w with K = 1 (true prior, beta = 1)."""
    return -iwae_log_likelihood(model.log_importance_weights, params, batch, key, 1)


def recon_nll(model: Model, params, batch: Batch) -> jax.Array:
    """[B] -log p(x | code) through the deterministic code (the Gaussian's mean)."""
    code = model.encode(params, batch).code
    return model.likelihood.nll(model.decode(params, code, batch.y), batch.x)


def selection_metric(model: Model) -> str:
    """The step-independent test metric that ranks checkpoints: the -ELBO where the
    model defines a density, else the reconstruction NLL (the AE's MSE)."""
    return "test_neg_elbo" if model.log_importance_weights is not None else "test_recon_nll"


def make_epoch_test(model: Model, loss: Callable, binarize: str, chunk: int = 1000) -> Callable:
    """(params, x_stored, y, key, step) -> {"test_objective", "test_terms",
    selection_metric: value}: split means, for the per-epoch log and the best checkpoint.

    The objective is `loss` (the stage's training objective, at `step`); each example's
    key is fold_in(key, index), so values do not depend on the chunking."""
    mode = eval_mode(binarize)
    select = selection_metric(model)

    def per_example(context, x, y, i):
        params, key, step = context
        batch = Batch(
            preprocess(x[None], mode, None, i[None], split=TEST_SPLIT),
            None if y is None else y[None],
        )
        value, terms = loss(params, batch, jax.random.fold_in(jax.random.fold_in(key, 0), i), step)
        k_sel = jax.random.fold_in(jax.random.fold_in(key, 1), i)
        selected = (
            neg_elbo(model, params, batch, k_sel)[0]
            if select == "test_neg_elbo"
            else recon_nll(model, params, batch)[0]
        )
        return value, terms, selected

    run = SplitMap(per_example, chunk)

    def test(params, x, y, key, step) -> dict:
        value, terms, selected = jax.device_get(run((params, key, step), (x, y)))
        return {
            "test_objective": float(np.mean(value)),
            "test_terms": {k: float(np.mean(v)) for k, v in terms.items()},
            select: float(np.mean(selected)),
        }

    return test


# ------------------------------------------------------------------ reconstruction


def reconstruction_errors(model: Model, params, batch: Batch) -> dict[str, jax.Array]:
    """Per-example reconstruction errors through the code: squared error summed over
    pixels (the article's ||X - X_hat||^2), PSNR in dB (peak 1, per-pixel mean squared
    error), the model's own -log p(x | code), and the Bernoulli cross-entropy in nats
    where the decoder gives one logit per sub-pixel."""
    logits = model.decode(params, model.encode(params, batch).code, batch.y)
    x = batch.x
    sq = sum_per_example(squared_error(model.likelihood.mean(logits), x))
    errors = {
        "mse": sq,
        "psnr": M.psnr(sq, math.prod(x.shape[1:])),
        "recon_nll": model.likelihood.nll(logits, x),
    }
    if model.likelihood.channels == 1:  # decoder outputs are Bernoulli logits
        errors["bce"] = -sum_per_example(bernoulli_log_prob(logits, x))
    return errors


# The evaluator's fixed tests, the same for every model: salt-and-pepper noise on 20% of
# the pixels (denoising), and round(0.5 n) of the n 4 x 4 patches hidden (inpainting;
# Python rounds half to even: 24 of 49 on 28 x 28 images, 32 of 64 on 32 x 32).
EVAL_NOISE = ("salt_and_pepper", 0.2)
EVAL_PATCH, EVAL_MASK_RATIO = 4, 0.5


def inpainting_mask(key: jax.Array, image_shape: tuple[int, ...]) -> jax.Array | None:
    """One test image's pixel visibility [H, W, 1] for the inpainting test (None where
    EVAL_PATCH does not divide the image)."""
    grid = patch_grid(image_shape, EVAL_PATCH)
    if grid is None:
        return None
    return pixel_mask(patch_mask(key, 1, grid, EVAL_MASK_RATIO), EVAL_PATCH)[0]


def encode_example(model: Model) -> Callable:
    """(params, x, y, index) -> the Encoding of one example, for SplitMap."""
    return lambda p, xi, yi, i: jax.tree.map(lambda a: a[0], model.encode(p, one(xi, yi)))


def encode_split(model: Model, params, x: jax.Array, y=None, chunk: int = 500) -> Encoding:
    """Encoding of every example of model inputs x [N, H, W, C] (labels y), in chunks."""
    return SplitMap(encode_example(model), chunk)(params, (x, y))


# ------------------------------------------------------------------ IWAE likelihood


def iwae_log_likelihood(
    log_weights: Callable, params, batch, key: jax.Array, k: int, k_chunk: int = 100
) -> jax.Array:
    """Importance-weighted estimate log (1/K) sum_k p(x, z_k) / q(z_k | x), per example.

    log_weights(params, batch, key, c) -> [c, B] (a model's log_importance_weights).
    Sample j is drawn with its own key fold_in(key, j), so the estimate does not depend
    on `k_chunk`; the samples are vmapped in chunks of `k_chunk` and combined by a
    running log-sum-exp inside `lax.scan`, so memory is O(k_chunk). Returns [B]; for
    K = 1 it is the single-sample Monte-Carlo ELBO log p(x|z) + log p(z) - log q(z|x)
    with z drawn from fold_in(key, 0).
    """
    k_chunk = min(k_chunk, k)
    n_full = k // k_chunk
    b = jax.tree.leaves(batch)[0].shape[0]

    def chunk_log_w(js):  # sample indices [c] -> log weights [c, B]
        return jax.vmap(lambda j: log_weights(params, batch, jax.random.fold_in(key, j), 1)[0])(js)

    def body(total, js):
        return jnp.logaddexp(total, jax.nn.logsumexp(chunk_log_w(js), axis=0)), None

    total = jnp.full((b,), -jnp.inf)
    full = jnp.arange(n_full * k_chunk, dtype=jnp.int32).reshape(n_full, k_chunk)
    total, _ = jax.lax.scan(body, total, full)
    if k > n_full * k_chunk:
        total, _ = body(total, jnp.arange(n_full * k_chunk, k, dtype=jnp.int32))
    return total - math.log(k)


# ------------------------------------------------------------------ everything at once


@dataclasses.dataclass
class Evaluation:
    """metrics: split-level numbers (the metrics.json vocabulary); per_image: the
    per-test-image values behind the means, for paired comparisons between models."""

    metrics: dict
    per_image: dict[str, np.ndarray]


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
    progress: bool = False,
) -> Evaluation:
    """The test-split metrics of one trained model.

    Every model: test_mse, test_psnr, test_recon_nll (and test_bce for one-logit
    decoders), test_denoise_mse (a salt-and-pepper-corrupted input, scored against the
    clean one), test_inpaint_mse (about half the 4 x 4 patches hidden, scored on the hidden
    pixels; Batch.mask tells the model which), and, with labels, probe_accuracy. Then
    by capability:
    - Gaussian q(z|x) (Encoding.log_var): test_kl (rate), test_distortion
      (E_q[-log p(x|z)], one sample), kl_per_dim, active_units, posterior std;
    - continuous codes: latent_prior_fd, the Frechet distance of the aggregate
      posterior to N(0, I), and code_sparsity, the mean Hoyer sparsity of the codes;
    - the model's own `code_report` over the test codes;
    - discrete codes: perplexity and dead_codes of the codebook;
    - log_importance_weights: test_neg_elbo (K = 1) and test_nll_iwae (K = iwae_k, or 1
      for point posteriors, where one sample is exact); where the likelihood is a
      probability mass function of the data (Bernoulli on binarized pixels, the
      discretised logistic on 8-bit ones), both also in bits per dimension (test_bpd,
      test_bpd_iwae);
    - with a domain classifier: prior_sample_fd (the model's `sample`, else N(0, I)
      codes), expost_sample_fd for continuous codes without a prior, and for
      conditional models conditional_sample_accuracy.
    """
    from aevae_jax.evaluate.samplers import decode_samples, expost_gaussian, prior_images

    keys = {
        n: jax.random.fold_in(key, i)
        for i, n in enumerate(
            ("elbo", "iwae", "samples", "expost", "noise", "distortion", "inpaint")
        )
    }
    x_test = eval_inputs(jnp.asarray(dataset.x_test), binarize)
    y_test = None if dataset.y_test is None else jnp.asarray(dataset.y_test)
    out: dict = {}
    per_image: dict[str, np.ndarray] = {}

    def recon_one(p, xi, yi, i):
        errors = reconstruction_errors(model, p, one(xi, yi))
        noisy = corrupt(jax.random.fold_in(keys["noise"], i), xi, *EVAL_NOISE)
        denoised = model.reconstruct(p, one(noisy, yi))
        errors["denoise_mse"] = sum_per_example(squared_error(denoised, xi[None]))
        mask = inpainting_mask(jax.random.fold_in(keys["inpaint"], i), xi.shape)
        if mask is not None:
            seen = Batch((xi * mask)[None], None if yi is None else yi[None], mask[None])
            hidden_sq = squared_error(model.reconstruct(p, seen), xi[None]) * (1.0 - mask)
            errors["inpaint_mse"] = sum_per_example(hidden_sq)
        return jax.tree.map(lambda a: a[0], errors)

    rec = jax.device_get(SplitMap(recon_one, chunk)(params, (x_test, y_test)))
    for k, v in rec.items():
        out[f"test_{k}"] = float(np.mean(v))
        per_image[k] = np.asarray(v)

    enc_test = encode_split(model, params, x_test, y_test, chunk)
    _require_finite(out["test_mse"], enc_test.features)
    if enc_test.log_var is not None:
        gauss, gauss_per_image = gaussian_code_metrics(
            model, params, enc_test, x_test, y_test, keys["distortion"], chunk
        )
        out.update(gauss)
        per_image.update(gauss_per_image)
    if enc_test.indices is None:
        codes = np.asarray(enc_test.features)
        log_var = None if enc_test.log_var is None else np.asarray(enc_test.log_var)
        fd = lambda idx: M.prior_frechet_distance(
            codes[idx], None if log_var is None else log_var[idx]
        )
        out["latent_prior_fd"] = fd(np.arange(len(codes)))
        out["latent_prior_fd_se"] = M.bootstrap_se(fd, len(codes), n_boot=50)
        if codes.shape[1] > 1:  # sparsity needs more than one unit
            per_image["code_sparsity"] = M.hoyer_sparsity(codes)
            out["code_sparsity"] = float(np.mean(per_image["code_sparsity"]))
    elif model.num_codes is not None:
        out.update(M.codebook_usage(enc_test.indices, model.num_codes))
    if model.code_report is not None:
        out.update(model.code_report(enc_test))

    if model.log_importance_weights is not None:
        k = 1 if model.point_posterior else iwae_k
        elbo = SplitMap(iwae_bound(model, 1), chunk)((params, keys["elbo"]), (x_test, y_test))
        per_image["neg_elbo"] = -np.asarray(elbo)
        out["test_neg_elbo"] = float(np.mean(per_image["neg_elbo"]))
        if "kl" in per_image:
            # -ELBO = distortion + KL in expectation; the K = 1 estimate and the two
            # terms use independent draws, so their gap should be noise around zero.
            terms = per_image["distortion"] + per_image["kl"]
            out["elbo_gap"] = M.paired_bootstrap(per_image["neg_elbo"], terms)
        iwae = SplitMap(iwae_bound(model, k), max(1, chunk // 5), block=500)(
            (params, keys["iwae"]), (x_test, y_test), desc=f"IWAE K={k}", progress=progress
        )
        per_image["nll_iwae"] = -np.asarray(iwae)
        out["test_nll_iwae"] = float(np.mean(per_image["nll_iwae"]))
        out["iwae_k"] = int(k)
        data = model.likelihood.data
        eight_bit = data == "8bit" and dataset.x_test.dtype == np.uint8  # levels k / 255
        if eight_bit or (data == "binary" and binarize != "none"):
            dims = math.prod(model.image_shape)
            out["test_bpd"] = bits_per_dim(out["test_neg_elbo"], dims)
            out["test_bpd_iwae"] = bits_per_dim(out["test_nll_iwae"], dims)

    x_train = eval_inputs(jnp.asarray(dataset.x_train), binarize, split=TRAIN_SPLIT)
    y_train = None if dataset.y_train is None else jnp.asarray(dataset.y_train)
    enc_train = encode_split(model, params, x_train, y_train, chunk)
    if y_train is not None and y_test is not None:
        out["probe_accuracy"] = M.linear_probe_accuracy(
            enc_train.features, y_train, enc_test.features, y_test, dataset.num_classes
        )
        out["probe_n"] = len(y_test)

    if classifier is not None:
        n = n_samples or len(dataset.x_test)
        reference = classifier.features(jnp.asarray(dataset.x_test), progress=progress)
        y = (jnp.arange(n) % dataset.num_classes) if model.conditional else None
        prior = prior_images(model, params, keys["samples"], n, y)
        prior_features, predicted = classifier.features_and_predictions(prior, progress)
        out["prior_sample_fd"] = M.frechet_distance(prior_features, reference)
        out["prior_sample_fd_se"] = _fd_se(prior_features, reference)
        if model.conditional:
            out["conditional_sample_accuracy"] = float(np.mean(predicted == np.asarray(y)))
            out["conditional_sample_n"] = int(n)
        if model.sample is None and enc_train.indices is None:
            sampler = expost_gaussian(enc_train.features)
            expost = decode_samples(model, params, sampler, keys["expost"], n)
            expost_features = classifier.features(expost, progress=progress)
            out["expost_sample_fd"] = M.frechet_distance(expost_features, reference)
            out["expost_sample_fd_se"] = _fd_se(expost_features, reference)
    return Evaluation(out, per_image)


def _require_finite(*values) -> None:
    """UserError (before minutes of evaluation) when a model's outputs are not finite."""
    require(
        all(np.isfinite(np.asarray(v)).all() for v in values),
        "the model's reconstructions or codes of the test split are not finite: its "
        "parameters have diverged (its metrics.jsonl shows from when); train it again with "
        "a lower --lr or with --grad-clip",
    )


def iwae_bound(model: Model, k: int) -> Callable:
    """Per example: the K-sample bound log (1/K) sum_k w_k, with the example's own key."""

    def bound(context, xi, yi, i):
        params, key = context
        return iwae_log_likelihood(
            model.log_importance_weights, params, one(xi, yi), jax.random.fold_in(key, i), k
        )[0]

    return bound


def gaussian_code_metrics(model, params, enc: Encoding, x, y, key, chunk):
    """Rate (analytic KL), distortion (one-sample E_q[-log p(x|z)]), per-dimension KL,
    active units and posterior widths of a diagonal-Gaussian q(z|x); and the per-image
    KL and distortion."""
    kl_dims = M.kl_per_dimension(enc.code, enc.log_var)

    def distortion(context, mean, log_var, xi, yi, i):
        p, key_ = context
        z = reparameterize(jax.random.fold_in(key_, i), mean, log_var)
        return model.likelihood.nll(
            model.decode(p, z[None], None if yi is None else yi[None]), xi[None]
        )[0]

    dist = np.asarray(SplitMap(distortion, chunk)((params, key), (enc.code, enc.log_var, x, y)))
    kl = np.asarray(jnp.sum(kl_to_std_normal(enc.code, enc.log_var), axis=-1))
    std = jnp.mean(jnp.exp(0.5 * enc.log_var), axis=0)  # [L]
    active = jnp.var(enc.code, axis=0) > 0.01
    return {
        "test_kl": float(np.mean(kl)),
        "test_distortion": float(np.mean(dist)),
        "kl_per_dim": [float(v) for v in kl_dims],
        "active_units": int(M.active_units(enc.code)),
        "posterior_std_mean": float(jnp.mean(std)),
        "posterior_std_active": (
            float(jnp.sum(std * active) / jnp.sum(active)) if bool(active.any()) else None
        ),
    }, {"kl": kl, "distortion": dist}


def _fd_se(features: np.ndarray, reference: np.ndarray, n_boot: int = 20) -> float:
    """Bootstrap standard error of the sample FD, resampling both feature sets."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(n_boot):
        a = features[rng.integers(0, len(features), len(features))]
        b = reference[rng.integers(0, len(reference), len(reference))]
        values.append(M.frechet_distance(a, b))
    return float(np.std(values, ddof=1))
