"""The main job: train an AE and a VAE on the same data, backbone and budget, evaluate
both, and write metrics.json, report.md and the figures into one directory.

    out/ae/, out/vae/     the two training runs (config, metrics.jsonl, checkpoints)
    out/metrics.json      {"dataset", "config", "models": {"ae": {...}, "vae": {...}}}
    out/report.md         the article's table with measured numbers and verdicts
    out/*.png             reconstructions, samples, interpolations, latent view, curves
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax import report
from aevae_jax.classifier import load_or_train_classifier
from aevae_jax.config import RunConfig
from aevae_jax.data import load_dataset, to_unit_interval
from aevae_jax.errors import require
from aevae_jax.evaluate import TRAIN_SPLIT, encode_split, eval_inputs, evaluate_model
from aevae_jax.samplers import decode_samples, expost_gaussian, prior_images
from aevae_jax.train import CONFIG_FILE, ensure_writable_dir, fit

MODELS = ("ae", "vae")


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[compare] {msg}", file=sys.stderr, flush=True)


def run_configs(cfg: RunConfig) -> dict[str, RunConfig]:
    """One RunConfig per model, the same in everything but the loss: the AE always
    trains on the article's MSE, the VAE on cfg's likelihood (default Bernoulli)."""
    likelihood = {"ae": None, "vae": cfg.model.likelihood}
    return {
        name: dataclasses.replace(
            cfg,
            model=dataclasses.replace(cfg.model, name=name, likelihood=likelihood[name]),
            out=os.path.join(cfg.out, name),
        )
        for name in MODELS
    }


def timing(history: list[dict]) -> dict[str, float]:
    """train_seconds (all epochs, compile excluded) and step_ms (median over epochs,
    the first left out when there are several); NaN when the log is missing."""
    if not history:
        return {"train_seconds": float("nan"), "step_ms": float("nan")}
    per_epoch = [r["step_ms"] for r in history]
    steady = per_epoch[1:] if len(per_epoch) > 1 else per_epoch
    return {
        "train_seconds": float(sum(r["epoch_seconds"] for r in history)),
        "step_ms": float(statistics.median(steady)),
    }


def run_compare(
    cfg: RunConfig,
    iwae_k: int = 1000,
    resume: bool = False,
    quiet: bool = False,
    command: str = "aevae compare",
) -> dict:
    """Train, evaluate and report; returns the metrics dict written to metrics.json."""
    require(iwae_k > 0, f"--iwae-k must be a positive integer, got {iwae_k}")
    ensure_writable_dir(cfg.out)
    configs = run_configs(cfg)
    taken = [c.out for c in configs.values() if os.path.exists(os.path.join(c.out, CONFIG_FILE))]
    require(
        resume or not taken,
        f"{cfg.out!r} already holds a comparison; pass --resume to reuse its runs "
        "(finished ones are not retrained), or choose another --out",
    )
    full = load_dataset(cfg.data.dataset, cfg.data.data_dir)

    fits = {}
    for name, c in configs.items():
        _log(f"training the {name.upper()} ({c.epochs} epochs)", quiet)
        resuming = resume and os.path.exists(os.path.join(c.out, CONFIG_FILE))
        fits[name] = fit(c, resume=resuming, dataset=full, progress=not quiet)

    _log("domain classifier for the Frechet distance (trained once per data set, cached)", quiet)
    t0 = time.perf_counter()
    classifier = load_or_train_classifier(full)
    _log(f"classifier ready in {time.perf_counter() - t0:.1f}s", quiet)

    key = jax.random.key(cfg.seed)
    models = {}
    for name, result in fits.items():
        _log(f"evaluating the {name.upper()} (IWAE K={iwae_k} where defined)", quiet)
        t0 = time.perf_counter()
        metrics = evaluate_model(
            result.model,
            result.params,
            result.dataset,
            cfg.data.binarize,
            jax.random.fold_in(key, 1000),
            iwae_k=iwae_k,
            classifier=classifier,
        )
        # the training objective on the test split, as logged for the last epoch
        metrics["test_loss"] = result.history[-1]["test_loss"] if result.history else None
        metrics.update(timing(result.history))
        metrics["eval_seconds"] = time.perf_counter() - t0
        models[name] = metrics

    dataset = fits["vae"].dataset
    metrics = {
        "dataset": full.name,
        "dataset_source": cfg.data.dataset,
        "config": {
            "backbone": cfg.model.backbone,
            "hidden": list(cfg.model.hidden),
            "latent_dim": cfg.model.latent_dim,
            "activation": cfg.model.activation,
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "optimizer": cfg.optim.optimizer,
            "lr": cfg.optim.lr,
            "schedule": cfg.optim.schedule,
            "vae_likelihood": configs["vae"].model.likelihood or "bernoulli",
            "binarize": cfg.data.binarize,
            "train_size": len(dataset.x_train),
            "test_size": len(dataset.x_test),
            "seed": cfg.seed,
            "iwae_k": iwae_k,
        },
        "classifier_accuracy": None if classifier is None else classifier.test_accuracy,
        "models": models,
        "command": command,
    }
    with open(os.path.join(cfg.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)

    _log("figures and report", quiet)
    make_figures(cfg, fits, jax.random.fold_in(key, 2000))
    report.write_report(os.path.join(cfg.out, "report.md"), metrics, command)
    _log(f"done: {os.path.join(cfg.out, 'report.md')}", quiet)
    return metrics


def make_figures(cfg: RunConfig, fits: dict, key: jax.Array, n: int = 12) -> None:
    paths = report.figure_paths(cfg.out)
    dataset = fits["vae"].dataset
    x_test = eval_inputs(jnp.asarray(dataset.x_test), cfg.data.binarize)
    ae, vae = fits["ae"], fits["vae"]
    show = x_test[:n]
    grey = to_unit_interval(jnp.asarray(dataset.x_test[:n]))
    rows = [np.asarray(grey)]
    labels = ["test image"]
    if cfg.data.binarize != "none":
        rows.append(np.asarray(show))
        labels.append("binarized input")
    rows += [
        np.asarray(ae.model.reconstruct(ae.params, show)),
        np.asarray(vae.model.reconstruct(vae.params, show)),
    ]
    report.image_rows(
        paths["reconstructions"],
        rows,
        [*labels, "AE", "VAE"],
        "Reconstructions through the code mean",
    )

    x_train = eval_inputs(jnp.asarray(dataset.x_train), cfg.data.binarize, TRAIN_SPLIT)
    train_codes = encode_split(ae.model, ae.params, x_train).mean
    k1, k2, k3 = jax.random.split(key, 3)
    report.image_rows(
        paths["samples"],
        [
            np.asarray(prior_images(ae.model, ae.params, k1, n)),
            np.asarray(decode_samples(ae.model, ae.params, expost_gaussian(train_codes), k2, n)),
            np.asarray(prior_images(vae.model, vae.params, k3, n)),
        ],
        ["AE, z~N(0,I)", "AE, ex-post", "VAE prior"],
        "New images from sampled codes (decoder means)",
    )

    pairs = interpolation_pairs(dataset.y_test, limit=len(x_test))
    t = jnp.linspace(0.0, 1.0, 10)[:, None]
    rows, labels = [], []
    for name, r in (("AE", ae), ("VAE", vae)) if pairs else ():
        codes = r.model.encode(r.params, x_test[: 1 + max(max(p) for p in pairs)]).mean
        for a, b in pairs:
            path = codes[a] * (1 - t) + codes[b] * t
            rows.append(np.asarray(r.model.likelihood.mean(r.model.decode(r.params, path))))
            labels.append(f"{name} {a}->{b}")
    report.image_rows(
        paths["interpolations"],
        rows,
        labels,
        "Linear interpolation between the codes of two test images",
    )

    m = min(len(x_test), 5000)
    codes = {
        name.upper(): np.asarray(r.model.encode(r.params, x_test[:m]).mean)
        for name, r in fits.items()
    }
    labels_test = None if dataset.y_test is None else dataset.y_test[:m]
    report.latent_scatter(paths["latent_2d"], codes, labels_test, dataset.class_names)
    report.training_curves(
        paths["training_curves"],
        {"AE": ae.history, "VAE": vae.history},
        {"AE": "MSE (sum over pixels)", "VAE": "-ELBO (nats)"},
    )


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
