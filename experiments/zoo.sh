#!/usr/bin/env bash
# Every registered model under one budget: `aevae zoo` with its defaults on
# Fashion-MNIST (MLP 784-400-20, 10 epochs, IWAE K=100); then a copy of zoo.md,
# zoo.json, the report, metrics and figures into experiments/results/zoo/, which
# docs/variants.md quotes.
#   bash experiments/zoo.sh [extra aevae zoo options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/zoo
results=experiments/results/zoo
start=$(date +%s)
.venv/bin/aevae zoo --out "$out" "$@"
echo "zoo: $(( $(date +%s) - start )) s"
mkdir -p "$results"
cp "$out"/zoo.md "$out"/zoo.json "$out"/report.md "$out"/metrics.json "$out"/*.png "$results"/
echo "copied the zoo to $results/"
