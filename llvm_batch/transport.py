"""Transport: one HTTP exchange with a server; on the client side, the only aiohttp importer.

:meth:`Transport.exchange` sends one already-encoded call and returns the decoded answer or
raises an :class:`~llvm_batch.errors.LLVMError`; queueing, retries and the breaker live above,
in :mod:`llvm_batch.client`. aiohttp exceptions become llvm-batch errors in :func:`translate`,
only, and the API key is redacted from everything an error carries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from . import codec, protocol
from .config import ClientConfig
from .errors import (
    InvalidResponseError,
    LLVMConnectionError,
    LLVMError,
    LLVMTimeoutError,
    RedirectError,
    ResponseTooLargeError,
    excerpt,
    is_retryable_status,
    redact,
    status_error_class,
)


class Transport:
    """An aiohttp session bound to one server root and API key; counts the answers it got."""

    def __init__(
        self,
        config: ClientConfig,
        wall_clock: Callable[[], float],
        wire: protocol.WireProtocol | None = None,
    ) -> None:
        self.config = config
        self.protocol = wire or protocol.get_protocol(config.protocol)
        self.api_key = config.api_key
        self.root = config.api_root
        self.request_count = 0  # HTTP exchanges that got an answer
        self._wall_clock = wall_clock
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout)
            connector = aiohttp.TCPConnector(limit=max(100, self.config.limits.ceiling))
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        return self._session

    async def close(self) -> None:
        """Close the session; the next exchange opens a new one."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def exchange(
        self, call: protocol.Call, data: bytes | None, extra_headers: Mapping[str, str] | None
    ) -> tuple[Any, int]:
        """Send ``call`` once with ``data`` as its JSON body: (decoded answer, HTTP status)."""
        session = self._get_session()
        try:
            async with session.request(
                call.method,
                self.root + call.path,
                data=data,
                headers=self._headers(data is not None, extra_headers),
            ) as response:
                body = await self._read_capped(response, call)
                status = response.status
                reason = response.reason
                retry_after = protocol.retry_after_from(response.headers, self._wall_clock())
                redirected = _method_change(call, response, self.api_key)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise translate(exc, call, self.api_key) from exc.with_traceback(None)
        self.request_count += 1
        if redirected is not None:
            raise redirected
        if not 200 <= status < 300:
            raise self._status_error(call, status, reason, body, retry_after)
        try:
            answer = self.protocol.check_answer(protocol.parse_json(body, call, codec.loads), call)
        except InvalidResponseError as error:
            # The server did answer: keep its status and what it said, as for error statuses.
            error.status = status
            text = body.decode("utf-8", errors="replace")
            error.body = excerpt(redact(text, (self.api_key,))) or None
            raise
        return answer, status

    async def _read_capped(self, response: aiohttp.ClientResponse, call: protocol.Call) -> bytes:
        """The body, read in pieces up to ``max_response_bytes``: an endless or huge answer
        fails its request instead of growing memory without bound."""
        cap = self.config.max_response_bytes
        if response.content_length is not None and response.content_length > cap:
            raise self._too_large(call, response.status, f"announces {response.content_length}")
        pieces, size = [], 0
        async for piece in response.content.iter_chunked(256 * 1024):
            size += len(piece)
            if size > cap:
                raise self._too_large(call, response.status, "went on past that")
            pieces.append(piece)
        return b"".join(pieces)

    def _too_large(self, call: protocol.Call, status: int, what: str) -> ResponseTooLargeError:
        self.request_count += 1
        return ResponseTooLargeError(
            f"the answer is larger than max_response_bytes ({self.config.max_response_bytes} "
            f"bytes): it {what}",
            operation=call.operation,
            model=call.model,
            status=status,
        )

    def _headers(self, has_body: bool, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        if extra:
            headers.update(extra)
        return headers

    def _status_error(
        self,
        call: protocol.Call,
        status: int,
        reason: str | None,
        body: bytes,
        retry_after: float | None,
    ) -> LLVMError:
        secrets = (self.api_key,)
        text = body.decode("utf-8", errors="replace")
        cls = status_error_class(status)
        return cls(
            excerpt(redact(protocol.error_message(status, reason, text), secrets)),
            operation=call.operation,
            model=call.model,
            status=status,
            body=excerpt(redact(text, secrets)) or None,
            retry_after=retry_after,
            retryable=is_retryable_status(status),
        )


def _method_change(
    call: protocol.Call, response: aiohttp.ClientResponse, api_key: str | None
) -> RedirectError | None:
    """A redirect that turned ``call`` into another method (a POST into a GET): an error.

    Following it would send the request without its body and read an answer to a different
    question. 307/308 keep the method and body and are followed as usual.
    """
    if response.method == call.method or not response.history:
        return None
    first = response.history[0]
    return RedirectError(
        redact(
            f"the server redirected {call.method} {call.path} to {response.url} "
            f"(HTTP {first.status}), which turns it into a {response.method} without its "
            "body; use the new address as the base URL",
            (api_key,),
        ),
        operation=call.operation,
        model=call.model,
        status=first.status,
        retryable=False,
    )


def translate(exc: BaseException, call: protocol.Call, api_key: str | None) -> LLVMError:
    """The llvm-batch error for an aiohttp/OS failure; never copies request headers."""
    detail = redact(str(exc) or type(exc).__name__, (api_key,))
    context: dict[str, Any] = {"operation": call.operation, "model": call.model}
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return LLVMTimeoutError("the server did not answer in time", **context)
    if isinstance(exc, aiohttp.ClientSSLError):
        return LLVMConnectionError(f"TLS error: {detail}", retryable=False, **context)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return LLVMConnectionError(f"could not resolve the host: {detail}", **context)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return LLVMConnectionError(f"could not connect: {detail}", **context)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return LLVMConnectionError("the server closed the connection without answering", **context)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return LLVMConnectionError(f"the answer was cut short: {detail}", **context)
    if isinstance(exc, aiohttp.InvalidURL):
        return LLVMConnectionError(f"invalid URL: {detail}", retryable=False, **context)
    if isinstance(exc, aiohttp.ClientResponseError):
        return InvalidResponseError(f"malformed HTTP answer: {detail}", **context)
    return LLVMConnectionError(f"connection failed: {detail}", **context)
