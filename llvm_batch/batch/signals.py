"""SIGINT and SIGTERM during a run: ask it to stop (flush, keep the checkpoint) instead of dying."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable

from .summary import EXIT_SIGINT, EXIT_SIGTERM

STOP_SIGNALS = ((signal.SIGINT, EXIT_SIGINT), (signal.SIGTERM, EXIT_SIGTERM))


def on_stop_signals(stop: Callable[[int, str], None]) -> Callable[[], None]:
    """Call ``stop(exit_code, reason)`` on SIGINT/SIGTERM; returns the undo function.

    Only the main thread can take signals; elsewhere (a notebook's background loop) this is a
    no-op and the default handlers stay.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    handled = []
    for signum, code in STOP_SIGNALS:
        try:
            loop.add_signal_handler(signum, stop, code, f"interrupted by {signum.name}")
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        handled.append(signum)

    def restore() -> None:
        for signum in handled:
            loop.remove_signal_handler(signum)

    return restore
