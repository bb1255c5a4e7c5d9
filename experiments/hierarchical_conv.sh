#!/usr/bin/env bash
# The hierarchical conv VAE against the one-layer conv VAE at the same budget: Fashion-
# MNIST, --backbone conv (the VAE's two stride-2 convolutions; the hvae has its own
# residual network), 10 epochs of the first 30,000 training images (half the set, to fit
# the 2-core CPU: about 30 min), batch 128, Adam 1e-3, dynamic binarization, seed 0, NLL
# by IWAE K=100; then a copy of the report, metrics and figures into
# experiments/results/hvae_conv/, which docs/families.md quotes.
#   bash experiments/hierarchical_conv.sh [extra aevae compare options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/hvae_conv
results=experiments/results/hvae_conv
start=$(date +%s)
.venv/bin/aevae compare --models vae,hvae --backbone conv --epochs 10 --train-size 30000 --iwae-k 100 --out "$out" "$@"
echo "hierarchical conv comparison: $(( $(date +%s) - start )) s"
mkdir -p "$results"
cp "$out"/report.md "$out"/metrics.json "$out"/*.png "$results"/
echo "copied the report to $results/"
