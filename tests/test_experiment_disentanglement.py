"""experiments/disentanglement.py's own logic, on made-up per-seed numbers (its end-to-end
run takes half a minute even with --quick, past the suite's budget; the metrics it reads
are tested in test_disentanglement.py, the models in test_disentangling.py)."""

import pytest
from helpers import load_script

from aevae_jax.errors import UserError

D = load_script("disentanglement")


def runs(**means):
    """Three seeds per model: each metric at its mean, then +-0.01."""
    keys = [k for k, _ in D.METRICS]
    return [{k: means.get(k, 0.5) + d for k in keys} | {"sse": 10.0} for d in (-0.01, 0, 0.01)]


def test_seed_spread_against_the_range_of_model_means():
    per_model = {"a": runs(mig=0.1), "b": runs(mig=0.5), "c": runs(mig=0.3)}
    rows, spread = D.spread_rows(per_model)
    assert spread["mig"]["between_models"] == pytest.approx(0.4)
    assert spread["mig"]["seed_std"] == pytest.approx(0.01)
    assert spread["mig"]["ratio"] == pytest.approx(40.0)
    assert spread["sap"]["between_models"] == pytest.approx(0.0)
    assert rows[0] == ["MIG", "0.400", "0.010", "40.0"]
    text = D.spread_sentence(spread)
    assert "span at least 3 seed deviations on MIG" in text
    assert "on SAP, DCI D" in text and "could reorder" in text


def test_every_claim_names_rows_and_metrics_the_experiment_has():
    rows = {row for row, _, _ in D.MODELS}
    metrics = {k for k, _ in D.METRICS} | {"sse"}
    for model, base, key, _ in D.CLAIMS:
        assert model in rows and base in rows and key in metrics


def test_it_refuses_data_without_known_factors(tmp_path):
    with pytest.raises(UserError, match="--dataset sprites"):
        D.main(["--dataset", "fashion_mnist", "--out", str(tmp_path)])
