"""The verdict rules, side by side: when the project calls one model better than another.

Each rule turns two models' numbers into a difference with an interval (or a yes/no), and a
verdict sentence names a winner only when the rule says the difference is real:

- `over_images`: a single run per model; per-test-image values paired by image, a 95%
  percentile bootstrap interval of the mean difference. `aevae compare` with one seed, for
  every metric with per-image values (catalogue.per_image).
- `by_seed`: several seeds per model, trained alike; per-seed values paired by seed, a 95%
  t interval on n - 1 degrees of freedom. `aevae compare --seeds`: the spread that
  retraining brings, which one run cannot show.
- `from_standard_errors`: split-level numbers with standard errors of their own (binomial
  for accuracies, bootstrap for Frechet distances): difference +- 1.96 combined s.e.
- `seed_spread`: the experiments' rule, for per-seed values of models not paired by seed:
  a difference is stated only when |mean a - mean b| > std a + std b.

`compare_metric` picks the rule a comparison's numbers allow; `direction` and `better`
read its result.
"""

from __future__ import annotations

import math

import numpy as np

from aevae_jax.evaluate import catalogue
from aevae_jax.evaluate import metrics as M

Z975 = 1.96


def over_images(a_per_image, b_per_image) -> dict:
    """b - a over paired test images: {"diff", "lo", "hi", "method"}."""
    return {**M.paired_bootstrap(b_per_image, a_per_image), "method": "paired bootstrap over "
            "test images"}  # fmt: skip


def by_seed(a_per_seed, b_per_seed) -> dict:
    """b - a over paired seeds (t interval): {"diff", "lo", "hi", "method"}."""
    n = len(a_per_seed)
    return {**M.seed_paired_interval(a_per_seed, b_per_seed),
            "method": f"paired by seed, t with {n - 1} dof"}  # fmt: skip


def from_standard_errors(diff: float, se: float, method: str) -> dict:
    return {"diff": diff, "lo": diff - Z975 * se, "hi": diff + Z975 * se, "method": method}


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of per-seed values."""
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def seed_spread(a_per_seed, b_per_seed) -> bool:
    """Whether two models' per-seed values differ by more than their spread over seeds:
    |mean(a) - mean(b)| > std(a) + std(b)."""
    (ma, sa), (mb, sb) = mean_std(a_per_seed), mean_std(b_per_seed)
    return abs(ma - mb) > sa + sb


def _standard_error_rule(metric: str, ra: dict, rb: dict) -> dict:
    diff = float(rb[metric] - ra[metric])
    if metric.endswith("accuracy"):
        n_key = metric.replace("accuracy", "n")
        se_a = M.binomial_se(ra[metric], ra.get(n_key, 1))
        se_b = M.binomial_se(rb[metric], rb.get(n_key, 1))
        return from_standard_errors(diff, math.hypot(se_a, se_b), "binomial standard errors")
    if ra.get(f"{metric}_se") is not None and rb.get(f"{metric}_se") is not None:
        se = math.hypot(ra[f"{metric}_se"], rb[f"{metric}_se"])
        return from_standard_errors(diff, se, "bootstrap standard errors")
    return {"diff": diff, "lo": None, "hi": None, "method": "no uncertainty available"}


def compare_metric(metric: str, a: str, b: str, evaluations: dict, results: dict) -> dict | None:
    """b's value minus a's for `metric` with a 95% interval, by the strongest rule the
    numbers allow (by seed, over images, from standard errors); None when either model
    lacks the metric."""
    ra, rb = results[a], results[b]
    if ra.get(metric) is None or rb.get(metric) is None:
        return None
    seeds_a, seeds_b = ra.get("per_seed", []), rb.get("per_seed", [])
    if len(seeds_a) >= 2 and len(seeds_a) == len(seeds_b):
        return by_seed([m[metric] for m in seeds_a], [m[metric] for m in seeds_b])
    key = catalogue.per_image_key(metric)
    pa = evaluations[a].per_image.get(key) if key else None
    pb = evaluations[b].per_image.get(key) if key else None
    if pa is not None and pb is not None:
        return over_images(pa, pb)
    return _standard_error_rule(metric, ra, rb)


# ------------------------------------------------------------------ reading comparisons


def comparison(m: dict, metric: str, a: str, b: str) -> dict | None:
    """The stored comparison of b against a on `metric` (b - a, with its interval), from a
    comparison's metrics.json dict (either order)."""
    comps = m.get("comparisons", {})
    if f"{b}-{a}" in comps:
        return comps[f"{b}-{a}"].get(metric)
    c = comps.get(f"{a}-{b}", {}).get(metric)
    if c is None:
        return None
    flip = lambda v: None if v is None else -v
    return {**c, "diff": -c["diff"], "lo": flip(c["hi"]), "hi": flip(c["lo"])}


def direction(c: dict | None) -> int:
    """+1 when b - a is surely positive, -1 surely negative, 0 when the interval holds 0
    (or there is no interval)."""
    if c is None or c.get("lo") is None or c.get("hi") is None:
        return 0
    return 1 if c["lo"] > 0 else -1 if c["hi"] < 0 else 0


def better(m: dict, metric: str, a: str, b: str) -> str | None:
    """Which of a and b is measurably better on `metric`, or None."""
    d = direction(comparison(m, metric, a, b))
    if d == 0:
        return None
    return b if (d < 0) == catalogue.lower_is_better(metric) else a


def interval_text(c: dict | None, digits: int = 2) -> str:
    """' (difference +x, 95% interval +lo to +hi)', or '' without an interval."""
    if c is None or c.get("lo") is None:
        return ""
    return (
        f" (difference {c['diff']:+.{digits}f}, 95% interval {c['lo']:+.{digits}f} to "
        f"{c['hi']:+.{digits}f})"
    )


def se_sign(ra: dict, rb: dict, key_a: str, key_b: str) -> int:
    """Sign of ra[key_a] - rb[key_b] when it exceeds 1.96 combined standard errors
    (`<key>_se`), else 0: two different metrics compared by their own s.e."""
    va, vb = ra.get(key_a), rb.get(key_b)
    sa, sb = ra.get(f"{key_a}_se"), rb.get(f"{key_b}_se")
    if None in (va, vb, sa, sb):
        return 0
    margin = Z975 * math.hypot(sa, sb)
    return 1 if va - vb > margin else -1 if vb - va > margin else 0


def beyond_threshold(value: float, n: int | None, threshold: float, higher: bool) -> bool:
    """Whether a measured value is surely beyond a fixed threshold: its 95% interval (a
    binomial one for accuracies measured on n trials, else the value itself) lies above
    (higher) or below it."""
    se = M.binomial_se(value, n) if n else 0.0
    return value - Z975 * se > threshold if higher else value + Z975 * se < threshold
