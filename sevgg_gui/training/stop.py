"""Ctrl-C / SIGTERM for long runs (``sevgg train``, ``sevgg distill``): the first one asks the loop to
stop after the current optimizer step and save a checkpoint that resumes exactly; a second Ctrl-C
aborts at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


def install_stop_handlers(
    requested: Callable[[], bool], request: Callable[[], None], log: Callable[[str], None]
) -> Callable[[], None]:
    """Route SIGINT/SIGTERM to ``request()`` (``requested()`` says whether one is already pending);
    returns a function that puts the previous handlers back. Off the main thread (where Python
    cannot install handlers, e.g. a test runner's worker) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if requested() and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        request()
        log("stop requested: finishing this step, then saving (Ctrl-C again to abort)")

    for s in previous:
        signal.signal(s, handler)

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
