"""The markdown report of a comparison, and its verdicts.

Everything here reads numbers that compare.py computed; nothing is trained or
evaluated here. Each verdict is a sentence derived from the numbers and their
uncertainty: one model is called better only when the 95% interval of the
difference excludes zero (metrics.json "comparisons"); otherwise the sentence says
there is no measurable difference. So the report says what its own numbers say,
whichever way they fall.
"""

from __future__ import annotations

import json
import math
import os
from typing import NamedTuple

from aevae_jax.evaluate import metrics as M
from aevae_jax.models import model_info

# How each metric reads: a name for sentences and whether lower values are better.
METRICS = {
    "test_mse": ("test MSE (sum over pixels)", "lower"),
    "test_psnr": ("PSNR (dB)", "higher"),
    "test_denoise_mse": ("denoising MSE (20% salt-and-pepper)", "lower"),
    "test_inpaint_mse": ("MSE on hidden pixels (24 of the 49 4x4 patches hidden)", "lower"),
    "code_sparsity": ("code sparsity (mean Hoyer measure)", "higher"),
    "test_bpd_iwae": ("bits per dimension (IWAE)", "lower"),
    "test_recon_nll": ("reconstruction NLL through the code", "lower"),
    "test_neg_elbo": ("test -ELBO (K = 1)", "lower"),
    "test_nll_iwae": ("test NLL (IWAE)", "lower"),
    "test_kl": ("rate KL(q(z|x) || p(z))", "lower"),
    "test_distortion": ("distortion E_q[-log p(x|z)]", "lower"),
    "probe_accuracy": ("linear-probe accuracy", "higher"),
    "prior_sample_fd": ("prior-sample domain FD", "lower"),
    "expost_sample_fd": ("ex-post sample domain FD", "lower"),
    "latent_prior_fd": ("Frechet distance of q(z) to N(0, I)", "lower"),
    "perplexity": ("codebook perplexity", "higher"),
    "conditional_sample_accuracy": ("accuracy of class-conditional samples", "higher"),
}


def _f(v, digits=2):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return f"{v:.{digits}f}"


def comparison(m: dict, metric: str, a: str, b: str) -> dict | None:
    """The comparison of b against a on `metric` (b - a, with its 95% interval)."""
    comps = m.get("comparisons", {})
    if f"{b}-{a}" in comps:
        return comps[f"{b}-{a}"].get(metric)
    c = comps.get(f"{a}-{b}", {}).get(metric)
    if c is None:
        return None
    flip = lambda v: None if v is None else -v
    return {**c, "diff": -c["diff"], "lo": flip(c["hi"]), "hi": flip(c["lo"])}


def direction(c: dict | None) -> int:
    """+1 when b - a is surely positive, -1 surely negative, 0 when the interval holds 0
    (or there is no interval)."""
    if c is None or c.get("lo") is None or c.get("hi") is None:
        return 0
    return 1 if c["lo"] > 0 else -1 if c["hi"] < 0 else 0


def better(m: dict, metric: str, a: str, b: str) -> str | None:
    """Which of a and b is measurably better on `metric`, or None."""
    d = direction(comparison(m, metric, a, b))
    if d == 0:
        return None
    lower_better = METRICS.get(metric, ("", "lower"))[1] == "lower"
    return b if (d < 0) == lower_better else a


def interval(c: dict | None, digits: int = 2) -> str:
    if c is None or c.get("lo") is None:
        return ""
    return (
        f" (difference {c['diff']:+.{digits}f}, 95% interval {c['lo']:+.{digits}f} to "
        f"{c['hi']:+.{digits}f})"
    )


# ----------------------------------------------------------------------------- the article


class Pair(NamedTuple):
    """The article's two models in a comparison: a (the autoencoder) and b (the
    variational one), their upper-case labels and their metrics."""

    m: dict
    a: str
    b: str
    A: str
    B: str
    ra: dict
    rb: dict


def article_rows(m: dict) -> list[dict]:
    """The article's table for the comparison's pair (a: the autoencoder, b: the
    variational one), one dict per row: the two claims, what was measured, and a
    sentence saying whether the measurement supports the claim."""
    a, b = m["config"]["pair"]
    p = Pair(m, a, b, a.upper(), b.upper(), m["models"][a], m["models"][b])
    rows = (objective_row, latent_row, loss_row, sampling_row, generative_row, applications_row)
    return [row for row in (make(p) for make in rows) if row is not None]


def _row(name: str, ae: str, vae: str, measured: str, verdict: str) -> dict:
    return {"row": name, "ae": ae, "vae": vae, "measured": measured, "verdict": verdict}


def objective_row(p: Pair) -> dict:
    m, a, b, A, B, ra, rb = p
    rec = better(m, "test_mse", a, b)
    grey_bernoulli = m["config"].get("binarize") == "none" and rb.get("likelihood") == "bernoulli"
    nll_name = "cross-entropy bound (grey levels)" if grey_bernoulli else "NLL"
    has_density = rb.get("test_nll_iwae") is not None and ra.get("test_nll_iwae") is None
    density_clause = (
        f"only the {B} assigns the data a likelihood"
        if has_density
        else "both or neither assign the data a likelihood"
    )
    mse_interval = interval(comparison(m, "test_mse", a, b))
    rec_text = {
        a: f"the {A} reconstructs better{mse_interval}",
        b: f"the {B} reconstructs better{mse_interval}",
        None: f"there is no measurable difference in reconstruction{mse_interval}",
    }[rec]
    support = (
        "Supported"
        if rec == a and has_density
        else "Partly supported"
        if rec == a or has_density
        else "Not supported"
    )
    return _row(
        "Objective",
        "compress and reconstruct",
        "model the data distribution, generate",
        f"test MSE: {A} {_f(ra['test_mse'])}, {B} {_f(rb['test_mse'])}; PSNR "
        f"{_f(ra['test_psnr'])} vs {_f(rb['test_psnr'])} dB; {B} {nll_name} (IWAE, "
        f"K={rb.get('iwae_k')}) {_f(rb.get('test_nll_iwae'))} nats, {A} "
        f"{_f(ra.get('test_nll_iwae')) if ra.get('test_nll_iwae') is not None else 'none'}",
        f"{support}: {rec_text}, and {density_clause}.",
    )


def latent_row(p: Pair) -> dict:
    m, _, _, A, B, _, rb = p
    au = rb.get("active_units")
    L = len(rb.get("kl_per_dim", [])) or m["config"]["latent_dim"]
    spread = rb.get("posterior_std_active")
    distributional = spread is not None and spread > 0.05 and au is not None and au > 0
    most_active = au is not None and au >= L / 2
    return _row(
        "Latent space",
        "fixed, deterministic",
        "a distribution (Gaussian: mean and variance)",
        f"{B} q(z|x): mean posterior std in active dimensions {_f(spread, 3)}, active "
        f"units {au}/{L}, KL {_f(rb.get('test_kl'))} nats; {A}: one point per image",
        f"Supported: each {B} code is a Gaussian of non-trivial width, and {au} of {L} "
        "dimensions carry information."
        if distributional and most_active
        else f"Partly: the {B} codes are Gaussians, but only {au} of {L} dimensions carry "
        "information; the others have collapsed to the prior."
        if distributional
        else f"Not supported: the {B} posterior is not a spread-out Gaussian here.",
    )


def loss_row(p: Pair) -> dict:
    _, _, _, A, B, ra, rb = p
    # The K = 1 estimate and the two terms use independent draws, so their gap is noise
    # around zero; a bug (a missing term, a wrong sign) shows as a gap of many standard
    # errors, so the check allows four (a false alarm about once in 16,000 runs).
    gap = rb.get("elbo_gap")
    se = None if gap is None else (gap["hi"] - gap["lo"]) / (2 * 1.96)
    consistent = gap is not None and abs(gap["diff"]) <= 4 * se
    gap_text = "" if gap is None else f"; gap {gap['diff']:+.2f} nats, s.e. {se:.2f}"
    return _row(
        "Loss",
        "reconstruction, MSE",
        "-E_q(z|x)[log p(x|z)] + KL(q(z|x) || p(z))",
        f"{A} test {ra.get('likelihood', 'mse')} reconstruction "
        f"{_f(ra.get('test_recon_nll'))}; {B} test -ELBO {_f(rb.get('test_neg_elbo'))} "
        f"(one importance sample) = {_f(rb.get('test_distortion'))} distortion + "
        f"{_f(rb.get('test_kl'))} KL (nats/image{gap_text})",
        f"Supported: each model was trained on the article's loss; the {B}'s bound "
        f"spends {_f(rb.get('test_kl'))} nats per image on the KL term that the {A} does "
        "not pay, and its two terms add up to the bound within sampling noise."
        if consistent
        else f"Not checked: the {B}'s -ELBO and its terms are not both measured, or they "
        "differ by more than four standard errors; see metrics.json (elbo_gap).",
    )


def sampling_row(p: Pair) -> dict | None:
    m, a, b, A, B, ra, rb = p
    ratio = m.get("step_time_ratios", {}).get(f"{b}/{a}")
    if ratio is None:
        return None
    slower = ratio["q1"] > 1.0
    faster = ratio["q3"] < 1.0
    return _row(
        "Sampling",
        "not applicable",
        "reparameterised samples during training",
        f"train step, interleaved in one process: {A} {_f(ra.get('step_ms'), 3)} ms, "
        f"{B} {_f(rb.get('step_ms'), 3)} ms; {B}/{A} {ratio['median']:.2f}x "
        f"(interquartile range of per-round ratios {ratio['q1']:.2f}-{ratio['q3']:.2f})",
        f"Supported: the {B} draws a reparameterised z per image per step, which with "
        f"its larger encoder head costs {ratio['median'] - 1:+.0%} step time here."
        if slower
        else f"Supported in kind (the {B} samples during training), but its step is "
        "not measurably slower here."
        if not faster
        else f"Supported in kind (the {B} samples during training), though its step "
        "was faster here.",
    )


def generative_row(p: Pair) -> dict:
    m, a, b, A, B, ra, rb = p
    fd_a, fd_b, fd_ex = (
        ra.get("prior_sample_fd"),
        rb.get("prior_sample_fd"),
        ra.get("expost_sample_fd"),
    )
    if fd_a is None or fd_b is None:
        gen_measured, gen_verdict = "no labels: domain FD not computed", "Not measured."
    else:
        gen_measured = (
            f"domain FD of {m['config'].get('test_size', '?')} samples (lower is better, "
            f"+- bootstrap s.e.): {A} z~N(0, I) {_f(fd_a)} +- {_f(ra.get('prior_sample_fd_se'))}"
            f", {A} ex-post Gaussian {_f(fd_ex)}, {B} prior {_f(fd_b)} +- "
            f"{_f(rb.get('prior_sample_fd_se'))}"
        )
        winner = better(m, "prior_sample_fd", a, b)
        if winner == b:
            gen_verdict = (
                f"Supported: {B} prior samples are {fd_a / fd_b:.1f}x closer to the "
                f"data than {A} decodes of N(0, I)"
            )
            if fd_ex is not None:
                ex = _fd_vs(ra, rb, "expost_sample_fd", "prior_sample_fd")
                gen_verdict += {
                    -1: f"; but a Gaussian fitted to the {A}'s codes after training does "
                    f"better still (FD {_f(fd_ex)}): the {A}'s 'limited' generation comes "
                    "from sampling N(0, I), not from its decoder.",
                    0: f"; a Gaussian fitted to the {A}'s codes after training matches the "
                    f"{B} prior (FD {_f(fd_ex)}, no measurable difference).",
                    1: f"; fitting a Gaussian to the {A}'s codes narrows the gap (FD "
                    f"{_f(fd_ex)}) but does not close it.",
                }[ex]
            else:
                gen_verdict += "."
        elif winner == a:
            gen_verdict = (
                f"Not supported: {A} decodes of N(0, I) are closer to the data than "
                f"{B} prior samples here."
            )
        else:
            gen_verdict = "Not supported: no measurable difference between the two models' samples."
    return _row(
        "Generative ability",
        "limited",
        "high: new samples from the prior",
        gen_measured,
        gen_verdict,
    )


def applications_row(p: Pair) -> dict:
    m, a, b, A, B, ra, rb = p
    denoise = better(m, "test_denoise_mse", a, b)
    probe = better(m, "probe_accuracy", a, b) if ra.get("probe_accuracy") is not None else "n/a"
    measured = (
        f"denoising MSE (20% salt-and-pepper): {A} {_f(ra['test_denoise_mse'])}, "
        f"{B} {_f(rb['test_denoise_mse'])}"
    )
    if probe != "n/a":
        measured += (
            f"; linear-probe accuracy of codes ({ra.get('probe_n')} test images): "
            f"{A} {_f(100 * ra['probe_accuracy'], 1)}%, {B} "
            f"{_f(100 * rb['probe_accuracy'], 1)}%"
        )
    parts = [
        f"the {denoise.upper()} denoises better"
        if denoise
        else "no measurable difference in denoising"
    ]
    if probe != "n/a":
        parts.append(
            f"the {probe.upper()}'s codes are the better features"
            if probe
            else "no measurable difference in probe accuracy"
        )
    wins = [denoise == a] + ([probe == a] if probe != "n/a" else [])
    support = "Supported" if all(wins) else "Partly supported" if any(wins) else "Not supported"
    return _row(
        "Applications",
        "denoising, dimensionality reduction, features",
        "synthesis, generative modelling, augmentation",
        measured,
        f"{support} for the {A}'s uses: {'; '.join(parts)}; the {B}'s synthesis is "
        "the generative row above.",
    )


def _fd_vs(ra: dict, rb: dict, key_a: str, key_b: str) -> int:
    """Sign of ra[key_a] - rb[key_b] when it exceeds 1.96 combined bootstrap s.e., else 0."""
    va, vb = ra.get(key_a), rb.get(key_b)
    sa, sb = ra.get(f"{key_a}_se"), rb.get(f"{key_b}_se")
    if None in (va, vb, sa, sb):
        return 0
    margin = 1.96 * math.hypot(sa, sb)
    return 1 if va - vb > margin else -1 if vb - va > margin else 0


# ----------------------------------------------------------------------------- claims


def check_claims(m: dict) -> list[dict]:
    """Every registered claim of every compared model whose reference is at hand:
    {"model", "claim", "measured", "supported" (True, False or None), "verdict"}."""
    out = []
    models = m["models"]
    for name, r in models.items():
        for claim in model_info(name).claims:
            label, _ = METRICS.get(claim.metric, (claim.metric, claim.better))
            value = r.get(claim.metric)
            if value is None or (claim.applies and not claim.applies(r.get("options", {}))):
                continue
            if isinstance(claim.than, str) and claim.than != "chance":
                if claim.than not in models:
                    continue
                ref = models[claim.than].get(claim.metric)
                c = comparison(m, claim.metric, claim.than, name)
                d = direction(c)
                want = -1 if claim.better == "lower" else 1
                supported = None if d == 0 else d == want
                measured = f"{label}: {name} {_f(value)}, {claim.than} {_f(ref)}{interval(c)}"
            else:
                ref = (
                    1.0 / m["config"]["num_classes"]
                    if claim.than == "chance"
                    else claim.than(r)
                    if callable(claim.than)
                    else claim.than
                )
                n = r.get(claim.metric.replace("accuracy", "n"))
                se = M.binomial_se(value, n) if claim.metric.endswith("accuracy") and n else 0.0
                hi, lo = value + 1.96 * se, value - 1.96 * se
                supported = lo > ref if claim.better == "higher" else hi < ref
                what = "chance" if claim.than == "chance" else "the threshold"
                measured = f"{label}: {name} {_f(value, 3)}, {what} {_f(ref, 3)}"
            verdict = {True: "Supported", False: "Not supported", None: "No measurable difference"}[
                supported
            ]
            out.append(
                {
                    "model": name,
                    "claim": claim.text,
                    "measured": measured,
                    "supported": supported,
                    "verdict": verdict,
                }
            )
    return out


# ----------------------------------------------------------------------------- the report


def markdown_row(cells: list[str]) -> str:
    """One table row; pipes inside a cell (as in q(z|x)) are escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


# Columns of the all-models table: (metrics.json key, header, digits).
COLUMNS = [
    ("test_mse", "MSE", 2),
    ("test_psnr", "PSNR dB", 2),
    ("test_denoise_mse", "denoise MSE", 2),
    ("test_inpaint_mse", "inpaint MSE", 2),
    ("test_neg_elbo", "-ELBO", 2),
    ("test_nll_iwae", "NLL (IWAE)", 2),
    ("test_bpd_iwae", "bits/dim", 3),
    ("test_kl", "KL", 2),
    ("active_units", "active units", 0),
    ("probe_accuracy", "probe acc.", 3),
    ("prior_sample_fd", "prior FD", 2),
    ("expost_sample_fd", "ex-post FD", 2),
    ("latent_prior_fd", "q(z) FD to N(0,I)", 2),
    ("perplexity", "perplexity", 1),
    ("dead_codes", "dead codes", 0),
    ("code_sparsity", "sparsity", 3),
    ("conditional_sample_accuracy", "cond. sample acc.", 3),
    ("step_ms", "step ms", 3),
    ("parameters", "parameters", 0),
]


def models_table(m: dict) -> list[str]:
    header = ["model", *[h for _, h, _ in COLUMNS]]
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    for name, r in m["models"].items():
        cells = [name]
        for key, _, digits in COLUMNS:
            v, sd = r.get(key), r.get("std", {}).get(key)
            cell = "n/a" if v is None else str(v) if isinstance(v, int) else _f(v, digits)
            cells.append(cell if sd is None or v is None else f"{cell} ± {_f(sd, digits)}")
        lines.append(markdown_row(cells))
    return lines


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
    with open(os.path.join(directory, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    path = os.path.join(directory, "report.md")
    write_report(path, metrics, metrics.get("command", "aevae compare"))
    return path


def write_report(path: str, metrics: dict, command: str) -> None:
    """report.md: the article's table for the pair, every model's numbers, the
    literature's claims checked, and the figures."""
    cfg = metrics["config"]
    names = list(metrics["models"])
    lines = [
        f"# {', '.join(names)} on {metrics['dataset']}",
        "",
        f"Produced by `{command}`.",
        f"Every model: {cfg['backbone']} backbone, hidden {cfg['hidden']}, latent "
        f"{cfg['latent_dim']}, {cfg['epochs']} epochs of {cfg['train_size']} training images, "
        f"batch {cfg['batch_size']}, {cfg.get('optimizer', 'adam')} lr {cfg['lr']} "
        f"({cfg.get('schedule', 'constant')}), binarization {cfg['binarize']}, "
        f"{seeds_text(cfg)}. Test split: {cfg['test_size']} images, binarized once with a "
        "fixed draw where training binarizes.",
    ]
    a, b = cfg["pair"]
    if a in metrics["models"] and b in metrics["models"]:
        lines += [
            "",
            f"## The article's table: {a} vs {b}",
            "",
            "| | Autoencoder | Variational autoencoder | Measured | Do the numbers support it? |",
            "|---|---|---|---|---|",
        ]
        for r in article_rows(metrics):
            lines.append(markdown_row([r[k] for k in ("row", "ae", "vae", "measured", "verdict")]))
    lines += ["", "## Every model", "", *models_table(metrics)]
    claims = check_claims(metrics)
    if claims:
        lines += [
            "",
            "## What the literature says, checked",
            "",
            "| model | claim | measured | verdict |",
            "|---|---|---|---|",
        ]
        for c in claims:
            lines.append(markdown_row([c["model"], c["claim"], c["measured"], c["verdict"]]))
    lines += ["", "## Notes", ""]
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
        f"true prior and beta = 1; NLL (IWAE) uses K = {cfg.get('iwae_k')} samples (one for "
        "point posteriors such as the VQ-VAE's, where one is exact) and is an upper bound.",
        "- q(z) FD to N(0,I): the Frechet distance between the moments of the aggregate "
        "posterior on the test split (codes, or q(z|x) averaged over images) and the prior.",
        "- A difference is called only when its 95% interval excludes zero: paired bootstrap "
        "over test images for per-image metrics, binomial standard errors for accuracies, "
        "bootstrap standard errors for Frechet distances. Step times come from an "
        "interleaved benchmark in one process, not from the training runs' wall clocks.",
        "- Every number is of each run's final parameters (`aevae evaluate --checkpoint "
        "latest`); `aevae evaluate` scores the best checkpoint by default.",
    ]
    n_seeds = len(cfg.get("seeds") or ())
    lines.append(
        f"- {n_seeds} seeds per model: each value is the mean over seeds ± their sample "
        "standard deviation, and differences between models are instead called from the "
        f"per-seed differences (paired by seed), with a t interval on {n_seeds - 1} degrees "
        "of freedom; the article's table uses those intervals. Claims checked against a "
        "fixed threshold use the mean over seeds with one test set's uncertainty."
        if n_seeds >= 2
        else "- One seed per model: the spread over seeds is not measured here (`--seeds "
        "0,1,2` measures it)."
    )
    figures = figure_list(os.path.dirname(os.path.abspath(path)), names)
    if figures:
        lines += ["", "## Figures", ""]
        for caption, file in figures:
            lines += [f"{caption}:", f"![{file}]({file})", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
