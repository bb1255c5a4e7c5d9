"""Interruptions: SIGKILL at any moment and Ctrl-C lose nothing. The short kill loop
here kills a run three times (in its first compile, inside a checkpoint write, at a
random moment); CI runs the full loop of 20 kills (tests/kill_resume.py)."""

import os
import signal

import pytest

import aevae_jax.train.fit as train
from aevae_jax.cli.main import main
from aevae_jax.train.interrupts import stop_on_sigint
from tests import kill_resume


@pytest.mark.slow
def test_three_kills_and_resumes_equal_an_uninterrupted_run_bit_for_bit(small_npz, tmp_path):
    counts = kill_resume.kill_loop(small_npz, str(tmp_path), kills=3, seed=1, log=lambda _: None)
    assert {k: counts[k] for k in ("compile", "save", "random", "finished")} == {
        "compile": 1,
        "save": 1,
        "random": 1,
        "finished": 0,
    }


@pytest.mark.slow
def test_ctrl_c_stops_after_the_epoch_with_a_checkpoint_and_says_how_to_resume(small_npz, tmp_path):
    out = tmp_path / "run"
    argv = kill_resume.train_args(small_npz, str(out), epochs=16, checkpoint_every=100)
    proc = kill_resume._start(argv)
    assert kill_resume._wait(proc, lambda: kill_resume._rows(str(out)) >= 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 130, err
    rows = kill_resume._rows(str(out))
    assert f"stopped after epoch {rows} (Ctrl-C); " in err
    assert f"resume from epoch {rows} with `aevae train --resume --out {out}`" in err
    assert "Traceback" not in err
    # The checkpoint of that epoch was saved although it is not a periodic one.
    assert (out / "checkpoints" / str(rows)).is_dir()
    # The command it names resumes the run to its end.
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    assert kill_resume._rows(str(out)) == 16


@pytest.fixture
def sigint_handler():
    """Sets the SIGINT handler the process has (whatever it inherited: under `nohup` or in
    a background job, Ctrl-C is ignored) and puts the inherited one back afterwards."""
    inherited = signal.getsignal(signal.SIGINT)
    yield lambda handler: signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGINT, inherited)


@pytest.mark.parametrize(
    "before", [signal.default_int_handler, lambda signum, frame: None], ids=["python", "own"]
)
def test_a_second_ctrl_c_stops_at_once(sigint_handler, before):
    sigint_handler(before)
    with stop_on_sigint() as stop_requested:
        assert not stop_requested()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop_requested()  # the first asks for a stop after the epoch
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_an_ignored_ctrl_c_stays_ignored(sigint_handler):
    sigint_handler(signal.SIG_IGN)  # whoever started the process asked for that
    with stop_on_sigint() as stop_requested:
        os.kill(os.getpid(), signal.SIGINT)
        assert not stop_requested()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_ctrl_c_before_the_run_is_written_leaves_nothing_and_says_so(
    small_npz, tmp_path, monkeypatch, capsys
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "load_dataset", interrupted)
    out = tmp_path / "new" / "run"
    code = main(["train", "--dataset", small_npz, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 130
    assert err == f"aevae: interrupted; nothing was saved in {out}; run the same command again"
    assert not (tmp_path / "new").exists()


def test_resume_of_an_empty_directory_starts_the_run(small_npz, tmp_path, capsys):
    out = tmp_path / "fresh"
    args = ["train", "--dataset", small_npz, "--train-size", "256", "--hidden", "32",
            "--latent-dim", "4", "--batch-size", "32", "--epochs", "1", "--quiet"]  # fmt: skip
    assert main([*args, "--resume", "--out", str(out)]) == 0
    assert "holds no run yet; starting it" in capsys.readouterr().err
    assert (out / "checkpoints" / "1").is_dir()
