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
    │   └── ResponseTooLargeError               an answer beyond max_response_bytes: not retried
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

import base64
import copy
import functools
import json
import re
import time
from collections.abc import Iterable
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

BODY_EXCERPT_CHARS = 300
REDACTED = "***"

_CONTEXT = ("operation", "model", "status", "body", "attempts", "next_retry_at", "retry_after")
# A credential in an Authorization header, as echoed back: Bearer, Basic, Token, ...
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|token|digest)(\s+|%20|\+)[^\s\"',;}\\&]+")
# The userinfo (user:password@) and the query (?token=...) of any URL in a text.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"<>]*@")
_URL_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s'\"<>?#]*)\?[^\s'\"<>#]*")


@functools.lru_cache(maxsize=16)
def secret_forms(secret: str) -> tuple[str, ...]:
    """Every way ``secret`` may come back: raw, JSON-escaped, URL-encoded, base64; longest
    first, so that no form is left half replaced by a shorter one."""
    encoded = secret.encode()
    forms = {
        secret,
        json.dumps(secret)[1:-1],  # backslashes and quotes escaped
        json.dumps(secret, ensure_ascii=True)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),  # PHP and others escape "/" too
        quote(secret, safe=""),
        quote(secret, safe="").lower(),
        quote_plus(secret),
    }
    # base64 inside a longer value ("user:key" of Basic auth): the key's whole 3-byte groups,
    # at each of the three offsets it may start at.
    for skip in range(3):
        part = encoded[skip:]
        whole = part[: len(part) // 3 * 3]
        if len(whole) >= 12:
            forms.add(base64.b64encode(whole).decode())
            forms.add(base64.urlsafe_b64encode(whole).decode())
    forms.add(base64.b64encode(encoded).decode().rstrip("="))
    return tuple(sorted((form for form in forms if form), key=len, reverse=True))


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` without secrets: every form of each secret (:func:`secret_forms`), any
    credential after an auth scheme (``Bearer``, ``Basic``...), and any URL's userinfo and
    query, each replaced by ``***``."""
    for secret in secrets:
        text = hide(text, secret)
    text = _AUTH_SCHEME.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    return safe_url(text)


def hide(text: str, secret: str | None) -> str:
    """``text`` with every form of ``secret`` replaced by ``***``, and nothing else changed
    (for a model's output, where URLs and auth words are content)."""
    if secret:
        for form in secret_forms(secret):
            if form in text:
                text = text.replace(form, REDACTED)
    return text


def safe_url(text: str) -> str:
    """``text`` with the userinfo and query of every URL in it replaced by ``***``."""
    if "://" not in text:
        return text
    text = _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    return _URL_QUERY.sub(lambda m: m.group(1) + "?" + REDACTED, text)


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


class ResponseTooLargeError(InvalidResponseError):
    """The answer is larger than ``max_response_bytes``; it was not read, nor is it retried."""

    error_type = "response_too_large"
    retryable = False


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
