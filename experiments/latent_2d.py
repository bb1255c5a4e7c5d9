"""AE and VAE with a 2-D latent space, side by side: the test codes coloured by class,
and the images decoded over a grid of the latent plane.

The article: an AE's latent space can be irregular, with gaps that decode to nothing
recognisable, while the VAE's KL term packs codes around N(0, I) so that the whole
plane decodes to plausible images. Measured per seed: test reconstruction error,
kNN (k = 5) and linear-probe accuracy of the 2-D codes, and the Frechet distance of
the aggregate posterior to N(0, I); the figure shows seed 0.

    python experiments/latent_2d.py [--quick] [--seeds 0,1,2] [--epochs 10]
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import scaffold as X

from aevae_jax.evaluate import catalogue
from aevae_jax.evaluate import metrics as M

MODELS = ("ae", "vae")
GRID = 15  # decoded images per side of the latent-plane grid


def measure(result, data: X.Data, train_x, test_x) -> dict:
    ds = data.dataset
    from aevae_jax.evaluate.split import encode_split

    enc_train = encode_split(result.model, result.params, train_x)
    enc_test = encode_split(result.model, result.params, test_x)
    z_train, z_test = np.asarray(enc_train.features), np.asarray(enc_test.features)
    log_var = None if enc_test.log_var is None else np.asarray(enc_test.log_var)
    sse = X.scores(result, test_x, None)["recon_sse"]
    return {
        "test_mse": float(sse.mean()),
        "knn_accuracy": M.knn_accuracy(z_train, ds.y_train, z_test, ds.y_test, k=5),
        "probe_accuracy": M.linear_probe_accuracy(
            z_train, ds.y_train, z_test, ds.y_test, ds.num_classes
        ),
        "latent_prior_fd": M.prior_frechet_distance(z_test, log_var),
        "codes": z_test,
    }


def figure(path: str, results: dict, codes: dict, labels, class_names) -> None:
    """Row per model: codes coloured by class, then the decoded latent grid over the
    same square (the central 98% of the codes of either model, so both grids show
    where codes lie)."""
    import jax.numpy as jnp
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(10, 4.8 * len(results)), squeeze=False)
    for row, (name, result) in enumerate(results.items()):
        z = codes[name]
        lo, hi = np.percentile(z, [1, 99], axis=0)
        ax = axes[row, 0]
        sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=2, alpha=0.6)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(f"{name.upper()}: test codes (seed {result.seed})", fontsize=10)
        gx, gy = np.linspace(lo[0], hi[0], GRID), np.linspace(hi[1], lo[1], GRID)
        grid = np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2).astype(np.float32)
        model = result.model
        images = model.likelihood.mean(model.decode(result.params, jnp.asarray(grid), None))
        images = np.asarray(images)[..., 0]
        h, w = images.shape[1:3]
        mosaic = images.reshape(GRID, GRID, h, w).transpose(0, 2, 1, 3).reshape(GRID * h, -1)
        ax = axes[row, 1]
        ax.imshow(mosaic, cmap="gray", extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto")
        ax.set_title(f"{name.upper()}: decoded over the same square", fontsize=10)
    names = list(class_names or range(10))
    handles = sc.legend_elements()[0]
    fig.legend(handles, names[: len(handles)], loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    p = X.parser("latent_2d", __doc__.splitlines()[0], epochs=10)
    s = X.setting("latent_2d", p.parse_args(argv), argv)
    X.enable_compilation_cache(s.cache)
    data = X.load(s)
    ds = data.dataset
    train_x, test_x = X.inputs(ds.x_train, split="train"), X.inputs(ds.x_test)
    res = X.Results(
        s,
        "AE vs VAE in two dimensions",
        "Both with a 2-D code (MLP 400 hidden units, binarized Fashion-MNIST); the AE "
        "trained on squared error, the VAE on the negative ELBO.",
    )
    per_seed = {}
    firsts, codes = {}, {}
    for name in MODELS:
        runs = X.trained(s, data, X.run_config(s, data, name, latent_dim=2))
        per_seed[name] = [measure(r, data, train_x, test_x) for r in runs]
        firsts[name], codes[name] = runs[0], per_seed[name][0]["codes"]
    # (metric, digits, scale): labels and directions come from the metric catalogue.
    keys = [("test_mse", 2, 1.0), ("knn_accuracy", 1, 100.0), ("probe_accuracy", 1, 100.0),
            ("latent_prior_fd", 3, 1.0)]  # fmt: skip
    labels = {k: catalogue.label(k) + (" (%)" if sc == 100 else "") for k, _, sc in keys}
    rows = [[labels[k]] + [X.pm([m[k] for m in per_seed[n]], d, sc) for n in MODELS]
            for k, d, sc in keys]  # fmt: skip
    res.table("2-D codes, test split", ["metric", "AE", "VAE"], rows)
    for k, d, sc in keys:
        a = [m[k] for m in per_seed["ae"]]
        b = [m[k] for m in per_seed["vae"]]
        higher = not catalogue.lower_is_better(k)
        res.verdict(X.verdict(labels[k], "the AE", a, "the VAE", b, higher, d, sc))
    figure(res.path("latent_2d.png"), firsts, codes, ds.y_test, ds.class_names)
    res.figure("latent_2d.png", "2-D codes of the test split by class, and the decoded plane")
    res.data["per_seed"] = {
        n: [{k: v for k, v in m.items() if k != "codes"} for m in per_seed[n]] for n in MODELS
    }
    return res.write()


if __name__ == "__main__":
    sys.exit(X.run(main))
