#!/usr/bin/env bash
# The VAE against the two models with priors of their own, at the same budget: the
# VampPrior VAE (500 learned pseudo-inputs) and the two-stochastic-layer VAE (z2 -> z1 ->
# x), on Fashion-MNIST with the main job's defaults (MLP 784-400-20, 30 epochs, IWAE
# K=1000); then a copy of the report, metrics and figures into experiments/results/priors/,
# which docs/variants.md quotes. Each model's rate is its KL to its own prior.
#   bash experiments/priors_comparison.sh [extra aevae compare options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/priors
results=experiments/results/priors
start=$(date +%s)
.venv/bin/aevae compare --models vae,vamp_vae,two_layer_vae --pair ae,vae --out "$out" "$@"
echo "priors comparison: $(( $(date +%s) - start )) s"
mkdir -p "$results"
cp "$out"/report.md "$out"/metrics.json "$out"/*.png "$results"/
echo "copied the report to $results/"
