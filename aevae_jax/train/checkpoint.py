"""Orbax checkpoints of a run: the latest ones (periodic) and the best by a test score.

A checkpoint is one pytree: params, every stage's optimiser state, step, epoch and the
run's root key, enough to resume bit-exactly (the data order and every per-step key
derive from the root key, the epoch and the step), and a SHA-256 digest of all of it.
Beside it, `manifests/<latest|best>-<epoch>.json` lists the size and SHA-256 of each of
its files.

What survives what:
- a killed process: orbax writes into a temporary folder and renames it when complete,
  so a half-written checkpoint is never listed; its leftovers are removed when the run
  is next opened;
- a damaged checkpoint (truncated, corrupted, or deleted files): its files differ from
  its manifest (checked before orbax reads them, which would otherwise fail in its
  reader threads), or its restore fails, or its digest differs. `restore_newest` then
  takes the previous one, and `restore` falls back from `best` to the newest usable
  periodic one, each with a `CheckpointWarning` that names what was skipped; with
  nothing usable, one `UserError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from aevae_jax.errors import UserError
from aevae_jax.writing import write_json

LATEST = "checkpoints"
BEST = "best"
DIGEST = "digest"
MANIFESTS = "manifests"


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped."""


def checkpoint_tree(params, opt_states: dict, step, epoch: int, seed: int) -> dict:
    """What a checkpoint holds: parameters, every stage's optimiser state, the step and
    epoch reached, and the root key (every stream, data order and per-step key derives
    from it)."""
    return {
        "params": params,
        "opt_state": opt_states,
        "step": step,
        "epoch": np.asarray(epoch, np.int64),
        "root_key": np.asarray(jax.random.key_data(jax.random.key(seed))),
    }


def _manager(directory: str, best: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1 if best else 2,
        best_fn=(lambda m: m["score"]) if best else None,
        best_mode="min",
        create=True,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,  # what a killed save left behind
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


def _host(leaf) -> np.ndarray:
    """A leaf's values on this host (a replicated global array: its local copy)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        leaf = leaf.addressable_data(0)
    return np.asarray(leaf)


def tree_digest(tree: Any) -> np.ndarray:
    """SHA-256 of a pytree's leaves (shape, dtype and bytes, in tree order), as uint8[32].
    Dtypes are taken as JAX holds them (an int64 leaf restores as int32 without x64)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = _host(leaf)
        a = np.ascontiguousarray(a.astype(jax.dtypes.canonicalize_dtype(a.dtype)))
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    return np.frombuffer(h.digest(), np.uint8).copy()


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: str) -> dict[str, list]:
    """{relative path: [size, sha256]} of every file under `folder`."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = [os.path.getsize(path), _file_hash(path)]
    return out


def _short(e: BaseException) -> str:
    """An exception in one short line (tensorstore's run to dozens of lines)."""
    text = str(e).strip().splitlines()
    text = text[0] if text else ""
    return f"{type(e).__name__}: {text[:160]}"


class RunCheckpoints:
    """The periodic and best checkpoints under a run directory."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.latest = _manager(os.path.join(run_dir, LATEST), best=False)
        self.best = _manager(os.path.join(run_dir, BEST), best=True)
        self._damaged: dict[str, str] = {}  # checkpoint folder -> why it was skipped

    def save(self, epoch: int, tree: Any, score: float, periodic: bool) -> None:
        """Offer `tree` (saved at `epoch`) as the best checkpoint when `score` (lower is
        better; NaN: not a candidate) is finite, and save it as the latest when
        `periodic`."""
        wanted = [(self.best, np.isfinite(score)), (self.latest, periodic)]
        if not any(want for _, want in wanted):
            return
        args = ocp.args.StandardSave({**tree, DIGEST: tree_digest(tree)})
        metrics = {"score": float(score)}
        # best_fn ranks by the score; max_to_keep=1 keeps only the best one.
        for manager, want in wanted:
            if want:
                self._remove_manifest(manager, epoch)  # a stale one would condemn the new
                if manager.save(epoch, args=args, metrics=metrics):
                    manager.wait_until_finished()
                    self._write_manifest(manager, epoch)

    def _manifest(self, manager: ocp.CheckpointManager, epoch: int) -> str:
        kind = "best" if manager is self.best else "latest"
        return os.path.join(self.run_dir, MANIFESTS, f"{kind}-{epoch}.json")

    def _write_manifest(self, manager: ocp.CheckpointManager, epoch: int) -> None:
        """The checkpoint's files, sizes and hashes; manifests of deleted ones go."""
        if jax.process_index() != 0:
            return
        path = self._manifest(manager, epoch)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        files = _files(os.path.join(str(manager.directory), str(epoch)))
        write_json(path, files, indent=None)
        keep = {self._manifest(manager, s) for s in manager.all_steps()}
        prefix = os.path.basename(path).split("-")[0] + "-"
        for name in os.listdir(os.path.dirname(path)):
            old = os.path.join(os.path.dirname(path), name)
            if name.startswith(prefix) and name.endswith(".json") and old not in keep:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(old)

    def _remove_manifest(self, manager: ocp.CheckpointManager, epoch: int) -> None:
        if jax.process_index() == 0:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._manifest(manager, epoch))

    def _check_files(self, manager: ocp.CheckpointManager, epoch: int) -> str:
        """Why the checkpoint's files differ from its manifest ('' when they do not, or
        when it has none: a kill between the checkpoint and its manifest)."""
        path = self._manifest(manager, epoch)
        if not os.path.isfile(path):
            return ""
        try:
            with open(path) as f:
                expected = json.load(f)
        except (OSError, ValueError):
            return ""  # a damaged manifest: orbax and the digest still check the data
        folder = os.path.join(str(manager.directory), str(epoch))
        for name, (size, digest) in expected.items():
            file = os.path.join(folder, name)
            if not os.path.isfile(file):
                return f"its file {name} is missing"
            if os.path.getsize(file) != size:
                return f"its file {name} has {os.path.getsize(file)} bytes, not {size}"
            if _file_hash(file) != digest:
                return f"its file {name} differs from the one written"
        return ""

    def latest_epoch(self) -> int | None:
        return self.latest.latest_step()

    def _restore(self, manager: ocp.CheckpointManager, epoch: int, abstract_tree: Any):
        """One checkpoint, restored and checked against its digest; None (and a warning,
        once) when it is damaged."""
        where = os.path.join(str(manager.directory), str(epoch))
        if where in self._damaged:
            return None
        target = jax.tree.map(_with_sharding, {**abstract_tree, DIGEST: np.zeros(32, np.uint8)})
        restored, why = None, self._check_files(manager, epoch)
        if not why:
            try:
                restored = manager.restore(epoch, args=ocp.args.StandardRestore(target))
                digest = np.asarray(_host(restored.pop(DIGEST)))
                ok = np.array_equal(digest, tree_digest(restored))
                why = "" if ok else "its contents differ from the digest saved with it"
            except Exception as e:  # a damaged checkpoint fails in orbax, tensorstore or json
                restored, why = None, _short(e)
        if why:
            self._damaged[where] = why
            warnings.warn(
                f"checkpoint {where} is damaged ({why}); skipping it", CheckpointWarning, 2
            )
            return None
        return restored

    def restore_newest(self, abstract_tree: Any, at_most: int | None = None):
        """(tree, epoch) of the newest usable periodic checkpoint at or before `at_most`
        (None: any), skipping damaged ones with a warning; (None, 0) when none is."""
        for epoch in sorted(self.latest.all_steps(), reverse=True):
            if at_most is None or epoch <= at_most:
                tree = self._restore(self.latest, epoch, abstract_tree)
                if tree is not None:
                    return tree, epoch
        return None, 0

    def restore(self, abstract_tree: Any, which: str = "latest", epoch: int | None = None):
        """(tree, which, epoch): the `which` ('best' or 'latest') checkpoint, or periodic
        checkpoint `epoch`, restored into the structure of `abstract_tree` (arrays or
        ShapeDtypeStructs). A damaged or missing best checkpoint falls back to the newest
        usable periodic one, a damaged periodic one to the one before; UserError when
        none is usable."""
        if epoch is not None:
            tree = self._restore(self.latest, epoch, abstract_tree)
            if tree is not None:
                return tree, "latest", epoch
        else:
            if which == "best" and self.best.best_step() is not None:
                tree = self._restore(self.best, self.best.best_step(), abstract_tree)
                if tree is not None:
                    return tree, "best", self.best.best_step()
            tree, newest = self.restore_newest(abstract_tree)
            if tree is not None:
                return tree, "latest", newest
        damaged = "; ".join(f"{k} ({v})" for k, v in self._damaged.items())
        raise UserError(
            f"{self.run_dir!r} has no usable checkpoint"
            + (f": damaged {damaged}" if damaged else "")
            + "; train the run again (move the damaged folders away first)"
        )

    def rewind(self, epoch: int) -> None:
        """Delete every checkpoint (periodic and best) after `epoch`: a run resumed from
        `epoch` trains those epochs again and offers each again as the best."""
        for manager in (self.latest, self.best):
            for step in manager.all_steps():
                if step > epoch:
                    self._remove_manifest(manager, step)
                    manager.delete(step)

    def close(self) -> None:
        self.latest.close()
        self.best.close()
