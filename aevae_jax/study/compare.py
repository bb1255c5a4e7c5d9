"""The main job: train any list of registered models on the same data, backbone and
budget, evaluate each with every metric that applies, and write metrics.json,
report.md and the figures into one directory.

    out/<model>/          each training run (config, metrics.jsonl, checkpoints); with
                          seeds, out/<model>/seed_<s>/ per seed, trained together
    out/metrics.json      {"dataset", "config", "models": {name: {...}}, "comparisons",
                           "step_times", "claims"}
    out/report.md         the article's table for its pair (default ae vs vae), every
                          model's numbers, and the literature's claims checked
    out/*.png             figures, a row or panel per model

Differences are called only where they exceed their uncertainty: a paired bootstrap
over test images for per-image metrics, binomial standard errors for accuracies,
bootstrap standard errors for Frechet distances, and interleaved per-round ratios
for step times. With several seeds every metric is the mean over seeds with its sample
standard deviation, and differences are paired by seed with a t interval (the spread
that retraining brings, which a single run cannot show).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import jax
import numpy as np

from aevae_jax.config import RunConfig
from aevae_jax.data.sources import describe_dataset, load_dataset
from aevae_jax.data.spec import describe_arrays
from aevae_jax.data.validate import validate_dataset
from aevae_jax.errors import require
from aevae_jax.evaluate import catalogue
from aevae_jax.evaluate import metrics as M
from aevae_jax.evaluate.classifier import load_or_train_classifier
from aevae_jax.evaluate.evaluation import evaluate_model
from aevae_jax.evaluate.samplers import SamplerOptions, with_claimed
from aevae_jax.evaluate.split import evaluation_key
from aevae_jax.models import model_info
from aevae_jax.study import figures, report
from aevae_jax.study.claims import check_claims
from aevae_jax.study.timing import interleaved_step_times, paired_ratio
from aevae_jax.study.verdicts import compare_metric
from aevae_jax.train.fit import check_against_data, fit, fit_seeds, prepare_config, seed_configs
from aevae_jax.train.rundir import ensure_writable_dir, has_run
from aevae_jax.writing import write_json

DEFAULT_MODELS = ("ae", "vae")


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[compare] {msg}", file=sys.stderr, flush=True)


def run_configs(cfg: RunConfig, models, options: dict | None = None) -> dict[str, RunConfig]:
    """One RunConfig per model, alike in everything but the model: each model takes the
    options in `options` that it has; `cfg.model.likelihood` applies to the models whose
    default is a density (reconstruction models keep their MSE, the article's AE loss)."""
    options = options or {}
    out = {}
    for name in models:
        info = model_info(name)
        own = {f.name for f in info.option_fields()}
        likelihood = cfg.model.likelihood if info.default_likelihood != "mse" else None
        model = dataclasses.replace(
            cfg.model,
            name=name,
            likelihood=likelihood,
            options={k: v for k, v in options.items() if k in own},
        )
        out[name] = prepare_config(
            dataclasses.replace(cfg, model=model, out=os.path.join(cfg.out, name))
        )
    return out


def parse_models(text: str) -> tuple[str, ...]:
    """'ae,vae,iwae' -> ('ae', 'vae', 'iwae'), each checked against the registry."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    require(len(names) > 0, "--models needs at least one registered model name")
    require(len(set(names)) == len(names), f"--models lists a model twice: {text}")
    for name in names:
        model_info(name)  # unknown names fail here, before anything trains
    return names


def run_compare(
    cfg: RunConfig,
    models=DEFAULT_MODELS,
    options: dict | None = None,
    pair: tuple[str, str] = DEFAULT_MODELS,
    iwae_k: int = 1000,
    timing_rounds: int = 15,
    resume: bool = False,
    quiet: bool = False,
    command: str = "aevae compare",
    dataset=None,
    seeds=None,
    devices: int | None = None,
    samplers: SamplerOptions | None = None,
) -> dict:
    """Train, evaluate and report; returns the metrics dict written to metrics.json.
    `dataset`: the loaded cfg.data.dataset, when the caller has it already. `seeds`:
    train every model with each of these seeds at once (out/<model>/seed_<s>) and
    report means and standard deviations over them; None: one run with cfg.seed.
    `samplers`: the ex-post samplers every model with continuous codes is scored with
    (default: the ex-post Gaussian), and those the models' claims are checked on."""
    claims = [c for name in models for c in model_info(name).claims]
    samplers = with_claimed(samplers or SamplerOptions(), claims)
    require(iwae_k > 0, f"--iwae-k must be a positive integer, got {iwae_k}")
    require(timing_rounds >= 2, f"--timing-rounds must be at least 2, got {timing_rounds}")
    ensure_writable_dir(cfg.out)
    configs = run_configs(cfg, models, options)
    run_dirs = comparison_run_dirs(cfg, configs, seeds, resume)
    full = checked_data(cfg, configs, dataset)
    fits = train_all(configs, run_dirs, full, seeds, resume, quiet, devices)
    _log("domain classifier for the Frechet distance (trained once per data set, cached)", quiet)
    t0 = time.perf_counter()
    classifier = load_or_train_classifier(full, progress=not quiet)
    _log(f"classifier ready in {time.perf_counter() - t0:.1f}s", quiet)
    evaluations, results = evaluate_all(
        fits, configs, cfg, iwae_k, classifier, seeds, quiet, samplers
    )
    first = {name: runs[0] for name, runs in fits.items()}
    times = time_steps(first, configs, results, timing_rounds, quiet)
    metrics = {
        "dataset": full.name,
        "dataset_source": cfg.data.dataset,
        "config": comparison_config(cfg, models, pair, first, seeds, iwae_k, samplers),
        "classifier_accuracy": None if classifier is None else classifier.test_accuracy,
        "models": results,
        "comparisons": all_comparisons(evaluations, results),
        "step_time_ratios": {
            f"{b}/{a}": paired_ratio(times[a]["rounds_ms"], times[b]["rounds_ms"])
            for a in first
            for b in first
            if a != b
        },
        "command": command,
    }
    metrics["claims"] = check_claims(metrics)
    write_results(cfg, metrics, evaluations, first, results, seeds, command, quiet)
    return metrics


def comparison_run_dirs(cfg: RunConfig, configs: dict, seeds, resume: bool) -> dict:
    """{model: [run directory per seed]}; an error when they hold runs and not `resume`."""
    run_dirs = {
        name: [c.out] if seeds is None else [s.out for s in seed_configs(c, seeds)]
        for name, c in configs.items()
    }
    taken = [d for dirs in run_dirs.values() for d in dirs if has_run(d)]
    require(
        resume or not taken,
        f"{cfg.out!r} already holds a comparison; pass --resume to reuse its runs "
        "(finished ones are not retrained), or choose another --out",
    )
    return run_dirs


def checked_data(cfg: RunConfig, configs: dict, dataset=None):
    """The loaded data set, once every model's config has been checked against its shape
    (before anything trains, and before the data loads)."""
    if dataset is None:
        shape = describe_dataset(cfg.data.dataset, cfg.data.data_dir)
    else:
        shape = describe_arrays(validate_dataset(dataset))
    for c in configs.values():
        check_against_data(c, shape)
    return load_dataset(cfg.data.dataset, cfg.data.data_dir) if dataset is None else dataset


def train_all(configs, run_dirs, full, seeds, resume, quiet, devices) -> dict[str, list]:
    """{model: [FitResult per seed]}: every model trained (or its finished runs reused)."""
    fits = {}
    for name, c in configs.items():
        together = "" if seeds is None else f", seeds {', '.join(map(str, seeds))} together"
        _log(f"training {name} ({c.epochs} epochs{together})", quiet)
        missing = [d for d in run_dirs[name] if not has_run(d)]
        require(
            not resume or len(missing) in (0, len(run_dirs[name])),
            f"--resume: {', '.join(missing)} hold no run while the other seeds of {name} do; "
            "resume with the seeds the comparison started with",
        )
        kw = dict(resume=resume and not missing, dataset=full, progress=not quiet,
                  devices=devices)  # fmt: skip
        fits[name] = [fit(c, **kw)] if seeds is None else fit_seeds(c, seeds, **kw)
    return fits


def evaluate_all(fits, configs, cfg, iwae_k, classifier, seeds, quiet, samplers=None):
    """(evaluations, results): each model's per-image values (its first seed's) and its
    metrics (the mean and std over seeds, with seeds)."""
    evaluations, results = {}, {}
    for name, runs in fits.items():
        per_seed = []
        for result in runs:
            label = "" if seeds is None else f", seed {result.seed}"
            _log(f"evaluating {name}{label} (IWAE K={iwae_k} where defined)", quiet)
            ev, m = _evaluate(
                result, cfg, configs[name], iwae_k, classifier, result.seed, quiet, samplers
            )
            evaluations.setdefault(name, ev)  # per-image values of the first seed
            per_seed.append(m)
        results[name] = per_seed[0] if seeds is None else M.summarize_seeds(per_seed)
        if seeds is not None:
            results[name]["seeds"] = list(seeds)
    return evaluations, results


def time_steps(first: dict, configs: dict, results: dict, rounds: int, quiet: bool) -> dict:
    """Every model's train step timed, interleaved in one process; step_ms into results."""
    _log("step times, interleaved in one process", quiet)
    dataset = next(iter(first.values())).dataset
    times = interleaved_step_times(
        {n: (f.model, configs[n]) for n, f in first.items()},
        dataset.x_train,
        dataset.y_train,
        rounds=rounds,
        progress=not quiet,
    )
    for name, t in times.items():
        results[name]["step_ms"] = t["step_ms"]
    return times


def comparison_config(
    cfg: RunConfig, models, pair, first: dict, seeds, iwae_k: int, samplers=None
) -> dict:
    """metrics.json's "config": what every model of the comparison shares."""
    dataset = next(iter(first.values())).dataset
    return {
        "models": list(models),
        "pair": list(pair),
        "backbone": cfg.model.backbone,
        "hidden": list(cfg.model.hidden),
        "latent_dim": cfg.model.latent_dim,
        "activation": cfg.model.activation,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "optimizer": cfg.optim.optimizer,
        "lr": cfg.optim.lr,
        "schedule": cfg.optim.schedule,
        "binarize": cfg.data.binarize,
        "train_size": len(dataset.x_train),
        "test_size": len(dataset.x_test),
        "image_shape": list(dataset.x_test.shape[1:]),
        "num_classes": dataset.num_classes,
        "seed": cfg.seed if seeds is None else seeds[0],
        "seeds": None if seeds is None else list(seeds),
        "iwae_k": iwae_k,
        "samplers": list((samplers or SamplerOptions()).names),
        "gmm_components": (samplers or SamplerOptions()).gmm_components,
    }


def write_results(cfg, metrics, evaluations, first, results, seeds, command, quiet) -> None:
    """metrics.json, per_image.npz, the figures and report.md into cfg.out."""
    write_json(os.path.join(cfg.out, "metrics.json"), metrics)
    np.savez_compressed(
        os.path.join(cfg.out, "per_image.npz"),
        **{f"{n}/{k}": v for n, ev in evaluations.items() for k, v in ev.per_image.items()},
    )
    _log("figures and report", quiet)
    key = jax.random.key(cfg.seed if seeds is None else seeds[0])
    figures.make_figures(cfg, first, results, jax.random.fold_in(key, 2000))
    report.write_report(os.path.join(cfg.out, "report.md"), metrics, command)
    _log(f"done: {os.path.join(cfg.out, 'report.md')}", quiet)


def _evaluate(result, cfg, run_cfg, iwae_k, classifier, seed, quiet, samplers=None):
    """(evaluation, metrics dict) of one trained run, with the evaluation keys of `seed`."""
    t0 = time.perf_counter()
    ev = evaluate_model(
        result.model,
        result.params,
        result.dataset,
        cfg.data.binarize,
        evaluation_key(seed),
        iwae_k=iwae_k,
        classifier=classifier,
        progress=not quiet,
        samplers=samplers,
    )
    m = ev.metrics
    m["parameters"] = int(sum(a.size for a in jax.tree.leaves(result.params)))
    m["train_seconds"] = float(sum(r["epoch_seconds"] for r in result.history))
    m["likelihood"] = run_cfg.model.likelihood
    m["options"] = run_cfg.model.options
    m["eval_seconds"] = time.perf_counter() - t0
    return ev, m


def all_comparisons(evaluations: dict, results: dict) -> dict:
    """{"b-a": {metric: comparison}} for every ordered pair of models (b listed after a),
    over the catalogue's compared metrics (verdicts.compare_metric picks each rule)."""
    names = list(results)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pair = {}
            for metric in catalogue.compared():
                c = compare_metric(metric.key, a, b, evaluations, results)
                if c is not None:
                    pair[metric.key] = c
            out[f"{b}-{a}"] = pair
    return out
