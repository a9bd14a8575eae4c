"""Helpers for your own test suite: circuits that record their sleeps instead of sleeping.

>>> from suitkaise import Circuit
>>> from suitkaise.circuits.testing import recorded_sleeps
>>> circuit = Circuit(2, sleep_time_after_trip=1.0, backoff_factor=2.0, max_sleep_time=30.0)
>>> with recorded_sleeps() as sleeps:
...     for _ in range(6):
...         _ = circuit.short()
>>> sleeps.durations
[1.0, 2.0, 4.0]

The switch is process-wide (every circuit, every thread, sync and async) and is undone
when the last ``with`` block ends, even on error. Blocks nest (the inner one records) and
may overlap across threads (each thread records in its own block).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from . import _waiting

T = TypeVar("T")

__all__ = ["SleepLog", "recorded_sleeps"]


class SleepLog:
    """The sleeps circuits would have taken, in seconds, in the order they were taken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._durations: list[float] = []

    def _record(self, seconds: float) -> None:
        with self._lock:
            self._durations.append(seconds)

    @property
    def durations(self) -> list[float]:
        """A copy of the recorded durations (seconds). Sleeps of 0 are never recorded,
        because a circuit never sleeps for 0."""
        with self._lock:
            return list(self._durations)

    @property
    def total(self) -> float:
        """Sum of the recorded durations, in seconds."""
        return sum(self.durations)

    def clear(self) -> None:
        """Forget what was recorded so far."""
        with self._lock:
            self._durations.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._durations)

    def __repr__(self) -> str:
        return f"SleepLog({self.durations!r})"


class _Blocks(Generic[T]):
    """The ``with`` blocks of one testing switch that are open right now, in any thread.

    The block that applies to a thread is the innermost one that thread opened itself, or,
    for a thread that opened none (a worker the test started), the innermost one opened by
    any thread. Blocks may close in any order; the switch is off once none is open.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[tuple[int, T]] = []

    def open(self, item: T) -> bool:
        """Add ``item`` for the calling thread; ``True`` if it is the first open block."""
        with self._lock:
            self._open.append((threading.get_ident(), item))
            return len(self._open) == 1

    def close(self, item: T) -> bool:
        """Remove ``item``; ``True`` if no block is left open."""
        with self._lock:
            self._open = [entry for entry in self._open if entry[1] is not item]
            return not self._open

    def current(self) -> T | None:
        """The block that applies to the calling thread, or ``None``."""
        blocks = self._open  # replaced, never mutated in place: a consistent list
        if not blocks:
            return None
        me = threading.get_ident()
        for thread, item in reversed(blocks):
            if thread == me:
                return item
        return blocks[-1][1]


class _Recording:
    __slots__ = ("log", "rng")

    def __init__(self, log: SleepLog, rng: _waiting.RandomSource | None) -> None:
        self.log = log
        self.rng = rng


_recordings: _Blocks[_Recording] = _Blocks()
# What the hooks held before the first recorded_sleeps() block opened.
_saved: tuple[Any, ...] = ()


def _record_sleep(seconds: float) -> None:
    recording = _recordings.current()
    if recording is None:  # the last block closed while this sleep was on its way
        time.sleep(seconds)
        return
    recording.log._record(seconds)


async def _record_async_sleep(seconds: float) -> None:
    recording = _recordings.current()
    if recording is None:
        await _waiting.real_async_sleep(seconds)
        return
    recording.log._record(seconds)
    # Yield once, as a real sleep would, so that concurrent tasks interleave.
    await _waiting.real_async_sleep(0)


class _RecordingRandom:
    """The jitter source while a block is open: the block's seeded generator, if it has one."""

    def random(self) -> float:
        recording = _recordings.current()
        if recording is not None and recording.rng is not None:
            return recording.rng.random()
        fallback: _waiting.RandomSource = _saved[2] if _saved else random
        return fallback.random()


@contextmanager
def recorded_sleeps(seed: int | None = None) -> Iterator[SleepLog]:
    """Within the block, circuits do not sleep; they record what they would have slept.

    Args:
        seed: if given, jitter for circuits built without their own ``rng`` is drawn from
            ``random.Random(seed)``, so the recorded durations are reproducible.

    Async calls still yield to the event loop once (a zero-length sleep) where they would
    have slept, so concurrent tasks interleave as they would for real.

    Safe from several threads: blocks may overlap and close in any order. A sleep is
    recorded in the innermost block its own thread opened, or, in a thread that opened
    none, in the innermost block any thread opened. Real sleeping comes back when the last
    block closes.
    """
    global _saved
    recording = _Recording(SleepLog(), None if seed is None else random.Random(seed))
    with _switch_lock:
        if _recordings.open(recording):
            hooks = _waiting.hooks
            _saved = (hooks.sleep, hooks.async_sleep, hooks.rng)
            hooks.sleep = _record_sleep
            hooks.async_sleep = _record_async_sleep
            hooks.rng = _RecordingRandom()
    try:
        yield recording.log
    finally:
        with _switch_lock:
            if _recordings.close(recording):
                _waiting.hooks.sleep, _waiting.hooks.async_sleep, _waiting.hooks.rng = _saved
                _saved = ()


# Held while a switch turns on or off, so that a block opening in one thread and the last
# block closing in another cannot interleave.
_switch_lock = threading.Lock()
