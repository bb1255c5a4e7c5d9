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
# The suite is bound by compile time, not run time. With LLVM's optimisation level 0, XLA's
# classic elemental emitters instead of its MLIR fusion emitters, and each module compiled
# as one LLVM module (no split into parallel parts), XLA compiles the suite's programs
# about 2.4 times faster than with level 0 alone (a VAE, a VQ-VAE and a masked AE trained
# and evaluated: 6.1 s of compiling instead of 14.7 s). Every number a test compares is
# computed under the same flags, here and in the subprocesses, which inherit them.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", "")]
    + [
        f"--{flag}={value}"
        for flag, value in (
            ("xla_backend_optimization_level", 0),
            ("xla_cpu_use_fusion_emitters", "false"),
            ("xla_cpu_parallel_codegen_split_count", 1),
        )
        if flag not in os.environ.get("XLA_FLAGS", "")
    ]
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


# ------------------------------------------------------------------ work units
# pyproject.toml runs the suite on two workers with `--dist loadscope --no-loadscope-reorder`
# and this file's scheduler: a unit of work goes to one worker as a whole. The tests of a
# file in SHARED form one unit (they share a module fixture: the zoo, a trained run); the
# experiment scripts' files form one unit across files (they share the trained models of
# `experiment_cache`); every other test is a unit of its own, so that short tests fill
# whichever worker is free. Units go out longest first (UNIT_SECONDS: about what each takes
# on the project's 2-core machine, by unit or test function), then in collection order.
# The units are named from node ids alone, because the controller that schedules them
# does not collect; each worker checks that a test using a module fixture is in SHARED.
# (xdist's own `loadgroup` names groups by rewriting node ids, which pytest 9.2 ignores.)
EXPERIMENTS = "experiments"
EXPERIMENT_FILES = {
    "test_experiments_detection.py",
    "test_experiments_features.py",
    "test_experiments_generative.py",
}
SHARED = {"test_bad_input.py", "test_checkpoints.py", "test_compare.py", "test_priors.py",
          "test_sprites.py", "test_disentanglement.py"}  # fmt: skip
UNIT_SECONDS = {
    "test_compare.py": 200,
    EXPERIMENTS: 150,
    "test_guide_model_from_a_file_trains_evaluates_samples_and_compares": 60,
    "test_on_four_virtual_devices": 45,
    "test_three_kills_and_resumes_equal_an_uninterrupted_run_bit_for_bit": 35,
    "test_two_processes_train_as_one": 25,
    "test_train_seeds_command_and_evaluate_over_its_runs": 20,
    "test_scale_out_writes_seed_and_precision_records": 20,
    "test_ctrl_c_stops_after_the_epoch_with_a_checkpoint_and_says_how_to_resume": 18,
    "test_seeds_together_equal_sequential_runs": 18,
    "test_stopped_runs_resume_to_the_uninterrupted_state": 15,
    "test_console_script_trains_on_a_small_fashion_mnist_subset": 15,
    "test_a_vae_trains_on_the_colour_photos_and_reports_bits_per_dim": 15,
    "test_step_time_writes_every_field_with_same_run_ratios": 15,
    "test_checkpoints.py": 15,
    "test_priors.py": 12,
}


def unit_of(nodeid: str) -> str:
    """The work unit of a test, from its node id."""
    file = nodeid.split("::")[0].rsplit("/", 1)[-1]
    if file in EXPERIMENT_FILES:
        return EXPERIMENTS
    return file if file in SHARED else nodeid


def _seconds(nodeid: str) -> float:
    unit = unit_of(nodeid)
    function = nodeid.split("::")[-1].split("[")[0]
    return UNIT_SECONDS.get(unit, UNIT_SECONDS.get(function, 0))


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return Units(config, log)


def _shares_a_module_fixture(item) -> bool:
    for name in item.fixturenames:
        defs = item._fixtureinfo.name2fixturedefs.get(name)
        if name == "experiment_cache" or (defs and defs[-1].scope == "module"):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _shares_a_module_fixture(item) and unit_of(item.nodeid) == item.nodeid:
            raise pytest.UsageError(
                f"{item.nodeid} uses a module-scoped fixture: add {item.path.name} to SHARED"
                " in tests/conftest.py, so that its tests run on one worker"
            )
    if hasattr(config, "workerinput"):  # every worker sorts alike (a stable sort)
        items.sort(key=lambda item: -_seconds(item.nodeid))
