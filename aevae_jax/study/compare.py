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
import json
import math
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
from aevae_jax.evaluate import metrics as M
from aevae_jax.evaluate.classifier import load_or_train_classifier
from aevae_jax.evaluate.evaluation import evaluate_model, evaluation_key
from aevae_jax.models import model_info
from aevae_jax.study import figures, report
from aevae_jax.study.timing import interleaved_step_times, paired_ratio
from aevae_jax.train.fit import check_against_data, fit, fit_seeds, prepare_config, seed_configs
from aevae_jax.train.rundir import ensure_writable_dir, has_run

DEFAULT_MODELS = ("ae", "vae")
# Per-image values behind split means (evaluate.Evaluation.per_image), for paired tests.
PER_IMAGE = {
    "test_mse": "mse",
    "test_psnr": "psnr",
    "test_bce": "bce",
    "test_recon_nll": "recon_nll",
    "test_denoise_mse": "denoise_mse",
    "test_inpaint_mse": "inpaint_mse",
    "code_sparsity": "code_sparsity",
    "test_neg_elbo": "neg_elbo",
    "test_nll_iwae": "nll_iwae",
    "test_kl": "kl",
    "test_distortion": "distortion",
}


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
) -> dict:
    """Train, evaluate and report; returns the metrics dict written to metrics.json.
    `dataset`: the loaded cfg.data.dataset, when the caller has it already. `seeds`:
    train every model with each of these seeds at once (out/<model>/seed_<s>) and
    report means and standard deviations over them; None: one run with cfg.seed."""
    require(iwae_k > 0, f"--iwae-k must be a positive integer, got {iwae_k}")
    require(timing_rounds >= 2, f"--timing-rounds must be at least 2, got {timing_rounds}")
    ensure_writable_dir(cfg.out)
    configs = run_configs(cfg, models, options)
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
    # Every model must fit the data before any trains, and before the data loads.
    if dataset is None:
        shape = describe_dataset(cfg.data.dataset, cfg.data.data_dir)
    else:
        shape = describe_arrays(validate_dataset(dataset))
    for c in configs.values():
        check_against_data(c, shape)
    full = load_dataset(cfg.data.dataset, cfg.data.data_dir) if dataset is None else dataset

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
        resuming = resume and not missing
        kw = dict(resume=resuming, dataset=full, progress=not quiet, devices=devices)
        fits[name] = [fit(c, **kw)] if seeds is None else fit_seeds(c, seeds, **kw)

    _log("domain classifier for the Frechet distance (trained once per data set, cached)", quiet)
    t0 = time.perf_counter()
    classifier = load_or_train_classifier(full, progress=not quiet)
    _log(f"classifier ready in {time.perf_counter() - t0:.1f}s", quiet)

    evaluations, results = {}, {}
    for name, runs in fits.items():
        per_seed = []
        for result in runs:
            seed = result.seed
            label = "" if seeds is None else f", seed {seed}"
            _log(f"evaluating {name}{label} (IWAE K={iwae_k} where defined)", quiet)
            ev, m = _evaluate(result, cfg, configs[name], iwae_k, classifier, seed, quiet)
            evaluations.setdefault(name, ev)  # per-image values of the first seed
            per_seed.append(m)
        results[name] = per_seed[0] if seeds is None else M.summarize_seeds(per_seed)
        if seeds is not None:
            results[name]["seeds"] = list(seeds)

    _log("step times, interleaved in one process", quiet)
    first = {name: runs[0] for name, runs in fits.items()}
    dataset = next(iter(first.values())).dataset
    times = interleaved_step_times(
        {n: (f.model, configs[n]) for n, f in first.items()},
        dataset.x_train,
        dataset.y_train,
        rounds=timing_rounds,
        progress=not quiet,
    )
    for name, t in times.items():
        results[name]["step_ms"] = t["step_ms"]

    metrics = {
        "dataset": full.name,
        "dataset_source": cfg.data.dataset,
        "config": {
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
            "num_classes": dataset.num_classes,
            "seed": cfg.seed if seeds is None else seeds[0],
            "seeds": None if seeds is None else list(seeds),
            "iwae_k": iwae_k,
        },
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
    metrics["claims"] = report.check_claims(metrics)
    with open(os.path.join(cfg.out, "metrics.json"), "w") as f:
        json.dump(_jsonable(metrics), f, indent=2)
    np.savez_compressed(
        os.path.join(cfg.out, "per_image.npz"),
        **{f"{n}/{k}": v for n, ev in evaluations.items() for k, v in ev.per_image.items()},
    )

    _log("figures and report", quiet)
    key = jax.random.key(cfg.seed if seeds is None else seeds[0])
    figures.make_figures(cfg, first, results, jax.random.fold_in(key, 2000))
    report.write_report(os.path.join(cfg.out, "report.md"), metrics, command)
    _log(f"done: {os.path.join(cfg.out, 'report.md')}", quiet)
    return metrics


def _evaluate(result, cfg, run_cfg, iwae_k, classifier, seed, quiet):
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
    )
    m = ev.metrics
    m["parameters"] = int(sum(a.size for a in jax.tree.leaves(result.params)))
    m["train_seconds"] = float(sum(r["epoch_seconds"] for r in result.history))
    m["likelihood"] = run_cfg.model.likelihood
    m["options"] = run_cfg.model.options
    m["eval_seconds"] = time.perf_counter() - t0
    return ev, m


def compare_metric(metric: str, a: str, b: str, evaluations: dict, results: dict) -> dict | None:
    """b's value minus a's for `metric`, with a 95% interval and how it was obtained;
    None when either model lacks the metric. With several seeds, the interval is over
    seeds (differences paired by seed); otherwise over test images or from standard
    errors."""
    ra, rb = results[a], results[b]
    if ra.get(metric) is None or rb.get(metric) is None:
        return None
    seeds_a, seeds_b = ra.get("per_seed", []), rb.get("per_seed", [])
    if len(seeds_a) >= 2 and len(seeds_a) == len(seeds_b):
        pa = [m[metric] for m in seeds_a]
        pb = [m[metric] for m in seeds_b]
        n = len(pa)
        return {**M.seed_paired_interval(pa, pb), "method": f"paired by seed, t with {n - 1} dof"}
    per_image = PER_IMAGE.get(metric)
    pa = evaluations[a].per_image.get(per_image) if per_image else None
    pb = evaluations[b].per_image.get(per_image) if per_image else None
    if pa is not None and pb is not None:
        boot = M.paired_bootstrap(pb, pa)
        return {**boot, "method": "paired bootstrap over test images"}
    diff = float(rb[metric] - ra[metric])
    if metric.endswith("accuracy"):
        n_key = metric.replace("accuracy", "n")
        se = math.hypot(
            M.binomial_se(ra[metric], ra.get(n_key, 1)), M.binomial_se(rb[metric], rb.get(n_key, 1))
        )
        method = "binomial standard errors"
    elif ra.get(f"{metric}_se") is not None and rb.get(f"{metric}_se") is not None:
        se = math.hypot(ra[f"{metric}_se"], rb[f"{metric}_se"])
        method = "bootstrap standard errors"
    else:
        return {"diff": diff, "lo": None, "hi": None, "method": "no uncertainty available"}
    return {"diff": diff, "lo": diff - 1.96 * se, "hi": diff + 1.96 * se, "method": method}


COMPARED = (
    "test_mse",
    "test_psnr",
    "test_denoise_mse",
    "test_inpaint_mse",
    "code_sparsity",
    "test_recon_nll",
    "test_neg_elbo",
    "test_nll_iwae",
    "test_kl",
    "test_distortion",
    "probe_accuracy",
    "prior_sample_fd",
    "expost_sample_fd",
    "latent_prior_fd",
)


def all_comparisons(evaluations: dict, results: dict) -> dict:
    """{"b-a": {metric: comparison}} for every ordered pair of models (b listed after a)."""
    names = list(results)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pair = {}
            for metric in COMPARED:
                c = compare_metric(metric, a, b, evaluations, results)
                if c is not None:
                    pair[metric] = c
            out[f"{b}-{a}"] = pair
    return out


def _jsonable(x):
    """NaN and infinities become None (strict JSON); NumPy scalars become Python ones."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
