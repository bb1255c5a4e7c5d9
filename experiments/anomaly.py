"""Anomaly and out-of-distribution detection by AE reconstruction error and VAE likelihood.

Is an autoencoder's reconstruction error or a VAE's likelihood the better alarm?

The article lists anomaly detection among the applications of both models: an AE
flags inputs it reconstructs badly, a VAE inputs it finds unlikely. Two protocols:

1. One-class Fashion-MNIST. For each class c, every model trains on the 6,000
   training images of class c only, then scores the whole test set (10,000 images);
   the AUROC tells class c (normal) from the nine other classes (anomalous), per
   class and averaged over classes. Models and scores (higher = more anomalous):
   the AE (reconstruction error), the VAE (negative ELBO, K = 1; IWAE NLL bound,
   K = --iwae-k; and its reconstruction error through the posterior mean), the
   denoising AE `dae` (reconstruction error; trained on 20% salt-and-pepper) and the
   VQ-VAE (its NLL bound -log p(x | z_q) - log p_prior(k), and its reconstruction
   error). All are the project's MLP defaults with a 16-d code (for the VQ-VAE,
   16 positions).
2. Out of distribution. The standard latent-16 AE and VAE trained on all of
   Fashion-MNIST (shared with the other experiments) score the Fashion-MNIST test set
   (in) against each set of `aevae_jax.data.ood` (out). MNIST cannot be downloaded here:
   its stand-in is "digits", scikit-learn's 1,797 real 8 x 8 handwritten digits
   enlarged to 20 x 20 and centred in a 28 x 28 frame as MNIST does; the others are
   greyscale photograph patches ("photos"), uniform noise ("noise") and the
   Fashion-MNIST test images upside down ("flipped"). Nalisnick et al. (2019) found
   that likelihood models can give such sets HIGHER likelihood than their own test
   data; an AUROC below 0.5 means exactly that (the model prefers the OOD set), and is
   reported as it is, never flipped.

Every image is scored as the models see them: binarized by the evaluator's fixed draw
(`experiment.inputs`), the OOD sets included. AUROCs are mean ± std over seeds; a
verdict calls a difference only beyond the seed spread. "Best score" of a model is
the one with the highest mean AUROC over classes (a selection made on these same
numbers).

Budget (15 minutes on a 2-core CPU): the IWAE bound uses K = 20 by default (at
K = 100 the 30 IWAE passes over the test set, one per class and seed, alone would take
about 6 minutes); the VQ-VAE's prior trains for 5 epochs, not 10 (a prior epoch costs
2.6 main-stage epochs; in a probe on class 0 the prior's training NLL was 9.95 nats
after 5 epochs and 9.03 after 10); each OOD set is cut to 2,000 images (evenly
spaced; "flipped" flips 2,000 of the test images). One-class sets of every class are
cut to the smallest class's counts, so all classes of a model share one program.

--quick trains only the VAE (its three scores) on classes 0 and 1, with batch 32 (a
quick class has about 100 images), and scores at most 512 images of each OOD set (the
quick test split's size: every scored array has one shape, one compiled program);
the test suite's time goes to compiling, so each model left out saves it.

    python experiments/anomaly.py [--quick] [--models ae,vae,dae,vqvae] [--classes 0,...,9]
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import scaffold as X

from aevae_jax.data.ood import ood_sets, score_sets
from aevae_jax.errors import UserError, require
from aevae_jax.evaluate import metrics as M

NAME = "anomaly"
DEFAULT_IWAE_K, DEFAULT_OOD_N = 20, 2000
MODELS = ("ae", "vae", "dae", "vqvae")
QUICK_MODELS, QUICK_CLASSES, QUICK_OOD_N, QUICK_BATCH = ("vae",), (0, 1), 512, 32
# The per-image scores each model is judged by, with their labels.
SCORES = {
    "ae": (("recon_sse", "recon. error"),),
    "vae": (("neg_elbo", "-ELBO"), ("nll_iwae", "NLL (IWAE)"), ("recon_sse", "recon. error")),
    "dae": (("recon_sse", "recon. error"),),
    "vqvae": (("neg_elbo", "NLL bound"), ("recon_sse", "recon. error")),
}
OOD_MODELS = ("ae", "vae")
VQ_OPTIONS = {"prior_epochs": 5}  # half the default: the prior stage is 40% of the budget
UNITS = {"recon_sse": "squared error per image", "nll_iwae": "nats per image"}
OOD_NOTE = (
    "In: the Fashion-MNIST test set. Out: digits = scikit-learn's 8 x 8 handwritten "
    "digits enlarged to 20 x 20 in a 28 x 28 frame (the stand-in for MNIST, which cannot "
    "be downloaded here); photos = grey 28 x 28 patches of scikit-learn's two sample "
    "photographs; noise = uniform noise; flipped = the Fashion-MNIST test images upside "
    "down. AUROC below 0.5: the model scores the OOD set as more normal than its own "
    "test data (not flipped)."
)


def score_key(seed: int) -> jax.Array:
    """The key of a seed's stochastic scores (-ELBO, IWAE), the same for every class."""
    return jax.random.key(seed)


def one_class(ds, c: int, n_train: int, n_test: int):
    """The first n_train training and n_test test images of class c (the test images
    only monitor training)."""
    tr = np.flatnonzero(ds.y_train == c)[:n_train]
    te = np.flatnonzero(ds.y_test == c)[:n_test]
    return dataclasses.replace(
        ds,
        x_train=ds.x_train[tr],
        y_train=ds.y_train[tr],
        x_test=ds.x_test[te],
        y_test=ds.y_test[te],
    )


def class_sizes(ds, classes) -> tuple[int, int]:
    """The smallest training and test counts among `classes`: every one-class set is
    cut to them, so that all classes of a model run one compiled program (Fashion-MNIST
    is balanced: 6,000 and 1,000)."""
    for c in classes:
        require(
            np.any(ds.y_train == c) and np.any(ds.y_test == c),
            f"--classes: class {c} has no training or no test image",
        )
    count = lambda y: min(int(np.sum(y == c)) for c in classes)
    return count(ds.y_train), count(ds.y_test)


def parse_list(text: str, allowed, what: str, cast=str) -> tuple:
    """A comma-separated option as a tuple, each entry checked against `allowed`."""
    try:
        items = tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--{what} must be a comma-separated list, got {text!r}") from None
    bad = [str(v) for v in items if v not in allowed]
    require(
        items and not bad,
        f"--{what}: unknown {', '.join(bad) or 'empty list'}; "
        f"choose from {', '.join(map(str, allowed))}",
    )
    return items


def model_scores(s: X.Setting, result, x, name: str) -> dict[str, np.ndarray]:
    """The per-image scores `SCORES[name]` of one trained seed on inputs x."""
    k = s.iwae_k if any(key == "nll_iwae" for key, _ in SCORES[name]) else 0
    out = X.scores(result, x, score_key(result.seed), k, progress=s.progress)
    return {key: out[key] for key, _ in SCORES[name]}


def class_aurocs(scores: dict[str, np.ndarray], normal: np.ndarray) -> dict[str, float]:
    """AUROC of each score: normal images (mask) against the rest."""
    return {k: M.auroc(v[normal], v[~normal]) for k, v in scores.items()}


def ood_aurocs(in_scores: dict, out_scores: dict) -> dict[str, float]:
    """AUROC of each score: in-distribution (normal) against one OOD set (anomalous)."""
    return {k: M.auroc(in_scores[k], out_scores[k]) for k in in_scores}


def column_names(models) -> list[tuple[str, str, str]]:
    """(model, score key, label) of every column the tables show."""
    return [(m, k, f"{m.upper()} {label}") for m in models for k, label in SCORES[m]]


def one_class_protocol(s, data, models, classes, test_x) -> dict:
    """{model: {score: {class: [AUROC per seed]}}}: each model trained on each class."""
    ds = data.dataset
    batch = {"batch_size": QUICK_BATCH} if s.quick else {}
    table = {m: {k: {} for k, _ in SCORES[m]} for m in models}
    n_train, n_test = class_sizes(ds, classes)
    options = lambda m: VQ_OPTIONS if m == "vqvae" else {}
    for c in classes:
        tag = f"class{c}-{n_train}-{n_test}"
        cls = X.derived(data, one_class(ds, c, n_train, n_test), tag, s.cache)
        normal = ds.y_test == c
        for m in models:
            for r in X.trained(s, cls, X.run_config(s, cls, m, options=options(m), **batch)):
                for k, v in class_aurocs(model_scores(s, r, test_x, m), normal).items():
                    table[m][k].setdefault(c, []).append(v)
    return table


def ood_protocol(s, data, test_x, sets) -> tuple[dict, dict]:
    """({model: {score: {set: [AUROC per seed]}}}, {model: {set or 'in': seed 0's scores}})
    for the standard AE and VAE trained on all the data."""
    table = {m: {k: {n: [] for n in sets} for k, _ in SCORES[m]} for m in OOD_MODELS}
    first = {}
    inputs = {"in": test_x, **{n: X.inputs(x) for n, x in sets.items()}}
    for m in OOD_MODELS:
        for r in X.trained(s, data, X.run_config(s, data, m)):
            scored = score_sets(lambda x, r=r, m=m: model_scores(s, r, x, m), inputs)
            for n in sets:
                for k, v in ood_aurocs(scored["in"], scored[n]).items():
                    table[m][k][n].append(v)
            first.setdefault(m, scored)
    return table, first


def seed_means(per_class: dict) -> np.ndarray:
    """{class: [AUROC per seed]} -> [mean over classes per seed]."""
    return np.mean(np.array(list(per_class.values())), axis=0)


def best_score(table: dict, m: str) -> tuple[str, np.ndarray]:
    """A model's score with the highest mean AUROC over classes and seeds, and its
    per-seed means over classes."""
    means = {k: seed_means(v) for k, v in table[m].items()}
    k = max(means, key=lambda key: means[key].mean())
    return k, means[k]


def label_of(m: str, k: str) -> str:
    return f"the {m.upper()}'s {dict(SCORES[m])[k]}"


# Comparisons of mean one-class AUROC, made when both models were trained:
# (what is compared, a's name, (model, score), b's name, (model, score)).
ONE_CLASS_PAIRS = (
    ("both by recon. error", "the AE", ("ae", "recon_sse"), "the VAE", ("vae", "recon_sse")),
    ("the VAE", "-ELBO (K = 1)", ("vae", "neg_elbo"), "the IWAE NLL bound", ("vae", "nll_iwae")),
    ("the VAE", "the NLL bound", ("vae", "nll_iwae"), "the recon. error", ("vae", "recon_sse")),
    ("by recon. error", "the AE", ("ae", "recon_sse"), "the denoising AE", ("dae", "recon_sse")),
    ("the VQ-VAE", "its NLL bound", ("vqvae", "neg_elbo"), "its recon. error",
     ("vqvae", "recon_sse")),
    ("likelihoods", "the VAE's IWAE NLL", ("vae", "nll_iwae"), "the VQ-VAE's NLL bound",
     ("vqvae", "neg_elbo")),
)  # fmt: skip


def one_class_verdicts(table: dict) -> list[str]:
    """AE against VAE, each by its best score, then every pair of ONE_CLASS_PAIRS whose
    models are present; all on the per-seed means over classes."""
    metric = "mean one-class AUROC"
    mean = lambda mk: seed_means(table[mk[0]][mk[1]])
    out = []
    if "ae" in table and "vae" in table:
        kb, vb = best_score(table, "vae")
        ae = mean(("ae", "recon_sse"))
        sentence = X.verdict(f"{metric}, each model by its best score", "the AE's recon. error",
                             ae, label_of("vae", kb), vb, True, 3)  # fmt: skip
        out.append(sentence)
    for what, a_name, a, b_name, b in ONE_CLASS_PAIRS:
        if a[0] in table and b[0] in table:
            out.append(X.verdict(f"{metric}, {what}", a_name, mean(a), b_name, mean(b), True, 3))
    return out


def chance_sentence(set_name: str, below: list[tuple[str, list]]) -> str:
    """The scores whose AUROC on an OOD set lies below 0.5 beyond the seed spread."""
    listed = "; ".join(f"{name} {X.pm(v, 3)}" for name, v in below)
    return (
        f"OOD {set_name}: ranked as MORE normal than the Fashion-MNIST test images "
        f"(AUROC below 0.5 beyond the seed spread) by {listed}; Nalisnick et al. (2019) "
        "report this for likelihoods."
    )


def ood_verdicts(table: dict, set_names) -> list[str]:
    """Per OOD set: the AE's recon. error against the VAE's best score on that set,
    -ELBO against IWAE, and the scores with an AUROC below chance."""
    out = []
    for n in set_names:
        vae = {k: table["vae"][k][n] for k, _ in SCORES["vae"]}
        kb = max(vae, key=lambda k: np.mean(vae[k]))
        ae = table["ae"]["recon_sse"][n]
        metric = f"OOD AUROC on {n}"
        out.append(X.verdict(metric, "the AE's recon. error", ae, label_of("vae", kb), vae[kb],
                             True, 3))  # fmt: skip
        out.append(X.verdict(f"{metric}, the VAE", "-ELBO (K = 1)", vae["neg_elbo"],
                             "the IWAE NLL bound", vae["nll_iwae"], True, 3))  # fmt: skip
        below = [(label_of(m, k), table[m][k][n]) for m, k, _ in column_names(OOD_MODELS)
                 if sum(X.mean_std(table[m][k][n])) < 0.5]  # fmt: skip
        if below:
            out.append(chance_sentence(n, below))
    return out


def bar_chart(
    ax, groups: list[str], series: dict[str, list], title: str, bottom: float = 0.0
) -> None:
    """Grouped bars: one group per entry of `groups`, one bar per series, each bar the
    mean over seeds with a ± std error bar; a dashed line at chance (0.5)."""
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (label, per_group) in enumerate(series.items()):
        stats = np.array([X.mean_std(v) for v in per_group])
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            stats[:, 0],
            width,
            yerr=stats[:, 1],
            capsize=2,
            label=label,
        )
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(bottom, 1)
    ax.set_ylabel("AUROC")
    ax.set_title(title, fontsize=10)


def one_class_figure(path: str, table: dict, models, classes, class_names) -> None:
    import matplotlib.pyplot as plt

    groups = [class_names[c] for c in classes] + ["mean"]
    series = {
        label: [table[m][k][c] for c in classes] + [seed_means(table[m][k])]
        for m, k, label in column_names(models)
    }
    fig, ax = plt.subplots(figsize=(max(8, 0.25 * len(groups) * len(series) + 2), 4.5))
    lowest = min(np.min(v) for per_group in series.values() for v in per_group)
    bottom = min(0.5, np.floor(10 * lowest - 0.5) / 10)  # room below the lowest bar
    bar_chart(ax, groups, series, "One-class AUROC (class c normal, the rest anomalous)", bottom)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ood_figure(path: str, table: dict, first: dict, set_names) -> None:
    """AUROC bars per OOD set and score, then histograms (seed 0) of the AE's recon.
    error and the VAE's NLL bound, in-distribution against each set."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    series = {
        label: [table[m][k][n] for n in set_names] for m, k, label in column_names(OOD_MODELS)
    }
    bar_chart(axes[0], list(set_names), series, "OOD AUROC (in: Fashion-MNIST test)")
    axes[0].legend(fontsize=7)
    for ax, (m, k) in zip(axes[1:], (("ae", "recon_sse"), ("vae", "nll_iwae")), strict=True):
        groups = {"in (test)": first[m]["in"][k], **{n: first[m][n][k] for n in set_names}}
        values = np.concatenate(list(groups.values()))
        lo, hi = max(values.min(), 1e-3), values.max()
        bins = np.geomspace(lo, hi, 60)
        for label, v in groups.items():
            ax.hist(np.maximum(v, lo), bins=bins, histtype="step", density=True, label=label)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{m.upper()} {dict(SCORES[m])[k]} ({UNITS[k]})")
        ax.set_title(f"{m.upper()} {dict(SCORES[m])[k]}, seed 0", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pm_row(label: str, cells) -> list[str]:
    return [label] + [X.pm(v, 3) for v in cells]


def report_one_class(res, table: dict, models, classes, class_names) -> None:
    """The one-class table, verdicts, figure and numbers."""
    cols = column_names(models)
    rows = [pm_row(class_names[c], [table[m][k][c] for m, k, _ in cols]) for c in classes]
    rows.append(pm_row("**mean over classes**", [seed_means(table[m][k]) for m, k, _ in cols]))
    header = ["normal class", *[label for _, _, label in cols]]
    res.table("One-class AUROC per normal class", header, rows, "Higher is better; 0.5 is chance.")
    for v in one_class_verdicts(table):
        res.verdict(v)
    one_class_figure(res.path("anomaly_one_class.png"), table, models, classes, class_names)
    res.figure("anomaly_one_class.png", "One-class AUROC per normal class and score (± std)")
    res.data.update(
        models=list(models),
        classes=list(classes),
        one_class_auroc={f"{m}/{k}": {class_names[c]: v for c, v in table[m][k].items()}
                         for m, k, _ in cols},
        mean_auroc={f"{m}/{k}": seed_means(table[m][k]) for m, k, _ in cols},
    )  # fmt: skip


def report_ood(res, table: dict, first: dict, sets: dict) -> None:
    """The out-of-distribution table, verdicts, figure and numbers."""
    cols = column_names(OOD_MODELS)
    rows = [
        pm_row(f"{n} ({len(x)})", [table[m][k][n] for m, k, _ in cols]) for n, x in sets.items()
    ]
    header = ["OOD set (images)", *[label for _, _, label in cols]]
    res.table("Out-of-distribution AUROC (standard models, all classes)", header, rows, OOD_NOTE)
    for v in ood_verdicts(table, list(sets)):
        res.verdict(v)
    ood_figure(res.path("anomaly_ood.png"), table, first, list(sets))
    res.figure("anomaly_ood.png", "OOD AUROC per set and score; score histograms of seed 0")
    res.data.update(
        ood_sets={n: len(x) for n, x in sets.items()},
        ood_auroc={f"{m}/{k}": table[m][k] for m, k, _ in cols},
    )


def main(argv=None) -> dict:
    p = X.parser(NAME, __doc__.splitlines()[0], epochs=10, iwae_k=DEFAULT_IWAE_K)
    p.add_argument("--models", default=",".join(MODELS), help="one-class models (quick: vae)")
    p.add_argument("--classes", default=None, help="one-class classes (default all; quick 0,1)")
    p.add_argument("--ood-n", type=int, default=DEFAULT_OOD_N,
                   help="at most this many images of each OOD set (quick: 512)")  # fmt: skip
    args = p.parse_args(argv)
    s = X.setting(NAME, args, argv)
    X.enable_compilation_cache(s.cache)
    data = X.load(s)
    ds = data.dataset
    require(ds.y_train is not None, "the one-class protocol needs a labelled data set")
    models = parse_list(args.models, MODELS, "models")
    if s.quick and args.models == p.get_default("models"):
        models = QUICK_MODELS
    all_classes = tuple(range(ds.num_classes))
    classes = QUICK_CLASSES if s.quick else all_classes
    if args.classes:
        classes = parse_list(args.classes, all_classes, "classes", int)
    require(args.ood_n >= 1, f"--ood-n must be at least 1, got {args.ood_n}")
    ood_n = min(args.ood_n, QUICK_OOD_N) if s.quick else args.ood_n
    class_names = list(ds.class_names or map(str, all_classes))
    test_x = X.inputs(ds.x_test)
    n_train = class_sizes(ds, classes)[0]
    batch = QUICK_BATCH if s.quick else X.run_config(s, data, "ae").batch_size

    res = X.Results(
        s,
        "Anomaly and out-of-distribution detection",
        "One-class Fashion-MNIST: each model trains on the first "
        f"{n_train} training images of one class (batch {batch}) and scores the whole test "
        f"set ({len(ds.x_test)} images); AUROC of that class (normal) against the other "
        "classes (anomalous), higher scores meaning more anomalous. Then the standard "
        "latent-16 AE and VAE, trained on every class, against out-of-distribution sets. "
        f"IWAE bounds use K = {s.iwae_k}. MLP 400 hidden units, 16-d codes (the VQ-VAE: "
        f"16 positions, 128 codes, {VQ_OPTIONS['prior_epochs']} prior epochs), binarized inputs.",
    )
    table = one_class_protocol(s, data, models, classes, test_x)
    report_one_class(res, table, models, classes, class_names)
    sets = ood_sets(ood_n, ds.x_test)
    ood_table, first = ood_protocol(s, data, test_x, sets)
    report_ood(res, ood_table, first, sets)
    res.data["iwae_k"] = s.iwae_k
    return res.write()


if __name__ == "__main__":
    sys.exit(X.run(main))
