"""Child processes of ours exit on their own when the process that started them dies, and a
process that exits first ends the children it still owns.

The child is told its owner's pid and watches it with a pidfd (Linux >= 5.3): the fd becomes
readable the moment the owner exits, whatever killed it, with no polling and no confusion
from pid reuse. Watching the owner rather than ``os.getppid()`` matters under forkserver,
where the parent is the fork server, which can outlive the owner. Where pidfds are missing,
a thread polls the owner every ``POLL_SECONDS``.

``run_at_exit`` is the other direction: a hook that ends our children when this process
exits normally, before anything waits for them.
"""

from __future__ import annotations

import _thread
import atexit
import multiprocessing
import multiprocessing.util
import os
import select
import threading
import time
from collections.abc import Callable

__all__ = ["POLL_SECONDS", "exit_with_parent", "run_at_exit"]

POLL_SECONDS = 0.2
"""How often the fallback watcher checks the owner (seconds); exit stays well under 2 s."""

EXIT_CODE = 70  # EX_SOFTWARE: nobody is left to report to

_watching: tuple[int, int] | None = None  # (this pid, owner); a forked child re-checks


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_with_parent(owner: int, cleanup: Callable[[], None] | None = None) -> None:
    """End this process (after ``cleanup``) as soon as process ``owner`` exits.

    Runs once per process: later calls with the same owner do nothing.
    """
    global _watching
    if _watching == (os.getpid(), owner):
        return
    _watching = (os.getpid(), owner)

    def leave() -> None:
        if cleanup is not None:
            cleanup()
        os._exit(EXIT_CODE)

    try:
        pidfd = os.pidfd_open(owner)
    except ProcessLookupError:
        leave()
        return
    except (AttributeError, OSError):
        pidfd = -1

    def watch() -> None:
        if pidfd >= 0:
            select.select([pidfd], [], [])
        else:
            while _alive(owner):
                time.sleep(POLL_SECONDS)
        leave()

    # _thread: unlike threading.Thread.start(), this does not wait for the thread to be
    # scheduled, which on a busy machine can take milliseconds of a child's start-up.
    _thread.start_new_thread(watch, ())


_hooked: set[tuple[int, Callable[[], None]]] = set()
_hook_lock = threading.Lock()


def run_at_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` when this process exits normally, before the exit waits for children.

    Call it when the first child is started (the registration is per process, so a forked
    child registers again). In the main process that is ``atexit`` (registered after
    ``multiprocessing``'s own hook, so it runs first: that hook joins every child). In a
    process started by ``multiprocessing``, ``atexit`` does not run at all; its exit runs
    ``multiprocessing``'s finalizers and then joins the children, so the hook becomes such a
    finalizer (``multiprocessing.Pool`` ends its workers the same way).
    """
    key = (os.getpid(), hook)
    with _hook_lock:
        if key in _hooked:
            return
        _hooked.add(key)
    if multiprocessing.parent_process() is None:
        atexit.register(hook)
    else:
        multiprocessing.util.Finalize(None, hook, exitpriority=10)


def _fresh_hook_lock() -> None:
    global _hook_lock
    _hook_lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_hook_lock)
