"""The wire protocols: LLVM (the default) and OpenAI-compatible, behind one interface."""

from .base import Call, Usage, WireProtocol
from .llvm import LLVMProtocol
from .openai import OpenAIProtocol

__all__ = ["Call", "LLVMProtocol", "OpenAIProtocol", "Usage", "WireProtocol"]
