"""Denoising: how well AE, VAE, denoising AE and denoising VAE restore corrupted test
images, scored against the clean image.

The article: autoencoders are used for denoising, and a denoising autoencoder (trained
to map a corrupted input to its clean version) is the one built for it. Measured: the
binarized test images are corrupted by Gaussian noise (sigma 0.1, 0.3, 0.5, clipped to
[0, 1] so that the noisy input is still an image), salt-and-pepper noise (20% of the
pixels set to 0 or 1) and random masking (50% of the pixels set to 0), with fixed keys,
so every model and seed sees the very same corrupted images. Each model reconstructs
the corrupted image through its code (the VAEs through the posterior mean), and the
PSNR (dB, peak 1) of that reconstruction against the clean image is averaged over the
test images, per seed. The do-nothing baseline is the PSNR of the corrupted image
itself; the row 'none' is the ordinary reconstruction. A second table scores the same
reconstructions against the grey-level image the binarized one was drawn from: the
binarization is itself noise that no model can predict, and it caps the first table.

The denoising models are trained with one noise only (by default the models' own,
salt-and-pepper on 20% of the pixels, unclipped like all their training noise; see
--train-noise), so the Gaussian and masking rows test noises they never saw. The
plain AE and VAE are the standard latent-16 models that other experiments share.

    python experiments/denoising.py [--quick] [--seeds 0,1,2] [--epochs 10]
"""

from __future__ import annotations

import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import scaffold as X

from aevae_jax.data.preprocess import to_unit_interval
from aevae_jax.evaluate import metrics as M
from aevae_jax.models import Batch
from aevae_jax.nn.corruption import NOISES, NoiseOptions, corrupt

MODELS = ("ae", "vae", "dae", "dvae")
LABELS = {"ae": "AE", "vae": "VAE", "dae": "DAE", "dvae": "DVAE"}
# (kind, level) of each test corruption; None is the clean input.
CORRUPTIONS = (
    None,
    ("gaussian", 0.1),
    ("gaussian", 0.3),
    ("gaussian", 0.5),
    ("salt_and_pepper", 0.2),
    ("masking", 0.5),
)
NOISE_SEED = 2024  # the key of the test corruptions, the same for every model and seed
SHOWN = 4  # test images per corruption in the figure
TARGETS = ("binarized", "grey")  # what a reconstruction is scored against
PAIRS = (("dae", "ae"), ("dvae", "vae"), ("ae", "vae"))  # the verdicts, per corruption


def corruption_name(c) -> str:
    return "none" if c is None else f"{c[0]} {c[1]:g}"


def corrupted(x: jax.Array, c, key: jax.Array) -> jax.Array:
    """Model inputs x [N, H, W, C] corrupted by c = (kind, level), clipped to [0, 1]
    (only Gaussian noise leaves that range); x itself when c is None."""
    if c is None:
        return x
    return jnp.clip(corrupt(key, x, *c), 0.0, 1.0)


def corruption_keys(n: int) -> list[jax.Array]:
    """One fixed key per corruption, independent of the models' seeds."""
    return [jax.random.fold_in(jax.random.key(NOISE_SEED), i) for i in range(n)]


def psnr_per_image(sse, pixels: int) -> np.ndarray:
    """PSNR (dB, peak 1) of each image from its summed squared error."""
    return np.asarray(M.psnr(jnp.asarray(sse), pixels))


def mean_psnr(images, target) -> float:
    """Mean over images of the PSNR of images [N, H, W, C] against target."""
    sse = jnp.sum((jnp.asarray(images) - target) ** 2, axis=(1, 2, 3))
    return float(psnr_per_image(sse, math.prod(target.shape[1:])).mean())


def denoiser(model):
    """f(params, (noisy, binarized, grey)) -> {target: per-image squared error [N]} of the
    reconstruction of each noisy image against its clean binarized image and the
    grey-level image it was drawn from; compiled once per model."""
    from aevae_jax.evaluate.split import SplitMap, one

    def sse(params, noisy, binarized, grey, i):
        out = model.reconstruct(params, one(noisy, None))[0]
        return {"binarized": jnp.sum((out - binarized) ** 2), "grey": jnp.sum((out - grey) ** 2)}

    return SplitMap(sse)


def model_psnr(runs, noisy: list, binarized, grey) -> dict[str, list[list[float]]]:
    """{target: [per corruption: [per seed: mean PSNR]]} of one model's seeds."""
    score = denoiser(runs[0].model)
    pixels = math.prod(binarized.shape[1:])
    out = {t: [[] for _ in noisy] for t in TARGETS}
    for i, n in enumerate(noisy):
        for r in runs:
            sse = score(r.params, (n, binarized, grey))
            for t in TARGETS:
                out[t][i].append(float(psnr_per_image(sse[t], pixels).mean()))
    return out


def train_options(args) -> dict:
    """The denoising models' options: {} for the models' defaults (so that the cached
    models are shared with other experiments), else the chosen noise."""
    opts = NoiseOptions(args.train_noise, args.train_noise_level)  # validates
    return {} if opts == NoiseOptions() else {"noise": opts.noise, "noise_level": opts.noise_level}


def figure(path: str, clean, noisy: list, outputs: dict, title: str) -> None:
    """Rows: clean input, corrupted input, each model's output (seed 0); columns: SHOWN
    test images under each corruption in turn, the groups split by a blank column."""
    from aevae_jax.study.figures import image_rows

    blank = np.ones((1, *clean.shape[1:]), np.float32)

    def row(groups):
        parts = []
        for i, g in enumerate(groups):
            parts += ([blank] if i else []) + [np.asarray(g, np.float32)]
        return np.concatenate(parts)

    rows = [row([clean] * len(noisy)), row(noisy)] + [row(outputs[m]) for m in outputs]
    image_rows(path, rows, ["clean", "corrupted", *(LABELS[m] for m in outputs)], title)


def tables(res: X.Results, names: list[str], baseline: dict, psnr: dict, train_noise: str):
    """The PSNR tables, one per target: rows corruptions, columns the corrupted input
    (a single value: the same images for every seed) and each model (mean ± std)."""
    header = ["corruption", "corrupted input", *(LABELS[m] for m in MODELS)]
    notes = {
        "binarized": "'corrupted input' is the PSNR of the corrupted image itself (the "
        "do-nothing baseline; the same images for every seed, so a single value). The DAE "
        f"and DVAE saw only {train_noise} noise in training.",
        "grey": "The binarized test images are drawn from the grey levels (each pixel 1 "
        "with probability its intensity), so against the grey image even the clean input "
        "is noisy, and a model's mean reconstruction can beat it.",
    }
    titles = {"binarized": "the clean (binarized) test image", "grey": "the grey-level test image"}
    for t in TARGETS:
        rows = [
            [name, "—" if baseline[t][i] is None else f"{baseline[t][i]:.2f}"]
            + [X.pm(psnr[m][t][i], 2) for m in MODELS]
            for i, name in enumerate(names)
        ]
        res.table(f"PSNR against {titles[t]} (dB, higher is better)", header, rows, notes[t])


def main(argv=None) -> dict:
    p = X.parser("denoising", __doc__.splitlines()[0], epochs=10)
    p.add_argument("--train-noise", default=NoiseOptions.noise, choices=NOISES,
                   help="the corruption the DAE and DVAE are trained with")  # fmt: skip
    p.add_argument("--train-noise-level", type=float, default=NoiseOptions.noise_level,
                   help="its level (Gaussian: std; else pixel rate)")  # fmt: skip
    args = p.parse_args(argv)
    s = X.setting("denoising", args, argv)
    X.enable_compilation_cache(s.cache)
    options = train_options(args)
    data = X.load(s)
    clean = X.inputs(data.dataset.x_test)
    grey = to_unit_interval(jnp.asarray(data.dataset.x_test))
    keys = corruption_keys(len(CORRUPTIONS))
    noisy = [corrupted(clean, c, k) for c, k in zip(CORRUPTIONS, keys, strict=True)]
    names = [corruption_name(c) for c in CORRUPTIONS]
    baseline = {
        "binarized": [None] + [mean_psnr(n, clean) for n in noisy[1:]],
        "grey": [mean_psnr(n, grey) for n in noisy],
    }
    train_noise = f"{args.train_noise} {args.train_noise_level:g}"
    res = X.Results(
        s,
        "Denoising: AE, VAE, denoising AE and denoising VAE",
        "Latent 16, MLP 400 hidden units, binarized Fashion-MNIST. The DAE and DVAE are "
        f"trained with {train_noise} noise (unclipped); the test corruptions are drawn "
        "once with a fixed key (Gaussian noise clipped to [0, 1]) and the reconstruction "
        "of the corrupted image is scored against the clean binarized image, and against "
        "the grey-level image it was drawn from: PSNR in dB, peak 1, averaged over the "
        "test images. Corruption 'none' is the plain reconstruction.",
    )
    psnr: dict[str, dict[str, list[list[float]]]] = {}  # model -> target -> corruption -> seeds
    shown: dict[str, list[np.ndarray]] = {}
    for name in MODELS:
        cfg = X.run_config(s, data, name, options=options if name in ("dae", "dvae") else {})
        runs = X.trained(s, data, cfg)
        psnr[name] = model_psnr(runs, noisy, clean, grey)
        model, params = runs[0].model, runs[0].params
        shown[name] = [np.asarray(model.reconstruct(params, Batch(n[:SHOWN]))) for n in noisy]

    tables(res, names, baseline, psnr, train_noise)
    for i, cname in enumerate(names):
        for a, b in PAIRS:
            metric = f"PSNR against the clean image, corruption {cname} (dB)"
            a_values, b_values = psnr[a]["binarized"][i], psnr[b]["binarized"][i]
            res.verdict(
                X.verdict(metric, f"the {LABELS[a]}", a_values, f"the {LABELS[b]}", b_values, True)
            )
    figure(
        res.path("denoising.png"),
        np.asarray(clean[:SHOWN]),
        [np.asarray(n[:SHOWN]) for n in noisy],
        shown,
        f"Columns in groups of {SHOWN}: " + ", ".join(names),
    )
    res.figure(
        "denoising.png",
        f"The first {SHOWN} test images under each corruption ({', '.join(names)}, left to "
        "right): clean, corrupted, and each model's reconstruction (seed "
        f"{s.seeds[0]})",
    )
    res.data.update(
        corruptions=names,
        train_noise={"kind": args.train_noise, "level": args.train_noise_level},
        gaussian_clipped=True,
        noisy_input_psnr={t: dict(zip(names, baseline[t], strict=True)) for t in TARGETS},
        psnr={t: {m: dict(zip(names, psnr[m][t], strict=True)) for m in MODELS} for t in TARGETS},
    )
    return res.write()


if __name__ == "__main__":
    sys.exit(X.run(main))
