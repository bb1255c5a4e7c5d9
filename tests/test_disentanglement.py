"""The disentanglement metrics against hand computations and codes whose answer is known:
a code that copies the factors one per dimension scores 1, a code that ignores them scores
near 0 (the FactorVAE score: near chance, 1/K)."""

import numpy as np
import pytest

from aevae_jax.data.sprites import all_factors
from aevae_jax.errors import UserError
from aevae_jax.evaluate import disentanglement as D


@pytest.fixture(scope="module")
def grid():
    """Every sprite factor combination [24576, 5]: the factors are exactly independent."""
    return all_factors()


def test_entropy_and_mutual_information_by_hand():
    a = np.array([0, 0, 1, 1, 1, 1])
    assert D.entropy(a) == pytest.approx(-(1 / 3) * np.log(1 / 3) - (2 / 3) * np.log(2 / 3))
    assert D.mutual_information(a, a) == pytest.approx(D.entropy(a))
    # Independent on a grid: zero; b a function of a pair: I = H(b).
    x, y = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    assert D.mutual_information(x.ravel(), y.ravel()) == pytest.approx(0.0, abs=1e-12)
    b = np.array([0, 1, 0, 1, 2, 2])
    joint = np.array([[1, 1, 0], [1, 1, 2]]) / 6  # rows a = 0, 1; columns b = 0, 1, 2
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    hand = np.sum(joint[nz] * np.log(joint[nz] / (pa @ pb)[nz]))
    assert D.mutual_information(a, b) == pytest.approx(hand)


def test_a_copied_code_scores_one_on_every_metric(grid):
    rng = np.random.default_rng(0)
    codes = grid[:, rng.permutation(5)] * rng.uniform(0.5, 2.0, 5)  # any order and scale
    r = D.disentanglement(codes, grid)
    assert r["mig"] == pytest.approx(1.0, abs=1e-9)
    assert r["sap"] == pytest.approx(1.0, abs=1e-9)
    # DCI's regressions are fitted on a random 70%, where the factors are independent only
    # up to sampling: off-diagonal importances of about 1e-4 remain.
    assert r["dci_disentanglement"] == pytest.approx(1.0, abs=5e-3)
    assert r["dci_completeness"] == pytest.approx(1.0, abs=5e-3)
    assert r["dci_informativeness"] == pytest.approx(1.0, abs=1e-3)  # the ridge's shrinkage
    assert r["factorvae_score"] == 1.0 and r["factorvae_active_dims"] == 5


def test_a_code_that_ignores_the_factors_scores_near_zero(grid):
    rng = np.random.default_rng(1)
    rows = rng.choice(len(grid), 4000, replace=False)
    r = D.disentanglement(rng.normal(size=(4000, 10)), grid[rows])
    assert r["mig"] < 0.02 and r["sap"] < 0.02 and abs(r["dci_informativeness"]) < 0.02
    # Importances of pure noise are spread at random: low, not zero.
    assert r["dci_disentanglement"] < 0.3 and r["dci_completeness"] < 0.3
    assert 0.1 < r["factorvae_score"] < 0.4  # chance is 1/5


def test_a_factor_captured_twice_or_mixed_has_no_gap(grid):
    # Factor 0 in two dimensions: its MIG gap is 0; factor 1 alone in one: 1.
    codes = np.stack([grid[:, 0], grid[:, 0], grid[:, 1]], 1)
    per_factor = D.mig(codes, grid[:, :2])["mig_per_factor"]
    assert per_factor == pytest.approx([0.0, 1.0], abs=1e-9)
    # Two factors rotated into two dimensions: informative, but neither separated.
    mixed = np.stack([grid[:, 3] + grid[:, 4], grid[:, 3] - grid[:, 4]], 1)
    r = D.disentanglement(mixed, grid[:, 3:])
    assert r["dci_informativeness"] > 0.99
    assert r["sap"] < 0.01 and r["mig"] < 0.35 and r["dci_disentanglement"] < 0.05


def test_sap_matrix_is_the_squared_correlation_by_hand():
    rng = np.random.default_rng(2)
    v = rng.integers(0, 5, size=(300, 2))
    z = np.stack([v[:, 0] + rng.normal(size=300), rng.normal(size=300), v[:, 1] * 0.5], 1)
    s = np.array(D.sap(z, v)["sap_matrix"])
    hand = np.corrcoef(np.concatenate([z, v], 1), rowvar=False)[:3, 3:] ** 2
    np.testing.assert_allclose(s, hand, rtol=1e-10)
    gaps = [np.sort(hand[:, k])[-1] - np.sort(hand[:, k])[-2] for k in range(2)]
    assert D.sap(z, v)["sap"] == pytest.approx(np.mean(gaps))


def test_dci_scores_of_an_importance_matrix_by_hand():
    # Dimension 1 splits evenly (1 - H = 0), dimension 2 serves factor 2 alone (1); their
    # weights 2/3 and 1/3. Factor 1 is in dimension 1 alone (1), factor 2 split (0).
    r = D.dci_scores([[1.0, 1.0], [0.0, 1.0]])
    assert r["dci_disentanglement"] == pytest.approx(1 / 3)
    assert r["dci_completeness"] == pytest.approx(0.5)
    # A factor that no dimension predicts is not complete; zero importance scores zero.
    assert D.dci_scores([[1.0, 0.0], [1.0, 0.0]])["dci_completeness"] == pytest.approx(0.0)
    assert D.dci_scores(np.zeros((2, 2))) == {"dci_disentanglement": 0.0, "dci_completeness": 0.0}


def test_factorvae_score_ignores_collapsed_dimensions_and_draws_from_its_seed(grid):
    codes = np.concatenate([grid.astype(float), np.full((len(grid), 1), 3.0)], 1)
    r = D.factorvae_score(codes, grid)
    assert r["factorvae_score"] == 1.0 and r["factorvae_active_dims"] == 5
    rng = np.random.default_rng(3)
    noisy = grid + rng.normal(size=grid.shape) * 2.0
    assert D.factorvae_score(noisy, grid, seed=4) == D.factorvae_score(noisy, grid, seed=4)


def test_bad_factors_name_the_remedy():
    with pytest.raises(UserError, match=r"factors must be \[N, K\]"):
        D.mig(np.zeros((4, 2)), np.zeros(4, np.int32))
    with pytest.raises(UserError, match="integer indices"):
        D.sap(np.zeros((4, 2)), np.zeros((4, 2)))
