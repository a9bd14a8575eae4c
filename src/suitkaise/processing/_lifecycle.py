"""The one loop that runs an Skprocess, in its own child process or in a Pool worker.

prerun -> run -> postrun repeat until ``stop()``, ``runs`` or ``join_in``; then onfinish, then
result. Errors in the loop sections spend a life and retry the same iteration; when no life
is left, ``__error__`` decides the outcome. Each section runs under its own time limit.

``sys.exit()``, ``KeyboardInterrupt`` and any other ``BaseException`` that is not an
``Exception``, raised by a section, is a request to stop, not an error to retry: the loop
ends at once (no life spent; ``__onfinish__``, ``__result__`` and ``__error__`` do not run)
and the outcome is a ``ProcessError`` carrying it, its traceback and, for ``sys.exit()``,
the exit status.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

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

if TYPE_CHECKING:
    from ._skprocess import Skprocess

__all__ = ["Control", "Outcome", "exit_status", "run_lifecycle", "stop_request"]

_ERRORS: dict[str, type[ProcessError]] = {
    "prerun": PreRunError,
    "run": RunError,
    "postrun": PostRunError,
    "onfinish": OnFinishError,
    "result": ResultError,
    "error": ErrorHandlerError,
}
_LOOP = ("prerun", "run", "postrun")


class Control(Protocol):
    """What the loop needs from whoever hosts it (an Skprocess child or a Pool worker)."""

    def stop_requested(self) -> bool:
        """``True`` once the parent asked for a graceful stop."""
        ...

    def entering_run(self, run: int) -> None:
        """Publish the number of the run (iteration) about to start."""
        ...


class Outcome(NamedTuple):
    """The end of a lifecycle: ``error`` is ``None`` on success, else what to raise."""

    value: Any
    error: BaseException | None


class _Expired(BaseException):
    # BaseException: a user's `except Exception` inside a section must not swallow it.
    pass


class _Stopped(Exception):
    """Carries the ProcessError of a stop request out of the loop."""

    def __init__(self, error: ProcessError) -> None:
        super().__init__(error.message)
        self.error = error


def exit_status(code: object) -> int:
    """The exit status ``sys.exit(code)`` asks for: 0 for None, the int itself, else 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return int(code)
    return 1


def stop_request(error: BaseException, where: str, current_run: int | None) -> ProcessError:
    """The ``ProcessError`` for a ``BaseException`` that is not an ``Exception`` (SystemExit,
    KeyboardInterrupt, ...) raised by user code ``where`` (e.g. "__run__ of Worker")."""
    exit_code = None
    if isinstance(error, SystemExit):
        exit_code = exit_status(error.code)
        what = f"called sys.exit({error.code!r}) (exit status {exit_code})"
    elif isinstance(error, KeyboardInterrupt):
        # Child processes and Pool workers ignore SIGINT: this came from the code itself.
        what = "raised KeyboardInterrupt (from the code itself: workers ignore Ctrl-C)"
    else:
        what = f"raised {type(error).__name__}: {error}"
    run = "" if current_run is None else f" (run {current_run})"
    failure = ProcessError(
        f"{where} {what}{run}; a BaseException that is not an Exception is a request to "
        "stop: the work ended there, without retrying",
        current_run=current_run,
        original_error=error,
        exit_code=exit_code,
    )
    failure.remote_traceback = "".join(traceback.format_exception(error))
    return failure


class _SectionTimer:
    """Time limits through SIGALRM; only usable in the main thread of the process."""

    def __init__(self) -> None:
        self._armed = False
        self._usable = threading.current_thread() is threading.main_thread()
        if self._usable:
            signal.signal(signal.SIGALRM, self._expire)

    def _expire(self, signum: int, frame: object) -> None:
        if self._armed:
            self._armed = False
            raise _Expired

    @contextmanager
    def limit(self, seconds: float | None) -> Iterator[None]:
        if seconds is None or not self._usable:
            yield
            return
        self._armed = True
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)


def _call(
    obj: Skprocess, timer: _SectionTimer, section: str, run: int
) -> tuple[Any, ProcessError | None]:
    method: Callable[[], Any] = getattr(obj, f"__{section}__")
    seconds = getattr(obj.process_config.timeouts, section)
    try:
        with timer.limit(seconds):
            return method(), None
    except _Expired:
        kind = ResultTimeoutError if section == "result" else ProcessTimeoutError
        return None, kind(
            f"__{section}__ of {type(obj).__name__} exceeded its {seconds:g} s timeout "
            f"(run {run})",
            current_run=run,
        )
    except Exception as error:
        failure = _ERRORS[section](
            f"__{section}__ of {type(obj).__name__} raised "
            f"{type(error).__name__}: {error} (run {run})",
            current_run=run,
            original_error=error,
        )
        failure.remote_traceback = "".join(traceback.format_exception(error))
        return None, failure
    except BaseException as error:  # SystemExit, KeyboardInterrupt, ...: stop, no retry
        raise _Stopped(stop_request(error, f"__{section}__ of {type(obj).__name__}", run)) from None


def _handle_error(obj: Skprocess, timer: _SectionTimer, failure: ProcessError) -> Outcome:
    obj.error = failure
    value, handler_failure = _call(obj, timer, "error", failure.current_run or 0)
    if handler_failure is not None:
        return Outcome(None, handler_failure)
    if isinstance(value, BaseException):
        return Outcome(None, value)
    return Outcome(value, None)


def run_lifecycle(obj: Skprocess, control: Control) -> Outcome:
    """Run ``obj`` through its whole lifecycle in this process and return the outcome."""
    try:
        return _run(obj, control)
    except _Stopped as stopped:
        return Outcome(None, stopped.error)


def _run(obj: Skprocess, control: Control) -> Outcome:
    config = obj.process_config
    timer = _SectionTimer()
    started = time.monotonic()
    lives = config.lives
    completed = 0
    run = 0

    def stopping() -> bool:
        return obj._sk_stop_asked or control.stop_requested()

    while not stopping():
        if config.runs is not None and completed >= config.runs:
            break
        if config.join_in is not None and time.monotonic() - started >= config.join_in:
            break
        run = completed + 1
        control.entering_run(run)
        failure: ProcessError | None = None
        for section in _LOOP:
            _, failure = _call(obj, timer, section, run)
            if failure is not None or stopping():
                break
        if failure is None:
            completed += 1
            continue
        lives -= 1
        if lives <= 0:
            return _handle_error(obj, timer, failure)
        # A life spent: retry the same iteration, with the object's state as it is now.

    _, failure = _call(obj, timer, "onfinish", run)
    if failure is not None:
        return _handle_error(obj, timer, failure)
    value, failure = _call(obj, timer, "result", run)
    if failure is not None:
        return _handle_error(obj, timer, failure)
    return Outcome(value, None)
