#!/usr/bin/env bash
# The families of issue 21 beside the models their claims name, under the zoo's budget
# (MLP 784-400-20, 10 epochs, the discrete models' priors 10 more, IWAE K=100, seed 0):
# multi-sample bounds (MIWAE, CIWAE, PIWAE against the VAE and IWAE), flow posteriors
# (planar, IAF), hierarchies (the two-layer VAE, the Ladder VAE) and discrete codes (VQ-VAE,
# RQ-VAE, FSQ, Gumbel-softmax); then a copy of the report, metrics and figures into
# experiments/results/families/, which docs/families.md quotes.
#   bash experiments/families_comparison.sh [extra aevae compare options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/families
results=experiments/results/families
start=$(date +%s)
.venv/bin/aevae compare --models vae,iwae,miwae,ciwae,piwae,planar_vae,iaf_vae,two_layer_vae,ladder_vae,vqvae,rq_vae,fsq,gumbel_vae \
  --epochs 10 --iwae-k 100 --out "$out" "$@"
echo "families comparison: $(( $(date +%s) - start )) s"
mkdir -p "$results"
cp "$out"/report.md "$out"/metrics.json "$out"/*.png "$results"/
echo "copied the report to $results/"
