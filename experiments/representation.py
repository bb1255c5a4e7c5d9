"""Representation: how much of the class an AE's, VAE's, beta-VAE's and VQ-VAE's code
makes easy to read, against the latent size, with PCA as the linear baseline.

The article: autoencoders learn features, a compressed representation of the input.
Measured per model, latent size L in {2, 8, 16, 32, 64} and seed: the test accuracy of
a linear probe (multinomial logistic regression on standardised codes) and of a k = 5
nearest-neighbour vote, both fitted on the codes of the first 10,000 training images
(--fit-size; the models train on all 60,000) and scored on the 10,000 test images.
The codes are the encoder's point estimate: the AE's code, the (beta-)VAE's posterior
mean, the VQ-VAE's quantised vectors. The baseline is PCA with L components of the
binarized training images the models train on (deterministic: one value), probed the
same way.

The VQ-VAE is made comparable in size: its code is L positions of code_dim = 1 number
each, quantised to one of 128 learned values (--vq-code-dim D gives L / D positions of
D numbers, so the probe always sees L numbers; sizes D does not divide are skipped).
Its autoregressive prior (stage two) is trained for one epoch with 32 hidden units: it
never touches the encoder or codebook, so the features do not depend on it.

Cost: 20 models of 3 seeds. To fit 20 minutes on 2 CPU cores the default is 3 epochs
per model (not the project's 10), and the probe and kNN fit on 10,000 training codes
(with all 60,000, about 8 minutes more). With --epochs 10 the AE and VAE at
L = 2 and 16 are the models that latent_2d.py and the other experiments share.
--quick: L = 16 only (whose AE and VAE are those of denoising.py).

    python experiments/representation.py [--quick] [--seeds 0,1,2] [--epochs 3]
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import scaffold as X

from aevae_jax.errors import require
from aevae_jax.evaluate import metrics as M

MODELS = ("ae", "vae", "beta_vae", "vqvae")
LABELS = {"ae": "AE", "vae": "VAE", "beta_vae": "beta-VAE", "vqvae": "VQ-VAE", "pca": "PCA"}
SIZES = (2, 8, 16, 32, 64)
QUICK_SIZES = (16,)  # one size: the quick AE and VAE are then those of denoising.py
EPOCHS = 3
FIT_SIZE = 10_000  # training codes that fit the probe and the kNN reference set
VQ_PRIOR = {"prior_epochs": 1, "prior_hidden": 32}  # the prior is not used for features
KNN_K = 5


def parse_sizes(text: str | None, quick: bool) -> tuple[int, ...]:
    if text is None:
        return QUICK_SIZES if quick else SIZES
    sizes = tuple(int(v) for v in text.split(",") if v.strip())
    require(sizes and all(1 <= v <= 784 for v in sizes), f"--sizes: bad list {text!r}")
    return sizes


def model_config(s: X.Setting, data: X.Data, name: str, size: int, code_dim: int):
    """The RunConfig of `name` with an L = `size` number code, or None where the VQ-VAE's
    code_dim does not divide it. AE, VAE and beta-VAE keep their default options, so
    that they are the models other experiments share."""
    if name != "vqvae":
        return X.run_config(s, data, name, latent_dim=size)
    if size % code_dim:
        return None
    options = {"code_dim": code_dim, **VQ_PRIOR}
    return X.run_config(s, data, name, latent_dim=size // code_dim, options=options)


def accuracies(fit_codes, test_codes, ds) -> dict[str, float]:
    """Linear-probe and kNN test accuracy of codes [N, L], fitted on the codes of the
    first len(fit_codes) training images."""
    fit_codes = np.asarray(fit_codes, np.float32)
    test_codes = np.asarray(test_codes, np.float32)
    y_fit = ds.y_train[: len(fit_codes)]
    return {
        "probe": M.linear_probe_accuracy(fit_codes, y_fit, test_codes, ds.y_test, ds.num_classes),
        "knn": M.knn_accuracy(fit_codes, y_fit, test_codes, ds.y_test, k=KNN_K),
    }


def model_accuracies(result, ds, fit_x, test_x) -> dict[str, float]:
    """Accuracies of one trained model's features (Encoding.features)."""
    from aevae_jax.evaluate.split import encode_split

    fit = encode_split(result.model, result.params, fit_x).features
    test = encode_split(result.model, result.params, test_x).features
    return accuracies(fit, test, ds)


def pca_accuracies(train_x, fit_size: int, test_x, ds, sizes) -> dict[int, dict[str, float]]:
    """Accuracies of PCA codes of every size, PCA fitted on all of train_x (one fit at
    the largest size: the components come by decreasing variance, so the first L of them
    are the L-component PCA)."""
    mean, comps, _ = M.pca_fit(np.asarray(train_x), max(sizes))
    fit = M.pca_project(np.asarray(train_x[:fit_size]), mean, comps)
    test = M.pca_project(np.asarray(test_x), mean, comps)
    return {L: accuracies(fit[:, :L], test[:, :L], ds) for L in sizes}


def vq_layout(code_dim: int) -> str:
    if code_dim == 1:
        return "L positions of one number each"
    return f"L / {code_dim} positions of {code_dim} numbers each"


def metric(size: int) -> str:
    return f"L = {size}, linear probe accuracy (%)"


def table(sizes, acc: dict, pca: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: a row per latent size, probe and kNN accuracy (%) of each model
    (mean ± std over seeds) and of PCA."""
    header = ["L"] + [f"{LABELS[m]} {k}" for m in (*MODELS, "pca") for k in ("probe", "kNN")]
    rows = []
    for L in sizes:
        row = [str(L)]
        for m in MODELS:
            cell = acc[m].get(L)
            row += [X.pm(cell[k], 1, 100) if cell else "—" for k in ("probe", "knn")]
        rows.append(row + [f"{100 * pca[L][k]:.1f}" for k in ("probe", "knn")])
    return header, rows


def verdicts(sizes, acc: dict, pca: dict) -> list[str]:
    """At each size, on the linear probe: the AE against the VAE, and every model
    against PCA (a single value, so the models' seed spread alone decides)."""
    out = []
    for L in sizes:
        if L in acc["ae"] and L in acc["vae"]:
            ae, vae = acc["ae"][L]["probe"], acc["vae"][L]["probe"]
            out.append(X.verdict(metric(L), "the AE", ae, "the VAE", vae, True, 1, 100))
        for m in MODELS:
            if L in acc[m]:
                ours, base = acc[m][L]["probe"], [pca[L]["probe"]]
                out.append(
                    X.verdict(metric(L), f"the {LABELS[m]}", ours, "PCA", base, True, 1, 100)
                )
    return out


def train_seconds(runs) -> float:
    """Training seconds of one model, all seeds (the epochs' times, without compile)."""
    return float(sum(row["epoch_seconds"] for r in runs for row in r.history))


def figure(path: str, sizes, acc: dict, pca: dict) -> None:
    """Accuracy against latent size (log scale), probe and kNN side by side: one line per
    model with the seed std as error bars, PCA dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in zip(axes, ("probe", "knn"), ("linear probe", f"kNN (k = {KNN_K})"),
                              strict=True):  # fmt: skip
        for name, by_size in acc.items():
            xs = [L for L in sizes if L in by_size]
            stats = [X.mean_std(by_size[L][key]) for L in xs]
            ys = [100 * m for m, _ in stats]
            errs = [100 * sd for _, sd in stats]
            ax.errorbar(xs, ys, yerr=errs, marker="o", ms=4, capsize=3, label=LABELS[name])
        ax.plot(sizes, [100 * pca[L][key] for L in sizes], "k--", marker="s", ms=4,
                label="PCA")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(sizes), [str(L) for L in sizes])
        ax.set_xlabel("latent size L (numbers per image)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = X.parser("representation", __doc__.splitlines()[0], epochs=EPOCHS)
    p.add_argument("--sizes", default=None,
                   help=f"latent sizes (default {','.join(map(str, SIZES))}; "
                   f"--quick: {','.join(map(str, QUICK_SIZES))})")  # fmt: skip
    p.add_argument("--fit-size", type=int, default=FIT_SIZE,
                   help="training codes that fit the probe and kNN (0: all)")  # fmt: skip
    p.add_argument("--vq-code-dim", type=int, default=1,
                   help="numbers per VQ-VAE code position (L / D positions)")  # fmt: skip
    args = p.parse_args(argv)
    s = X.setting("representation", args, argv)
    sizes = parse_sizes(args.sizes, s.quick)
    require(args.vq_code_dim >= 1, "--vq-code-dim must be a positive integer")
    require(args.fit_size >= 0, "--fit-size must be >= 0 (0: every training image)")
    X.enable_compilation_cache(s.cache)
    data = X.load(s)
    ds = data.dataset
    require(ds.y_train is not None, f"{s.dataset} has no labels to probe")
    train_x, test_x = X.inputs(ds.x_train, split="train"), X.inputs(ds.x_test)
    fit_size = min(args.fit_size or len(train_x), len(train_x))
    fit_x = train_x[:fit_size]
    res = X.Results(
        s,
        "Features: linear probe and kNN accuracy of the codes against latent size",
        "MLP 400 hidden units, binarized Fashion-MNIST, every model trained on the whole "
        f"training split. The codes of the first {fit_size} training images fit the probe "
        f"and the kNN (k = {KNN_K}) reference set; accuracy on the test split. "
        f"The VQ-VAE's code: {vq_layout(args.vq_code_dim)}, from a codebook of 128; its "
        "prior is trained for 1 epoch with 32 hidden units (it does not change the "
        "features).",
    )
    acc: dict[str, dict[int, dict[str, list[float]]]] = {m: {} for m in MODELS}
    seconds: dict[str, dict[int, float]] = {m: {} for m in MODELS}
    for name in MODELS:
        for L in sizes:
            cfg = model_config(s, data, name, L, args.vq_code_dim)
            if cfg is None:
                continue
            runs = X.trained(s, data, cfg)
            per_seed = [model_accuracies(r, ds, fit_x, test_x) for r in runs]
            acc[name][L] = {k: [m[k] for m in per_seed] for k in ("probe", "knn")}
            seconds[name][L] = train_seconds(runs)
    pca = pca_accuracies(train_x, fit_size, test_x, ds, sizes)

    res.table(
        "Test accuracy (%) of the codes, by latent size",
        *table(sizes, acc, pca),
        "PCA is deterministic (one value). '—': a size the VQ-VAE's code_dim does not divide.",
    )
    for sentence in verdicts(sizes, acc, pca):
        res.verdict(sentence)
    figure(res.path("representation.png"), sizes, {m: acc[m] for m in MODELS if acc[m]}, pca)
    res.figure(
        "representation.png",
        "Test accuracy of a linear probe and a kNN vote on the codes against latent size "
        "(mean ± std over seeds; PCA dashed)",
    )
    res.data.update(
        sizes=list(sizes),
        vq_code_dim=args.vq_code_dim,
        vq_options=dict(VQ_PRIOR),
        knn_k=KNN_K,
        fit_size=fit_size,
        accuracy={m: {str(L): v for L, v in acc[m].items()} for m in MODELS},
        pca={str(L): v for L, v in pca.items()},
        train_seconds={m: {str(L): v for L, v in seconds[m].items()} for m in MODELS},
    )
    return res.write()


if __name__ == "__main__":
    sys.exit(X.run(main))
