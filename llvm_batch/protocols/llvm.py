"""The LLVM server protocol (DESIGN.md): ``/models``, ``/models/{id}``, ``/models/{id}/inference``.

Chat has no endpoint of its own: messages become one ``role: content`` prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from .base import NO_USAGE, Call, Usage, WireProtocol, chat_prompt

_ANSWER_KEYS = frozenset({"outputs", "model_id", "metadata"})


@lru_cache(maxsize=64)
def _inference_path(model_id: str) -> str:
    return f"/models/{quote(model_id, safe='')}/inference"


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class LLVMProtocol(WireProtocol):
    """The LLVM wire format; answers carry ``outputs`` and a ``metadata`` mapping."""

    name = "llvm"

    def list_models(self) -> Call:
        return Call("list models", "GET", "/models")

    def models_from(self, answer: Mapping[str, Any]) -> list[str]:
        """Entries may be strings or ``{"id": ...}`` objects."""
        models = []
        for entry in answer["models"]:
            if isinstance(entry, Mapping):
                entry = entry.get("id") or entry.get("model_id")
            models.append(str(entry))
        return models

    def model_info(self, model_id: str) -> Call:
        return Call("model info", "GET", f"/models/{quote(model_id, safe='')}", model=model_id)

    def inference(self, model_id: str, inputs: Any, options: Mapping[str, Any]) -> Call:
        """Only options that were given (not None) go in the body."""
        body: dict[str, Any] = {"inputs": inputs}
        if options:
            body.update((key, value) for key, value in options.items() if value is not None)
        return Call("inference", "POST", _inference_path(model_id), body, model=model_id)

    def chat(
        self, model_id: str, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any]
    ) -> Call:
        return self.inference(model_id, chat_prompt(messages), options)

    def shape_of(self, data: Any, call: Call) -> tuple[bool, str]:
        if call.operation == "list models":
            ok = isinstance(data, Mapping) and isinstance(data.get("models"), list)
            expected = '{"models": [...]}'
        elif call.operation == "inference":
            ok = isinstance(data, Mapping) and "outputs" in data
            expected = '{"outputs": ...}'
        else:
            ok = isinstance(data, Mapping)
            expected = "a JSON object"
        return ok, expected

    def output_of(self, answer: Mapping[str, Any]) -> Any:
        return answer.get("outputs")

    def usage_of(self, answer: Mapping[str, Any]) -> Usage:
        meta = answer.get("metadata")
        if not isinstance(meta, Mapping):
            return NO_USAGE
        finish = meta.get("finish_reason")
        return Usage(
            _int_or_none(meta.get("input_tokens")),
            _int_or_none(meta.get("output_tokens")),
            finish if isinstance(finish, str) else None,
        )

    def model_of(self, answer: Mapping[str, Any]) -> str | None:
        model = answer.get("model_id")
        return str(model) if model else None

    def metadata_of(self, answer: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = answer.get("metadata")
        if len(answer) <= 3 and isinstance(meta, dict) and answer.keys() <= _ANSWER_KEYS:
            return meta or None  # the usual answer: its metadata is all there is to keep
        extra = {k: v for k, v in answer.items() if k not in _ANSWER_KEYS}
        if isinstance(meta, dict):
            extra = {**meta, **extra}
        elif meta is not None:
            extra["metadata"] = meta
        return extra or None
