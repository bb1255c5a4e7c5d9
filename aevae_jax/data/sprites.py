"""Sprites: a data set with known generative factors, drawn by the project, in the manner
of dSprites (Matthey et al. 2017), for measuring disentanglement offline.

Every combination of five factors is drawn once, as a grey 32 x 32 image (uint8):

    shape        square, ellipse, heart                       3 values
    scale        0.5 to 1 of the largest size, evenly          4
    orientation  0 to pi/2 (exclusive), evenly                 8
    x, y         the centre on 16 whole-pixel positions each  16 each

24,576 images. Unlike dSprites, orientations span a quarter turn, so that no two values
of a factor give the same image (dSprites' 40 orientations over a full turn repeat a
square's four times and an ellipse's twice, which no code can tell apart). Each pixel is
the share of a 4 x 4 grid of points inside it that fall in the shape (anti-aliased), so
a half-pixel move of an edge shows. A fixed permutation (seed 0) holds out a tenth of
the images as the test split; the labels are the shapes. `sprite_factors(split)` gives
the factor values' indices [N, 5] in the order of the split's images.

The images are drawn in a few seconds, then read from a cached copy
($AEVAE_CACHE/sprites-v1.npz, about 25 MB, written atomically).
"""

from __future__ import annotations

import os

import numpy as np

from aevae_jax.data.decoded import cache_root
from aevae_jax.data.spec import Dataset

NAME = "sprites"
VERSION = 1
SIZE = 32
FACTORS = ("shape", "scale", "orientation", "x", "y")
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 4)
ORIENTATIONS = np.arange(8) * (np.pi / 2) / 8
POSITIONS = 8.0 + np.arange(16)  # pixel coordinates of the centre (pixel i spans [i, i + 1))
FACTOR_SIZES = (len(SHAPES), len(SCALES), len(ORIENTATIONS), len(POSITIONS), len(POSITIONS))
RADIUS = 7.5  # pixels: every shape at scale 1 lies in this circle about its centre
SUPERSAMPLE = 4
TEST_SHARE = 0.1


def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether the points (u, v) of the shape's own frame (the unit disc holds it; v up)
    are in the shape."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.7
    if shape == "ellipse":
        return u**2 + (v / 0.5) ** 2 <= 1.0
    # The heart curve (x^2 + y^2 - 1)^3 = x^2 y^3, shrunk and centred into the unit disc.
    x, y = u / 0.65, v / 0.65 + 0.125
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


def template(shape: int, scale: int, orientation: int) -> np.ndarray:
    """[SIZE, SIZE] floats in [0, 1]: the sprite centred on the image's middle corner
    (pixel coordinates (16, 16)); every position is this shifted by whole pixels."""
    s = SUPERSAMPLE
    points = (np.arange(SIZE * s) + 0.5) / s - SIZE / 2  # sample points about the centre
    dx, dy = points[None, :], points[:, None]  # rows go down
    theta, r = ORIENTATIONS[orientation], RADIUS * SCALES[scale]
    # Into the shape's frame: rotate by -theta, v pointing up, divide by the radius.
    u = (np.cos(theta) * dx + np.sin(theta) * dy) / r
    v = (np.sin(theta) * dx - np.cos(theta) * dy) / r
    hit = inside(SHAPES[shape], u, v).astype(np.float64)
    return hit.reshape(SIZE, s, SIZE, s).mean(axis=(1, 3))


def place(image: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """A centred template moved to the centre (cx, cy), whole pixels; the sprite's disc
    stays inside the image at every position, so nothing is cut off."""
    half = SIZE // 2
    padded = np.pad(image, half)
    top, left = SIZE - int(cy), SIZE - int(cx)
    return padded[top : top + SIZE, left : left + SIZE]


def all_factors() -> np.ndarray:
    """[24576, 5] int32: every factor combination, in the order `generate` draws them."""
    grids = np.meshgrid(*(np.arange(n) for n in FACTOR_SIZES), indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1).astype(np.int32)


def generate() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [24576, 32, 32, 1], factors int32 [24576, 5]), every combination."""
    images = np.empty((*FACTOR_SIZES, SIZE, SIZE), np.uint8)
    for a in range(FACTOR_SIZES[0]):
        for b in range(FACTOR_SIZES[1]):
            for c in range(FACTOR_SIZES[2]):
                t = np.round(template(a, b, c) * 255).astype(np.uint8)
                for i, cx in enumerate(POSITIONS):
                    for j, cy in enumerate(POSITIONS):
                        images[a, b, c, i, j] = place(t, cx, cy)
    return images.reshape(-1, SIZE, SIZE, 1), all_factors()


def test_indices(n: int) -> np.ndarray:
    """The sorted indices of the held-out images: a fixed tenth."""
    order = np.random.default_rng(0).permutation(n)
    return np.sort(order[: round(n * TEST_SHARE)])


def _cache_path() -> str:
    return os.path.join(cache_root(), f"{NAME}-v{VERSION}.npz")


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images, factors) of every combination, from the cache, else drawn and cached."""
    path = _cache_path()
    want = (int(np.prod(FACTOR_SIZES)), SIZE, SIZE, 1)
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                images, factors = z["images"], z["factors"]
            if images.shape == want and images.dtype == np.uint8:
                return images, factors
        except (OSError, ValueError, KeyError):
            pass  # a damaged copy is drawn anew
    images, factors = generate()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + f".{os.getpid()}.partial.npz"
    np.savez(partial, images=images, factors=factors)
    os.replace(partial, path)
    return images, factors


def split_mask(n: int) -> np.ndarray:
    """[n] bool: True for the test split's images."""
    mask = np.zeros(n, bool)
    mask[test_indices(n)] = True
    return mask


def sprite_factors(split: str) -> np.ndarray:
    """[N, 5] int32 factor indices (FACTORS) of the split's images, in their order."""
    factors = all_factors()
    test = split_mask(len(factors))
    return factors[test] if split == "test" else factors[~test]


def load_sprites() -> Dataset:
    """The sprites as a Dataset: train and test images, labelled by shape."""
    images, factors = _arrays()
    test = split_mask(len(images))
    return Dataset(
        NAME,
        images[~test],
        images[test],
        factors[~test, 0].copy(),
        factors[test, 0].copy(),
        class_names=SHAPES,
        factors_test=factors[test],
        factor_names=FACTORS,
    )
