"""The article's comparison table, measured: one function per row, each turning a
comparison's numbers (metrics.json) into what was measured and a sentence saying whether
the measurement supports the article's claim. A claim is called supported only where the
verdict rules (verdicts.py) find the difference real.
"""

from __future__ import annotations

from typing import NamedTuple

from aevae_jax.evaluate import catalogue
from aevae_jax.study import verdicts as V
from aevae_jax.writing import number

ARTICLE_HEADER = ["", "Autoencoder", "Variational autoencoder", "Measured",
                  "Do the numbers support it?"]  # fmt: skip


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
    rec = V.better(m, "test_mse", a, b)
    grey_bernoulli = m["config"].get("binarize") == "none" and rb.get("likelihood") == "bernoulli"
    nll_name = "cross-entropy bound (grey levels)" if grey_bernoulli else "NLL"
    has_density = rb.get("test_nll_iwae") is not None and ra.get("test_nll_iwae") is None
    density_clause = (
        f"only the {B} assigns the data a likelihood"
        if has_density
        else "both or neither assign the data a likelihood"
    )
    mse_interval = V.interval_text(V.comparison(m, "test_mse", a, b))
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
        f"test MSE: {A} {number(ra['test_mse'])}, {B} {number(rb['test_mse'])}; PSNR "
        f"{number(ra['test_psnr'])} vs {number(rb['test_psnr'])} dB; {B} {nll_name} (IWAE, "
        f"K={rb.get('iwae_k')}) {number(rb.get('test_nll_iwae'))} nats, {A} "
        f"{number(ra.get('test_nll_iwae')) if ra.get('test_nll_iwae') is not None else 'none'}",
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
        f"{B} q(z|x): mean posterior std in active dimensions {number(spread, 3)}, active "
        f"units {au}/{L}, KL {number(rb.get('test_kl'))} nats; {A}: one point per image",
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
        f"{number(ra.get('test_recon_nll'))}; {B} test -ELBO {number(rb.get('test_neg_elbo'))} "
        f"(one importance sample) = {number(rb.get('test_distortion'))} distortion + "
        f"{number(rb.get('test_kl'))} KL (nats/image{gap_text})",
        f"Supported: each model was trained on the article's loss; the {B}'s bound "
        f"spends {number(rb.get('test_kl'))} nats per image on the KL term that the {A} does "
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
        f"train step, interleaved in one process: {A} {number(ra.get('step_ms'), 3)} ms, "
        f"{B} {number(rb.get('step_ms'), 3)} ms; {B}/{A} {ratio['median']:.2f}x "
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


def _fitted(ra: dict) -> list[tuple[str, float]]:
    """(sampler, FD) of every ex-post sampler scored on the first model, in the
    catalogue's order (the ex-post Gaussian first)."""
    names = [s for s in catalogue.SAMPLERS if s != "prior"]
    return [(s, ra[f"{s}_sample_fd"]) for s in names if ra.get(f"{s}_sample_fd") is not None]


def generative_row(p: Pair) -> dict:
    m, a, b, A, B, ra, rb = p
    fd_a, fd_b = ra.get("prior_sample_fd"), rb.get("prior_sample_fd")
    fitted = _fitted(ra)
    if fd_a is None or fd_b is None:
        gen_measured, gen_verdict = "no labels: domain FD not computed", "Not measured."
    else:
        extra = "".join(
            f", {A} {catalogue.SAMPLERS[s]} {number(fd)} +- {number(ra.get(f'{s}_sample_fd_se'))}"
            for s, fd in fitted[1:]
        )
        gen_measured = (
            f"domain FD of {m['config'].get('test_size', '?')} samples (lower is better, "
            f"+- bootstrap s.e.): {A} z~N(0, I) {number(fd_a)} +- "
            f"{number(ra.get('prior_sample_fd_se'))}"
            f", {A} ex-post Gaussian {number(ra.get('expost_sample_fd'))}{extra}, {B} prior "
            f"{number(fd_b)} +- {number(rb.get('prior_sample_fd_se'))}"
        )
        winner = V.better(m, "prior_sample_fd", a, b)
        if winner == b:
            gen_verdict = (
                f"Supported: {B} prior samples are {fd_a / fd_b:.1f}x closer to the "
                f"data than {A} decodes of N(0, I)"
            )
            if fitted:
                best, fd_ex = min(fitted, key=lambda t: t[1])
                what = "a Gaussian" if best == "expost" else f"an {catalogue.SAMPLERS[best]}"
                ex = V.se_sign(ra, rb, f"{best}_sample_fd", "prior_sample_fd")
                gen_verdict += {
                    -1: f"; but {what} fitted to the {A}'s codes after training does "
                    f"better still (FD {number(fd_ex)}): the {A}'s 'limited' generation comes "
                    "from sampling N(0, I), not from its decoder.",
                    0: f"; {what} fitted to the {A}'s codes after training matches the "
                    f"{B} prior (FD {number(fd_ex)}, no measurable difference).",
                    1: f"; fitting {what} to the {A}'s codes narrows the gap (FD "
                    f"{number(fd_ex)}) but does not close it.",
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
    denoise = V.better(m, "test_denoise_mse", a, b)
    probe = V.better(m, "probe_accuracy", a, b) if ra.get("probe_accuracy") is not None else "n/a"
    measured = (
        f"denoising MSE (20% salt-and-pepper): {A} {number(ra['test_denoise_mse'])}, "
        f"{B} {number(rb['test_denoise_mse'])}"
    )
    if probe != "n/a":
        measured += (
            f"; linear-probe accuracy of codes ({ra.get('probe_n')} test images): "
            f"{A} {number(100 * ra['probe_accuracy'], 1)}%, {B} "
            f"{number(100 * rb['probe_accuracy'], 1)}%"
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
