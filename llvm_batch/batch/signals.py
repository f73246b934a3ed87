"""SIGINT and SIGTERM during a run: ask it to stop (flush, keep the checkpoint) instead of dying."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .summary import EXIT_SIGINT, EXIT_SIGTERM

T = TypeVar("T")

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


class Interrupts:
    """A run's stop signals: remembered, passed on to ``on_stop``, and cancelling the wait in
    progress (for the output's lock, for the server) so that every phase stops at once."""

    def __init__(self, on_stop: Callable[[int, str], None]) -> None:
        self.signal: tuple[int, str] | None = None
        self._on_stop = on_stop
        self._phase: asyncio.Future[Any] | None = None

    def __call__(self, code: int, reason: str) -> None:
        if self.signal is None:
            self.signal = (code, reason)
        if self._phase is not None:
            self._phase.cancel()
        self._on_stop(code, reason)

    async def unless_interrupted(self, work: Coroutine[Any, Any, T]) -> T | None:
        """``work``'s result, or None when a signal stopped the run first."""
        if self.signal is not None:
            work.close()
            return None
        phase: asyncio.Future[T] = asyncio.ensure_future(work)
        self._phase = phase
        try:
            return await phase
        except asyncio.CancelledError:
            if self.signal is None:
                raise
            return None
        finally:
            self._phase = None
