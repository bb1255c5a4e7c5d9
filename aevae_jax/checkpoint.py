"""Orbax checkpoints of a run: the latest ones (periodic) and the best by a test score.

A checkpoint is one pytree: params, every stage's optimiser state, step, epoch and the
run's root key, enough to resume bit-exactly (the data order and every per-step key derive from
the root key, the epoch and the step). Orbax writes into a temporary folder and
renames it when complete, so a killed process never leaves a half-written
checkpoint that a later restore could pick up.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

LATEST = "checkpoints"
BEST = "best"


def _manager(directory: str, best: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1 if best else 2,
        best_fn=(lambda m: m["score"]) if best else None,
        best_mode="min",
        create=True,
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _with_sharding(leaf) -> jax.ShapeDtypeStruct:
    """The leaf's shape, dtype and sharding; on this process's first device where the
    leaf has none, so that a checkpoint saved on a mesh (several devices or hosts)
    restores on one device, and the reverse."""
    struct = ocp.utils.to_shape_dtype_struct(leaf)
    if getattr(struct, "sharding", None) is not None:
        return struct
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=device)


class RunCheckpoints:
    """The periodic and best checkpoints under a run directory."""

    def __init__(self, run_dir: str):
        self.latest = _manager(os.path.join(run_dir, LATEST), best=False)
        self.best = _manager(os.path.join(run_dir, BEST), best=True)

    def save(self, epoch: int, tree: Any, score: float, periodic: bool) -> None:
        """Offer `tree` (saved at `epoch`) as the best checkpoint when `score` (lower is
        better; NaN: not a candidate) is finite, and save it as the latest when
        `periodic`."""
        args = ocp.args.StandardSave(tree)
        metrics = {"score": float(score)}
        if np.isfinite(score):
            # best_fn ranks by the score; max_to_keep=1 keeps only the best one.
            self.best.save(epoch, args=args, metrics=metrics)
        if periodic:
            self.latest.save(epoch, args=args, metrics=metrics)
        self.best.wait_until_finished()
        self.latest.wait_until_finished()

    def latest_epoch(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, abstract_tree: Any, which: str = "latest", epoch: int | None = None):
        """Restore into the structure of `abstract_tree` (arrays or ShapeDtypeStructs)."""
        manager = self.latest if which == "latest" else self.best
        if epoch is None:
            epoch = manager.latest_step() if which == "latest" else manager.best_step()
        if epoch is None:
            raise FileNotFoundError(f"no {which} checkpoint in {manager.directory}")
        target = jax.tree.map(_with_sharding, abstract_tree)
        return manager.restore(epoch, args=ocp.args.StandardRestore(target))

    def close(self) -> None:
        self.latest.close()
        self.best.close()
