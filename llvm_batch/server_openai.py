"""The reference server's OpenAI-compatible routes, under ``/v1``: the same deterministic
answers and fault knobs as its LLVM routes (:meth:`ReferenceServer.generate`), in the shapes
vLLM, llama.cpp and Ollama use, usage and ``finish_reason`` included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .protocols.base import chat_prompt

if TYPE_CHECKING:
    from .server import ReferenceServer

OPENAI_ROOT = "/v1"
CREATED = 1_700_000_000  # the "created" time of every answer and model

#: status -> (error type, code) as OpenAI words them.
_ERROR_KINDS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    503: ("server_error", "overloaded"),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def openai_error(status: int, message: str) -> web.Response:
    """``{"error": {"message", "type", "code"}}``, as OpenAI-compatible servers answer."""
    kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "error", None))
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


def add_openai_routes(app: web.Application, server: ReferenceServer) -> None:
    """Add ``/v1/models``, ``/v1/models/{id}``, ``/v1/chat/completions``, ``/v1/completions``."""
    routes = _Routes(server)
    app.router.add_get(OPENAI_ROOT + "/models", routes.list_models)
    app.router.add_get(OPENAI_ROOT + "/models/{model_id}", routes.model_info)
    app.router.add_post(OPENAI_ROOT + "/chat/completions", routes.chat)
    app.router.add_post(OPENAI_ROOT + "/completions", routes.completions)


class _Routes:
    def __init__(self, server: ReferenceServer) -> None:
        self.server = server

    def _model(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "llvm-batch"}

    async def list_models(self, request: web.Request) -> web.Response:
        models = [self._model(m) for m in self.server.models]
        return web.json_response({"object": "list", "data": models})

    async def model_info(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if model_id not in self.server.models:
            return openai_error(404, f"The model `{model_id}` does not exist.")
        return web.json_response(self._model(model_id))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "messages", "chat.completion")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "prompt", "text_completion")

    async def _generate(self, request: web.Request, key: str, kind: str) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return openai_error(400, "the request body is not JSON")
        if not isinstance(body, dict) or key not in body or "model" not in body:
            return openai_error(422, f"the request body needs 'model' and '{key}' fields")
        if body.get("stream"):
            return openai_error(400, "streaming is not supported by the reference server")
        model_id = str(body["model"])
        if model_id not in self.server.models:
            return openai_error(404, f"The model `{model_id}` does not exist.")
        inputs = body[key]
        if key == "messages":
            try:
                inputs = _as_prompt(inputs)
            except ValueError as exc:
                return openai_error(400, str(exc))
        answer = await self.server.generate(request, model_id, raw, inputs, body.get("max_tokens"))
        if isinstance(answer, web.StreamResponse):
            return answer
        if key == "messages":
            choice: dict[str, Any] = {"message": {"role": "assistant", "content": answer.text}}
        else:
            choice = {"text": answer.text}
        # Deterministic, as every answer of the reference server: an id from the request.
        digest = hashlib.sha1(f"{model_id}:{inputs}".encode()).hexdigest()[:16]
        return web.json_response(
            {
                "id": f"cmpl-{digest}",
                "object": kind,
                "created": CREATED,
                "model": model_id,
                "choices": [{"index": 0, **choice, "finish_reason": answer.finish_reason}],
                "usage": {
                    "prompt_tokens": answer.input_tokens,
                    "completion_tokens": answer.output_tokens,
                    "total_tokens": answer.input_tokens + answer.output_tokens,
                },
            }
        )


def _as_prompt(messages: Any) -> str:
    """The text echoed for ``messages``: a lone user turn as it is (as a plain prompt gets
    sent, so both protocols echo the same text for it), else the LLVM protocol's prompt."""
    if (
        isinstance(messages, list)
        and len(messages) == 1
        and isinstance(messages[0], dict)
        and messages[0].get("role") == "user"
        and isinstance(messages[0].get("content"), str)
    ):
        return str(messages[0]["content"])
    return chat_prompt(messages)
