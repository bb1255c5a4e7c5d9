"""Out-of-distribution image sets that need no download, shaped like Fashion-MNIST
(uint8 [N, 28, 28, 1], 0 = black background), for detection experiments.

Full MNIST cannot be fetched on an offline machine, so the classic "train on
Fashion-MNIST, test on MNIST" protocol uses stand-ins built from files that ship inside
scikit-learn's wheel, by a fixed recipe (same call, same bytes):

- "digits": the 1,797 real handwritten digits of `sklearn.datasets.load_digits`
  (8 x 8, values 0..16) scaled to 0..255 by 255 / 16, enlarged to 20 x 20 by bilinear
  interpolation (half-pixel centres, edges clamped: `jax.image.resize`'s "linear" for
  enlargement) and placed in the middle of a black 28 x 28 frame (a 4-pixel border),
  as MNIST puts its digits in a 20 x 20 box inside 28 x 28 (MNIST centres the box by
  centre of mass; here it is centred geometrically). The MNIST stand-in: coarser
  strokes than MNIST, but real handwriting, white on black.
- "photos": the two photographs of `sklearn.datasets.load_sample_images` (china.jpg,
  flower.jpg) cut into the project's 32 x 32 patches (`data.load_sklearn_photos`,
  training and test patches together: 1,900), converted to grey by the ITU-R BT.601
  luma weights (0.299 R + 0.587 G + 0.114 B, rounded), and cropped to their central
  28 x 28 pixels: natural-image texture with no black background.
- "noise": uniform noise, every pixel an independent integer in 0..255, drawn from
  `jax.random.key(NOISE_SEED)` (NOISE_COUNT images).
- "flipped" (only when Fashion-MNIST test images are given): those images upside down,
  a near-distribution set with exactly the in-distribution pixel statistics, where
  only the shapes are wrong.

`ood_sets(n)` keeps at most n images of each set, evenly spaced over the set (so both
photographs and every digit class stay represented).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.data.sources import load_sklearn_photos

SIDE, DIGIT_BOX = 28, 20
NOISE_SEED, NOISE_COUNT = 0, 2000
LUMA = np.array([0.299, 0.587, 0.114])
SET_NAMES = ("digits", "photos", "noise", "flipped")


def linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] bilinear interpolation along one axis: output pixel i samples the
    input at (i + 0.5) * n_in / n_out - 0.5, clamped to [0, n_in - 1], weighting the two
    nearest input pixels linearly. Each row sums to 1."""
    at = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(at).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = at - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - w)
    np.add.at(m, (np.arange(n_out), hi), w)
    return m


def frame_digits(images: np.ndarray, max_value: float = 16.0) -> np.ndarray:
    """Small greyscale digits [N, h, w] (0..max_value) -> uint8 [N, 28, 28, 1]: scaled
    to 0..255, enlarged to 20 x 20 bilinearly, centred in a black 28 x 28 frame."""
    x = np.asarray(images, np.float64) * (255.0 / max_value)
    rows = linear_matrix(x.shape[1], DIGIT_BOX)
    cols = linear_matrix(x.shape[2], DIGIT_BOX)
    box = np.einsum("ij,njk,lk->nil", rows, x, cols)
    out = np.zeros((len(x), SIDE, SIDE), np.uint8)
    lo = (SIDE - DIGIT_BOX) // 2
    out[:, lo : lo + DIGIT_BOX, lo : lo + DIGIT_BOX] = np.clip(np.rint(box), 0, 255)
    return out[..., None]


def sklearn_digits() -> np.ndarray:
    """The MNIST stand-in: scikit-learn's 1,797 8 x 8 digits framed like MNIST."""
    from sklearn.datasets import load_digits

    return frame_digits(load_digits().images, 16.0)


def grey_patches(patches: np.ndarray) -> np.ndarray:
    """RGB patches uint8 [N, 32, 32, 3] -> grey uint8 [N, 28, 28, 1]: BT.601 luma,
    rounded, then the central 28 x 28 pixels."""
    grey = np.rint(np.asarray(patches, np.float64) @ LUMA).astype(np.uint8)
    top = (grey.shape[1] - SIDE) // 2
    left = (grey.shape[2] - SIDE) // 2
    return grey[:, top : top + SIDE, left : left + SIDE, None]


def sklearn_photo_patches() -> np.ndarray:
    """Grey 28 x 28 patches of the two photographs in scikit-learn's wheel (1,900)."""
    photos = load_sklearn_photos()
    return grey_patches(np.concatenate([photos.x_train, photos.x_test]))


def uniform_noise(count: int = NOISE_COUNT, seed: int = NOISE_SEED) -> np.ndarray:
    """uint8 [count, 28, 28, 1] of independent uniform integers 0..255."""
    key = jax.random.key(seed)
    return np.asarray(jax.random.randint(key, (count, SIDE, SIDE, 1), 0, 256), np.uint8)


def flipped(images: np.ndarray) -> np.ndarray:
    """Images [N, H, W, C] upside down."""
    return np.ascontiguousarray(np.asarray(images)[:, ::-1])


def evenly_spaced(x: np.ndarray, n: int | None) -> np.ndarray:
    """At most n rows of x, at evenly spaced indices (first and last included)."""
    if n is None or n >= len(x):
        return x
    return x[np.unique(np.round(np.linspace(0, len(x) - 1, n)).astype(np.int64))]


def ood_sets(n: int | None = None, fashion_test: np.ndarray | None = None) -> dict:
    """{name: uint8 [N, 28, 28, 1]}: digits, photos and noise, and flipped when
    `fashion_test` (in-distribution test images) is given; at most n images each."""
    sets = {
        "digits": sklearn_digits(),
        "photos": sklearn_photo_patches(),
        "noise": uniform_noise(),
    }
    if fashion_test is not None:
        sets["flipped"] = flipped(fashion_test)
    return {name: evenly_spaced(x, n) for name, x in sets.items()}


def score_sets(score: Callable, sets: dict) -> dict:
    """{name: {score name: per-image values}} of several input sets [N_i, ...] scored in
    ONE call of `score` (inputs -> {score name: [N]}) on their concatenation, then
    split: one compiled program and one pass instead of one per set (per-image scores
    do not depend on the other images of the call)."""
    names = list(sets)
    ends = np.cumsum([len(sets[n]) for n in names])
    scored = score(jnp.concatenate([jnp.asarray(sets[n]) for n in names]))
    parts = {k: np.split(np.asarray(v), ends[:-1]) for k, v in scored.items()}
    return {n: {k: parts[k][i] for k in parts} for i, n in enumerate(names)}
