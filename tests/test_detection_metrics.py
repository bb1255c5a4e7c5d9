"""The experiment metrics against brute-force NumPy: AUROC over all pairs, nearest
neighbours and kNN votes, improved precision/recall, and PCA against the SVD."""

import numpy as np
import pytest

from aevae_jax.evaluate import metrics as M


def test_auroc_equals_the_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, 40).astype(float)  # many ties
    b = rng.integers(2, 9, 30).astype(float)
    pairs = (b[None, :] > a[:, None]).mean() + 0.5 * (b[None, :] == a[:, None]).mean()
    assert M.auroc(a, b) == pytest.approx(pairs, abs=1e-12)
    assert M.auroc([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert M.auroc([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert M.auroc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(ValueError, match="finite"):
        M.auroc([np.nan], [1.0])


def _numpy_neighbours(q, r, k):
    d = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


def test_nearest_neighbours_match_numpy():
    rng = np.random.default_rng(1)
    q, r = rng.normal(size=(37, 5)), rng.normal(size=(50, 5))
    d, idx = M.nearest_neighbours(q, r, 4, chunk=16)  # chunks with padding
    d_np, idx_np = _numpy_neighbours(q, r, 4)
    np.testing.assert_array_equal(idx, idx_np)
    np.testing.assert_allclose(d, d_np, rtol=1e-4, atol=1e-4)


def test_knn_accuracy_matches_a_numpy_vote():
    rng = np.random.default_rng(2)
    centres = rng.normal(scale=3, size=(3, 4))
    ytr, yte = rng.integers(0, 3, 120), rng.integers(0, 3, 60)
    xtr = centres[ytr] + rng.normal(size=(120, 4))
    xte = centres[yte] + rng.normal(size=(60, 4))
    _, idx = _numpy_neighbours(xte, xtr, 5)
    pred = []
    for row in ytr[idx]:
        counts = np.bincount(row, minlength=3)
        tied = np.flatnonzero(counts == counts.max())
        pred.append(next(c for c in row if c in tied))  # nearest member of a tied class
    assert M.knn_accuracy(xtr, ytr, xte, yte, k=5) == pytest.approx(np.mean(np.array(pred) == yte))
    # k = 1 on the training set itself is exact recall of the labels
    assert M.knn_accuracy(xtr, ytr, xtr, ytr, k=1) == 1.0


def test_precision_recall_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [10.0]])  # k = 1 radii: 1, 1, 1, 8
    fake = np.array([[0.5], [5.0], [30.0]])  # radii: 4.5, 4.5, 25
    pr = M.precision_recall(real, fake, k=1)
    # fake 0.5 within 0's ball; 5.0 within 10's ball (radius 8); 30 outside every ball
    assert pr["precision"] == pytest.approx(2 / 3)
    # real 0, 1, 2 within 0.5's ball (4.5); 10 within 5's ball (4.5 < 5) and 30's (25)
    assert pr["recall"] == pytest.approx(1.0)
    same = np.random.default_rng(3).normal(size=(200, 3))
    assert M.precision_recall(same, same, k=3) == {"precision": 1.0, "recall": 1.0, "pr_k": 3}


def test_pca_matches_the_svd():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    mean, comps, var = M.pca_fit(x, 3)
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(var, s[:3] ** 2 / 299, rtol=1e-8)
    np.testing.assert_allclose(np.abs(comps @ vt[:3].T), np.eye(3), atol=1e-8)
    codes = M.pca_project(x, mean, comps)
    np.testing.assert_allclose(codes.var(0, ddof=1), var, rtol=1e-5)
    with pytest.raises(ValueError, match=r"1\.\.6"):
        M.pca_fit(x, 7)
