"""Sync over async: the ``run_sync`` bridge and the :class:`LLVMClient` facade.

``run_sync`` runs a coroutine to completion from plain code, and also from inside a running
event loop (a Jupyter cell) by running it on a background loop thread. ``LLVMClient`` keeps
one background loop of its own, so its HTTP session outlives each call.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from .client import AsyncLLVMClient, ClientStats
from .options import Priority

try:  # a faster event loop, where it is installed (not on Windows)
    import uvloop
except ImportError:  # pragma: no cover - depends on the platform
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")

#: ``LLVM_BATCH_EVENT_LOOP=asyncio`` keeps the standard library's loop even with uvloop.
ENV_EVENT_LOOP = "LLVM_BATCH_EVENT_LOOP"


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
        if _running_loop() is self.loop:
            coro.close()
            raise RuntimeError("LoopThread.run called from its own loop; await instead")
        return self.submit(coro).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion, whether or not this thread already runs an event loop."""
    if _running_loop() is None:
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


class LLVMClient:
    """Blocking client: the same methods and results as :class:`AsyncLLVMClient`.

    Works in scripts and inside a running event loop alike. Example::

        with LLVMClient(base_url="http://127.0.0.1:8000") as client:
            print(client.list_models())
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = LoopThread()
        try:
            self._async = AsyncLLVMClient(*args, **kwargs)
        except BaseException:
            self._loop.stop()
            raise
        # A client dropped without close() (a script's last line, a notebook cell run again)
        # closes quietly when collected or at exit, as requests and httpx users expect, instead
        # of aiohttp's "Unclosed client session" on stderr.
        self._closer = weakref.finalize(self, _shut_down, self._loop, self._async)

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncLLVMClient", "LLVMClient", 1)

    @property
    def async_client(self) -> AsyncLLVMClient:
        """The async engine underneath (bound to this client's loop thread)."""
        return self._async

    @property
    def loop_thread(self) -> LoopThread:
        """The loop thread the engine runs on."""
        return self._loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def list_models(self, *, priority: Priority | str = Priority.NORMAL) -> dict[str, Any]:
        """The server's answer to list models, as it came (``{"models": [...]}``)."""
        return self._run(self._async.list_models(priority=priority))

    def model_ids(self, *, priority: Priority | str = Priority.NORMAL) -> list[str]:
        """The ids of the models the server offers, in any protocol."""
        return self._run(self._async.model_ids(priority=priority))

    def ping(self) -> None:
        """Ask the server once, past the queue and breaker; raises what it met."""
        self._run(self._async.ping())

    # The signatures below mirror AsyncLLVMClient's exactly (a test keeps them equal), so the
    # sync face keeps its keywords, types and defaults.

    def get_model_info(
        self, model_id: str | None = None, *, priority: Priority | str = Priority.NORMAL
    ) -> dict[str, Any]:
        """The server's description of a model (status, details; or its list entry)."""
        return self._run(self._async.get_model_info(model_id, priority=priority))

    def run_inference(
        self,
        model_id: str | None,
        inputs: Any,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        params: Mapping[str, Any] | None = None,
        priority: Priority | str = Priority.NORMAL,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Run ``inputs`` through a model; returns the server's answer as it came."""
        return self._run(
            self._async.run_inference(
                model_id,
                inputs,
                max_tokens=max_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                params=params,
                priority=priority,
                idempotency_key=idempotency_key,
                **extra,
            )
        )

    def chat(
        self,
        model: str | None,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        params: Mapping[str, Any] | None = None,
        priority: Priority | str = Priority.NORMAL,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A chat turn: ``content``, ``role``, ``finish_reason``, ``usage``... (as the async
        client)."""
        return self._run(
            self._async.chat(
                model,
                messages,
                max_tokens=max_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                params=params,
                priority=priority,
                idempotency_key=idempotency_key,
                **extra,
            )
        )

    def test_endpoint(self) -> bool:
        """True when the server answers."""
        return self._run(self._async.test_endpoint())

    def set_api_key(self, api_key: str | None) -> None:
        self._async.set_api_key(api_key)

    def get_api_key(self) -> str | None:
        return self._async.get_api_key()

    def get_default_model(self) -> str | None:
        return self._async.get_default_model()

    @property
    def config(self) -> Any:
        return self._async.config

    @property
    def request_count(self) -> int:
        """Completed HTTP exchanges."""
        return self._async.request_count

    @property
    def queue_depth(self) -> int:
        return self._async.queue_depth

    @property
    def active_requests(self) -> int:
        return self._async.active_requests

    @property
    def breaker_state(self) -> str:
        return self._async.breaker_state

    def stats(self) -> ClientStats:
        return self._async.stats()

    def close(self) -> None:
        """Close the HTTP session and stop the loop thread."""
        self._closer()

    def __enter__(self) -> LLVMClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _shut_down(loop: LoopThread, client: AsyncLLVMClient) -> None:
    """Close ``client``'s session on ``loop``, then stop the loop (once; no reference to the
    facade, so that collecting it can run this)."""
    if loop.loop.is_closed():
        return
    if _running_loop() is loop.loop:  # collected on the loop's own thread: can't wait there
        loop.loop.create_task(client.aclose()).add_done_callback(lambda _: loop.loop.stop())
        return
    loop.run(client.aclose())
    loop.stop()
