"""llvm-batch: run large tables of prompts through LLVM inference servers, reliably and fast."""

from . import accessor as _accessor  # noqa: F401  (registers df.llvm and series.llvm)
from .attempt import Outcome
from .batch import RunSummary, arun_batch, run_batch
from .breaker import BreakerState, CircuitBreaker
from .client import AsyncLLVMClient, ClientStats
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
    ResumeMismatchError,
    ServerError,
)
from .options import BreakerConfig, ClientConfig, Limits, Priority
from .retry import RetryPolicy
from .sync import LLVMClient, run_sync

__version__ = "0.1.0"

__all__ = [
    "AsyncLLVMClient",
    "AuthenticationError",
    "BadRequestError",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientConfig",
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
    "ResumeMismatchError",
    "RetryPolicy",
    "RunSummary",
    "ServerError",
    "__version__",
    "arun_batch",
    "run_batch",
    "run_sync",
]
