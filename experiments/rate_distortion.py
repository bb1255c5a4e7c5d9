"""The rate-distortion trade-off of the beta-VAE: what the KL weight buys and costs.

The article: a VAE's KL term regularises the code towards N(0, I) at the price of
reconstruction, and the beta-VAE weights that term, trading one for the other. Measured
on binarized Fashion-MNIST (MLP 400 hidden units, latent 16) for beta in 0.25 ... 8, per
seed on the test split: the rate R = KL(q(z|x) || N(0, I)) (analytic, nats, mean over
images), the distortion D = E_q[-log p(x|z)] (one reparameterised sample per image,
nats), the beta = 1 bound -ELBO (the project's K = 1 estimate, an independent draw:
about R + D), the squared error of the reconstruction through the mean code, and the
active units (Cov_x E[z|x] > 0.01). beta = 1 is the standard VAE of the other
experiments (`vae`, shared through the cache), every other beta a `beta_vae` with a
constant weight; the standard AE, trained on squared error, is the reference on the
squared-error panel.

Verdicts: does the rate fall and the distortion rise at each step between neighbouring
betas by more than the seed spread, and does the AE reconstruct better than the VAE?

The betas double from 0.25 to 8: six points, the most the 8-minute budget of the
default run allows at 10 epochs. --quick trains betas 1 and 4 only.

    python experiments/rate_distortion.py [--quick] [--betas 0.25,0.5,1,2,4,8]
"""

from __future__ import annotations

import itertools
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import scaffold as X

from aevae_jax.errors import UserError, require

BETAS = "0.25,0.5,1,2,4,8"
QUICK_BETAS = "1,4"
KEYS = {"distortion": 0, "elbo": 1}  # fold_in indices of each seed's evaluation draws


def parse_betas(text: str) -> list[float]:
    try:
        betas = sorted({float(b) for b in text.split(",") if b.strip()})
    except ValueError:
        raise UserError(f"--betas must be numbers separated by commas, got {text!r}") from None
    require(
        len(betas) >= 2 and all(b > 0 for b in betas),
        f"--betas needs at least two positive values, got {text!r}",
    )
    return betas


def beta_config(s: X.Setting, data: X.Data, beta: float):
    """beta = 1: the standard VAE shared with the other experiments; else a beta-VAE."""
    if beta == 1.0:
        return X.run_config(s, data, "vae")
    return X.run_config(s, data, "beta_vae", options={"beta": float(beta)})


def measure(result, test_x) -> dict:
    """Rate, distortion, -ELBO, squared error and active units of one seed's model."""
    from aevae_jax.evaluate.groups import gaussian_code_metrics
    from aevae_jax.evaluate.split import encode_split

    key = jax.random.fold_in(jax.random.key(result.seed), 3)
    enc = encode_split(result.model, result.params, test_x)
    gauss, _ = gaussian_code_metrics(
        result.model,
        result.params,
        enc,
        test_x,
        None,
        jax.random.fold_in(key, KEYS["distortion"]),
        500,
    )
    scores = X.scores(result, test_x, jax.random.fold_in(key, KEYS["elbo"]))
    return {
        "kl": gauss["test_kl"],
        "distortion": gauss["test_distortion"],
        "neg_elbo": float(scores["neg_elbo"].mean()),
        "sse": float(scores["recon_sse"].mean()),
        "active_units": gauss["active_units"],
    }


def steps(betas: list[float], per_beta: dict, metric: str) -> list[dict]:
    """Each step between neighbouring betas: the change of `metric` and whether it
    exceeds the seed spread."""
    out = []
    for lo, hi in itertools.pairwise(betas):
        a = [m[metric] for m in per_beta[lo]]
        b = [m[metric] for m in per_beta[hi]]
        out.append(
            {
                "from": lo,
                "to": hi,
                "change": X.mean_std(b)[0] - X.mean_std(a)[0],
                "measurable": X.differs(a, b),
            }
        )
    return out


def trend_sentence(name: str, direction: str, moves: list[dict], digits: int = 2) -> str:
    """One sentence on whether `name` moves in `direction` ("falls" or "rises") at every
    step of beta by more than the seed spread."""
    sign = -1.0 if direction == "falls" else 1.0
    good = [m for m in moves if m["measurable"] and sign * m["change"] > 0]
    flat = [m for m in moves if not m["measurable"]]
    wrong = [m for m in moves if m["measurable"] and sign * m["change"] <= 0]
    step = lambda m: f"beta {m['from']:g} to {m['to']:g} ({m['change']:+.{digits}f})"
    if len(good) == len(moves):
        where = (
            f"the step {step(moves[0])}"
            if len(moves) == 1
            else f"every one of the {len(moves)} steps between neighbouring betas"
        )
        return f"{name}: {direction} at {where}, by more than the seed spread."
    text = f"{name}: {direction} by more than the seed spread at {len(good)} of {len(moves)} steps"
    if flat:
        text += "; no measurable difference at " + ", ".join(step(m) for m in flat)
    if wrong:
        text += "; it moves the other way at " + ", ".join(step(m) for m in wrong)
    return text + "."


def figure(path: str, betas: list[float], per_beta: dict, ae_sse: list[float]) -> None:
    """Two panels against the rate: distortion in nats, and squared error with the AE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, metric, ylabel in (
        (axes[0], "distortion", "distortion E_q[-log p(x|z)], nats"),
        (axes[1], "sse", "squared error through the mean code / image"),
    ):
        k = np.array([X.mean_std([m["kl"] for m in per_beta[b]]) for b in betas])
        d = np.array([X.mean_std([m[metric] for m in per_beta[b]]) for b in betas])
        ax.plot(k[:, 0], d[:, 0], "-", c="0.7", zorder=1)
        ax.errorbar(k[:, 0], d[:, 0], xerr=k[:, 1], yerr=d[:, 1], fmt="o", capsize=3, zorder=2)
        for b, (x, y) in zip(betas, zip(k[:, 0], d[:, 0], strict=True), strict=True):
            ax.annotate(
                f"beta {b:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8
            )
        ax.set_xlabel("rate KL(q(z|x) || N(0, I)), nats")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    m, sd = X.mean_std(ae_sse)
    axes[1].axhline(m, c="C3", ls="--", label=f"AE (squared-error loss): {m:.1f} ± {sd:.1f}")
    axes[1].axhspan(m - sd, m + sd, color="C3", alpha=0.15)
    axes[1].legend(fontsize=8)
    axes[0].set_title("Rate against distortion (test split)", fontsize=10)
    axes[1].set_title("Rate against squared error, with the AE", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = X.parser("rate_distortion", __doc__.splitlines()[0], epochs=10)
    p.add_argument(
        "--betas", default=None, help=f"KL weights (default {BETAS}; --quick: {QUICK_BETAS})"
    )
    args = p.parse_args(argv)
    s = X.setting("rate_distortion", args, argv)
    betas = parse_betas(args.betas or (QUICK_BETAS if s.quick else BETAS))
    X.enable_compilation_cache(s.cache)
    data = X.load(s)
    test_x = X.inputs(data.dataset.x_test)
    res = X.Results(
        s,
        "Rate and distortion along the beta-VAE's KL weight",
        "Latent 16, MLP 400 hidden units, binarized Fashion-MNIST; beta = 1 is the standard "
        "VAE, the other betas beta-VAEs with a constant KL weight; the AE (squared-error "
        "loss) is the reconstruction reference. Test split; nats per image.",
    )
    per_beta = {
        b: [measure(r, test_x) for r in X.trained(s, data, beta_config(s, data, b))] for b in betas
    }
    ae_runs = X.trained(s, data, X.run_config(s, data, "ae"))
    ae_sse = [float(X.scores(r, test_x, None)["recon_sse"].mean()) for r in ae_runs]

    columns = (("kl", 2), ("distortion", 2), ("neg_elbo", 2), ("sse", 2), ("active_units", 1))
    rows = [
        [
            f"{b:g}" + (" (VAE)" if b == 1.0 else ""),
            *(X.pm([m[k] for m in per_beta[b]], d) for k, d in columns),
        ]
        for b in betas
    ]
    rows.append(["AE", "n/a", "n/a", "n/a", X.pm(ae_sse, 2), "n/a"])
    res.table(
        "Rate, distortion and reconstruction per beta",
        ["beta", "rate KL", "distortion", "-ELBO (beta 1)", "squared error", "active units"],
        rows,
        "rate: analytic KL(q(z|x) || N(0, I)); distortion: E_q[-log p(x|z)], one sample; "
        "-ELBO: the K = 1 estimate with its own draw (about rate + distortion); squared "
        "error: through the mean code, summed over the 784 pixels; active units: latent "
        "dimensions with Cov_x E[z|x] > 0.01.",
    )
    moves = {k: steps(betas, per_beta, k) for k in ("kl", "distortion", "sse")}
    step_rows = [
        [
            f"{a['from']:g} -> {a['to']:g}",
            *(
                f"{moves[k][i]['change']:+.2f}" + ("" if moves[k][i]["measurable"] else " (-)")
                for k in ("kl", "distortion", "sse")
            ),
        ]
        for i, a in enumerate(moves["kl"])
    ]
    res.table(
        "Changes between neighbouring betas",
        ["beta step", "rate KL", "distortion", "squared error"],
        step_rows,
        "(-): within the seed spread (|change| <= std + std), not a measurable difference.",
    )
    res.verdict(trend_sentence("Rate (KL)", "falls", moves["kl"]))
    res.verdict(trend_sentence("Distortion", "rises", moves["distortion"]))
    res.verdict(trend_sentence("Squared error", "rises", moves["sse"]))
    vae_sse = [m["sse"] for m in per_beta[1.0]] if 1.0 in per_beta else None
    if vae_sse is not None:
        res.verdict(
            X.verdict("test squared error", "the AE", ae_sse, "the VAE (beta 1)", vae_sse, False, 2)
        )
    if betas[0] != 1.0:
        low = [m["sse"] for m in per_beta[betas[0]]]
        res.verdict(
            X.verdict(
                "test squared error",
                "the AE",
                ae_sse,
                f"the beta-VAE with beta {betas[0]:g}",
                low,
                False,
                2,
            )
        )
    figure(res.path("rate_distortion.png"), betas, per_beta, ae_sse)
    res.figure(
        "rate_distortion.png",
        "Rate against distortion and against squared error, "
        "mean ± std over seeds; the AE's squared error as the dashed line",
    )
    res.data.update(
        betas=betas,
        per_seed={f"{b:g}": per_beta[b] for b in betas},
        ae_sse=ae_sse,
        steps=moves,
    )
    return res.write()


if __name__ == "__main__":
    sys.exit(X.run(main))
