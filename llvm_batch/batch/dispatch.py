"""Sending rows: one call per row through the client, held while the server is down.

Shared by the file runner and the DataFrame accessor. A row refused by an open breaker, failing
on the server's side while the breaker is not closed, or still refused by a full server when
its retries ran out, is held and sent again rather than failed: a row does not fail because the
server was down or full. A run blocked longer than its outage budget stops as incomplete.
A refused API key, a vanished model or a server that redirects its POSTs elsewhere stops the
run at once instead of failing every row in turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..attempt import Outcome
from ..client import AsyncLLVMClient
from ..config import DEFAULT_MAX_OUTAGE, Priority
from ..errors import (
    AuthenticationError,
    CircuitOpenError,
    InputError,
    LLVMError,
    ModelNotFoundError,
    RedirectError,
    safe_url,
)
from . import columns as cols
from .prompts import Request
from .summary import EXIT_INCOMPLETE

HOLD_POLL_S = 0.25
#: Errors that every following row would meet as well.
STOPPING_ERRORS = (AuthenticationError, ModelNotFoundError, RedirectError)


class Dispatcher:
    """Sends rows for one run; :attr:`stop_code` is set once the run must stop."""

    def __init__(
        self,
        client: AsyncLLVMClient,
        model: str,
        *,
        priority: Priority = Priority.NORMAL,
        max_outage: float = DEFAULT_MAX_OUTAGE,
        on_stop: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.model = model
        self.priority = priority
        self.max_outage = max_outage
        self.stop_code: int | None = None
        self.stop_reason: str | None = None
        self.stopped = asyncio.Event()
        self._on_stop = on_stop
        self._clock = clock
        self._blocked_since: float | None = None
        self._last_failure: LLVMError | None = None

    def stop(self, code: int, reason: str) -> None:
        """Stop the run (first reason wins): no more rows go out."""
        if self.stop_code is None:
            self.stop_code = code
            self.stop_reason = reason
            self.stopped.set()
            self._on_stop()

    async def preflight(self) -> bool:
        """Check the model before any row goes; False if the server stayed down too long.

        An unknown model or a refused key is an :class:`InputError`: nothing was sent.
        """
        since = self._clock()
        while True:
            try:
                await self.client.get_model_info(self.model, priority=Priority.HIGH)
                return True
            except ModelNotFoundError:
                raise InputError(
                    f"model {self.model!r} not found at {safe_url(self.client.config.api_root)}"
                ) from None
            except AuthenticationError as exc:
                raise InputError(
                    f"the server refused the API key (HTTP {exc.status}); "
                    "set LLVM_API_KEY or --api-key-file"
                ) from None
            except LLVMError as exc:
                self._note_failure(exc)
                blocked = self._clock() - since
                if blocked >= self.max_outage:
                    self.stop(EXIT_INCOMPLETE, f"server unavailable: {self._last_failure}")
                    return False
                wait = max(HOLD_POLL_S, self.client.breaker_retry_in())
                await asyncio.sleep(min(wait, self.max_outage - blocked + 0.01))

    async def send(self, request: Request, key: str | None = None) -> cols.RowResult | None:
        """The row's result, or None when the run stopped before it got one."""
        wire = self.client.protocol
        build = wire.chat if request.chat else wire.inference
        call = build(self.model, request.inputs, request.options)
        outcome = await self.client.send(call, priority=self.priority, idempotency_key=key)
        if outcome.error is None:  # the usual case, kept short: this runs once per row
            self._blocked_since = None
            return cols.from_outcome(outcome, self.model, wire, secret=self.client.get_api_key())
        total = Outcome()
        while True:
            total.attempts += outcome.attempts
            total.retry_wait_s += outcome.retry_wait_s
            total.latency_ms += outcome.latency_ms
            error = outcome.error
            self._note_failure(error)
            if error is not None and self._held(error, outcome.overloaded):
                if not await self._hold(error):
                    return None
                outcome = await self.client.send(call, priority=self.priority, idempotency_key=key)
                continue
            if isinstance(error, STOPPING_ERRORS):
                # The same answer awaits every row: stop early, resumable, instead of failing
                # each one.
                self.stop(EXIT_INCOMPLETE, f"{self._stop_reason(error)}: {error}")
                return None
            if error is None:
                self._blocked_since = None
            total.value, total.error, total.http_status = (
                outcome.value,
                outcome.error,
                outcome.http_status,
            )
            return cols.from_outcome(total, self.model, wire, secret=self.client.get_api_key())

    def _stop_reason(self, error: LLVMError) -> str:
        if isinstance(error, AuthenticationError):
            return "the API key was refused"
        if isinstance(error, RedirectError):
            return "the server moved"
        return f"model {self.model!r} disappeared"

    def _note_failure(self, error: LLVMError | None) -> None:
        """Remember the last real failure, to say why a server is unavailable."""
        if isinstance(error, CircuitOpenError) and isinstance(error.__cause__, LLVMError):
            error = error.__cause__  # a retry the breaker refused: what its last attempt met
        if error is not None and not isinstance(error, CircuitOpenError):
            self._last_failure = error

    def _held(self, error: LLVMError, overloaded: bool) -> bool:
        """Hold the row rather than fail it: refused by an open breaker, met a server-side
        failure while the breaker is not closed, or the server was still full at the end.

        Without a breaker nothing tells a full server from a dead one: rows fail as they are.
        """
        if isinstance(error, CircuitOpenError):
            return True
        state = self.client.breaker_state
        if state == "disabled":
            return False
        return overloaded or (error.retryable and state != "closed")

    async def _hold(self, error: LLVMError) -> bool:
        """Wait for the server; False when the outage budget is spent (the run stops)."""
        now = self._clock()
        if self._blocked_since is None:
            self._blocked_since = now
        blocked = now - self._blocked_since
        if blocked >= self.max_outage:
            self.stop(
                EXIT_INCOMPLETE,
                f"server unavailable for {blocked:.0f} s (--max-outage {self.max_outage:g}): "
                f"{self._last_failure or error}",
            )
            return False
        wait = max(HOLD_POLL_S, self.client.breaker_retry_in())
        wait = min(wait, self.max_outage - blocked + 0.01)
        try:
            await asyncio.wait_for(self.stopped.wait(), timeout=wait)
        except asyncio.TimeoutError:
            return self.stop_code is None
        return False
