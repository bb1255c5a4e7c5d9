#!/usr/bin/env bash
# The main job over three seeds trained together (mean ± std for every metric, model
# differences paired by seed), then a copy of its report into experiments/results/,
# which docs/scaling.md quotes. Run from the repository root after
# `bash install.sh`; compare its wall time with experiments/main_comparison.sh's.
#   bash experiments/seeds_comparison.sh [extra aevae compare options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/compare_seeds
results=experiments/results/fashion_mnist_seeds
start=$(date +%s)
.venv/bin/aevae compare --seeds 0,1,2 --out "$out" "$@"
echo "main job, 3 seeds: $(( $(date +%s) - start )) s"
mkdir -p "$results"
cp "$out"/report.md "$out"/metrics.json "$results"/
echo "copied the report to $results/"
