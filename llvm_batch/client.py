"""AsyncLLVMClient: the one engine that talks to an inference server (LLVM or OpenAI protocol).

Each call goes: scheduler slot (priority, concurrency, pacing) -> breaker check -> one HTTP
attempt (:class:`~llvm_batch.transport.Transport`, the aiohttp side) -> outcome to the
breaker -> retry decision -> backoff sleep without a slot.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from . import codec, protocol
from .breaker import CircuitBreaker
from .debuglog import debug_log
from .errors import CircuitOpenError, LLVMError, RateLimitError, ServerError, safe_url
from .options import (
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_RETRY_DELAY,
    DEFAULT_TIMEOUT,
    BreakerConfig,
    ClientConfig,
    Priority,
    resolve_config,
)
from .protocol import WireProtocol, get_protocol
from .retry import RetryPolicy
from .scheduler import Scheduler
from .transport import Transport

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Outcome:
    """How one call ended: its decoded answer or its error, and what it took."""

    value: Any = None
    error: LLVMError | None = None
    attempts: int = 0
    retry_wait_s: float = 0.0
    latency_ms: float = 0.0
    http_status: int | None = None

    def result(self) -> Any:
        """The answer, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(frozen=True)
class ClientStats:
    """A snapshot of the client's queue, in-flight requests and breaker."""

    queue_depth: int
    active_requests: int
    breaker_state: str
    request_count: int
    retries: int
    max_active_seen: int


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
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        max_retry_delay: float | None = None,
        retry_jitter: bool = True,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_rps: float | None = None,
        max_response_bytes: int | None = None,
        debug: bool = False,
        breaker: BreakerConfig | Mapping[str, Any] | bool | None = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        protocol: str | None = None,
    ) -> None:
        self.config: ClientConfig = resolve_config(
            base_url=base_url,
            protocol=protocol,
            api_key=api_key,
            default_model=default_model,
            metadata=metadata,
            breaker=breaker,
            max_concurrent_requests=max_concurrent_requests,
            max_retries=max_retries,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            retry_jitter=retry_jitter,
            queue_size=queue_size,
            timeout=timeout,
            max_rps=max_rps,
            max_response_bytes=max_response_bytes,
            debug=debug,
        )
        #: The wire protocol (``config.protocol``): every call is built and read through it.
        self.protocol: WireProtocol = get_protocol(self.config.protocol)
        self._transport = Transport(self.config, wall_clock, self.protocol)
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._random = random
        self._policy = RetryPolicy(
            max_retries=self.config.max_retries,
            delay=self.config.retry_delay,
            max_delay=self.config.max_retry_delay,
            jitter=self.config.retry_jitter,
        )
        self._scheduler = Scheduler(
            self.config.max_concurrent_requests,
            self.config.queue_size,
            max_rps=self.config.max_rps,
            clock=clock,
            sleep=sleep,
        )
        self._breaker = CircuitBreaker(self.config.breaker, clock) if self.config.breaker else None
        self._debug = self.config.debug
        self.retry_count = 0

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
        self._transport.api_key = api_key or None

    def get_api_key(self) -> str | None:
        """The API key in use, or None."""
        return self._transport.api_key

    def get_default_model(self) -> str | None:
        """The model used when a call passes none."""
        return self.config.default_model

    def resolve_model(self, model_id: str | None) -> str:
        """``model_id``, else the default model; a clear ValueError when there is neither."""
        model = model_id or self.config.default_model
        if not model:
            raise ValueError(
                "no model given: pass a model id, or set default_model= "
                "(or metadata['llvm_default_model'] or the LLVM_DEFAULT_MODEL variable)"
            )
        return model

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
    def breaker_state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (``disabled`` without a breaker)."""
        return str(self._breaker.state) if self._breaker else "disabled"

    def breaker_retry_in(self) -> float:
        """Seconds until an open breaker lets requests through again (0 if it does now)."""
        return self._breaker.retry_in() if self._breaker else 0.0

    def stats(self) -> ClientStats:
        """A snapshot of queue depth, active requests, breaker state and counters."""
        return ClientStats(
            queue_depth=self.queue_depth,
            active_requests=self.active_requests,
            breaker_state=self.breaker_state,
            request_count=self.request_count,
            retries=self.retry_count,
            max_active_seen=self._scheduler.max_active_seen,
        )

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

    async def list_models(
        self, *, priority: Priority | str = Priority.NORMAL
    ) -> dict[str, Any]:
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
        wire, model = self.protocol, self.resolve_model(model_id)
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
            self.resolve_model(model_id),
            inputs,
            dict(
                max_tokens=max_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                params=params,
                **extra,
            ),
        )
        outcome = await self.send(call, priority=priority, idempotency_key=idempotency_key)
        return dict(outcome.result())

    async def chat(
        self,
        model: str | None,
        messages: Sequence[Mapping[str, Any]],
        *,
        priority: Priority | str = Priority.NORMAL,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """A chat turn: ``content``, ``role``, ``finish_reason``, ``usage``... in every protocol.

        The LLVM protocol sends the messages as ``role: content`` lines of one prompt; the
        OpenAI one sends them to ``/chat/completions`` as they are.
        """
        model_id = self.resolve_model(model)
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
        call = self.protocol.list_models()
        started = self._clock()
        try:
            _, status = await self._transport.exchange(call, None, None)
        except LLVMError as exc:
            what = f"giving up ({exc.error_type})"
            self._log(call, exc.status, (self._clock() - started) * 1000, what)
            raise exc.with_traceback(None) from None
        self._log(call, status, (self._clock() - started) * 1000, "ok")

    async def test_endpoint(self) -> bool:
        """True when the server answers a list-models request (one attempt, no retries)."""
        try:
            await self.ping()
        except LLVMError:
            return False
        return True

    # -- the engine ----------------------------------------------------------------------

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
        level = Priority.parse(priority)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        # Encoded once, for every attempt.
        data = None if call.body is None else codec.dumps(call.body)
        outcome = Outcome()
        started = self._clock()
        scheduler = self._scheduler
        while True:
            if not scheduler.try_acquire(level):
                await scheduler.acquire(level, admitted=outcome.attempts > 0)
            try:
                if self._breaker is not None and not self._breaker.allow():
                    outcome.error = self._circuit_open(call, outcome.attempts, outcome.error)
                    break
                outcome.attempts += 1
                attempt_start = self._clock()
                try:
                    outcome.value, outcome.http_status = await self._transport.exchange(
                        call, data, headers
                    )
                except LLVMError as exc:
                    # Drop the attempt's frames: their locals hold raw answers, which may echo
                    # the API key into any traceback printed with locals.
                    outcome.error = exc.with_traceback(None)
                    outcome.http_status = exc.status
                except BaseException:
                    if self._breaker is not None:
                        self._breaker.record_neutral()
                    raise
                else:
                    outcome.error = None
            finally:
                scheduler.release()
            self._record(outcome.error)
            duration_ms = (self._clock() - attempt_start) * 1000
            if outcome.error is None:
                self._log(call, outcome.http_status, duration_ms, "ok")
                break
            error = outcome.error
            if isinstance(error, RateLimitError) and error.retry_after:
                self._scheduler.pause_until(self._clock() + error.retry_after)
            decision = self._policy.decide(outcome.attempts, error, self._random)
            if not retry or not decision.retry:
                self._log(call, error.status, duration_ms, f"giving up ({error.error_type})")
                error.with_attempts(outcome.attempts)
                break
            self.retry_count += 1
            self._log(
                call, error.status, duration_ms, f"{decision.reason} in {decision.delay:.2f} s"
            )
            error.with_attempts(outcome.attempts, self._wall_clock() + decision.delay)
            await self._sleep(decision.delay)
            outcome.retry_wait_s += decision.delay
        outcome.latency_ms = (self._clock() - started) * 1000
        return outcome

    def _record(self, error: LLVMError | None) -> None:
        if self._breaker is None:
            return
        if error is None:
            self._breaker.record_success()
        elif isinstance(error, CircuitOpenError):
            pass
        elif isinstance(error, ServerError) or (
            error.retryable and not isinstance(error, RateLimitError)
        ):
            # Every 5xx says the server is in trouble, even those not worth retrying (501).
            self._breaker.record_failure()
        else:
            self._breaker.record_neutral()

    def _circuit_open(
        self, call: protocol.Call, attempts: int, last: LLVMError | None
    ) -> CircuitOpenError:
        retry_in = self.breaker_retry_in()
        error = CircuitOpenError(
            "the circuit breaker is open after repeated server failures; failing fast",
            operation=call.operation,
            model=call.model,
            attempts=attempts,
            next_retry_at=self._wall_clock() + retry_in,
            retry_after=retry_in,
        )
        # A retry refused by the breaker keeps what its last attempt met, to say why.
        error.__cause__ = last
        return error

    def _log(self, call: protocol.Call, status: int | None, duration_ms: float, what: str) -> None:
        if self._debug:
            debug_log(
                "%s %s -> %s in %.1f ms; %s",
                call.method,
                call.path,
                status if status is not None else "no answer",
                duration_ms,
                what,
            )
