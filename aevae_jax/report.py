"""Figures (PNG) and the markdown report of an AE-vs-VAE comparison.

Everything here reads numbers and arrays that compare.py computed; nothing is trained
or evaluated here. Each table row's verdict is a sentence derived from the metrics,
so the report says what its own numbers say, whichever way they fall.
"""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

FIGURES = {
    "reconstructions": "reconstructions.png",
    "samples": "samples.png",
    "interpolations": "interpolations.png",
    "latent_2d": "latent_2d.png",
    "training_curves": "training_curves.png",
}


# ----------------------------------------------------------------------------- figures


def _as_display(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, np.float32)
    return img if img.shape[-1] in (3, 4) else img[..., 0]  # grey, or the first channel


def image_rows(path: str, rows: list[np.ndarray], labels: list[str], title: str) -> None:
    """One labelled row of images per entry of `rows` ([n, H, W, C] in [0, 1])."""
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0 + 0.4), squeeze=False)
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        for j in range(n):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(row):
                ax.imshow(_as_display(row[j]), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latent_scatter(
    path: str, codes: dict[str, np.ndarray], labels: np.ndarray | None, class_names
) -> None:
    """2-D view of each model's test codes: projection on their first two principal axes."""
    fig, axes = plt.subplots(1, len(codes), figsize=(5.2 * len(codes), 4.6), squeeze=False)
    for ax, (name, z) in zip(axes[0], codes.items(), strict=True):
        z = np.asarray(z, np.float64)
        centred = z - z.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        if xy.shape[1] == 1:  # a 1-D latent space: spread it along y by index
            xy = np.concatenate([xy, np.zeros_like(xy)], axis=1)
        explained = (s[:2] ** 2).sum() / (s**2).sum()
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=2, alpha=0.6)
        ax.set_title(f"{name}: latent means, PCA ({explained:.0%} of variance)", fontsize=10)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    if labels is not None:
        names = class_names or [str(i) for i in range(int(labels.max()) + 1)]
        handles = scatter.legend_elements()[0]
        fig.legend(handles, names[: len(handles)], loc="center right", fontsize=8, markerscale=1.5)
        fig.tight_layout(rect=(0, 0, 0.86, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def training_curves(path: str, histories: dict[str, list[dict]], loss_names: dict[str, str]):
    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.6), squeeze=False)
    for ax, (name, rows) in zip(axes[0], histories.items(), strict=True):
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
        ax.plot(epochs, [r["test_loss"] for r in rows], "s-", label="test")
        ax.set_title(f"{name}: {loss_names[name]}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats / image" if "ELBO" in loss_names[name] else "sum of squares / image")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- report


def _f(v, digits=2):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def verdicts(m: dict) -> list[dict]:
    """The article's table, one dict per row: the two claims, what was measured, and a
    sentence saying whether the measurement supports the claim."""
    ae, vae = m["models"]["ae"], m["models"]["vae"]
    rows = []

    better_rec = ae["test_mse"] < vae["test_mse"]
    # A Bernoulli likelihood on grey levels is a cross-entropy, not a normalised density.
    grey_bernoulli = m["config"].get("binarize") == "none" and (
        m["config"].get("vae_likelihood", "bernoulli") == "bernoulli"
    )
    nll_name = "cross-entropy bound (grey levels)" if grey_bernoulli else "NLL"
    likelihood_clause = (
        "only the VAE scores the data (a cross-entropy here, as targets are grey levels)"
        if grey_bernoulli
        else "only the VAE assigns the data a likelihood"
    )
    rows.append(
        {
            "row": "Objective",
            "ae": "compress and reconstruct",
            "vae": "model the data distribution, generate",
            "measured": (
                f"test MSE: AE {_f(ae['test_mse'])}, VAE {_f(vae['test_mse'])}; "
                f"PSNR {_f(ae['test_psnr'])} vs {_f(vae['test_psnr'])} dB; "
                f"VAE {nll_name} (IWAE, K={vae.get('iwae_k')}) "
                f"{_f(vae.get('test_nll_iwae'))} nats, AE none"
            ),
            "verdict": (
                f"Supported: the AE reconstructs better, and {likelihood_clause}."
                if better_rec
                else "Not supported on reconstruction: the VAE reconstructs as well or "
                f"better here, though {likelihood_clause}."
            ),
        }
    )

    au, L = vae.get("active_units"), len(vae.get("kl_per_dim", [])) or m["config"]["latent_dim"]
    spread = vae.get("posterior_std_active")  # over active dimensions: collapsed ones are ~1
    distributional = spread is not None and spread > 0.05 and au is not None and au > 0
    most_active = au is not None and au >= L / 2
    rows.append(
        {
            "row": "Latent space",
            "ae": "fixed, deterministic",
            "vae": "a distribution (Gaussian: mean and variance)",
            "measured": (
                f"VAE q(z|x): mean posterior std in active dimensions {_f(spread, 3)}, "
                f"active units "
                f"{au}/{L}, KL {_f(vae.get('test_kl'))} nats; AE: one point per image"
            ),
            "verdict": (
                "Supported: each VAE code is a Gaussian of non-trivial width, and "
                f"{au} of {L} dimensions carry information."
                if distributional and most_active
                else f"Partly: the VAE codes are Gaussians, but only {au} of {L} dimensions "
                "carry information; the others have collapsed to the prior."
                if distributional
                else "Not supported: the VAE posterior has collapsed to the prior or to points."
            ),
        }
    )

    consistent = abs(vae["test_neg_elbo"] - (vae["test_recon"] + vae["test_kl"])) < 0.05
    rows.append(
        {
            "row": "Loss",
            "ae": "reconstruction, MSE",
            "vae": "-E_q(z|x)[log p(x|z)] + KL(q(z|x) || p(z))",
            "measured": (
                f"AE test MSE {_f(ae['test_loss'])}; VAE test -ELBO "
                f"{_f(vae['test_neg_elbo'])} = {_f(vae['test_recon'])} reconstruction + "
                f"{_f(vae['test_kl'])} KL (nats/image)"
            ),
            "verdict": (
                "Supported: each model was trained on the article's loss; the VAE's "
                f"bound spends {_f(vae['test_kl'])} nats per image on the KL term "
                "that the AE does not pay."
                if consistent
                else "Inconsistent: the VAE's terms do not add up to its bound; see metrics.json."
            ),
        }
    )

    overhead = vae["step_ms"] / ae["step_ms"] - 1
    rows.append(
        {
            "row": "Sampling",
            "ae": "not applicable",
            "vae": "reparameterised samples during training",
            "measured": (
                f"train step: AE {_f(ae['step_ms'], 3)} ms, VAE {_f(vae['step_ms'], 3)} "
                f"ms ({overhead:+.0%})"
            ),
            "verdict": (
                f"Supported: the VAE draws one reparameterised z per image per step, "
                f"which with its larger encoder head costs {overhead:+.0%} step time "
                "here."
                if overhead > -0.05
                else "Supported in kind (the VAE samples during training), though its step "
                "was not slower here: timing noise exceeds the sampling cost."
            ),
        }
    )

    fd_ae, fd_vae, fd_ex = (
        ae.get("prior_sample_fd"),
        vae.get("prior_sample_fd"),
        ae.get("expost_sample_fd"),
    )
    if fd_ae is None or fd_vae is None:
        gen_measured, gen_verdict = "no labels: domain FD not computed", "Not measured."
    else:
        closed = (
            (fd_ae - fd_ex) / (fd_ae - fd_vae) if fd_ex is not None and fd_ae > fd_vae else None
        )
        gen_measured = (
            f"domain FD of {m['config'].get('test_size', '?')} samples (lower is better): "
            "AE z~N(0, I) "
            f"{_f(fd_ae)}, AE ex-post Gaussian {_f(fd_ex)}, VAE prior {_f(fd_vae)}"
        )
        if fd_vae < fd_ae:
            gen_verdict = (
                f"Supported: VAE prior samples are {fd_ae / fd_vae:.1f}x closer to "
                "the data than AE decodes of N(0, I)"
            )
            if fd_ex is not None and fd_ex <= fd_vae:
                gen_verdict += (
                    f"; but a Gaussian fitted to the AE's codes after training does better "
                    f"still (FD {_f(fd_ex)}): the AE's 'limited' generation comes from "
                    "sampling N(0, I), not from its decoder."
                )
            elif closed is not None and closed <= 0:
                gen_verdict += (
                    f"; a Gaussian fitted to the AE's codes does not help (FD {_f(fd_ex)})."
                )
            elif closed is not None:
                gen_verdict += (
                    f"; fitting a Gaussian to the AE's codes closes {closed:.0%} of that gap."
                )
            else:
                gen_verdict += "."
        else:
            gen_verdict = (
                "Not supported: AE decodes of N(0, I) are as close to the data as "
                "VAE prior samples here."
            )
    rows.append(
        {
            "row": "Generative ability",
            "ae": "limited",
            "vae": "high: new samples from the prior",
            "measured": gen_measured,
            "verdict": gen_verdict,
        }
    )

    probe_ae, probe_vae = ae.get("probe_accuracy"), vae.get("probe_accuracy")
    denoise_better = ae["test_denoise_mse"] < vae["test_denoise_mse"]
    features_better = probe_ae is not None and probe_vae is not None and probe_ae >= probe_vae
    measured = (
        f"denoising MSE (20% salt-and-pepper): AE {_f(ae['test_denoise_mse'])}, "
        f"VAE {_f(vae['test_denoise_mse'])}"
    )
    if probe_ae is not None:
        measured += (
            f"; linear-probe accuracy of codes: AE {_f(100 * probe_ae, 1)}%, "
            f"VAE {_f(100 * probe_vae, 1)}%"
        )
    parts = ["the AE denoises better" if denoise_better else "the VAE denoises as well or better"]
    if probe_ae is not None:
        parts.append(
            "the AE's codes are the better features"
            if features_better
            else "the VAE's codes are the better features"
        )
    support = (
        "Supported"
        if denoise_better and (features_better or probe_ae is None)
        else ("Partly supported" if denoise_better or features_better else "Not supported")
    )
    rows.append(
        {
            "row": "Applications",
            "ae": "denoising, dimensionality reduction, features",
            "vae": "synthesis, generative modelling, augmentation",
            "measured": measured,
            "verdict": f"{support} for the AE's uses: {' and '.join(parts)}; the VAE's synthesis "
            "is the generative row above.",
        }
    )
    return rows


def markdown_row(cells: list[str]) -> str:
    """One table row; pipes inside a cell (as in q(z|x)) are escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def write_report(path: str, metrics: dict, command: str) -> None:
    """report.md: the article's table with a measured column and a verdict per row,
    the main numbers, and the figures."""
    cfg = metrics["config"]
    lines = [
        f"# AE vs VAE on {metrics['dataset']}",
        "",
        f"Produced by `{command}`.",
        f"Both models: {cfg['backbone']} backbone, hidden {cfg['hidden']}, latent "
        f"{cfg['latent_dim']}, {cfg['epochs']} epochs of {cfg['train_size']} training images, "
        f"batch {cfg['batch_size']}, {cfg.get('optimizer', 'adam')} lr {cfg['lr']} "
        f"({cfg.get('schedule', 'constant')}), binarization {cfg['binarize']}, "
        f"seed {cfg['seed']}. Test split: {cfg['test_size']} images, binarized once with a "
        "fixed draw where training binarizes.",
        "",
        "| | Autoencoder | Variational autoencoder | Measured | Do the numbers support it? |",
        "|---|---|---|---|---|",
    ]
    for r in verdicts(metrics):
        cells = [r[k] for k in ("row", "ae", "vae", "measured", "verdict")]
        lines.append(markdown_row(cells))
    ae, vae = metrics["models"]["ae"], metrics["models"]["vae"]
    keys = [
        "test_mse",
        "test_bce",
        "test_psnr",
        "test_denoise_mse",
        "test_neg_elbo",
        "test_kl",
        "test_nll_iwae",
        "active_units",
        "probe_accuracy",
        "prior_sample_fd",
        "expost_sample_fd",
        "train_seconds",
        "step_ms",
    ]
    lines += ["", "## All numbers", "", "| metric | AE | VAE |", "|---|---|---|"]
    for k in keys:
        a, v = ae.get(k), vae.get(k)
        if a is None and v is None:
            continue
        fmt = lambda x: "-" if x is None else (str(x) if isinstance(x, int) else _f(x, 3))
        lines.append(f"| {k} | {fmt(a)} | {fmt(v)} |")
    if metrics.get("classifier_accuracy") is not None:
        lines += [
            "",
            f"Domain FD uses the 128-d features of a small CNN trained on "
            f"{metrics['dataset']} (test accuracy "
            f"{100 * metrics['classifier_accuracy']:.1f}%), computed between "
            f"{cfg['test_size']} samples and the test images.",
        ]
    lines += [
        "",
        "MSE is summed over pixels per image (the article's ||X - X_hat||^2), BCE in nats "
        "per image, PSNR in dB; reconstructions go through the code's mean. IWAE NLL is "
        "an upper bound on the negative log-likelihood.",
        "",
        "## Figures",
        "",
        "Reconstructions (test inputs / AE / VAE):",
        f"![reconstructions]({FIGURES['reconstructions']})",
        "",
        "Samples (AE with z ~ N(0, I) / AE with an ex-post Gaussian / VAE prior):",
        f"![samples]({FIGURES['samples']})",
        "",
        "Interpolations between test images in latent space:",
        f"![interpolations]({FIGURES['interpolations']})",
        "",
        "Latent means of the test images, coloured by class:",
        f"![latent space]({FIGURES['latent_2d']})",
        "",
        "Training curves:",
        f"![training curves]({FIGURES['training_curves']})",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def figure_paths(out: str) -> dict[str, str]:
    return {k: os.path.join(out, v) for k, v in FIGURES.items()}


def image_grid(path: str, images: np.ndarray, title: str) -> None:
    """A near-square grid of images [n, H, W, C] in [0, 1]."""
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = [images[i : i + cols] for i in range(0, n, cols)]
    image_rows(path, rows, [""] * len(rows), title)
