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
when the ``with`` block ends, even on error. Blocks nest; the inner one records.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from . import _waiting

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


@contextmanager
def recorded_sleeps(seed: int | None = None) -> Iterator[SleepLog]:
    """Within the block, circuits do not sleep; they record what they would have slept.

    Args:
        seed: if given, jitter for circuits built without their own ``rng`` is drawn from
            ``random.Random(seed)``, so the recorded durations are reproducible.

    Async calls still yield to the event loop once (a zero-length sleep) where they would
    have slept, so concurrent tasks interleave as they would for real.
    """
    log = SleepLog()
    saved = (_waiting.hooks.sleep, _waiting.hooks.async_sleep, _waiting.hooks.rng)

    async def async_record(seconds: float) -> None:
        log._record(seconds)
        await _waiting.real_async_sleep(0)

    _waiting.hooks.sleep = log._record
    _waiting.hooks.async_sleep = async_record
    if seed is not None:
        _waiting.hooks.rng = random.Random(seed)
    try:
        yield log
    finally:
        _waiting.hooks.sleep, _waiting.hooks.async_sleep, _waiting.hooks.rng = saved
