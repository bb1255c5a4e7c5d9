#!/usr/bin/env bash
# The experiments of experiments/README.md with their defaults, one after the
# other (they share trained models through runs/experiments/cache, so the order decides
# which one trains a shared model: the README's runtimes are for this order). Each writes
# experiments/results/<name>/; a log per experiment goes to runs/experiments/logs/.
#   bash experiments/run_all.sh [name ...]     (default: all, in this order)
set -euo pipefail
cd "$(dirname "$0")/.."
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(latent_2d denoising uncertainty rate_distortion generation \
  augmentation representation anomaly disentanglement)
mkdir -p runs/experiments/logs
for name in "${names[@]}"; do
  start=$(date +%s)
  log="runs/experiments/logs/$name.log"
  if ! .venv/bin/python "experiments/$name.py" --quiet > "$log" 2>&1; then
    tail -n 20 "$log"; echo "$name failed; its log: $log"; exit 1
  fi
  echo "$name: $(( $(date +%s) - start )) s"
done
