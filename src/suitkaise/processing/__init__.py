"""Processes: class-based child processes (Skprocess), batches over them (Pool), and
objects shared by processes with no infrastructure (Share).

>>> from suitkaise.processing import Share, Pool, Skprocess
"""

from typing import TYPE_CHECKING, Any

from ._config import ProcessConfig, Timeouts
from ._errors import (
    ErrorHandlerError,
    OnFinishError,
    PostRunError,
    PreRunError,
    ProcessError,
    ProcessTimeoutError,
    ResultError,
    ResultTimeoutError,
    RunError,
    ShareError,
)
from ._pool import Pool
from ._skprocess import Skprocess

if TYPE_CHECKING:
    from ._share import Share


def __getattr__(name: str) -> Any:
    # Share is imported on first use: Pool workers and Skprocess children import this
    # package, and most of them never touch a Share.
    if name == "Share":
        from ._share import Share

        return Share
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ErrorHandlerError",
    "OnFinishError",
    "Pool",
    "PostRunError",
    "PreRunError",
    "ProcessConfig",
    "ProcessError",
    "ProcessTimeoutError",
    "ResultError",
    "ResultTimeoutError",
    "RunError",
    "Share",
    "ShareError",
    "Skprocess",
    "Timeouts",
]
