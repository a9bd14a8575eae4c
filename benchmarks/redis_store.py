"""Redis store benchmarks: circuits on a RedisStore next to bare redis-py calls, in one run.

    python benchmarks/redis_store.py           # full run, about 35 s on 2 cores
    python benchmarks/redis_store.py --quick   # smoke run, about 5 s (numbers are rough)
    python benchmarks/redis_store.py --pin same    # server and client on one core
    python benchmarks/redis_store.py --pin split   # server and client on two cores

Targets come from shared/PERFORMANCE.md and issue 5. The script starts its own private
``redis-server`` (``tests/redis_server.py``: a free 127.0.0.1 port, persistence off) and
stops it at the end, on error and on Ctrl-C too. Every side talks to that one server over
loopback TCP, through redis-py (with hiredis if it is installed; the header says which).

1. ``Circuit.short()`` (threshold 10**9: it never trips, never sleeps) on a RedisStore,
   against a bare ``client.evalsha(sha, 0)`` of ``return 1``, loaded once: the cheapest
   possible script round trip. Target <= 1.2x, with the operation-id bookkeeping included
   (every short carries its lane, its number and the circuit's configuration fingerprint;
   the script checks both and updates the lane's record in the circuit's hash, with the
   server's TIME).
   Context rows split the gap: a bare ``evalsha`` of the store's own script with the same
   keys and arguments (a new operation number each call) does the same work on the server
   with none of our client code, so "store script vs return 1" is the server-side share and
   "short() vs store script" the client-side share. The store packs its requests once and
   sends them on its own sockets (opened by redis-py's connection classes), below redis-py's
   per-command client layer; "short() vs raw EVALSHA" compares it with ``return 1`` packed
   once and sent on a redis-py connection, the floor of any script round trip through
   redis-py.
2. ``BreakingCircuit.broken`` (one ``HMGET`` of the four state fields and the configuration
   fingerprint) against a bare
   ``client.get(key)``. Target <= 1.2x. Context: a bare ``client.hmget`` of the same
   fields.
3. Throughput of ``short()`` with 1 and with 4 client processes (each its own circuit
   object on the same name, so one Redis key), total ops/s, and the same for a bare
   ``evalsha`` of ``return 1``. Context only. The client processes are started once
   (spawn), warmed up, and then released together at an agreed ``time.monotonic()``
   instant; each runs its loop for a fixed time and reports how many calls it made and
   when its last call returned. Total ops/s = all calls / (last end - start).
4. ``await circuit.short.asynced()()`` against ``await client.evalsha(sha, 0)`` on a
   ``redis.asyncio`` client, in one event loop (context). The sync ``short()`` is timed in
   the same rounds, for the async/sync ratio.

Single-process figures (1, 2, 4) are timed as in ``benchmarks/circuits.py``: each sample is
one loop of many calls with the garbage collector paused, the sides are interleaved (bare,
ours, bare, ours, ...) so that drift hits them alike, and a side's figure is the median of its
samples. The loops are identical on both sides, so their own cost (tens of ns, against
round trips of tens of µs) is on both sides. The reported ratio is the median, over the
repeats, of the ratio of the two samples taken side by side in one repeat (the throughput
rows likewise, round by round): the round trip's length jumps when the scheduler moves the
processes (below), and a ratio of the two sides' medians can then compare samples taken in
different placements. Each section also prints the ratio of medians and of bests.

Where the client and the server run matters. On a small machine a loopback round trip is
about twice as long when the client and ``redis-server`` run on different cores (a
cross-core wake-up each way) as when they share one, while our extra work per call stays
the same, so the ratios move with the scheduler's placement, even within a run. By default
(``--pin none``) the OS places both, as it would for a user. ``--pin same`` pins the server
and this process to one core (the shortest round trip, so the largest ratios), ``--pin
split`` to two different cores; both give steadier figures. Pinning applies to sections 1,
2 and 4; section 3 always runs unpinned.

This is a script, not a test: it prints and always exits 0 when it ran, slow machine or
not; a section that fails says "could not measure" and its rows print "-".
``tests/test_benchmark_redis_run.py`` only checks that it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import itertools
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from itertools import repeat
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _harness import (
    Row,
    Sampling,
    Side,
    compare,
    fmt_kps,
    fmt_us,
    guarded,
    measure,
    paired,
    print_banner,
    print_summary,
    show,
    show_ratio,
    unmeasured,
)

NEVER = 10**9  # a threshold no benchmark reaches: short() never trips, never sleeps
REPO = Path(__file__).resolve().parents[1]
SERVER_HELPER = REPO / "tests" / "redis_server.py"
TRIVIAL_LUA = "return 1"
# What RedisCircuitStore.read gets: the state and the configuration fingerprint.
STATE_FIELDS = ("shorts", "trips", "current", "broken", "config")
PROCESSES = 4  # the "many clients" count of section 3
CHILD_TIMEOUT_S = 60.0  # a client process that does not answer in this long is stuck


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Config(Sampling):
    first_calls: int = 50  # calibration starts here: a round trip takes tens of µs
    tp_repeats: int  # throughput rounds per (side, processes), interleaved
    tp_duration_s: float  # how long the clients run in one throughput round


FULL = Config(
    repeats=11, sample_s=0.15, min_calls=200, max_calls=200_000, tp_repeats=7, tp_duration_s=0.5
)
QUICK = Config(
    repeats=3, sample_s=0.02, min_calls=20, max_calls=5_000, tp_repeats=2, tp_duration_s=0.1
)


# -- row labels (tests/test_benchmark_redis_run.py lists them too) ------------------------

SHORT_LABEL = "Circuit.short() vs bare EVALSHA (return 1)"
BROKEN_LABEL = "BreakingCircuit.broken vs bare GET"
BREAKER_SHORT_LABEL = "BreakingCircuit.short() vs bare EVALSHA (return 1)"
SCRIPT_SERVER_LABEL = "bare EVALSHA of store script vs return 1"
SCRIPT_CLIENT_LABEL = "Circuit.short() vs bare EVALSHA of store script"
RAW_LABEL = "Circuit.short() vs raw EVALSHA (return 1, packed once)"
HMGET_SERVER_LABEL = "bare HMGET of 5 fields vs bare GET"
HMGET_CLIENT_LABEL = "BreakingCircuit.broken vs bare HMGET"
TP1_LABEL = "short() ops/s vs bare EVALSHA, 1 process"
TP4_LABEL = f"short() ops/s vs bare EVALSHA, {PROCESSES} processes"
TP_SCALE_LABEL = f"short() ops/s, {PROCESSES} processes vs 1"
TP_BARE_SCALE_LABEL = f"bare EVALSHA ops/s, {PROCESSES} processes vs 1"
ASYNC_LABEL = "await short.asynced()() vs await bare EVALSHA"
ASYNC_SYNC_LABEL = "await short.asynced()() vs sync short()"

SHORT_LABELS = [
    SHORT_LABEL,
    BREAKER_SHORT_LABEL,
    SCRIPT_SERVER_LABEL,
    SCRIPT_CLIENT_LABEL,
    RAW_LABEL,
]
BROKEN_LABELS = [BROKEN_LABEL, HMGET_SERVER_LABEL, HMGET_CLIENT_LABEL]
TP_LABELS = [TP1_LABEL, TP4_LABEL, TP_SCALE_LABEL, TP_BARE_SCALE_LABEL]
ASYNC_LABELS = [ASYNC_LABEL, ASYNC_SYNC_LABEL]
# Targets first, then context rows, in section order.
ORDER = [
    SHORT_LABEL,
    BROKEN_LABEL,
    BREAKER_SHORT_LABEL,
    SCRIPT_SERVER_LABEL,
    SCRIPT_CLIENT_LABEL,
    RAW_LABEL,
    HMGET_SERVER_LABEL,
    HMGET_CLIENT_LABEL,
    TP1_LABEL,
    TP4_LABEL,
    TP_SCALE_LABEL,
    TP_BARE_SCALE_LABEL,
    ASYNC_LABEL,
    ASYNC_SYNC_LABEL,
]


# -- per-call rows and ratios ---------------------------------------------------------


def per_call_row(label: str, ours: Side, other: Side, target: str) -> Row:
    """A row of two per-call sides; its ratio is the median of the per-repeat ratios."""
    ratio = paired(ours.samples, other.samples)
    return compare(label, fmt_us(ours.median), fmt_us(other.median), ratio, target)


def measure_and_show(sides: list[Side], config: Config, pairs: list[tuple[Side, Side]]) -> None:
    """Measure the sides, print their figures, then the ratios of each (ours, other) pair:
    the median of the per-repeat ratios (the reported one), the ratio of the medians and
    the ratio of the bests (least disturbed by noise), to three decimals."""
    measure(sides, config)
    show(sides, fmt_us, width=44)
    for ours, other in pairs:
        show_ratio(ours, other, digits=3, per_repeat=True)


# -- the server ---------------------------------------------------------------------------


def load_server_helper() -> Any:
    """``tests/redis_server.py``, imported by path (the tests' own private-server helper)."""
    spec = importlib.util.spec_from_file_location("_suitkaise_redis_server", SERVER_HELPER)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {SERVER_HELPER}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Placement:
    """``--pin``: the CPUs of the server and of this process for the single-client
    sections (Linux only; elsewhere, or with fewer than two CPUs for "split", nothing is
    pinned and the header says so)."""

    def __init__(self, mode: str, server_pid: int) -> None:
        self.mode = mode
        self.server_pid = server_pid
        self.cpus: list[int] = (
            sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        )
        if (mode != "none" and not self.cpus) or (mode == "split" and len(self.cpus) < 2):
            self.note = f"--pin {mode} not possible here; not pinned"
            self.mode = "none"
        elif mode == "same":
            self.note = f"--pin same: server and this process on CPU {self.cpus[0]}"
        elif mode == "split":
            self.note = (
                f"--pin split: server on CPU {self.cpus[1]}, this process on CPU {self.cpus[0]}"
            )
        else:
            self.note = "--pin none: the OS places the server and this process"

    def _set(self, server: set[int], here: set[int]) -> None:
        os.sched_setaffinity(self.server_pid, server)
        os.sched_setaffinity(0, here)

    def pin(self) -> None:
        if self.mode == "same":
            self._set({self.cpus[0]}, {self.cpus[0]})
        elif self.mode == "split":
            self._set({self.cpus[1]}, {self.cpus[0]})

    def unpin(self) -> None:
        if self.mode != "none":
            self._set(set(self.cpus), set(self.cpus))


# -- 1. short() against a bare EVALSHA ----------------------------------------------------


def bench_short(url: str, config: Config) -> list[Row]:
    import redis

    from suitkaise import BreakingCircuit, Circuit
    from suitkaise.circuits.redis import KEY_PREFIX, LANE_MEMORY_S, LANE_PREFIX, LUA, RedisStore

    print("\n1. short() without a trip on a RedisStore vs a bare EVALSHA round trip (redis-py)")
    client = redis.Redis.from_url(url)
    store = RedisStore(url, name="bench-short")
    breaker_store = RedisStore(url, name="bench-short-breaking")
    raw: Any = None
    try:
        circuit = Circuit(NEVER, store=store)
        breaker = BreakingCircuit(NEVER, store=breaker_store)
        trivial = client.script_load(TRIVIAL_LUA)
        full = client.script_load(LUA)
        key = KEY_PREFIX + "bench-short"
        lane = LANE_PREFIX + "bench:0"
        window = str(int(LANE_MEMORY_S))
        fingerprint = f"Circuit {NEVER} 0 1 10 0"
        numbers = itertools.count(1)

        def bare(n: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                client.evalsha(trivial, 0)
            return time.perf_counter_ns() - t0

        def bare_script(n: int) -> int:
            # The store's own script on the same key, as Circuit.short() sends it: a lane
            # and a new operation number each time (a repeated one is answered from memory).
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                client.evalsha(
                    full, 1, key, "circuit_short", "", "", window, fingerprint, lane, next(numbers)
                )
            return time.perf_counter_ns() - t0

        # The floor under redis-py's client layer: `return 1` packed once and sent on one
        # redis-py connection (the store sends its own packed requests on its own socket).
        raw = redis.ConnectionPool.from_url(url).make_connection()
        packed = b"*3\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n0\r\n" % str(trivial).encode()

        def bare_raw(n: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                raw.send_packed_command([packed])
                raw.read_response()
            return time.perf_counter_ns() - t0

        def ours(n: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                circuit.short()
            return time.perf_counter_ns() - t0

        def ours_breaker(n: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                breaker.short()
            return time.perf_counter_ns() - t0

        floor = Side("bare client.evalsha(return 1)", bare)
        mine = Side("Circuit.short()", ours)
        script = Side("bare client.evalsha(store script)", bare_script)
        mine_b = Side("BreakingCircuit.short()", ours_breaker)
        wire = Side("raw EVALSHA(return 1), packed once", bare_raw)
        measure_and_show(
            [floor, mine, script, mine_b, wire],
            config,
            [(mine, floor), (mine_b, floor), (script, floor), (mine, script), (mine, wire)],
        )
        if circuit.total_trips or breaker.broken:
            print("  WARNING: a circuit tripped; the figures include a trip")
    finally:
        client.close()
        store.close()
        breaker_store.close()
        if raw is not None:
            raw.disconnect()
    return [
        per_call_row(SHORT_LABEL, mine, floor, "<= 1.2x"),
        per_call_row(BREAKER_SHORT_LABEL, mine_b, floor, "info"),
        per_call_row(SCRIPT_SERVER_LABEL, script, floor, "info"),
        per_call_row(SCRIPT_CLIENT_LABEL, mine, script, "info"),
        per_call_row(RAW_LABEL, mine, wire, "info"),
    ]


# -- 2. broken against a bare GET ---------------------------------------------------------


def bench_broken(url: str, config: Config) -> list[Row]:
    import redis

    from suitkaise import BreakingCircuit
    from suitkaise.circuits.redis import KEY_PREFIX, RedisStore

    print("\n2. BreakingCircuit.broken on a RedisStore vs a bare GET round trip (redis-py)")
    client = redis.Redis.from_url(url)
    store = RedisStore(url, name="bench-broken")
    try:
        breaker = BreakingCircuit(NEVER, store=store)
        plain = "suitkaise-bench:plain"
        client.set(plain, b"0")
        key = KEY_PREFIX + "bench-broken"

        def bare_get(n: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                client.get(plain)
            return time.perf_counter_ns() - t0

        def bare_hmget(n: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                client.hmget(key, STATE_FIELDS)
            return time.perf_counter_ns() - t0

        def ours(n: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                breaker.broken  # noqa: B018 (the property read is what is timed)
            return time.perf_counter_ns() - t0

        floor = Side("bare client.get(key)", bare_get)
        mine = Side("BreakingCircuit.broken", ours)
        hmget = Side("bare client.hmget(circuit key, 5 fields)", bare_hmget)
        measure_and_show(
            [floor, mine, hmget], config, [(mine, floor), (hmget, floor), (mine, hmget)]
        )
    finally:
        client.close()
        store.close()
    return [
        per_call_row(BROKEN_LABEL, mine, floor, "<= 1.2x"),
        per_call_row(HMGET_SERVER_LABEL, hmget, floor, "info"),
        per_call_row(HMGET_CLIENT_LABEL, mine, hmget, "info"),
    ]


# -- 3. throughput with 1 and 4 client processes ------------------------------------------
# A client process builds its own circuit (same name in every process, so the same key)
# and its own bare client, warms both up, says "ready", then runs rounds on command.


def client_process(conn: Connection, url: str, name: str) -> None:
    import signal

    import redis

    from suitkaise import Circuit
    from suitkaise.circuits.redis import RedisStore

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, also on Ctrl-C
    client = redis.Redis.from_url(url)
    store = RedisStore(url, name=name)
    try:
        circuit = Circuit(NEVER, store=store)
        sha = client.script_load(TRIVIAL_LUA)

        def run_short(deadline: float) -> int:
            count = 0
            clock = time.monotonic
            while clock() < deadline:
                circuit.short()
                count += 1
            return count

        def run_bare(deadline: float) -> int:
            count = 0
            clock = time.monotonic
            while clock() < deadline:
                client.evalsha(sha, 0)
                count += 1
            return count

        loops = {"short": run_short, "bare": run_bare}
        for run in loops.values():  # warm-up
            run(time.monotonic() + 0.05)
        conn.send("ready")
        while True:
            try:
                command = conn.recv()
            except EOFError:  # the parent is gone
                return
            if command is None:
                return
            kind, start_at, duration = command
            delay = start_at - time.monotonic()
            if delay > 0.002:
                time.sleep(delay - 0.002)
            while time.monotonic() < start_at:
                pass
            gc.disable()
            try:
                count = loops[kind](start_at + duration)
            finally:
                gc.enable()
            conn.send((count, time.monotonic()))
    finally:
        client.close()
        store.close()
        conn.close()


class ClientProcesses:
    """``PROCESSES`` client processes, started (spawn) and warmed up once, stopped by
    ``close()`` (a stop message, then join; terminate if one does not exit)."""

    def __init__(self, url: str, name: str, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.members: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        try:
            for _ in range(count):
                parent_end, child_end = context.Pipe()
                process = context.Process(
                    target=client_process, args=(child_end, url, name), daemon=True
                )
                process.start()
                child_end.close()
                self.members.append((process, parent_end))
            for member, conn in self.members:
                self._receive(member, conn)  # "ready"
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _receive(process: multiprocessing.process.BaseProcess, conn: Connection) -> Any:
        if not conn.poll(CHILD_TIMEOUT_S):
            raise RuntimeError(f"client process {process.pid} did not answer")
        return conn.recv()

    def rate(self, kind: str, processes: int, duration: float) -> float:
        """Total calls per second of ``processes`` clients running ``kind`` together."""
        members = self.members[:processes]
        start_at = time.monotonic() + 0.05
        for _, conn in members:
            conn.send((kind, start_at, duration))
        replies = [self._receive(process, conn) for process, conn in members]
        calls: int = sum(count for count, _ in replies)
        end: float = max(finished for _, finished in replies)
        return calls / (end - start_at)

    def close(self) -> None:
        for _, conn in self.members:
            with contextlib.suppress(OSError):  # already gone
                conn.send(None)
        for process, conn in self.members:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
            conn.close()
        self.members = []


def bench_throughput(url: str, config: Config) -> list[Row]:
    print(
        f"\n3. Throughput of short() with 1 and {PROCESSES} client processes (one circuit "
        f"name), total ops/s; bare EVALSHA (return 1) as context; {config.tp_duration_s:g} s "
        "per round"
    )
    clients = ClientProcesses(url, "bench-throughput", PROCESSES)
    keys = [(kind, n) for n in (1, PROCESSES) for kind in ("bare", "short")]
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    try:
        for _ in range(config.tp_repeats):
            for kind, processes in keys:
                rates[kind, processes].append(clients.rate(kind, processes, config.tp_duration_s))
    finally:
        clients.close()
    med = {key: statistics.median(values) for key, values in rates.items()}
    names = {"bare": "bare client.evalsha(return 1)", "short": "Circuit.short()"}
    for (kind, processes), values in rates.items():
        print(
            f"  {names[kind]:<30} {processes} process{'es' if processes > 1 else '  '}  "
            f"median {fmt_kps(med[kind, processes]):>11}   (min {fmt_kps(min(values))}, "
            f"max {fmt_kps(max(values))}, {len(values)} rounds)"
        )

    def row(label: str, a: tuple[str, int], b: tuple[str, int]) -> Row:
        ratio = paired(rates[a], rates[b])
        return compare(label, fmt_kps(med[a]), fmt_kps(med[b]), ratio, "info")

    many = PROCESSES
    return [
        row(TP1_LABEL, ("short", 1), ("bare", 1)),
        row(TP4_LABEL, ("short", many), ("bare", many)),
        row(TP_SCALE_LABEL, ("short", many), ("short", 1)),
        row(TP_BARE_SCALE_LABEL, ("bare", many), ("bare", 1)),
    ]


# -- 4. the async twin --------------------------------------------------------------------


def bench_async(url: str, config: Config) -> list[Row]:
    import redis.asyncio

    from suitkaise import Circuit
    from suitkaise.circuits.redis import RedisStore

    print(
        "\n4. await c.short.asynced()() vs await of a bare EVALSHA (redis.asyncio), one "
        "event loop; sync c.short() in the same rounds"
    )
    loop = asyncio.new_event_loop()
    aclient = redis.asyncio.Redis.from_url(url)
    store = RedisStore(url, name="bench-async")
    circuit = Circuit(NEVER, store=store)
    try:
        sha = loop.run_until_complete(aclient.script_load(TRIVIAL_LUA))

        async def bare(n: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                await aclient.evalsha(sha, 0)
            return time.perf_counter_ns() - t0

        async def ours(n: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                await circuit.short.asynced()()
            return time.perf_counter_ns() - t0

        def on_loop(make: Callable[[int], Coroutine[Any, Any, int]]) -> Callable[[int], int]:
            # These coroutines do real I/O, so each sample is driven by the loop; the clock
            # is read inside the coroutine, so the loop's start-up is not timed.
            return lambda n: loop.run_until_complete(make(n))

        def sync(n: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in repeat(None, n):
                circuit.short()
            return time.perf_counter_ns() - t0

        floor = Side("await aclient.evalsha(return 1)", on_loop(bare))
        mine = Side("await c.short.asynced()()", on_loop(ours))
        blocking = Side("c.short() (sync)", sync)
        measure_and_show([floor, mine, blocking], config, [(mine, floor), (mine, blocking)])
    finally:
        try:
            loop.run_until_complete(aclient.aclose())
            # The store's asyncio connections belong to this loop: they close when the
            # loop's async generators are shut down, as at the end of asyncio.run().
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            store.close()
    return [
        per_call_row(ASYNC_LABEL, mine, floor, "info"),
        per_call_row(ASYNC_SYNC_LABEL, mine, blocking, "info"),
    ]


# -- the run -----------------------------------------------------------------------------


def no_server(error: Exception) -> list[Row]:
    print(f"\nNo Redis server: {error}")
    print(f"  could not measure: {', '.join(ORDER)}")
    return [unmeasured(label, "no redis-server") for label in ORDER]


def run_all(config: Config, pin: str) -> list[Row]:
    """Start the private server, run every section against it, stop it (always)."""
    try:
        server = load_server_helper().RedisServer()
    except Exception as error:
        return no_server(error)
    rows: list[Row] = []
    try:
        try:
            server.start()
        except Exception as error:
            return no_server(error)
        placement = Placement(pin, server.process.pid)
        print(f"private redis-server on 127.0.0.1:{server.port} (no persistence)")
        print(f"placement: {placement.note}")
        placement.pin()
        rows += guarded(lambda: bench_short(server.url, config), SHORT_LABELS)
        rows += guarded(lambda: bench_broken(server.url, config), BROKEN_LABELS)
        placement.unpin()  # the client processes (which inherit it) and the server roam
        rows += guarded(lambda: bench_throughput(server.url, config), TP_LABELS)
        placement.pin()
        rows += guarded(lambda: bench_async(server.url, config), ASYNC_LABELS)
        placement.unpin()
    finally:
        process = server.process
        server.close()
        if process is not None and process.poll() is None:
            print(f"\nProcesses left behind: redis-server {process.pid}")
    left = multiprocessing.active_children()
    if left:
        print(f"\nProcesses left behind: {left}")
    by_label = {row.label: row for row in rows}
    return [by_label[label] for label in ORDER if label in by_label]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fast smoke run (~5 s)")
    parser.add_argument(
        "--pin",
        choices=("none", "same", "split"),
        default="none",
        help="pin the server and this process to one core (same) or two (split); "
        "default: none, the OS places them",
    )
    args = parser.parse_args(argv)
    from suitkaise import __version__

    have_redis = importlib.util.find_spec("redis") is not None
    if not have_redis:
        client = "redis-py not installed (pip install 'suitkaise[redis]')"
    else:
        import redis

        client = f"redis-py {redis.__version__}"
        if importlib.util.find_spec("hiredis"):
            client += " with hiredis"
        else:
            client += " (pure-Python parser, no hiredis)"
    config = QUICK if args.quick else FULL
    started = time.perf_counter()
    print_banner(
        f"suitkaise {__version__} Redis store benchmarks",
        args.quick,
        [client, f"{config.repeats} interleaved samples per side, medians"],
    )
    try:
        if not have_redis:
            print(f"  could not measure: {', '.join(ORDER)}")
            rows = [unmeasured(label, "no redis-py") for label in ORDER]
        else:
            rows = run_all(config, args.pin)
    except KeyboardInterrupt:
        print("\nInterrupted; the server and the client processes were stopped.")
        return 130
    print_summary(
        rows,
        started,
        "bare redis-py",
        note="\nours, bare: medians; ratio: median over the repeats of ours / bare measured side "
        "by side\n(for ops/s rows, above 1 means more calls per second)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
