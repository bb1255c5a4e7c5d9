#!/usr/bin/env bash
# The generative variants against the article's pair, with their defaults: AE, VAE,
# beta-VAE, IWAE, conditional VAE, VQ-VAE (with its prior stage) and adversarial AE on
# Fashion-MNIST, 30 epochs each, IWAE K=1000; then a copy of the report, metrics and
# figures into experiments/results/variants/, which docs/variants.md quotes.
#   bash experiments/variants_comparison.sh [extra aevae compare options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/variants
results=experiments/results/variants
start=$(date +%s)
.venv/bin/aevae compare --models ae,vae,beta_vae,iwae,cvae,vqvae,aae --out "$out" "$@"
echo "variants comparison: $(( $(date +%s) - start )) s"
mkdir -p "$results"
cp "$out"/report.md "$out"/metrics.json "$out"/*.png "$results"/
echo "copied the report to $results/"
