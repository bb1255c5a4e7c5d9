"""What the literature says of each model (`Claim`, registered with the model), checked
from a comparison's own numbers: against another model trained alongside (its stored
comparison and interval, see verdicts.py), or against a fixed number such as chance."""

from __future__ import annotations

from aevae_jax.evaluate import catalogue
from aevae_jax.models import Claim, model_info
from aevae_jax.study import verdicts as V
from aevae_jax.writing import number

VERDICTS = {True: "Supported", False: "Not supported", None: "No measurable difference"}


def check_claims(m: dict) -> list[dict]:
    """Every registered claim of every compared model whose reference is at hand:
    {"model", "claim", "measured", "supported" (True, False or None), "verdict"}."""
    out = []
    for name in m["models"]:
        for claim in model_info(name).claims:
            checked = check_claim(m, name, claim)
            if checked is not None:
                supported, measured = checked
                out.append({"model": name, "claim": claim.text, "measured": measured,
                            "supported": supported, "verdict": VERDICTS[supported]})  # fmt: skip
    return out


def check_claim(m: dict, name: str, claim: Claim) -> tuple[bool | None, str] | None:
    """(supported, what was measured) of one claim, or None when it cannot be checked
    here (the metric is missing, the claim does not apply to these options, or the model
    it is compared with was not trained alongside)."""
    r = m["models"][name]
    value = r.get(claim.metric)
    if value is None or (claim.applies and not claim.applies(r.get("options", {}))):
        return None
    label = catalogue.label(claim.metric)
    if isinstance(claim.than, str) and claim.than != "chance":
        if claim.than not in m["models"]:
            return None
        ref = m["models"][claim.than].get(claim.metric)
        c = V.comparison(m, claim.metric, claim.than, name)
        d = V.direction(c)
        supported = None if d == 0 else d == (-1 if claim.better == "lower" else 1)
        text = f"{label}: {name} {number(value)}, {claim.than} {number(ref)}{V.interval_text(c)}"
        return supported, text
    if claim.than == "chance":
        ref = 1.0 / m["config"]["num_classes"]
    else:
        ref = claim.than(r) if callable(claim.than) else claim.than
    n = r.get(claim.metric.replace("accuracy", "n")) if claim.metric.endswith("accuracy") else None
    supported = V.beyond_threshold(value, n, ref, claim.better == "higher")
    what = "chance" if claim.than == "chance" else "the threshold"
    return supported, f"{label}: {name} {number(value, 3)}, {what} {number(ref, 3)}"
