"""Pure state transitions: the only place where circuit behaviour is decided.

A state is a plain tuple ``(times_shorted, total_trips, current_sleep_time, broken)``;
plain tuples keep the hot path cheap (a NamedTuple costs a Python-level ``__new__``).
Every transition has the signature ``(settings, state, custom_sleep) -> (new_state, sleep)``
where ``sleep`` is ``None`` when the call did not trip, or else the base sleep in seconds
(``custom_sleep`` when given, otherwise the circuit's current sleep time), before jitter.

These functions never lock, sleep, read a clock or do I/O. Every store applies them
atomically, unchanged, and the Redis store's Lua script mirrors them line by line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias

from ._settings import Settings

__all__ = [
    "BROKEN",
    "CURRENT_SLEEP",
    "TIMES_SHORTED",
    "TOTAL_TRIPS",
    "State",
    "Transition",
    "breaker_reset",
    "breaker_short",
    "breaker_trip",
    "circuit_short",
    "circuit_trip",
    "initial_state",
    "reset_backoff",
]

State: TypeAlias = "tuple[int, int, float, bool]"
"""``(times_shorted, total_trips, current_sleep_time, broken)``."""

Transition: TypeAlias = "Callable[[Settings, State, float | None], tuple[State, float | None]]"

# Positions in a State, for readers (transitions unpack the tuple instead).
TIMES_SHORTED: Final = 0
TOTAL_TRIPS: Final = 1
CURRENT_SLEEP: Final = 2
BROKEN: Final = 3


def initial_state(settings: Settings) -> State:
    """The state of a fresh circuit: no shorts, no trips, the configured first sleep."""
    return (0, 0, settings.sleep_time_after_trip, False)


def _advance(settings: Settings, sleep: float) -> float:
    # With a factor of 1 the cap is irrelevant: Circuit(100, sleep_time_after_trip=60.0)
    # keeps sleeping 60 s even though the default cap is 10 s.
    if settings.backoff_factor == 1.0:
        return sleep
    return min(sleep * settings.backoff_factor, settings.max_sleep_time)


def circuit_short(
    settings: Settings, state: State, custom_sleep: float | None
) -> tuple[State, float | None]:
    """Count one failure on an auto-resetting circuit; trip when the threshold is reached."""
    shorts, trips, sleep, broken = state
    shorts += 1
    if shorts < settings.num_shorts_to_trip:
        return (shorts, trips, sleep, broken), None
    return circuit_trip(settings, state, custom_sleep)


def circuit_trip(
    settings: Settings, state: State, custom_sleep: float | None
) -> tuple[State, float | None]:
    """Trip an auto-resetting circuit now: clear the counter, count the trip, advance backoff."""
    _, trips, sleep, broken = state
    base = sleep if custom_sleep is None else custom_sleep
    return (0, trips + 1, _advance(settings, sleep), broken), base


def breaker_short(
    settings: Settings, state: State, custom_sleep: float | None
) -> tuple[State, float | None]:
    """Count one failure on a breaking circuit; break when the threshold is reached.

    A broken circuit only counts: it does not break again and nobody sleeps.
    """
    shorts, trips, sleep, broken = state
    shorts += 1
    if broken or shorts < settings.num_shorts_to_trip:
        return (shorts, trips, sleep, broken), None
    return (shorts, trips + 1, sleep, True), (sleep if custom_sleep is None else custom_sleep)


def breaker_trip(
    settings: Settings, state: State, custom_sleep: float | None
) -> tuple[State, float | None]:
    """Break now, bypassing the counter. Does nothing on a circuit that is already broken."""
    shorts, trips, sleep, broken = state
    if broken:
        return state, None
    return (shorts, trips + 1, sleep, True), (sleep if custom_sleep is None else custom_sleep)


def breaker_reset(
    settings: Settings, state: State, custom_sleep: float | None = None
) -> tuple[State, float | None]:
    """Mend a breaking circuit. Advance the backoff only if this reset ended a break."""
    _, trips, sleep, broken = state
    return (0, trips, _advance(settings, sleep) if broken else sleep, False), None


def reset_backoff(
    settings: Settings, state: State, custom_sleep: float | None = None
) -> tuple[State, float | None]:
    """Put the current sleep back to ``sleep_time_after_trip``; counters and flag untouched."""
    shorts, trips, _, broken = state
    return (shorts, trips, settings.sleep_time_after_trip, broken), None

