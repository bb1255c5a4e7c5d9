"""The metric groups: evaluation as a list of small functions, each computing the metrics
of one capability (catalogue.py names the group of every key).

A group is `Group(name, applies, run)`: `applies(ctx)` says whether the model has what the
group needs, `run(ctx)` writes split-level numbers into `ctx.metrics` and per-test-image
values into `ctx.per_image`. `Context` holds the model, its parameters, the data and the
evaluation keys, and computes the test and training encodings once, when first asked.
Every random draw comes from a named key of `ctx.keys`, and each example's from
`fold_in(key, example_index)`, so no group's numbers depend on which other groups ran.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.errors import require
from aevae_jax.evaluate import metrics as M
from aevae_jax.evaluate.scores import EVAL_NOISE, inpainting_mask, iwae_bound, reconstruction_errors
from aevae_jax.evaluate.split import TRAIN_SPLIT, SplitMap, encode_split, eval_inputs, one
from aevae_jax.models import Batch, Encoding, Model
from aevae_jax.nn.corruption import corrupt
from aevae_jax.nn.likelihoods import (
    bits_per_dim,
    diag_gaussian_log_prob,
    reparameterize,
    squared_error,
    sum_per_example,
)
from aevae_jax.nn.total_correlation import total_correlation

# The named evaluation keys, in order (appending a name keeps every earlier key fixed).
KEY_NAMES = ("elbo", "iwae", "samples", "expost", "noise", "distortion", "inpaint", "rate",
             "prior_moments", "report", "gmm", "flow", "tc", "aggregate")  # fmt: skip
# Monte Carlo samples per image of the rate, for priors without a closed-form KL.
RATE_SAMPLES = 16
# Samples and test images of the precision and recall (their cost grows as the square).
PR_SAMPLES = 5000
# Prior draws that estimate the moments of a prior without exact ones.
PRIOR_MOMENT_SAMPLES = 10_000


@dataclasses.dataclass
class Context:
    """What every group reads, and where it writes."""

    model: Model
    params: Any
    dataset: Any
    binarize: str
    keys: dict[str, jax.Array]
    iwae_k: int
    classifier: Any
    n_samples: int | None
    chunk: int
    progress: bool
    samplers: Any = None  # samplers.SamplerOptions: the ex-post samplers to score
    metrics: dict = dataclasses.field(default_factory=dict)
    per_image: dict = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def test(self) -> tuple[jax.Array, jax.Array | None]:
        """The test split as model input (binarized by its fixed draw) and its labels."""
        y = None if self.dataset.y_test is None else jnp.asarray(self.dataset.y_test)
        return eval_inputs(jnp.asarray(self.dataset.x_test), self.binarize), y

    @functools.cached_property
    def train(self) -> tuple[jax.Array, jax.Array | None]:
        y = None if self.dataset.y_train is None else jnp.asarray(self.dataset.y_train)
        x = eval_inputs(jnp.asarray(self.dataset.x_train), self.binarize, split=TRAIN_SPLIT)
        return x, y

    @functools.cached_property
    def enc_test(self) -> Encoding:
        return encode_split(self.model, self.params, *self.test, self.chunk)

    @functools.cached_property
    def enc_train(self) -> Encoding:
        return encode_split(self.model, self.params, *self.train, self.chunk)

    def split_map(self, fn: Callable, context, arrays, **kw):
        """`fn` over the test split (SplitMap), as host arrays."""
        return jax.device_get(SplitMap(fn, self.chunk)(context, arrays, **kw))


class Group(NamedTuple):
    name: str
    applies: Callable[[Context], bool]
    run: Callable[[Context], None]


# ------------------------------------------------------------------ reconstruction


def reconstruction(ctx: Context) -> None:
    """Errors through the code, from a salt-and-pepper-corrupted input (denoising) and on
    hidden patches (inpainting), for every model; then the finite check."""
    model, keys = ctx.model, ctx.keys

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

    for k, v in ctx.split_map(recon_one, ctx.params, ctx.test).items():
        ctx.metrics[f"test_{k}"] = float(np.mean(v))
        ctx.per_image[k] = np.asarray(v)
    require(
        np.isfinite(ctx.metrics["test_mse"]) and np.isfinite(ctx.enc_test.features).all(),
        "the model's reconstructions or codes of the test split are not finite: its "
        "parameters have diverged (its metrics.jsonl shows from when); train it again with "
        "a lower --lr or with --grad-clip",
    )


# ------------------------------------------------------------------ Gaussian codes


def gaussian_codes(ctx: Context) -> None:
    """Rate (KL to the model's own prior), distortion, and the posterior's shape per layer."""
    enc = ctx.enc_test
    dist = distortion(ctx)
    kl = rate(ctx)
    ctx.metrics["test_kl"] = float(np.mean(kl))
    ctx.metrics["test_distortion"] = float(np.mean(dist))
    prior = ctx.model.prior
    if prior is not None and prior.kl_per_dim is not None:
        per_dim = jnp.mean(prior.kl_per_dim(ctx.params, enc), axis=0)
        ctx.metrics["kl_per_dim"] = [float(v) for v in per_dim]
    for j, layer in enumerate((enc, *enc.layers), start=1):
        suffix = "" if j == 1 else f"_z{j}"
        ctx.metrics.update({k + suffix: v for k, v in posterior_shape(layer).items()})
    ctx.per_image.update({"kl": kl, "distortion": dist})
    if ctx.keys.get("tc") is not None and _encoding_is_q(ctx):
        tc = total_correlation_of(enc, ctx.keys["tc"])
        ctx.metrics["test_total_correlation"] = float(np.mean(tc))
        ctx.per_image["total_correlation"] = tc


def total_correlation_of(enc: Encoding, key: jax.Array) -> np.ndarray:
    """[N] each test image's share of TC(q(z)) of the bottom layer: one draw z_i ~
    q(z|x_i) (image i's key folded from `key`), under the mixture of all N posteriors."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(enc.code.shape[0]))
    z = jax.vmap(reparameterize)(keys, enc.code, enc.log_var)
    return np.asarray(total_correlation(z, enc.code, enc.log_var))


def gaussian_code_metrics(model: Model, params, enc: Encoding, x, y, key, chunk: int = 500):
    """(metrics, per-image values) of the Gaussian-code group for given model inputs x [N,
    ...] (labels y) and their Encoding, with `key` for the distortion's (and a Monte Carlo
    rate's) draws: the group outside a whole evaluation, for experiments."""
    ctx = Context(model, params, None, "none", {"distortion": key, "rate": key}, 0, None,
                  None, chunk, False)  # fmt: skip
    ctx.__dict__.update(test=(x, y), enc_test=enc)  # the cached properties, given
    gaussian_codes(ctx)
    return ctx.metrics, ctx.per_image


def posterior_shape(enc: Encoding) -> dict:
    """Active units and posterior widths of one diagonal-Gaussian layer (active units
    alone for a posterior that is not one, such as a flow's)."""
    if enc.log_var is None:
        return {"active_units": int(M.active_units(enc.code))}
    std = jnp.mean(jnp.exp(0.5 * enc.log_var), axis=0)  # [L]
    active = jnp.var(enc.code, axis=0) > 0.01
    return {
        "active_units": int(M.active_units(enc.code)),
        "posterior_std_mean": float(jnp.mean(std)),
        "posterior_std_active": (
            float(jnp.sum(std * active) / jnp.sum(active)) if bool(active.any()) else None
        ),
    }


def distortion(ctx: Context) -> np.ndarray:
    """Per image, one-sample E_q[-log p(x|z)] through the bottom layer's q(z1|x) (a draw of
    `Model.posterior` where the Encoding is not that diagonal Gaussian itself)."""
    model, enc = ctx.model, ctx.enc_test
    exact = _encoding_is_q(ctx)

    def one_draw(context, mean, log_var, xi, yi, i):
        p, key_ = context
        if not exact:
            z = bottom_layer(model.posterior(p, one(xi, yi), jax.random.fold_in(key_, i))[0])[0]
        else:
            z = reparameterize(jax.random.fold_in(key_, i), mean, log_var)
        return model.likelihood.nll(
            model.decode(p, z[None], None if yi is None else yi[None]), xi[None]
        )[0]

    arrays = (enc.code, _log_var_or_zeros(enc), *ctx.test)
    return np.asarray(ctx.split_map(one_draw, (ctx.params, ctx.keys["distortion"]), arrays))


def rate(ctx: Context) -> np.ndarray:
    """Per image, KL(q(z|x) || p(z)) against the model's own prior: in closed form where the
    prior gives one, else a Monte Carlo mean of log q(z|x) - log p(z) over RATE_SAMPLES
    draws of q (N(0, I) for a model that declares no prior)."""
    from aevae_jax.models.priors import standard_normal

    model, enc = ctx.model, ctx.enc_test
    prior = model.prior or standard_normal(model.code_shape)
    if prior.kl is not None:
        return np.asarray(prior.kl(ctx.params, enc))

    def draw(p, mean, log_var, xi, yi, key):
        if model.posterior is not None:
            z, log_q = model.posterior(p, one(xi, yi), key)
            return log_q[0] - prior.log_prob(p, z)[0]
        z = reparameterize(key, mean, log_var)[None]
        return diag_gaussian_log_prob(z, mean[None], log_var[None])[0] - prior.log_prob(p, z)[0]

    def mc(context, mean, log_var, xi, yi, i):
        p, key_ = context
        keys = jax.random.split(jax.random.fold_in(key_, i), RATE_SAMPLES)
        return jnp.mean(jax.vmap(lambda k: draw(p, mean, log_var, xi, yi, k))(keys))

    arrays = (enc.code, _log_var_or_zeros(enc), *ctx.test)
    return np.asarray(ctx.split_map(mc, (ctx.params, ctx.keys["rate"]), arrays))


def _encoding_is_q(ctx: Context) -> bool:
    """Whether the Encoding's (code, log_var) is the bottom layer's q(z1|x) itself."""
    return ctx.enc_test.log_var is not None and not ctx.model.top_down_posterior


def bottom_layer(z):
    """The decoder's layer of a posterior draw (a tuple of layers: its first)."""
    return z[0] if isinstance(z, tuple) else z


def _log_var_or_zeros(enc: Encoding) -> jax.Array:
    """The Encoding's log-variances, or zeros in their place where `Model.posterior`
    describes q(z|x) instead (the per-image maps take arrays, not None)."""
    return jnp.zeros_like(enc.code) if enc.log_var is None else enc.log_var


# ------------------------------------------------------------------ code distribution


def prior_moments(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the prior's bottom layer: exact where the prior gives them
    (N(0, I) for models without a prior), else from PRIOR_MOMENT_SAMPLES draws."""
    prior, dims = ctx.model.prior, ctx.model.latent_dim
    if prior is None:
        return np.zeros(dims), np.eye(dims)
    if prior.moments is not None:
        mean, cov = prior.moments(ctx.params)
        return np.asarray(mean), np.asarray(cov)
    z = prior.sample(ctx.params, ctx.keys["prior_moments"], PRIOR_MOMENT_SAMPLES, None)
    bottom = z[0] if isinstance(z, tuple) else z
    return M.aggregate_posterior_moments(np.asarray(bottom).reshape(len(bottom), dims))


def code_distribution(ctx: Context) -> None:
    """How far the aggregate posterior q(z) lies from the prior (Frechet distance of their
    moments, with a bootstrap s.e.), and the codes' Hoyer sparsity."""
    enc = ctx.enc_test
    codes = np.asarray(enc.features)
    points, log_var = codes, None if enc.log_var is None else np.asarray(enc.log_var)
    if ctx.model.posterior is not None and not _encoding_is_q(ctx):
        points, log_var = posterior_draws(ctx), None  # q(z) by one draw per image
    mu_p, cov_p = prior_moments(ctx)

    def fd(idx):
        mu, cov = M.aggregate_posterior_moments(
            points[idx], None if log_var is None else log_var[idx]
        )
        return M.gaussian_frechet_distance(mu, cov, mu_p, cov_p)

    ctx.metrics["latent_prior_fd"] = fd(np.arange(len(codes)))
    ctx.metrics["latent_prior_fd_se"] = M.bootstrap_se(fd, len(codes), n_boot=50)
    if codes.shape[1] > 1:  # sparsity needs more than one unit
        ctx.per_image["code_sparsity"] = M.hoyer_sparsity(codes)
        ctx.metrics["code_sparsity"] = float(np.mean(ctx.per_image["code_sparsity"]))


def posterior_draws(ctx: Context) -> np.ndarray:
    """[N, code size]: one draw of the bottom layer of q(z|x_i) per test image."""
    model = ctx.model

    def draw(context, xi, yi, i):
        p, key_ = context
        z = model.posterior(p, one(xi, yi), jax.random.fold_in(key_, i))[0]
        return bottom_layer(z)[0].reshape(-1)

    return np.asarray(ctx.split_map(draw, (ctx.params, ctx.keys["aggregate"]), ctx.test))


def codebook(ctx: Context) -> None:
    ctx.metrics.update(M.codebook_usage(ctx.enc_test.indices, ctx.model.num_codes))


def model_report(ctx: Context) -> None:
    ctx.metrics.update(ctx.model.code_report(ctx.params, ctx.enc_test, ctx.keys["report"]))


# ------------------------------------------------------------------ likelihood


def likelihood(ctx: Context) -> None:
    """The single-sample -ELBO, its decomposition check, the IWAE NLL, bits per dim."""
    model, params = ctx.model, ctx.params
    k = 1 if model.point_posterior else ctx.iwae_k
    elbo = ctx.split_map(iwae_bound(model, 1), (params, ctx.keys["elbo"]), ctx.test)
    ctx.per_image["neg_elbo"] = -np.asarray(elbo)
    ctx.metrics["test_neg_elbo"] = float(np.mean(ctx.per_image["neg_elbo"]))
    if "kl" in ctx.per_image:
        # -ELBO = distortion + KL in expectation; the K = 1 estimate and the two terms use
        # independent draws, so their gap should be noise around zero.
        terms = ctx.per_image["distortion"] + ctx.per_image["kl"]
        ctx.metrics["elbo_gap"] = M.paired_bootstrap(ctx.per_image["neg_elbo"], terms)
    iwae = SplitMap(iwae_bound(model, k), max(1, ctx.chunk // 5), block=500)(
        (params, ctx.keys["iwae"]), ctx.test, desc=f"IWAE K={k}", progress=ctx.progress
    )
    ctx.per_image["nll_iwae"] = -np.asarray(iwae)
    ctx.metrics["test_nll_iwae"] = float(np.mean(ctx.per_image["nll_iwae"]))
    ctx.metrics["iwae_k"] = int(k)
    # How far the encoder's q(z|x) is from p(z|x): KL(q || p(z|x)) = log p(x) - ELBO, with
    # the IWAE estimate for log p(x) (an underestimate of the gap at finite K).
    ctx.per_image["inference_gap"] = ctx.per_image["neg_elbo"] - ctx.per_image["nll_iwae"]
    ctx.metrics["test_inference_gap"] = float(np.mean(ctx.per_image["inference_gap"]))
    data = model.likelihood.data
    eight_bit = data == "8bit" and ctx.dataset.x_test.dtype == np.uint8  # levels k / 255
    if eight_bit or (data == "binary" and ctx.binarize != "none"):
        dims = math.prod(model.image_shape)
        ctx.metrics["test_bpd"] = bits_per_dim(ctx.metrics["test_neg_elbo"], dims)
        ctx.metrics["test_bpd_iwae"] = bits_per_dim(ctx.metrics["test_nll_iwae"], dims)


# ------------------------------------------------------------------ codes as features


def probe(ctx: Context) -> None:
    """A linear classifier on the training codes, scored on the test codes."""
    (_, y_train), (_, y_test) = ctx.train, ctx.test
    ctx.metrics["probe_accuracy"] = M.linear_probe_accuracy(
        ctx.enc_train.features, y_train, ctx.enc_test.features, y_test, ctx.dataset.num_classes
    )
    ctx.metrics["probe_n"] = len(y_test)


# ------------------------------------------------------------------ samples


def samples(ctx: Context) -> None:
    """Domain FD (with its bootstrap s.e.), precision and recall of prior samples and of
    each ex-post sampler's (ctx.samplers; models with continuous codes), and how often
    class-conditional samples show their class."""
    from aevae_jax.evaluate.samplers import decode_samples, fit_sampler, prior_images

    model, params, classifier, ds = ctx.model, ctx.params, ctx.classifier, ctx.dataset
    n = ctx.n_samples or len(ds.x_test)
    reference = classifier.features(jnp.asarray(ds.x_test), progress=ctx.progress)
    y = (jnp.arange(n) % ds.num_classes) if model.conditional else None
    prior = prior_images(model, params, ctx.keys["samples"], n, y)
    prior_features, predicted = classifier.features_and_predictions(prior, ctx.progress)
    sample_scores(ctx, "prior", prior_features, reference)
    if model.conditional:
        ctx.metrics["conditional_sample_accuracy"] = float(np.mean(predicted == np.asarray(y)))
        ctx.metrics["conditional_sample_n"] = int(n)
    if ctx.enc_train.indices is not None:
        return  # discrete codes: the ex-post densities are of continuous ones
    for name in ctx.samplers.names:
        key = ctx.keys[name]  # the Gaussian's draws use its key as they always did
        fit_key, draw_key = (None, key) if name == "expost" else jax.random.split(key)
        sampler = fit_sampler(name, ctx.enc_train.features, fit_key, ctx.samplers)
        images = decode_samples(model, params, sampler, draw_key, n, y)
        sample_scores(ctx, name, classifier.features(images, progress=ctx.progress), reference)


def sample_scores(ctx: Context, sampler: str, features, reference) -> None:
    """<sampler>_sample_fd and its bootstrap s.e. against the test images' classifier
    features, and the precision and recall (k = 3) of the first PR_SAMPLES of each."""
    ctx.metrics[f"{sampler}_sample_fd"] = M.frechet_distance(features, reference)
    ctx.metrics[f"{sampler}_sample_fd_se"] = fd_se(features, reference)
    pr = M.precision_recall(reference[:PR_SAMPLES], features[:PR_SAMPLES], k=3)
    ctx.metrics[f"{sampler}_sample_precision"] = pr["precision"]
    ctx.metrics[f"{sampler}_sample_recall"] = pr["recall"]


def fd_se(features: np.ndarray, reference: np.ndarray, n_boot: int = 20) -> float:
    """Bootstrap standard error of the sample FD, resampling both feature sets."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(n_boot):
        a = features[rng.integers(0, len(features), len(features))]
        b = reference[rng.integers(0, len(reference), len(reference))]
        values.append(M.frechet_distance(a, b))
    return float(np.std(values, ddof=1))


# ------------------------------------------------------------------ known factors


def disentanglement(ctx: Context) -> None:
    """MIG, SAP, DCI and the FactorVAE score of the test codes (the posterior means)
    against the data set's known factors (evaluate/disentanglement.py)."""
    from aevae_jax.evaluate.disentanglement import disentanglement as scores

    factors = np.asarray(ctx.dataset.factors_test)
    require(
        len(factors) == len(ctx.dataset.x_test),
        f"factors_test has {len(factors)} rows for {len(ctx.dataset.x_test)} test images",
    )
    codes = np.asarray(ctx.enc_test.features).reshape(len(factors), -1)
    result = scores(codes, factors)
    for key in DISENTANGLEMENT_KEYS:
        ctx.metrics[key] = result[key]


DISENTANGLEMENT_KEYS = ("mig", "sap", "dci_disentanglement", "dci_completeness",
                        "dci_informativeness", "factorvae_score", "mig_per_factor")  # fmt: skip


def _continuous_posterior(ctx: Context) -> bool:
    """A diagonal Gaussian q(z|x), or one that `Model.posterior` draws (a flow's)."""
    return ctx.enc_test.log_var is not None or (
        ctx.model.posterior is not None and ctx.enc_test.indices is None
    )


def _has_factors(ctx: Context) -> bool:
    return getattr(ctx.dataset, "factors_test", None) is not None and ctx.enc_test.indices is None


def _discrete(ctx: Context) -> bool:
    return ctx.enc_test.indices is not None and ctx.model.num_codes is not None


def _labelled(ctx: Context) -> bool:
    return ctx.dataset.y_train is not None and ctx.dataset.y_test is not None


# In order; catalogue.py names each metric's group.
GROUPS: tuple[Group, ...] = (
    Group("reconstruction", lambda ctx: True, reconstruction),
    Group("gaussian_codes", _continuous_posterior, gaussian_codes),
    Group("code_distribution", lambda ctx: ctx.enc_test.indices is None, code_distribution),
    Group("codebook", _discrete, codebook),
    Group("model_report", lambda ctx: ctx.model.code_report is not None, model_report),
    Group("likelihood", lambda ctx: ctx.model.log_importance_weights is not None, likelihood),
    Group("probe", _labelled, probe),
    Group("samples", lambda ctx: ctx.classifier is not None, samples),
    Group("disentanglement", _has_factors, disentanglement),
)
