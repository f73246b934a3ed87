"""The engine under :class:`~llvm_batch.client.AsyncLLVMClient`: every call's way to the wire.

Each call goes: scheduler slot (priority, adaptive concurrency, pacing) -> breaker check ->
one HTTP attempt (:class:`~llvm_batch.transport.Transport`, the aiohttp side) -> the outcome,
judged once (:func:`~llvm_batch.attempt.classify`), to the limiter and the breaker -> the next
step (:func:`~llvm_batch.attempt.next_step`) -> backoff sleep without a slot.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import codec, protocol
from .attempt import Outcome, Verdict, circuit_open, classify, next_step, refused_for_room
from .breaker import CircuitBreaker
from .config import ClientConfig, Priority
from .debuglog import debug_log
from .errors import CircuitOpenError, LLVMError, QueueFullError, RateLimitError
from .protocol import WireProtocol
from .scheduler import Scheduler
from .transport import Transport

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ClientStats:
    """A snapshot of the client's queue, in-flight requests, concurrency limit and breaker.

    ``concurrency_limit`` is the adaptive limit now, at most ``concurrency_ceiling``.
    """

    queue_depth: int
    active_requests: int
    breaker_state: str
    request_count: int
    retries: int
    max_active_seen: int
    concurrency_limit: int = 0
    concurrency_ceiling: int = 0


class Engine:
    """Sends calls for one client: its transport, scheduler, breaker and retry policy."""

    def __init__(
        self,
        config: ClientConfig,
        wire: WireProtocol,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.transport = Transport(config, wall_clock, wire)
        self.scheduler = Scheduler(config.limits, clock=clock, sleep=sleep)
        self.breaker = CircuitBreaker(config.breaker, clock) if config.breaker else None
        self._policy = config.retry
        self._debug = config.debug
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._random = random
        self.retry_count = 0

    @property
    def breaker_state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (``disabled`` without a breaker)."""
        return str(self.breaker.state) if self.breaker else "disabled"

    def stats(self) -> ClientStats:
        """A snapshot of the queue, the requests in flight, the limit, the breaker, counters."""
        scheduler = self.scheduler
        return ClientStats(
            queue_depth=scheduler.queue_depth,
            active_requests=scheduler.active,
            breaker_state=self.breaker_state,
            request_count=self.transport.request_count,
            retries=self.retry_count,
            max_active_seen=scheduler.max_active_seen,
            concurrency_limit=scheduler.limit,
            concurrency_ceiling=scheduler.max_concurrent,
        )

    async def once(self, call: protocol.Call) -> None:
        """Make ``call`` once, past the queue and the breaker (neither counts it); raise the
        :class:`LLVMError` met, or return when the server answered."""
        started = self._clock()
        try:
            _, status = await self.transport.exchange(call, None, None)
        except LLVMError as exc:
            what = f"giving up ({exc.error_type})"
            self.log(call, exc.status, (self._clock() - started) * 1000, what)
            raise exc.with_traceback(None) from None
        self.log(call, status, (self._clock() - started) * 1000, "ok")

    async def send(
        self,
        call: protocol.Call,
        level: Priority,
        *,
        idempotency_key: str | None = None,
        retry: bool = True,
    ) -> Outcome:
        """Make ``call`` with queueing, breaker and retries; the error, if any, is returned.

        Raises only :class:`QueueFullError` (nothing was sent) and cancellation.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        data = None if call.body is None else codec.dumps(call.body)  # once, for every attempt
        outcome = Outcome()
        started = self._clock()
        while True:
            error, elapsed = await self._attempt(call, data, headers, level, outcome)
            if error is None:  # the usual case, kept short
                outcome.error = None
                self.log(call, outcome.http_status, elapsed * 1000, "ok")
                break
            if isinstance(error, CircuitOpenError):  # refused before it went out
                outcome.error = error
                break
            if isinstance(error, RateLimitError) and error.retry_after:
                # The server asked the client, not one request, to wait (bounded, like any wait).
                pause = min(error.retry_after, self._policy.max_delay)
                self.scheduler.pause_until(self._clock() + pause)
            step = next_step(
                self._policy, outcome.attempts, error, retry, self._random(), outcome.overloaded
            )
            self.log(call, outcome.http_status, elapsed * 1000, step.reason)
            if step.wait is None:
                outcome.error = error.with_attempts(outcome.attempts)
                break
            outcome.error = error.with_attempts(outcome.attempts, self._wall_clock() + step.wait)
            if step.wait:
                await self._sleep(step.wait)
                outcome.retry_wait_s += step.wait
        outcome.latency_ms = (self._clock() - started) * 1000
        return outcome

    async def _attempt(
        self,
        call: protocol.Call,
        data: bytes | None,
        headers: dict[str, str] | None,
        level: Priority,
        outcome: Outcome,
    ) -> tuple[LLVMError | None, float]:
        """One attempt in a slot: its error (None when sound) and how long it took."""
        scheduler = self.scheduler
        if not scheduler.try_acquire(level):
            try:
                await scheduler.acquire(level, admitted=outcome.attempts > 0)
            except QueueFullError as exc:
                raise exc.replace(operation=call.operation, model=call.model) from None
        if self.breaker is not None and not self.breaker.allow():
            scheduler.release()
            retry_in, now = self.breaker.retry_in(), self._wall_clock()
            return circuit_open(call.operation, call.model, outcome, retry_in, now), 0.0
        self.retry_count += outcome.attempts > 0  # counted once it really goes out
        outcome.attempts += 1
        sent_at = self._clock()
        try:
            outcome.value, outcome.http_status = await self.transport.exchange(call, data, headers)
            error = None
        except LLVMError as exc:
            # Drop the attempt's frames: their locals hold raw answers, which may echo the API
            # key into any traceback printed with locals.
            error = exc.with_traceback(None)
            outcome.http_status = exc.status
        except BaseException:
            scheduler.release()
            if self.breaker is not None:
                self.breaker.record_neutral()
            raise
        elapsed = self._clock() - sent_at
        if error is None:
            verdict = Verdict.SUCCESS
        else:
            verdict = classify(error, fast=scheduler.limiter.is_fast(elapsed))
            outcome.overloaded = refused_for_room(error, verdict)
        scheduler.release(verdict, sent_at=sent_at, elapsed=elapsed)
        if self.breaker is not None and self.breaker.record(verdict):
            scheduler.limiter.restart()  # the server was down: the limit starts from the bottom
        return error, elapsed

    def log(self, call: protocol.Call, status: int | None, duration_ms: float, what: str) -> None:
        if self._debug:
            debug_log(
                "%s %s -> %s in %.1f ms; %s",
                call.method,
                call.path,
                status if status is not None else "no answer",
                duration_ms,
                what,
            )
