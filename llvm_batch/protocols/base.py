"""What every wire format shares: the :class:`Call` to make, the :class:`WireProtocol`
interface, token accounting, error wording and rate-limit headers. No I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import InvalidResponseError, LLVMError
from ..retry import parse_retry_after

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


class Usage(NamedTuple):
    """What an answer says about its tokens and why generation stopped (None: not said)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None


NO_USAGE = Usage()


class WireProtocol:
    """One wire format: the calls for each operation and how to read their answers.

    Subclasses fill in every method; the client, the batch layer and the accessor only ever
    talk to this interface, so they run unchanged on any protocol.
    """

    name = ""

    def list_models(self) -> Call:
        raise NotImplementedError

    def models_from(self, answer: Mapping[str, Any]) -> list[str]:
        """Model ids from a list-models answer."""
        raise NotImplementedError

    def model_info(self, model_id: str) -> Call:
        raise NotImplementedError

    def model_info_fallback(self, error: LLVMError | None) -> Call | None:
        """The call to make instead when model info failed with ``error`` (None: no other)."""
        return None

    def model_from_list(
        self, answer: Mapping[str, Any], model_id: str, error: LLVMError | None
    ) -> dict[str, Any]:
        """Model info from the answer to :meth:`model_info_fallback`'s call."""
        raise NotImplementedError

    def inference(self, model_id: str, inputs: Any, options: Mapping[str, Any]) -> Call:
        """A call for a plain prompt (text, or a JSON object where the protocol takes one)."""
        raise NotImplementedError

    def chat(
        self, model_id: str, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any]
    ) -> Call:
        """A call for a conversation: ``[{"role": ..., "content": ...}, ...]``."""
        raise NotImplementedError

    def check_answer(self, data: Any, call: Call) -> Any:
        """``data`` if it is a sound answer to ``call``, else :class:`InvalidResponseError`
        (the wrong shape, or an inference answer whose output is null)."""
        ok, expected = self.shape_of(data, call)
        if not ok:
            raise shape_error(call, expected)
        if call.operation == "inference" and self.output_of(data) is None:
            raise no_output_error(call)
        return data

    def shape_of(self, data: Any, call: Call) -> tuple[bool, str]:
        """Whether ``data`` has the shape an answer to ``call`` needs, and that shape."""
        raise NotImplementedError

    def output_of(self, answer: Mapping[str, Any]) -> Any:
        """The model's output in an inference or chat answer."""
        raise NotImplementedError

    def usage_of(self, answer: Mapping[str, Any]) -> Usage:
        raise NotImplementedError

    def model_of(self, answer: Mapping[str, Any]) -> str | None:
        """The model id the answer names, if any."""
        raise NotImplementedError

    def metadata_of(self, answer: Mapping[str, Any]) -> dict[str, Any] | None:
        """The answer's other fields (timings, ids...) for the ``llvm_metadata`` column."""
        raise NotImplementedError

    def chat_result(self, model_id: str, answer: Mapping[str, Any], now: float) -> dict[str, Any]:
        """What :meth:`AsyncLLVMClient.chat` returns, the same shape for every protocol."""
        usage = self.usage_of(answer)
        return {
            "id": answer.get("id") or f"{self.name}-{int(now * 1000)}",
            "model": self.model_of(answer) or model_id,
            "object": "chat.completion",
            "created": int(now),
            "content": self.output_of(answer),
            "role": "assistant",
            "finish_reason": usage.finish_reason,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def chat_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Messages as one prompt: ``role: content`` lines; non-string content as compact JSON."""
    check_messages(messages)
    lines = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str):
            content = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
        lines.append(f"{message['role']}: {content}")
    return "\n".join(lines)


def check_messages(messages: Any) -> None:
    """Raise ValueError unless ``messages`` is a list of mappings with a role and content."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError("messages must be a list of {'role': ..., 'content': ...} mappings")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise ValueError(f"message {index} must be a mapping with 'role' and 'content'")
        # Only an assistant's turn may have a null content (a tool call, as OpenAI allows);
        # Arrow turns a missing field into a null, so the two are refused alike elsewhere.
        content = message.get("content")
        if "content" not in message or (content is None and message["role"] != "assistant"):
            raise ValueError(
                f"message {index} ({message['role']!r}) has no 'content'; every message needs one"
            )


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


def no_output_error(call: Call) -> InvalidResponseError:
    """A 200 whose output is null: the row fails (retried like any malformed answer), since a
    null output in the result columns means the row failed, never that it is ok."""
    return InvalidResponseError(
        "the server answered without an output (null)", operation=call.operation, model=call.model
    )


def shape_error(call: Call, expected: str) -> InvalidResponseError:
    return InvalidResponseError(
        f"the server's answer does not have the expected shape {expected}",
        operation=call.operation,
        model=call.model,
    )


def error_message(status: int, reason: str | None, body: str | bytes) -> str:
    """A short human message for an error status, from what the body says if anything.

    Understands ``{"error": "text"}``, ``{"detail": ...}``, ``{"message": ...}`` and the
    OpenAI shape ``{"error": {"message", "type", "code"}}``.
    """
    detail = ""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        for key in ("error", "detail", "message"):
            value = data.get(key)
            if isinstance(value, Mapping):
                value = _openai_error_text(value)
            if isinstance(value, str) and value:
                detail = value
                break
    text = f"{status} {reason or ''}".strip()
    return f"{text}: {detail}" if detail else text


def _openai_error_text(error: Mapping[str, Any]) -> str | None:
    message = error.get("message")
    if not isinstance(message, str) or not message:
        return None
    kind = [str(error[key]) for key in ("type", "code") if error.get(key) not in (None, "")]
    # "rate_limit_exceeded" says more than "requests" when both are given: one of each at most.
    labels = list(dict.fromkeys(kind))
    return f"{message} ({', '.join(labels)})" if labels else message


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_reset(value: str | None) -> float | None:
    """Seconds from an ``x-ratelimit-reset-*`` value: ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"2"``."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def retry_after_from(headers: Mapping[str, str], now: float) -> float | None:
    """How long the server asks us to wait: ``retry-after-ms``, ``Retry-After``, else the
    reset time of an exhausted ``x-ratelimit-*`` budget (requests or tokens)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    seconds = parse_retry_after(headers.get("Retry-After"), now)
    if seconds is not None:
        return seconds
    waits = []
    for budget in ("requests", "tokens"):
        remaining = headers.get(f"x-ratelimit-remaining-{budget}")
        reset = parse_reset(headers.get(f"x-ratelimit-reset-{budget}"))
        if reset is not None and remaining is not None and remaining.strip() in ("0", "0.0"):
            waits.append(reset)
    return max(waits) if waits else None
