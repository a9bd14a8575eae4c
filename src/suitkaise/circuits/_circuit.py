"""Circuit and BreakingCircuit: a store, the pure transitions, and the waiting.

Each public operation is a thin shell: validate ``custom_sleep``, apply the transition
through the store (atomic there), and, if the call tripped, sleep *outside* any lock in the
calling thread. The sync and async shells differ only in how they wait.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias, TypeVar

from .._validation import seconds
from . import _waiting
from ._asyncable import AsyncableMethod
from ._settings import Settings
from ._stores import CircuitStore, LocalStore, StoreFactory
from ._transitions import (
    BROKEN,
    CURRENT_SLEEP,
    TIMES_SHORTED,
    TOTAL_TRIPS,
    Transition,
    breaker_reset,
    breaker_short,
    breaker_trip,
    circuit_short,
    circuit_trip,
    reset_backoff,
)

__all__ = ["AsyncSleepingOperation", "BreakingCircuit", "Circuit", "SleepingOperation"]

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
if TYPE_CHECKING:
    from datetime import timedelta

# A string, so that `import suitkaise` does not import datetime.
Seconds: TypeAlias = "float | timedelta"
_C = TypeVar("_C", bound="_CircuitBase")


class _CircuitBase:
    """What both circuit kinds share: configuration, state reads, waiting, copying."""

    _kind: ClassVar[str]

    _settings: Settings
    _store: CircuitStore
    _apply: Callable[[Transition, Settings, float | None], float | None]
    _read: Callable[[], tuple[int, int, float, bool]]
    _rng: _waiting.RandomSource | None

    def __init__(
        self,
        num_shorts_to_trip: int,
        *,
        sleep_time_after_trip: Seconds = 0.0,
        backoff_factor: float = 1.0,
        max_sleep_time: Seconds = 10.0,
        jitter: float = 0.0,
        rng: _waiting.RandomSource | None = None,
        store: StoreFactory | None = None,
    ) -> None:
        settings = Settings.create(
            num_shorts_to_trip, sleep_time_after_trip, backoff_factor, max_sleep_time, jitter
        )
        if rng is not None and not callable(getattr(rng, "random", None)):
            raise TypeError(
                f"rng must be a random.Random (anything with a random() method), got {rng!r}"
            )
        opened = LocalStore.fresh(settings) if store is None else store.open(self._kind, settings)
        self._attach(settings, opened, rng)

    def _attach(
        self, settings: Settings, store: CircuitStore, rng: _waiting.RandomSource | None
    ) -> None:
        self._settings = settings
        self._store = store
        # Bound once: property reads and resets pay one attribute load, not a method lookup.
        self._apply = store.apply
        self._read = store.read
        self._rng = rng

    @classmethod
    def _from_store(
        cls: type[_C],
        settings: Settings,
        store: CircuitStore,
        rng: _waiting.RandomSource | None = None,
    ) -> _C:
        """A circuit of this class over an existing store (used by copies and shared stores)."""
        circuit = cls.__new__(cls)
        circuit._attach(settings, store, rng)
        return circuit

    def __reduce__(self) -> tuple[Any, ...]:
        # A local store travels as an independent snapshot, a shared store as a handle to
        # the same shared state. copy.copy, copy.deepcopy and pickle all come through here.
        return (
            self._from_store,
            (self._settings, self._store.portable(), self._rng),
        )

    # -- configuration (read-only) ----------------------------------------------------

    @property
    def num_shorts_to_trip(self) -> int:
        """Shorts that trip (Circuit) or break (BreakingCircuit) the circuit."""
        return self._settings.num_shorts_to_trip

    @property
    def sleep_time_after_trip(self) -> float:
        """The first trip's base sleep, in seconds; ``reset_backoff()`` returns to it."""
        return self._settings.sleep_time_after_trip

    @property
    def backoff_factor(self) -> float:
        """Multiplier applied to the sleep after each trip (1.0: constant sleep)."""
        return self._settings.backoff_factor

    @property
    def max_sleep_time(self) -> float:
        """Cap, in seconds, on the backed-off sleep (ignored when ``backoff_factor`` is 1)."""
        return self._settings.max_sleep_time

    @property
    def jitter(self) -> float:
        """Fraction of random spread around each sleep: 0.1 means +/-10%."""
        return self._settings.jitter

    # -- live state ---------------------------------------------------------------------

    @property
    def times_shorted(self) -> int:
        """Shorts counted since the last trip (Circuit) or the last reset (BreakingCircuit)."""
        return self._read()[TIMES_SHORTED]

    @property
    def total_trips(self) -> int:
        """Lifetime number of trips (Circuit) or breaks (BreakingCircuit)."""
        return self._read()[TOTAL_TRIPS]

    @property
    def current_sleep_time(self) -> float:
        """Base sleep, in seconds, that the next trip will use (before jitter)."""
        return self._read()[CURRENT_SLEEP]

    def reset_backoff(self) -> None:
        """Set ``current_sleep_time`` back to ``sleep_time_after_trip``.

        Counters (and a BreakingCircuit's ``broken`` flag) are untouched.
        """
        self._apply(reset_backoff, self._settings, None)

    # -- waiting --------------------------------------------------------------------

    def _duration(self, base: float, custom_sleep: float | None) -> float:
        # A custom sleep is an instruction (say, a server's Retry-After): slept exactly.
        jitter = self._settings.jitter
        if custom_sleep is not None or not jitter or base <= 0.0:
            return base
        return _waiting.jittered(base, jitter, self._rng or _waiting.hooks.rng)

    def _sleep(self, base: float, custom_sleep: float | None) -> None:
        duration = self._duration(base, custom_sleep)
        if duration > 0.0:
            _waiting.hooks.sleep(duration)

    async def _async_sleep(self, base: float, custom_sleep: float | None) -> None:
        duration = self._duration(base, custom_sleep)
        if duration > 0.0:
            await _waiting.hooks.async_sleep(duration)

    def _state_repr(self) -> str:
        shorts, trips, sleep, _ = self._read()
        return (
            f"num_shorts_to_trip={self._settings.num_shorts_to_trip}, times_shorted={shorts}, "
            f"total_trips={trips}, current_sleep_time={sleep!r}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._state_repr()})"


class SleepingOperation(Protocol[R_co]):
    """``circuit.short`` / ``circuit.trip``: call it, or await its ``asynced()`` twin."""

    def __call__(self, custom_sleep: Seconds | None = None) -> R_co: ...

    def asynced(self) -> AsyncSleepingOperation[R_co]:
        """The same operation as a coroutine function (same state change and result); it
        waits with the running event loop's sleep instead of blocking the thread."""
        ...


class AsyncSleepingOperation(Protocol[R_co]):
    """``circuit.short.asynced()``: a coroutine function."""

    def __call__(self, custom_sleep: Seconds | None = None) -> Coroutine[Any, Any, R_co]: ...


def _operation(
    transition: Transition, on_trip: R, otherwise: R, doc: str
) -> AsyncableMethod[SleepingOperation[R]]:
    """The sync and async shells of one sleeping operation around ``transition``.

    They are closures bound per instance (see ``_asyncable``): the hot path reads the store
    and the settings from cells rather than from the instance. Only a call that trips
    reaches the circuit's sleep methods.
    """

    def bind(circuit: _CircuitBase) -> tuple[Callable[..., R], Callable[..., Any]]:
        settings = circuit._settings
        store = circuit._store
        apply = store.apply
        apply_async = store.apply_async

        if type(store) is LocalStore:
            # The library's hot path: LocalStore.apply inlined in both shells (the same
            # optimistic publish, explained there), which saves a Python call per short().

            def sync(custom_sleep: Seconds | None = None) -> R:
                if custom_sleep is not None:
                    custom_sleep = seconds("custom_sleep", custom_sleep)
                current = store._state
                new, base = transition(settings, current, custom_sleep)
                with store._lock:
                    if store._state is current:
                        store._state = new
                    else:
                        store._state, base = transition(settings, store._state, custom_sleep)
                if base is None:
                    return otherwise
                circuit._sleep(base, custom_sleep)
                return on_trip

            async def async_(custom_sleep: Seconds | None = None) -> R:
                if custom_sleep is not None:
                    custom_sleep = seconds("custom_sleep", custom_sleep)
                current = store._state
                new, base = transition(settings, current, custom_sleep)
                with store._lock:
                    if store._state is current:
                        store._state = new
                    else:
                        store._state, base = transition(settings, store._state, custom_sleep)
                if base is None:
                    return otherwise
                await circuit._async_sleep(base, custom_sleep)
                return on_trip

        else:

            def sync(custom_sleep: Seconds | None = None) -> R:
                if custom_sleep is not None:
                    custom_sleep = seconds("custom_sleep", custom_sleep)
                base = apply(transition, settings, custom_sleep)
                if base is None:
                    return otherwise
                circuit._sleep(base, custom_sleep)
                return on_trip

            async def async_(custom_sleep: Seconds | None = None) -> R:
                if custom_sleep is not None:
                    custom_sleep = seconds("custom_sleep", custom_sleep)
                if apply_async is None:
                    base = apply(transition, settings, custom_sleep)
                else:
                    base = await apply_async(transition, settings, custom_sleep)
                if base is None:
                    return otherwise
                await circuit._async_sleep(base, custom_sleep)
                return on_trip

        return sync, async_

    return AsyncableMethod(bind, transition.__name__, doc)


_SLEEP_DOC = """
    ``custom_sleep`` (seconds or a timedelta) replaces this trip's sleep and is slept exactly:
    no jitter, no cap, and the backoff still advances as usual. Otherwise the sleep is
    ``current_sleep_time`` with jitter applied. A sleep of 0 does not sleep. The sleep
    happens in the calling thread, after the state change, outside any lock.

    ``await circuit.{name}.asynced()(...)`` does the same and waits with the running event
    loop's sleep (asyncio or trio).
"""


class Circuit(_CircuitBase):
    """Counts failures; after ``num_shorts_to_trip`` of them it sleeps, then resets itself.

    Args:
        num_shorts_to_trip: failures that trip the circuit (an int >= 1).
        sleep_time_after_trip: base sleep of the first trip, in seconds (or a timedelta).
        backoff_factor: each trip multiplies the next trip's sleep by this (>= 1.0).
        max_sleep_time: cap on the backed-off sleep, in seconds (or a timedelta).
        jitter: random spread of each sleep as a fraction; 0.1 means +/-10%.
        rng: random source for the jitter (a ``random.Random``); default: the ``random``
            module's generator.
        store: where the state lives; default: in this process. A ``RedisStore`` shares
            one circuit between machines.

    Raises:
        TypeError, ValueError: an argument is out of range; the message says which.

    Thread-safe: every state change is atomic; only the call that trips sleeps.
    """

    _kind = "Circuit"

    short = _operation(
        circuit_short,
        True,
        False,
        """Count one failure; trip when ``times_shorted`` reaches ``num_shorts_to_trip``.

    A trip sets ``times_shorted`` to 0, adds one to ``total_trips``, sleeps, and advances the
    backoff: ``current_sleep_time = min(current_sleep_time * backoff_factor,
    max_sleep_time)``. Returns ``True`` exactly when this call tripped (even if the sleep
    is 0), ``False`` otherwise.
"""
        + _SLEEP_DOC.format(name="short"),
    )
    trip = _operation(
        circuit_trip,
        True,
        True,
        """Trip now, bypassing the counter: the same effects as a tripping ``short()``.

    Returns ``True``.
"""
        + _SLEEP_DOC.format(name="trip"),
    )


class BreakingCircuit(_CircuitBase):
    """Counts failures; after ``num_shorts_to_trip`` of them it breaks and stays broken
    until ``reset()``. Every thread (or process, through a Share) sees ``broken``.

    The breaking call sleeps once (``current_sleep_time`` with jitter); each break that a
    ``reset()`` ends makes the next break's sleep longer by ``backoff_factor``, up to
    ``max_sleep_time``. Arguments and errors are those of :class:`Circuit`.
    """

    _kind = "BreakingCircuit"

    short = _operation(
        breaker_short,
        None,
        None,
        """Count one failure; break when ``times_shorted`` reaches ``num_shorts_to_trip``.

    Breaking sets ``broken``, adds one to ``total_trips`` and sleeps. On a circuit that is
    already broken it only counts (``times_shorted`` keeps growing) and does not sleep.
"""
        + _SLEEP_DOC.format(name="short"),
    )
    trip = _operation(
        breaker_trip,
        None,
        None,
        """Break now, bypassing the counter, and sleep. Does nothing if already broken.
"""
        + _SLEEP_DOC.format(name="trip"),
    )

    @property
    def broken(self) -> bool:
        """``True`` from the break until ``reset()``."""
        return self._read()[BROKEN]

    def reset(self) -> None:
        """Mend the circuit: ``broken = False`` and ``times_shorted = 0``.

        If this reset ended a break, the backoff advances, so the next break sleeps longer.
        Resetting a circuit that is not broken changes nothing else, so defensive resets
        never make the sleep snowball. ``reset_backoff()`` undoes the growth.
        """
        self._apply(breaker_reset, self._settings, None)

    def __repr__(self) -> str:
        return f"BreakingCircuit({self._state_repr()}, broken={self.broken})"

