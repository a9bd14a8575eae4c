"""Circuits on Redis (issue 5), against the real redis-server of the ``redis_server`` fixture.

SPEC section 1 as a whole is proven on Redis by ``test_store_conformance.py`` (its ``redis``
store). This file covers what is particular to Redis:

- the Lua script and the pure Python transitions agree (Hypothesis, exact floats);
- one circuit per (server, name), the key layout, and exact counts across processes;
- only the tripping caller sleeps, and ``.asynced()`` never blocks the event loop;
- the first creator's configuration wins, and a different one is refused;
- faults: an unreachable or silent server, the server stopped in the middle of a run (with and
  without ``fallback=True``), connections killed by the server;
- ``import suitkaise`` stays free of redis-py, and a ``RedisStore`` travels to other processes.

What the fault tests observe (persistence is off, so a restarted server is empty):
- With ``fallback`` off, a call fails with ``RedisStoreError`` (naming the server URL) as soon as
  the server is gone; once it is back, the next call recreates the circuit afresh (initial
  state, the stored configuration of that first call) and goes on. The previous state is lost.
- With ``fallback=True``, calls continue on a local copy of the last state this process saw,
  with one ``RuntimeWarning`` per outage; Redis is not knocked again before
  ``retry_interval``; after that the next call reaches the restarted server, recreates the
  circuit afresh (the local changes are not merged) and every later call goes to Redis again.
- A connection killed by the server (``CLIENT KILL``) is replaced transparently: the next call
  is re-sent on a new connection (with the same operation id) and succeeds, sync and async.
- A silent server (accepts, never answers) fails a call after about ``timeout``.

``test_redis_faults.py`` covers the rest: lost and late replies, credentials and TLS, every
refusal named, shared connections, forks, many threads.

Children are spawned (as on another machine: nothing inherited), always joined, and
terminated by their own handle if they outlive the deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import pickle
import random
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suitkaise import BreakingCircuit, Circuit
from suitkaise.circuits import _transitions
from suitkaise.circuits import redis as redis_module
from suitkaise.circuits._settings import Settings
from suitkaise.circuits._waiting import jittered
from suitkaise.circuits.redis import KEY_PREFIX, RedisStore, RedisStoreError
from suitkaise.circuits.testing import recorded_sleeps

DEADLINE = 60.0  # seconds the parent waits for any child
TIMEOUT = 0.5  # the RedisStore timeout of the fault tests
# A call that cannot reach the server fails within about `timeout` (twice that if it must open a
# connection first), plus a generous margin for a loaded machine.
FAIL_WITHIN = 2 * TIMEOUT + 1.5

SPAWN = multiprocessing.get_context("spawn")


def state(circuit: Any) -> tuple[Any, ...]:
    return (
        circuit.times_shorted,
        circuit.total_trips,
        circuit.current_sleep_time,
        getattr(circuit, "broken", None),
    )


@contextmanager
def raw_client(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    try:
        yield client
    finally:
        client.close()


def stored(client: redis.Redis, name: str) -> dict[str, str]:
    """A circuit's hash without the memory of its operation ids (the lanes' records and
    the time they were last swept), which ``lanes`` reads."""
    return {
        k.decode(): v.decode()
        for k, v in client.hgetall(KEY_PREFIX + name).items()
        if not k.startswith(redis_module.LANE_PREFIX.encode()) and k != b"swept"
    }


def lanes(client: redis.Redis, name: str) -> dict[str, str]:
    """The lanes' records in a circuit's hash: ``{field: "number time reply"}``."""
    return {
        k.decode(): v.decode()
        for k, v in client.hgetall(KEY_PREFIX + name).items()
        if k.startswith(redis_module.LANE_PREFIX.encode())
    }


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there any more


def ensure_running(server: Any) -> None:
    """Restart the session's server after an outage test; never a second one beside it."""
    if server.process is None or server.process.poll() is not None:
        server.start()


@pytest.fixture(autouse=True)
def no_children_left() -> Iterator[None]:
    yield
    assert multiprocessing.active_children() == []


def run_children(target: Callable[..., None], args_list: list[tuple[Any, ...]]) -> list[Any]:
    """Run one spawned child per ``args`` (each gets a result queue as its last argument),
    and return what each put on it, in the order of ``args_list``."""
    results = SPAWN.Queue()
    children = [
        SPAWN.Process(target=target, args=(*args, results), daemon=True) for args in args_list
    ]
    try:
        for child in children:
            child.start()
        got = [results.get(timeout=DEADLINE) for _ in children]
        for child in children:
            child.join(DEADLINE)
            assert child.exitcode == 0, f"child {child.pid} exited with {child.exitcode}"
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
                child.join(5)
        results.close()
        results.join_thread()
    got.sort(key=lambda item: item[0])
    return [item[1] for item in got]


# -- the Lua script mirrors the Python transitions --------------------------------------------

FLOATS = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
NICE = st.sampled_from([0.0, 0.1, 1 / 3, 0.5, 1.0, 2.5, 7.0, 60.0])
SLEEPS = st.one_of(NICE, FLOATS)
FACTORS = st.one_of(st.just(1.0), st.sampled_from([1.1, 1.5, 2.0, 3.0]), st.floats(1.0, 10.0))


@st.composite
def configurations(draw: st.DrawFn) -> dict[str, Any]:
    factor = draw(FACTORS)
    first, second = draw(SLEEPS), draw(SLEEPS)
    if factor > 1.0:  # the combination rule: the first sleep may not exceed the cap
        sleep, cap = min(first, second), max(first, second)
    else:  # with factor 1 the cap is irrelevant, including a cap below the sleep
        sleep, cap = first, second
    return {
        "num_shorts_to_trip": draw(st.integers(1, 5)),
        "sleep_time_after_trip": sleep,
        "backoff_factor": factor,
        "max_sleep_time": cap,
    }


OPERATIONS = {
    "Circuit": ["short", "short_custom", "trip", "trip_custom", "reset_backoff"],
    "BreakingCircuit": ["short", "short_custom", "trip", "trip_custom", "reset", "reset_backoff"],
}


def perform(circuit: Any, operation: str, custom: float) -> Any:
    if operation.endswith("_custom"):
        return getattr(circuit, operation.removesuffix("_custom"))(custom_sleep=custom)
    return getattr(circuit, operation)()


MIRROR_NAMES = itertools.count()


def hypothesis_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@hypothesis_settings(120)
@given(
    kind=st.sampled_from(["Circuit", "BreakingCircuit"]),
    config=configurations(),
    steps=st.lists(
        st.tuples(st.sampled_from(range(6)), st.one_of(NICE, FLOATS)), min_size=1, max_size=25
    ),
)
def test_lua_and_python_agree_on_random_runs(
    redis_url: str, kind: str, config: dict[str, Any], steps: list[tuple[int, float]]
) -> None:
    cls = {"Circuit": Circuit, "BreakingCircuit": BreakingCircuit}[kind]
    local = cls(**config)
    redis_store = RedisStore(redis_url, f"mirror-{next(MIRROR_NAMES)}")
    with closing(redis_store):
        remote = cls(**config, store=redis_store)
        assert state(remote) == state(local)
        operations = OPERATIONS[kind]
        for index, custom in steps:
            operation = operations[index % len(operations)]
            with recorded_sleeps() as local_sleeps:
                local_result = perform(local, operation, custom)
            with recorded_sleeps() as remote_sleeps:
                remote_result = perform(remote, operation, custom)
            assert remote_result == local_result, operation
            assert type(remote_result) is type(local_result)
            assert remote_sleeps.durations == local_sleeps.durations, operation
            assert state(remote) == state(local), operation
            assert type(remote.current_sleep_time) is float


TRANSITIONS: list[tuple[str, Any]] = [
    ("Circuit", _transitions.circuit_short),
    ("Circuit", _transitions.circuit_trip),
    ("Circuit", _transitions.reset_backoff),
    ("BreakingCircuit", _transitions.breaker_short),
    ("BreakingCircuit", _transitions.breaker_trip),
    ("BreakingCircuit", _transitions.breaker_reset),
    ("BreakingCircuit", _transitions.reset_backoff),
]
# As wide as a duration may be (suitkaise._validation.MAX_SECONDS).
WIDE_FLOATS = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)
COUNTS = st.one_of(st.integers(0, 8), st.integers(0, 2**40))


@hypothesis_settings(300)
@given(
    which=st.sampled_from(range(len(TRANSITIONS))),
    threshold=st.one_of(st.integers(1, 8), st.integers(1, 2**40)),
    sleeps=st.tuples(st.one_of(NICE, WIDE_FLOATS), st.one_of(NICE, WIDE_FLOATS)),
    factor=st.one_of(FACTORS, st.floats(1.0, 1e6)),
    start=st.tuples(COUNTS, COUNTS, st.one_of(NICE, WIDE_FLOATS), st.booleans()),
    custom=st.one_of(st.none(), NICE, WIDE_FLOATS),
)
def test_lua_mirrors_each_transition_from_any_state(
    redis_url: str,
    which: int,
    threshold: int,
    sleeps: tuple[float, float],
    factor: float,
    start: tuple[int, int, float, bool],
    custom: float | None,
) -> None:
    """Any state written into the hash, one transition: the script's decision and new state
    are exactly those of the Python function (floats to the last bit)."""
    kind, transition = TRANSITIONS[which]
    sleep, cap = (min(sleeps), max(sleeps)) if factor > 1.0 else sleeps
    config = Settings.create(threshold, sleep, factor, cap)
    name = f"mirror-{next(MIRROR_NAMES)}"
    redis_store = RedisStore(redis_url, name)
    with closing(redis_store), raw_client(redis_url) as client:
        store = redis_store.open(kind, config)
        shorts, trips, current, broken = start
        client.hset(
            KEY_PREFIX + name,
            mapping={
                "shorts": shorts,
                "trips": trips,
                "current": repr(current),
                "broken": "1" if broken else "0",
            },
        )
        assert store.read() == start
        expected_state, expected_sleep = transition(config, start, custom)
        assert store.apply(transition, config, custom) == expected_sleep
        assert store.read() == expected_state


# -- one circuit per (server, name); the key layout -------------------------------------------


def test_same_server_and_name_is_one_circuit(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    first = Circuit(3, sleep_time_after_trip=0.0, store=RedisStore(redis_url, "api"))
    second = Circuit(3, store=RedisStore(client, "api"))  # a redis-py client, not a URL
    third = Circuit(3, store=RedisStore(redis_url, "api"))
    assert [first.short(), second.short(), third.short(), first.short()] == [
        False,
        False,
        True,
        False,
    ]
    for circuit in (first, second, third):
        assert state(circuit) == (1, 1, 0.0, None)

    breaker = BreakingCircuit(2, store=RedisStore(redis_url, "breaker"))
    twin = BreakingCircuit(2, store=RedisStore(client, "breaker"))
    breaker.short()
    twin.short()
    assert breaker.broken is True and twin.broken is True
    twin.reset()
    assert state(breaker) == (0, 1, 0.0, False)
    client.close()


def test_different_names_never_interfere(redis_url: str) -> None:
    names = ["a", "a:b", "b", "A", "a ", "payments-api", "ünï {x}*?"]
    circuits = {name: Circuit(2, store=RedisStore(redis_url, name)) for name in names}
    for shorts, name in enumerate(names, start=1):
        for _ in range(shorts):
            circuits[name].short()
    for shorts, name in enumerate(names, start=1):
        assert (circuits[name].times_shorted, circuits[name].total_trips) == (
            shorts % 2,
            shorts // 2,
        ), name
    # The same name in another database of the same server is another circuit.
    other_db = re.sub(r"/0$", "/1", redis_url)
    assert other_db != redis_url
    elsewhere = Circuit(5, store=RedisStore(other_db, "a"))  # another config is fine there
    elsewhere.short()
    assert elsewhere.times_shorted == 1 and circuits["a"].times_shorted == 1
    with raw_client(other_db) as client:
        assert client.keys(KEY_PREFIX + "*") == [(KEY_PREFIX + "a").encode()]
        client.flushdb()


def test_keys_one_hash_per_circuit_under_the_prefix(redis_url: str) -> None:
    assert KEY_PREFIX == "suitkaise:circuit:"
    circuit = Circuit(
        3,
        sleep_time_after_trip=1.5,
        backoff_factor=2.0,
        max_sleep_time=5.0,
        jitter=0.25,
        store=RedisStore(redis_url, "orders"),
    )
    breaker = BreakingCircuit(2, sleep_time_after_trip=0.1, store=RedisStore(redis_url, "pay"))
    with recorded_sleeps(seed=1):
        for _ in range(4):
            circuit.short()
        breaker.short()
        breaker.short()
        asyncio.run(circuit.short.asynced()())
    with raw_client(redis_url) as client:
        assert sorted(client.keys(KEY_PREFIX + "*")) == [
            b"suitkaise:circuit:orders",
            b"suitkaise:circuit:pay",
        ]
        # Nothing besides the circuits: the operation ids are remembered inside each
        # circuit's hash, one field per lane that used it (here one: the calls never
        # overlapped), where nothing evicts or expires them apart from the circuit.
        assert client.keys("*") == client.keys(KEY_PREFIX + "*")
        assert client.type("suitkaise:circuit:orders") == b"hash"
        prefix = redis_module.LANE_PREFIX + redis_module._ids.prefix.decode() + ":"
        for name in ("orders", "pay"):
            records = lanes(client, name)
            assert len(records) == 1 and next(iter(records)).startswith(prefix), records
            number, at, _ = next(iter(records.values())).split(" ", 2)
            assert int(number) > 0 and abs(int(at) - client.time()[0]) < 60
            # Swept (quiet lanes forgotten) by the first operation, next after a window.
            assert 0 < int(client.hget(KEY_PREFIX + name, "swept")) <= int(at)
        assert stored(client, "orders") == {
            "kind": "Circuit",
            "threshold": "3",
            "sleep": "1.5",
            "factor": "2",
            "cap": "5",
            "jitter": "0.25",
            "config": "Circuit 3 1.5 2 5 0.25",
            "shorts": "2",
            "trips": "1",
            "current": "3",
            "broken": "0",
        }
        assert stored(client, "pay") == {
            "kind": "BreakingCircuit",
            "threshold": "2",
            "sleep": "0.10000000000000001",  # %.17g: round-trips exactly
            "factor": "1",
            "cap": "10",
            "jitter": "0",
            "config": "BreakingCircuit 2 0.10000000000000001 1 10 0",
            "shorts": "2",
            "trips": "1",
            "current": "0.10000000000000001",
            "broken": "1",
        }
        assert float(stored(client, "pay")["current"]) == 0.1


# -- exact counts across processes; only the tripping caller sleeps ---------------------------


def _short_700_times(url: str, name: str, barrier: Any, index: int, results: Any) -> None:
    circuit = Circuit(
        7,
        sleep_time_after_trip=1.0,
        jitter=0.5,
        rng=random.Random(index),
        store=RedisStore(url, name),
    )
    barrier.wait(DEADLINE)
    with recorded_sleeps() as sleeps:
        trips = sum(1 for _ in range(700) if circuit.short())
    results.put((index, (os.getpid(), trips, sleeps.durations)))


@pytest.mark.slow
def test_four_processes_count_exactly_and_only_trippers_sleep(redis_url: str) -> None:
    circuit = Circuit(7, sleep_time_after_trip=1.0, jitter=0.5, store=RedisStore(redis_url, "x"))
    barrier = SPAWN.Barrier(4)
    reports = run_children(_short_700_times, [(redis_url, "x", barrier, i) for i in range(4)])
    assert len({pid for pid, _, _ in reports} | {os.getpid()}) == 5
    trips = [trips for _, trips, _ in reports]
    assert sum(trips) == 400
    assert state(circuit) == (0, 400, 1.0, None)
    for index, (_, count, durations) in enumerate(reports):
        # Each process slept once per trip it returned, jittered with its own generator.
        rng = random.Random(index)
        assert durations == [jittered(1.0, 0.5, rng) for _ in range(count)]


def test_only_the_breaking_caller_sleeps(redis_url: str) -> None:
    sleeper = BreakingCircuit(1, sleep_time_after_trip=0.6, store=RedisStore(redis_url, "b"))
    other = BreakingCircuit(1, sleep_time_after_trip=0.6, store=RedisStore(redis_url, "b"))
    timings: dict[str, float] = {}

    def trip() -> None:
        began = time.monotonic()
        sleeper.short()
        timings["sleeper"] = time.monotonic() - began

    thread = threading.Thread(target=trip)
    thread.start()
    deadline = time.monotonic() + 5
    while not other.broken and time.monotonic() < deadline:
        time.sleep(0.005)
    began = time.monotonic()
    for _ in range(5):  # broken: these only count, and do not sleep
        assert other.short() is None
    timings["other"] = time.monotonic() - began
    assert thread.is_alive()  # the breaking caller is still asleep
    thread.join(5)
    assert timings["sleeper"] >= 0.55
    assert timings["other"] < 0.3
    assert state(other) == (6, 1, 0.6, True)


# -- async: the asyncio client, never the event loop blocked -----------------------------------


class Ticker:
    """Counts how often the event loop gets to run a task that wakes every 5 ms."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task


def test_async_waits_for_a_slow_server_without_blocking_the_loop(redis_url: str) -> None:
    circuit = Circuit(2, sleep_time_after_trip=0.0, store=RedisStore(redis_url, "slow"))

    async def main() -> tuple[list[bool], float, int]:
        short = circuit.short.asynced()
        async with Ticker() as ticker:
            first = await short()  # connects the asyncio client
            with raw_client(redis_url) as client:
                # The server holds every script call (not reads) for 400 ms.
                client.execute_command("CLIENT", "PAUSE", "400", "WRITE")
            began, ticks = time.monotonic(), ticker.ticks
            second = await short()
            return [first, second], time.monotonic() - began, ticker.ticks - ticks

    results, elapsed, ticks = asyncio.run(main())
    assert results == [False, True]
    assert elapsed >= 0.3  # the call really waited for the server...
    assert ticks >= 20  # ...while the loop kept running (about 80 ticks; 0 if blocked)
    assert state(circuit) == (0, 1, 0.0, None)


def test_async_path_uses_asyncio_connections(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``.asynced()`` talks through asyncio streams of the running loop (opened with the
    same settings as the sync path), never through a blocking socket."""
    circuit = BreakingCircuit(2, store=RedisStore(redis_url, "aio"))
    requests: list[bytes] = []
    real = redis_module._AsyncWire.send

    def counting(self: Any, request: bytes) -> None:
        requests.append(request.split(b"\r\n")[2])
        real(self, request)

    def forbidden(*args: Any, **options: Any) -> Any:
        raise AssertionError("a blocking connection was used on the async path")

    async def main() -> list[Any]:
        monkeypatch.setattr(redis_module._AsyncWire, "send", counting)
        monkeypatch.setattr(redis_module._Wire, "exchange", forbidden)
        monkeypatch.setattr(redis_module._Endpoint, "open", forbidden)
        try:
            return [await circuit.short.asynced()(), await circuit.short.asynced()()]
        finally:
            monkeypatch.undo()

    assert asyncio.run(main()) == [None, None]
    assert requests.count(b"EVALSHA") >= 2
    assert state(circuit) == (2, 1, 0.0, True)


def test_async_timeout_raises_without_blocking_the_loop(redis_url: str) -> None:
    circuit = Circuit(3, store=RedisStore(redis_url, "held", timeout=TIMEOUT))
    circuit.short()

    async def main() -> tuple[BaseException | None, float, int]:
        async with Ticker() as ticker:
            await circuit.short.asynced()()  # connects the asyncio client
            with raw_client(redis_url) as client:
                client.execute_command("CLIENT", "PAUSE", "5000", "WRITE")
                began, ticks = time.monotonic(), ticker.ticks
                error: BaseException | None = None
                try:
                    await circuit.short.asynced()()
                except Exception as caught:
                    error = caught
                finally:
                    elapsed = time.monotonic() - began
                    client.execute_command("CLIENT", "UNPAUSE")
            return error, elapsed, ticker.ticks - ticks

    error, elapsed, ticks = asyncio.run(main())
    assert isinstance(error, RedisStoreError), repr(error)
    assert redis_url in str(error)
    assert TIMEOUT * 0.9 <= elapsed <= FAIL_WITHIN
    assert ticks >= elapsed / 0.005 / 4  # the loop ran all along (0 if it had been blocked)
    # The server received the short and ran it once the pause ended: a timed-out call may
    # or may not have been applied (the caller cannot know), but never twice.
    time.sleep(0.05)
    assert (circuit.times_shorted, circuit.total_trips) in [(2, 0), (0, 1)]


def test_async_calls_work_in_successive_event_loops(redis_url: str) -> None:
    """``asyncio.run`` twice on one circuit (as pytest-asyncio or a CLI does per task)."""
    circuit = Circuit(2, store=RedisStore(redis_url, "loops"))
    assert asyncio.run(circuit.short.asynced()()) is False
    assert asyncio.run(circuit.short.asynced()()) is True
    assert asyncio.run(circuit.trip.asynced()()) is True
    assert state(circuit) == (0, 2, 0.0, None)


def test_async_under_trio(redis_url: str) -> None:
    """SPEC 1: ``.asynced()`` works under trio too."""
    trio = pytest.importorskip("trio")
    circuit = Circuit(2, sleep_time_after_trip=0.25, store=RedisStore(redis_url, "trio"))

    async def main() -> list[bool]:
        short = circuit.short.asynced()
        return [await short(), await short()]

    with recorded_sleeps() as sleeps:
        assert trio.run(main) == [False, True]
    assert sleeps.durations == [0.25]
    assert state(circuit) == (0, 1, 0.25, None)


# -- configuration: the first creator's wins ---------------------------------------------------

BASE: dict[str, Any] = {
    "num_shorts_to_trip": 3,
    "sleep_time_after_trip": 1.0,
    "backoff_factor": 2.0,
    "max_sleep_time": 30.0,
    "jitter": 0.1,
}


@pytest.mark.parametrize(
    ("change", "difference"),
    [
        ({"num_shorts_to_trip": 4}, "num_shorts_to_trip: stored 3, yours 4"),
        ({"sleep_time_after_trip": 2.5}, "sleep_time_after_trip: stored 1, yours 2.5"),
        ({"backoff_factor": 1.5}, "backoff_factor: stored 2, yours 1.5"),
        ({"max_sleep_time": 60.0}, "max_sleep_time: stored 30, yours 60"),
        ({"jitter": 0.0}, "jitter: stored 0.10000000000000001, yours 0"),
    ],
)
def test_a_different_configuration_is_refused(
    redis_url: str, change: dict[str, Any], difference: str
) -> None:
    first = Circuit(**BASE, store=RedisStore(redis_url, "cfg"))
    first.short()
    with pytest.raises(ValueError) as info:
        Circuit(**{**BASE, **change}, store=RedisStore(redis_url, "cfg"))
    message = str(info.value)
    assert "'cfg'" in message and redis_url in message
    assert difference in message
    assert message.count("stored") == 1  # only the differing parameter is named
    with raw_client(redis_url) as client:  # the stored configuration and state are untouched
        assert stored(client, "cfg") == {
            "kind": "Circuit", "threshold": "3", "sleep": "1", "factor": "2", "cap": "30",
            "jitter": "0.10000000000000001", "config": "Circuit 3 1 2 30 0.10000000000000001",
            "shorts": "1", "trips": "0", "current": "1", "broken": "0",
        }  # fmt: skip
        assert client.keys(KEY_PREFIX + "*") == [b"suitkaise:circuit:cfg"]


def test_the_same_configuration_is_accepted(redis_url: str) -> None:
    first = Circuit(**BASE, store=RedisStore(redis_url, "same"))
    first.short()
    again = Circuit(
        3,
        sleep_time_after_trip=timedelta(seconds=1),
        backoff_factor=2,
        max_sleep_time=timedelta(seconds=30),
        jitter=0.1,
        store=RedisStore(redis_url, "same"),
    )
    assert again.times_shorted == 1
    again.short()
    assert first.times_shorted == 2


@pytest.mark.parametrize(
    ("first_kind", "later_kind"),
    [(Circuit, BreakingCircuit), (BreakingCircuit, Circuit)],
)
def test_a_different_kind_is_refused(redis_url: str, first_kind: Any, later_kind: Any) -> None:
    first = first_kind(3, store=RedisStore(redis_url, "kind"))
    first.short()
    with pytest.raises(ValueError) as info:
        later_kind(3, store=RedisStore(redis_url, "kind"))
    assert f"kind: stored {first_kind.__name__}, yours {later_kind.__name__}" in str(info.value)
    assert first.times_shorted == 1
    with raw_client(redis_url) as client:
        assert stored(client, "kind")["kind"] == first_kind.__name__


# -- faults ---------------------------------------------------------------------------------


def test_an_unreachable_server_fails_fast_and_names_it() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    began = time.monotonic()
    with pytest.raises(RedisStoreError) as info:
        Circuit(3, store=RedisStore(url, "nowhere", timeout=TIMEOUT))
    assert time.monotonic() - began < FAIL_WITHIN
    assert url in str(info.value)
    assert isinstance(info.value, ConnectionError)


def test_a_silent_server_fails_within_the_timeout() -> None:
    """A server that accepts connections but never answers: the call gives up in time."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        began = time.monotonic()
        with pytest.raises(RedisStoreError) as info:
            Circuit(3, store=RedisStore(url, "silent", timeout=TIMEOUT))
        elapsed = time.monotonic() - began
    assert TIMEOUT * 0.9 <= elapsed <= FAIL_WITHIN
    assert url in str(info.value)


BUSY_LUA = """
local began = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - began[1]) + (now[2] - began[2]) / 1e6 > tonumber(ARGV[1])
return 1
"""


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_reply_slower_than_the_timeout_is_not_applied_twice(redis_url: str, path: str) -> None:
    """Another client keeps the server busy for longer than the timeout while a short is in
    flight. Whatever the caller sees (a result, or RedisStoreError), the short is counted
    once: the server received it once. (A retry that re-sends the script after a timeout
    counts it twice, and breaks the exact counts.)"""
    circuit = Circuit(1000, store=RedisStore(redis_url, "busy", timeout=TIMEOUT))
    circuit.short()

    def in_flight(short: Callable[[], Any]) -> Any:
        with raw_client(redis_url) as client:
            busy = threading.Thread(target=client.eval, args=(BUSY_LUA, 0, TIMEOUT * 1.6))
            busy.start()
            time.sleep(0.05)  # the busy script runs; the server answers nobody meanwhile
            try:
                outcome = short()
            except RedisStoreError as error:
                outcome = error
            busy.join(10)
            assert not busy.is_alive()
        return outcome

    if path == "sync":
        outcome = in_flight(circuit.short)
    else:

        async def main() -> Any:
            await circuit.short.asynced()()  # connects the asyncio client
            loop = asyncio.get_running_loop()

            def short_on_the_loop() -> Any:
                coroutine = circuit.short.asynced()()
                return asyncio.run_coroutine_threadsafe(coroutine, loop).result(10)

            # in_flight runs in a worker thread; the short is awaited on this loop.
            return await loop.run_in_executor(None, in_flight, short_on_the_loop)

        outcome = asyncio.run(main())
    time.sleep(0.05)
    expected = 2 if path == "sync" else 3
    assert circuit.times_shorted == expected, f"one short counted twice ({outcome!r})"


def test_stopping_the_server_mid_run_raises_then_the_circuit_is_recreated(
    redis_server: Any, redis_url: str
) -> None:
    circuit = BreakingCircuit(50, store=RedisStore(redis_url, "run", timeout=TIMEOUT))
    failed_at = None
    try:
        for i in range(300):
            if i == 100:
                redis_server.stop()
            began = time.monotonic()
            try:
                circuit.short()
            except RedisStoreError as error:
                failed_at, elapsed, message = i, time.monotonic() - began, str(error)
                break
        assert failed_at == 100
        assert elapsed < FAIL_WITHIN
        assert redis_url in message
        for call in (lambda: circuit.broken, circuit.reset, circuit.trip):
            with pytest.raises(RedisStoreError, match=re.escape(redis_url)):
                call()
        with pytest.raises(RedisStoreError, match=re.escape(redis_url)):
            asyncio.run(circuit.short.asynced()())
    finally:
        ensure_running(redis_server)
    # Persistence is off: the restarted server is empty. The next call recreates the
    # circuit afresh (the state before the outage is lost) and carries on.
    assert circuit.short() is None
    assert state(circuit) == (1, 0, 0.0, False)
    with raw_client(redis_url) as client:
        assert stored(client, "run")["kind"] == "BreakingCircuit"
        assert stored(client, "run")["shorts"] == "1"


def test_fallback_continues_locally_then_returns_to_redis(
    redis_server: Any, redis_url: str
) -> None:
    # Long enough that restarting redis-server on a busy machine fits well inside it.
    retry = 3.0
    config = {"sleep_time_after_trip": 1.0, "backoff_factor": 2.0, "max_sleep_time": 8.0}

    def store() -> RedisStore:
        return RedisStore(redis_url, "fb", fallback=True, retry_interval=retry, timeout=TIMEOUT)

    circuit = Circuit(3, **config, store=store())
    try:
        with recorded_sleeps() as sleeps, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            def outages() -> list[Any]:
                # Only the store's warnings: a garbage collection in the middle of the test
                # may add ResourceWarnings about other tests' sockets.
                return [w for w in caught if issubclass(w.category, RuntimeWarning)]

            assert [circuit.short() for _ in range(4)] == [False, False, True, False]
            assert outages() == []
            redis_server.stop()
            failed = time.monotonic()
            # On the local copy of the last known state (1, 1, 2.0), without delay.
            assert [circuit.short() for _ in range(5)] == [False, True, False, False, True]
            assert state(circuit) == (0, 3, 8.0, None)
            assert time.monotonic() - failed < TIMEOUT
            assert sleeps.durations == [1.0, 2.0, 4.0]
            assert len(outages()) == 1  # one per outage
            assert redis_url in str(outages()[0].message) and "'fb'" in str(outages()[0].message)
            assert "fallback" in str(outages()[0].message)

            redis_server.start()
            # Within retry_interval Redis is not knocked again: still local.
            assert time.monotonic() - failed < retry - 1.0, "the machine is too slow for this test"
            assert circuit.short() is False
            with raw_client(redis_url) as client:
                assert client.keys("*") == []
            assert state(circuit) == (1, 3, 8.0, None)

            time.sleep(max(0.0, failed + retry + 0.05 - time.monotonic()))
            # Redis answers again: the circuit is recreated there afresh (the outage's local
            # changes are not merged) and from now on every call goes to Redis.
            assert circuit.short() is False
            assert state(circuit) == (1, 0, 1.0, None)
            with raw_client(redis_url) as client:
                assert stored(client, "fb")["shorts"] == "1"
            other = Circuit(3, **config, store=store())
            assert other.short() is False
            assert circuit.short() is True
            assert state(other) == (0, 1, 2.0, None)
            assert len(outages()) == 1

            redis_server.stop()  # a second outage: warned again, from the last known state
            assert circuit.short() is False
            assert state(circuit) == (1, 1, 2.0, None)
            assert len(outages()) == 2, [(w.category.__name__, str(w.message)) for w in caught]
    finally:
        ensure_running(redis_server)


def test_fallback_on_the_async_path(redis_server: Any, redis_url: str) -> None:
    circuit = Circuit(
        2,
        sleep_time_after_trip=0.5,
        store=RedisStore(redis_url, "afb", fallback=True, timeout=TIMEOUT),
    )
    strict = Circuit(
        2, sleep_time_after_trip=0.5, store=RedisStore(redis_url, "afb", timeout=TIMEOUT)
    )

    async def main() -> list[Any]:
        short = circuit.short.asynced()
        results: list[Any] = [await short()]
        redis_server.stop()
        results += [await short(), await short(), await short()]
        try:
            await strict.short.asynced()()
        except RedisStoreError as error:
            results.append(error)
        return results

    try:
        with recorded_sleeps() as sleeps, pytest.warns(RuntimeWarning, match="fallback"):
            results = asyncio.run(main())
    finally:
        ensure_running(redis_server)
    assert results[:4] == [False, True, False, True]
    assert isinstance(results[4], RedisStoreError) and redis_url in str(results[4])
    assert sleeps.durations == [0.5, 0.5]


def test_construction_needs_the_server_even_with_fallback() -> None:
    """Documented decision (RedisStore docstring, docs/redis.md): the configuration is
    checked on the server when the circuit is built, so building one needs the server even
    in fallback mode; fallback covers outages after that."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    started = time.monotonic()
    with pytest.raises(RedisStoreError, match=re.escape(url)):
        Circuit(2, store=RedisStore(url, "offline", fallback=True, timeout=TIMEOUT))
    assert time.monotonic() - started < TIMEOUT + 2.0


def test_killed_connections_are_replaced(redis_url: str) -> None:
    circuit = Circuit(3, store=RedisStore(redis_url, "kill"))
    breaker = BreakingCircuit(2, store=RedisStore(redis_url, "kill2"))
    circuit.short()
    breaker.short()

    async def short_twice_with_a_kill_between() -> list[Any]:
        first = await circuit.short.asynced()()
        with raw_client(redis_url) as client:
            killed = client.client_kill_filter(_type="normal")  # all but this client
        second = await circuit.short.asynced()()
        return [killed, first, second]

    with raw_client(redis_url) as client:
        # The two stores share one connection (same server, settings and timeout).
        assert client.client_kill_filter(_type="normal") >= 1
    assert circuit.short() is False  # re-sent on a new connection, transparently
    assert breaker.broken is False  # reads too
    assert breaker.short() is None and breaker.broken is True
    killed, *results = asyncio.run(short_twice_with_a_kill_between())
    assert killed >= 2  # the sync connection and the asyncio one
    assert results == [True, False]
    assert state(circuit) == (1, 1, 0.0, None)
    with raw_client(redis_url) as client:
        assert stored(client, "kill")["shorts"] == "1"


# -- import weight; pickling into other processes ----------------------------------------------


def test_import_suitkaise_does_not_import_redis() -> None:
    code = (
        "import sys\n"
        "import suitkaise\n"
        "from suitkaise import BreakingCircuit, Circuit\n"
        "Circuit(2).short(); BreakingCircuit(1).short()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'redis'))\n"
        "from suitkaise.circuits.redis import RedisStore\n"
        "RedisStore('redis://127.0.0.1:1/0', 'x')\n"  # builds a client, connects lazily
        "print('redis' in sys.modules)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["[]", "True"]


def _use_pickled(store_bytes: bytes, circuit_bytes: bytes, results: Any) -> None:
    store = pickle.loads(store_bytes)
    circuit = pickle.loads(circuit_bytes)
    mine = Circuit(3, sleep_time_after_trip=0.0, store=store)
    report = {
        "store": (type(store).__name__, store.url, store.name, store.timeout, store.fallback),
        "before": (circuit.times_shorted, mine.times_shorted),
        "returns": [mine.short(), circuit.short(), mine.short()],
    }
    results.put((0, report))


@pytest.mark.slow
def test_a_redis_store_and_circuit_pickle_into_another_process(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client, "pickled", timeout=1.5, fallback=True)
    assert store.url == redis_url  # rebuilt from the client's connection settings
    circuit = Circuit(3, sleep_time_after_trip=0.0, store=store)
    circuit.short()
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.url, copy.name, copy.timeout, copy.fallback) == (
        redis_url, "pickled", 1.5, True,
    )  # fmt: skip
    [report] = run_children(_use_pickled, [(pickle.dumps(store), pickle.dumps(circuit))])
    assert report == {
        "store": ("RedisStore", redis_url, "pickled", 1.5, True),
        "before": (1, 1),
        "returns": [False, True, False],
    }
    assert state(circuit) == (1, 1, 0.0, None)
    client.close()
