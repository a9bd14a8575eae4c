"""Processes: class-based child processes (Skprocess) and batches over them (Pool).

>>> from suitkaise.processing import Skprocess, Pool
"""

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
)
from ._pool import Pool
from ._skprocess import Skprocess

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
    "Skprocess",
    "Timeouts",
]
