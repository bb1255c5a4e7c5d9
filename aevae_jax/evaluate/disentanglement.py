"""Disentanglement metrics: how well codes [N, L] separate known generative factors
[N, K] (integer indices, as data/sprites.py gives them). Each is 1 for a code that copies
the factors one per dimension and near 0 (the FactorVAE score: near chance) for a code
that ignores them.

- MIG (Chen et al. 2018): codes discretised into equal-width bins per dimension; for each
  factor, the gap between the largest and second-largest mutual information I(z_j; v_k)
  over dimensions, divided by the factor's entropy H(v_k); the mean over factors.
- SAP (Kumar et al. 2018): S_jk = the R^2 of a linear fit of factor k on dimension j alone
  (the squared correlation); for each factor, the gap between its two largest S_jk;
  the mean over factors. Every factor, the shape too, is scored as an ordered number (the
  paper's regression form; its classification form is left out).
- DCI (Eastwood & Williams 2018): a ridge regression of each standardised factor on the
  standardised codes (fitted on a training part, scored on a held-out part); R_jk =
  |weight of dimension j for factor k|. Disentanglement: sum_j rho_j (1 - H_K(P_j.)),
  with P_jk = R_jk / sum_k R_jk and rho_j = sum_k R_jk / sum R; completeness:
  (1/K) sum_k (1 - H_L(P~_.k)), with P~_jk = R_jk / sum_j R_jk; entropies in base K
  and L respectively. Informativeness: the held-out R^2, averaged over factors. (The
  paper's lasso and random-forest regressors are swapped for ridge, a closed form.)
- FactorVAE score (Kim & Mnih 2018): codes divided by their standard deviation over the
  data (dimensions whose deviation is below `collapsed` of the largest are left out);
  each vote fixes one factor k at a value, draws `batch` images with that value, and
  votes (the dimension of least variance, k); the majority-vote classifier from
  dimension to factor is fitted on `train_votes` and its accuracy taken on `eval_votes`.
  Chance is 1/K.

All in float64 NumPy; the FactorVAE score's draws come from `seed`.
"""

from __future__ import annotations

import numpy as np

from aevae_jax.errors import require


def _check(codes, factors) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(codes, np.float64).reshape(len(codes), -1)
    v = np.asarray(factors)
    require(v.ndim == 2 and len(v) == len(z), "factors must be [N, K] for codes [N, L]")
    require(np.issubdtype(v.dtype, np.integer), "factors must be integer indices [N, K]")
    require(len(z) >= 2, "the disentanglement metrics need at least two codes")
    return z, v


def entropy(a: np.ndarray) -> float:
    """H(a) in nats of integer labels [N] (the empirical distribution)."""
    p = np.bincount(a - a.min()) / len(a)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two integer label arrays [N], from their contingency table."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    joint = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(joint, (ia, ib), 1.0)
    joint /= len(a)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])))


def discretise(codes, bins: int = 20) -> np.ndarray:
    """[N, L] int: each dimension cut into `bins` equal-width bins over its range."""
    z = np.asarray(codes, np.float64)
    lo, hi = z.min(0), z.max(0)
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    return np.clip(((z - lo) / width).astype(np.int64), 0, bins - 1)


def mig(codes, factors, bins: int = 20) -> dict:
    """{"mig": the mean gap, "mig_per_factor": [K]}."""
    z, v = _check(codes, factors)
    d = discretise(z, bins)
    gaps = []
    for k in range(v.shape[1]):
        h = entropy(v[:, k])
        mi = np.sort([mutual_information(d[:, j], v[:, k]) for j in range(d.shape[1])])[::-1]
        second = mi[1] if len(mi) > 1 else 0.0
        gaps.append(0.0 if h == 0 else (mi[0] - second) / h)
    return {"mig": float(np.mean(gaps)), "mig_per_factor": [float(g) for g in gaps]}


def _standardise(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    std = a.std(0)
    return (a - a.mean(0)) / np.where(std > 0, std, 1.0)


def sap(codes, factors) -> dict:
    """{"sap": the mean gap, "sap_matrix": S [L, K] of squared correlations}."""
    z, v = _check(codes, factors)
    zs, vs = _standardise(z), _standardise(v)
    s = (zs.T @ vs / len(z)) ** 2  # [L, K]: corr^2, the R^2 of a one-dimension linear fit
    top = np.sort(s, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(s.shape[1])
    return {"sap": float(np.mean(top[0] - second)), "sap_matrix": s.tolist()}


def _normalised_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy in base `base` of each row of p (rows sum to 1)."""
    logs = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -np.sum(p * logs, axis=1) / np.log(base)


def dci(codes, factors, test_share: float = 0.3, ridge: float = 1e-2, seed: int = 0) -> dict:
    """{"dci_disentanglement", "dci_completeness", "dci_informativeness",
    "dci_importance": R [L, K]} from ridge regressions fitted on 1 - test_share of the
    codes (a fixed permutation from `seed`) and scored on the rest."""
    z, v = _check(codes, factors)
    n = len(z)
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, min(n - 1, round(n * (1 - test_share))))
    fit, held = order[:cut], order[cut:]
    mean, std = z[fit].mean(0), z[fit].std(0)
    std = np.where(std > 0, std, 1.0)
    zf, zh = (z[fit] - mean) / std, (z[held] - mean) / std
    vmean, vstd = v[fit].mean(0), v[fit].std(0)
    vstd = np.where(vstd > 0, vstd, 1.0)
    vf, vh = (v[fit] - vmean) / vstd, (v[held] - vmean) / vstd
    dim = z.shape[1]
    w = np.linalg.solve(zf.T @ zf / cut + ridge * np.eye(dim), zf.T @ vf / cut)  # [L, K]
    residual = np.mean((zh @ w - vh) ** 2, axis=0)
    variance = np.where(vh.var(0) > 0, vh.var(0), 1.0)
    return {
        **dci_scores(np.abs(w)),
        "dci_informativeness": float(np.mean(1 - residual / variance)),
        "dci_importance": np.abs(w).tolist(),
    }


def dci_scores(r) -> dict:
    """{"dci_disentanglement", "dci_completeness"} of an importance matrix R [L, K] >= 0
    (the formulas of the module's docstring; a dimension of zero importance weighs
    nothing, a factor that no dimension predicts is 0 complete)."""
    r = np.asarray(r, np.float64)
    dim, k = r.shape
    total = r.sum()
    if total == 0:
        return {"dci_disentanglement": 0.0, "dci_completeness": 0.0}
    per_code, per_factor = r.sum(1), r.sum(0)
    p_code = r / np.where(per_code > 0, per_code, 1.0)[:, None]
    p_factor = (r / np.where(per_factor > 0, per_factor, 1.0)[None]).T  # [K, L]
    d = np.sum((per_code / total) * (1 - _normalised_entropy(p_code, k))) if k > 1 else 1.0
    c_k = np.where(per_factor > 0, 1 - _normalised_entropy(p_factor, dim), 0.0) if dim > 1 else 1.0
    c = np.mean(c_k)
    return {"dci_disentanglement": float(d), "dci_completeness": float(c)}


def _votes(z, v, active, rng, n, batch) -> np.ndarray:
    """[n, 2] (the dimension of least variance, the fixed factor) of n votes."""
    out = np.empty((n, 2), np.int64)
    for i in range(n):
        k = rng.integers(v.shape[1])
        value = v[rng.integers(len(v)), k]
        rows = np.flatnonzero(v[:, k] == value)
        chosen = z[rng.choice(rows, batch, replace=True)][:, active]
        out[i] = active[np.argmin(chosen.var(0))], k
    return out


def factorvae_score(
    codes,
    factors,
    seed: int = 0,
    train_votes: int = 800,
    eval_votes: int = 400,
    batch: int = 64,
    collapsed: float = 0.05,
) -> dict:
    """{"factorvae_score": the majority-vote classifier's held-out accuracy,
    "factorvae_active_dims": dimensions that took part}."""
    z, v = _check(codes, factors)
    std = z.std(0)
    active = np.flatnonzero(std > collapsed * max(std.max(), 1e-12))
    if len(active) == 0:
        return {"factorvae_score": 0.0, "factorvae_active_dims": 0}
    z = z / np.where(std > 0, std, 1.0)
    rng = np.random.default_rng(seed)
    train = _votes(z, v, active, rng, train_votes, batch)
    held = _votes(z, v, active, rng, eval_votes, batch)
    table = np.zeros((z.shape[1], v.shape[1]), np.int64)
    np.add.at(table, (train[:, 0], train[:, 1]), 1)
    predict = np.argmax(table, axis=1)  # a dimension no vote chose predicts factor 0
    accuracy = float(np.mean(predict[held[:, 0]] == held[:, 1]))
    return {"factorvae_score": accuracy, "factorvae_active_dims": len(active)}


def disentanglement(codes, factors, seed: int = 0) -> dict:
    """Every metric of this module on one set of codes: MIG, SAP, DCI, FactorVAE score
    (their per-factor and matrix details included)."""
    return {
        **mig(codes, factors),
        **sap(codes, factors),
        **dci(codes, factors, seed=seed),
        **factorvae_score(codes, factors, seed=seed),
    }
