"""Disentanglement on data with known factors: what the KL term, and its variants, buy in
the code.

The literature says that weighting the VAE's KL (beta-VAE, Higgins et al. 2017), or only
its total-correlation part (beta-TC-VAE, Chen et al. 2018; FactorVAE, Kim & Mnih 2018),
or pushing the codes' covariance to I (DIP-VAE, Kumar et al. 2018), gives codes whose
dimensions each follow one generative factor; Locatello et al. 2019 found, over 12,000
models, that the random seed and the hyperparameters matter more than the model. Measured
on the project's sprites (data/sprites.py: shape, scale, orientation, x, y; 22,118
training and 2,458 test images of 32 x 32) with the MLP (400 hidden units, latent 10) for
the plain AE, VAE, beta-VAE (beta 4), beta-TC-VAE (beta 6), FactorVAE (gamma 10) and
DIP-VAE-I, each over the same seeds trained together: MIG, SAP, DCI disentanglement,
completeness and informativeness, and the FactorVAE score of the test codes (posterior
means) against the test images' factors (evaluate/disentanglement.py), and the squared
error of the reconstruction.

Verdicts: each paper's claim against its baseline, and the seed spread beside the spread
between models (the gap between the best and worst model's mean against the mean seed
standard deviation), which is what Locatello et al. asked.

    python experiments/disentanglement.py [--quick] [--seeds 0,1,2] [--epochs 20]
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import scaffold as X

from aevae_jax.data import sprites
from aevae_jax.errors import require

LATENT = 10
# (row name, registered model, its options): the papers' settings for dSprites-like data.
MODELS = (
    ("AE", "ae", {}),
    ("VAE", "vae", {}),
    ("beta-VAE (beta 4)", "beta_vae", {"beta": 4.0}),
    ("beta-TC-VAE (beta 6)", "beta_tc_vae", {"tc_beta": 6.0, "dataset_size": 22_118}),
    ("FactorVAE (gamma 10)", "factor_vae", {"gamma": 10.0}),
    ("DIP-VAE-I", "dip_vae_i", {}),
)
METRICS = (("mig", "MIG"), ("sap", "SAP"), ("dci_disentanglement", "DCI D"),
           ("dci_completeness", "DCI C"), ("dci_informativeness", "DCI I"),
           ("factorvae_score", "FactorVAE score"))  # fmt: skip
# Each paper's claim: (model row, baseline row, metric, what the paper says).
CLAIMS = (
    ("beta-VAE (beta 4)", "VAE", "factorvae_score",
     "a KL weight above 1 disentangles better than the VAE (Higgins et al. 2017)"),
    ("beta-TC-VAE (beta 6)", "beta-VAE (beta 4)", "mig",
     "penalising only the total correlation gives a higher MIG than beta-VAE (Chen et al. 2018)"),
    ("FactorVAE (gamma 10)", "beta-VAE (beta 4)", "factorvae_score",
     "FactorVAE disentangles better than beta-VAE (Kim & Mnih 2018)"),
    ("FactorVAE (gamma 10)", "beta-VAE (beta 4)", "sse",
     "FactorVAE reconstructs better than beta-VAE (Kim & Mnih 2018)"),
    ("DIP-VAE-I", "VAE", "sap", "DIP-VAE-I has a higher SAP than the VAE (Kumar et al. 2018)"),
)  # fmt: skip


def measure(result, test_x, factors) -> dict:
    """The disentanglement metrics and the squared error of one seed's model."""
    from aevae_jax.evaluate.disentanglement import disentanglement
    from aevae_jax.evaluate.split import encode_split

    enc = encode_split(result.model, result.params, test_x)
    codes = np.asarray(enc.features).reshape(len(factors), -1)
    scores = disentanglement(codes, factors, seed=result.seed)
    sse = float(X.scores(result, test_x, None)["recon_sse"].mean())
    return {**{k: scores[k] for k, _ in METRICS}, "sse": sse}


def spread_rows(per_model: dict) -> tuple[list[list[str]], dict]:
    """Per metric: the range of the model means, the mean seed standard deviation, and
    their ratio."""
    rows, out = [], {}
    for key, label in METRICS:
        means = [np.mean([m[key] for m in runs]) for runs in per_model.values()]
        stds = [np.std([m[key] for m in runs], ddof=1) for runs in per_model.values()]
        between, within = float(np.max(means) - np.min(means)), float(np.mean(stds))
        ratio = between / within if within > 0 else float("inf")
        out[key] = {"between_models": between, "seed_std": within, "ratio": ratio}
        rows.append([label, f"{between:.3f}", f"{within:.3f}", f"{ratio:.1f}"])
    return rows, out


def spread_sentence(spread: dict) -> str:
    """What the spread table shows, in Locatello et al.'s terms."""
    small = [label for key, label in METRICS if spread[key]["ratio"] < 3]
    big = [label for key, label in METRICS if spread[key]["ratio"] >= 3]
    text = "Seeds against models: "
    if big:
        text += f"the models' means span at least 3 seed deviations on {', '.join(big)}"
    if small:
        text += ("; " if big else "") + (
            f"on {', '.join(small)} they span less than 3, so a single seed could reorder "
            "the models there (Locatello et al. 2019)"
        )
    return text + "."


def main(argv=None) -> dict:
    p = X.parser("disentanglement", __doc__.splitlines()[0], epochs=20)
    p.set_defaults(dataset="sprites")
    args = p.parse_args(argv)
    s = X.setting("disentanglement", args, argv)
    require(
        s.dataset == sprites.NAME,
        f"the disentanglement experiment needs known factors: --dataset {sprites.NAME}",
    )
    X.enable_compilation_cache(s.cache)
    data = X.load(s)
    test_x = X.inputs(data.dataset.x_test)
    factors = sprites.sprite_factors("test")[: len(test_x)]
    res = X.Results(
        s,
        "Disentanglement on sprites with known factors",
        "Latent 10, MLP 400 hidden units, the project's sprites (shape, scale, orientation, "
        "x, y); metrics of the test codes (posterior means) against the test images' "
        "factors, each in [0, 1], higher is more disentangled; squared error summed over "
        "the 1,024 pixels.",
    )
    per_model = {}
    for row, name, options in MODELS:
        cfg = X.run_config(s, data, name, latent_dim=LATENT, options=options)
        per_model[row] = [measure(r, test_x, factors) for r in X.trained(s, data, cfg)]
    res.table(
        "Disentanglement and reconstruction per model",
        ["model", *(label for _, label in METRICS), "squared error"],
        [
            [
                row,
                *(X.pm([m[k] for m in runs], 3) for k, _ in METRICS),
                X.pm([m["sse"] for m in runs], 2),
            ]
            for row, runs in per_model.items()
        ],
        "MIG (Chen et al. 2018), SAP (Kumar et al. 2018), DCI (Eastwood & Williams 2018; "
        "ridge importances), FactorVAE score (Kim & Mnih 2018; chance 0.2 with 5 factors).",
    )
    rows, spread = spread_rows(per_model)
    res.table(
        "Seeds against models",
        ["metric", "range of the model means", "mean seed std", "ratio"],
        rows,
        "range: the best model's mean minus the worst's; seed std: the standard deviation "
        "over seeds, averaged over models.",
    )
    for model, base, key, text in CLAIMS:
        label = dict(METRICS).get(key, "test squared error")
        higher = key != "sse"
        a, b = [m[key] for m in per_model[model]], [m[key] for m in per_model[base]]
        said = X.verdict(label, model, a, base, b, higher, 3)
        if not X.differs(a, b):
            word = "Not supported"
        else:
            word = "Supported" if (np.mean(a) > np.mean(b)) == higher else "Contradicted"
        res.verdict(f"Claim: {text}. {word}: {said}")
    res.verdict(spread_sentence(spread))
    res.data.update(per_seed=per_model, spread=spread, latent_dim=LATENT)
    return res.write()


if __name__ == "__main__":
    sys.exit(X.run(main))
