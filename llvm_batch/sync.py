"""The blocking face: :class:`LLVMClient`, the async engine driven from plain code.

``LLVMClient`` keeps one background loop of its own (:class:`~llvm_batch.loops.LoopThread`),
so its HTTP session outlives each call, in scripts and inside a running event loop alike.
"""

from __future__ import annotations

import weakref
from collections.abc import Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from .client import AsyncLLVMClient
from .compat import Unpack
from .config import ClientConfig, ClientSettings, Priority
from .engine import ClientStats
from .loops import LoopThread, running_loop

T = TypeVar("T")


class LLVMClient:
    """Blocking client: the same methods and results as :class:`AsyncLLVMClient`.

    Works in scripts and inside a running event loop alike. Example::

        with LLVMClient(base_url="http://127.0.0.1:8000") as client:
            print(client.list_models())
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        default_model: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        config: ClientConfig | None = None,
        **settings: Unpack[ClientSettings],
    ) -> None:
        """As :class:`AsyncLLVMClient`: settings as keywords
        (:class:`~llvm_batch.config.ClientSettings`), resolved with ``metadata`` and the
        ``LLVM_*`` environment, or one finished ``config``. The engine's hooks for injected time
        (``clock=``, ``sleep=``...) belong to the async face, whose loop the caller drives."""
        self._loop = LoopThread()
        try:
            self._async = AsyncLLVMClient(
                base_url, api_key, default_model, metadata=metadata, config=config, **settings
            )
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
        """Use ``api_key`` for the following requests (None to send no key)."""
        self._async.set_api_key(api_key)

    def get_api_key(self) -> str | None:
        """The API key in use, or None."""
        return self._async.get_api_key()

    def get_default_model(self) -> str | None:
        """The model used when a call passes none."""
        return self._async.get_default_model()

    @property
    def config(self) -> ClientConfig:
        """The client's finished settings."""
        return self._async.config

    @property
    def request_count(self) -> int:
        """Completed HTTP exchanges."""
        return self._async.request_count

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a concurrency slot."""
        return self._async.queue_depth

    @property
    def active_requests(self) -> int:
        """Requests in flight."""
        return self._async.active_requests

    @property
    def breaker_state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (``disabled`` without a breaker)."""
        return self._async.breaker_state

    def stats(self) -> ClientStats:
        """A snapshot of queue depth, active requests, the concurrency limit, breaker, counters."""
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
    if running_loop() is loop.loop:  # collected on the loop's own thread: can't wait there
        loop.loop.create_task(client.aclose()).add_done_callback(lambda _: loop.loop.stop())
        return
    loop.run(client.aclose())
    loop.stop()
