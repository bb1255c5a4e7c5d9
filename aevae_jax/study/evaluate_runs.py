"""Test metrics of trained runs, read back from their directories: one run's, or, for
several runs of one set-up (its seeds), each run's with their mean and sample standard
deviation. The metrics are those of metrics.json (`evaluate_model`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from aevae_jax.config import config_differences
from aevae_jax.data.sources import load_dataset
from aevae_jax.errors import require
from aevae_jax.evaluate.classifier import load_or_train_classifier
from aevae_jax.evaluate.evaluation import evaluate_model
from aevae_jax.evaluate.metrics import summarize_seeds
from aevae_jax.evaluate.split import evaluation_key
from aevae_jax.train.runs import expand_runs, load_run

# What tells the runs apart, kept per run rather than averaged.
RUN_FIELDS = ("run", "checkpoint", "seed", "epoch")


def run_metrics(
    run_dirs: list[str],
    checkpoint: str = "best",
    iwae_k: int = 1000,
    fd: bool = True,
    samplers=None,
) -> Iterator[dict]:
    """Each run's test metrics, with its directory, seed, checkpoint and epoch. The runs
    must differ in their seed alone; the data set is loaded once for all of them, and
    the classifier of the sample Frechet distance (`fd`) trained or read once."""
    first = load_run(run_dirs[0], checkpoint, need_data=False)
    full = load_dataset(first.cfg.data.dataset, first.cfg.data.data_dir)
    classifier = load_or_train_classifier(full, progress=True) if fd else None
    for run_dir in run_dirs:
        run = load_run(run_dir, checkpoint, dataset=full)
        differ = config_differences(first.cfg, run.cfg, ignore=("seed", "out"))
        require(
            not differ,
            f"--run: {run_dir!r} and {run_dirs[0]!r} differ in {', '.join(differ)}; several "
            "runs are averaged only when they differ in their seed alone",
        )
        evaluation = evaluate_model(
            run.model,
            run.params,
            run.dataset,
            run.cfg.data.binarize,
            evaluation_key(run.cfg.seed),
            iwae_k=iwae_k,
            classifier=classifier,
            progress=True,
            samplers=samplers,
        )
        yield {
            "run": os.path.abspath(run_dir),
            "model": run.model.name,
            "seed": run.cfg.seed,
            "checkpoint": run.which,
            "epoch": run.epoch,
            **evaluation.metrics,
        }


def summarize_runs(results: list[dict]) -> dict:
    """Several runs' metrics as one dict: the runs, seeds and epochs, the mean and sample
    standard deviation of each metric that differs between them (`summarize_seeds`), and
    each run's metrics."""
    metrics = [{k: v for k, v in r.items() if k not in RUN_FIELDS} for r in results]
    summary = summarize_seeds(metrics)
    per_seed, std = summary.pop("per_seed"), summary.pop("std")
    return {
        "runs": [r["run"] for r in results],
        "seeds": [r["seed"] for r in results],
        "epochs": [r["epoch"] for r in results],
        "mean": summary,
        "std": std,
        "per_run": per_seed,
    }


def evaluate_runs(
    paths: list[str],
    checkpoint: str = "best",
    iwae_k: int = 1000,
    fd: bool = True,
    samplers=None,
) -> dict:
    """The test metrics of the runs in `paths` (a directory of `aevae train --seeds`
    stands for its seeds' runs): one run's as they are, several runs' summarised."""
    results = list(run_metrics(expand_runs(paths), checkpoint, iwae_k, fd, samplers))
    return results[0] if len(results) == 1 else summarize_runs(results)
