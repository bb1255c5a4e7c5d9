"""`aevae zoo`: every registered model (or a list) under one budget, in one table.

A zoo is a comparison (compare.py trains, evaluates, times and draws every model alike)
summarised as one row per model:

    out/zoo.json   {"command", "wall_seconds", "config", "columns", "rows", "claims",
                    "skipped"}; a metric that does not apply to a model is "n/a"
    out/zoo.md     the table, the literature's claims checked from its own numbers,
                   and the overview figure
    out/overview.png   a row of reconstructions and a row of samples per model

with everything `aevae compare` writes beside them (metrics.json, report.md, figures,
one run directory per model).
"""

from __future__ import annotations

import os
import sys
import time

from aevae_jax.config import RunConfig
from aevae_jax.errors import require
from aevae_jax.evaluate import catalogue
from aevae_jax.evaluate.scores import EVAL_NOISE, inpainting_text
from aevae_jax.models import model_info, model_names
from aevae_jax.study.compare import run_compare
from aevae_jax.study.report import claims_section, models_table, samplers_section, seeds_text
from aevae_jax.writing import write_json, write_text

# The zoo's order: reconstruction models, then the VAE family, then the rest (any
# model registered outside the package comes last, alphabetically).
ORDER = ("ae", "dae", "sparse_ae", "mae", "rae_l2", "rae_gp", "wae", "vae", "dvae", "beta_vae",
         "beta_tc_vae", "factor_vae", "dip_vae_i", "dip_vae_ii", "iwae", "miwae", "ciwae",
         "piwae", "planar_vae", "iaf_vae", "info_vae", "vamp_vae", "two_layer_vae",
         "ladder_vae", "hvae", "two_stage_vae", "cvae", "vqvae", "rq_vae", "fsq", "gumbel_vae",
         "aae")  # fmt: skip


def zoo_models(names=None, labelled: bool = True) -> tuple[tuple[str, ...], dict[str, str]]:
    """(models to train, {skipped model: why}): `names` or every registered model, in
    the zoo's order; models that need labels are skipped on unlabelled data."""
    names = list(names) if names else model_names()
    rank = {n: i for i, n in enumerate(ORDER)}
    names.sort(key=lambda n: (rank.get(n, len(ORDER)), n))
    skipped = {}
    if not labelled:
        skipped = {n: "needs class labels" for n in names if model_info(n).needs_labels}
    return tuple(n for n in names if n not in skipped), skipped


def zoo_rows(metrics: dict) -> dict[str, dict]:
    """{model: {column key: value or "n/a", and key_std where seeds give a spread}} from
    a comparison's metrics."""
    rows = {}
    keys = [c.key for c in catalogue.columns()]
    for name, r in metrics["models"].items():
        row = {key: ("n/a" if r.get(key) is None else r[key]) for key in keys}
        spread = r.get("std", {})
        row.update({f"{key}_std": spread[key] for key in keys if key in spread})
        rows[name] = row
    return rows


def zoo_markdown(zoo: dict, metrics: dict) -> str:
    """zoo.md from zoo.json's dict and the comparison's metrics."""
    cfg = zoo["config"]
    lines = [
        f"# The autoencoder zoo on {zoo['dataset']}",
        "",
        f"Produced by `{zoo['command']}` in {zoo['wall_seconds']:.0f} s "
        "(training, evaluation, timing and figures).",
        f"Every model: {cfg['backbone']} backbone, hidden {cfg['hidden']}, latent "
        f"{cfg['latent_dim']}, {cfg['epochs']} epochs of {cfg['train_size']} training images, "
        f"batch {cfg['batch_size']}, {cfg['optimizer']} lr {cfg['lr']}, binarization "
        f"{cfg['binarize']}, {seeds_text(cfg)}; IWAE K = {cfg['iwae_k']}. Test split: "
        f"{cfg['test_size']} images.",
        "",
        *models_table(metrics),
        *samplers_section(metrics),
    ]
    if zoo["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{n} ({why})" for n, why in zoo["skipped"].items())]
    lines += [
        "",
        "Columns: MSE summed over pixels per image and PSNR, through the code; denoise MSE "
        f"from inputs with {EVAL_NOISE[1]:.0%} {EVAL_NOISE[0].replace('_', '-')} pixels; "
        "inpaint MSE summed over the hidden pixels when "
        f"{inpainting_text(cfg.get('image_shape'))} are hidden (the masked AE is told which); "
        "-ELBO "
        "(K = 1) and NLL (IWAE) in nats per image, also in bits per dimension where the "
        "likelihood is a probability mass function of the data; KL is the rate; active "
        "units have Cov_x E[z|x] > 0.01; probe: a linear classifier on the codes; FD: the "
        "Frechet distance of a small CNN's features of samples to the test images' (prior: "
        "the model's own prior, or z ~ N(0, I); ex-post: a Gaussian fitted to the training "
        "codes); q(z) FD: of the codes' moments to the model's prior (N(0, I) without one); KL: "
        "the rate against the model's own prior; sparsity: mean Hoyer sparsity of "
        "the codes (1: one active unit); step ms: median train step in an interleaved "
        "benchmark. n/a: the metric does not apply.",
    ]
    lines += claims_section(zoo["claims"])
    lines += [
        "",
        "Uncertainty, figures and every model's further numbers: [report.md](report.md).",
        "",
        "![overview.png](overview.png)",
    ]
    return "\n".join(lines) + "\n"


def run_zoo(
    cfg: RunConfig,
    models=None,
    options: dict | None = None,
    iwae_k: int = 100,
    timing_rounds: int = 5,
    resume: bool = False,
    quiet: bool = False,
    command: str = "aevae zoo",
    seeds=None,
    devices: int | None = None,
    samplers=None,
) -> dict:
    """Train and evaluate the zoo (see the module docstring); returns zoo.json's dict.
    With `seeds`, every model trains each seed at once and the table shows mean ± std."""
    from aevae_jax.data.sources import load_dataset

    t0 = time.perf_counter()
    data = load_dataset(cfg.data.dataset, cfg.data.data_dir)
    names, skipped = zoo_models(models, labelled=data.y_train is not None)
    require(len(names) > 0, "no model of the zoo can train on this data set")
    for name, why in skipped.items():
        print(f"[zoo] skipping {name}: {why}", file=sys.stderr)
    pair = ("ae", "vae")  # the article's table, when both are in the zoo
    metrics = run_compare(
        cfg, names, options, pair, iwae_k, timing_rounds, resume, quiet, command, dataset=data,
        seeds=seeds, devices=devices, samplers=samplers,
    )  # fmt: skip
    zoo = {
        "command": command,
        "wall_seconds": time.perf_counter() - t0,
        "dataset": metrics["dataset"],
        "config": metrics["config"],
        "columns": [{"key": c.key, "header": c.header} for c in catalogue.columns()],
        "rows": zoo_rows(metrics),
        "claims": metrics["claims"],
        "skipped": skipped,
    }
    write_json(os.path.join(cfg.out, "zoo.json"), zoo)
    write_text(os.path.join(cfg.out, "zoo.md"), zoo_markdown(zoo, metrics))
    return zoo
