#!/usr/bin/env bash
# The main job with its defaults (AE vs VAE on Fashion-MNIST, 30 epochs, IWAE K=1000),
# samples scored from the prior and from three ex-post samplers (a Gaussian, a Gaussian
# mixture, a RealNVP flow, each fitted to the training codes), then a copy of its report, metrics and figures into experiments/results/, which is
# what README.md and docs/results.md quote. Run from the repository root after `bash install.sh`.
#   bash experiments/main_comparison.sh [extra aevae compare options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/compare
results=experiments/results/fashion_mnist
start=$(date +%s)
.venv/bin/aevae compare --out "$out" --samplers expost,gmm,flow "$@"
echo "main job: $(( $(date +%s) - start )) s"
mkdir -p "$results"
cp "$out"/report.md "$out"/metrics.json "$out"/*.png "$results"/
echo "copied the report to $results/"
