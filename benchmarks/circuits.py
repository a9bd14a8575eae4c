"""Circuit benchmarks: each operation next to its floor or peer, measured in one run.

    python benchmarks/circuits.py           # full run, about 20 s on 2 cores
    python benchmarks/circuits.py --quick   # smoke run, about 3 s (numbers are rough)

Targets come from shared/PERFORMANCE.md. Absolute times drift between runs and machines, so
every target is a ratio between two things measured here, in this process, interleaved
(floor, ours, floor, ours, ...) so that drift hits both sides alike. Each timed sample runs
one loop of many calls with the garbage collector paused (as ``timeit`` does); a side's
figure is the median over the samples. The loops are identical on both sides, so loop
overhead is included on both sides, as with ``timeit``.

This is a script, not a test: it prints and always exits 0 when it could measure, slow
machine or not. ``tests/test_benchmarks_run.py`` only checks that it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.util
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from _harness import (
    Row,
    Sampling,
    Side,
    compare,
    fmt_mps,
    fmt_ns,
    measure,
    ms_format,
    print_banner,
    print_summary,
    ratio_row,
    show,
    show_ratio,
)

from suitkaise import BreakingCircuit, Circuit, __version__

NEVER = 10**9  # a threshold no benchmark reaches: short() never trips, never sleeps
fmt_ms = ms_format(1)  # the import times: one decimal


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Config(Sampling):
    first_calls: int = 1_000  # calibration starts here: the calls take well under 1 µs
    thread_calls: int  # calls made by each of the two threads (one thread makes twice that)
    import_runs: int  # fresh interpreters per import side


FULL = Config(
    repeats=7,
    sample_s=0.1,
    min_calls=10_000,
    max_calls=1_000_000,
    thread_calls=250_000,
    import_runs=15,
)
QUICK = Config(
    repeats=3,
    sample_s=0.01,
    min_calls=2_000,
    max_calls=50_000,
    thread_calls=25_000,
    import_runs=3,
)


# The timed loops. Both sides of a comparison run the same loop shape, so the loop's own
# cost (about 10-15 ns per iteration) is on both sides, exactly as in ``timeit``.


class LockCounter:
    """The floor: a ``threading.Lock`` and an int, incremented in one method call."""

    __slots__ = ("_lock", "_n")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0

    def incr(self) -> None:
        with self._lock:
            self._n += 1


def loop_short(circuit: Circuit | BreakingCircuit, n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        circuit.short()
    return time.perf_counter_ns() - t0


def loop_incr(counter: LockCounter, n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        counter.incr()
    return time.perf_counter_ns() - t0


def loop_inline_lock(n: int) -> int:
    lock = threading.Lock()
    count = 0
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        with lock:
            count += 1
    return time.perf_counter_ns() - t0


# -- 1. short() without a trip, against the Lock + int floor ------------------------------


def bench_short(config: Config) -> list[Row]:
    print("\n1. short() without a trip vs the threading.Lock + int floor (1 thread)")
    counter = LockCounter()
    circuit = Circuit(NEVER)
    breaking = BreakingCircuit(NEVER)
    floor = Side("floor: Lock + int, one method call", lambda n: loop_incr(counter, n))
    inline = Side("floor: Lock + int inline in the loop", loop_inline_lock)
    ours = Side("Circuit.short()", lambda n: loop_short(circuit, n))
    ours_b = Side("BreakingCircuit.short()", lambda n: loop_short(breaking, n))
    sides = [floor, ours, inline, ours_b]
    measure(sides, config)
    show(sides, fmt_ns)
    for side in (ours, ours_b):
        show_ratio(side, floor)
    rows = []
    for other, label, target in (
        (floor, "vs Lock+int method", "<= 2.0x"),
        (inline, "vs inline Lock+int", "info"),
    ):
        for side in (ours, ours_b):
            rows.append(
                ratio_row(f"{side.name} {label}", side.median, other.median, target, fmt_ns)
            )
    return rows


# -- 2. two threads on one object ------------------------------------------------------


def threaded_rate(work: Callable[[int], object], threads: int, calls_each: int) -> float:
    """Total calls per second of ``threads`` threads each running ``work(calls_each)``.

    The threads are started first and released together by a barrier, so thread start-up
    is not timed; the clock stops when the last one finishes.
    """
    barrier = threading.Barrier(threads + 1)

    def body() -> None:
        barrier.wait()
        work(calls_each)

    workers = [threading.Thread(target=body) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    t0 = time.perf_counter_ns()
    for worker in workers:
        worker.join()
    return threads * calls_each / (time.perf_counter_ns() - t0) * 1e9


def bench_threads(config: Config) -> list[Row]:
    # Under the GIL two threads cannot run Python faster than one: about 1.0x is the
    # ceiling, which the Lock+int row shows. Far below it means the threads convoy on the
    # lock (one is preempted while holding it, and every later call pays a thread switch);
    # the per-repeat ratios show whether that happened in some samples or in all.
    print(
        f"\n2. Throughput on one object: 2 threads x {config.thread_calls:,} calls vs "
        f"1 thread x {2 * config.thread_calls:,} calls (same total)"
    )
    circuit = Circuit(NEVER)
    counter = LockCounter()
    kinds: dict[str, Callable[[int], object]] = {
        "Circuit.short()": lambda n: loop_short(circuit, n),
        "Lock+int": lambda n: loop_incr(counter, n),
    }
    rates: dict[tuple[str, int], list[float]] = {(k, t): [] for k in kinds for t in (1, 2)}
    for work in kinds.values():  # warm up: caches the bound short(), starts thread machinery
        threaded_rate(work, 2, 1_000)
    for _ in range(config.repeats):
        for name, work in kinds.items():
            for threads in (1, 2):
                calls_each = 2 * config.thread_calls // threads
                gc.disable()
                try:
                    rates[name, threads].append(threaded_rate(work, threads, calls_each))
                finally:
                    gc.enable()
    medians = {key: statistics.median(values) for key, values in rates.items()}
    for (name, threads), values in rates.items():
        print(
            f"  {name:<16} {threads} thread{'s' if threads > 1 else ' '}   median "
            f"{fmt_mps(medians[name, threads]):>10}   (min {fmt_mps(min(values))}, "
            f"max {fmt_mps(max(values))})"
        )
    for name in kinds:
        paired = (two / one for one, two in zip(rates[name, 1], rates[name, 2], strict=True))
        print(f"    {name} 2-thread/1-thread per repeat: {' '.join(f'{r:.2f}' for r in paired)}")
    return [
        ratio_row(label, medians[name, 2], medians[name, 1], target, fmt_mps)
        for label, name, target in (
            ("2 threads Circuit.short() vs 1 thread", "Circuit.short()", ">= 1.0x"),
            ("2 threads Lock+int vs 1 thread", "Lock+int", "info"),
        )
    ]


# -- 3. the async twin, in a running event loop ------------------------------------------


async def coro_sync_short(circuit: Circuit, n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        circuit.short()
    return time.perf_counter_ns() - t0


async def coro_async_short(circuit: Circuit, n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        await circuit.short.asynced()()
    return time.perf_counter_ns() - t0


async def coro_prebound_async_short(circuit: Circuit, n: int) -> int:
    short_async = circuit.short.asynced()
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        await short_async()
    return time.perf_counter_ns() - t0


async def coro_asyncio_lock(n: int) -> int:
    lock = asyncio.Lock()
    count = 0
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        async with lock:
            count += 1
    return time.perf_counter_ns() - t0


def bench_async(config: Config) -> list[Row]:
    print("\n3. await c.short.asynced()() vs c.short(), both inside one running asyncio loop")

    async def main() -> list[Side]:
        loop = asyncio.get_running_loop()
        circuit = Circuit(NEVER)

        def on_loop(make: Callable[[int], Coroutine[Any, Any, int]]) -> Callable[[int], int]:
            # measure() is synchronous, so a sample's coroutine is driven right here, inside
            # this task of the running loop, exactly as an ``await`` of it would drive it.
            # None of these coroutines suspends (no trip, no contention), so one send()
            # runs a whole sample.
            def run(n: int) -> int:
                coro = make(n)
                try:
                    coro.send(None)
                except StopIteration as done:
                    return int(done.value)
                coro.close()
                raise RuntimeError("a benchmark coroutine suspended; it must not")

            assert loop.is_running()
            return run

        sides = [
            Side("sync c.short() in a coroutine", on_loop(lambda n: coro_sync_short(circuit, n))),
            Side(
                "await c.short.asynced()()",
                on_loop(lambda n: coro_async_short(circuit, n)),
            ),
            Side(
                "await prebound c.short.asynced() result",
                on_loop(lambda n: coro_prebound_async_short(circuit, n)),
            ),
            Side("asyncio.Lock + int (async with)", on_loop(coro_asyncio_lock)),
        ]
        measure(sides, config)
        return sides

    sides = asyncio.run(main())
    show(sides, fmt_ns)
    sync, async_, prebound, alock = sides
    show_ratio(async_, sync)
    return [
        ratio_row(label, mine.median, other.median, target, fmt_ns)
        for label, mine, other, target in (
            ("await asynced() short vs sync short", async_, sync, "<= 1.5x"),
            ("await prebound asynced() vs sync short", prebound, sync, "info"),
            ("await asynced() short vs asyncio.Lock+int", async_, alock, "info"),
        )
    ]


# -- 4. import time, whole process --------------------------------------------------------


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def bench_imports(config: Config) -> list[Row]:
    print(
        f"\n4. Whole-process time of python -c 'import X', median of {config.import_runs} "
        "fresh interpreters each, interleaved"
    )
    codes = {
        "pass": "pass",
        "suitkaise": "import suitkaise",
        "tenacity": "import tenacity",
        "pybreaker": "import pybreaker",
    }
    available = {name: name == "pass" or installed(name) for name in codes}

    def run_once(code: str) -> int:
        t0 = time.perf_counter_ns()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter_ns() - t0

    times: dict[str, list[int]] = {name: [] for name in codes if available[name]}
    for name in times:  # warm-up: byte-code caches written, files in the page cache
        run_once(codes[name])
    for _ in range(config.import_runs):
        for name in times:
            times[name].append(run_once(codes[name]))
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, code in codes.items():
        if name not in median:
            print(f"  {code:<18} not installed")
            continue
        net = median[name] - median["pass"]
        print(
            f"  {code:<18} median {fmt_ms(median[name]):>8}   (min {fmt_ms(min(times[name]))}, "
            f"max {fmt_ms(max(times[name]))}; {fmt_ms(net)} over python -c pass)"
        )

    def row(peer: str, target: str) -> Row:
        label = f"import suitkaise vs {'python -c pass' if peer == 'pass' else 'import ' + peer}"
        if peer not in median:
            return compare(label, fmt_ms(median["suitkaise"]), "not installed", None, target)
        return ratio_row(label, median["suitkaise"], median[peer], target, fmt_ms)

    return [row("tenacity", "<= 1.0x"), row("pybreaker", "info"), row("pass", "info")]


# -- 5. peers: recording one failure -------------------------------------------------------


class Boom(OSError):
    """The failure the guarded call raises in the peer comparisons."""


BOOM = Boom("service unavailable")  # handed to the record paths, which never raise it


def failing() -> None:
    # A fresh exception each time: re-raising one instance would grow its traceback chain
    # on every raise (and slow down every later sample).
    raise Boom("service unavailable")


def loop_raise_short(circuit: Circuit, n: int) -> int:
    # What a user of ours writes around a failing call: catch, then short().
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        try:
            failing()
        except Boom:
            circuit.short()
    return time.perf_counter_ns() - t0


def pybreaker_sides(pybreaker: Any) -> tuple[Side, Side]:
    """pybreaker has no public "record one failure" call; failures are recorded only when a
    function run through ``breaker.call(...)`` (or the decorator) raises. We time two ways:

    * failure record (the peer row): ``with breaker._lock:
      breaker.state._handle_error(exc, reraise=False)``. It is the exact code that
      ``breaker.call`` runs for a failure (the exclusion check, the counter increment, the
      listeners, the threshold check), under the same lock, without running a function or
      raising. It is the cheapest honest record: ``breaker._inc_counter()`` (or
      ``_state_storage.increment_counter()``) alone is a bare ``+= 1`` with no lock and no
      threshold check, which is not what ``Circuit.short()`` does.
    * the documented path (context row): ``try: breaker.call(failing) except Boom: pass``,
      against ours written the way a user would: ``try: failing() except Boom:
      circuit.short()``. Both sides raise and catch the same exception.
    """
    breaker = pybreaker.CircuitBreaker(fail_max=NEVER)

    def record(n: int) -> int:
        lock = breaker._lock
        t0 = time.perf_counter_ns()
        for _ in repeat(None, n):
            with lock:
                breaker.state._handle_error(BOOM, reraise=False)
        return time.perf_counter_ns() - t0

    def call_failing(n: int) -> int:
        call = breaker.call
        t0 = time.perf_counter_ns()
        for _ in repeat(None, n):
            try:  # noqa: SIM105 (contextlib.suppress would add its own cost to the loop)
                call(failing)
            except Boom:
                pass
        return time.perf_counter_ns() - t0

    return Side("pybreaker failure record (locked)", record), Side(
        "pybreaker: try: breaker.call(failing)", call_failing
    )


def circuitbreaker_sides(circuitbreaker: Any) -> tuple[Side, Side]:
    """circuitbreaker records a failure in ``__exit__`` (its decorator and ``call()`` go
    through ``with breaker:``). The record row calls ``breaker.__exit__(Boom, exc, None)``
    directly: the same code a failing guarded call runs, without raising. Note that it
    takes no lock at all (its counter is not thread-safe). The context row runs a decorated
    failing function, against ours written the way a user would (both raise and catch)."""
    breaker = circuitbreaker.CircuitBreaker(failure_threshold=NEVER, name="bench")
    exc_type = type(BOOM)

    def record(n: int) -> int:
        exit_ = breaker.__exit__
        t0 = time.perf_counter_ns()
        for _ in repeat(None, n):
            exit_(exc_type, BOOM, None)
        return time.perf_counter_ns() - t0

    guarded = breaker(failing)

    def call_failing(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in repeat(None, n):
            try:  # noqa: SIM105 (contextlib.suppress would add its own cost to the loop)
                guarded()
            except Boom:
                pass
        return time.perf_counter_ns() - t0

    return Side("circuitbreaker failure record (no lock)", record), Side(
        "circuitbreaker: try: guarded_failing()", call_failing
    )


def bench_peers(config: Config) -> list[Row]:
    print("\n5. Recording one failure: Circuit.short() vs pybreaker and circuitbreaker")
    circuit = Circuit(NEVER)
    ours = Side("Circuit.short()", lambda n: loop_short(circuit, n))
    ours_raising = Side(
        "ours: try: failing() except: c.short()", lambda n: loop_raise_short(circuit, n)
    )
    sides = [ours, ours_raising]
    record = call_path = cb_record = cb_call_path = None
    if installed("pybreaker"):
        record, call_path = pybreaker_sides(importlib.import_module("pybreaker"))
        sides += [record, call_path]
    else:
        print("  pybreaker: not installed")
    if installed("circuitbreaker"):
        cb_record, cb_call_path = circuitbreaker_sides(importlib.import_module("circuitbreaker"))
        sides += [cb_record, cb_call_path]
    else:
        print("  circuitbreaker: not installed")
    measure(sides, config)
    show(sides, fmt_ns)
    for mine, peer in ((ours, record), (ours_raising, call_path), (ours, cb_record)):
        if peer is not None:
            show_ratio(mine, peer)

    def row(label: str, mine: Side, peer: Side | None) -> Row:
        if peer is None:
            return compare(label, fmt_ns(mine.median), "not installed", None, "info")
        return ratio_row(label, mine.median, peer.median, "info", fmt_ns)

    return [
        row("Circuit.short() vs pybreaker failure record", ours, record),
        row("raise+short() vs pybreaker.call(raising)", ours_raising, call_path),
        row("Circuit.short() vs circuitbreaker record", ours, cb_record),
        row("raise+short() vs circuitbreaker call(raising)", ours_raising, cb_call_path),
    ]


# -- the run -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fast smoke run (~5 s)")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    started = time.perf_counter()
    print_banner(
        f"suitkaise {__version__} circuit benchmarks",
        args.quick,
        [f"{config.repeats} interleaved samples per side, medians"],
    )
    rows: list[Row] = []
    rows += bench_short(config)
    rows += bench_threads(config)
    rows += bench_async(config)
    rows += bench_imports(config)
    rows += bench_peers(config)
    print_summary(rows, started, "floor/peer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
