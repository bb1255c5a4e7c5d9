#!/usr/bin/env bash
# A conv VAE with the discretised logistic likelihood on the offline colour images
# (sklearn_photos: 1,550 train / 350 test 32x32x3 patches), reporting bits per
# dimension; the metrics and a sample grid go to experiments/results/colour_vae/.
#   bash experiments/colour_vae.sh [extra aevae train options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/colour_vae
results=experiments/results/colour_vae
start=$(date +%s)
.venv/bin/aevae train --model vae --dataset sklearn_photos --backbone conv \
  --likelihood logistic --binarize none --epochs 30 --batch-size 64 --out "$out" "$@"
mkdir -p "$results"
.venv/bin/aevae evaluate --run "$out" --checkpoint latest --iwae-k 100 \
  --json "$results"/metrics.json
.venv/bin/aevae sample --run "$out" --n 64 --out "$results"/samples.png
echo "colour VAE: $(( $(date +%s) - start )) s"
