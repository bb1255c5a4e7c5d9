"""PNG figures of a comparison: a row or panel per model, chosen by what each model
can do (a prior, continuous or discrete codes, labels), never by its name.

    reconstructions.png   test images, then each model's reconstructions
    samples.png           each model's prior samples (and ex-post ones for AEs)
    interpolations.png    decoded straight lines between the codes of two test images
    latent_2d.png         each model's test codes on their first two principal axes
    training_curves.png   training objective per epoch, train and test
    rate_distortion.png   KL against distortion, for models with a Gaussian q(z|x)
    <model>_by_class.png  class-conditional samples, a row per class
    <model>_codebook.png  how often each code is used, for discrete codes
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from aevae_jax.data.preprocess import to_unit_interval
from aevae_jax.evaluate.samplers import decode_samples, expost_gaussian, prior_images
from aevae_jax.evaluate.split import TRAIN_SPLIT, encode_split, eval_inputs
from aevae_jax.models import Batch


def _as_display(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, np.float32)
    return img if img.shape[-1] in (3, 4) else img[..., 0]  # grey, or the first channel


def image_rows(path: str, rows: list[np.ndarray], labels: list[str], title: str) -> None:
    """One labelled row of images per entry of `rows` ([n, H, W, C] in [0, 1]), drawn as
    one mosaic (a single image, so large grids stay fast to draw)."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    gap = max(1, h // 14)
    colour = rows[0].shape[-1] in (3, 4)
    cell = lambda img: np.asarray(img, np.float32)[..., :3] if colour else _as_display(img)
    blank = np.ones((h, w, 3) if colour else (h, w), np.float32)
    mosaic_rows = []
    for row in rows:
        cells = [cell(row[j]) if j < len(row) else blank for j in range(n)]
        padded = [
            np.pad(c, ((gap, gap), (gap, gap)) + (((0, 0),) if colour else ()), constant_values=1.0)
            for c in cells
        ]
        mosaic_rows.append(np.concatenate(padded, axis=1))
    mosaic = np.concatenate(mosaic_rows, axis=0)
    width = 1.8 + n * 0.75
    fig = plt.figure(figsize=(width, 0.5 + len(rows) * 0.75))
    ax = fig.add_axes((1.6 / width, 0.02, 1 - 1.7 / width, 0.96 - 0.45 / (0.5 + len(rows) * 0.75)))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(h + 2 * gap) * (i + 0.5) for i in range(len(rows))])
    ax.set_yticklabels(labels, fontsize=9)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_grid(
    path: str,
    images: np.ndarray,
    title: str,
    labels: list[str] | None = None,
    cols: int | None = None,
) -> None:
    """A grid of images [n, H, W, C] in [0, 1]: near-square, or `cols` wide."""
    n = len(images)
    cols = cols or math.ceil(math.sqrt(n))
    rows = [images[i : i + cols] for i in range(0, n, cols)]
    image_rows(path, rows, labels or [""] * len(rows), title)


def latent_scatter(
    path: str, codes: dict[str, np.ndarray], labels: np.ndarray | None, class_names
) -> None:
    """2-D view of each model's test codes: projection on their first two principal axes."""
    cols = min(len(codes), 4)
    rows = math.ceil(len(codes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.2 * rows), squeeze=False)
    scatter = None
    for ax in axes.ravel()[len(codes) :]:
        ax.axis("off")
    for ax, (name, z) in zip(axes.ravel(), codes.items(), strict=False):
        z = np.asarray(z, np.float64)
        centred = z - z.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        if xy.shape[1] == 1:  # a 1-D latent space: spread it along y by index
            xy = np.concatenate([xy, np.zeros_like(xy)], axis=1)
        explained = (s[:2] ** 2).sum() / max((s**2).sum(), 1e-12)
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=2, alpha=0.6)
        ax.set_title(f"{name}: codes, PCA ({explained:.0%} of variance)", fontsize=10)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    if labels is not None and scatter is not None:
        names = class_names or [str(i) for i in range(int(labels.max()) + 1)]
        handles = scatter.legend_elements()[0]
        fig.legend(handles, names[: len(handles)], loc="center right", fontsize=8, markerscale=1.5)
        fig.tight_layout(rect=(0, 0, 0.88, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def training_curves(path: str, histories: dict[str, list[dict]]) -> None:
    """Per model: the training objective per epoch (train and test), and the
    step-independent selection metric on the test split."""
    cols = min(len(histories), 4)
    rows = math.ceil(len(histories) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(histories) :]:
        ax.axis("off")
    for ax, (name, history) in zip(axes.ravel(), histories.items(), strict=False):
        epochs = [r["epoch"] for r in history]
        for split, marker in (("train", "o-"), ("test", "s-")):
            values = [r[f"{split}_objective"] for r in history]
            ax.plot(epochs, values, marker, ms=3, label=f"{split} objective")
        select = history[-1]["selection"] if history else None
        if select:
            ax.plot(epochs, [r.get(select) for r in history], "--", label=select)
        stages = [
            r["epoch"] for i, r in enumerate(history) if i and r["stage"] != history[i - 1]["stage"]
        ]
        for e in stages:
            ax.axvline(e - 0.5, color="grey", lw=0.8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rate_distortion(path: str, points: dict[str, tuple[float, float]]) -> None:
    """Each model with a Gaussian q(z|x) as a point (rate = KL, distortion)."""
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    for name, (rate, distortion) in points.items():
        ax.scatter(rate, distortion, s=30)
        ax.annotate(name, (rate, distortion), textcoords="offset points", xytext=(4, 4), fontsize=9)
    ax.set_xlabel("rate: KL(q(z|x) || p(z)), nats")
    ax.set_ylabel("distortion: E_q[-log p(x|z)], nats")
    ax.set_title("Rate and distortion on the test split", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def codebook_usage(path: str, name: str, indices: np.ndarray, num_codes: int) -> None:
    """How often each code is used on the test split, most used first."""
    counts = np.sort(np.bincount(np.asarray(indices).ravel(), minlength=num_codes))[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.bar(np.arange(num_codes), counts / counts.sum(), width=1.0)
    ax.set_xlabel("code (sorted by use)")
    ax.set_ylabel("share of positions")
    ax.set_title(
        f"{name}: codebook use on the test split ({int(np.sum(counts == 0))} "
        f"of {num_codes} codes unused)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_figures(cfg, fits: dict, results: dict, key: jax.Array, n: int = 12) -> None:
    """Every figure of a comparison into cfg.out (report.figure_list captions them)."""
    dataset = next(iter(fits.values())).dataset
    x_test = eval_inputs(jnp.asarray(dataset.x_test), cfg.data.binarize)
    y_test = None if dataset.y_test is None else jnp.asarray(dataset.y_test)
    batch = Batch(x_test[:n], None if y_test is None else y_test[:n])
    recon = {name: np.asarray(r.model.reconstruct(r.params, batch)) for name, r in fits.items()}
    first = reconstruction_figure(cfg, dataset, batch, recon, n)
    samples = sample_figure(cfg, fits, key, n)
    overview_figure(cfg.out, fits, first, recon, samples)
    interpolation_figure(cfg.out, fits, dataset, batch, n)
    m = min(len(x_test), 5000)
    sub = Batch(x_test[:m], None if y_test is None else y_test[:m])
    codes = {name: np.asarray(r.model.encode(r.params, sub).features) for name, r in fits.items()}
    latent_scatter(
        os.path.join(cfg.out, "latent_2d.png"),
        codes,
        None if dataset.y_test is None else dataset.y_test[:m],
        dataset.class_names,
    )
    histories = {name: r.history for name, r in fits.items()}
    training_curves(os.path.join(cfg.out, "training_curves.png"), histories)
    rd = {
        name: (m_["test_kl"], m_["test_distortion"])
        for name, m_ in results.items()
        if m_.get("test_kl") is not None and m_.get("test_distortion") is not None
    }
    if rd:
        rate_distortion(os.path.join(cfg.out, "rate_distortion.png"), rd)
    model_figures(cfg.out, fits, dataset, sub, key)


def reconstruction_figure(cfg, dataset, batch: Batch, recon: dict, n: int) -> tuple:
    """reconstructions.png; returns the first row (the test images) and its label."""
    rows = [np.asarray(to_unit_interval(jnp.asarray(dataset.x_test[:n])))]
    labels = ["test image"]
    if cfg.data.binarize != "none":
        rows.append(np.asarray(batch.x))
        labels.append("binarized input")
    image_rows(
        os.path.join(cfg.out, "reconstructions.png"),
        [*rows, *recon.values()],
        [*labels, *recon],
        "Reconstructions through the code (the Gaussian's mean)",
    )
    return rows[0], labels[0]


def sample_figure(cfg, fits: dict, key: jax.Array, n: int) -> dict:
    """samples.png: each model's prior samples, and ex-post Gaussian samples for models
    without a prior of their own; returns {name: [(label, images)]}."""
    dataset = next(iter(fits.values())).dataset
    x_train = eval_inputs(jnp.asarray(dataset.x_train), cfg.data.binarize, TRAIN_SPLIT)
    y_train = None if dataset.y_train is None else jnp.asarray(dataset.y_train)
    samples: dict[str, list[tuple[str, np.ndarray]]] = {}
    for i, (name, r) in enumerate(fits.items()):
        k = jax.random.fold_in(key, i)
        y = (jnp.arange(n) % dataset.num_classes) if r.model.conditional else None
        prior = np.asarray(prior_images(r.model, r.params, k, n, y))
        samples[name] = [(f"{name}: prior" if r.model.sample else f"{name}: z~N(0,I)", prior)]
        if r.model.sample is None:
            codes = encode_split(r.model, r.params, x_train, y_train)
            if codes.indices is None:
                sampler = expost_gaussian(codes.features)
                k_ex = jax.random.fold_in(k, 1)
                expost = np.asarray(decode_samples(r.model, r.params, sampler, k_ex, n))
                samples[name].append((f"{name}: ex-post", expost))
    sample_rows = [row for name in fits for row in samples[name]]
    image_rows(
        os.path.join(cfg.out, "samples.png"),
        [images for _, images in sample_rows],
        [label for label, _ in sample_rows],
        "New images from sampled codes (decoder means)",
    )
    return samples


def overview_figure(out: str, fits: dict, first: tuple, recon: dict, samples: dict) -> None:
    """overview.png: the test images, then per model its reconstructions and samples."""
    rows, labels = [first[0]], [first[1]]
    for name in fits:
        label, images = samples[name][-1]  # ex-post where a model has no prior
        rows += [recon[name], images]
        labels += [f"{name}: reconstruction", label]
    image_rows(
        os.path.join(out, "overview.png"),
        rows,
        labels,
        "Every model: reconstructions of the test images above, then samples",
    )


def interpolation_figure(out: str, fits: dict, dataset, batch: Batch, n: int) -> None:
    """interpolations.png: decodes along straight lines between two test images' codes."""
    pairs = interpolation_pairs(dataset.y_test, limit=n)
    if not pairs:
        return
    t = jnp.linspace(0.0, 1.0, 10)[:, None]
    rows, labels = [], []
    for name, r in fits.items():
        if r.model.conditional:
            continue  # the path would need a label per point
        codes = r.model.encode(r.params, batch).features
        for a, b in pairs:
            path = (codes[a] * (1 - t) + codes[b] * t).reshape(-1, *r.model.code_shape)
            rows.append(np.asarray(r.model.likelihood.mean(r.model.decode(r.params, path))))
            labels.append(f"{name} {a}->{b}")
    if rows:
        image_rows(
            os.path.join(out, "interpolations.png"),
            rows,
            labels,
            "Linear interpolation between the codes of two test images",
        )


def model_figures(out: str, fits: dict, dataset, sub: Batch, key: jax.Array) -> None:
    """Figures of one model's own: class-conditional samples, codebook use."""
    for i, (name, r) in enumerate(fits.items()):
        if r.model.conditional:
            c = dataset.num_classes
            y = jnp.repeat(jnp.arange(c), 10)
            images = r.model.sample(r.params, jax.random.fold_in(key, 100 + i), len(y), y)
            names = dataset.class_names or [str(j) for j in range(c)]
            image_grid(
                os.path.join(out, f"{name}_by_class.png"),
                np.asarray(images),
                f"{name}: samples for each class label",
                labels=list(names),
                cols=10,
            )
        if r.model.num_codes is not None:
            indices = r.model.encode(r.params, sub).indices
            codebook_usage(
                os.path.join(out, f"{name}_codebook.png"), name, np.asarray(indices),
                r.model.num_codes,
            )  # fmt: skip


def interpolation_pairs(labels, n: int = 3, limit: int | None = None) -> list[tuple[int, int]]:
    """Up to n pairs of test indices (a, b) below `limit`, each b the first later image
    of another class (consecutive images when there are no labels)."""
    if limit is None:
        limit = 6 if labels is None else len(labels)
    pairs, a = [], 0
    while len(pairs) < n and a + 1 < limit:
        b = a + 1
        if labels is not None:
            b = next((j for j in range(a + 1, limit) if labels[j] != labels[a]), b)
        pairs.append((a, b))
        a = b + 1
    return pairs
