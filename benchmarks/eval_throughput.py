"""Evaluation throughput: the IWAE likelihood estimate with K = 5000 importance samples
on the whole test split, as `aevae evaluate` computes it, against a per-example loop.

- ours: `aevae_jax.evaluate.scores.iwae_bound` over the split with `SplitMap`, exactly as
  `evaluate_model` runs it (examples vmapped in chunks of 100, blocks of 500, samples
  in chunks of 100 combined by a running log-sum-exp inside `lax.scan`);
- the loop: what pythae's `get_nll` does, one example at a time, one compiled call per
  chunk of 100 samples, the log-sum-exp on the host. It draws the very same samples
  (sample j of example i from fold_in(fold_in(key, i), j)), so both give the same
  estimates, which the script checks, and it runs on the first --loop-examples images
  (the whole split would take far longer); its rate is per image.

The model is the MLP VAE 784-400-20, trained for --epochs epochs (the numbers do not
depend on the weights; the printed NLL is for orientation only). Reported: seconds,
importance samples per second, XLA's FLOP count (cost analysis of one chunk of examples
and samples, scaled to K) as achieved GFLOP/s and as a percentage of the f32 matmul
speed measured in the same run, and the ratio loop time per image / ours.

    python benchmarks/eval_throughput.py                  # K = 5000, 10,000 test images
    python benchmarks/eval_throughput.py --n-test 1000 --k 500    # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from aevae_jax.config import ModelConfig, RunConfig
from aevae_jax.data.sources import load_dataset
from aevae_jax.data.spec import DataSpec
from aevae_jax.evaluate.scores import iwae_bound
from aevae_jax.evaluate.split import TEST_SPLIT, SplitMap, eval_inputs, one
from aevae_jax.models import make_model
from aevae_jax.study.timing import compiled_stats, matmul_peak_gflops
from aevae_jax.train.fit import prepare_config
from aevae_jax.train.stages import main_stage_start
from aevae_jax.train.step import make_train_epoch

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE_CHUNK = 100  # samples per step, both sides
EXAMPLE_CHUNK, BLOCK = 100, 500  # evaluate_model's defaults (chunk 500 // 5, block 500)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=5000, help="importance samples (default 5000)")
    p.add_argument("--n-test", type=int, default=None, help="first N test images (all)")
    p.add_argument("--loop-examples", type=int, default=20, help="images for the loop (20)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs first (2)")
    p.add_argument("--dataset", default="fashion_mnist", help="tfds name or .npz path")
    p.add_argument("--out", default=os.path.join(HERE, "results", "eval_throughput.json"))
    return p.parse_args(argv)


def trained_vae(ds, epochs):
    """The MLP VAE with its defaults, trained for `epochs` epochs: (model, params, cfg)."""
    cfg = prepare_config(RunConfig(model=ModelConfig(name="vae"), batch_size=128))
    spec = DataSpec("bench", ds.x_train.shape[1:], None)
    model = make_model(cfg.model, spec)
    x = jnp.asarray(ds.x_train)
    steps = len(x) // cfg.batch_size
    plan, keys, state = main_stage_start(model, cfg, steps, x, None)
    epoch = make_train_epoch(plan.loss, plan.tx, "dynamic", cfg.batch_size, len(x))
    for e in range(epochs):
        state, _ = epoch(state, keys, x, None, e)
    return model, state.params, cfg.model


def make_per_example_loop(model, k):
    """loop(params, x, key) -> log p(x_i) estimates of every image of x, one example and
    one chunk of samples per compiled call, as pythae's get_nll."""

    @jax.jit
    def chunk_weights(params, xi, key_i, js):
        batch = one(xi, None)
        lw = lambda j: model.log_importance_weights(params, batch, jax.random.fold_in(key_i, j), 1)
        return jax.vmap(lw)(js)[:, 0, 0]

    chunks = [jnp.arange(s, min(s + SAMPLE_CHUNK, k)) for s in range(0, k, SAMPLE_CHUNK)]

    def loop(params, x, key):
        out = []
        for i in range(len(x)):
            key_i = jax.random.fold_in(key, i)
            weights = [chunk_weights(params, x[i], key_i, js) for js in chunks]
            w = np.concatenate([np.asarray(c, np.float64) for c in weights])
            out.append(np.logaddexp.reduce(w) - np.log(k))
        return np.array(out)

    return loop


def main(argv=None):
    args = parse_args(argv)
    ds = load_dataset(args.dataset)
    peak = matmul_peak_gflops()
    print(f"f32 matmul peak measured now: {peak:.1f} GFLOP/s")
    model, params, cfg = trained_vae(ds, args.epochs)
    d = int(np.prod(ds.x_train.shape[1:]))
    x_test = eval_inputs(jnp.asarray(ds.x_test[: args.n_test]), "dynamic", split=TEST_SPLIT)
    n = len(x_test)
    key = jax.random.key(7)
    iwae = SplitMap(iwae_bound(model, args.k), EXAMPLE_CHUNK, block=BLOCK)
    context = (params, key)

    # XLA's cost analysis counts a loop's body once, so count one chunk of examples with
    # one chunk of samples (every loop a single trip) and scale to K samples.
    chunk = x_test[: min(EXAMPLE_CHUNK, n)]
    one_chunk = SplitMap(iwae_bound(model, SAMPLE_CHUNK), EXAMPLE_CHUNK)
    stats = compiled_stats(one_chunk.run_block, context, (chunk, None), 0)
    flops_per_image = stats["flops"] / len(chunk) * args.k / SAMPLE_CHUNK
    jax.block_until_ready(iwae(context, (x_test[: min(BLOCK, n)], None)))  # compile first

    t0 = time.perf_counter()
    ours = np.asarray(iwae(context, (x_test, None), desc=f"IWAE K={args.k}", progress=True))
    seconds = time.perf_counter() - t0

    m = min(args.loop_examples, n)
    per_example_loop = make_per_example_loop(model, args.k)
    per_example_loop(params, x_test[:1], key)  # compile (a last short chunk compiles too)
    t0 = time.perf_counter()
    loop = per_example_loop(params, x_test[:m], key)
    loop_seconds = time.perf_counter() - t0
    diff = float(np.max(np.abs(loop - ours[:m])))

    achieved = flops_per_image * n / seconds / 1e9
    record = {
        "model": f"vae mlp {d}-{'-'.join(map(str, cfg.hidden))}-{cfg.latent_dim}",
        "k": args.k,
        "n_test": n,
        "seconds": seconds,
        "samples_per_s": n * args.k / seconds,
        "gflops_per_image": flops_per_image / 1e9,
        "achieved_gflops": achieved,
        "peak_gflops": peak,
        "pct_of_peak": 100 * achieved / peak,
        "loop_examples": m,
        "loop_seconds_per_image": loop_seconds / m,
        "loop_ratio": (loop_seconds / m) / (seconds / n),
        "loop_max_abs_diff_nats": diff,
        "test_nll_iwae": float(-np.mean(ours)),
        "device": jax.devices()[0].device_kind,
    }
    print(json.dumps(record, indent=1))
    print(
        f"\nIWAE K={args.k} on {n} images: {seconds:.1f} s, {record['samples_per_s']:,.0f} "
        f"samples/s, {achieved:.1f} GFLOP/s = {record['pct_of_peak']:.0f}% of the matmul peak; "
        f"per-example loop {record['loop_ratio']:.1f}x slower per image "
        f"(same estimates to {diff:.1e} nats)"
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    return record


if __name__ == "__main__":
    main()
