"""The Share's shared memory: a version word for the name table, and one slot per circuit.

A file in the Share's private directory is mapped by every process that has the Share.
Layout, in 8-byte words (little-endian, aligned):

- word 0: magic; word 1: version of the name table (bumped by the coordinator whenever a
  name is assigned, deleted, or an immutable value changes); word 2: the coordinator's
  heartbeat (a double, ``time.monotonic()``, which is system-wide); word 3: the generation,
  bumped by each (re)start of the coordinator; word 4: 1 while the coordinator is serving
  several clients at once (they then sleep rather than spin for replies, see ``_wire``);
  word 5: the running coordinator's pid (0 while none runs: how a waiting client tells a
  frozen or dead coordinator from a slow one); word 6: the next circuit slot to hand out
  (kept here, not in the coordinator, so that a restart never hands out a slot again);
  word 7: the coordinator's start time (clock ticks since boot; with the pid, it tells the
  coordinator from a later process that got the same pid).
- from word 8, one slot of 16 words per circuit: ``active`` (0 or 1), then two copies of
  the state, each ``seq, times_shorted, total_trips, current_sleep_time (double), broken``.

Writers hold two locks: a ``threading.Lock`` (threads of one process) and a POSIX record
lock on the slot's bytes (processes). The kernel drops a record lock when its process dies,
so a writer killed mid-update blocks nobody. Writers write the *inactive* copy and then flip
``active`` with one aligned store; a writer that dies half-way leaves only the inactive copy
torn, and readers never look at it. Readers take no lock: they read the active copy and
retry if its ``seq`` changed or is odd (a later writer rewriting it), so a reader never
waits on a dead writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading
import weakref
from typing import Any

from ...circuits import Settings
from ...circuits._transitions import State, Transition

__all__ = [
    "COORDINATOR_WORD",
    "CROWDED_WORD",
    "GENERATION_WORD",
    "HEARTBEAT_WORD",
    "NEXT_SLOT_WORD",
    "START_WORD",
    "VERSION_WORD",
    "Segment",
    "SharedCircuitStore",
    "segment_at",
]

MAGIC = 0x5355_4954_4B41_4953  # "SUITKAIS"
HEADER_WORDS = 8
SLOT_WORDS = 16
COPY_WORDS = 5
VERSION_WORD = 1
HEARTBEAT_WORD = 2  # a double: the coordinator's time.monotonic(), refreshed every 0.1 s
GENERATION_WORD = 3  # bumped at each (re)start: connections made earlier are stale
CROWDED_WORD = 4  # 1 while several clients call the coordinator at once
COORDINATOR_WORD = 5  # the coordinator's pid, 0 while none runs
NEXT_SLOT_WORD = 6  # the next circuit slot to hand out (never reused, across restarts too)
START_WORD = 7  # the coordinator's start time, in clock ticks since boot (0: unknown)


def segment_size(slots: int) -> int:
    """Bytes needed for a segment with room for ``slots`` circuits."""
    return (HEADER_WORDS + slots * SLOT_WORDS) * 8


def _unmap(fd: int, mapped: mmap.mmap, views: tuple[memoryview[Any], ...]) -> None:
    # Everything that used these views held the Segment, which is gone: nobody uses them.
    for view in views:
        view.release()
    with contextlib.suppress(BufferError, ValueError):
        mapped.close()
    with contextlib.suppress(OSError):
        os.close(fd)


class Segment:
    """One process's mapping of a Share's shared memory file.

    Its file descriptor and mapping are closed when the last object using it (a Share link,
    a circuit's store, the coordinator) is gone, or by ``close()``. Whoever keeps ``words``
    or ``doubles`` keeps the Segment too.
    """


    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._map = mmap.mmap(self.fd, 0)
        except BaseException:
            os.close(self.fd)
            raise
        self.words = memoryview(self._map).cast("q")
        self.doubles = memoryview(self._map).cast("d")
        self._closer = weakref.finalize(
            self, _unmap, self.fd, self._map, (self.words, self.doubles)
        )
        self.slots = (len(self.words) - HEADER_WORDS) // SLOT_WORDS
        self._pid = os.getpid()
        self._thread_locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @staticmethod
    def create(path: str, slots: int) -> None:
        """Create the file, zero-filled, with the magic word set."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, segment_size(slots))
            with mmap.mmap(fd, 0) as mapped:
                memoryview(mapped).cast("q")[0] = MAGIC
        finally:
            os.close(fd)

    def bump_version(self) -> int:
        """Called by the coordinator only (it serialises all name-table changes); returns
        the new version."""
        version = self.words[VERSION_WORD] + 1
        self.words[VERSION_WORD] = version
        return version

    def thread_lock(self, slot: int) -> threading.Lock:
        if self._pid != os.getpid():
            # A forked child: the parent's threads (and their locks) are not here.
            self._pid = os.getpid()
            self._thread_locks = {}
            self._locks_guard = threading.Lock()
        lock = self._thread_locks.get(slot)
        if lock is None:
            with self._locks_guard:
                lock = self._thread_locks.setdefault(slot, threading.Lock())
        return lock

    # -- circuit slots ----------------------------------------------------------------

    def write_slot(self, slot: int, state: State) -> None:
        """Initialise a slot (the coordinator does this before anyone can see it)."""
        base = HEADER_WORDS + slot * SLOT_WORDS
        self.words[base] = 0
        self._write_copy(base + 1, state)

    def _write_copy(self, copy: int, state: State) -> None:
        words = self.words
        seq = words[copy]
        seq += seq & 1  # a writer that died mid-copy left it odd: start from even
        words[copy] = seq + 1
        shorts, trips, sleep, broken = state
        words[copy + 1] = shorts
        words[copy + 2] = trips
        self.doubles[copy + 3] = sleep
        words[copy + 4] = 1 if broken else 0
        words[copy] = seq + 2

    def apply(
        self, slot: int, transition: Transition, settings: Settings, custom_sleep: float | None
    ) -> float | None:
        base = HEADER_WORDS + slot * SLOT_WORDS
        offset = base * 8
        with self.thread_lock(slot):
            fcntl.lockf(self.fd, fcntl.LOCK_EX, SLOT_WORDS * 8, offset)
            try:
                words = self.words
                active = words[base]
                source = base + 1 + active * COPY_WORDS
                current = (
                    words[source + 1],
                    words[source + 2],
                    self.doubles[source + 3],
                    words[source + 4] != 0,
                )
                new, sleep = transition(settings, current, custom_sleep)
                if new != current:
                    self._write_copy(base + 1 + (1 - active) * COPY_WORDS, new)
                    words[base] = 1 - active
            finally:
                fcntl.lockf(self.fd, fcntl.LOCK_UN, SLOT_WORDS * 8, offset)
        return sleep

    def close(self) -> None:
        """Unmap and close now (only when nothing else of this process uses it)."""
        self._closer()


# Weak: a mapping lives while something of this process uses it, and no longer.
_segments: weakref.WeakValueDictionary[str, Segment] = weakref.WeakValueDictionary()
_segments_guard = threading.Lock()


def _after_fork() -> None:
    global _segments_guard
    _segments_guard = threading.Lock()  # a parent's thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def segment_at(path: str) -> Segment:
    """This process's mapping of ``path`` (one per process, shared by every store)."""
    segment = _segments.get(path)
    if segment is None:
        # One mapping per file and process: two would each hold a descriptor, and closing
        # either drops every record lock this process holds on the file (POSIX).
        with _segments_guard:
            segment = _segments.get(path)
            if segment is None:
                segment = _segments[path] = Segment(path)
    return segment


class SharedCircuitStore:
    """A circuit store in a Share's shared memory: the same state for every process."""

    __slots__ = ("_base", "_doubles", "_path", "_segment", "_slot", "_words")

    apply_async = None  # a lock and a few memory words: nothing worth awaiting

    def __init__(self, path: str, slot: int) -> None:
        self._path = path
        self._slot = slot
        self._segment = segment_at(path)
        self._words = self._segment.words
        self._doubles = self._segment.doubles
        self._base = HEADER_WORDS + slot * SLOT_WORDS

    def apply(
        self, transition: Transition, settings: Settings, custom_sleep: float | None
    ) -> float | None:
        return self._segment.apply(self._slot, transition, settings, custom_sleep)

    def read(self) -> State:
        # Straight from the mapped words, no Segment call: `share.circuit.broken` is read in
        # tight loops.
        words, doubles, base = self._words, self._doubles, self._base
        while True:
            copy = base + 1 + words[base] * COPY_WORDS
            seq = words[copy]
            state = (words[copy + 1], words[copy + 2], doubles[copy + 3], words[copy + 4] != 0)
            if not seq & 1 and words[copy] == seq:
                return state

    def portable(self) -> SharedCircuitStore:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (SharedCircuitStore, (self._path, self._slot))

    def __repr__(self) -> str:
        return f"SharedCircuitStore(slot={self._slot})"
