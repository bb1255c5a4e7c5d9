"""The benchmark harnesses, run small: XLA's FLOP count of the MLP VAE step against a
hand count, every record field of benchmarks/step_time.py, and the IWAE throughput
script's vectorised estimates against its per-example loop (the same samples), and the
records of the scale-out benchmark (seeds together, bfloat16)."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import eval_throughput
import make_npz
import numpy as np
import scale_out
import step_time

from aevae_jax.config import ModelConfig, RunConfig
from aevae_jax.data.sources import load_dataset
from aevae_jax.data.spec import DataSpec
from aevae_jax.models import make_model
from aevae_jax.study.timing import compiled_stats, matmul_peak_gflops
from aevae_jax.train.fit import prepare_config
from aevae_jax.train.stages import main_stage_start
from aevae_jax.train.step import make_train_step


def test_xla_flop_count_of_the_mlp_vae_step_matches_a_hand_count():
    b, d, h, latent = 32, 784, 400, 20
    cfg = prepare_config(RunConfig(model=ModelConfig(name="vae", hidden=(h,), latent_dim=latent)))
    model = make_model(cfg.model, DataSpec("t", (28, 28, 1)))
    x = jnp.zeros((b, 28, 28, 1), jnp.uint8)
    plan, keys, state = main_stage_start(model, cfg, 1, x, None)
    step = jax.jit(make_train_step(plan.loss, plan.tx, "dynamic"))
    flops = compiled_stats(step, state, keys, x, None, jnp.arange(b))["flops"]
    # Matmuls: forward 2*B*(d*h + h*2L + L*h + h*d); weight gradients the same again;
    # input gradients of every layer but the first (its input is data) once more.
    matmuls = step_time.hand_flops_mlp_vae(b, d, h, latent)
    # XLA also counts the elementwise work (activations, likelihood, binarization, Adam):
    # a few percent on top of the products.
    assert matmuls <= flops <= 1.15 * matmuls


@pytest.fixture
def quick_peak(monkeypatch):
    """The matmul peak from one small size (the scripts' own measurement takes seconds)."""
    peak = lambda: matmul_peak_gflops(sizes=(256,), repeats=2)
    monkeypatch.setattr(step_time, "matmul_peak_gflops", peak)
    monkeypatch.setattr(eval_throughput, "matmul_peak_gflops", peak)


def test_step_time_writes_every_field_with_same_run_ratios(small_npz, tmp_path, quick_peak):
    out = tmp_path / "st.json"
    argv = "--models vae,ae --backbones mlp --batch-sizes 16 --rounds 2 --steps 3 --no-torch"
    records = step_time.main([*argv.split(), "--dataset", small_npz, "--out", str(out)])
    assert json.loads(out.read_text()) == records and len(records) == 2
    vae = next(r for r in records if r["model"] == "vae")
    for field in (
        "step_ms_scan",
        "step_ms_jit",
        "compile_s",
        "images_per_s",
        "gflops_per_step",
        "pct_of_peak",
        "peak_gflops",
        "minimal_jax_ratio",
        "peak_mem_mb",
    ):
        assert vae[field] > 0, field
    assert vae["torch_step_ms"] is None and vae["torch_ratio"] is None  # --no-torch
    assert vae["images_per_s"] == pytest.approx(16 / vae["step_ms_scan"] * 1000)
    assert vae["device"] == jax.devices()[0].device_kind
    assert vae["hand_gflops_per_step"] <= vae["gflops_per_step"]
    ae = next(r for r in records if r["model"] == "ae")
    assert ae["minimal_jax_ratio"] is None  # the minimal baseline is a VAE
    assert "| vae | mlp | 16 |" in (tmp_path / "st.md").read_text()


def test_eval_throughput_loop_and_vectorised_estimates_agree(small_npz, tmp_path, quick_peak):
    out = tmp_path / "et.json"
    argv = ["--dataset", small_npz, "--n-test", "120", "--k", "200", "--loop-examples", "2"]
    record = eval_throughput.main([*argv, "--epochs", "0", "--out", str(out)])
    assert json.loads(out.read_text()) == record
    assert record["n_test"] == 120 and record["k"] == 200
    assert record["loop_max_abs_diff_nats"] < 1e-3  # the same samples, summed in float64
    assert record["samples_per_s"] == pytest.approx(120 * 200 / record["seconds"])
    assert record["loop_ratio"] > 0 and record["pct_of_peak"] > 0


def test_make_npz_writes_a_data_set_that_loads_back_the_same(small_npz, tmp_path):
    out = tmp_path / "copy" / "data.npz"
    make_npz.main([small_npz, str(out)])
    a, b = load_dataset(small_npz), load_dataset(str(out))
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_scale_out_writes_seed_and_precision_records(small_npz, tmp_path):
    out = tmp_path / "scale.json"
    argv = ["--seeds", "1,2", "--batch-sizes", "16", "--rounds", "2", "--steps", "2",
            "--backbones", "mlp"]  # fmt: skip
    assert scale_out.main([*argv, "--dataset", small_npz, "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    seeds = [r for r in records if r["kind"] == "seeds"]
    assert {(r["program"], r["seeds"]) for r in seeds} == {
        (p, s) for p in ("ours", "minimal") for s in (1, 2)
    }
    for r in seeds:
        assert r["ratio_to_one_seed"] > 0 and r["step_ms"] > 0
        np.testing.assert_allclose(r["seed_step_ms"] * r["seeds"], r["step_ms"])
        if r["seeds"] == 1:
            assert r["ratio_to_one_seed"] == 1.0
    precision = [r for r in records if r["kind"] == "precision"]
    assert [r["backbone"] for r in precision] == ["mlp"]
    assert all(r["bfloat16_step_ms"] > 0 and r["float32_step_ms"] > 0 for r in precision)
    table = (tmp_path / "scale.md").read_text()
    assert "| ours | 16 | 2 |" in table and "| mlp |" in table
