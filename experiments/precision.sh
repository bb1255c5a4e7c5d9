#!/usr/bin/env bash
# float32 against bfloat16 compute (--dtype): the main job's VAE (30 epochs, 3 seeds
# trained together each), its test -ELBO of the last epoch per seed, mean ± std, and
# wall time; the step-time ratio is benchmarks/scale_out.py's. Writes
# experiments/results/precision.json, which docs/scaling.md quotes.
#   bash experiments/precision.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for dtype in float32 bfloat16; do
  rm -rf "runs/precision/$dtype"
  start=$(date +%s)
  .venv/bin/aevae train --model vae --epochs 30 --seeds 0,1,2 --dtype "$dtype" \
    --out "runs/precision/$dtype" --quiet
  echo "$(( $(date +%s) - start ))" > "runs/precision/$dtype.seconds"
done
.venv/bin/python - <<'PYEOF'
import json, os, statistics
out = {}
for dtype in ("float32", "bfloat16"):
    runs = sorted(os.listdir(f"runs/precision/{dtype}"))
    last = [json.loads(open(f"runs/precision/{dtype}/{r}/metrics.jsonl").read().splitlines()[-1])
            for r in runs]
    elbo = [r["test_neg_elbo"] for r in last]
    out[dtype] = {
        "runs": runs,
        "test_neg_elbo": elbo,
        "mean": statistics.mean(elbo),
        "std": statistics.stdev(elbo),
        "step_ms_median": statistics.median(r["step_ms"] for r in last),
        "wall_seconds": int(open(f"runs/precision/{dtype}.seconds").read()),
    }
    print(f"{dtype}: test -ELBO {out[dtype]['mean']:.2f} ± {out[dtype]['std']:.2f} "
          f"({', '.join(f'{v:.2f}' for v in elbo)}), {out[dtype]['wall_seconds']} s")
with open("experiments/results/precision.json", "w") as f:
    json.dump(out, f, indent=2)
PYEOF
