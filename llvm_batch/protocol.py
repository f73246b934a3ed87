"""The wire protocol in use, chosen once by name: ``llvm`` (the default) or ``openai``.

URLs, request bodies and answer parsing live in :mod:`llvm_batch.protocols`, one module per
protocol, so that the queue, retries and the batch layer never see which one is in use.
The module-level calls below are the LLVM protocol's, for code that speaks it directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import DEFAULT_PROTOCOL, ENV_PROTOCOL, PROTOCOL_NAMES, parse_protocol
from .protocols.base import (
    INFERENCE_OPTIONS,
    Call,
    Usage,
    WireProtocol,
    chat_prompt,
    error_message,
    parse_json,
    retry_after_from,
)
from .protocols.llvm import LLVMProtocol
from .protocols.openai import OpenAIProtocol

LLVM = LLVMProtocol()
_BY_NAME: dict[str, WireProtocol] = {
    "llvm": LLVM,
    "openai": OpenAIProtocol(),
    "openai-completions": OpenAIProtocol(completions=True),
}


def get_protocol(name: str | None = None) -> WireProtocol:
    """The protocol called ``name`` (see :data:`PROTOCOL_NAMES`; None: the default)."""
    return _BY_NAME[parse_protocol(name or DEFAULT_PROTOCOL)]


def models_from(answer: Mapping[str, Any]) -> list[str]:
    """Model ids from a list-models answer of either protocol."""
    if "data" in answer and "models" not in answer:
        return _BY_NAME["openai"].models_from(answer)
    return LLVM.models_from(answer)


list_models = LLVM.list_models
model_info = LLVM.model_info
inference = LLVM.inference
check_answer = LLVM.check_answer

__all__ = [
    "DEFAULT_PROTOCOL",
    "ENV_PROTOCOL",
    "INFERENCE_OPTIONS",
    "PROTOCOL_NAMES",
    "Call",
    "LLVMProtocol",
    "OpenAIProtocol",
    "Usage",
    "WireProtocol",
    "chat_prompt",
    "check_answer",
    "error_message",
    "get_protocol",
    "inference",
    "list_models",
    "model_info",
    "models_from",
    "parse_json",
    "retry_after_from",
]
