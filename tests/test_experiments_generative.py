"""The generative experiments end to end in --quick mode on the small real subset
(experiments/generation.py, augmentation.py, rate_distortion.py), sharing one model
cache so the standard AE and VAE train once; and their own small formulas by hand."""

import json
import math
import os

import numpy as np
import pytest

from tests.helpers import load_script


@pytest.fixture(scope="module")
def cache(experiment_cache):
    return experiment_cache


def run_quick(name: str, small_npz: str, out, cache: str, *extra: str) -> tuple[dict, str]:
    out = str(out)
    record = load_script(name).main(
        [
            "--quick",
            "--dataset",
            small_npz,
            "--out",
            out,
            "--cache",
            cache,
            "--quiet",
            "--no-tensorboard",
            *extra,
        ]
    )
    for suffix in (".md", ".json"):
        assert os.path.exists(os.path.join(out, name + suffix))
    with open(os.path.join(out, f"{name}.json")) as f:
        assert json.load(f)["experiment"] == name  # valid JSON, no NaN
    return record, out


def in_unit(values) -> bool:
    return all(0.0 <= v <= 1.0 for v in values)


def test_generation_quick(small_npz, cache, tmp_path):
    record, out = run_quick("generation", small_npz, tmp_path / "out", cache)
    per_seed = record["per_seed"]
    assert list(per_seed) == ["vae", "ae_prior", "ae_expost"]
    for name, runs in per_seed.items():
        assert len(runs) == 3
        assert all(math.isfinite(m["fd"]) and m["fd"] >= 0 for m in runs)
        assert in_unit([m["precision"] for m in runs]) and in_unit([m["recall"] for m in runs])
        has_nll = name == "vae"
        assert all((m["nll_iwae"] is not None) == has_nll for m in runs)
    assert all(0 < m["nll_iwae"] < 784 * math.log(2) * 2 for m in per_seed["vae"])
    ref = record["reference"]
    assert in_unit([ref["precision"], ref["recall"]]) and ref["fd"] >= 0
    # 3 metrics for each of 3 pairs: VAE-AE N(0, I), VAE-AE ex-post, ex-post-N(0, I)
    assert len(record["verdicts"]) == 9
    assert all(
        ("better than" in v) or ("no measurable difference" in v) for v in record["verdicts"]
    )
    for png in ("samples.png", "precision_recall.png"):
        assert os.path.getsize(os.path.join(out, png)) > 1000
    table = open(os.path.join(out, "generation.md")).read()
    assert "AE, ex-post Gaussian" in table and "training images (reference)" in table


def test_rate_distortion_quick(small_npz, cache, tmp_path):
    record, out = run_quick("rate_distortion", small_npz, tmp_path / "out", cache)
    assert record["betas"] == [1.0, 4.0]
    for beta in ("1", "4"):
        runs = record["per_seed"][beta]
        assert len(runs) == 3
        for m in runs:
            assert m["kl"] > 0 and m["distortion"] > 0 and m["sse"] > 0
            assert 0 <= m["active_units"] <= 16
            # the K = 1 bound is rate + distortion up to the noise of independent draws
            assert m["neg_elbo"] == pytest.approx(m["kl"] + m["distortion"], rel=0.02)
    assert len(record["ae_sse"]) == 3 and all(v > 0 for v in record["ae_sse"])
    assert len(record["verdicts"]) == 4
    assert record["verdicts"][0].startswith("Rate (KL)")
    assert os.path.getsize(os.path.join(out, "rate_distortion.png")) > 1000


def test_augmentation_quick(small_npz, cache, tmp_path):
    record, out = run_quick("augmentation", small_npz, tmp_path / "out", cache)
    assert record["labelled"] == [100]
    runs = record["per_seed"]["100"]
    assert len(runs) == 3
    for key in ("accuracy_real", "accuracy_augmented", "sample_label_agreement"):
        assert in_unit([m[key] for m in runs])
    assert len(record["verdicts"]) == 1 and "with 100 labels" in record["verdicts"][0]
    assert os.path.getsize(os.path.join(out, "cvae_samples.png")) > 1000
    # the CVAE trained on the 100 labelled images only, stored repeated to 6,000 rows
    stored = np.load(os.path.join(cache, "data", "fmnist_small-quick-labelled100x60.npz"))
    assert len(stored["x_train"]) == 6000
    assert np.array_equal(np.bincount(stored["y_train"]), np.full(10, 600))


def test_balanced_indices_by_hand():
    aug = load_script("augmentation")
    labels = np.array([2, 0, 1, 0, 2, 1, 1, 0, 2, 2])
    assert aug.balanced_indices(labels, 6, 3).tolist() == [0, 1, 2, 3, 4, 5]
    assert aug.balanced_indices(labels, 3, 3).tolist() == [0, 1, 2]
    with pytest.raises(Exception, match="fewer than 4"):
        aug.balanced_indices(labels, 12, 3)


def test_rate_distortion_steps_and_sentences():
    rd = load_script("rate_distortion")
    per_beta = {
        0.5: [{"kl": 10.0}, {"kl": 11.0}, {"kl": 12.0}],  # mean 11, std 1
        1.0: [{"kl": 5.0}, {"kl": 6.0}, {"kl": 7.0}],  # mean 6, std 1: a fall of 5 > 2
        2.0: [{"kl": 4.0}, {"kl": 6.0}, {"kl": 8.0}],  # mean 6, std 2: no change
    }
    moves = rd.steps([0.5, 1.0, 2.0], per_beta, "kl")
    assert [m["change"] for m in moves] == pytest.approx([-5.0, 0.0])
    assert [m["measurable"] for m in moves] == [True, False]
    sentence = rd.trend_sentence("Rate", "falls", moves)
    assert "at 1 of 2 steps" in sentence and "no measurable difference at beta 1 to 2" in sentence
    assert "every one of the 1" not in rd.trend_sentence("Rate", "falls", moves[:1])
    assert "other way" in rd.trend_sentence("Rate", "rises", moves[:1])
