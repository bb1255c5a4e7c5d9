"""Shared fixtures: the real Fashion-MNIST (offline, prepared once per machine) and
small real subsets saved as .npz for fast end-to-end runs."""

import os
import shutil
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One compilation cache for this test run, shared by both pytest workers and the
# subprocesses they start: many tests compile the same small programs, and the resume
# tests compile each training run three times. It starts empty on every run.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(
        tempfile.gettempdir(),
        "aevae-test-jax-cache-"
        + (os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"),
    ),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The FD classifiers the tests train go to a cache of this run's own, so a run on a
# developer's machine costs what it costs on a fresh one (~/.cache is never read).
os.environ["AEVAE_CACHE"] = os.path.join(
    tempfile.gettempdir(),
    "aevae-test-classifiers-" + (os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"),
)
# The suite is bound by compile time, not run time: with LLVM's optimisation level 0 XLA
# compiles it about a third faster (the zoo fixture 111 s instead of 152 s). Every number
# a test compares is computed under the same flags, here and in the subprocesses.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# TensorBoard summaries cost a training run about 0.7 s (the image program's compile and
# the PNGs): off by default here; tests/test_tensorboard.py turns them on where it checks
# them.
os.environ["AEVAE_TENSORBOARD"] = "0"
# The experiments' scaffolding (experiments/scaffold.py) is imported as the scripts import it.
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
)

import numpy as np
import pytest

from aevae_jax.data.sources import load_dataset


@pytest.fixture(scope="session")
def fashion_mnist():
    return load_dataset("fashion_mnist")


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory, request):
    """2048 train / 512 test real Fashion-MNIST images as an .npz (uint8, labels); a
    pytest that a test starts gets its parent's file through AEVAE_TEST_SMALL_NPZ."""
    if os.environ.get("AEVAE_TEST_SMALL_NPZ"):
        return os.environ["AEVAE_TEST_SMALL_NPZ"]
    fashion_mnist = request.getfixturevalue("fashion_mnist")
    path = tmp_path_factory.mktemp("data") / "fmnist_small.npz"
    np.savez(
        path,
        x_train=fashion_mnist.x_train[:2048],
        y_train=fashion_mnist.y_train[:2048],
        x_test=fashion_mnist.x_test[:512],
        y_test=fashion_mnist.y_test[:512],
    )
    return str(path)


def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):  # the controller, after every worker
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
        shutil.rmtree(os.environ["AEVAE_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session")
def small_data(small_npz):
    """The small .npz subset loaded: 2048 training and 512 test images, so that per-epoch
    test passes cost little."""
    return load_dataset(small_npz)


@pytest.fixture(scope="session")
def experiment_cache(tmp_path_factory):
    """The experiments' cache of trained models, one per pytest worker: the quick AE and
    VAE that several experiments share train once per worker, not once per test file."""
    return str(tmp_path_factory.mktemp("experiment-cache"))
