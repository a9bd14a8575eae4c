"""``circuit.short.asynced()`` and ``circuit.trip.asynced()`` under asyncio and trio.

The async twins must make the same state change and return the same value as the sync
calls, wait with the running loop's sleep (never blocking the loop, and using trio's sleep
under trio), and mix freely with sync calls on one circuit. Every test runs a fresh event
loop with ``asyncio.run`` or ``trio.run``; no pytest plugin is involved.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
import sniffio
import trio

from suitkaise import BreakingCircuit, Circuit
from suitkaise.circuits.testing import recorded_sleeps

BACKENDS = ["asyncio", "trio"]


def run(backend: str, function: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``function()`` to completion in a fresh event loop of ``backend``."""
    if backend == "asyncio":

        async def main() -> Any:
            return await function()

        return asyncio.run(main())
    return trio.run(function)


async def sleep(seconds: float) -> None:
    if sniffio.current_async_library() == "trio":
        await trio.sleep(seconds)
    else:
        await asyncio.sleep(seconds)


async def gather(*functions: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run the functions as concurrent tasks of the running loop; results in order."""
    if sniffio.current_async_library() == "asyncio":
        return list(await asyncio.gather(*(f() for f in functions)))
    results: list[Any] = [None] * len(functions)

    async def keep(index: int, function: Callable[[], Awaitable[Any]]) -> None:
        results[index] = await function()

    async with trio.open_nursery() as nursery:
        for index, function in enumerate(functions):
            nursery.start_soon(keep, index, function)
    return results


def state(circuit: Circuit | BreakingCircuit) -> tuple[Any, ...]:
    broken = circuit.broken if isinstance(circuit, BreakingCircuit) else None
    return (circuit.times_shorted, circuit.total_trips, circuit.current_sleep_time, broken)


# -- same state change, same return value --------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_asynced_short_returns_false_false_true(backend: str) -> None:
    circuit = Circuit(3)

    async def main() -> list[bool]:
        return [await circuit.short.asynced()() for _ in range(9)]

    assert run(backend, main) == [False, False, True] * 3
    assert (circuit.times_shorted, circuit.total_trips) == (0, 3)


# A script of operations: (name, custom_sleep). Sleeps are recorded, not slept.
SCRIPT: list[tuple[str, Any]] = [
    ("short", None),
    ("short", None),
    ("short", None),
    ("trip", None),
    ("short", 0.5),
    ("short", None),
    ("short", timedelta(milliseconds=250)),
    ("trip", 3.0),
    ("reset", None),
    ("short", None),
    ("reset_backoff", None),
    ("short", None),
    ("short", None),
    ("short", None),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", [Circuit, BreakingCircuit])
def test_asynced_matches_sync_step_by_step(backend: str, kind: type[Circuit]) -> None:
    config = {"sleep_time_after_trip": 1.0, "backoff_factor": 2.0, "max_sleep_time": 30.0}
    sync_circuit = kind(3, **config)
    async_circuit = kind(3, **config)

    def call_sync(name: str, custom: Any) -> Any:
        if name in ("reset", "reset_backoff"):
            return getattr(sync_circuit, name, lambda: None)()
        return getattr(sync_circuit, name)(custom)

    async def call_async(name: str, custom: Any) -> Any:
        if name in ("reset", "reset_backoff"):
            return getattr(async_circuit, name, lambda: None)()
        return await getattr(async_circuit, name).asynced()(custom)

    with recorded_sleeps() as sync_sleeps:
        expected = []
        for name, custom in SCRIPT:
            expected.append((call_sync(name, custom), state(sync_circuit)))

    async def main() -> list[Any]:
        return [(await call_async(n, c), state(async_circuit)) for n, c in SCRIPT]

    with recorded_sleeps() as async_sleeps:
        got = run(backend, main)

    assert got == expected
    assert async_sleeps.durations == sync_sleeps.durations
    # The script must exercise trips and non-trips for the comparison to mean anything.
    assert len(sync_sleeps) >= 2
    returned = {
        result
        for (name, _), (result, _) in zip(SCRIPT, expected, strict=True)
        if name in ("short", "trip")
    }
    assert returned == ({True, False} if kind is Circuit else {None})


@pytest.mark.parametrize("backend", BACKENDS)
def test_asynced_breaking_circuit_returns_none_and_breaks_once(backend: str) -> None:
    breaker = BreakingCircuit(2)

    async def main() -> list[Any]:
        results = [await breaker.short.asynced()() for _ in range(4)]
        results.append(await breaker.trip.asynced()())
        return results

    assert run(backend, main) == [None] * 5
    assert breaker.broken is True
    assert (breaker.total_trips, breaker.times_shorted) == (1, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_asynced_trip(backend: str) -> None:
    circuit = Circuit(5, sleep_time_after_trip=1.0, backoff_factor=3.0, max_sleep_time=5.0)
    breaker = BreakingCircuit(5)

    async def main() -> list[Any]:
        await circuit.short.asynced()()
        await circuit.short.asynced()()
        return [
            await circuit.trip.asynced()(),
            state(circuit),
            await circuit.trip.asynced()(),
            state(circuit),
            await breaker.trip.asynced()(),
            state(breaker),
            await breaker.trip.asynced()(),
            state(breaker),
        ]

    with recorded_sleeps() as sleeps:
        got = run(backend, main)
    assert got == [
        True,
        (0, 1, 3.0, None),
        True,
        (0, 2, 5.0, None),
        None,
        (0, 1, 0.0, True),
        None,  # already broken: does nothing
        (0, 1, 0.0, True),
    ]
    assert sleeps.durations == [1.0, 3.0]


# -- custom_sleep ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_asynced_custom_sleep_is_exact_and_backoff_still_advances(backend: str) -> None:
    circuit = Circuit(
        1, sleep_time_after_trip=1.0, backoff_factor=2.0, max_sleep_time=30.0, jitter=0.5
    )

    async def main() -> None:
        await circuit.trip.asynced()(custom_sleep=2.5)
        await circuit.short.asynced()(timedelta(milliseconds=1500))
        await circuit.short.asynced()(custom_sleep=99.0)  # no cap on an instruction
        await circuit.short.asynced()()  # jittered around current_sleep_time

    with recorded_sleeps() as sleeps:
        run(backend, main)
    *custom, jittered = sleeps.durations
    assert custom == [2.5, 1.5, 99.0]
    assert 8.0 * 0.5 <= jittered <= 8.0 * 1.5
    assert circuit.total_trips == 4
    assert circuit.current_sleep_time == 16.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_asynced_custom_sleep_really_sleeps(backend: str) -> None:
    circuit = Circuit(1)  # its own sleep is 0: only the custom sleep can make it wait

    async def main() -> tuple[bool, float]:
        start = time.monotonic()
        result = await circuit.short.asynced()(custom_sleep=0.2)
        return result, time.monotonic() - start

    result, elapsed = run(backend, main)
    assert result is True
    assert 0.19 <= elapsed < 5.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [-1.0, float("nan"), "soon"])
def test_asynced_rejects_bad_custom_sleep_like_sync(backend: str, bad: Any) -> None:
    circuit = Circuit(1)
    with pytest.raises((TypeError, ValueError)) as sync_error:
        circuit.short(bad)

    async def main() -> None:
        await circuit.short.asynced()(bad)

    with pytest.raises(sync_error.type):
        run(backend, main)
    assert (circuit.times_shorted, circuit.total_trips) == (0, 0)


# -- the loop keeps running during a trip's sleep ------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_event_loop_keeps_running_during_the_sleep(backend: str) -> None:
    circuit = Circuit(1, sleep_time_after_trip=0.3)
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            await sleep(0.01)
            ticks += 1

    async def tripper() -> tuple[bool, float]:
        nonlocal done
        await sleep(0)  # let the ticker start first
        start = time.monotonic()
        try:
            return await circuit.short.asynced()(), time.monotonic() - start
        finally:
            done = True

    async def main() -> Any:
        return (await gather(ticker, tripper))[1]

    result, elapsed = run(backend, main)
    assert result is True
    assert elapsed >= 0.29
    # A blocking sleep would have frozen the ticker for the whole 0.3 s.
    assert ticks >= 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_tripping_awaits_overlap(backend: str) -> None:
    circuit = Circuit(1, sleep_time_after_trip=0.2)
    trip = circuit.trip.asynced()

    async def main() -> tuple[list[Any], float]:
        start = time.monotonic()
        results = await gather(*[trip] * 10)
        return results, time.monotonic() - start

    results, elapsed = run(backend, main)
    assert results == [True] * 10
    assert circuit.total_trips == 10
    assert 0.19 <= elapsed < 1.5  # serialised sleeps would take 2 s


def test_trio_sleep_is_used_under_trio() -> None:
    """asyncio.sleep raises under trio, so a tripping call that completes while a trio
    ticker keeps running can only have slept with trio."""
    circuit = Circuit(2, sleep_time_after_trip=0.2)
    breaker = BreakingCircuit(1, sleep_time_after_trip=0.2)
    ticks = 0

    async def main() -> list[Any]:
        nonlocal ticks
        results: list[Any] = []

        async def calls(cancel_scope: trio.CancelScope) -> None:
            results.append(await circuit.short.asynced()())
            results.append(await circuit.short.asynced()())
            results.append(await breaker.short.asynced()())
            cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(calls, nursery.cancel_scope)
            while True:
                await trio.sleep(0.01)
                ticks += 1
        return results

    async def guarded() -> list[Any]:
        with trio.fail_after(10):
            return await main()

    assert trio.run(guarded) == [False, True, None]
    assert ticks >= 10
    assert circuit.total_trips == 1 and breaker.broken is True


# -- sync and async calls mix on one circuit --------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_sync_and_async_calls_interleave_in_one_task(backend: str) -> None:
    circuit = Circuit(3)
    pattern = [True, False, False, True, True, False, True]  # True: async call

    async def main() -> list[bool]:
        results = []
        for use_async in pattern * 3:
            if use_async:
                results.append(await circuit.short.asynced()())
            else:
                results.append(circuit.short())
        return results

    results = run(backend, main)
    assert results == [False, False, True] * 7
    assert (circuit.times_shorted, circuit.total_trips) == (0, 7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_async_tasks_and_a_sync_thread_share_one_circuit(backend: str) -> None:
    circuit = Circuit(7)
    per_side = 5_000
    start = threading.Barrier(2)
    thread_trips: list[int] = []

    def sync_side() -> None:
        start.wait(timeout=30)
        thread_trips.append(sum(1 for _ in range(per_side) if circuit.short()))

    async def async_task(count: int) -> int:
        short = circuit.short.asynced()
        trips = 0
        for i in range(count):
            if await short():
                trips += 1
            if i % 50 == 0:
                await sleep(0)  # let the other tasks in
        return trips

    async def main() -> list[int]:
        start.wait(timeout=30)
        return await gather(*[lambda: async_task(per_side // 5)] * 5)

    thread = threading.Thread(target=sync_side, daemon=True)
    thread.start()
    async_trips = run(backend, main)
    thread.join(30)
    assert not thread.is_alive()

    total = 2 * per_side
    assert circuit.total_trips == total // 7
    assert circuit.times_shorted == total % 7
    assert sum(async_trips) + sum(thread_trips) == total // 7


# -- recorded_sleeps covers async sleeps ----------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_recorded_sleeps_records_async_sleeps(backend: str) -> None:
    circuit = Circuit(2, sleep_time_after_trip=1.0, backoff_factor=2.0, max_sleep_time=30.0)
    breaker = BreakingCircuit(1, sleep_time_after_trip=7.0)

    async def main() -> list[Any]:
        results = [await circuit.short.asynced()() for _ in range(6)]
        results.append(await breaker.short.asynced()())
        results.append(await circuit.trip.asynced()(custom_sleep=3.0))
        return results

    start = time.monotonic()
    with recorded_sleeps() as sleeps:
        results = run(backend, main)
    elapsed = time.monotonic() - start

    assert results == [False, True] * 3 + [None, True]
    assert sleeps.durations == [1.0, 2.0, 4.0, 7.0, 3.0]
    assert elapsed < 5.0  # real sleeps would take 17 s


@pytest.mark.parametrize("backend", BACKENDS)
def test_recorded_sleeps_seed_gives_the_same_jitter_sync_and_async(backend: str) -> None:
    def fresh() -> Circuit:
        return Circuit(1, sleep_time_after_trip=1.0, backoff_factor=1.5, jitter=0.3)

    sync_circuit = fresh()
    with recorded_sleeps(seed=1234) as sync_sleeps:
        for _ in range(5):
            sync_circuit.short()

    async_circuit = fresh()

    async def main() -> None:
        for _ in range(5):
            await async_circuit.short.asynced()()

    with recorded_sleeps(seed=1234) as async_sleeps:
        run(backend, main)

    assert len(async_sleeps) == 5
    assert async_sleeps.durations == sync_sleeps.durations
    assert len(set(async_sleeps.durations)) == 5  # jitter was applied


@pytest.mark.parametrize("backend", BACKENDS)
def test_recorded_sleeps_still_yields_to_the_loop(backend: str) -> None:
    """Where a call would have slept, it still lets the other tasks run."""
    circuit = Circuit(1, sleep_time_after_trip=60.0)
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await sleep(0)

    async def tripper() -> int:
        nonlocal done
        await sleep(0)
        before = ticks
        for _ in range(20):
            await circuit.short.asynced()()
        done = True
        return ticks - before

    async def main() -> Any:
        return (await gather(ticker, tripper))[1]

    with recorded_sleeps() as sleeps:
        ticks_during_trips = run(backend, main)
    assert sleeps.durations == [60.0] * 20
    # Each of the 20 trips is a checkpoint; without them the ticker would not run at all.
    assert ticks_during_trips >= 10


# -- the bound operations are cached ---------------------------------------------------------


@pytest.mark.parametrize("kind", [Circuit, BreakingCircuit])
def test_bound_operations_and_their_async_twins_are_cached(kind: type[Circuit]) -> None:
    circuit = kind(3)
    assert circuit.short is circuit.short
    assert circuit.trip is circuit.trip
    assert circuit.short.asynced() is circuit.short.asynced()
    assert circuit.trip.asynced() is circuit.trip.asynced()
    assert circuit.short.asynced() is not circuit.trip.asynced()

    other = kind(3)
    assert other.short is not circuit.short
    assert other.short.asynced() is not circuit.short.asynced()


@pytest.mark.parametrize("backend", BACKENDS)
def test_cached_twins_act_on_their_own_circuit_only(backend: str) -> None:
    import copy

    original = Circuit(5)
    original_short = original.short.asynced()  # cached before copying
    duplicate = copy.copy(original)
    duplicate_short = duplicate.short.asynced()
    assert duplicate_short is not original_short

    async def main() -> None:
        await duplicate_short()
        await duplicate_short()
        await original_short()

    run(backend, main)
    duplicate.short()
    assert original.times_shorted == 1
    assert duplicate.times_shorted == 3
