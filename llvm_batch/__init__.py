"""llvm-batch: run large tables of prompts through LLVM inference servers, reliably and fast."""

from .breaker import BreakerState, CircuitBreaker
from .client import AsyncLLVMClient, ClientStats, Outcome
from .errors import (
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    HTTPStatusError,
    InvalidResponseError,
    LLVMConnectionError,
    LLVMError,
    LLVMTimeoutError,
    ModelNotFoundError,
    QueueFullError,
    RateLimitError,
    ServerError,
)
from .options import BreakerConfig, ClientConfig, Priority
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
    "InvalidResponseError",
    "LLVMClient",
    "LLVMConnectionError",
    "LLVMError",
    "LLVMTimeoutError",
    "ModelNotFoundError",
    "Outcome",
    "Priority",
    "QueueFullError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "__version__",
    "run_sync",
]
