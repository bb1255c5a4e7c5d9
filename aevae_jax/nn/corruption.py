"""Input corruptions, drawn from an explicit key inside compiled code: the noise of the
denoising models (`dae`, `dvae`) and of the evaluator's denoising and inpainting tests.

- gaussian: x + level * eps, eps ~ N(0, 1) (not clipped: the encoder takes any float);
- masking: each pixel set to 0 with probability `level`;
- salt_and_pepper: each pixel, with probability `level`, set to 0 or 1 (even odds);
- patches: `patch_mask` hides exactly round(ratio * patches) of the p x p patches.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from aevae_jax.errors import require

NOISES = ("gaussian", "masking", "salt_and_pepper")


def corrupt(key: jax.Array, x: jax.Array, kind: str, level: float) -> jax.Array:
    """x [..] corrupted by noise `kind` at `level` (see the module docstring)."""
    if kind == "gaussian":
        return x + level * jax.random.normal(key, x.shape, x.dtype)
    k_where, k_value = jax.random.split(key)
    hit = jax.random.bernoulli(k_where, level, x.shape)
    if kind == "masking":
        return jnp.where(hit, jnp.zeros_like(x), x)
    if kind == "salt_and_pepper":
        value = jax.random.bernoulli(k_value, 0.5, x.shape).astype(x.dtype)
        return jnp.where(hit, value, x)
    raise ValueError(f"unknown noise {kind!r}; choose one of {', '.join(NOISES)}")


@dataclasses.dataclass(frozen=True)
class NoiseOptions:
    """The corruption of a denoising model's input (the model's registered options)."""

    noise: str = dataclasses.field(
        default="salt_and_pepper",
        metadata={"help": "input corruption: gaussian, masking or salt_and_pepper"},
    )
    noise_level: float = dataclasses.field(
        default=0.2,
        metadata={"help": "gaussian: the noise's std; masking, salt_and_pepper: pixel rate"},
    )

    def __post_init__(self):
        require(
            self.noise in NOISES,
            f"--noise must be one of {', '.join(NOISES)}; got {self.noise!r}",
        )
        if self.noise == "gaussian":
            require(self.noise_level > 0, f"--noise-level must be > 0, got {self.noise_level}")
        else:
            require(
                0 < self.noise_level < 1,
                f"--noise-level is a pixel rate for {self.noise}: it must lie in (0, 1), "
                f"got {self.noise_level}",
            )


def patch_grid(image_shape: tuple[int, ...], patch: int) -> tuple[int, int] | None:
    """The (rows, cols) grid of p x p patches of an image [H, W, ...], or None unless p
    divides H and W."""
    h, w = image_shape[0], image_shape[1]
    return (h // patch, w // patch) if patch > 0 and h % patch == 0 and w % patch == 0 else None


def check_patches(image_shape: tuple[int, ...], patch: int) -> tuple[int, int]:
    """The (rows, cols) grid of p x p patches of an image; UserError unless p divides H, W."""
    h, w = image_shape[0], image_shape[1]
    sizes = [str(p) for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
    grid = patch_grid(image_shape, patch)
    require(
        grid is not None,
        f"patch size {patch} must divide the image height and width ({h}x{w}); "
        f"choose one of {', '.join(sizes)}",
    )
    return grid


def patch_mask(key: jax.Array, batch: int, grid: tuple[int, int], ratio: float) -> jax.Array:
    """[B, rows, cols] float32 visibility (1 visible, 0 hidden): in each example exactly
    round(ratio * rows * cols) patches hidden, chosen uniformly without replacement."""
    n = grid[0] * grid[1]
    hidden = round(ratio * n)
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(key, (batch, n)), axis=1), axis=1)
    return (rank >= hidden).astype(jnp.float32).reshape(batch, *grid)


def pixel_mask(patches: jax.Array, patch: int) -> jax.Array:
    """Patch visibility [B, rows, cols] -> pixel visibility [B, H, W, 1]."""
    m = jnp.repeat(jnp.repeat(patches, patch, axis=1), patch, axis=2)
    return m[..., None]


def patch_visibility(mask: jax.Array, patch: int) -> jax.Array:
    """Pixel visibility [B, H, W, 1] -> [B, rows * cols]: a patch is visible when all its
    pixels are."""
    b, h, w = mask.shape[:3]
    m = mask[..., 0].reshape(b, h // patch, patch, w // patch, patch)
    return m.min(axis=(2, 4)).reshape(b, -1)
