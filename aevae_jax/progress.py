"""Progress bars for long work (training, evaluation, benchmarks), one style for all."""

from __future__ import annotations


def progress_bar(
    iterable=None,
    *,
    total=None,
    desc: str,
    unit: str,
    enabled: bool = True,
    initial: int = 0,
    leave: bool = False,
):
    """A tqdm bar over `iterable` (or counting to `total`); a silent one when not enabled."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        initial=initial,
        leave=leave,
        dynamic_ncols=True,
    )
