"""The error family of Skprocess and Pool.

Each error says which section failed and on which run, and keeps the user's exception as
``original_error`` (and as ``__cause__``). They survive the trip between processes with
their message and attributes intact.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ErrorHandlerError",
    "OnFinishError",
    "PostRunError",
    "PreRunError",
    "ProcessError",
    "ProcessTimeoutError",
    "ResultError",
    "ResultTimeoutError",
    "RunError",
    "ShareError",
]


class ProcessError(Exception):
    """Something went wrong in an Skprocess (or a Pool worker).

    Attributes:
        current_run: the run (1-based iteration of the loop) in progress when it happened;
            0 if the loop had not started, ``None`` if unknown.
        original_error: the exception your code raised, if any (also ``__cause__``).
        remote_traceback: the traceback of ``original_error`` as text, formatted in the
            process where it was raised (tracebacks themselves cannot cross processes).
        exit_code: for ``sys.exit()`` called in the child or worker, the exit status it
            asked for (``sys.exit()`` and ``sys.exit(None)``: 0; a non-int argument: 1); for
            a process that died, its exit code, negative for a signal (``-9``: SIGKILL);
            otherwise ``None``.
    """

    remote_traceback: str | None = None
    exit_code: int | None = None

    def __init__(
        self,
        message: str,
        *,
        current_run: int | None = None,
        original_error: BaseException | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.current_run = current_run
        self.original_error = original_error
        if exit_code is not None:
            self.exit_code = exit_code
        if original_error is not None:
            self.__cause__ = original_error

    @property
    def message(self) -> str:
        """The message, as given."""
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are not pickled by Exception.__reduce__; rebuild explicitly.
        return (
            _rebuild,
            (
                type(self),
                self.message,
                self.current_run,
                self.original_error,
                self.remote_traceback,
                self.exit_code,
            ),
        )

    def __str__(self) -> str:
        if self.remote_traceback:
            return f"{self.message}\n\nIn the child process:\n{self.remote_traceback}"
        return self.message


def _rebuild(
    cls: type[ProcessError],
    message: str,
    current_run: int | None,
    original_error: BaseException | None,
    remote_traceback: str | None,
    exit_code: int | None = None,
) -> ProcessError:
    error = cls(
        message, current_run=current_run, original_error=original_error, exit_code=exit_code
    )
    error.remote_traceback = remote_traceback
    return error


class PreRunError(ProcessError):
    """``__prerun__`` raised, and the process had no lives left."""


class RunError(ProcessError):
    """``__run__`` raised, and the process had no lives left."""


class PostRunError(ProcessError):
    """``__postrun__`` raised, and the process had no lives left."""


class OnFinishError(ProcessError):
    """``__onfinish__`` raised."""


class ResultError(ProcessError):
    """``__result__`` raised, or the result could not be sent back to the parent."""


class ErrorHandlerError(ProcessError):
    """``__error__`` itself raised while handling another error."""


class ProcessTimeoutError(ProcessError):
    """A section ran longer than its ``process_config.timeouts`` entry allows."""


class ResultTimeoutError(ProcessTimeoutError):
    """``__result__`` ran longer than ``process_config.timeouts.result``."""


class ShareError(Exception):
    """A Share could not do what was asked: its coordinator is gone or stopped, or it
    refused the request. The message says which and what to do."""
