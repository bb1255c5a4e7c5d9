"""Ctrl-C during training: a first one asks for a stop after the current epoch (which the
run then saves as a checkpoint), a second one stops at once."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[Callable[[], bool]]:
    """Within the block, a first Ctrl-C asks training to stop after the current epoch; a
    second one raises KeyboardInterrupt. Yields a function that says whether a stop was
    asked for. The handler found on entry is put back on exit. Ctrl-C is left alone
    outside the main thread, and where it is ignored (a background job, `trap '' INT`):
    whoever started the process asked for that."""
    asked = []
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous in (
        signal.SIG_IGN,
        None,  # a handler installed outside Python, which could not be put back
    ):
        yield lambda: False
        return

    def handler(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(True)
        print(
            "\naevae: stopping after this epoch, with a checkpoint (Ctrl-C again: now)",
            file=sys.stderr,
        )

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(asked)
    finally:
        signal.signal(signal.SIGINT, previous)
