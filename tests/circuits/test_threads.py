"""Thread safety of circuits: exact counts under contention, sleeping outside the lock,
and the page's coordinated-shutdown pattern.

Races are provoked deterministically: every worker starts at a ``threading.Barrier``, the
interpreter's switch interval is shrunk so threads are preempted as often as possible,
and counts are checked exactly. Where a thread must be *inside* its sleep while others
work, the sleep is replaced by one that blocks on an ``Event``, so nothing depends on timing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from suitkaise import BreakingCircuit, Circuit
from suitkaise.circuits import _waiting
from suitkaise.circuits._transitions import breaker_short, breaker_trip, circuit_short
from suitkaise.circuits.testing import recorded_sleeps

THREADS = 8
SHORTS_PER_THREAD = 10_000
TOTAL_SHORTS = THREADS * SHORTS_PER_THREAD
JOIN_TIMEOUT = 60.0  # generous: only reached if something deadlocks


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    """Preempt threads as often as the interpreter allows, to widen every race window."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(saved)


def join_all(threads: list[threading.Thread], timeout: float = JOIN_TIMEOUT) -> list[int]:
    """Join every thread within one shared deadline; return the indexes still alive."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [i for i, thread in enumerate(threads) if thread.is_alive()]


def run_together(target: Callable[[int], None], count: int = THREADS) -> None:
    """Run ``target(i)`` in ``count`` threads released at once by a barrier; re-raise the
    first error any of them hit, and fail (instead of hanging) if one does not finish."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait(timeout=JOIN_TIMEOUT)
            target(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    assert join_all(threads) == [], "a worker thread did not finish"
    if errors:
        raise errors[0]


# -- exact counts ------------------------------------------------------------------------


@pytest.mark.parametrize("run", range(3))
def test_circuit_counts_are_exact_under_contention(tiny_switch_interval: None, run: int) -> None:
    circuit = Circuit(7)
    trips_seen = [0] * THREADS

    def work(index: int) -> None:
        short = circuit.short
        trips = 0
        for _ in range(SHORTS_PER_THREAD):
            if short():
                trips += 1
        trips_seen[index] = trips

    run_together(work)

    assert circuit.total_trips == TOTAL_SHORTS // 7
    assert circuit.times_shorted == TOTAL_SHORTS % 7
    # Each trip was reported to exactly one caller: no lost and no doubled trips.
    assert sum(trips_seen) == circuit.total_trips
    assert circuit.current_sleep_time == 0.0


@pytest.mark.parametrize("run", range(3))
def test_breaking_circuit_breaks_exactly_once_under_contention(
    tiny_switch_interval: None, run: int
) -> None:
    threshold = 12_345
    breaker = BreakingCircuit(threshold, sleep_time_after_trip=1.0)
    results: list[object] = []
    results_lock = threading.Lock()

    def work(index: int) -> None:
        short = breaker.short
        returned = {short() for _ in range(SHORTS_PER_THREAD)}
        with results_lock:
            results.extend(returned)

    with recorded_sleeps() as sleeps:
        run_together(work)

    assert breaker.broken is True
    assert breaker.total_trips == 1
    assert sleeps.durations == [1.0]  # exactly one call broke it (only that call sleeps)
    assert breaker.times_shorted == TOTAL_SHORTS  # a broken circuit keeps counting
    assert set(results) == {None}


SLOW_CASES = [
    # (circuit class, transition, threshold, expected state after THREADS * 1,000 calls)
    (Circuit, circuit_short, 7, (8_000 % 7, 8_000 // 7, 0.0, False)),
    (BreakingCircuit, breaker_short, 500, (8_000, 1, 0.0, True)),
    (BreakingCircuit, breaker_trip, 1_000_000, (0, 1, 0.0, True)),
]


@pytest.mark.parametrize(
    ("kind", "transition", "threshold", "expected"),
    SLOW_CASES,
    ids=[case[1].__name__ for case in SLOW_CASES],
)
def test_store_apply_is_atomic_even_when_the_transition_is_slow(
    kind: type[Circuit], transition: Any, threshold: int, expected: tuple[Any, ...]
) -> None:
    """An injected delay inside the read-modify-write must neither lose an update nor let
    two callers both decide to trip (each trip decision is a sleep somebody would take)."""
    circuit = kind(threshold)
    store = circuit._store
    settings = circuit._settings

    def slow(settings_: Any, state: Any, custom_sleep: Any) -> Any:
        time.sleep(0)  # releases the GIL between the read and the write of the state
        return transition(settings_, state, custom_sleep)

    per_thread = 1_000
    assert THREADS * per_thread == 8_000
    decisions = [0] * THREADS

    def work(index: int) -> None:
        trips = 0
        for _ in range(per_thread):
            if store.apply(slow, settings, None) is not None:
                trips += 1
        decisions[index] = trips

    run_together(work)

    assert store.read() == expected
    assert sum(decisions) == expected[1]  # one trip decision per counted trip


# -- the sleep happens outside the lock -------------------------------------------------


class BlockingSleep:
    """A replacement for ``time.sleep`` that parks the sleeper until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.durations: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.durations.append(seconds)
        self.entered.set()
        assert self.release.wait(JOIN_TIMEOUT), "the test never released the sleeper"


@pytest.fixture
def blocking_sleep(monkeypatch: pytest.MonkeyPatch) -> Iterator[BlockingSleep]:
    sleep = BlockingSleep()
    monkeypatch.setattr(_waiting.hooks, "sleep", sleep)
    try:
        yield sleep
    finally:
        sleep.release.set()  # never leave a thread parked, whatever happened


def test_others_short_while_a_tripping_call_sleeps(blocking_sleep: BlockingSleep) -> None:
    circuit = Circuit(2, sleep_time_after_trip=5.0)
    assert circuit.short() is False
    a_result: list[bool] = []
    a = threading.Thread(target=lambda: a_result.append(circuit.short()), daemon=True)
    a.start()
    assert blocking_sleep.entered.wait(JOIN_TIMEOUT)

    # A is parked inside its sleep. Everyone else sees the post-trip state and can work.
    b_result: list[tuple[int, int, bool]] = []

    def b() -> None:
        trips, shorts = circuit.total_trips, circuit.times_shorted
        b_result.append((trips, shorts, circuit.short()))

    b_thread = threading.Thread(target=b, daemon=True)
    b_thread.start()
    b_thread.join(10.0)
    assert not b_thread.is_alive(), "B blocked while A slept: the sleep holds the lock"
    assert b_result == [(1, 0, False)]
    assert a.is_alive() and a_result == []
    assert circuit.times_shorted == 1

    blocking_sleep.release.set()
    a.join(JOIN_TIMEOUT)
    assert a_result == [True]
    assert blocking_sleep.durations == [5.0]
    assert (circuit.total_trips, circuit.times_shorted) == (1, 1)


def test_breaker_is_seen_broken_while_the_breaking_call_sleeps(
    blocking_sleep: BlockingSleep,
) -> None:
    breaker = BreakingCircuit(1, sleep_time_after_trip=5.0)
    a = threading.Thread(target=breaker.short, daemon=True)
    a.start()
    assert blocking_sleep.entered.wait(JOIN_TIMEOUT)

    seen: list[tuple[bool, int, int]] = []

    def observer() -> None:
        seen.append((breaker.broken, breaker.total_trips, breaker.times_shorted))
        breaker.short()  # counts only: a broken circuit does not sleep again
        breaker.trip()  # does nothing on a broken circuit
        seen.append((breaker.broken, breaker.total_trips, breaker.times_shorted))

    observer_thread = threading.Thread(target=observer, daemon=True)
    observer_thread.start()
    observer_thread.join(10.0)
    assert not observer_thread.is_alive(), "observer blocked while the breaker slept"
    assert seen == [(True, 1, 1), (True, 1, 2)]
    assert a.is_alive()

    blocking_sleep.release.set()
    a.join(JOIN_TIMEOUT)
    assert not a.is_alive()
    assert blocking_sleep.durations == [5.0]


def test_real_sleep_does_not_block_other_threads() -> None:
    circuit = Circuit(2, sleep_time_after_trip=0.5)
    assert circuit.short() is False
    a_done = threading.Event()
    a_result: list[bool] = []

    def a() -> None:
        a_result.append(circuit.short())
        a_done.set()

    a_thread = threading.Thread(target=a, daemon=True)
    a_thread.start()

    # Wait (polling, generous deadline) for A's state change; A then sleeps ~0.5 s.
    deadline = time.monotonic() + 10.0
    while circuit.total_trips == 0:
        assert time.monotonic() < deadline, "A never tripped"
        time.sleep(0.001)

    assert circuit.times_shorted == 0
    assert circuit.short() is False  # B: returns at once, not after A's sleep
    assert not a_done.is_set(), "B's short() waited for A's sleep to finish"
    assert circuit.times_shorted == 1

    assert a_done.wait(10.0)
    a_thread.join(JOIN_TIMEOUT)
    assert a_result == [True]
    assert (circuit.total_trips, circuit.times_shorted) == (1, 1)


# -- coordinated shutdown (the page's example) -------------------------------------------


class FatalError(Exception):
    pass


def test_coordinated_shutdown_stops_every_worker(capsys: pytest.CaptureFixture[str]) -> None:
    shutdown = BreakingCircuit(num_shorts_to_trip=1)
    workers = 4
    processed = [0] * workers
    stopped: list[int] = []
    stopped_lock = threading.Lock()
    everyone_working = threading.Barrier(workers)
    give_up = threading.Event()  # only used if the shutdown never arrives

    def process_next_item(worker_id: int) -> None:
        if give_up.is_set():
            raise SystemExit  # ends this thread without recording a graceful shutdown
        processed[worker_id] += 1
        if processed[worker_id] == 1:
            # Nobody stops before all four are inside their loops.
            everyone_working.wait(timeout=JOIN_TIMEOUT)
        if worker_id == 2 and processed[worker_id] == 50:
            raise FatalError("disk on fire")

    def worker(worker_id: int) -> None:
        while not shutdown.broken:
            try:
                process_next_item(worker_id)
            except FatalError:
                shutdown.short()  # all workers see this immediately
        print(f"Worker {worker_id}: shutting down gracefully")
        with stopped_lock:
            stopped.append(worker_id)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    still_running = join_all(threads, timeout=30.0)
    give_up.set()
    join_all(threads)

    assert still_running == [], "these workers never saw the shutdown"
    assert sorted(stopped) == [0, 1, 2, 3]
    assert all(count >= 1 for count in processed)
    assert processed[2] == 50
    assert shutdown.broken is True
    assert (shutdown.total_trips, shutdown.times_shorted) == (1, 1)
    lines = sorted(capsys.readouterr().out.splitlines())
    assert lines == [f"Worker {i}: shutting down gracefully" for i in range(workers)]
