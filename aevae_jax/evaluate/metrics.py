"""Metric formulas: pure functions of codes, features, weights and labels.

Each is tested against a hand computation or an exact answer (tests/test_metrics.py).
Nothing here knows about models or data sets; evaluate.py feeds them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.nn.likelihoods import kl_to_std_normal

# ------------------------------------------------------------------ latent statistics


def active_units(means: jax.Array, threshold: float = 0.01) -> jax.Array:
    """Burda et al.: dimension u is active if Cov_x(E_q[z_u | x]) > threshold.
    means: [N, L] posterior means over a split -> number of active dimensions."""
    return jnp.sum(jnp.var(means, axis=0) > threshold)


def hoyer_sparsity(codes) -> np.ndarray:
    """Hoyer (2004) sparsity of each code vector, (sqrt(n) - |z|_1 / |z|_2) / (sqrt(n) - 1):
    1 for one non-zero unit, 0 for all units of equal magnitude, blind to scale.
    codes [N, n] (n > 1) -> [N]; an all-zero code counts as fully sparse (1)."""
    z = np.abs(np.asarray(codes, np.float64))
    n = z.shape[1]
    l1, l2 = z.sum(axis=1), np.sqrt((z**2).sum(axis=1))
    ratio = np.divide(l1, l2, out=np.ones_like(l1), where=l2 > 0)
    return (math.sqrt(n) - ratio) / (math.sqrt(n) - 1)


def kl_per_dimension(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(q(z_u|x) || N(0, 1)) averaged over examples, per latent dimension: [L]."""
    return jnp.mean(kl_to_std_normal(mean, log_var), axis=0)


def aggregate_posterior_moments(mean, log_var=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean [L] and covariance [L, L] of the aggregate posterior q(z) = E_x q(z|x) over a
    split, in float64: for Gaussian q(z|x), Cov = Cov_x(mean) + E_x[diag(var)]; for point
    codes (log_var None), the codes' own mean and covariance."""
    m = np.asarray(mean, np.float64)
    cov = np.cov(m, rowvar=False, bias=True).reshape(m.shape[1], m.shape[1])
    if log_var is not None:
        cov = cov + np.diag(np.exp(np.asarray(log_var, np.float64)).mean(0))
    return m.mean(0), cov


def gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) between two Gaussians.

    Tr (S_a S_b)^{1/2} = sum of sqrt(eigenvalues of S_a^{1/2} S_b S_a^{1/2}), a symmetric
    PSD matrix, so no non-symmetric matrix square root is needed."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    tr_sqrt = np.sum(np.sqrt(np.clip(middle, 0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def prior_frechet_distance(mean, log_var=None) -> float:
    """How far the aggregate posterior is from the prior N(0, I): the Frechet distance
    between its Gaussian moments and N(0, I), exactly (no prior draws needed)."""
    mu, cov = aggregate_posterior_moments(mean, log_var)
    return gaussian_frechet_distance(mu, cov, np.zeros_like(mu), np.eye(len(mu)))


# ------------------------------------------------------------------ sample quality


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, D], in float64."""
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    return gaussian_frechet_distance(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )


# ------------------------------------------------------------------ discrete codes


def codebook_usage(indices, num_codes: int) -> dict[str, float]:
    """Perplexity exp(-sum_k p_k log p_k) of the average code use (1 = one code used,
    num_codes = all used equally) and the number of codes never used, over int indices
    of any shape."""
    counts = np.bincount(np.asarray(indices).ravel(), minlength=num_codes).astype(np.float64)
    p = counts / counts.sum()
    nz = p[p > 0]
    return {
        "perplexity": float(np.exp(-np.sum(nz * np.log(nz)))),
        "dead_codes": int(np.sum(counts == 0)),
        "num_codes": int(num_codes),
    }


# ------------------------------------------------------------------ reconstruction


def psnr(squared_error_sum: jax.Array, pixels: int) -> jax.Array:
    """PSNR in dB with peak 1 from per-example sums of squared errors over `pixels`."""
    return 10.0 * jnp.log10(pixels / jnp.maximum(squared_error_sum, 1e-12))


# ------------------------------------------------------------------ linear probe


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit_probe(a, labels, num_classes: int, steps: int):
    """Multinomial logistic regression on codes a [N, D], full batch, Adam (lr 0.05,
    weight decay 1e-4); the codes are arguments, never constants of the program."""
    import optax

    params = {"w": jnp.zeros((a.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
    tx = optax.adamw(0.05, weight_decay=1e-4)

    def loss(p):
        logits = a @ p["w"] + p["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def step(carry, _):
        p, s = carry
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    return jax.lax.scan(step, (params, tx.init(params)), None, length=steps)[0][0]


def linear_probe_accuracy(
    train_codes, train_labels, test_codes, test_labels, num_classes: int, steps: int = 500
) -> float:
    """Test accuracy of multinomial logistic regression on standardised codes, fitted
    full-batch with Adam (lr 0.05, weight decay 1e-4) for `steps` steps."""
    mu, sd = jnp.mean(train_codes, 0), jnp.std(train_codes, 0) + 1e-6
    a, b = (train_codes - mu) / sd, (test_codes - mu) / sd
    params = _fit_probe(a, jnp.asarray(train_labels), num_classes, steps)
    pred = jnp.argmax(b @ params["w"] + params["b"], axis=1)
    return float(jnp.mean(pred == jnp.asarray(test_labels)))


# ------------------------------------------------------------------ uncertainty of a number


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n independent trials."""
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def paired_bootstrap(a, b, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of a - b over paired per-example values, with a 95% percentile bootstrap
    interval (resampling examples, so both models see the same resampled images)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi)}


def bootstrap_se(
    statistic: Callable[[np.ndarray], float], n: int, n_boot: int = 100, seed: int = 0
) -> float:
    """Bootstrap standard error of statistic(resampled indices) over n examples."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, size=n)) for _ in range(n_boot)]
    return float(np.std(values, ddof=1))


# ------------------------------------------------------------------ spread over seeds


# Student's t 0.975 quantiles for 1 to 30 degrees of freedom (standard tables).
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
        2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
        2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom: the table up to 30,
    beyond it a Cornish-Fisher expansion around the normal quantile (within 1e-5)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959963984540054
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def seed_paired_interval(a, b) -> dict[str, float]:
    """Mean of the per-seed differences b_s - a_s with its 95% t interval (n - 1 degrees
    of freedom): the uncertainty that retraining with another seed brings. Needs n >= 2."""
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    n = len(d)
    if n < 2:
        raise ValueError("a spread over seeds needs at least two seeds")
    half = t_quantile_975(n - 1) * float(np.std(d, ddof=1)) / math.sqrt(n)
    mean = float(np.mean(d))
    return {"diff": mean, "lo": mean - half, "hi": mean + half}


def _number(v) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def summarize_seeds(per_seed: list[dict]) -> dict:
    """One metrics dict from several seeds' dicts: each number that differs between
    seeds becomes the mean over seeds, with its sample standard deviation (ddof 1) in
    `std`; a number every seed shares (a count, a setting) stays as it is; None where
    any seed has none. Other entries are the first seed's; `per_seed` keeps every
    seed's dict."""
    out = dict(per_seed[0])
    std = {}
    for key, first in per_seed[0].items():
        values = [m.get(key) for m in per_seed]
        if not _number(first):
            continue
        if not all(_number(v) and math.isfinite(v) for v in values):
            out[key] = None
        elif any(v != first for v in values):
            out[key] = float(np.mean(values))
            std[key] = float(np.std(values, ddof=1))
    out["std"] = std
    out["per_seed"] = per_seed
    return out


# ------------------------------------------------------------------ detection


def auroc(normal_scores, anomalous_scores) -> float:
    """Area under the ROC curve of telling anomalous from normal examples by a score
    (higher = more anomalous): P(score_anomalous > score_normal) + P(tie) / 2, computed
    from average ranks (the Mann-Whitney U statistic), so O(n log n)."""
    a = np.asarray(normal_scores, np.float64).ravel()
    b = np.asarray(anomalous_scores, np.float64).ravel()
    if len(a) == 0 or len(b) == 0:
        raise ValueError("AUROC needs at least one normal and one anomalous score")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("AUROC needs finite scores")
    ranks_b = average_ranks(np.concatenate([a, b]))[len(a) :]
    u = ranks_b.sum() - len(b) * (len(b) + 1) / 2.0
    return float(u / (len(a) * len(b)))


def average_ranks(values) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing their average rank."""
    _, inverse, counts = np.unique(
        np.asarray(values, np.float64), return_inverse=True, return_counts=True
    )
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def spearman(a, b) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


# ------------------------------------------------------------------ neighbours


def _sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """Squared Euclidean distances [len(a), len(b)], clipped at 0 against rounding."""
    d = jnp.sum(a * a, 1)[:, None] - 2.0 * a @ b.T + jnp.sum(b * b, 1)[None, :]
    return jnp.maximum(d, 0.0)


def _row_chunks(queries, chunk: int):
    """(rows [chunk, ...] float32, how many of them are real) over `queries`, the last
    chunk padded with zeros: every chunk has one shape, so each program compiles once."""
    q = np.asarray(queries, np.float32)
    n = len(q)
    padded = np.concatenate([q, np.zeros(((-n) % chunk, *q.shape[1:]), np.float32)])
    for i in range(0, len(padded), chunk):
        yield jnp.asarray(padded[i : i + chunk]), min(chunk, n - i)


@functools.partial(jax.jit, static_argnames="k")
def _nearest_chunk(queries, reference, k: int):
    return jax.lax.top_k(-_sq_distances(queries, reference), k)


def nearest_neighbours(queries, reference, k: int, chunk: int = 512):
    """(squared distances [Q, k], indices [Q, k]) of each query's k nearest rows of
    `reference`, nearest first (exact, brute force)."""
    ref = jnp.asarray(reference, jnp.float32)
    if k > len(ref):
        raise ValueError(f"k = {k} neighbours asked of {len(ref)} reference points")
    neg, idx = [], []
    for rows, keep in _row_chunks(queries, chunk):
        d, j = _nearest_chunk(rows, ref, k)
        neg.append(np.asarray(d)[:keep])
        idx.append(np.asarray(j)[:keep])
    return -np.concatenate(neg), np.concatenate(idx)


def knn_accuracy(train_codes, train_labels, test_codes, test_labels, k: int = 5) -> float:
    """Test accuracy of a k-nearest-neighbour vote (Euclidean, on the codes as they are)
    over the training codes; a tied vote goes to the class of the nearest tied member."""
    _, idx = nearest_neighbours(test_codes, train_codes, k)
    votes = np.asarray(train_labels)[idx]  # [Q, k], nearest first
    num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    counts = np.zeros((len(votes), num_classes))
    np.add.at(counts, (np.arange(len(votes))[:, None], votes), 1.0)
    # Break ties by the nearest neighbour: a tiny bonus that decreases with rank.
    bonus = np.zeros_like(counts)
    np.maximum.at(bonus, (np.arange(len(votes))[:, None], votes), (k - np.arange(k)) * 1e-3 / k)
    pred = np.argmax(counts + bonus, axis=1)
    return float(np.mean(pred == np.asarray(test_labels)))


def kth_neighbour_radius(features, k: int = 3) -> np.ndarray:
    """Distance of each row to its k-th nearest other row (itself excluded)."""
    d, _ = nearest_neighbours(features, features, k + 1)
    return np.sqrt(d[:, k])


@jax.jit
def _covered_chunk(queries, centres, radii_sq):
    return jnp.any(_sq_distances(queries, centres) <= radii_sq[None, :], axis=1)


def _covered(queries, centres, radii, chunk: int = 512) -> np.ndarray:
    """Whether each query lies within radius r_j of some centre j."""
    c = jnp.asarray(centres, jnp.float32)
    r2 = jnp.asarray(radii, jnp.float32) ** 2
    chunks = _row_chunks(queries, chunk)
    return np.concatenate([np.asarray(_covered_chunk(q, c, r2))[:keep] for q, keep in chunks])


def precision_recall(real_features, fake_features, k: int = 3) -> dict[str, float]:
    """Improved precision and recall of generated samples (Kynkaanniemi et al. 2019):
    each set's manifold is the union of balls around its points with radius the distance
    to the k-th nearest neighbour in the same set; precision is the fraction of generated
    points inside the real manifold, recall the fraction of real points inside the
    generated one."""
    real = np.asarray(real_features, np.float32)
    fake = np.asarray(fake_features, np.float32)
    precision = _covered(fake, real, kth_neighbour_radius(real, k)).mean()
    recall = _covered(real, fake, kth_neighbour_radius(fake, k)).mean()
    return {"precision": float(precision), "recall": float(recall), "pr_k": int(k)}


# ------------------------------------------------------------------ linear baseline


def pca_fit(x, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean [D], components [dim, D] (orthonormal rows, by decreasing variance),
    variances [dim]) of the rows of x [N, D], from the eigendecomposition of their
    covariance in float64."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    if not 1 <= dim <= x.shape[1]:
        raise ValueError(f"PCA dimension must be in 1..{x.shape[1]}, got {dim}")
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / max(len(x) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:dim]
    return mean, vectors[:, order].T, values[order]


def pca_project(x, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Codes [N, dim] of x [N, ...] in a fitted PCA basis."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return ((x - mean) @ components.T).astype(np.float32)
