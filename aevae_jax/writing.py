"""How the project writes what it measured: one JSON writer, one number formatter, one
markdown table writer. Every result file, log line, report and printed summary goes
through these, so a NaN is `null` in every JSON file and "n/a" in every table alike.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np


def jsonable(x: Any) -> Any:
    """`x` as strict JSON values: dict keys as strings, tuples and arrays (NumPy or JAX)
    as lists, NumPy scalars as Python numbers, NaN and infinities as None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if hasattr(x, "__array__") and not isinstance(x, np.generic):
        return jsonable(np.asarray(x).tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` whole or not at all: a temporary file beside it, then an
    atomic rename (a killed process leaves the old file, never half a new one)."""
    tmp = path + ".tmp"  # a kill leaves this at most, and the next write replaces it
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def json_text(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON of `obj` (see `jsonable`)."""
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)


def write_json(path: str, obj: Any, indent: int | None = 2) -> None:
    """`obj` as strict JSON in `path`, written atomically."""
    write_text(path, json_text(obj, indent) + "\n")


def number(v: Any, digits: int = 2) -> str:
    """A number for people: "n/a" for None, NaN and infinities; integers as they are;
    other numbers with `digits` decimals."""
    if v is None or isinstance(v, bool):
        return "n/a" if v is None else str(v)
    if isinstance(v, int | np.integer):
        return str(int(v))
    v = float(v)
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"


def markdown_row(cells: list) -> str:
    """One table row; pipes inside a cell (as in q(z|x)) are escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def markdown_table(header: list, rows: list[list]) -> list[str]:
    """A markdown table as lines: the header, the rule, one line per row."""
    return [markdown_row(header), "|" + "---|" * len(header), *map(markdown_row, rows)]
