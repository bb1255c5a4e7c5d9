"""The markdown report of a comparison: the article's table for its pair (article.py),
every model's numbers (the catalogue's columns), the literature's claims checked
(claims.py), notes on how to read them, and the figures.

Everything here reads numbers that compare.py computed and stored in metrics.json;
nothing is trained or evaluated here, so `aevae report` can write a report anew.
"""

from __future__ import annotations

import json
import os

from aevae_jax.evaluate import catalogue
from aevae_jax.evaluate.groups import PR_SAMPLES
from aevae_jax.study.article import ARTICLE_HEADER, article_rows
from aevae_jax.study.claims import check_claims
from aevae_jax.writing import markdown_table, number, write_json, write_text

# The K = 1 -ELBO and its two terms use independent draws, so their gap is noise around
# zero; a bug or a KL that is not the rate shows as a gap of many standard errors. Four
# allow a false alarm about once in 16,000 models.
ELBO_GAP_SES = 4


def models_table(m: dict) -> list[str]:
    """The all-models table: a row per model, the catalogue's columns, ± std over seeds."""
    cols = catalogue.columns()
    rows = []
    for name, r in m["models"].items():
        cells = [name]
        for col in cols:
            v, sd = r.get(col.key), r.get("std", {}).get(col.key)
            cell = number(v, col.digits)
            cells.append(cell if sd is None or v is None else f"{cell} ± {number(sd, col.digits)}")
        rows.append(cells)
    return markdown_table(["model", *[c.header for c in cols]], rows)


def samplers_section(m: dict) -> list[str]:
    """A row per model and sampler with scored samples: FD ± its bootstrap s.e., and the
    samples' precision and recall (none of these for a comparison without a classifier)."""
    rows = []
    for name, r in m["models"].items():
        for s, words in catalogue.SAMPLERS.items():
            fd = r.get(f"{s}_sample_fd")
            if fd is None:
                continue
            se = r.get(f"{s}_sample_fd_se")
            cells = [number(fd, 2) + ("" if se is None else f" ± {number(se, 2)}")]
            cells += [number(r.get(f"{s}_sample_{w}"), 3) for w in ("precision", "recall")]
            rows.append([name, words, *cells])
    if not rows:
        return []
    header = ["model", "sampler", "sample FD ± s.e.", "precision", "recall"]
    note = (
        "FD: the Frechet distance of the domain classifier's features of as many "
        "samples as test images to the test images'; s.e.: its bootstrap standard "
        "error. Precision and recall: Kynkaanniemi et al. 2019 (k = 3), of the first "
        f"{PR_SAMPLES:,} samples and test images, same features."
    )
    return ["", "## Samples, by sampler", "", *markdown_table(header, rows), "", note]


def elbo_gap_ses(r: dict) -> float | None:
    """How many standard errors a model's -ELBO lies from its distortion + KL (None when
    not both are measured)."""
    gap = r.get("elbo_gap")
    if gap is None or gap.get("lo") is None:
        return None
    se = (gap["hi"] - gap["lo"]) / (2 * 1.96)
    return abs(gap["diff"]) / se if se > 0 else float("inf")


def seeds_text(cfg: dict) -> str:
    """'seed 0', or 'seeds 0, 1, 2 (trained together)'."""
    seeds = cfg.get("seeds")
    if not seeds:
        return f"seed {cfg['seed']}"
    return f"seeds {', '.join(map(str, seeds))} (trained together)"


FIGURE_CAPTIONS = {
    "overview.png": "Every model at a glance: a row of reconstructions and a row of samples "
    "(ex-post for models without a prior)",
    "reconstructions.png": "Reconstructions (test inputs, then one row per model)",
    "samples.png": "Samples: each model's prior (z ~ N(0, I) for models without one), and a "
    "Gaussian fitted to the training codes (ex-post) for those",
    "interpolations.png": "Interpolations between test images in code space",
    "latent_2d.png": "Codes of the test images, coloured by class",
    "training_curves.png": "Training curves (stages separated by a vertical line)",
    "rate_distortion.png": "Rate (KL) against distortion for the models with a Gaussian q(z|x)",
}
MODEL_FIGURES = {
    "_by_class.png": "{}: class-conditional samples, a row per label",
    "_codebook.png": "{}: codebook use",
}


def figure_list(directory: str, models) -> list[tuple[str, str]]:
    """[(caption, file)] of the figures present in `directory`, in reading order."""
    present = set(os.listdir(directory)) if os.path.isdir(directory) else set()
    out = [(caption, f) for f, caption in FIGURE_CAPTIONS.items() if f in present]
    for name in models:
        for suffix, caption in MODEL_FIGURES.items():
            if name + suffix in present:
                out.append((caption.format(name), name + suffix))
    return out


def rewrite(directory: str) -> str:
    """report.md of a comparison directory, written anew from its metrics.json (after a
    change of the verdict logic, no retraining needed); returns the report's path."""
    with open(os.path.join(directory, "metrics.json")) as f:
        metrics = json.load(f)
    metrics["claims"] = check_claims(metrics)
    write_json(os.path.join(directory, "metrics.json"), metrics)
    path = os.path.join(directory, "report.md")
    write_report(path, metrics, metrics.get("command", "aevae compare"))
    return path


def write_report(path: str, metrics: dict, command: str) -> None:
    """report.md: the heading, the article's table for the pair, every model's numbers,
    the literature's claims checked, the notes and the figures."""
    names = list(metrics["models"])
    lines = [
        *heading(metrics, command),
        *article_section(metrics),
        "", "## Every model", "", *models_table(metrics),
        *samplers_section(metrics),
        *claims_section(check_claims(metrics)),
        "", "## Notes", "", *notes(metrics),
        *figures_section(os.path.dirname(os.path.abspath(path)), names),
    ]  # fmt: skip
    write_text(path, "\n".join(lines) + "\n")


def heading(metrics: dict, command: str) -> list[str]:
    cfg = metrics["config"]
    return [
        f"# {', '.join(metrics['models'])} on {metrics['dataset']}",
        "",
        f"Produced by `{command}`.",
        f"Every model: {cfg['backbone']} backbone, hidden {cfg['hidden']}, latent "
        f"{cfg['latent_dim']}, {cfg['epochs']} epochs of {cfg['train_size']} training images, "
        f"batch {cfg['batch_size']}, {cfg.get('optimizer', 'adam')} lr {cfg['lr']} "
        f"({cfg.get('schedule', 'constant')}), binarization {cfg['binarize']}, "
        f"{seeds_text(cfg)}. Test split: {cfg['test_size']} images, binarized once with a "
        "fixed draw where training binarizes.",
    ]


def article_section(metrics: dict) -> list[str]:
    a, b = metrics["config"]["pair"]
    if a not in metrics["models"] or b not in metrics["models"]:
        return []
    keys = ("row", "ae", "vae", "measured", "verdict")
    rows = [[r[k] for k in keys] for r in article_rows(metrics)]
    return ["", f"## The article's table: {a} vs {b}", "", *markdown_table(ARTICLE_HEADER, rows)]


def claims_section(claims: list[dict]) -> list[str]:
    if not claims:
        return []
    rows = [[c["model"], c["claim"], c["measured"], c["verdict"]] for c in claims]
    header = ["model", "claim", "measured", "verdict"]
    return ["", "## What the literature says, checked", "", *markdown_table(header, rows)]


def notes(metrics: dict) -> list[str]:
    """How to read the numbers: units, estimators, the verdict rule, the seeds, and any
    model whose -ELBO does not decompose into its distortion and KL."""
    cfg = metrics["config"]
    lines = []
    if metrics.get("classifier_accuracy") is not None:
        lines.append(
            f"- Domain FD uses the 128-d features of a small CNN trained on {metrics['dataset']} "
            f"(test accuracy {100 * metrics['classifier_accuracy']:.1f}%), between "
            f"{cfg['test_size']} samples and the test images; it also labels the conditional "
            "samples."
        )
    lines += [
        "- MSE is summed over pixels per image (the article's ||X - X_hat||^2), PSNR in dB, "
        "-ELBO and NLL in nats per image; reconstructions go through the code (the "
        "Gaussian's mean). The -ELBO is the importance-weighted estimate with one sample, the "
        f"model's own prior and beta = 1; NLL (IWAE) uses K = {cfg.get('iwae_k')} samples (one "
        "for point posteriors such as the VQ-VAE's, where one is exact) and is an upper bound.",
        "- KL is the rate against each model's own prior (in closed form where one exists, "
        "else a Monte Carlo estimate); q(z) FD to prior: the Frechet distance between the "
        "moments of the aggregate posterior on the test split (codes, or q(z|x) averaged "
        "over images) and the model's prior (N(0, I) for models without one).",
        "- A difference is called only when its 95% interval excludes zero: paired bootstrap "
        "over test images for per-image metrics, binomial standard errors for accuracies, "
        "bootstrap standard errors for Frechet distances. Step times come from an "
        "interleaved benchmark in one process, not from the training runs' wall clocks.",
        "- Every number is of each run's final parameters (`aevae evaluate --checkpoint "
        "latest`); `aevae evaluate` scores the best checkpoint by default.",
        seeds_note(len(cfg.get("seeds") or ())),
    ]
    return lines + elbo_gap_notes(metrics)


def seeds_note(n_seeds: int) -> str:
    if n_seeds < 2:
        return ("- One seed per model: the spread over seeds is not measured here (`--seeds "
                "0,1,2` measures it).")  # fmt: skip
    return (
        f"- {n_seeds} seeds per model: each value is the mean over seeds ± their sample "
        "standard deviation, and differences between models are instead called from the "
        f"per-seed differences (paired by seed), with a t interval on {n_seeds - 1} degrees "
        "of freedom; the article's table uses those intervals. Claims checked against a "
        "fixed threshold use the mean over seeds with one test set's uncertainty."
    )


def elbo_gap_notes(metrics: dict) -> list[str]:
    """A warning for every model whose test -ELBO differs from distortion + KL by more than
    ELBO_GAP_SES standard errors: its reported KL is then not the rate of its bound."""
    out = []
    for name, r in metrics["models"].items():
        ses = elbo_gap_ses(r)
        if ses is not None and ses > ELBO_GAP_SES:
            g = r["elbo_gap"]
            out.append(
                f"- **{name}: the -ELBO does not decompose.** Its test -ELBO differs from "
                f"distortion + KL by {g['diff']:+.2f} nats (95% interval {g['lo']:+.2f} to "
                f"{g['hi']:+.2f}, {ses:.0f} standard errors): the KL it reports is not the "
                "rate of the bound it is scored on (see metrics.json, elbo_gap)."
            )
    return out


def figures_section(directory: str, names) -> list[str]:
    figures = figure_list(directory, names)
    if not figures:
        return []
    lines = ["", "## Figures", ""]
    for caption, file in figures:
        lines += [f"{caption}:", f"![{file}]({file})", ""]
    return lines
