"""One set of circuit behaviour tests (a representative subset of SPEC section 1), run against
every place a circuit's state can live.

Each store is a ``Store``: a factory ``make(kind, **config)`` that returns a circuit of class
``kind`` ("Circuit" or "BreakingCircuit") built with ``config`` and kept in that store, and
``shared``: whether a pickled or copied circuit keeps working on the same state (a shared
store) or is an independent snapshot (the in-process store).

- ``local``: a plain circuit (in-process ``LocalStore``).
- ``share``: ``share.c = Circuit(...); c = share.c`` on a module-scoped ``Share``.
- ``redis``: ``Circuit(..., store=RedisStore(url, name))`` on the session's private
  redis-server (the ``redis_url`` fixture, emptied for each test), a new name for every
  circuit. Like the share store, it is shared: a pickled or copied circuit is a handle to the
  same state on the server.

To add a store, write its ``make`` and add a branch to the ``store`` fixture.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import pickle
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from suitkaise import BreakingCircuit, Circuit
from suitkaise.circuits.testing import recorded_sleeps

CLASSES: dict[str, type[Any]] = {"Circuit": Circuit, "BreakingCircuit": BreakingCircuit}


@dataclass(frozen=True)
class Store:
    name: str
    make: Callable[..., Any]
    shared: bool


def make_local(kind: str, **config: Any) -> Any:
    return CLASSES[kind](**config)


def share_maker(share: Any) -> Callable[..., Any]:
    names = itertools.count()

    def make(kind: str, **config: Any) -> Any:
        name = f"c{next(names)}"
        setattr(share, name, CLASSES[kind](**config))
        return getattr(share, name)

    return make


def redis_maker(url: str, test: str) -> Callable[..., Any]:
    from suitkaise.circuits.redis import RedisStore

    names = itertools.count()

    def make(kind: str, **config: Any) -> Any:
        return CLASSES[kind](**config, store=RedisStore(url, f"{test}-{next(names)}"))

    return make


@pytest.fixture(scope="module")
def module_share() -> Iterator[Any]:
    from suitkaise.processing import Share

    share = Share()
    try:
        yield share
    finally:
        share.stop()


@pytest.fixture(params=["local", "share", "redis"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "local":
        return Store("local", make_local, shared=False)
    if request.param == "share":
        return Store("share", share_maker(request.getfixturevalue("module_share")), shared=True)
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return Store("redis", redis_maker(url, request.node.name), shared=True)
    raise AssertionError(request.param)


def state(circuit: Any) -> tuple[Any, ...]:
    return (
        circuit.times_shorted,
        circuit.total_trips,
        circuit.current_sleep_time,
        getattr(circuit, "broken", None),
    )


# -- tripping and return values --------------------------------------------------------


def test_circuit_trips_at_the_threshold_and_returns_true_only_then(store: Store) -> None:
    circuit = store.make("Circuit", num_shorts_to_trip=3)
    assert type(circuit) is Circuit
    returns = [circuit.short() for _ in range(7)]
    assert returns == [False, False, True, False, False, True, False]
    assert circuit.times_shorted == 1
    assert circuit.total_trips == 2


def test_circuit_trip_bypasses_the_counter(store: Store) -> None:
    circuit = store.make("Circuit", num_shorts_to_trip=5)
    circuit.short()
    circuit.short()
    assert circuit.trip() is True
    assert circuit.times_shorted == 0
    assert circuit.total_trips == 1


def test_breaker_breaks_at_the_threshold_and_returns_none(store: Store) -> None:
    breaker = store.make("BreakingCircuit", num_shorts_to_trip=3)
    assert type(breaker) is BreakingCircuit
    assert breaker.short() is None
    assert breaker.short() is None
    assert breaker.broken is False
    assert breaker.short() is None
    assert breaker.broken is True
    assert breaker.total_trips == 1
    assert breaker.times_shorted == 3


def test_breaker_counts_while_broken_and_breaks_again_only_after_reset(store: Store) -> None:
    breaker = store.make(
        "BreakingCircuit",
        num_shorts_to_trip=2,
        sleep_time_after_trip=1.0,
        backoff_factor=2.0,
        max_sleep_time=30.0,
    )
    with recorded_sleeps() as sleeps:
        breaker.short()
        breaker.short()
        assert breaker.broken and sleeps.durations == [1.0]
        for expected in (3, 4, 5):  # broken: only counts, never sleeps or re-breaks
            breaker.short()
            assert breaker.times_shorted == expected
        assert breaker.trip() is None  # already broken: does nothing
        assert breaker.total_trips == 1 and sleeps.durations == [1.0]
        assert breaker.current_sleep_time == 1.0

        breaker.reset()  # ends a break: the backoff advances
        assert breaker.broken is False and breaker.times_shorted == 0
        assert breaker.current_sleep_time == 2.0
        breaker.reset()  # a defensive reset changes nothing
        breaker.reset()
        assert breaker.current_sleep_time == 2.0

        breaker.short()
        breaker.short()
        assert breaker.broken and breaker.total_trips == 2
        breaker.reset()
        breaker.trip()
        assert breaker.broken and breaker.total_trips == 3
        assert sleeps.durations == [1.0, 2.0, 4.0]


# -- sleeping ----------------------------------------------------------------------------


def test_backoff_sequence(store: Store) -> None:
    circuit = store.make(
        "Circuit",
        num_shorts_to_trip=2,
        sleep_time_after_trip=1.0,
        backoff_factor=2.0,
        max_sleep_time=30.0,
    )
    with recorded_sleeps() as sleeps:
        for _ in range(16):
            circuit.short()
    assert sleeps.durations == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert circuit.current_sleep_time == 30.0
    assert circuit.total_trips == 8


def test_a_zero_sleep_never_sleeps(store: Store) -> None:
    circuit = store.make("Circuit", num_shorts_to_trip=1)
    with recorded_sleeps() as sleeps:
        assert circuit.short() is True
        assert circuit.trip() is True
    assert sleeps.durations == []
    assert circuit.total_trips == 2


def test_custom_sleep_is_slept_exactly_and_the_backoff_still_advances(store: Store) -> None:
    circuit = store.make(
        "Circuit",
        num_shorts_to_trip=1,
        sleep_time_after_trip=1.0,
        backoff_factor=2.0,
        max_sleep_time=4.0,
        jitter=0.5,
    )
    breaker = store.make("BreakingCircuit", num_shorts_to_trip=5, max_sleep_time=1.0)
    with recorded_sleeps(seed=3) as sleeps:
        assert circuit.short(custom_sleep=7.25) is True  # no jitter, no cap
        assert circuit.trip(custom_sleep=timedelta(milliseconds=1500)) is True
        breaker.trip(custom_sleep=100.0)
    assert sleeps.durations == [7.25, 1.5, 100.0]
    assert circuit.current_sleep_time == 4.0  # 1 -> 2 -> 4 (capped)
    assert breaker.broken and breaker.total_trips == 1


def test_jitter_stays_within_its_bounds(store: Store) -> None:
    circuit = store.make("Circuit", num_shorts_to_trip=1, sleep_time_after_trip=10.0, jitter=0.2)
    with recorded_sleeps(seed=7) as sleeps:
        for _ in range(50):
            circuit.short()
    durations = sleeps.durations
    assert len(durations) == 50
    assert all(8.0 <= d <= 12.0 for d in durations)
    assert len(set(durations)) > 1
    assert circuit.current_sleep_time == 10.0


def test_reset_backoff_restores_the_first_sleep_and_leaves_counters(store: Store) -> None:
    circuit = store.make(
        "Circuit", num_shorts_to_trip=2, sleep_time_after_trip=1.0, backoff_factor=2.0
    )
    breaker = store.make(
        "BreakingCircuit", num_shorts_to_trip=1, sleep_time_after_trip=1.0, backoff_factor=3.0
    )
    with recorded_sleeps() as sleeps:
        for _ in range(7):
            circuit.short()
        breaker.short()
        breaker.reset()
        breaker.short()
        assert circuit.current_sleep_time == 8.0 and breaker.current_sleep_time == 3.0
        circuit.reset_backoff()
        breaker.reset_backoff()
        assert state(circuit) == (1, 3, 1.0, None)
        assert state(breaker) == (1, 2, 1.0, True)  # still broken
        circuit.short()
        assert sleeps.durations == [1.0, 2.0, 4.0, 1.0, 3.0, 1.0]


# -- state and configuration -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["Circuit", "BreakingCircuit"])
def test_properties(store: Store, kind: str) -> None:
    circuit = store.make(
        kind,
        num_shorts_to_trip=4,
        sleep_time_after_trip=timedelta(seconds=2),
        backoff_factor=1.5,
        max_sleep_time=timedelta(minutes=1),
        jitter=0.1,
    )
    assert circuit.num_shorts_to_trip == 4
    assert circuit.sleep_time_after_trip == 2.0
    assert circuit.backoff_factor == 1.5
    assert circuit.max_sleep_time == 60.0
    assert circuit.jitter == 0.1
    assert state(circuit) == (0, 0, 2.0, False if kind == "BreakingCircuit" else None)
    circuit.short()
    assert circuit.times_shorted == 1 and type(circuit.times_shorted) is int
    assert type(circuit.total_trips) is int and type(circuit.current_sleep_time) is float
    for name in ("times_shorted", "total_trips", "current_sleep_time", "num_shorts_to_trip"):
        with pytest.raises(AttributeError):
            setattr(circuit, name, 3)
    text = repr(circuit)
    assert kind in text and "4" in text and "times_shorted=1" in text


# -- copies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "duplicate",
    [
        pytest.param(lambda c: pickle.loads(pickle.dumps(c)), id="pickle"),
        pytest.param(copy.copy, id="copy"),
        pytest.param(copy.deepcopy, id="deepcopy"),
    ],
)
@pytest.mark.parametrize("kind", ["Circuit", "BreakingCircuit"])
def test_a_copy_follows_the_store(store: Store, kind: str, duplicate: Callable[[Any], Any]) -> None:
    circuit = store.make(kind, num_shorts_to_trip=3, sleep_time_after_trip=0.5, jitter=0.25)
    circuit.short()
    twin = duplicate(circuit)
    assert type(twin) is type(circuit)
    assert state(twin) == state(circuit)
    assert (twin.num_shorts_to_trip, twin.sleep_time_after_trip, twin.jitter) == (3, 0.5, 0.25)
    with recorded_sleeps():
        twin.short()
        twin.short()
    if store.shared:  # a handle to the same state
        assert state(circuit) == state(twin)
        assert circuit.total_trips == 1
    else:  # an independent snapshot
        assert circuit.times_shorted == 1 and circuit.total_trips == 0
        assert twin.total_trips == 1


# -- concurrency -------------------------------------------------------------------------


def test_threads_count_exactly(store: Store) -> None:
    circuit = store.make("Circuit", num_shorts_to_trip=7)
    trips = [0] * 4
    start = threading.Barrier(4)

    def worker(index: int) -> None:
        start.wait()
        trips[index] = sum(1 for _ in range(2500) if circuit.short())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(trips) == 10000 // 7
    assert circuit.total_trips == 10000 // 7
    assert circuit.times_shorted == 10000 % 7


def test_async_and_sync_calls_mix(store: Store) -> None:
    circuit = store.make("Circuit", num_shorts_to_trip=3, sleep_time_after_trip=2.0)
    breaker = store.make("BreakingCircuit", num_shorts_to_trip=2, sleep_time_after_trip=1.0)

    async def main() -> list[Any]:
        short = circuit.short.asynced()
        results = [await short(), circuit.short(), await short()]
        results.append(await circuit.trip.asynced()(custom_sleep=0.5))
        results.append(await breaker.short.asynced()())
        breaker.short()
        results.append(await breaker.trip.asynced()())
        return results

    with recorded_sleeps() as sleeps:
        results = asyncio.run(main())
    assert results == [False, False, True, True, None, None]
    assert sleeps.durations == [2.0, 0.5, 1.0]
    assert circuit.total_trips == 2 and breaker.broken and breaker.total_trips == 1
