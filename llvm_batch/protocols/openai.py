"""The OpenAI-compatible API (vLLM, SGLang, llama.cpp, Ollama, TGI, LM Studio, hosted endpoints).

The base URL is the API root, ``/v1`` included (``http://host:8000/v1``). Conversations go to
``/chat/completions``. A plain prompt goes there too, as one user turn, by default: every
compatible server has that endpoint (``/completions`` is legacy and missing from several),
and instruction-tuned models answer properly only when their chat template is applied.
``completions=True`` (protocol ``openai-completions``) sends plain prompts to
``/completions`` as raw text instead, as the LLVM protocol does, for base models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from ..errors import BadRequestError, LLVMError, ModelNotFoundError
from .base import NO_USAGE, Call, Usage, WireProtocol, check_messages

#: Answer fields that have columns of their own (or say nothing), left out of llvm_metadata.
_SHOWN_ELSEWHERE = frozenset({"choices", "model", "object"})


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(inputs: Any) -> str:
    return inputs if isinstance(inputs, str) else json.dumps(inputs, separators=(",", ":"))


class OpenAIProtocol(WireProtocol):
    """The OpenAI-compatible wire format; ``completions`` picks the plain-prompt endpoint."""

    def __init__(self, completions: bool = False) -> None:
        self.completions = completions
        self.name = "openai-completions" if completions else "openai"

    def list_models(self) -> Call:
        return Call("list models", "GET", "/models")

    def models_from(self, answer: Mapping[str, Any]) -> list[str]:
        return [str(entry.get("id")) for entry in answer["data"] if isinstance(entry, Mapping)]

    def model_info(self, model_id: str) -> Call:
        return Call("model info", "GET", f"/models/{quote(model_id, safe='')}", model=model_id)

    def model_info_fallback(self, error: LLVMError | None) -> Call | None:
        """Many servers (vLLM, llama.cpp) have no ``GET /models/{id}``: ask for the list."""
        if isinstance(error, (ModelNotFoundError, BadRequestError)):
            return self.list_models()
        return None

    def model_from_list(
        self, answer: Mapping[str, Any], model_id: str, error: LLVMError | None
    ) -> dict[str, Any]:
        """The list entry of ``model_id``; a :class:`ModelNotFoundError` naming what is offered."""
        for entry in answer["data"]:
            if isinstance(entry, Mapping) and entry.get("id") == model_id:
                return dict(entry)
        offered = ", ".join(self.models_from(answer)[:20]) or "none"
        raise ModelNotFoundError(
            f"the server does not offer model {model_id!r} (it offers: {offered})",
            operation="model info",
            model=model_id,
            status=error.status if error is not None else None,
        )

    def inference(self, model_id: str, inputs: Any, options: Mapping[str, Any]) -> Call:
        if self.completions:
            body = _body(model_id, "prompt", _text(inputs), options)
            return Call("inference", "POST", "/completions", body, model=model_id)
        return self.chat(model_id, [{"role": "user", "content": _text(inputs)}], options)

    def chat(
        self, model_id: str, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any]
    ) -> Call:
        check_messages(messages)
        body = _body(model_id, "messages", [dict(m) for m in messages], options)
        return Call("inference", "POST", "/chat/completions", body, model=model_id)

    def shape_of(self, data: Any, call: Call) -> tuple[bool, str]:
        if call.operation == "list models":
            ok = isinstance(data, Mapping) and isinstance(data.get("data"), list)
            expected = '{"data": [{"id": ...}]}'
        elif call.operation == "inference":
            choices = data.get("choices") if isinstance(data, Mapping) else None
            first = choices[0] if isinstance(choices, list) and choices else None
            ok = isinstance(first, Mapping) and (
                isinstance(first.get("message"), Mapping) or "text" in first
            )
            expected = '{"choices": [{"message": {"content": ...}}]}'
            if call.path == "/completions":
                expected = '{"choices": [{"text": ...}]}'
        else:
            ok = isinstance(data, Mapping)
            expected = "a JSON object"
        return ok, expected

    def output_of(self, answer: Mapping[str, Any]) -> Any:
        choice = answer["choices"][0]
        message = choice.get("message")
        if isinstance(message, Mapping):
            return message.get("content")
        return choice.get("text")

    def usage_of(self, answer: Mapping[str, Any]) -> Usage:
        usage = answer.get("usage")
        finish = answer["choices"][0].get("finish_reason")
        if not isinstance(usage, Mapping):
            usage = {}
        if not usage and finish is None:
            return NO_USAGE
        return Usage(
            _int_or_none(usage.get("prompt_tokens")),
            _int_or_none(usage.get("completion_tokens")),
            finish if isinstance(finish, str) else None,
        )

    def model_of(self, answer: Mapping[str, Any]) -> str | None:
        model = answer.get("model")
        return str(model) if model else None

    def metadata_of(self, answer: Mapping[str, Any]) -> dict[str, Any] | None:
        extra = {k: v for k, v in answer.items() if k not in _SHOWN_ELSEWHERE}
        return extra or None


def _body(model_id: str, key: str, value: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The request body: extra ``params`` first, as top-level fields (as vLLM, llama.cpp and
    Ollama read ``seed``, ``stop``, ``top_k``...), then the named options, then the prompt."""
    body: dict[str, Any] = {}
    params = options.get("params") if options else None
    if isinstance(params, Mapping):
        body.update(params)
    if options:
        body.update(
            (name, value)
            for name, value in options.items()
            if value is not None and name != "params"
        )
    body["model"] = model_id
    body[key] = value
    return body
