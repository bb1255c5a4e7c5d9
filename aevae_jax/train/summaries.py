"""TensorBoard summaries of a training run, beside its metrics.jsonl.

Every epoch, each number of the log row goes in as a scalar at step = epoch, grouped
by prefix (train/, test/, time/); every `image_every` epochs and at the last epoch,
two image grids: reconstructions of eight fixed test images (the inputs above, the
reconstructions below) and sixteen samples of the model's prior (the model's own
`sample`, else N(0, I) codes through its decoder; fixed key, so epochs compare). The
writer is tensorboardX's, imported only when summaries are on (`--no-tensorboard`
turns them off); view with `tensorboard --logdir RUN_DIR`.

A resumed run purges the events after the epoch it resumes from (tensorboardX's
`purge_step`), so the replayed epochs are not drawn twice.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.models import Batch, Model

RECONSTRUCTED, SAMPLED = 8, 16
# Log-row entries that are not measurements of the epoch.
NOT_SCALARS = ("epoch", "stage", "selection", "seeds_together")


def scalar_tag(name: str) -> str:
    """train_objective -> train/objective; epoch_seconds -> time/epoch_seconds."""
    for prefix in ("train_", "test_"):
        if name.startswith(prefix):
            return f"{prefix[:-1]}/{name.removeprefix(prefix)}"
    if name in ("epoch_seconds", "step_ms", "compile_seconds"):
        return f"time/{name}"
    return f"train/{name}"


def grid(images: np.ndarray, cols: int) -> np.ndarray:
    """[n, H, W, C] -> one image [rows * (H + 1) - 1, cols * (W + 1) - 1, C] with a
    1-pixel white gap, rows filled left to right."""
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    out = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1, c), np.float32)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, k * (w + 1) : k * (w + 1) + w] = img
    return out


def make_image_fn(model: Model, num_classes: int | None):
    """jit (params, x [8, H, W, C], y, key) -> (reconstructions, prior samples)."""
    from aevae_jax.evaluate.samplers import prior_images

    def images(params, x, y, key):
        recon = model.reconstruct(params, Batch(x, y))
        labels = None if not model.conditional else jnp.arange(SAMPLED) % num_classes
        return recon, prior_images(model, params, key, SAMPLED, labels)

    return jax.jit(images)


def _shown(images) -> np.ndarray:
    """For display only: TensorBoard takes 1, 3 or 4 channels in [0, 1]."""
    a = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    return a[..., :3] if a.shape[-1] >= 3 else a[..., :1]


class Summaries:
    """One run's TensorBoard writer (nothing at all when not `enabled`)."""

    def __init__(self, run_dir: str, enabled: bool, resume_epoch: int = 0):
        self.writer: Any = None
        if enabled:
            from tensorboardX import SummaryWriter

            purge = resume_epoch + 1 if resume_epoch else None
            self.writer = SummaryWriter(run_dir, purge_step=purge, flush_secs=30)

    def scalars(self, row: dict) -> None:
        if self.writer is None:
            return
        for name, value in row.items():
            if name in NOT_SCALARS or isinstance(value, bool):
                continue
            if isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(scalar_tag(name), value, row["epoch"])

    def images(self, epoch: int, inputs, recon, samples) -> None:
        if self.writer is None:
            return
        inputs, recon, samples = _shown(inputs), _shown(recon), _shown(samples)
        pairs = grid(np.concatenate([inputs, recon]), cols=len(inputs))
        self.writer.add_image("images/reconstructions", pairs, epoch, dataformats="HWC")
        self.writer.add_image("images/samples", grid(samples, cols=4), epoch, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
