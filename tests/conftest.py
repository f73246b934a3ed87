"""Shared fixtures: the reference server on loopback, scripted loopback apps, and fake time.

``server`` / ``make_server`` run :class:`llvm_batch.server.ServerThread` (reference server on
127.0.0.1, a free port). ``scripted`` starts a small aiohttp app inside the test's own event
loop that records every request and lets the test decide each answer; ``fake_time`` gives the
client a clock and a sleep that records delays instead of waiting.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web

from llvm_batch.server import AppServer, ServerThread, reference_output

SCRIPTED_MODELS = ["m1", "m2"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="the long chaos runs too (kill -9 at 25 random points instead of 3)",
    )


# -- the reference server ------------------------------------------------------------------


PROTOCOLS = ["llvm", "openai"]


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per wire protocol: ``LLVM_PROTOCOL`` is set for every client and run
    it makes (CLI subprocesses included), and ``server``/``make_server`` speak it.

    A contract module opts in with ``pytestmark = pytest.mark.usefixtures("protocol")``.
    """
    name: str = request.param
    monkeypatch.setenv("LLVM_PROTOCOL", name)
    return name


def _protocol_of(request: pytest.FixtureRequest) -> str:
    if "protocol" in request.fixturenames:
        return str(request.getfixturevalue("protocol"))
    return "llvm"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """A started reference server (127.0.0.1, port 0, no faults), in the test's protocol."""
    with ServerThread(host="127.0.0.1", port=0, protocol=_protocol_of(request)) as running:
        yield running


@pytest.fixture
def make_server(request: pytest.FixtureRequest) -> Iterator[Callable[..., ServerThread]]:
    """Start ServerThreads from keywords (api_key=, faults=, models=, server=AppServer(app)).

    Reference servers speak the test's protocol; ``server=`` apps are run as they are.
    """
    started: list[ServerThread] = []
    wire = _protocol_of(request)

    def start(**kwargs: Any) -> ServerThread:
        if "server" not in kwargs:
            kwargs.setdefault("protocol", wire)
        running = ServerThread(**kwargs).start()
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        running.stop()


# -- scripted loopback apps ----------------------------------------------------------------


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str  # still percent-encoded, as sent
    headers: dict[str, str]
    body: Any  # decoded JSON, or None for an empty body

    @property
    def inputs(self) -> Any:
        """The prompt sent, in either protocol (a lone chat turn's content, as sent for a
        plain prompt in OpenAI mode; a longer conversation as its messages)."""
        if not isinstance(self.body, dict):
            return None
        if "inputs" in self.body:
            return self.body["inputs"]
        if "prompt" in self.body:
            return self.body["prompt"]
        messages = self.body.get("messages")
        if isinstance(messages, list) and len(messages) == 1:
            return messages[0].get("content")
        return messages


#: ``handler(seen, request)``, plain or async: a response, or None for the normal answer.
Handler = Callable[[Seen, web.Request], Any]


class Scripted:
    """An aiohttp app that records each request and answers through ``handler``.

    ``handler(seen, request)`` (plain or async) returns a response, or None for the normal
    protocol answer: models ``m1``/``m2``, model info, and the reference echo for inference.
    """

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler
        self.seen: list[Seen] = []
        self.url = ""
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    @property
    def inputs(self) -> list[Any]:
        """The ``inputs`` of every inference request, in arrival order."""
        return [seen.inputs for seen in self.seen if seen.method == "POST"]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        seen = Seen(
            request.method,
            request.raw_path,
            dict(request.headers),
            json.loads(raw) if raw else None,
        )
        self.seen.append(seen)
        if self.handler is not None:
            answer = self.handler(seen, request)
            if inspect.isawaitable(answer):
                answer = await answer
            if answer is not None:
                return answer
        return protocol_answer(seen)


def protocol_answer(seen: Seen) -> web.Response:
    """What a healthy server answers to ``seen``, in the protocol its path and body speak.

    The model list carries both protocols' fields, so one app serves either.
    """
    parts = seen.path.split("?", 1)[0].strip("/").split("/")
    if seen.method == "GET" and parts == ["models"]:
        listed = {"models": SCRIPTED_MODELS, "data": [{"id": m} for m in SCRIPTED_MODELS]}
        return web.json_response(listed)
    if seen.method == "GET" and len(parts) == 2 and parts[0] == "models":
        model = unquote(parts[1])
        return web.json_response({"model_id": model, "status": "loaded", "details": {"n": 1}})
    if seen.method == "POST" and len(parts) == 3 and parts[2] == "inference":
        model = unquote(parts[1])
        outputs = reference_output(model, seen.inputs, seen.body.get("max_tokens"))
        return web.json_response(answer_for("llvm", model, outputs))
    if seen.method == "POST" and parts[-1] == "completions" and isinstance(seen.body, dict):
        model = seen.body["model"]
        outputs = reference_output(model, seen.inputs, seen.body.get("max_tokens"))
        wire = "openai-completions" if parts == ["completions"] else "openai"
        return web.json_response(answer_for(wire, model, outputs))
    return web.json_response({"error": "no such route"}, status=404)


def answer_for(protocol: str, model: str, text: str) -> dict[str, Any]:
    """A healthy generation answer carrying ``text``, in ``protocol``'s shape."""
    if protocol == "llvm":
        return {"model_id": model, "outputs": text, "metadata": {"t": 1}}
    if protocol == "openai-completions":
        choice: dict[str, Any] = {"text": text}
    else:
        choice = {"message": {"role": "assistant", "content": text}}
    return {"model": model, "choices": [{**choice, "finish_reason": "stop"}], "t": 1}


@pytest.fixture
def scripted() -> Callable[..., Any]:
    """``async with scripted(handler) as app:`` runs a :class:`Scripted` app at ``app.url``.

    The app lives in the calling event loop, so handlers may wait on the test's asyncio.Events.
    """

    @asynccontextmanager
    async def serve(handler: Handler | None = None) -> AsyncIterator[Scripted]:
        app = Scripted(handler)
        async with AppServer(app.app, "127.0.0.1", 0) as running:
            app.url = running.url
            yield app

    return serve


@pytest.fixture
def scripted_thread(make_server: Callable[..., ServerThread]) -> Callable[..., Scripted]:
    """Run a :class:`Scripted` app on a background ServerThread (for the blocking client)."""

    def start(handler: Handler | None = None) -> Scripted:
        app = Scripted(handler)
        app.url = make_server(server=AppServer(app.app, "127.0.0.1", 0)).url
        return app

    return start


def error_reply(status: int, message: str = "scripted failure", **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


@pytest.fixture
def reply() -> Callable[..., web.Response]:
    """``reply(status, message, **headers)``: a JSON ``{"error": message}`` answer."""
    return error_reply


@pytest.fixture
def closed_url() -> str:
    """A loopback URL on which nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- fake time -----------------------------------------------------------------------------


WALL_START = 1_700_000_000.0


class FakeTime:
    """A monotonic clock, a wall clock and a sleep: sleeping records the delay and moves time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall_clock(self) -> float:
        return WALL_START + self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def client_kwargs(self) -> dict[str, Any]:
        """Keywords that put a client on this fake time."""
        return {"clock": self.clock, "sleep": self.sleep, "wall_clock": self.wall_clock}


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()
