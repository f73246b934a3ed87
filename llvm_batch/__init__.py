"""llvm-batch: run large tables of prompts through LLVM inference servers, reliably and fast.

The public names are imported when first used (PEP 562), so ``import llvm_batch`` and the
command line's ``--help`` stay fast. ``df.llvm`` / ``series.llvm`` are registered as soon as
pandas is loaded, whether it was imported before llvm_batch or after.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .attempt import Outcome
    from .batch import RunSummary, arun_batch, run_batch
    from .breaker import BreakerState, CircuitBreaker
    from .client import AsyncLLVMClient
    from .config import (
        BreakerConfig,
        ClientConfig,
        ClientSettings,
        Limits,
        Priority,
        resolve_config,
    )
    from .engine import ClientStats
    from .errors import (
        AuthenticationError,
        BadRequestError,
        CircuitOpenError,
        HTTPStatusError,
        InputError,
        InvalidResponseError,
        LLVMConnectionError,
        LLVMError,
        LLVMTimeoutError,
        ModelNotFoundError,
        QueueFullError,
        RateLimitError,
        RedirectError,
        ResponseTooLargeError,
        ResumeMismatchError,
        ServerError,
    )
    from .loops import run_sync
    from .retry import RetryPolicy
    from .sync import LLVMClient

__version__ = "0.1.0"

_ERRORS = (
    "AuthenticationError BadRequestError CircuitOpenError HTTPStatusError InputError "
    "InvalidResponseError LLVMConnectionError LLVMError LLVMTimeoutError ModelNotFoundError "
    "QueueFullError RateLimitError RedirectError ResponseTooLargeError ResumeMismatchError "
    "ServerError"
).split()
#: public name -> the module that defines it
_HOMES: dict[str, str] = {
    **{name: ".errors" for name in _ERRORS},
    **dict.fromkeys(("RunSummary", "arun_batch", "run_batch"), ".batch"),
    **dict.fromkeys(("BreakerState", "CircuitBreaker"), ".breaker"),
    "AsyncLLVMClient": ".client",
    "ClientStats": ".engine",
    "Outcome": ".attempt",
    **dict.fromkeys(
        ("BreakerConfig", "ClientConfig", "ClientSettings", "Limits", "Priority", "resolve_config"),
        ".config",
    ),
    "RetryPolicy": ".retry",
    "LLVMClient": ".sync",
    "run_sync": ".loops",
}

__all__ = [
    "AsyncLLVMClient",
    "AuthenticationError",
    "BadRequestError",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientConfig",
    "ClientSettings",
    "ClientStats",
    "HTTPStatusError",
    "InputError",
    "InvalidResponseError",
    "LLVMClient",
    "LLVMConnectionError",
    "LLVMError",
    "LLVMTimeoutError",
    "Limits",
    "ModelNotFoundError",
    "Outcome",
    "Priority",
    "QueueFullError",
    "RateLimitError",
    "RedirectError",
    "ResponseTooLargeError",
    "ResumeMismatchError",
    "RetryPolicy",
    "RunSummary",
    "ServerError",
    "__version__",
    "arun_batch",
    "resolve_config",
    "run_batch",
    "run_sync",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _RegisterAccessorAfterPandas(importlib.abc.MetaPathFinder):
    """Registers ``df.llvm`` right after pandas finishes importing (then steps aside)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "pandas":
            return None
        sys.meta_path.remove(self)
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is not None and (spec := find(fullname, path, target)) is not None:
                break
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            importlib.import_module(".accessor", __name__)

        loader.exec_module = exec_then_register
        return spec


if "pandas" in sys.modules:
    importlib.import_module(".accessor", __name__)
elif not any(isinstance(f, _RegisterAccessorAfterPandas) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAccessorAfterPandas())
