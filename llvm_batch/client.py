"""AsyncLLVMClient: the protocol operations (models, inference, chat, ping) over one engine.

The client builds each call through its wire protocol (LLVM or OpenAI) and reads the answer;
the :class:`~llvm_batch.engine.Engine` takes every call to the wire and back (queue, limit,
breaker, retries).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random as _random
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from . import protocol
from .attempt import Outcome
from .compat import Unpack
from .config import ClientConfig, ClientSettings, Priority, resolve_config
from .engine import ClientStats as ClientStats
from .engine import Engine, Sleep
from .errors import LLVMError, safe_url
from .protocol import WireProtocol, get_protocol


class AsyncLLVMClient:
    """Async client for the LLVM server protocol, with queue, retries and circuit breaker.

    Example::

        async with AsyncLLVMClient(base_url="http://127.0.0.1:8000") as client:
            answer = await client.run_inference("llvm-model-1", "Hello")
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        default_model: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        config: ClientConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        **settings: Unpack[ClientSettings],
    ) -> None:
        """Settings come as keywords (:class:`~llvm_batch.config.ClientSettings`), resolved
        with ``metadata`` and the ``LLVM_*`` environment; or as one finished ``config``."""
        if config is None:
            config = resolve_config(
                base_url=base_url,
                api_key=api_key,
                default_model=default_model,
                metadata=metadata,
                **settings,
            )
        elif settings or metadata or base_url or api_key or default_model:
            raise TypeError("pass either config= or settings, not both")
        self.config: ClientConfig = config
        #: The wire protocol (``config.protocol``): every call is built and read through it.
        self.protocol: WireProtocol = get_protocol(config.protocol)
        self._engine = Engine(
            config, self.protocol, clock=clock, sleep=sleep, wall_clock=wall_clock, random=random
        )
        self._transport = self._engine.transport
        self._scheduler = self._engine.scheduler
        self._breaker = self._engine.breaker
        self._wall_clock = wall_clock

    @property
    def retry_count(self) -> int:
        """Attempts that were retries (counted once they really went out)."""
        return self._engine.retry_count

    async def send(
        self,
        call: protocol.Call,
        *,
        priority: Priority | str = Priority.NORMAL,
        idempotency_key: str | None = None,
        retry: bool = True,
    ) -> Outcome:
        """Make ``call`` with queueing, breaker and retries; the error, if any, is returned.

        Raises only :class:`QueueFullError` (nothing was sent) and cancellation.
        """
        return await self._engine.send(
            call, Priority.parse(priority), idempotency_key=idempotency_key, retry=retry
        )

    def __repr__(self) -> str:
        key = "set" if self._transport.api_key else "unset"
        return (
            f"<{type(self).__name__} base_url={safe_url(self._transport.root)!r} "
            f"protocol={self.config.protocol!r} "
            f"default_model={self.config.default_model!r} api_key={key}>"
        )

    # -- configuration -------------------------------------------------------------------

    def set_api_key(self, api_key: str | None) -> None:
        """Use ``api_key`` for the following requests (None to send no key)."""
        self.config = dataclasses.replace(self.config, api_key=api_key or None)
        self._transport.api_key = self.config.api_key

    def get_api_key(self) -> str | None:
        """The API key in use, or None."""
        return self._transport.api_key

    def get_default_model(self) -> str | None:
        """The model used when a call passes none."""
        return self.config.default_model

    def resolve_model(self, model_id: str | None) -> str:
        """``model_id``, else the default model; a clear ValueError when there is neither."""
        return self.config.model(model_id)

    # -- state ---------------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        """HTTP exchanges that got an answer (of any status)."""
        return self._transport.request_count

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a concurrency slot."""
        return self._scheduler.queue_depth

    @property
    def active_requests(self) -> int:
        """Requests in flight."""
        return self._scheduler.active

    @property
    def concurrency_limit(self) -> int:
        """Requests allowed in flight right now (adapts between 1 and the ceiling)."""
        return self._scheduler.limit

    @property
    def breaker_state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (``disabled`` without a breaker)."""
        return self._engine.breaker_state

    def breaker_retry_in(self) -> float:
        """Seconds until an open breaker lets requests through again (0 if it does now)."""
        return self._breaker.retry_in() if self._breaker else 0.0

    def stats(self) -> ClientStats:
        """A snapshot of queue depth, active requests, the concurrency limit, breaker, counters."""
        return self._engine.stats()

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> AsyncLLVMClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session; the client can open a new one if used again."""
        await self._transport.close()

    close = aclose

    # -- protocol operations -------------------------------------------------------------

    async def list_models(self, *, priority: Priority | str = Priority.NORMAL) -> dict[str, Any]:
        """The server's answer to list models, as it came: ``{"models": [...]}`` (LLVM),
        ``{"data": [{"id": ...}]}`` (OpenAI). :meth:`model_ids` gives the ids alone."""
        return dict((await self.send(self.protocol.list_models(), priority=priority)).result())

    async def model_ids(self, *, priority: Priority | str = Priority.NORMAL) -> list[str]:
        """The ids of the models the server offers, in any protocol."""
        return self.protocol.models_from(await self.list_models(priority=priority))

    async def get_model_info(
        self, model_id: str | None = None, *, priority: Priority | str = Priority.NORMAL
    ) -> dict[str, Any]:
        """The server's description of a model (status, details; or its list entry).

        An OpenAI-compatible server without ``GET /models/{id}`` (vLLM, llama.cpp) is asked
        for its list instead; a model not in it is a :class:`ModelNotFoundError`.
        """
        wire, model = self.protocol, self.config.model(model_id)
        outcome = await self.send(wire.model_info(model), priority=priority)
        fallback = wire.model_info_fallback(outcome.error)
        if fallback is not None:
            listed = (await self.send(fallback, priority=priority)).result()
            return wire.model_from_list(listed, model, outcome.error)
        return dict(outcome.result())

    async def run_inference(
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
        """Run ``inputs`` through a model; returns the server's answer as it came.

        LLVM answers hold ``outputs`` and ``metadata``; OpenAI ones ``choices`` and ``usage``.
        """
        call = self.protocol.inference(
            self.config.model(model_id),
            inputs,
            _options(max_tokens, temperature, top_k, top_p, params, extra),
        )
        outcome = await self.send(call, priority=priority, idempotency_key=idempotency_key)
        return dict(outcome.result())

    async def chat(
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
        """A chat turn: ``content``, ``role``, ``finish_reason``, ``usage``... in every protocol.

        The LLVM protocol sends the messages as ``role: content`` lines of one prompt; the
        OpenAI one sends them to ``/chat/completions`` as they are.
        """
        model_id = self.config.model(model)
        options = _options(max_tokens, temperature, top_k, top_p, params, extra)
        call = self.protocol.chat(model_id, messages, options)
        outcome = await self.send(call, priority=priority, idempotency_key=idempotency_key)
        return self.protocol.chat_result(model_id, outcome.result(), now=self._wall_clock())

    async def ping(self) -> None:
        """Ask the server for its models once, past the queue and the breaker.

        Raises the :class:`LLVMError` met (a refused key is an :class:`AuthenticationError`,
        a server that is down an :class:`LLVMConnectionError`); returns when it answered.
        Checking the endpoint is what a user does while the breaker is open, so the breaker
        neither refuses it nor counts it.
        """
        await self._engine.once(self.protocol.list_models())

    async def test_endpoint(self) -> bool:
        """True when the server answers a list-models request (one attempt, no retries)."""
        try:
            await self.ping()
        except LLVMError:
            return False
        return True


def _options(
    max_tokens: int | None,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    params: Mapping[str, Any] | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The generation options of one call, as the protocols take them (None: not given)."""
    return dict(
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        params=params,
        **extra,
    )
