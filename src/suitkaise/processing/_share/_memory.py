"""The Share's shared memory: a version word for the name table, and one slot per circuit.

A file in the Share's private directory is mapped by every process that has the Share.
Layout, in 8-byte words (little-endian, aligned):

- word 0: magic; word 1: version of the name table (bumped by the coordinator whenever a
  name is assigned, deleted, or an immutable value changes); word 2: the coordinator's
  heartbeat (a double, ``time.monotonic()``, which is system-wide); word 3: the generation,
  bumped by each (re)start of the coordinator; word 4: 1 while the coordinator is serving
  several clients at once (they then sleep rather than spin for replies, see ``_wire``);
  words 5-7: reserved.
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

import fcntl
import mmap
import os
import threading
from typing import Any

from ...circuits import Settings
from ...circuits._transitions import State, Transition

__all__ = [
    "CROWDED_WORD",
    "GENERATION_WORD",
    "HEARTBEAT_WORD",
    "VERSION_WORD",
    "Segment",
    "SharedCircuitStore",
    "forget_segment",
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


def segment_size(slots: int) -> int:
    """Bytes needed for a segment with room for ``slots`` circuits."""
    return (HEADER_WORDS + slots * SLOT_WORDS) * 8


class Segment:
    """One process's mapping of a Share's shared memory file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._map = mmap.mmap(self.fd, 0)
        self.words = memoryview(self._map).cast("q")
        self.doubles = memoryview(self._map).cast("d")
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
        self.words.release()
        self.doubles.release()
        self._map.close()
        os.close(self.fd)


_segments: dict[str, Segment] = {}


def segment_at(path: str) -> Segment:
    """This process's mapping of ``path`` (one per process, shared by every store)."""
    segment = _segments.get(path)
    if segment is None:
        # No lock held while mapping: a garbage collection during the mapping can run a
        # Share's finalizer, which calls forget_segment() in this very thread. setdefault
        # is atomic, so two threads racing here agree on one mapping.
        mapped = Segment(path)
        segment = _segments.setdefault(path, mapped)
        if segment is not mapped:
            mapped.close()
    return segment


def forget_segment(path: str) -> None:
    """Forget this process's mapping of ``path`` (its Share is gone). The mapping itself
    goes when nothing uses it any more: a circuit read from the Share may outlive it."""
    _segments.pop(path, None)


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
