"""Starting the coordinator process.

Under the fork start method the coordinator is a bare ``os.fork()``: it runs only our own
code and always ends with ``os._exit``, so it needs none of what ``multiprocessing``
prepares in a child (its bootstrap, after-fork hooks, a sentinel pipe), and skipping that
takes about a third off ``Share()`` plus the first call. Under spawn and forkserver the
context's own ``Process`` starts it, since those need multiprocessing to rebuild the
arguments in a fresh interpreter.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Protocol

__all__ = ["CoordinatorProcess", "ForkedProcess", "launch"]


class CoordinatorProcess(Protocol):
    """What the owner needs of the coordinator's process (``multiprocessing.Process`` has it)."""

    @property
    def pid(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class ForkedProcess:
    """A child made by ``os.fork()`` that runs ``target(*args, **kwargs)`` and exits."""

    def __init__(
        self,
        target: Callable[..., object],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        close_in_child: Iterable[Any] = (),
    ) -> None:
        self.exitcode: int | None = None
        self._pidfd = -1
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                for item in close_in_child:
                    item.close()
                target(*args, **kwargs)
                code = 0
            except SystemExit as leaving:
                code = leaving.code if isinstance(leaving.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        self.pid = pid
        try:
            self._pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = -1  # join() polls instead

    def _reap(self, block: bool) -> None:
        if self.exitcode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped by someone else (an os.wait() in the program)
            pid, status = self.pid, 255 << 8
        if pid:
            self.exitcode = os.waitstatus_to_exitcode(status)
            if self._pidfd >= 0:
                os.close(self._pidfd)
                self._pidfd = -1

    def is_alive(self) -> bool:
        self._reap(block=False)
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        """Wait for the process to end, at most ``timeout`` seconds (``None``: no limit)."""
        if timeout is None:
            self._reap(block=True)
            return
        deadline = time.monotonic() + timeout
        while self.is_alive():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._pidfd >= 0:
                select.select([self._pidfd], [], [], left)
            else:
                time.sleep(min(left, 0.005))

    def _signal(self, signum: int) -> None:
        if self.is_alive():
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def __del__(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)


def launch(
    context: Any,
    target: Callable[..., object],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    close_in_child: Iterable[Any] = (),
) -> CoordinatorProcess:
    """Start ``target(*args, **kwargs)`` in a new process of ``context``'s start method.

    ``close_in_child``: objects with ``close()`` (the owner's end of a socket pair) that a
    forked child closes first; a spawned child never has them.
    """
    if context.get_start_method() == "fork":
        return ForkedProcess(target, args, kwargs, close_in_child)
    process = context.Process(
        target=target, args=args, kwargs=kwargs, name="suitkaise:share-coordinator", daemon=True
    )
    process.start()
    started: CoordinatorProcess = process
    return started
