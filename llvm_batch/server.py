"""The reference LLVM server: the protocol with deterministic answers and fault knobs.

Tests, demos, notebooks and benchmarks run it on loopback. Answers depend only on the model
and the input (:func:`reference_output`); the faults that inference requests meet are
:class:`Faults` (:mod:`llvm_batch.server_faults`). ``GET /_stats`` reports what the server
saw; ``POST /_faults`` changes the faults live.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

from aiohttp import web

from .server_faults import FAULT_FIELDS as FAULT_FIELDS  # re-exported: users import them here
from .server_faults import Faults as Faults
from .server_openai import OPENAI_ROOT, add_openai_routes, openai_error

DEFAULT_MODELS = ("llvm-model-1", "llvm-model-2")


def reference_output(model_id: str, inputs: Any, max_tokens: int | None = None) -> str:
    """The answer the reference server gives: an echo of the input, cut to ``max_tokens`` words."""
    text = inputs if isinstance(inputs, str) else json.dumps(inputs, separators=(",", ":"))
    words = f"{model_id} echo: {text}".split(" ")
    if max_tokens is not None:
        words = words[: max(0, int(max_tokens))]
    return " ".join(words)


@dataclass
class ServerStats:
    """What the server saw; exposed as JSON at ``GET /_stats``."""

    requests: int = 0
    inference_requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)
    inputs: list[Any] = field(default_factory=list)
    record_inputs: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "inference_requests": self.inference_requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "faults": dict(self.faults),
            "distinct_keys": len(self.keys),
        }


class AppServer:
    """An aiohttp application served on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> AppServer:
        # In-flight requests get a second to finish on stop; busy keep-alive clients must not
        # hold a stopping server open (aiohttp waits up to a minute by default).
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AppServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ReferenceServer(AppServer):
    """The reference server on ``host:port`` (port 0 picks a free one); see :attr:`url`.

    It speaks both protocols at once: LLVM at the root, OpenAI under ``/v1``
    (:mod:`llvm_batch.server_openai`); ``protocol`` picks which one :attr:`url` points at.
    Use ``async with ReferenceServer() as server:`` inside a loop, or :class:`ServerThread`.
    """

    @property
    def url(self) -> str:
        return super().url + (OPENAI_ROOT if self.protocol == "openai" else "")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: tuple[str, ...] | list[str] = DEFAULT_MODELS,
        api_key: str | None = None,
        faults: Faults | None = None,
        record_inputs: bool = False,
        protocol: str = "llvm",
    ) -> None:
        if protocol not in ("llvm", "openai"):
            raise ValueError(f"protocol must be llvm or openai; got {protocol!r}")
        self.protocol = protocol
        self.models = list(models)
        self.api_key = api_key
        self.faults = faults or Faults()
        self.faults_set_at = time.monotonic()
        self.inference_in_flight = 0  # kept apart from the stats, which a test may reset
        self.stats = ServerStats(record_inputs=record_inputs)
        super().__init__(self._make_app(), host, port)

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._count, self._auth])
        app.router.add_get("/models", self._list_models)
        app.router.add_get("/models/{model_id}", self._model_info)
        app.router.add_post("/models/{model_id}/inference", self._inference)
        add_openai_routes(app, self)
        app.router.add_get("/_stats", self._stats)
        app.router.add_post("/_stats/reset", self._reset_stats)
        app.router.add_post("/_faults", self._set_faults)
        return app

    def reset_stats(self) -> None:
        self.stats = ServerStats(record_inputs=self.stats.record_inputs)

    def set_faults(self, **changes: Any) -> None:
        """Change the faults; an outage window counts from now."""
        self.faults = replace(self.faults, **changes)
        self.faults_set_at = time.monotonic()

    # -- middleware ----------------------------------------------------------------------

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        internal = request.path.startswith("/_")
        stats = self.stats
        if not internal:
            stats.requests += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            if not internal:
                stats.statuses[exc.status] += 1
            raise
        finally:
            if not internal:
                stats.in_flight -= 1
        if not internal:
            stats.statuses[response.status] += 1
        return response

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.api_key and not request.path.startswith("/_"):
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return error_response(request, 401, "invalid or missing API key")
        response: web.StreamResponse = await handler(request)
        return response

    # -- protocol ------------------------------------------------------------------------

    async def _list_models(self, request: web.Request) -> web.Response:
        return web.json_response({"models": self.models})

    async def _model_info(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if model_id not in self.models:
            return _error(404, f"model {model_id!r} not found")
        details = {"family": "reference", "context_length": 4096, "deterministic": True}
        return web.json_response({"model_id": model_id, "status": "loaded", "details": details})

    async def _inference(self, request: web.Request) -> web.StreamResponse:
        model_id = request.match_info["model_id"]
        if model_id not in self.models:
            return _error(404, f"model {model_id!r} not found")
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict) or "inputs" not in body:
            return _error(422, "the request body needs an 'inputs' field")
        answer = await self.generate(request, model_id, raw, body["inputs"], body.get("max_tokens"))
        if not isinstance(answer, Generated):
            return answer
        metadata = {
            "input_tokens": answer.input_tokens,
            "output_tokens": answer.output_tokens,
            "finish_reason": answer.finish_reason,
        }
        return web.json_response(
            {"model_id": model_id, "outputs": answer.text, "metadata": metadata}
        )

    async def generate(
        self, request: web.Request, model_id: str, raw: bytes, inputs: Any, max_tokens: Any
    ) -> Generated | web.StreamResponse:
        """The answer to one generation request of either protocol, or the fault it meets.

        Counts the request, keys it (``Idempotency-Key``, else a hash of the body) and picks
        its fault from the knobs; ``raw`` is the body as received.
        """
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 0):
            return error_response(request, 422, "max_tokens must be a non-negative integer")
        self.stats.inference_requests += 1
        refused = self._refuse(request)
        if refused is not None:
            return refused
        self.inference_in_flight += 1
        try:
            return await self._answer(request, model_id, raw, inputs, max_tokens)
        finally:
            self.inference_in_flight -= 1

    def _refuse(self, request: web.Request) -> web.Response | None:
        """A 503 at once, without work: the server is down, or holds all it can."""
        faults = self.faults
        if faults.in_outage(time.monotonic() - self.faults_set_at):
            self.stats.faults["outage"] += 1
            return error_response(request, 503, "the server is unavailable")
        if faults.capacity and self.inference_in_flight >= faults.capacity:
            self.stats.faults["capacity"] += 1
            return error_response(request, 503, "the server is at capacity, try again later")
        return None

    async def _answer(
        self, request: web.Request, model_id: str, raw: bytes, inputs: Any, max_tokens: Any
    ) -> Generated | web.StreamResponse:
        key = request.headers.get("Idempotency-Key") or hashlib.sha1(raw).hexdigest()
        seen = self.stats.keys[key]
        self.stats.keys[key] += 1
        if self.stats.record_inputs:
            self.stats.inputs.append(inputs)
        faults = self.faults
        if faults.latency:
            await asyncio.sleep(faults.latency)
        fault = faults.pick(f"{model_id}:{key}", seen)
        if fault:
            self.stats.faults[fault] += 1
            return fault_response(request, fault, faults)
        return Generated.of(model_id, inputs, max_tokens)

    # -- control -------------------------------------------------------------------------

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def _reset_stats(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"ok": True})

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            self.set_faults(**changes)
        except (ValueError, TypeError) as exc:
            return _error(400, f"bad faults: {exc}")
        return web.json_response(asdict(self.faults))


class Generated(NamedTuple):
    """A generated answer: its text, token counts (words) and why it ended."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str

    @classmethod
    def of(cls, model_id: str, inputs: Any, max_tokens: int | None) -> Generated:
        """The reference answer of ``model_id`` to ``inputs``, cut at ``max_tokens``."""
        text = inputs if isinstance(inputs, str) else json.dumps(inputs)
        full = reference_output(model_id, inputs)
        outputs = reference_output(model_id, inputs, max_tokens)
        finish = "length" if len(outputs) < len(full) else "stop"
        return cls(outputs, len(text.split()), len(outputs.split()), finish)


def fault_response(request: web.Request, fault: str, faults: Faults) -> web.StreamResponse:
    """What a request meeting ``fault`` gets (a reset drops the connection unanswered)."""
    if fault == "rate_limit":
        response = error_response(request, 429, "too many requests")
        response.headers["Retry-After"] = _seconds(faults.retry_after)
        return response
    if fault == "reset":
        if request.transport is not None:
            request.transport.abort()  # drop the connection without an answer
        return web.Response(status=200)
    if fault == "bad_json":
        cut = '{"choices": [{"mess' if request.path.startswith(OPENAI_ROOT) else '{"outputs": "'
        return web.Response(status=200, text=cut + "trunc", content_type="application/json")
    return error_response(request, 503, "the server is overloaded, try again later")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def error_response(request: web.Request, status: int, message: str) -> web.Response:
    """An error in the shape of the protocol ``request`` speaks."""
    if request.path.startswith(OPENAI_ROOT + "/"):
        return openai_error(status, message)
    return _error(status, message)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


#: The name of a :class:`ServerThread`'s thread, to tell it in ``threading.enumerate()``.
THREAD_NAME = "llvm-batch server"


class ServerThread:
    """A server on a background thread, for blocking code and tests.

    ``with ServerThread(faults=Faults(error_rate=0.2)) as server: ... server.url`` runs a
    :class:`ReferenceServer` built from the keywords; ``ServerThread(AppServer(app))`` runs
    any aiohttp application.
    """

    def __init__(self, server: AppServer | None = None, **kwargs: Any) -> None:
        self.server: Any = server if server is not None else ReferenceServer(**kwargs)
        self.url: str = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=THREAD_NAME, daemon=True
        )

    @property
    def stats(self) -> ServerStats:
        stats: ServerStats = self.server.stats
        return stats

    def set_faults(self, **changes: Any) -> None:
        """Change the faults (takes effect for the next request)."""
        self.server.set_faults(**changes)

    def start(self) -> ServerThread:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result()
        except BaseException:  # a port in use...: no thread or loop left behind
            self.stop()
            raise
        self.url = self.server.url
        return self

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve_forever(server: ReferenceServer) -> None:
    """Run ``server`` until cancelled (used by ``llvm-batch serve``)."""
    await server.start()
    print(f"llvm-batch reference server listening on {server.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
