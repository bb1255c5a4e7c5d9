"""New images from every generative model: how good are the samples a model's prior
gives, and does an AE need one?

The article: VAEs are made for generation, because their KL term makes N(0, I) a prior
whose samples decode to plausible images, while an AE's codes follow no known
distribution. Tested here on binarized Fashion-MNIST (MLP 400 hidden units, latent 16,
every model the same --epochs): the VAE, the beta-VAE (beta 4), the IWAE (k 5), the
VQ-VAE with its learned autoregressive prior over codes (trained 3 more epochs over the
frozen codes), the conditional VAE (labels cycling over the classes), the adversarial AE
(N(0, I) codes through its decoder), and the standard AE with two samplers: N(0, I)
codes, and the ex-post Gaussian fitted to its training codes (Ghosh et al. 2020), the
cheap fix for AEs.

Epochs: 10, as in every experiment, so the AE, VAE and beta-VAE are the very models
(configs) of the other experiments and are read back from the cache when one of them
trained them first (experiments/run_all.sh's order). The IWAE's steps and the VQ-VAE's
prior epochs cost several VAE steps each: most of this script's runtime.

Measured per model and seed, in the features of the domain classifier (a small CNN
trained once on the training images): the Frechet distance of the decoded means of
10,000 prior samples to the 10,000 test images, and improved precision (fidelity:
samples inside the real images' k-NN manifold) and recall (coverage: real images inside
the samples' manifold; Kynkaanniemi et al. 2019, k = 3) of 5,000 samples against 5,000
test images; and, where the model defines a likelihood, the IWAE bound on the test NLL
(K = --iwae-k, on the first --nll-images test images; the VQ-VAE's is the bound through
its single code and its learned prior). Training images scored like samples show what
real data reaches. The figures show seed 0.

--quick trains only the VAE and the AE (both of its samplers) and scores 512 samples.

    python experiments/generation.py [--quick] [--models vae,ae,...] [--samples 10000]
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import scaffold as X

from aevae_jax.errors import require
from aevae_jax.evaluate import metrics as M


@dataclasses.dataclass(frozen=True)
class Spec:
    """A generative model of the experiment and the samplers it is scored with."""

    key: str  # its name in --models
    model: str  # the registered model
    options: tuple[tuple[str, object], ...]
    label: str
    samplers: tuple[str, ...] = ("prior",)  # "prior": prior_images; "expost": ex-post Gaussian


# The standard AE and VAE (default options) are the configs other experiments share at
# the same epochs; the beta-VAE's {"beta": 4.0} is rate_distortion.py's beta-4 point.
MODELS = (
    Spec("vae", "vae", (), "VAE"),
    Spec("beta_vae", "beta_vae", (("beta", 4.0),), "beta-VAE (beta 4)"),
    Spec("iwae", "iwae", (("k", 5),), "IWAE (k 5)"),
    Spec("vqvae", "vqvae", (("prior_epochs", 3),), "VQ-VAE (AR prior)"),
    Spec("cvae", "cvae", (), "CVAE"),
    Spec("aae", "aae", (), "AAE"),
    Spec("ae", "ae", (), "AE", ("prior", "expost")),
)
QUICK_MODELS = "vae,ae"
SAMPLER_KEYS = {"prior": 0, "expost": 1}  # fold_in indices of each sampler's draw
GRID = 8  # images per row of the sample figure


def row_key(spec: Spec, sampler: str) -> str:
    return spec.key if spec.samplers == ("prior",) else f"{spec.key}_{sampler}"


def row_label(spec: Spec, sampler: str) -> str:
    if spec.samplers == ("prior",):
        return spec.label
    return f"{spec.label}, " + ("z ~ N(0, I)" if sampler == "prior" else "ex-post Gaussian")


def who(label: str) -> str:
    """A row's label as the subject of a verdict sentence."""
    return "the " + label.replace(", ex-post", " with its ex-post").replace(", z", " with z")


def selected(models: str) -> list[Spec]:
    by_key = {m.key: m for m in MODELS}
    names = [n.strip() for n in models.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_key]
    require(
        bool(names) and not unknown,
        f"--models takes a comma list of {', '.join(by_key)}; got {models!r}",
    )
    return [m for m in MODELS if m.key in names]  # the table's order


def generate(result, sampler: str, key: jax.Array, n: int, train_x, num_classes: int):
    """n images [n, H, W, C] in [0, 1] from a trained model: its prior (labels cycling
    over the classes for a conditional model), or the ex-post Gaussian of its training
    codes."""
    from aevae_jax.evaluate.samplers import decode_samples, expost_gaussian, prior_images
    from aevae_jax.evaluate.split import encode_split

    model, params = result.model, result.params
    if sampler == "expost":
        codes = encode_split(model, params, train_x).features
        return decode_samples(model, params, expost_gaussian(codes), key, n)
    y = (jnp.arange(n) % num_classes) if model.conditional else None
    return prior_images(model, params, key, n, y)


def sample_scores(features: np.ndarray, reference: np.ndarray, n_pr: int) -> dict:
    """FD of sample features to the reference (test) features, and precision and recall
    of the first n_pr of each."""
    pr = M.precision_recall(reference[:n_pr], features[:n_pr], k=3)
    return {
        "fd": M.frechet_distance(features, reference),
        "precision": pr["precision"],
        "recall": pr["recall"],
    }


def nll(result, x, y, key: jax.Array, iwae_k: int) -> float | None:
    """Mean IWAE bound on the NLL of test inputs x (nats), None without a likelihood."""
    if result.model.log_importance_weights is None:
        return None
    y = y if result.model.conditional else None
    return float(X.scores(result, x, key, iwae_k, y=y)["nll_iwae"].mean())


def pr_figure(path: str, per_seed: dict, labels: dict, reference: dict) -> None:
    """Precision against recall, mean ± std over seeds, one labelled point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 5.0))
    for name, runs in per_seed.items():
        (r, r_sd), (p, p_sd) = (X.mean_std([m[k] for m in runs]) for k in ("recall", "precision"))
        ax.errorbar(r, p, xerr=r_sd, yerr=p_sd, fmt="o", capsize=3, label=labels[name])
    ax.scatter(
        [reference["recall"]],
        [reference["precision"]],
        marker="*",
        s=120,
        c="k",
        label="training images (reference)",
    )
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("recall (coverage of the test images)")
    ax.set_ylabel("precision (samples on the test images' manifold)")
    ax.set_title("Improved precision and recall (k = 3), domain-classifier features", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_parser_options(p) -> None:
    p.add_argument(
        "--models",
        default=None,
        help=f"comma list of {', '.join(m.key for m in MODELS)} (default: all; "
        f"--quick: {QUICK_MODELS})",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=10_000,
        help="prior samples per model and seed for the FD (--quick: 512)",
    )
    p.add_argument(
        "--pr-samples",
        type=int,
        default=5_000,
        help="samples and test images compared by precision and recall",
    )
    p.add_argument("--nll-images", type=int, default=1_000, help="test images of the IWAE NLL")


def main(argv=None) -> dict:
    p = X.parser("generation", __doc__.splitlines()[0], epochs=10)
    add_parser_options(p)
    args = p.parse_args(argv)
    s = X.setting("generation", args, argv)
    require(
        min(args.samples, args.pr_samples, args.nll_images) >= 4,
        "--samples, --pr-samples and --nll-images must be at least 4",
    )
    X.enable_compilation_cache(s.cache)
    specs = selected(args.models or (QUICK_MODELS if s.quick else ",".join(m.key for m in MODELS)))
    data = X.load(s)
    ds = data.dataset
    n = min(args.samples, 512) if s.quick else args.samples
    n_pr = min(args.pr_samples, n, len(ds.x_test))
    n_nll = min(args.nll_images, len(ds.x_test))
    train_x, test_x = X.inputs(ds.x_train, split="train"), X.inputs(ds.x_test)
    y_test = jnp.asarray(ds.y_test)

    from aevae_jax.evaluate.classifier import load_or_train_classifier
    from aevae_jax.study.figures import image_rows

    clf = load_or_train_classifier(ds, progress=s.progress)
    require(clf is not None, "the generation experiment needs a labelled data set")
    reference = clf.features(jnp.asarray(ds.x_test))
    n_real = min(n, len(ds.x_train))
    real = sample_scores(clf.features(jnp.asarray(ds.x_train[:n_real])), reference, n_pr)

    res = X.Results(
        s,
        "Sampling new images from every generative model",
        f"Latent 16, MLP 400 hidden units, binarized Fashion-MNIST. Per model and seed: "
        f"{n:,} samples (decoder means) scored against the {len(ds.x_test):,} test images "
        f"in the features of the domain classifier (test accuracy "
        f"{100 * clf.test_accuracy:.1f}%): Frechet distance (FD), and improved precision "
        f"and recall (k = 3) of {n_pr:,} samples against {n_pr:,} test images; IWAE bound "
        f"on the test NLL (K = {s.iwae_k}) on the first {n_nll:,} test images.",
    )
    per_seed: dict[str, list[dict]] = {}
    labels: dict[str, str] = {}
    nlls: dict[str, list] = {}
    grid_rows: list[np.ndarray] = []
    for spec in specs:
        cfg = X.run_config(s, data, spec.model, options=dict(spec.options))
        runs = X.trained(s, data, cfg)
        nlls[spec.key] = [
            nll(
                r,
                test_x[:n_nll],
                y_test[:n_nll],
                jax.random.fold_in(jax.random.key(r.seed), 2),
                s.iwae_k,
            )
            for r in runs
        ]
        for sampler in spec.samplers:
            name = row_key(spec, sampler)
            labels[name] = row_label(spec, sampler)
            per_seed[name] = []
            for r, seed_nll in zip(runs, nlls[spec.key], strict=True):
                key = jax.random.fold_in(
                    jax.random.fold_in(jax.random.key(r.seed), 1), SAMPLER_KEYS[sampler]
                )
                images = generate(r, sampler, key, n, train_x, ds.num_classes)
                feats = clf.features(images)
                per_seed[name].append(
                    {**sample_scores(feats, reference, n_pr), "nll_iwae": seed_nll}
                )
                if r is runs[0]:
                    grid_rows.append(np.asarray(images[:GRID]))

    rows = []
    for name, runs in per_seed.items():
        values = [m["nll_iwae"] for m in runs]
        rows.append(
            [
                labels[name],
                X.pm([m["fd"] for m in runs], 2),
                X.pm([m["precision"] for m in runs], 3),
                X.pm([m["recall"] for m in runs], 3),
                "n/a" if values[0] is None else X.pm(values, 2),
            ]
        )
    rows.append(
        [
            "training images (reference)",
            f"{real['fd']:.2f}",
            f"{real['precision']:.3f}",
            f"{real['recall']:.3f}",
            "n/a",
        ]
    )
    res.table(
        "Samples against the test images",
        ["model, sampler", "FD (lower better)", "precision", "recall", f"NLL, K = {s.iwae_k}"],
        rows,
        "FD, precision and recall in the domain classifier's 128 features; the reference "
        f"row scores {n_real:,} training images like samples (one value, no seeds). NLL: "
        "nats per test image, IWAE bound; the CVAE's is -log p(x | y), given the label, so "
        "not comparable with the others'; the VQ-VAE's is through its single code and its "
        "learned prior; n/a: the model defines no likelihood.",
    )
    verdicts(res, per_seed, labels)
    image_rows(
        res.path("samples.png"),
        grid_rows,
        [labels[k] for k in per_seed],
        "New images: decoder means of sampled codes (seed 0)",
    )
    res.figure("samples.png", "Samples of every model and sampler (seed 0; CVAE labels 0-7)")
    pr_figure(res.path("precision_recall.png"), per_seed, labels, real)
    res.figure("precision_recall.png", "Precision against recall, mean ± std over seeds")
    res.data.update(
        per_seed=per_seed,
        labels=labels,
        reference=real,
        samples=n,
        pr_samples=n_pr,
        nll_images=n_nll,
        iwae_k=s.iwae_k,
        classifier_accuracy=clf.test_accuracy,
        configs={spec.key: dict(spec.options) for spec in specs},
    )
    return res.write()


def verdicts(res: X.Results, per_seed: dict, labels: dict) -> None:
    """The VAE against the AE's two samplers on FD, precision and recall; the AE's
    ex-post sampler against N(0, I); every other model against the VAE on FD and NLL."""
    metrics = (
        ("fd", "sample FD", False, 2),
        ("precision", "precision", True, 3),
        ("recall", "recall", True, 3),
    )
    get = lambda name, k: [m[k] for m in per_seed[name]]
    pairs = [("vae", "ae_prior"), ("vae", "ae_expost"), ("ae_expost", "ae_prior")]
    for a, b in pairs:
        if a in per_seed and b in per_seed:
            for k, text, higher, digits in metrics:
                res.verdict(
                    X.verdict(
                        text, who(labels[a]), get(a, k), who(labels[b]), get(b, k), higher, digits
                    )
                )
    if "vae" not in per_seed:
        return
    for name in per_seed:
        if name in ("vae", "ae_prior", "ae_expost"):
            continue
        res.verdict(
            X.verdict(
                "sample FD",
                who(labels[name]),
                get(name, "fd"),
                "the VAE",
                get("vae", "fd"),
                False,
                2,
            )
        )
        if get(name, "nll_iwae")[0] is not None:
            metric = "test NLL (IWAE" + ("; the CVAE's given the label)" if name == "cvae" else ")")
            res.verdict(
                X.verdict(
                    metric,
                    who(labels[name]),
                    get(name, "nll_iwae"),
                    "the VAE",
                    get("vae", "nll_iwae"),
                    False,
                    2,
                )
            )


if __name__ == "__main__":
    sys.exit(X.run(main))
