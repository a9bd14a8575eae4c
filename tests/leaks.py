"""What a test may not leave behind: file descriptors, shared memory, processes (Linux /proc).

``Snapshot.take()`` before, ``snapshot.leaks()`` after: the file descriptors of this process,
the ``/dev/shm/suitkaise-*`` entries and the descendant processes that appeared in between
and are still there after a garbage collection and a grace period. The ``no_leaks`` fixture
(tests/conftest.py) wraps a test in exactly that.

Not in conftest.py: spawned children import test modules by name.
"""

from __future__ import annotations

import gc
import glob
import os
import time
from dataclasses import dataclass

from process_tree import descendants

SHM_PATTERN = "/dev/shm/suitkaise-*"


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and what each points to."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            found[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:  # closed meanwhile (the listing's own fd, say)
            continue
    return found


def shm_entries() -> set[str]:
    return set(glob.glob(SHM_PATTERN))


def _helpers(pids: set[int]) -> set[int]:
    # multiprocessing's fork server and resource tracker live for the whole session.
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                text = cmdline.read()
        except OSError:
            continue
        if b"forkserver" in text or b"resource_tracker" in text:
            found.add(pid)
    return found


def _ours(entry: str, processes: set[int]) -> bool:
    """Whether a /dev/shm entry may be this test's: its owner (``suitkaise-share-PID-...``)
    is this process, one of its descendants, or dead. A Share of another process that is
    still running (a second test session on the machine) is not this test's leak."""
    parts = os.path.basename(entry)[len("suitkaise-share-") :].split("-")
    if not parts[0].isdigit():
        return True  # a name that does not say who made it
    owner = int(parts[0])
    if owner == os.getpid() or owner in processes:
        return True
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Snapshot:
    fds: dict[int, str]
    shm: set[str]
    processes: set[int]

    @classmethod
    def take(cls) -> Snapshot:
        gc.collect()
        return cls(open_fds(), shm_entries(), descendants())

    def leaks(self, grace: float = 3.0) -> list[str]:
        """What appeared since this snapshot and is still there after ``grace`` seconds."""
        deadline = time.monotonic() + grace
        while True:
            gc.collect()
            now = Snapshot(open_fds(), shm_entries(), descendants())
            problems = self._compare(now)
            if not problems or time.monotonic() >= deadline:
                return problems
            time.sleep(0.05)

    def _compare(self, now: Snapshot) -> list[str]:
        problems = []
        new_fds = {
            fd: target
            for fd, target in now.fds.items()
            if self.fds.get(fd) != target
        }
        if new_fds:
            problems.append(f"file descriptors left open: {new_fds}")
        left = sorted(entry for entry in now.shm - self.shm if _ours(entry, now.processes))
        if left:
            problems.append(f"shared memory left behind: {left}")
        new_processes = (now.processes - self.processes) - _helpers(now.processes)
        if new_processes:
            problems.append(f"processes left behind: {sorted(new_processes)}")
        return problems
