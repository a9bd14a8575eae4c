"""Child processes of ours exit on their own when the process that started them dies.

The child is told its owner's pid and watches it with a pidfd (Linux >= 5.3): the fd becomes
readable the moment the owner exits, whatever killed it, with no polling and no confusion
from pid reuse. Watching the owner rather than ``os.getppid()`` matters under forkserver,
where the parent is the fork server, which can outlive the owner. Where pidfds are missing,
a thread polls the owner every ``POLL_SECONDS``.
"""

from __future__ import annotations

import _thread
import os
import select
import time
from collections.abc import Callable

__all__ = ["POLL_SECONDS", "exit_with_parent"]

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
