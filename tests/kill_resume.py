"""The kill-and-resume loop: SIGKILL `aevae train` again and again, resume after each kill,
and check that the finished run equals an uninterrupted one bit for bit.

Each kill lands at one of three kinds of moment, drawn from a seeded generator:
- `compile`: as soon as the run has (re)written its log, before its first epoch, which
  is while its epoch program compiles;
- `save`: inside a checkpoint write, after orbax has written the files and before it
  renames the temporary folder (the child patches orbax to kill itself there);
- `random`: once the log reaches a random epoch up to two checkpoint periods past the
  newest checkpoint, plus a random fraction of an epoch: anywhere in training,
  testing, logging or saving.
Kills in a checkpoint write also land in the first to sixth write after the restart.
Then the run is resumed to its end, and its last checkpoint (parameters, every
optimiser state and the step), its log (each epoch once, in order) and its best
checkpoint (the epoch with the lowest selection score, with that epoch's parameters)
are compared with an uninterrupted run of the same command.

    python tests/kill_resume.py --kills 20            # what CI runs (about 3 minutes)

tests/test_interrupts.py runs a short version (3 kills) in the normal suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KINDS = ("compile", "save", "random")
TIMES = ("epoch_seconds", "step_ms", "compile_seconds")  # log fields that measure time


def train_args(npz: str, out: str, epochs: int, checkpoint_every: int) -> list[str]:
    return [
        "train", "--dataset", npz, "--train-size", "512", "--hidden", "64", "--latent-dim",
        "4", "--epochs", str(epochs), "--batch-size", "32", "--checkpoint-every",
        str(checkpoint_every), "--out", out, "--quiet", "--resume",
    ]  # fmt: skip


def _child(kill_in_save: int, argv: list[str]) -> int:
    """Run `aevae argv`, SIGKILLing this process inside its kill_in_save-th checkpoint
    write (0: never)."""
    # As a command typed at a terminal: Ctrl-C reaches it, even where the tests run with
    # SIGINT ignored (in a background job), which the child would inherit.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if kill_in_save:
        from orbax.checkpoint._src.path import atomicity

        original = atomicity.AtomicRenameTemporaryPath.finalize
        calls = []

        async def finalize(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == kill_in_save:  # files written, folder not yet renamed
                os.kill(os.getpid(), signal.SIGKILL)
            return await original(self, *args, **kwargs)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    from aevae_jax.cli.main import main

    return main(argv)


def _start(argv: list[str], kill_in_save: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "child", str(kill_in_save), "--", *argv]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _rows(out: str) -> int:
    path = os.path.join(out, "metrics.jsonl")
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def _log_time(out: str) -> float:
    try:
        return os.stat(os.path.join(out, "metrics.jsonl")).st_mtime_ns
    except OSError:
        return 0


def _wait(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """Poll until ready() (True) or the process ends (False)."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        if time.time() > deadline:
            raise AssertionError("the training process made no progress in 120 s")
        time.sleep(0.005)
    return True


def _kill(proc: subprocess.Popen) -> str:
    """SIGKILL proc; 'killed', or 'finished' when it had already ended cleanly."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode == -signal.SIGKILL:
        return "killed"
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, f"training failed (exit {proc.returncode}): {err}"
    return "finished"


def kill_loop(npz: str, workdir: str, kills: int, seed: int = 0, epochs: int | None = None,
              checkpoint_every: int = 3, log=print) -> dict:  # fmt: skip
    """Kill a run `kills` times (every kind at least once when kills >= 3), resume it to
    the end and compare it with an uninterrupted run. `epochs` (default 3 * kills + 6)
    must leave room for every kill. Returns counts of the kinds of kill and of the
    restarts that resumed from a checkpoint (`resumed`); raises AssertionError on any
    difference, or when the run finished before the last kill."""
    rng = random.Random(seed)
    epochs = epochs or 3 * kills + 6
    straight = os.path.join(workdir, "straight")
    t0 = time.perf_counter()
    # The uninterrupted run, in this process: the children inherit its environment (and
    # so its XLA flags), so the same command computes the same bits.
    from aevae_jax.cli.main import main

    assert main(train_args(npz, straight, epochs, checkpoint_every)) == 0
    run_seconds = time.perf_counter() - t0
    epoch_seconds = max(0.01, run_seconds / epochs / 4)  # a rough upper bound, for delays

    out = os.path.join(workdir, "killed")
    argv = train_args(npz, out, epochs, checkpoint_every)
    plan = [KINDS[i] for i in range(min(kills, 3))]
    plan += [rng.choice(KINDS) for _ in range(kills - len(plan))]
    rng.shuffle(plan[1:])  # the first kill is in the first compile of the fresh run
    counts = {k: 0 for k in (*KINDS, "finished", "resumed")}
    for i, kind in enumerate(plan):
        # Each kill lands up to two checkpoint periods after the newest checkpoint, so
        # the run moves on between kills and most restarts resume from a checkpoint.
        done = _latest_checkpoint(out)
        counts["resumed"] += done > 0
        reach = rng.randint(1, 2 * checkpoint_every)
        if kind == "save":  # in the reach-th checkpoint write (best or periodic)
            proc = _start(argv, kill_in_save=reach)
            proc.wait()
            result = "killed" if proc.returncode == -signal.SIGKILL else _kill(proc)
        else:
            before = _log_time(out)
            proc = _start(argv)
            _wait(proc, lambda b=before: _log_time(out) != b)  # the log rewritten at start
            if kind == "random":
                _wait(proc, lambda t=done + reach: _rows(out) >= t)
                time.sleep(rng.uniform(0, epoch_seconds))
            result = _kill(proc)
        counts[kind if result == "killed" else "finished"] += 1
        log(
            f"kill {i + 1}/{len(plan)} ({kind}): {result}, resumed from epoch {done}, "
            f"{_rows(out)} epochs logged"
        )
    assert counts["finished"] == 0, f"the run ended before {counts['finished']} of the kills"
    # The restarts are the starts after each kill: the second to the last kill's, and this
    # last resume, to the end, in this process (the first start is the fresh run's).
    counts["resumed"] += _latest_checkpoint(out) > 0
    assert main(argv) == 0
    compare_runs(out, straight, epochs)
    return counts


def _latest_checkpoint(out: str) -> int:
    folder = os.path.join(out, "checkpoints")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return max((int(n) for n in names if n.isdigit()), default=0)


def compare_runs(out: str, straight: str, epochs: int) -> None:
    """The two runs' last checkpoints, logs and best checkpoints are the same."""
    from aevae_jax.train.runs import load_run

    a, b = _restore(out, epochs), _restore(straight, epochs)
    for key in ("params", "opt_state", "step"):
        assert _tree_equal(a[key], b[key]), f"{key} differs from the uninterrupted run"
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    ref = [json.loads(line) for line in open(os.path.join(straight, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1)), "log rows"
    for r, s in zip(rows, ref, strict=True):  # every number but the times
        same = {k: v for k, v in r.items() if k not in TIMES} == {
            k: v for k, v in s.items() if k not in TIMES
        }
        assert same, f"epoch {r['epoch']}'s log row differs from the uninterrupted run's"
    select = rows[0]["selection"]
    best_epoch = min(rows, key=lambda r: r[select])["epoch"]
    best = load_run(out, "best", need_data=False)
    assert best.which == "best" and best.epoch == best_epoch, (best.epoch, best_epoch)
    assert _tree_equal(best.params, load_run(straight, "best", need_data=False).params)


def _restore(run_dir: str, epoch: int) -> dict:
    """The whole checkpoint tree of periodic checkpoint `epoch` of a run."""
    from aevae_jax.models import make_model
    from aevae_jax.train.checkpoint import RunCheckpoints
    from aevae_jax.train.rundir import read_config
    from aevae_jax.train.runs import checkpoint_template

    cfg, spec, steps = read_config(run_dir)
    template = checkpoint_template(make_model(cfg.model, spec), cfg, spec, steps)
    checkpoints = RunCheckpoints(run_dir)
    try:
        tree, _, got = checkpoints.restore(template, epoch=epoch)
    finally:
        checkpoints.close()
    assert got == epoch
    return tree


def _tree_equal(a, b) -> bool:
    import jax

    same = jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)
    return all(jax.tree.leaves(same))


def small_npz(path: str) -> str:
    """The first 512 training and 256 test images of Fashion-MNIST, as an .npz."""
    from aevae_jax.data.sources import load_dataset

    ds = load_dataset("fashion_mnist")
    np.savez(path, x_train=ds.x_train[:512], y_train=ds.y_train[:512],
             x_test=ds.x_test[:256], y_test=ds.y_test[:256])  # fmt: skip
    return path


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        return _child(int(sys.argv[2]), sys.argv[4:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: 3 * kills + 6")
    p.add_argument("--checkpoint-every", type=int, default=3)
    p.add_argument("--npz", default=None, help="default: a Fashion-MNIST subset")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        npz = args.npz or small_npz(os.path.join(work, "small.npz"))
        t0 = time.perf_counter()
        counts = kill_loop(npz, work, args.kills, args.seed, args.epochs, args.checkpoint_every)
    assert counts["resumed"] >= args.kills // 2, "too few restarts resumed from a checkpoint"
    kinds = ", ".join(f"{k} {counts[k]}" for k in KINDS)
    print(
        f"kill-and-resume: {sum(counts[k] for k in KINDS)} kills ({kinds}), "
        f"{counts['resumed']} of the restarts resumed from a checkpoint, in "
        f"{time.perf_counter() - t0:.0f} s; the resumed run equals the uninterrupted one "
        "bit for bit (parameters, optimiser states, step, every logged number but the "
        "timings, best checkpoint)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
