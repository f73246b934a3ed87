"""Event-loop plumbing: which loop to make (uvloop or asyncio), a loop on a thread of its own,
and ``run_sync``, the one bridge from plain code to a coroutine.

``run_sync`` runs a coroutine to completion from plain code, and also from inside a running
event loop (a Jupyter cell) by running it on a background thread with a loop of its own.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

try:  # a faster event loop, where it is installed (not on Windows)
    import uvloop
except ImportError:  # pragma: no cover - depends on the platform
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")

#: ``LLVM_BATCH_EVENT_LOOP=asyncio`` keeps the standard library's loop even with uvloop.
ENV_EVENT_LOOP = "LLVM_BATCH_EVENT_LOOP"

__all__ = ["ENV_EVENT_LOOP", "LoopThread", "new_event_loop", "run_loop", "run_sync", "running_loop"]


def _use_uvloop() -> bool:
    return uvloop is not None and os.environ.get(ENV_EVENT_LOOP, "").lower() != "asyncio"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's where available, else the standard library's."""
    return uvloop.new_event_loop() if _use_uvloop() else asyncio.new_event_loop()


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on a loop from :func:`new_event_loop`."""
    if _use_uvloop():
        return uvloop.run(coro)
    return asyncio.run(coro)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopThread:
    """An event loop running forever on a daemon thread; coroutines are submitted to it."""

    def __init__(self, name: str = "llvm-batch-loop") -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this loop and wait for it from the calling thread."""
        if running_loop() is self.loop:
            coro.close()
            raise RuntimeError("LoopThread.run called from its own loop; await instead")
        return self.submit(coro).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion, whether or not this thread already runs an event loop."""
    if running_loop() is None:
        return run_loop(coro)
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(run_loop(coro))
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="llvm-batch-run-sync", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
