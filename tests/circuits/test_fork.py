"""Circuits in child processes: ``os.fork()`` while another thread holds the circuit's
lock, and circuits passed (pickled) to ``multiprocessing`` children under every start
method. A child gets an independent copy with the same configuration and state.

Every child is bounded: a forked child arms ``signal.alarm`` so a deadlock kills it, the
parent waits with a deadline and kills that exact pid if needed, and multiprocessing
children are joined (or terminated by their own handle). No process is left behind.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

import pytest

from suitkaise import BreakingCircuit, Circuit

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

CHILD_ALARM = 5  # seconds before a stuck forked child is killed by SIGALRM
DEADLINE = 30.0  # seconds the parent waits for any child
START_METHODS = [
    method
    for method in ("fork", "spawn", "forkserver")
    if method in multiprocessing.get_all_start_methods()
]
# Forking a process that has threads is exactly what these tests are about.
fork_with_threads = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork\\(\\) may lead to deadlocks"
)


def snapshot(circuit: Circuit | BreakingCircuit) -> dict[str, Any]:
    """Configuration and state, as plain JSON-able values."""
    data: dict[str, Any] = {
        "class": type(circuit).__name__,
        "num_shorts_to_trip": circuit.num_shorts_to_trip,
        "sleep_time_after_trip": circuit.sleep_time_after_trip,
        "backoff_factor": circuit.backoff_factor,
        "max_sleep_time": circuit.max_sleep_time,
        "jitter": circuit.jitter,
        "times_shorted": circuit.times_shorted,
        "total_trips": circuit.total_trips,
        "current_sleep_time": circuit.current_sleep_time,
    }
    if isinstance(circuit, BreakingCircuit):
        data["broken"] = circuit.broken
    return data


@pytest.fixture(autouse=True)
def no_children_left() -> Iterator[None]:
    yield
    assert multiprocessing.active_children() == []


# -- os.fork() while another thread holds the lock -----------------------------------------


class LockHolder:
    """A thread that holds ``lock`` until told to let go."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.holding = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.lock:
            self.holding.set()
            self.release.wait(DEADLINE)

    def __enter__(self) -> LockHolder:
        self.thread.start()
        assert self.holding.wait(DEADLINE)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()


def wait_for_pid(pid: int) -> int:
    """The exit status of ``pid``; kill it (that pid only) if it outlives the deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"forked child {pid} hung and was killed")
        time.sleep(0.005)


def fork_and_run(circuit: Circuit | BreakingCircuit, shorts: int) -> tuple[int, dict[str, Any]]:
    """Fork; in the child, read the state, short ``shorts`` times and report through a
    pipe. Returns the child's exit status and its report."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 2
        try:
            os.close(read_end)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(CHILD_ALARM)  # a deadlock on the lock ends here, not in a hang
            report: dict[str, Any] = {"before": snapshot(circuit)}
            report["returns"] = [circuit.short() for _ in range(shorts)]
            report["after"] = snapshot(circuit)
            os.write(write_end, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        status = wait_for_pid(pid)
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
    report = json.loads(b"".join(chunks)) if chunks else {}
    return status, report


@fork_with_threads
def test_forked_child_can_use_a_circuit_whose_lock_another_thread_holds() -> None:
    circuit = Circuit(3, sleep_time_after_trip=0.01, backoff_factor=2.0, max_sleep_time=1.0)
    circuit.short()
    before = snapshot(circuit)
    assert before["times_shorted"] == 1

    with LockHolder(circuit._store._lock):
        status, report = fork_and_run(circuit, shorts=2)

    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
        f"child failed (status {status}): a lock held at fork time deadlocked it?"
    )
    assert report["before"] == before  # the child saw the parent's state at fork time
    assert report["returns"] == [False, True]
    assert report["after"] == {
        **before,
        "times_shorted": 0,
        "total_trips": 1,
        "current_sleep_time": 0.02,
    }
    # The child's changes stayed in the child; the parent's circuit still works.
    assert snapshot(circuit) == before
    assert circuit.short() is False
    assert circuit.times_shorted == 2


@fork_with_threads
def test_forked_child_can_use_a_breaker_whose_lock_another_thread_holds() -> None:
    breaker = BreakingCircuit(2)
    breaker.short()
    before = snapshot(breaker)

    with LockHolder(breaker._store._lock):
        status, report = fork_and_run(breaker, shorts=3)

    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}"
    assert report["before"] == before
    assert report["returns"] == [None, None, None]
    assert report["after"] == {**before, "times_shorted": 4, "total_trips": 1, "broken": True}
    assert snapshot(breaker) == before
    assert breaker.broken is False


def test_forked_child_without_contention_is_independent() -> None:
    circuit = Circuit(2)
    status, report = fork_and_run(circuit, shorts=5)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert report["returns"] == [False, True, False, True, False]
    assert (report["after"]["total_trips"], report["after"]["times_shorted"]) == (2, 1)
    assert (circuit.total_trips, circuit.times_shorted) == (0, 0)


# -- multiprocessing children, every start method ----------------------------------------


def child_shorts(circuit: Circuit | BreakingCircuit, shorts: int, conn: Connection) -> None:
    """Module level, so that spawn and forkserver children can import it."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(CHILD_ALARM)  # a deadlock on the lock kills the child instead of hanging
    try:
        before = snapshot(circuit)
        returns = [circuit.short() for _ in range(shorts)]
        conn.send(
            {"before": before, "returns": returns, "after": snapshot(circuit), "circuit": circuit}
        )
    except BaseException as error:
        conn.send({"error": repr(error)})
        raise
    finally:
        signal.alarm(0)
        conn.close()


def run_child(
    method: str,
    circuit: Circuit | BreakingCircuit,
    shorts: int,
    hold_lock_while_starting: bool = False,
) -> dict[str, Any]:
    """Start a child of ``method`` running ``child_shorts``; return its report. The child
    is always joined, or terminated through its own handle if it outlives the deadline."""
    ctx = multiprocessing.get_context(method)
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=child_shorts, args=(circuit, shorts, sender))
    try:
        if hold_lock_while_starting:
            with LockHolder(circuit._store._lock):
                process.start()
        else:
            process.start()
        sender.close()  # the child has its own end; EOF then means the child is gone
        # Wake on the report or on the child's death (a deadlocked child is killed by its
        # alarm), whichever comes first: never wait out the whole deadline for nothing.
        ready = wait([receiver, process.sentinel], timeout=DEADLINE)
        assert ready, f"child {process.pid} neither reported nor exited within {DEADLINE} s"
        try:
            report: dict[str, Any] = receiver.recv() if receiver.poll(1.0) else {}
        except EOFError:
            report = {}
        process.join(DEADLINE)
        assert report, f"child died without a report (exit code {process.exitcode})"
        assert process.exitcode == 0, f"child exit code {process.exitcode}"
    finally:
        if process.is_alive():
            process.terminate()
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
        receiver.close()
        sender.close()
    assert "error" not in report, report.get("error")
    return report


def backed_off_circuit() -> Circuit:
    """A circuit with non-default configuration and non-initial state in every field."""
    import random

    circuit = Circuit(
        3,
        sleep_time_after_trip=0.01,
        backoff_factor=2.0,
        max_sleep_time=1.0,
        jitter=0.25,
        rng=random.Random(3),
    )
    for _ in range(4):  # one trip (sleeps ~0.01 s), then one short
        circuit.short()
    assert (circuit.times_shorted, circuit.total_trips, circuit.current_sleep_time) == (1, 1, 0.02)
    return circuit


def mended_breaker() -> BreakingCircuit:
    breaker = BreakingCircuit(2, sleep_time_after_trip=0.01, backoff_factor=2.0, max_sleep_time=1.0)
    breaker.short()
    breaker.short()  # breaks (sleeps 0.01 s)
    breaker.reset()  # ends the break: the backoff advances
    breaker.short()
    assert snapshot(breaker)["times_shorted"] == 1
    assert (breaker.total_trips, breaker.current_sleep_time, breaker.broken) == (1, 0.02, False)
    return breaker


@pytest.mark.parametrize("method", START_METHODS)
@fork_with_threads
def test_circuit_in_a_multiprocessing_child(method: str) -> None:
    circuit = backed_off_circuit()
    before = snapshot(circuit)

    report = run_child(method, circuit, shorts=2)

    assert report["before"] == before
    assert report["returns"] == [False, True]
    expected_after = {**before, "times_shorted": 0, "total_trips": 2, "current_sleep_time": 0.04}
    assert report["after"] == expected_after
    # The circuit sent back from the child carries the child's state.
    returned = report["circuit"]
    assert type(returned) is Circuit
    assert snapshot(returned) == expected_after
    # The parent's circuit is an independent copy: untouched, and still usable.
    assert snapshot(circuit) == before
    assert circuit.short() is False


@pytest.mark.parametrize("method", START_METHODS)
@fork_with_threads
def test_breaking_circuit_in_a_multiprocessing_child(method: str) -> None:
    breaker = mended_breaker()
    before = snapshot(breaker)

    report = run_child(method, breaker, shorts=3)

    assert report["before"] == before
    assert report["returns"] == [None, None, None]
    expected_after = {**before, "times_shorted": 4, "total_trips": 2, "broken": True}
    assert report["after"] == expected_after
    assert snapshot(report["circuit"]) == expected_after
    assert snapshot(breaker) == before
    assert breaker.broken is False


@fork_with_threads
def test_multiprocessing_fork_child_while_another_thread_holds_the_lock() -> None:
    """Under the fork start method the arguments are inherited, not pickled: the child's
    circuit is the parent's memory, including a lock that was held at fork time."""
    circuit = backed_off_circuit()
    before = snapshot(circuit)

    report = run_child("fork", circuit, shorts=2, hold_lock_while_starting=True)

    assert report["before"] == before
    assert report["returns"] == [False, True]
    assert snapshot(circuit) == before
    assert circuit.short() is False  # the parent's lock was released by its holder
