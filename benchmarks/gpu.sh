#!/usr/bin/env bash
# The speed suite on a bare CUDA machine whose python3 already has jax with CUDA, flax,
# optax, orbax-checkpoint and tqdm (PyTorch optional; tensorflow-datasets not needed).
# Under 5 minutes on one H100. Prints the table and writes, under benchmarks/results/,
# step_time_gpu.json/.md, eval_throughput_gpu.json and scale_out_gpu.json/.md.
#
#   python benchmarks/make_npz.py fashion_mnist data/fashion_mnist.npz   # where tfds or
#                                          # Debian's IDX files are (data/ is git-ignored)
#   bash benchmarks/gpu.sh [data/fashion_mnist.npz]                      # on the GPU machine
set -euo pipefail
NPZ=$(realpath -m "${1:-$(dirname "$0")/../data/fashion_mnist.npz}")
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${RESULTS:-benchmarks/results}
if [ ! -f "$NPZ" ]; then
  echo "gpu.sh: no $NPZ; make it where the data is: python benchmarks/make_npz.py fashion_mnist $NPZ" >&2
  exit 1
fi
$PY - <<'PYEOF'
import importlib.util, sys
missing = [m for m in ("jax", "flax", "optax", "orbax", "tqdm") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu.sh: this python lacks {', '.join(missing)}; install them (pip install ...)")
import jax
if jax.default_backend() != "gpu":
    sys.exit(f"gpu.sh: jax sees no GPU (backend {jax.default_backend()!r}); install jax with CUDA")
print("gpu.sh:", jax.devices()[0].device_kind, "jax", jax.__version__)
PYEOF
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX takes GPU memory as it needs it, so that the PyTorch baseline fits beside it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# Every registered model would take longer than 5 minutes to compile; the VAE and AE on
# both backbones at batch 128 and 512 cover the targets (f32 matmuls run as JAX's default
# precision, which is TF32 on Ampere and Hopper).
$PY benchmarks/step_time.py --models vae,ae --backbones mlp,conv --batch-sizes 128,512 \
  --dataset "$NPZ" --out "$RESULTS/step_time_gpu.json"
$PY benchmarks/eval_throughput.py --dataset "$NPZ" --out "$RESULTS/eval_throughput_gpu.json"
# Seeds together (1, 4, 16 x batch 128, 1024) and bfloat16 against float32.
$PY benchmarks/scale_out.py --dataset "$NPZ" --out "$RESULTS/scale_out_gpu.json"
