"""Behaviour of Circuit and BreakingCircuit (SPEC section 1), observed through the public API.

Sleeps are observed with ``suitkaise.circuits.testing.recorded_sleeps`` (no real sleeping),
except in the one test that checks a real, tiny sleep.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

import suitkaise
import suitkaise.circuits
from suitkaise import BreakingCircuit, Circuit
from suitkaise.circuits import CircuitStore
from suitkaise.circuits.testing import SleepLog, recorded_sleeps

CONFIG_PROPERTIES = [
    "num_shorts_to_trip",
    "sleep_time_after_trip",
    "backoff_factor",
    "max_sleep_time",
    "jitter",
]
STATE_PROPERTIES = ["times_shorted", "total_trips", "current_sleep_time"]


@pytest.fixture
def sleeps():
    with recorded_sleeps() as log:
        yield log


def state(circuit: Circuit | BreakingCircuit) -> tuple[object, ...]:
    values = tuple(getattr(circuit, name) for name in STATE_PROPERTIES)
    if isinstance(circuit, BreakingCircuit):
        values += (circuit.broken,)
    return values


def config(circuit: Circuit | BreakingCircuit) -> tuple[object, ...]:
    return tuple(getattr(circuit, name) for name in CONFIG_PROPERTIES)


# -- properties ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Circuit, BreakingCircuit])
def test_fresh_state(cls):
    circuit = cls(4, sleep_time_after_trip=1.5, backoff_factor=2.0, max_sleep_time=9.0)
    assert circuit.num_shorts_to_trip == 4
    assert circuit.times_shorted == 0
    assert circuit.total_trips == 0
    assert circuit.current_sleep_time == 1.5
    assert config(circuit) == (4, 1.5, 2.0, 9.0, 0.0)


def test_fresh_breaking_circuit_is_not_broken():
    assert BreakingCircuit(1).broken is False


def test_circuit_has_no_broken_flag():
    # SPEC's state table: "broken" is a BreakingCircuit-only property.
    assert not hasattr(Circuit(1), "broken")


@pytest.mark.parametrize("cls", [Circuit, BreakingCircuit])
@pytest.mark.parametrize("name", CONFIG_PROPERTIES + STATE_PROPERTIES)
def test_properties_are_read_only(cls, name):
    circuit = cls(3, sleep_time_after_trip=1.0)
    before = getattr(circuit, name)
    with pytest.raises(AttributeError):
        setattr(circuit, name, 2)
    assert getattr(circuit, name) == before


def test_broken_is_read_only():
    breaker = BreakingCircuit(1)
    with pytest.raises(AttributeError):
        breaker.broken = True
    assert breaker.broken is False


# -- Circuit: short, trip, reset_backoff ---------------------------------------------------


def test_short_returns_true_exactly_on_the_tripping_call(sleeps):
    circuit = Circuit(3)
    results = [circuit.short() for _ in range(9)]
    assert results == [False, False, True] * 3
    assert all(type(result) is bool for result in results)


def test_short_counts_and_resets_on_trip(sleeps):
    circuit = Circuit(3, sleep_time_after_trip=1.0)
    seen = []
    for _ in range(7):
        circuit.short()
        seen.append((circuit.times_shorted, circuit.total_trips))
    assert seen == [(1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2), (1, 2)]
    assert sleeps.durations == [1.0, 1.0]


def test_short_returns_true_on_trip_even_with_zero_sleep(sleeps):
    circuit = Circuit(2)  # default sleep 0
    assert circuit.short() is False
    assert circuit.short() is True
    assert circuit.total_trips == 1
    assert sleeps.durations == []


def test_threshold_of_one_trips_on_every_short(sleeps):
    circuit = Circuit(1, sleep_time_after_trip=0.5)
    assert [circuit.short() for _ in range(4)] == [True] * 4
    assert circuit.total_trips == 4
    assert circuit.times_shorted == 0
    assert sleeps.durations == [0.5] * 4


def test_only_the_tripping_call_sleeps(sleeps):
    circuit = Circuit(4, sleep_time_after_trip=2.0)
    for expected_len in [0, 0, 0, 1, 1, 1, 1, 2]:
        circuit.short()
        assert len(sleeps) == expected_len


def test_trip_returns_true_and_bypasses_counter(sleeps):
    circuit = Circuit(5, sleep_time_after_trip=1.0, backoff_factor=2.0, max_sleep_time=30.0)
    circuit.short()
    circuit.short()
    assert circuit.trip() is True
    assert circuit.times_shorted == 0
    assert circuit.total_trips == 1
    assert circuit.current_sleep_time == 2.0
    assert sleeps.durations == [1.0]
    assert circuit.trip() is True
    assert circuit.total_trips == 2
    assert sleeps.durations == [1.0, 2.0]


def test_trip_with_zero_sleep_returns_true(sleeps):
    circuit = Circuit(10)
    assert circuit.trip() is True
    assert circuit.total_trips == 1
    assert sleeps.durations == []


def test_backoff_example_from_the_page(sleeps):
    circuit = Circuit(
        num_shorts_to_trip=5,
        sleep_time_after_trip=1.0,
        backoff_factor=2.0,
        max_sleep_time=30.0,
    )
    before_each_trip = []
    for _ in range(7):
        before_each_trip.append(circuit.current_sleep_time)
        for _ in range(5):
            circuit.short()
    assert sleeps.durations == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert before_each_trip == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert circuit.current_sleep_time == 30.0
    assert circuit.total_trips == 7


def test_reset_backoff_restores_first_sleep_and_keeps_counters(sleeps):
    circuit = Circuit(3, sleep_time_after_trip=1.0, backoff_factor=2.0, max_sleep_time=30.0)
    for _ in range(7):  # two trips and one short left over
        circuit.short()
    assert circuit.current_sleep_time == 4.0
    assert circuit.reset_backoff() is None
    assert circuit.current_sleep_time == 1.0
    assert circuit.times_shorted == 1
    assert circuit.total_trips == 2
    circuit.short()
    circuit.short()
    assert sleeps.durations == [1.0, 2.0, 1.0]
    assert circuit.current_sleep_time == 2.0


def test_factor_one_ignores_the_cap(sleeps):
    # The page's rate limiter: 60 s every 100 requests, although the default cap is 10 s.
    rate_limiter = Circuit(num_shorts_to_trip=100, sleep_time_after_trip=60.0)
    for _ in range(300):
        rate_limiter.short()
    assert sleeps.durations == [60.0, 60.0, 60.0]
    assert rate_limiter.current_sleep_time == 60.0
    assert rate_limiter.total_trips == 3


def test_factor_one_constant_sleep(sleeps):
    circuit = Circuit(num_shorts_to_trip=5, sleep_time_after_trip=1.0)
    for _ in range(20):
        circuit.short()
    circuit.trip()
    assert sleeps.durations == [1.0] * 5


def test_zero_base_with_backoff_stays_zero(sleeps):
    circuit = Circuit(1, backoff_factor=3.0, max_sleep_time=5.0)
    for _ in range(5):
        assert circuit.short() is True
    assert circuit.current_sleep_time == 0.0
    assert sleeps.durations == []


# -- BreakingCircuit -----------------------------------------------------------------------


def test_breaker_breaks_at_threshold(sleeps):
    breaker = BreakingCircuit(3, sleep_time_after_trip=1.0)
    assert breaker.short() is None
    assert breaker.short() is None
    assert breaker.broken is False
    assert sleeps.durations == []
    assert breaker.short() is None
    assert breaker.broken is True
    assert breaker.total_trips == 1
    assert breaker.times_shorted == 3
    assert sleeps.durations == [1.0]


def test_breaker_keeps_counting_while_broken_without_sleeping(sleeps):
    breaker = BreakingCircuit(2, sleep_time_after_trip=1.0)
    for _ in range(10):
        breaker.short()
    assert breaker.broken is True
    assert breaker.times_shorted == 10
    assert breaker.total_trips == 1
    assert sleeps.durations == [1.0]


def test_breaker_total_trips_counts_breaks_not_shorts(sleeps):
    breaker = BreakingCircuit(2)
    for _ in range(3):
        for _ in range(5):
            breaker.short()
        breaker.reset()
    assert breaker.total_trips == 3
    assert breaker.times_shorted == 0


def test_breaker_trip_breaks_now(sleeps):
    breaker = BreakingCircuit(5, sleep_time_after_trip=2.0)
    breaker.short()
    assert breaker.trip() is None
    assert breaker.broken is True
    assert breaker.total_trips == 1
    assert breaker.times_shorted == 1  # bypassed, not counted
    assert sleeps.durations == [2.0]


def test_breaker_trip_on_broken_does_nothing(sleeps):
    breaker = BreakingCircuit(1, sleep_time_after_trip=2.0, backoff_factor=2.0)
    breaker.short()
    before = state(breaker)
    assert breaker.trip() is None
    assert breaker.trip(custom_sleep=5.0) is None
    assert state(breaker) == before
    assert sleeps.durations == [2.0]


def test_breaker_reset_clears_and_advances_backoff_after_a_break(sleeps):
    breaker = BreakingCircuit(2, sleep_time_after_trip=1.0, backoff_factor=2.0, max_sleep_time=5.0)
    currents = []
    for _ in range(5):
        breaker.short()
        breaker.short()
        breaker.short()  # counted while broken
        assert breaker.broken is True
        assert breaker.reset() is None
        assert breaker.broken is False
        assert breaker.times_shorted == 0
        currents.append(breaker.current_sleep_time)
    assert sleeps.durations == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert currents == [2.0, 4.0, 5.0, 5.0, 5.0]
    assert breaker.total_trips == 5


def test_breaker_defensive_resets_never_snowball(sleeps):
    breaker = BreakingCircuit(3, sleep_time_after_trip=1.0, backoff_factor=2.0, max_sleep_time=30.0)
    breaker.short()
    breaker.short()
    for _ in range(10):
        breaker.reset()
    assert breaker.times_shorted == 0
    assert breaker.total_trips == 0
    assert breaker.current_sleep_time == 1.0
    assert breaker.broken is False
    for _ in range(3):
        breaker.short()
    assert sleeps.durations == [1.0]
    breaker.reset()  # ends the break: advances once
    breaker.reset()
    breaker.reset()
    assert breaker.current_sleep_time == 2.0


def test_breaker_reset_backoff_does_not_touch_broken(sleeps):
    breaker = BreakingCircuit(1, sleep_time_after_trip=1.0, backoff_factor=2.0, max_sleep_time=30.0)
    breaker.short()
    breaker.reset()
    breaker.short()
    breaker.short()
    assert breaker.current_sleep_time == 2.0
    assert breaker.reset_backoff() is None
    assert breaker.broken is True
    assert breaker.times_shorted == 2
    assert breaker.total_trips == 2
    assert breaker.current_sleep_time == 1.0
    breaker.reset()  # ends the break: advances from the restored base
    assert breaker.current_sleep_time == 2.0
    breaker.short()
    assert sleeps.durations == [1.0, 2.0, 2.0]


def test_breaker_factor_one_ignores_cap(sleeps):
    breaker = BreakingCircuit(1, sleep_time_after_trip=60.0)
    for _ in range(3):
        breaker.short()
        breaker.reset()
    assert sleeps.durations == [60.0] * 3
    assert breaker.current_sleep_time == 60.0


# -- jitter --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Circuit, BreakingCircuit])
def test_jittered_sleeps_stay_in_bounds_and_vary(cls, sleeps):
    circuit = cls(1, sleep_time_after_trip=5.0, jitter=0.1, rng=random.Random(2024))
    for _ in range(200):
        circuit.short()
        if isinstance(circuit, BreakingCircuit):
            circuit.reset()
    durations = sleeps.durations
    assert len(durations) == 200
    assert all(4.5 <= d <= 5.5 for d in durations)  # "between 4.5s and 5.5s"
    assert len(set(durations)) > 150
    assert min(durations) < 4.7
    assert max(durations) > 5.3
    assert circuit.current_sleep_time == 5.0  # the base is not jittered


def test_jitter_is_uniform_over_the_interval(sleeps):
    # "drawn uniformly from [d * (1 - jitter), d * (1 + jitter)]". Seeded, so deterministic;
    # the tolerances are over 4 standard deviations wide for any decent generator.
    circuit = Circuit(1, sleep_time_after_trip=5.0, jitter=0.1, rng=random.Random(31337))
    for _ in range(2000):
        circuit.short()
    durations = sleeps.durations
    assert len(durations) == 2000
    assert abs(sum(durations) / len(durations) - 5.0) < 0.03
    quarters = [0, 0, 0, 0]
    for slept in durations:
        quarters[min(int((slept - 4.5) / 0.25), 3)] += 1
    assert all(420 <= count <= 580 for count in quarters), quarters


def test_jitter_with_the_default_random_source_varies(sleeps):
    circuit = Circuit(1, sleep_time_after_trip=5.0, jitter=0.5)
    for _ in range(50):
        circuit.short()
    assert all(2.5 <= d <= 7.5 for d in sleeps.durations)
    assert len(set(sleeps.durations)) > 1


def test_jitter_applies_around_the_backed_off_base(sleeps):
    circuit = Circuit(
        1,
        sleep_time_after_trip=1.0,
        backoff_factor=2.0,
        max_sleep_time=16.0,
        jitter=0.5,
        rng=random.Random(5),
    )
    bases = []
    for _ in range(8):
        bases.append(circuit.current_sleep_time)
        circuit.short()
    assert bases == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0, 16.0]
    for base, slept in zip(bases, sleeps.durations, strict=True):
        assert base * 0.5 <= slept <= base * 1.5


@pytest.mark.parametrize("cls", [Circuit, BreakingCircuit])
def test_identically_seeded_circuits_record_identical_sleeps(cls):
    def run(seed: int) -> list[float]:
        circuit = cls(
            2, sleep_time_after_trip=3.0, backoff_factor=1.5, jitter=0.3, rng=random.Random(seed)
        )
        with recorded_sleeps() as log:
            for _ in range(40):
                circuit.short()
                if isinstance(circuit, BreakingCircuit) and circuit.broken:
                    circuit.reset()
        return log.durations

    first, second, other = run(7), run(7), run(8)
    assert len(first) == 20
    assert first == second
    assert first != other


def test_injected_rng_is_the_source_of_jitter(sleeps):
    class CountingRandom(random.Random):
        calls = 0

        def random(self) -> float:
            CountingRandom.calls += 1
            return super().random()

    circuit = Circuit(1, sleep_time_after_trip=1.0, jitter=0.2, rng=CountingRandom(1))
    for _ in range(10):
        circuit.short()
    assert CountingRandom.calls >= 10
    assert len(sleeps) == 10


def test_injected_rng_wins_over_recorded_sleeps_seed():
    def run(seed: int) -> list[float]:
        circuit = Circuit(1, sleep_time_after_trip=1.0, jitter=0.5, rng=random.Random(99))
        with recorded_sleeps(seed=seed) as log:
            for _ in range(10):
                circuit.short()
        return log.durations

    assert run(1) == run(2)


def test_no_jitter_sleeps_the_base_exactly(sleeps):
    circuit = Circuit(1, sleep_time_after_trip=0.3, backoff_factor=3.0, max_sleep_time=5.0)
    for _ in range(4):
        circuit.short()
    assert sleeps.durations == [0.3, min(0.3 * 3.0, 5.0), min(0.3 * 3.0 * 3.0, 5.0), 5.0]


# -- custom_sleep --------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["short", "trip"])
def test_custom_sleep_is_exact_uncapped_and_backoff_still_advances(operation, sleeps):
    circuit = Circuit(
        1,
        sleep_time_after_trip=1.0,
        backoff_factor=2.0,
        max_sleep_time=10.0,
        jitter=0.5,
        rng=random.Random(3),
    )
    assert getattr(circuit, operation)(custom_sleep=100) is True
    assert sleeps.durations == [100.0]
    assert circuit.current_sleep_time == 2.0
    assert circuit.total_trips == 1
    circuit.short()  # back to the jittered, backed-off base
    assert len(sleeps) == 2
    assert 1.0 <= sleeps.durations[1] <= 3.0


def test_custom_sleep_many_times_is_never_jittered(sleeps):
    circuit = Circuit(1, sleep_time_after_trip=1.0, jitter=1.0, rng=random.Random(0))
    for _ in range(20):
        circuit.short(custom_sleep=0.75)
    assert sleeps.durations == [0.75] * 20


def test_custom_sleep_on_a_non_tripping_short_is_not_remembered(sleeps):
    circuit = Circuit(2, sleep_time_after_trip=1.0)
    assert circuit.short(custom_sleep=50.0) is False
    assert sleeps.durations == []
    assert circuit.short() is True
    assert sleeps.durations == [1.0]


def test_custom_sleep_timedelta(sleeps):
    circuit = Circuit(1, sleep_time_after_trip=1.0)
    circuit.short(custom_sleep=timedelta(milliseconds=1500))
    circuit.trip(custom_sleep=timedelta(minutes=2))
    assert sleeps.durations == [1.5, 120.0]


def test_custom_sleep_zero_does_not_sleep_but_trips(sleeps):
    circuit = Circuit(1, sleep_time_after_trip=4.0, backoff_factor=2.0, max_sleep_time=10.0)
    assert circuit.short(custom_sleep=0) is True
    assert sleeps.durations == []
    assert circuit.total_trips == 1
    assert circuit.current_sleep_time == 8.0


def test_breaker_custom_sleep_is_exact_and_backoff_advances_on_reset(sleeps):
    breaker = BreakingCircuit(
        2,
        sleep_time_after_trip=1.0,
        backoff_factor=2.0,
        max_sleep_time=10.0,
        jitter=0.5,
        rng=random.Random(11),
    )
    breaker.short()
    breaker.short(custom_sleep=100.0)
    assert breaker.broken is True
    assert sleeps.durations == [100.0]
    assert breaker.current_sleep_time == 1.0
    breaker.reset()
    assert breaker.current_sleep_time == 2.0
    breaker.trip(custom_sleep=timedelta(seconds=7))
    assert sleeps.durations == [100.0, 7.0]


@pytest.mark.parametrize("cls", [Circuit, BreakingCircuit])
def test_zero_base_never_sleeps_even_with_jitter(cls, sleeps):
    circuit = cls(1, jitter=0.5, backoff_factor=2.0)
    for _ in range(10):
        circuit.short()
        circuit.trip()
        if isinstance(circuit, BreakingCircuit):
            circuit.reset()
    assert sleeps.durations == []
    assert circuit.total_trips == (20 if cls is Circuit else 10)


# -- a real sleep ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Circuit, BreakingCircuit])
def test_real_tiny_sleep(cls):
    circuit = cls(1, sleep_time_after_trip=0.05)
    start = time.monotonic()
    circuit.short()
    elapsed = time.monotonic() - start
    assert 0.05 <= elapsed < 2.0


# -- recorded_sleeps -----------------------------------------------------------------------


def test_recorded_sleeps_records_and_summarises():
    circuit = Circuit(2, sleep_time_after_trip=1.0, backoff_factor=2.0, max_sleep_time=30.0)
    with recorded_sleeps() as log:
        assert isinstance(log, SleepLog)
        for _ in range(6):
            circuit.short()
    assert log.durations == [1.0, 2.0, 4.0]
    assert log.total == 7.0
    assert len(log) == 3
    log.clear()
    assert log.durations == []
    assert len(log) == 0


def test_recorded_sleeps_durations_is_a_copy():
    with recorded_sleeps() as log:
        Circuit(1, sleep_time_after_trip=1.0).short()
    log.durations.append(99.0)
    assert log.durations == [1.0]


def _measured_short(circuit: Circuit) -> float:
    start = time.monotonic()
    circuit.short()
    return time.monotonic() - start


def test_recorded_sleeps_restores_real_sleep_after_the_block():
    circuit = Circuit(1, sleep_time_after_trip=0.02)
    with recorded_sleeps() as log:
        circuit.short()
    assert log.durations == [0.02]
    assert _measured_short(circuit) >= 0.02
    assert log.durations == [0.02]  # the block is over: nothing more recorded


def test_recorded_sleeps_restores_real_sleep_after_an_exception():
    circuit = Circuit(1, sleep_time_after_trip=0.02)
    with pytest.raises(RuntimeError, match="boom"), recorded_sleeps() as log:
        circuit.short()
        raise RuntimeError("boom")
    assert log.durations == [0.02]
    assert _measured_short(circuit) >= 0.02
    assert log.durations == [0.02]


def test_recorded_sleeps_nest():
    circuit = Circuit(1, sleep_time_after_trip=1.0)
    with recorded_sleeps() as outer:
        circuit.short(custom_sleep=1.0)
        with recorded_sleeps() as inner:
            circuit.short(custom_sleep=2.0)
            circuit.short(custom_sleep=3.0)
        circuit.short(custom_sleep=4.0)
    assert outer.durations == [1.0, 4.0]
    assert inner.durations == [2.0, 3.0]
    with recorded_sleeps() as after:
        circuit.short(custom_sleep=5.0)
    assert after.durations == [5.0]
    assert outer.durations == [1.0, 4.0]
    assert inner.durations == [2.0, 3.0]


def _in_thread(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_recorded_sleeps_blocks_overlapping_across_threads_close_in_any_order():
    """Thread A opens, thread B opens, A closes, B closes: each block records its own
    thread's sleeps, and real sleeping is back once both are closed (not A's recorder)."""
    a_open, b_open, a_closed = threading.Event(), threading.Event(), threading.Event()
    logs: dict[str, SleepLog] = {}

    def a() -> None:
        with recorded_sleeps() as log:
            logs["a"] = log
            a_open.set()
            assert b_open.wait(10)
            Circuit(1).short(custom_sleep=1.0)
        a_closed.set()

    def b() -> None:
        assert a_open.wait(10)
        with recorded_sleeps() as log:
            logs["b"] = log
            b_open.set()
            assert a_closed.wait(10)
            Circuit(1).short(custom_sleep=2.0)  # A's block is closed, B's is still open

    threads = [_in_thread(a), _in_thread(b)]
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert logs["a"].durations == [1.0]
    assert logs["b"].durations == [2.0]
    circuit = Circuit(1, sleep_time_after_trip=0.02)
    assert _measured_short(circuit) >= 0.02
    assert logs["a"].durations == [1.0] and logs["b"].durations == [2.0]


def test_recorded_sleeps_in_many_threads_at_once_lose_nothing_and_restore_sleep():
    barrier = threading.Barrier(8)
    logs: list[SleepLog] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        barrier.wait(10)
        for _ in range(50):
            with recorded_sleeps() as log:
                Circuit(1).short(custom_sleep=float(index + 1))
            with lock:
                logs.append(log)

    threads = [_in_thread(lambda i=i: work(i)) for i in range(8)]
    for thread in threads:
        thread.join(20)
        assert not thread.is_alive()
    assert len(logs) == 400
    assert all(len(log.durations) == 1 for log in logs)
    assert sorted(log.durations[0] for log in logs) == sorted(
        float(i + 1) for i in range(8) for _ in range(50)
    )
    assert _measured_short(Circuit(1, sleep_time_after_trip=0.02)) >= 0.02


def test_a_thread_without_its_own_block_records_in_the_innermost_open_one():
    """Worker threads a test starts inside its block are covered by it."""
    circuit = Circuit(1, sleep_time_after_trip=3.0)
    with recorded_sleeps() as log:
        worker = _in_thread(circuit.short)
        worker.join(10)
    assert log.durations == [3.0]


def test_recorded_sleeps_seed_applies_per_block_across_threads():
    seeded_first: list[float] = []
    with recorded_sleeps(seed=7) as log:
        for _ in range(5):
            Circuit(1, sleep_time_after_trip=2.0, jitter=0.5).short()
    seeded_first = log.durations
    other_open, done = threading.Event(), threading.Event()

    def other() -> None:
        with recorded_sleeps(seed=99):
            other_open.set()
            assert done.wait(10)

    thread = _in_thread(other)
    assert other_open.wait(10)
    with recorded_sleeps(seed=7) as again:
        for _ in range(5):
            Circuit(1, sleep_time_after_trip=2.0, jitter=0.5).short()
    done.set()
    thread.join(10)
    assert again.durations == seeded_first


def test_recorded_sleeps_seed_gives_reproducible_jitter():
    def run(seed: int) -> list[float]:
        circuit = Circuit(1, sleep_time_after_trip=2.0, jitter=0.5)
        with recorded_sleeps(seed=seed) as log:
            for _ in range(15):
                circuit.short()
        return log.durations

    first = run(42)
    assert first == run(42)
    assert first != run(43)
    assert len(set(first)) > 1
    assert all(1.0 <= d <= 3.0 for d in first)


def test_recorded_sleeps_records_async_calls():
    circuit = Circuit(2, sleep_time_after_trip=5.0)
    breaker = BreakingCircuit(1, sleep_time_after_trip=6.0)

    async def main() -> list[object]:
        return [
            await circuit.short.asynced()(),
            await circuit.short.asynced()(),
            await circuit.trip.asynced()(custom_sleep=7.0),
            await breaker.short.asynced()(),
            await breaker.trip.asynced()(),
        ]

    with recorded_sleeps() as log:
        results = asyncio.run(main())
    assert results == [False, True, True, None, None]
    assert log.durations == [5.0, 7.0, 6.0]
    assert circuit.total_trips == 2
    assert breaker.broken is True


def test_sync_and_async_mix_on_one_circuit(sleeps):
    circuit = Circuit(3, sleep_time_after_trip=1.0, backoff_factor=2.0, max_sleep_time=8.0)
    circuit.short()

    async def main() -> bool:
        return await circuit.short.asynced()()

    assert asyncio.run(main()) is False
    assert circuit.short() is True
    assert circuit.times_shorted == 0
    assert sleeps.durations == [1.0]


# -- repr ----------------------------------------------------------------------------------


def test_circuit_repr_shows_class_threshold_and_live_state(sleeps):
    circuit = Circuit(3, sleep_time_after_trip=1.0, backoff_factor=2.0, max_sleep_time=30.0)
    text = repr(circuit)
    assert text.startswith("Circuit(")
    assert "num_shorts_to_trip=3" in text
    assert "times_shorted=0" in text
    assert "total_trips=0" in text
    assert "current_sleep_time=1.0" in text
    for _ in range(4):
        circuit.short()
    text = repr(circuit)
    assert "times_shorted=1" in text
    assert "total_trips=1" in text
    assert "current_sleep_time=2.0" in text
    assert "broken" not in text


def test_breaking_circuit_repr_shows_broken(sleeps):
    breaker = BreakingCircuit(2)
    text = repr(breaker)
    assert text.startswith("BreakingCircuit(")
    assert "num_shorts_to_trip=2" in text
    assert "broken=False" in text
    breaker.short()
    breaker.short()
    breaker.short()
    text = repr(breaker)
    assert "broken=True" in text
    assert "times_shorted=3" in text
    assert "total_trips=1" in text


# -- copies --------------------------------------------------------------------------------

COPIERS = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "pickle-protocol-0": lambda obj: pickle.loads(pickle.dumps(obj, protocol=0)),
    "pickle-highest": lambda obj: pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)),
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
}


@pytest.fixture(params=list(COPIERS), ids=list(COPIERS))
def copier(request: pytest.FixtureRequest):
    return COPIERS[request.param]


def _used_circuit() -> Circuit:
    circuit = Circuit(
        3,
        sleep_time_after_trip=1.0,
        backoff_factor=2.0,
        max_sleep_time=30.0,
        jitter=0.25,
        rng=random.Random(1),
    )
    for _ in range(7):  # 2 trips, 1 short left over, current 4.0
        circuit.short()
    return circuit


def _used_breaker() -> BreakingCircuit:
    breaker = BreakingCircuit(
        2, sleep_time_after_trip=timedelta(seconds=1), backoff_factor=3.0, max_sleep_time=20.0
    )
    breaker.short()
    breaker.short()
    breaker.reset()
    for _ in range(3):
        breaker.short()
    return breaker  # broken, 3 shorts, 2 trips, current 3.0


def test_copy_of_circuit_has_same_config_and_state(copier, sleeps):
    original = _used_circuit()
    duplicate = copier(original)
    assert type(duplicate) is Circuit
    assert duplicate is not original
    assert config(duplicate) == config(original) == (3, 1.0, 2.0, 30.0, 0.25)
    assert state(duplicate) == state(original) == (1, 2, 4.0)


def test_copy_of_breaker_has_same_config_and_state(copier, sleeps):
    original = _used_breaker()
    duplicate = copier(original)
    assert type(duplicate) is BreakingCircuit
    assert config(duplicate) == config(original) == (2, 1.0, 3.0, 20.0, 0.0)
    assert state(duplicate) == state(original) == (3, 2, 3.0, True)


def test_copy_of_circuit_is_independent(copier, sleeps):
    original = _used_circuit()
    duplicate = copier(original)
    assert duplicate.short() is False
    assert duplicate.short() is True
    assert state(duplicate) == (0, 3, 8.0)
    assert state(original) == (1, 2, 4.0)
    original.trip()
    original.trip()
    original.reset_backoff()
    assert state(original) == (0, 4, 1.0)
    assert state(duplicate) == (0, 3, 8.0)


def test_copy_of_breaker_is_independent(copier, sleeps):
    original = _used_breaker()
    duplicate = copier(original)
    duplicate.reset()
    assert state(duplicate) == (0, 2, 9.0, False)
    assert state(original) == (3, 2, 3.0, True)
    original.reset()
    original.short()
    original.short()
    assert state(original) == (2, 3, 9.0, True)
    assert state(duplicate) == (0, 2, 9.0, False)


def test_copy_of_fresh_circuit_is_usable(copier, sleeps):
    duplicate = copier(Circuit(1, sleep_time_after_trip=0.5))
    assert duplicate.short() is True
    assert sleeps.durations == [0.5]

    async def main() -> bool:
        return await duplicate.trip.asynced()()

    assert asyncio.run(main()) is True
    assert duplicate.total_trips == 2


def test_copy_keeps_jitter_in_bounds(copier, sleeps):
    duplicate = copier(_used_circuit())
    for _ in range(3):
        duplicate.short()
    assert len(sleeps) == 3  # 2 from building the original + 1
    assert 4.0 * 0.75 <= sleeps.durations[-1] <= 4.0 * 1.25


def test_copy_of_a_copy(sleeps):
    original = _used_breaker()
    twice = pickle.loads(pickle.dumps(copy.deepcopy(copy.copy(original))))
    assert state(twice) == state(original)
    twice.reset()
    assert original.broken is True


# -- the store= plug-in ----------------------------------------------------------------------


class CountingStore:
    """A minimal in-memory store implementing the CircuitStore protocol, counting its calls."""

    apply_async = None

    def __init__(self, state: tuple[int, int, float, bool]) -> None:
        self.state = state
        self.applies: list[str] = []
        self.portables = 0

    def apply(self, transition, settings, custom_sleep):
        self.applies.append(transition.__name__)
        self.state, sleep = transition(settings, self.state, custom_sleep)
        return sleep

    def read(self):
        return self.state

    def portable(self):
        self.portables += 1
        return CountingStore(self.state)


class AsyncCountingStore(CountingStore):
    """A store that talks to a 'server': async code must use apply_async, not apply."""

    def __init__(self, state: tuple[int, int, float, bool]) -> None:
        super().__init__(state)
        self.async_applies: list[str] = []
        self.apply_async = self._apply_async

    async def _apply_async(self, transition, settings, custom_sleep):
        self.async_applies.append(transition.__name__)
        await asyncio.sleep(0)
        self.state, sleep = transition(settings, self.state, custom_sleep)
        return sleep


class CountingFactory:
    def __init__(self, store_class: type[CountingStore] = CountingStore) -> None:
        self.store_class = store_class
        self.opened: list[tuple[str, object, CountingStore]] = []

    def open(self, kind, settings):
        store = self.store_class((0, 0, settings.sleep_time_after_trip, False))
        self.opened.append((kind, settings, store))
        return store


def test_store_protocol_is_satisfied_by_the_test_store():
    assert isinstance(CountingStore((0, 0, 0.0, False)), CircuitStore)


def test_circuit_uses_the_given_store(sleeps):
    factory = CountingFactory()
    circuit = Circuit(3, sleep_time_after_trip=timedelta(seconds=2), store=factory)
    assert len(factory.opened) == 1
    kind, settings, store = factory.opened[0]
    assert kind == "Circuit"
    assert settings.num_shorts_to_trip == 3
    assert settings.sleep_time_after_trip == 2.0
    assert [circuit.short() for _ in range(3)] == [False, False, True]
    assert circuit.trip() is True
    circuit.reset_backoff()
    assert len(store.applies) == 5
    assert store.state == (0, 2, 2.0, False)
    assert sleeps.durations == [2.0, 2.0]
    # Reads come from the store, not from a copy kept by the circuit.
    store.state = (2, 40, 7.5, False)
    assert state(circuit) == (2, 40, 7.5)
    assert circuit.short() is True
    assert sleeps.durations == [2.0, 2.0, 7.5]


def test_breaking_circuit_uses_the_given_store(sleeps):
    factory = CountingFactory()
    breaker = BreakingCircuit(2, sleep_time_after_trip=1.0, backoff_factor=2.0, store=factory)
    kind, _, store = factory.opened[0]
    assert kind == "BreakingCircuit"
    breaker.short()
    breaker.short()
    breaker.trip()
    breaker.reset()
    breaker.reset_backoff()
    assert len(store.applies) == 5
    assert store.state == (0, 1, 1.0, False)
    assert breaker.broken is False
    store.state = (0, 1, 1.0, True)
    assert breaker.broken is True
    assert sleeps.durations == [1.0]


def test_async_calls_use_apply_when_store_has_no_apply_async(sleeps):
    factory = CountingFactory()
    circuit = Circuit(2, store=factory)
    store = factory.opened[0][2]

    async def main() -> list[bool]:
        return [await circuit.short.asynced()(), await circuit.short.asynced()()]

    assert asyncio.run(main()) == [False, True]
    assert len(store.applies) == 2


def test_async_calls_use_apply_async_when_the_store_has_one(sleeps):
    factory = CountingFactory(AsyncCountingStore)
    circuit = Circuit(2, sleep_time_after_trip=3.0, store=factory)
    store = factory.opened[0][2]

    async def main() -> list[bool]:
        return [
            await circuit.short.asynced()(),
            await circuit.short.asynced()(),
            await circuit.trip.asynced()(custom_sleep=1.0),
        ]

    assert asyncio.run(main()) == [False, True, True]
    assert len(store.async_applies) == 3
    assert store.applies == []
    assert sleeps.durations == [3.0, 1.0]
    circuit.short()  # sync still uses apply
    assert len(store.applies) == 1


def test_copy_carries_the_portable_store(sleeps):
    factory = CountingFactory()
    circuit = Circuit(2, store=factory)
    store = factory.opened[0][2]
    circuit.short()
    duplicate = copy.copy(circuit)
    assert store.portables == 1
    assert duplicate.times_shorted == 1
    duplicate.short()
    assert store.state == (1, 0, 0.0, False)
    assert duplicate.total_trips == 1
    assert len(factory.opened) == 1  # a copy does not open a new store


# -- public API and import lightness -------------------------------------------------------


def test_top_level_all():
    assert set(suitkaise.__all__) == {"BreakingCircuit", "Circuit", "__version__"}
    assert len(suitkaise.__all__) == 3
    for name in suitkaise.__all__:
        assert hasattr(suitkaise, name)
    assert isinstance(suitkaise.__version__, str)


def test_circuits_package_all():
    assert set(suitkaise.circuits.__all__) == {
        "BreakingCircuit",
        "Circuit",
        "CircuitStore",
        "Settings",
        "StoreFactory",
    }
    for name in suitkaise.circuits.__all__:
        assert hasattr(suitkaise.circuits, name)


def test_both_import_paths_give_the_same_classes():
    from suitkaise import BreakingCircuit as TopBreaking
    from suitkaise import Circuit as TopCircuit
    from suitkaise.circuits import BreakingCircuit as SubBreaking
    from suitkaise.circuits import Circuit as SubCircuit

    assert TopCircuit is SubCircuit
    assert TopBreaking is SubBreaking
    assert TopCircuit is not TopBreaking


def test_import_suitkaise_is_light():
    code = textwrap.dedent(
        """
        import sys
        import suitkaise
        from suitkaise import Circuit, BreakingCircuit
        Circuit(2, sleep_time_after_trip=0.0).short()
        BreakingCircuit(1).short()
        heavy = sorted(
            name for name in sys.modules
            if name.split(".")[0] in {"asyncio", "sniffio", "redis", "trio"}
        )
        print(",".join(heavy))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
