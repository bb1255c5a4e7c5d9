"""A run directory on disk: config.json, metrics.jsonl, the seed_<s> folders of runs
trained together, and the checks made before anything is written into one.

Paths are stored so that a run directory can move: config.json records the run
directory as "." (itself) and data files by absolute path; `read_config` puts the
directory it was read from back into the config. Files are written to a temporary
name and renamed, so a killed process leaves the previous version intact, and
metrics.jsonl is strict JSON (a non-finite number is written as null).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings

import jax

from aevae_jax.config import RunConfig, config_differences
from aevae_jax.data.spec import DataSpec
from aevae_jax.errors import UserError, require
from aevae_jax.writing import json_text, write_text

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
# What may differ between a run's saved config and the one that resumes it (the epoch
# budget is checked further in train._check_epoch_change).
RESUMABLE_FIELDS = (
    "epochs",
    "out",
    "checkpoint_every",
    "nonfinite_patience",
    "tensorboard",
    "image_every",
    "keep_best",
)


class RunWarning(UserWarning):
    """Something in a run directory was not as written (a damaged log line, no run to
    resume), and was worked around."""


def ensure_writable_dir(out: str) -> None:
    """Create `out` if needed and check that files can be written there."""
    require(
        not os.path.exists(out) or os.path.isdir(out),
        f"--out {out!r} is a file; name a directory",
    )
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write_test{jax.process_index()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UserError(
            f"cannot write to the output directory {out!r} ({e.strerror}); choose a writable --out"
        ) from None


def has_run(out: str) -> bool:
    return os.path.isfile(os.path.join(out, CONFIG_FILE))


def prepare_out_dir(out: str, resume: bool) -> bool:
    """Create `out` and check it is writable; refuse to overwrite a run unless resuming.
    Returns whether there is a run to resume: `resume` on a directory that holds none
    starts the run, with a warning (so one command both starts a job and restarts it)."""
    ensure_writable_dir(out)
    if has_run(out) and not resume:
        raise UserError(
            f"{out!r} already holds a run; pass --resume to continue it, or choose another --out"
        )
    if resume and not has_run(out):
        warnings.warn(f"--resume: {out!r} holds no run yet; starting it", RunWarning, 2)
    return resume and has_run(out)


def new_dirs(path: str) -> list[str]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    out, path = [], os.path.abspath(path)
    while not os.path.exists(path):
        out.append(path)
        path = os.path.dirname(path)
    return out


def remove_unused(run_dirs: list[str], created: list[str]) -> None:
    """After a run failed: remove the run directories among `run_dirs` that it created
    (in `created`) and that hold no config.json (nothing of a run), then the other
    directories it created, deepest first, where they are empty."""
    for d in run_dirs:
        d = os.path.abspath(d)
        if d in created and os.path.isdir(d) and not has_run(d):
            shutil.rmtree(d, ignore_errors=True)
    for d in sorted(created, key=len, reverse=True):
        try:
            os.rmdir(d)  # only if empty: another job may be writing there
        except OSError:
            pass


def check_resumable(cfg: RunConfig, saved: RunConfig) -> None:
    """Refuse to resume the run `saved` with `cfg` when they differ beyond
    RESUMABLE_FIELDS; the message names each field that differs."""
    differ = config_differences(saved, cfg, ignore=RESUMABLE_FIELDS)
    if not differ:
        return
    values = lambda c: dict(_flatten(c.to_dict()))
    old, new = values(saved), values(cfg)
    shown = ", ".join(f"{k}: saved {old.get(k)!r}, given {new.get(k)!r}" for k in differ[:4])
    more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
    raise UserError(
        f"--resume: {cfg.out!r} was trained with other options ({shown}{more}); "
        "leave them out (`aevae train --resume --out DIR` reads them from config.json), or "
        "start a new run with another --out"
    )


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def write_log(path: str, rows: list[dict]) -> None:
    """metrics.jsonl: one strict-JSON line per epoch."""
    write_text(path, "".join(json_text(r, indent=None) + "\n" for r in rows))


def read_log(path: str, up_to_epoch: int | None = None) -> list[dict]:
    """The rows of a metrics.jsonl (those up to `up_to_epoch`); a damaged line is skipped
    with a warning that names it (the checkpoints, not the log, hold the run's state)."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                epoch = int(row["epoch"])
            except (ValueError, KeyError, TypeError):
                warnings.warn(f"{path} line {number} is damaged; skipping it", RunWarning, 2)
                continue
            if up_to_epoch is None or epoch <= up_to_epoch:
                rows.append(row)
    return rows


def write_config(out: str, cfg: RunConfig, spec: DataSpec, steps_per_epoch: int) -> None:
    """config.json: the run's configuration (its directory as ".") and a description of
    its data, enough to rebuild the model and its optimisers without loading the data."""
    saved = {
        "run": dataclasses.replace(cfg, out=".").to_dict(),
        "data_spec": spec.to_dict(),
        "steps_per_epoch": steps_per_epoch,
    }
    write_text(os.path.join(out, CONFIG_FILE), json_text(saved))


def read_config(run_dir: str) -> tuple[RunConfig, DataSpec, int]:
    """(run config, data description, steps per epoch) from `run_dir`/config.json; the
    config's `out` is `run_dir`, wherever the run was trained."""
    path = os.path.join(run_dir, CONFIG_FILE)
    seeds = [] if os.path.isfile(path) else seed_run_dirs(run_dir)
    require(
        not seeds,
        f"{run_dir!r} holds the runs of several seeds "
        f"({', '.join(os.path.basename(d) for d in seeds)}); pass one of them, e.g. "
        + (seeds[0] if seeds else ""),
    )
    require(
        os.path.isfile(path),
        f"{run_dir!r} is not a run directory (no {CONFIG_FILE}); pass the --out of an "
        "`aevae train` run",
    )
    try:
        with open(path) as f:
            saved = json.load(f)
        cfg = RunConfig.from_dict({**saved["run"], "out": run_dir})
        spec = DataSpec(**saved["data_spec"])
        return cfg, spec, int(saved["steps_per_epoch"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(
            f"{path} is damaged or from an older version of aevae_jax ({type(e).__name__}: "
            f"{str(e)[:200]}); restore it from a copy, or train the run again"
        ) from None


def seed_dir(out: str, seed: int) -> str:
    """The run directory of seed `seed` among the seeds trained together into `out`."""
    return os.path.join(out, f"seed_{seed}")


def seed_run_dirs(out: str) -> list[str]:
    """The seed_<s> run directories (with a config.json) under `out`, by seed."""
    names = os.listdir(out) if os.path.isdir(out) else []
    seeds = sorted(
        int(n[5:])
        for n in names
        if n.startswith("seed_") and n[5:].isdigit() and has_run(os.path.join(out, n))
    )
    return [seed_dir(out, s) for s in seeds]
