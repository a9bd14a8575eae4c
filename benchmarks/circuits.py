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
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from suitkaise import BreakingCircuit, Circuit, __version__

NEVER = 10**9  # a threshold no benchmark reaches: short() never trips, never sleeps


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    repeats: int  # timed samples per side, interleaved across sides
    sample_s: float  # wanted duration of one sample; sets the calls per sample
    min_calls: int
    max_calls: int
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


# -- result rows --------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the summary: ours against a floor or a peer."""

    label: str
    ours: str
    other: str
    ratio: float | None  # None: a side could not be measured
    target: str  # "<= 2.0x", ">= 1.0x", or "info" for context rows
    met: bool | None = None  # None for context rows


@dataclass
class Side:
    """One measured thing: ``run(n)`` makes n calls and returns the elapsed nanoseconds."""

    name: str
    run: Callable[[int], int]
    calls: int = 0
    samples: list[float] = field(default_factory=list)  # ns per call

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def fmt_ns(ns: float) -> str:
    return f"{ns:,.0f} ns" if ns >= 10 else f"{ns:.1f} ns"


def fmt_rate(ops_per_s: float) -> str:
    return f"{ops_per_s / 1e6:.2f} M/s"


def fmt_ms(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms"


def judge(ratio: float, target: str) -> bool:
    op, _, bound = target.partition(" ")
    limit = float(bound.rstrip("x"))
    return ratio <= limit if op == "<=" else ratio >= limit


def compare(label: str, ours: str, other: str, ratio: float | None, target: str) -> Row:
    met = None if ratio is None or target == "info" else judge(ratio, target)
    return Row(label, ours, other, ratio, target, met)


# -- measuring ----------------------------------------------------------------------------


def paused_gc(run: Callable[[int], int], n: int) -> int:
    """``run(n)`` with the garbage collector paused, as ``timeit`` does."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return run(n)
    finally:
        if enabled:
            gc.enable()


def calibrate(side: Side, config: Config) -> None:
    """Pick the calls per sample so that one sample lasts about ``config.sample_s``."""
    n = 1_000
    while True:
        elapsed = paused_gc(side.run, n)
        if elapsed >= 20_000_000 or n >= config.max_calls:  # 20 ms is enough to estimate
            break
        n *= 4
    wanted = int(config.sample_s * 1e9 * n / max(elapsed, 1))
    side.calls = max(config.min_calls, min(config.max_calls, wanted))
    gc.collect()


def measure(sides: list[Side], config: Config) -> None:
    """Interleaved samples: every repeat times each side once, in turn."""
    for side in sides:
        calibrate(side, config)
    for _ in range(config.repeats):
        for side in sides:
            elapsed = paused_gc(side.run, side.calls)
            side.samples.append(elapsed / side.calls)
            gc.collect()  # the exception paths leave reference cycles behind


def show_ratio(ours: Side, other: Side) -> None:
    """The ratio by medians (the reported one) and by bests (least disturbed by noise)."""
    print(
        f"    {ours.name} / {other.name}: {ours.median / other.median:.2f}x by medians, "
        f"{min(ours.samples) / min(other.samples):.2f}x by bests"
    )


def show(sides: list[Side]) -> None:
    for side in sides:
        low, high = min(side.samples), max(side.samples)
        print(
            f"  {side.name:<46} median {fmt_ns(side.median):>9}"
            f"   (min {fmt_ns(low)}, max {fmt_ns(high)}, {side.calls:,} calls x "
            f"{len(side.samples)})"
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
    show(sides)
    for side in (ours, ours_b):
        show_ratio(side, floor)
    rows = []
    for side in (ours, ours_b):
        rows.append(
            compare(
                f"{side.name} vs Lock+int method",
                fmt_ns(side.median),
                fmt_ns(floor.median),
                side.median / floor.median,
                "<= 2.0x",
            )
        )
    for side in (ours, ours_b):
        rows.append(
            compare(
                f"{side.name} vs inline Lock+int",
                fmt_ns(side.median),
                fmt_ns(inline.median),
                side.median / inline.median,
                "info",
            )
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
            f"{fmt_rate(medians[name, threads]):>10}   (min {fmt_rate(min(values))}, "
            f"max {fmt_rate(max(values))})"
        )
    for name in kinds:
        paired = (two / one for one, two in zip(rates[name, 1], rates[name, 2], strict=True))
        print(f"    {name} 2-thread/1-thread per repeat: {' '.join(f'{r:.2f}' for r in paired)}")
    return [
        compare(
            "2 threads Circuit.short() vs 1 thread",
            fmt_rate(medians["Circuit.short()", 2]),
            fmt_rate(medians["Circuit.short()", 1]),
            medians["Circuit.short()", 2] / medians["Circuit.short()", 1],
            ">= 1.0x",
        ),
        compare(
            "2 threads Lock+int vs 1 thread",
            fmt_rate(medians["Lock+int", 2]),
            fmt_rate(medians["Lock+int", 1]),
            medians["Lock+int", 2] / medians["Lock+int", 1],
            "info",
        ),
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
    show(sides)
    sync, async_, prebound, alock = sides
    show_ratio(async_, sync)
    return [
        compare(
            "await asynced() short vs sync short",
            fmt_ns(async_.median),
            fmt_ns(sync.median),
            async_.median / sync.median,
            "<= 1.5x",
        ),
        compare(
            "await prebound asynced() vs sync short",
            fmt_ns(prebound.median),
            fmt_ns(sync.median),
            prebound.median / sync.median,
            "info",
        ),
        compare(
            "await asynced() short vs asyncio.Lock+int",
            fmt_ns(async_.median),
            fmt_ns(alock.median),
            async_.median / alock.median,
            "info",
        ),
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
        return compare(
            label,
            fmt_ms(median["suitkaise"]),
            fmt_ms(median[peer]),
            median["suitkaise"] / median[peer],
            target,
        )

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
    show(sides)
    for mine, peer in ((ours, record), (ours_raising, call_path), (ours, cb_record)):
        if peer is not None:
            show_ratio(mine, peer)

    def row(label: str, mine: Side, peer: Side | None) -> Row:
        if peer is None:
            return compare(label, fmt_ns(mine.median), "not installed", None, "info")
        return compare(
            label, fmt_ns(mine.median), fmt_ns(peer.median), mine.median / peer.median, "info"
        )

    return [
        row("Circuit.short() vs pybreaker failure record", ours, record),
        row("raise+short() vs pybreaker.call(raising)", ours_raising, call_path),
        row("Circuit.short() vs circuitbreaker record", ours, cb_record),
        row("raise+short() vs circuitbreaker call(raising)", ours_raising, cb_call_path),
    ]


# -- summary -----------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    headers = ("operation", "ours", "floor/peer", "ratio", "target", "met?")
    cells = [
        (
            row.label,
            row.ours,
            row.other,
            "-" if row.ratio is None else f"{row.ratio:.2f}x",
            row.target,
            "-" if row.met is None else ("yes" if row.met else "NO"),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [headers, *cells]) for i in range(len(headers))]

    def line(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for values in cells:
        print(line(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fast smoke run (~5 s)")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    started = time.perf_counter()
    print(
        f"suitkaise {__version__} circuit benchmarks ({'quick' if args.quick else 'full'} run): "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{config.repeats} interleaved samples per side, medians"
    )
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {os.getloadavg()[0]:.2f} (above ~0.5, expect noise)")
    rows: list[Row] = []
    rows += bench_short(config)
    rows += bench_threads(config)
    rows += bench_async(config)
    rows += bench_imports(config)
    rows += bench_peers(config)
    print(f"\nSummary ({time.perf_counter() - started:.1f} s):\n")
    print_table(rows)
    missed = [row.label for row in rows if row.met is False]
    print(f"\nTargets missed: {', '.join(missed)}" if missed else "\nAll targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
