"""The LLVM server wire format: URLs, request bodies and answer parsing. No I/O.

Everything that would change for another wire format (an OpenAI-compatible server, say)
lives here, so that the queue, retries and the batch layer never see it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import quote

from .errors import InvalidResponseError

INFERENCE_OPTIONS = ("max_tokens", "temperature", "top_k", "top_p", "params")


class Call(NamedTuple):
    """One HTTP exchange to make: method, path under the base URL, JSON body.

    A NamedTuple, not a frozen dataclass: one is built per row, and this is the cheaper one.
    """

    operation: str
    method: str
    path: str
    body: Any = None
    model: str | None = None


def list_models() -> Call:
    return Call("list models", "GET", "/models")


def model_info(model_id: str) -> Call:
    return Call("model info", "GET", f"/models/{quote(model_id, safe='')}", model=model_id)


@lru_cache(maxsize=64)
def _inference_path(model_id: str) -> str:
    return f"/models/{quote(model_id, safe='')}/inference"


def inference(model_id: str, inputs: Any, options: Mapping[str, Any]) -> Call:
    """An inference call; only options that were given (not None) go in the body."""
    body: dict[str, Any] = {"inputs": inputs}
    if options:
        body.update((key, value) for key, value in options.items() if value is not None)
    return Call("inference", "POST", _inference_path(model_id), body, model=model_id)


def chat_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Messages as one prompt: ``role: content`` lines; non-string content as compact JSON."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError("messages must be a list of {'role': ..., 'content': ...} mappings")
    lines = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise ValueError(f"message {index} must be a mapping with 'role' and 'content'")
        content = message.get("content")
        if not isinstance(content, str):
            content = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
        lines.append(f"{message['role']}: {content}")
    return "\n".join(lines)


def chat_result(
    model_id: str, answer: Mapping[str, Any], now: float | None = None
) -> dict[str, Any]:
    """The chat result built from an inference answer."""
    created = time.time() if now is None else now
    return {
        "id": f"llvm-{int(created * 1000)}",
        "model": model_id,
        "object": "chat.completion",
        "created": int(created),
        "content": answer.get("outputs"),
        "role": "assistant",
    }


def parse_json(
    text: str | bytes, call: Call, loads: Callable[[str | bytes], Any] = json.loads
) -> Any:
    """Decode a 2xx body with ``loads``, or raise :class:`InvalidResponseError`."""
    try:
        return loads(text)
    except ValueError:
        raise InvalidResponseError(
            "the server's answer is not valid JSON",
            operation=call.operation,
            model=call.model,
        ) from None


def check_answer(data: Any, call: Call) -> Any:
    """Check the shape of a decoded answer for ``call``; returns it unchanged."""
    if call.operation == "list models":
        ok = isinstance(data, Mapping) and isinstance(data.get("models"), list)
        expected = '{"models": [...]}'
    elif call.operation == "inference":
        ok = isinstance(data, Mapping) and "outputs" in data
        expected = '{"outputs": ...}'
    else:
        ok = isinstance(data, Mapping)
        expected = "a JSON object"
    if not ok:
        raise InvalidResponseError(
            f"the server's answer does not have the expected shape {expected}",
            operation=call.operation,
            model=call.model,
        )
    return data


def models_from(answer: Mapping[str, Any]) -> list[str]:
    """Model ids from a list-models answer (entries may be strings or {"id": ...} objects)."""
    models = []
    for entry in answer["models"]:
        if isinstance(entry, Mapping):
            entry = entry.get("id") or entry.get("model_id")
        models.append(str(entry))
    return models


def error_message(status: int, reason: str | None, body: str | bytes) -> str:
    """A short human message for an error status, from the body's "error" field if any."""
    detail = ""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        for key in ("error", "detail", "message"):
            value = data.get(key)
            if isinstance(value, Mapping):
                value = value.get("message")
            if isinstance(value, str) and value:
                detail = value
                break
    text = f"{status} {reason or ''}".strip()
    return f"{text}: {detail}" if detail else text
