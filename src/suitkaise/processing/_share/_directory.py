"""A Share's private directory: its name, and sweeping the ones their processes left behind.

The directory (mode 0700, under ``/dev/shm`` when there is one) holds the coordinator's
socket and the shared memory file. Its owner removes it when the Share is collected or the
owner exits, and the coordinator removes it when the owner dies first. Only when both are
killed at once (the OOM killer can do that) is nobody left to do it; so every new Share's
coordinator sweeps, soon after it starts, the directories whose owner and coordinator are
both dead.

A process is identified by its pid and its start time (``/proc/PID/stat``, in clock ticks
since boot), so a pid reused by another process does not pass for the one that made the
directory. The owner's identity is in the directory's name
(``suitkaise-share-PID-START-RANDOM``); the coordinator writes its own to a file
(``coordinator``) when it starts. Directories whose name does not say who made them, that
belong to another user, or that cannot be removed are left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile

__all__ = [
    "PREFIX",
    "alive",
    "create",
    "identity",
    "process_state",
    "record_coordinator",
    "sweep",
]

PREFIX = "suitkaise-share-"
COORDINATOR_FILE = "coordinator"


def base() -> str | None:
    """Where Share directories go: tmpfs when there is one, so that the memory file never
    touches a disk; otherwise the system's temporary directory."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            data = stat_file.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return data.rsplit(b")", 1)[1].decode("ascii", "replace").split()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_state(pid: int) -> tuple[str, int] | None:
    """``(state, start time)`` of process ``pid``, or ``None`` if there is no such process.

    ``state`` is the letter of ``/proc/PID/stat`` (``R``, ``S``, ``D``, ``T`` stopped,
    ``t`` traced, ``Z`` zombie, ...) and the start time is in clock ticks since boot.
    Without ``/proc``: ``("?", 0)`` for a process that exists.
    """
    if pid <= 0:
        return None
    fields = _stat_fields(pid)
    if fields is None:
        if os.path.isdir("/proc/self"):
            return None  # /proc works, and has no such process
        return ("?", 0) if _exists(pid) else None
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return ("?", 0)


_mine: tuple[int, int] = (0, 0)


def identity(pid: int | None = None) -> tuple[int, int]:
    """``(pid, start time)`` of this process (or of ``pid``); start time 0 where unknown."""
    global _mine
    if pid is None:
        if _mine[0] == os.getpid():
            return _mine
        pid = os.getpid()
        state = process_state(pid)
        _mine = (pid, state[1] if state is not None else 0)
        return _mine
    state = process_state(pid)
    return pid, (state[1] if state is not None else 0)


def alive(pid: int, start: int) -> bool:
    """Is the process that had ``pid`` and started at ``start`` (0: unknown) still there?
    A zombie is not; a process with the same pid but another start time is another one."""
    state = process_state(pid)
    if state is None or state[0] in ("Z", "X", "x"):
        return False
    return not (start and state[1] and state[1] != start)


def create() -> str:
    """A new private directory (0700) named after this process."""
    pid, start = identity()
    return tempfile.mkdtemp(prefix=f"{PREFIX}{pid}-{start}-", dir=base())


def record_coordinator(directory: str) -> None:
    """Write this process's identity into ``directory`` as its coordinator (atomically)."""
    pid, start = identity()
    temporary = os.path.join(directory, f".{COORDINATOR_FILE}.{pid}")
    with contextlib.suppress(OSError):
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "w") as out:
            out.write(f"{pid} {start}\n")
        os.replace(temporary, os.path.join(directory, COORDINATOR_FILE))


def _owner_of(name: str) -> tuple[int, int] | None:
    parts = name[len(PREFIX) :].split("-")
    if len(parts) != 3:
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return None


def _coordinator_of(directory: str) -> tuple[int, int] | None:
    try:
        with open(os.path.join(directory, COORDINATOR_FILE)) as recorded:
            pid, start = recorded.read().split()
        return int(pid), int(start)
    except (OSError, ValueError):
        return None


def sweep(where: str | None = None) -> list[str]:
    """Remove the Share directories whose owner and coordinator are both dead; returns
    the ones removed. Never raises."""
    folder = where if where is not None else (base() or tempfile.gettempdir())
    removed: list[str] = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    me = os.getuid() if hasattr(os, "getuid") else None
    for name in entries:
        if not name.startswith(PREFIX):
            continue
        owner = _owner_of(name)
        if owner is None or alive(*owner):
            continue
        path = os.path.join(folder, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or (me is not None and info.st_uid != me):
            continue
        coordinator = _coordinator_of(path)
        if coordinator is not None and alive(*coordinator):
            continue  # it notices its owner's death at once, and removes the directory
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append(path)
    return removed
