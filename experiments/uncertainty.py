"""What modelling uncertainty buys, on clean, corrupted and out-of-distribution inputs.

The VAE's posterior variance and likelihood against the AE's reconstruction error.

The article: the VAE's code is a distribution, so the model says how sure it is; the
AE has one point per image and only its reconstruction error to go by. Measured with
the standard latent-16 AE and VAE (shared with the other experiments), per image:
the VAE's posterior variance (exp(log_var) averaged over the 16 latent dimensions),
its IWAE NLL bound (K = --iwae-k), its reconstruction error, and the AE's
reconstruction error; on

- the Fashion-MNIST test images (in-distribution), binarized by the evaluator's draw;
- the same inputs corrupted (`corruption.corrupt`, one fixed key per corruption):
  gaussian noise sigma 0.3, then CLIPPED to [0, 1] (the Bernoulli likelihood of a
  pixel outside [0, 1] is no likelihood at all, and the images the models know lie in
  [0, 1]); salt-and-pepper at 20% of pixels; masking (set to 0) of 50% of pixels;
- the out-of-distribution sets of `aevae_jax.data.ood` (binarized the same way):
  scikit-learn's 8 x 8 handwritten digits framed like MNIST (the stand-in for MNIST,
  which cannot be downloaded here), grey photograph patches, uniform noise, and the
  test images upside down.

Per set: each score's mean over images (mean ± std over seeds), and the AUROC of
telling that set from the clean test images by the score (higher score = more
unusual; below 0.5 the model finds the set more ordinary than its own test data, as
Nalisnick et al. 2019 found for likelihoods; not flipped). Calibration: does the
VAE's uncertainty about an image predict how badly it reconstructs it? Spearman rank
correlation, per seed, of posterior variance and of NLL with the VAE's own
reconstruction error, per set.

Every set is cut to its first --n images (default 2,000; evenly spaced for the OOD
sets) to keep the IWAE passes inside the budget. All sets are scored in one pass per
model and seed (`ood.score_sets`). --quick: 320 images per set and K <= 8; 8 x 320 =
2,560 images, the shape of the quick anomaly experiment's OOD pass (512 test images
and 4 sets of 512), so the two share their compiled scoring programs.

    python experiments/uncertainty.py [--quick] [--n 2000] [--iwae-k 100]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import scaffold as X

from aevae_jax.data.ood import ood_sets, score_sets
from aevae_jax.errors import require
from aevae_jax.evaluate import metrics as M
from aevae_jax.nn.corruption import corrupt

NAME = "uncertainty"
DEFAULT_N, QUICK_N = 2000, 320
CORRUPTION_SEED = 11
# (name, corruption kind, level): each drawn with fold_in(key(CORRUPTION_SEED), index).
CORRUPTIONS = (
    ("gaussian 0.3", "gaussian", 0.3),
    ("salt & pepper 0.2", "salt_and_pepper", 0.2),
    ("masking 0.5", "masking", 0.5),
)
# (model, score key, label): the columns of the tables.
SCORES = (
    ("vae", "posterior_var", "VAE posterior var."),
    ("vae", "nll_iwae", "VAE NLL (IWAE)"),
    ("vae", "recon_sse", "VAE recon. error"),
    ("ae", "recon_sse", "AE recon. error"),
)
IN = "test (in)"
UNITS = {"posterior_var": "mean over latent dims", "nll_iwae": "nats per image",
         "recon_sse": "squared error per image"}  # fmt: skip


def corrupted(x: jax.Array, index: int, kind: str, level: float) -> jax.Array:
    """Model inputs x corrupted by `kind` at `level` with this corruption's fixed key,
    clipped to [0, 1]."""
    key = jax.random.fold_in(jax.random.key(CORRUPTION_SEED), index)
    return jnp.clip(corrupt(key, x, kind, level), 0.0, 1.0)


def input_sets(ds, n: int) -> dict[str, jax.Array]:
    """{set name: model inputs}: the first n test images, their corruptions, and the
    OOD sets (at most n images each)."""
    test = X.inputs(ds.x_test[:n])
    sets = {IN: test}
    for i, (name, kind, level) in enumerate(CORRUPTIONS):
        sets[name] = corrupted(test, i, kind, level)
    for name, images in ood_sets(n, ds.x_test[:n]).items():
        sets[f"OOD {name}"] = X.inputs(images)
    return sets


def scorer(s, result, key) -> Callable:
    """inputs -> per-image scores of one trained seed (with a key: ELBO and IWAE too)."""
    return lambda x: X.scores(
        result, x, key, s.iwae_k if key is not None else 0, progress=s.progress
    )


def per_seed_scores(s, data, sets) -> list[dict]:
    """[per seed: {set: {(model, score): per-image values}}] of the standard AE and VAE,
    every set scored in one pass per model and seed."""
    runs = {m: X.trained(s, data, X.run_config(s, data, m)) for m in ("ae", "vae")}
    out = []
    for r_ae, r_vae in zip(runs["ae"], runs["vae"], strict=True):
        vae = score_sets(scorer(s, r_vae, jax.random.key(r_vae.seed)), sets)
        ae = score_sets(scorer(s, r_ae, None), sets)
        both = {"vae": vae, "ae": ae}
        out.append({n: {(m, k): both[m][n][k] for m, k, _ in SCORES} for n in sets})
    return out


def summaries(per_seed: list[dict]) -> dict:
    """Per set and score, per seed: mean score, AUROC against the clean test images,
    and for the VAE Spearman's rho of posterior variance and NLL with its recon. error."""
    out = {}
    for name in per_seed[0]:
        row = {}
        for m, k, _ in SCORES:
            vals = [seed[name][(m, k)] for seed in per_seed]
            row[f"{m}/{k}/mean"] = [float(v.mean()) for v in vals]
            if name != IN:
                ins = [seed[IN][(m, k)] for seed in per_seed]
                row[f"{m}/{k}/auroc"] = [M.auroc(a, b) for a, b in zip(ins, vals, strict=True)]
        for k in ("posterior_var", "nll_iwae"):
            row[f"rho/{k}"] = [
                M.spearman(seed[name][("vae", k)], seed[name][("vae", "recon_sse")])
                for seed in per_seed
            ]
        out[name] = row
    return out


UNCERTAINTIES = (("posterior_var", "posterior variance"), ("nll_iwae", "NLL (IWAE)"))


def sign_word(values) -> str:
    """How per-seed correlations relate to zero, by the seed-spread rule."""
    m, sd = X.mean_std(values)
    return "tracks" if m - sd > 0 else "runs against" if m + sd < 0 else "does not measurably track"


def below_chance(summary: dict, key: str) -> str:
    """The sets whose AUROC by `key` lies below 0.5 beyond the seed spread, with it."""
    return "; ".join(f"{name} (AUROC {X.pm(row[key], 3)})" for name, row in summary.items()
                     if name != IN and sum(X.mean_std(row[key])) < 0.5)  # fmt: skip


def verdicts(summary: dict) -> list[str]:
    """Per corrupted or OOD set: each VAE uncertainty score against the AE's recon.
    error on AUROC; the sets each VAE score finds more ordinary than the test images;
    then whether the VAE's uncertainty tracks its own error on the test images, and
    which of its two scores tracks it better."""
    out = []
    for name, row in summary.items():
        if name == IN:
            continue
        metric, ae = f"AUROC of {name} against the test images", row["ae/recon_sse/auroc"]
        for k, label in UNCERTAINTIES:
            a = row[f"vae/{k}/auroc"]
            out.append(X.verdict(metric, f"the VAE's {label}", a, "the AE's recon. error", ae,
                                 True, 3))  # fmt: skip
    for k, label in UNCERTAINTIES:
        below = below_chance(summary, f"vae/{k}/auroc")
        if below:
            out.append(f"The VAE's {label} is LOWER (more confident, or more likely) than on "
                       f"the test images, beyond the seed spread, on: {below}.")  # fmt: skip
    rho = summary[IN]
    for k, label in UNCERTAINTIES:
        r = rho[f"rho/{k}"]
        out.append(f"Calibration on the test images: the VAE's {label} {sign_word(r)} its own "
                   f"reconstruction error (Spearman rho {X.pm(r, 3)}).")  # fmt: skip
    metric = "Spearman rho with the VAE's own recon. error on the test images"
    out.append(X.verdict(metric, "posterior variance", rho["rho/posterior_var"], "the NLL",
                         rho["rho/nll_iwae"], True, 3))  # fmt: skip
    return out


def figure(path: str, first: dict) -> None:
    """Per score, the distribution of seed 0's per-image values in each set (log x)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    for ax, (m, k, label) in zip(axes.ravel(), SCORES, strict=True):
        values = {name: first[name][(m, k)] for name in first}
        pooled = np.concatenate(list(values.values()))
        lo = max(pooled.min(), 1e-4 * pooled.max(), 1e-12)
        bins = np.geomspace(lo, pooled.max() * 1.001, 50)
        for i, (name, v) in enumerate(values.items()):
            style = {"lw": 2.5 if name == IN else 1.2, "ls": "-" if i < 4 else "--"}
            ax.hist(np.maximum(v, lo), bins=bins, density=True, histtype="step", label=name,
                    color=f"C{i}", **style)  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{label} ({UNITS[k]})", fontsize=9)
        ax.set_yticks([])
    axes[0, 1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Per-image scores by input set (seed 0; dashed: out of distribution)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    p = X.parser(NAME, __doc__.splitlines()[0], epochs=10)
    p.add_argument("--n", type=int, default=DEFAULT_N, help="images per input set (quick: 320)")
    args = p.parse_args(argv)
    s = X.setting(NAME, args, argv)
    require(args.n >= 2, f"--n must be at least 2, got {args.n}")
    X.enable_compilation_cache(s.cache)
    data = X.load(s)
    n = min(args.n, QUICK_N) if s.quick else args.n
    sets = input_sets(data.dataset, n)
    res = X.Results(
        s,
        "What modelling uncertainty buys",
        "The standard latent-16 AE and VAE (MLP 400 hidden units, binarized inputs) "
        f"score clean, corrupted and out-of-distribution inputs ({n} images per set at "
        f"most); IWAE bounds use K = {s.iwae_k}. Posterior variance: exp(log_var) "
        "averaged over the latent dimensions; errors are squared errors summed over "
        "pixels, NLLs nats per image.",
    )
    per_seed = per_seed_scores(s, data, sets)
    summary = summaries(per_seed)
    header = ["input set (images)"] + [label for _, _, label in SCORES]
    size = lambda name: f"{name} ({len(sets[name])})"
    digits = {"posterior_var": 4, "nll_iwae": 1, "recon_sse": 1}
    rows = [
        [size(name)] + [X.pm(row[f"{m}/{k}/mean"], digits[k]) for m, k, _ in SCORES]
        for name, row in summary.items()
    ]
    res.table(
        "Mean score per input set",
        header,
        rows,
        "Corrupted sets are the first test images corrupted; gaussian noise is clipped to [0, 1].",
    )
    rows = [
        [size(name)] + [X.pm(row[f"{m}/{k}/auroc"], 3) for m, k, _ in SCORES]
        for name, row in summary.items()
        if name != IN
    ]
    res.table(
        "AUROC of each set against the clean test images",
        header,
        rows,
        "Higher score = more unusual; 0.5 is chance, below 0.5 the score finds the set "
        "more ordinary than the test images (reported as is). OOD digits stands in "
        "for MNIST.",
    )
    rows = [
        [size(name), X.pm(row["rho/posterior_var"], 3), X.pm(row["rho/nll_iwae"], 3)]
        for name, row in summary.items()
    ]
    res.table(
        "Does the VAE's uncertainty predict its own reconstruction error?",
        ["input set (images)", "rho(posterior var., recon. error)", "rho(NLL, recon. error)"],
        rows,
        "Spearman rank correlation over the images of each set, per seed.",
    )
    for v in verdicts(summary):
        res.verdict(v)
    figure(res.path("uncertainty.png"), per_seed[0])
    res.figure("uncertainty.png", "Per-image scores of each input set (seed 0, log scale)")
    res.data.update(
        n=n,
        iwae_k=s.iwae_k,
        corruptions=[
            {"name": a, "kind": b, "level": c, "clipped": True} for a, b, c in CORRUPTIONS
        ],
        set_sizes={name: len(x) for name, x in sets.items()},
        per_set=summary,
    )
    return res.write()


if __name__ == "__main__":
    sys.exit(X.run(main))
