"""The exception tree of llvm-batch, and the one place that keeps secrets out of error text.

    LLVMError
    ├── LLVMConnectionError (ConnectionError)   refused, reset, DNS, TLS, truncated body
    ├── LLVMTimeoutError (TimeoutError)         no answer within the timeout
    ├── HTTPStatusError                         the server answered with an error status
    │   ├── BadRequestError                     400, 422 and other 4xx: not retried
    │   ├── AuthenticationError                 401, 403: not retried
    │   ├── ModelNotFoundError                  404: not retried
    │   ├── RedirectError                       301/302/303 turning a POST into a GET
    │   ├── RateLimitError                      429: retried, Retry-After honoured
    │   └── ServerError                         5xx: retried
    ├── InvalidResponseError (ValueError)       a 2xx whose body is not the expected JSON
    ├── QueueFullError                          the client's queue is full
    ├── CircuitOpenError                        the breaker is open: failing fast
    └── InputError (ValueError)                 unusable input, options or output; nothing sent
        └── ResumeMismatchError                 a checkpoint exists for other input or options

Every error carries ``operation``, ``model``, ``status``, ``body`` (a bounded, redacted excerpt
of the server's answer), ``attempts``, ``next_retry_at``, ``retryable`` and a stable
``error_type`` string (the ``llvm_error_type`` result column). ``next_retry_at`` is the
``time.time()`` at which the client will try again: set on an error met on the way (a retry
is coming) and on :class:`CircuitOpenError` (when the breaker lets requests through again);
None on a final error, since no retry of that call will ever come. Errors are not changed
once raised: :meth:`LLVMError.replace` makes a copy.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterable
from typing import Any, TypeVar

BODY_EXCERPT_CHARS = 300
REDACTED = "***"

_CONTEXT = ("operation", "model", "status", "body", "attempts", "next_retry_at", "retry_after")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;}]+")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` with every secret and every bearer token replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


def excerpt(text: str, limit: int = BODY_EXCERPT_CHARS) -> str:
    """Bound ``text`` to ``limit`` characters, marking the cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more chars]"


class LLVMError(Exception):
    """Base class of every error raised by llvm-batch."""

    error_type = "error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        model: str | None = None,
        status: int | None = None,
        body: str | None = None,
        attempts: int = 0,
        next_retry_at: float | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.operation = operation
        self.model = model
        self.status = status
        self.body = body
        self.attempts = attempts
        self.next_retry_at = next_retry_at
        self.retry_after = retry_after
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        where = self.operation or "request"
        if self.model:
            where += f" on model {self.model!r}"
        parts = [f"{where} failed: {self.message}"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.attempts:
            parts.append(f"after {self.attempts} attempt{'s' if self.attempts != 1 else ''}")
        if self.next_retry_at is not None:
            wait = max(0.0, self.next_retry_at - time.time())
            parts.append(f"next retry in {wait:.1f} s")
        text = "; ".join(parts)
        if self.body:
            text += f"; server said: {self.body!r}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def replace(self: _E, **changes: Any) -> _E:
        """A copy with some context attributes changed; the error itself is left as it was."""
        unknown = set(changes) - set(_CONTEXT)
        if unknown:
            raise TypeError(f"not error context: {', '.join(sorted(unknown))}")
        clone = copy.copy(self)
        clone.__dict__.update(changes)
        clone.__cause__ = self.__cause__
        clone.__suppress_context__ = self.__suppress_context__
        return clone

    def with_attempts(self: _E, attempts: int, next_retry_at: float | None = None) -> _E:
        """A copy saying how many attempts were made and when the next comes (None: never)."""
        return self.replace(attempts=attempts, next_retry_at=next_retry_at)


_E = TypeVar("_E", bound=LLVMError)


class LLVMConnectionError(LLVMError, ConnectionError):
    """The connection failed: refused, reset, DNS, TLS, or a truncated body."""

    error_type = "connection"
    retryable = True


class LLVMTimeoutError(LLVMError, TimeoutError):
    """The server did not answer within the timeout."""

    error_type = "timeout"
    retryable = True


class HTTPStatusError(LLVMError):
    """The server answered with an error status."""

    error_type = "http_error"


class BadRequestError(HTTPStatusError):
    """The server rejected the request (400, 422, other 4xx); sending it again will not help."""

    error_type = "client_error"


class AuthenticationError(HTTPStatusError):
    """The server refused the API key (401) or the access (403)."""

    error_type = "auth"


class ModelNotFoundError(HTTPStatusError):
    """The server does not know the model (404)."""

    error_type = "model_not_found"


class RedirectError(HTTPStatusError):
    """The server redirected a POST with 301/302/303, which would resend it as a body-less GET.

    307 and 308 keep the method and body and are followed; these are not: point the base URL
    at the new address instead.
    """

    error_type = "redirect"


class RateLimitError(HTTPStatusError):
    """The server is rate limiting (429); ``retry_after`` says how long it asked us to wait."""

    error_type = "rate_limited"
    retryable = True


class ServerError(HTTPStatusError):
    """The server failed (5xx, or 408)."""

    error_type = "server_error"
    retryable = True


class InvalidResponseError(LLVMError, ValueError):
    """The server answered 2xx with a body that is not the expected JSON."""

    error_type = "invalid_response"
    retryable = True


class QueueFullError(LLVMError):
    """The client's request queue is full; retry later or raise ``queue_size``."""

    error_type = "queue_full"


class CircuitOpenError(LLVMError):
    """The circuit breaker is open after repeated server failures; the client fails fast."""

    error_type = "circuit_open"


_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def status_error_class(status: int) -> type[HTTPStatusError]:
    """The error class for an HTTP error status."""
    if status in (401, 403):
        return AuthenticationError
    if status == 404:
        return ModelNotFoundError
    if status == 429:
        return RateLimitError
    if status >= 500 or status == 408:
        return ServerError
    return BadRequestError


def is_retryable_status(status: int) -> bool:
    """True for the statuses DESIGN.md lists as retryable."""
    return status in _RETRYABLE_STATUS


class InputError(LLVMError, ValueError):
    """The input, the options or the output location can't be used; nothing was sent."""

    error_type = "invalid_input"

    def __str__(self) -> str:
        return self.message


class ResumeMismatchError(InputError):
    """A checkpoint exists for different input or options; resume refused."""

    error_type = "resume_mismatch"
