"""Data augmentation with a conditional VAE: do its samples help a classifier that has
few labels?

The article: VAEs can generate new training data. Tested on Fashion-MNIST with 1% and
10% of the labels (600 and 6,000 training images, class-balanced: the first 60 or 600
images of each class in the training order, the same subset for every seed). A
conditional VAE (`cvae`, MLP 400 hidden units, latent 16, binarized inputs) is trained
on the labelled subset only, so it knows no more labels than the classifier. The
classifier (the domain classifier's CNN, `classifier.FeatureNet`, Adam 1e-3, batch 128
drawn uniformly from its training set) is trained twice per seed, from the same
initialisation and for the same number of steps: on the labelled images alone, and on
the labelled images plus --synthetic-ratio times as many CVAE samples (decoder means,
labels cycling over the classes, drawn once per seed from that seed's CVAE). Measured:
test accuracy on the whole test split, and how often the real-only classifier agrees
with the label a sample was generated for.

Seeds: seed s trains CVAE s (all seeds together), draws its samples and initialises
both classifiers; the labelled subset is the same. Each epoch ends with a test pass
and a log row, which would cost more than a 600-image epoch, so a subset smaller than
6,000 images is stored repeated until it has 6,000 rows (the CVAE sees only its own
images, with a fresh binarization each time); --epochs counts epochs of those rows (40:
about 1,900 steps).

--quick uses 100 labelled images (10 per class) of the quick subset and 20 classifier
steps.

    python experiments/augmentation.py [--quick] [--labelled 600,6000] [--synthetic-ratio 1]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import scaffold as X

from aevae_jax.data.preprocess import to_unit_interval
from aevae_jax.errors import UserError, require
from aevae_jax.evaluate.classifier import FeatureNet

LABELLED = "600,6000"
QUICK_LABELLED = "100"
STORED_ROWS = 6_000  # a labelled subset is stored repeated up to this many rows
CVAE_TEST = 500  # test images of the CVAE's per-epoch log (not the measurement)
BATCH = 128
KEYS = {"samples": 1, "init": 2, "batches": 3}  # fold_in indices of each seed's streams
GRID = 8  # samples per class in the figure


def parse_labelled(text: str, num_classes: int, available: int) -> list[int]:
    try:
        sizes = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise UserError(f"--labelled must be integers separated by commas, got {text!r}") from None
    require(
        bool(sizes) and all(num_classes <= n <= available for n in sizes),
        f"--labelled sizes must lie in {num_classes}..{available}, got {text!r}",
    )
    require(
        all(n % num_classes == 0 for n in sizes),
        f"--labelled sizes must be multiples of the {num_classes} classes, got {text!r}",
    )
    return sizes


def balanced_indices(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Training indices of the first n // num_classes images of every class, in the
    training order."""
    per = n // num_classes
    picks = [np.flatnonzero(labels == c)[:per] for c in range(num_classes)]
    require(all(len(p) == per for p in picks), f"fewer than {per} training images in a class")
    return np.sort(np.concatenate(picks))


def labelled_data(data: X.Data, n: int, cache: str) -> X.Data:
    """The class-balanced subset of n labelled images as the CVAE's training set,
    stored repeated up to STORED_ROWS rows, with the first CVAE_TEST test images."""
    ds = data.dataset
    idx = balanced_indices(ds.y_train, n, ds.num_classes)
    repeats = max(1, math.ceil(STORED_ROWS / len(idx)))
    sub = dataclasses.replace(
        ds,
        x_train=np.tile(ds.x_train[idx], (repeats, 1, 1, 1)),
        y_train=np.tile(ds.y_train[idx], repeats),
        x_test=ds.x_test[:CVAE_TEST],
        y_test=ds.y_test[:CVAE_TEST],
    )
    return X.derived(data, sub, f"labelled{len(idx)}x{repeats}", cache)


@functools.cache
def _trainer(num_classes: int, steps: int):
    """(params0, x [N, ...], y [N], n_valid, key) -> params after `steps` Adam steps on
    batches drawn uniformly from the first n_valid rows; compiled once per step count."""
    net = FeatureNet(num_classes)
    tx = optax.adam(1e-3)

    def loss_fn(p, x, y):
        logits, _ = net.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def train(params, x, y, n_valid, key):
        def step(carry, i):
            p, s = carry
            idx = jax.random.randint(jax.random.fold_in(key, i), (BATCH,), 0, n_valid)
            g = jax.grad(loss_fn)(p, x[idx], y[idx])
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))[0][0]

    return net, train


def train_classifier(x, y, n_valid: int, rows: int, seed: int, steps: int, num_classes: int):
    """FeatureNet trained on the first n_valid of (x, y), padded to `rows` rows so every
    arm runs one compiled program; the seed fixes the initialisation and batch keys."""
    net, train = _trainer(num_classes, steps)
    base = jax.random.key(seed)
    params = net.init(jax.random.fold_in(base, KEYS["init"]), x[:1])["params"]
    pad = rows - len(x)
    x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
    y = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)])
    return train(params, x, y, n_valid, jax.random.fold_in(base, KEYS["batches"]))


@functools.cache
def _predictor(num_classes: int):
    net = FeatureNet(num_classes)
    return jax.jit(lambda p, xb: jnp.argmax(net.apply({"params": p}, xb)[0], axis=-1))


def predict(params, x, num_classes: int, chunk: int = 1000) -> np.ndarray:
    """Predicted classes of images x [N, H, W, C] in [0, 1]."""
    apply = _predictor(num_classes)
    return np.concatenate(
        [np.asarray(apply(params, x[i : i + chunk])) for i in range(0, len(x), chunk)]
    )


def arms(
    real_x, real_y, fake_x, fake_y, seed: int, steps: int, num_classes: int, test_x, test_y
) -> dict:
    """Both classifiers of one seed: test accuracy without and with the samples, and the
    real-only classifier's agreement with the samples' labels."""
    rows = len(real_x) + len(fake_x)
    both_x = jnp.concatenate([real_x, fake_x])
    both_y = jnp.concatenate([real_y, fake_y])
    out = {}
    for arm, (x, y) in {"real": (real_x, real_y), "augmented": (both_x, both_y)}.items():
        params = train_classifier(x, y, len(x), rows, seed, steps, num_classes)
        out[f"accuracy_{arm}"] = float(np.mean(predict(params, test_x, num_classes) == test_y))
        if arm == "real":
            agree = predict(params, fake_x, num_classes) == np.asarray(fake_y)
            out["sample_label_agreement"] = float(np.mean(agree))
    return out


def main(argv=None) -> dict:
    p = X.parser("augmentation", __doc__.splitlines()[0], epochs=40)
    p.add_argument(
        "--labelled",
        default=None,
        help=f"labelled training images, class-balanced "
        f"(default {LABELLED}: 1%% and 10%%; --quick: {QUICK_LABELLED})",
    )
    p.add_argument(
        "--synthetic-ratio",
        type=float,
        default=1.0,
        help="CVAE samples per labelled image in the augmented training set",
    )
    p.add_argument(
        "--clf-steps",
        type=int,
        default=1000,
        help="classifier training steps of both arms (--quick: 20)",
    )
    args = p.parse_args(argv)
    s = X.setting("augmentation", args, argv)
    require(args.synthetic_ratio > 0, "--synthetic-ratio must be positive")
    require(args.clf_steps >= 1, "--clf-steps must be at least 1")
    X.enable_compilation_cache(s.cache)
    data = X.load(s)
    ds = data.dataset
    require(ds.y_train is not None, "the augmentation experiment needs a labelled data set")
    c = ds.num_classes
    sizes = parse_labelled(
        args.labelled or (QUICK_LABELLED if s.quick else LABELLED), c, len(ds.x_train)
    )
    clf_steps = min(args.clf_steps, 20) if s.quick else args.clf_steps
    test_x = to_unit_interval(jnp.asarray(ds.x_test))
    names = list(ds.class_names or [str(j) for j in range(c)])
    res = X.Results(
        s,
        "CVAE samples as extra training data for a classifier with few labels",
        f"Class-balanced labelled subsets of the training split; a CVAE (latent 16) "
        f"trained on each subset alone ({s.epochs} epochs of its {STORED_ROWS:,}-row "
        f"stored copy); the CNN classifier trained {clf_steps:,} steps (batch {BATCH}) "
        f"on the labelled images, or on them plus {args.synthetic_ratio:g} CVAE sample(s) "
        f"per labelled image, from the same initialisation; test accuracy on all "
        f"{len(ds.x_test):,} test images.",
    )
    per_size, grid_rows, grid_labels = {}, [], []
    for n in sizes:
        sub = labelled_data(data, n, s.cache)
        idx = balanced_indices(ds.y_train, n, c)
        real_x = to_unit_interval(jnp.asarray(ds.x_train[idx]))
        real_y = jnp.asarray(ds.y_train[idx], jnp.int32)
        n_fake = max(c, round(args.synthetic_ratio * len(idx)))
        fake_y = jnp.arange(n_fake, dtype=jnp.int32) % c
        runs = X.trained(s, sub, X.run_config(s, sub, "cvae"))
        per_size[n] = []
        for r in runs:
            key = jax.random.fold_in(jax.random.key(r.seed), KEYS["samples"])
            fake_x = r.model.sample(r.params, key, n_fake, fake_y)
            per_size[n].append(
                arms(real_x, real_y, fake_x, fake_y, r.seed, clf_steps, c, test_x, ds.y_test)
            )
            if r is runs[0]:
                for k in range(c):
                    grid_rows.append(np.asarray(fake_x[k::c][:GRID]))
                    grid_labels.append(f"{len(idx)}: {names[k]}")

    rows = []
    for n, runs in per_size.items():
        get = lambda k, runs=runs: [m[k] for m in runs]
        share = f"{100 * n / len(ds.x_train):.3g}%"
        rows.append(
            [
                f"{n:,} ({share})",
                X.pm(get("accuracy_real"), 2, 100),
                X.pm(get("accuracy_augmented"), 2, 100),
                X.pm(get("sample_label_agreement"), 1, 100),
            ]
        )
        res.verdict(
            X.verdict(
                f"test accuracy (%) with {n:,} labels",
                "real + CVAE samples",
                get("accuracy_augmented"),
                "real images only",
                get("accuracy_real"),
                True,
                2,
                100,
            )
        )
    res.table(
        "Test accuracy (%) of the classifier",
        ["labelled images", "real only", "real + CVAE samples", "label agreement (%)"],
        rows,
        "label agreement: the real-only classifier's accuracy on the CVAE samples, taking "
        "the label each was generated for as the truth.",
    )
    from aevae_jax.study.figures import image_rows

    image_rows(
        res.path("cvae_samples.png"),
        grid_rows,
        grid_labels,
        "CVAE samples per class label, by labelled-set size (seed 0)",
    )
    res.figure(
        "cvae_samples.png",
        "CVAE samples per class (rows), trained on each labelled subset (seed 0)",
    )
    res.data.update(
        per_seed={str(n): v for n, v in per_size.items()},
        labelled=sizes,
        synthetic_ratio=args.synthetic_ratio,
        clf_steps=clf_steps,
        cvae_epochs=s.epochs,
        stored_rows=STORED_ROWS,
    )
    return res.write()


if __name__ == "__main__":
    sys.exit(X.run(main))
