"""Pool benchmarks: suitkaise's Pool next to multiprocessing.Pool, measured in one run.

    python benchmarks/pool.py           # full run, about 10-20 s on 2 cores
    python benchmarks/pool.py --quick   # smoke run, about 3 s (numbers are rough)

Targets come from shared/PERFORMANCE.md. Absolute times drift between runs and machines, so
every target is a ratio between two things measured here, in this process, interleaved
(peer, ours, peer, ours, ...) so that drift hits both sides alike; a side's figure is the
median over its samples.

1. End to end: construct a pool of 8, map 8 items, close (and join). Ours maps a trivial
   Skprocess class (its ``__run__`` calls ``self.stop()``), so each item runs a whole
   lifecycle in a worker; the peer maps a trivial function. The target row uses the default
   start method; spawn and forkserver rows are context. One untimed round per side comes
   first, so one-time imports (cloudpickle, multiprocessing.pool) are not in the timed
   samples; the "cold process" row puts them back: each sample is a fresh interpreter that
   imports the pool library and does one round.
2. Steady state: 10,000 small items (``x * 2``) mapped by pools that are already started and
   warmed, ``workers = os.cpu_count()``. The peer gets the chunk size its own ``map`` would
   pick (``ceil(len / (4 * workers))``), passed explicitly; ours picks its own.
3. Context rows on the same started pools: a lambda (the peer cannot pickle one, so it maps
   the equivalent ``def``), ``unordered_map`` (peer: ``imap_unordered``) and ``imap`` (peer:
   ``imap``, same chunk size), the iterators consumed fully.

This is a script, not a test: it prints and always exits 0 when it could measure, slow
machine or not. ``tests/test_benchmark_pool_run.py`` only checks that it runs.

This module's top level imports neither suitkaise nor multiprocessing (nor does
``_harness.py``, which it imports): under spawn and forkserver the workers of both sides
re-import it (as ``__mp_main__``), and they should not pay for each other's imports.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from _harness import (
    Row,
    Side,
    ms_format,
    print_banner,
    print_summary,
    ratio_row,
    sample,
    show,
    show_ratio,
    unmeasured,
)

WORKERS_E2E = 8  # the PERFORMANCE.md scenario: Pool(8).map of 8 trivial workers
ITEMS = 10_000
COLD_FLAG = "--cold-run"  # internal: one timed cold round in a fresh interpreter
fmt_ms = ms_format(2)  # two decimals below 10 ms


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    e2e_repeats: int  # end-to-end samples per side, default start method
    e2e_other_repeats: int  # end-to-end samples per side under spawn / forkserver
    cold_runs: int  # fresh interpreters per side
    map_repeats: int  # steady-state samples per side
    maps_per_sample: int  # calls timed together in one steady-state sample


FULL = Config(e2e_repeats=15, e2e_other_repeats=5, cold_runs=7, map_repeats=15, maps_per_sample=10)
QUICK = Config(e2e_repeats=3, e2e_other_repeats=1, cold_runs=1, map_repeats=3, maps_per_sample=2)


# -- measuring ----------------------------------------------------------------------------
# A side here takes a whole round (or a few calls on a started pool) a sample, so its calls
# per sample are given rather than calibrated, and one untimed round per side warms it up.


def rounds(one: Callable[[], float]) -> Callable[[int], float]:
    """A side's ``run(n)`` made of ``one()``, which does one round and returns its ns."""
    return lambda n: sum(one() for _ in range(n))


def measure(sides: list[Side], repeats: int, warmups: int = 1) -> None:
    """``warmups`` untimed rounds, then interleaved samples: every repeat runs each side
    once, in turn."""
    for _ in range(warmups):
        for side in sides:
            side.run(side.calls)
    gc.collect()
    sample(sides, repeats)


def versus(label: str, ours: Side, other: Side, target: str) -> Row:
    """The row of ours against the peer, by medians."""
    return ratio_row(label, ours.median, other.median, target, fmt_ms)


def show_pair(peer: Side, ours: Side, unit: str) -> None:
    """Both sides' figures, per ``unit`` (a round, a process, a call), and their ratio."""
    show([peer, ours], fmt_ms, width=58, unit=f" {unit}", calls_shown=False)
    show_ratio(ours, peer, title="ours / peer")


# -- what the workers run (module level, so the peer can pickle it by reference) ----------


def identity(x: Any) -> Any:
    return x


def double(x: int) -> int:
    return x * 2


_trivial_class: type | None = None


def trivial_process() -> type:
    """The trivial Skprocess: one run, which asks to stop; its result is its item.

    Built on first use rather than at the top level, so that importing this module (which
    spawn and forkserver workers do) does not import suitkaise. Ours ships it by value with
    cloudpickle, as it does any class defined in a script.
    """
    global _trivial_class
    if _trivial_class is None:
        from suitkaise.processing import Skprocess

        class TrivialWorker(Skprocess):
            def __init__(self, item: Any) -> None:
                self.item = item

            def __run__(self) -> None:
                self.stop()

            def __result__(self) -> Any:
                return self.item

        _trivial_class = TrivialWorker
    return _trivial_class


def ns_since(t0: int) -> float:
    return float(time.perf_counter_ns() - t0)


# -- 1. end to end -------------------------------------------------------------------------


def e2e_ours(method: str | None) -> Callable[[int], float]:
    import multiprocessing

    from suitkaise.processing import Pool

    context: Any = None if method is None else multiprocessing.get_context(method)
    worker = trivial_process()
    expected = list(range(WORKERS_E2E))

    def run() -> float:
        t0 = time.perf_counter_ns()
        pool = Pool(WORKERS_E2E, context=context)
        try:
            results = pool.map(worker, range(WORKERS_E2E))
        finally:
            pool.close()
        elapsed = ns_since(t0)
        assert results == expected, results
        return elapsed

    return rounds(run)


def e2e_peer(method: str | None) -> Callable[[int], float]:
    import multiprocessing

    context = multiprocessing.get_context(method)  # None: the default context
    expected = list(range(WORKERS_E2E))

    def run() -> float:
        t0 = time.perf_counter_ns()
        pool = context.Pool(WORKERS_E2E)
        try:
            results = pool.map(identity, range(WORKERS_E2E))
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
        elapsed = ns_since(t0)
        assert results == expected, results
        return elapsed

    return rounds(run)


E2E_LABELS = {
    None: "Pool(8).map 8 Skprocess e2e, default start",
    "spawn": "Pool(8).map 8 Skprocess e2e, spawn",
    "forkserver": "Pool(8).map 8 Skprocess e2e, forkserver",
}
COLD_LABEL = "cold process: import + Pool(8).map e2e"


def bench_e2e(config: Config) -> list[Row]:
    import multiprocessing

    default = multiprocessing.get_start_method()
    available = multiprocessing.get_all_start_methods()
    print(
        f"\n1. End to end: Pool({WORKERS_E2E}) + map of {WORKERS_E2E} items + close, per round "
        f"(ours: trivial Skprocess class; peer: multiprocessing.Pool, trivial function)\n"
        f"   default start method here: {default}"
    )
    rows = []
    for method, label in E2E_LABELS.items():
        name = default if method is None else method
        if method is not None and method not in available:
            print(f"  {name}: not available on this platform")
            rows.append(unmeasured(label, f"{name} unavailable"))
            continue
        repeats = config.e2e_repeats if method is None else config.e2e_other_repeats
        ours = Side(f"ours: Pool({WORKERS_E2E}).map(Skprocess) [{name}]", e2e_ours(method), 1)
        peer = Side(f"peer: multiprocessing.Pool({WORKERS_E2E}).map [{name}]", e2e_peer(method), 1)
        measure([peer, ours], repeats)
        show_pair(peer, ours, "/round")
        rows.append(versus(label, ours, peer, "<= 1.5x" if method is None else "info"))
    rows.append(bench_cold(config, default))
    return rows


def cold_round(side: str) -> float:
    """In a fresh interpreter: import the pool library, then one end-to-end round."""
    t0 = time.perf_counter_ns()
    if side == "ours":
        from suitkaise.processing import Pool

        worker = trivial_process()
        pool = Pool(WORKERS_E2E)
        try:
            results = pool.map(worker, range(WORKERS_E2E))
        finally:
            pool.close()
    else:
        import multiprocessing

        peer_pool = multiprocessing.Pool(WORKERS_E2E)
        try:
            results = peer_pool.map(identity, range(WORKERS_E2E))
            peer_pool.close()
        finally:
            peer_pool.join()
    elapsed = ns_since(t0)
    assert results == list(range(WORKERS_E2E)), results
    return elapsed


def bench_cold(config: Config, default: str) -> Row:
    print(
        f"\n   Cold: a fresh interpreter per sample times the import of the pool library plus "
        f"one round [{default}]"
    )

    def in_fresh_interpreter(side: str) -> Callable[[int], float]:
        def run() -> float:
            done = subprocess.run(
                [sys.executable, os.path.abspath(__file__), COLD_FLAG, side],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
            return float(done.stdout.strip().splitlines()[-1])

        return rounds(run)

    ours = Side("ours: import suitkaise.processing + round", in_fresh_interpreter("ours"), 1)
    peer = Side("peer: import multiprocessing + round", in_fresh_interpreter("peer"), 1)
    measure([peer, ours], config.cold_runs)  # the warm-up fills the byte-code and page caches
    show_pair(peer, ours, "/process")
    return versus(COLD_LABEL, ours, peer, "info")


# -- 2. and 3. steady state, pools already started ----------------------------------------


def timed_calls(call: Callable[[], Iterable[Any]], calls: int, expected: list[int]) -> float:
    """``calls`` calls of ``call()``, each result consumed; their ns. The last result is
    checked (sorted: the unordered calls return the right items in any order)."""
    result: list[Any] = []
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        result = list(call())
    elapsed = ns_since(t0)
    assert sorted(result) == expected, "wrong results"
    return elapsed


STEADY_LABELS = {
    "map": f"Pool.map {ITEMS:,} items, pools started",
    "lambda": f"Pool.map lambda, {ITEMS:,} items",
    "unordered_map": f"Pool.unordered_map, {ITEMS:,} items",
    "imap": f"Pool.imap, {ITEMS:,} items",
}


def bench_steady(config: Config) -> list[Row]:
    import multiprocessing

    from suitkaise.processing import Pool

    workers = os.cpu_count() or 1
    items = list(range(ITEMS))
    expected = [x * 2 for x in items]
    chunksize = math.ceil(ITEMS / (4 * workers))  # what multiprocessing.Pool.map picks
    print(
        f"\n2./3. {ITEMS:,} items of x * 2 on started pools of {workers} workers "
        f"(os.cpu_count()); peer chunksize={chunksize}; "
        f"{config.maps_per_sample} calls per sample, time per call"
    )
    ours_pool = Pool(workers)
    peer_pool = multiprocessing.Pool(workers)
    try:
        # Start both pools' workers (and import cloudpickle) before anything is timed.
        ours_pool.map(double, range(workers * 4))
        peer_pool.map(double, range(workers * 4), chunksize=1)

        def side(name: str, call: Callable[[], Iterable[Any]]) -> Side:
            return Side(name, lambda n: timed_calls(call, n, expected), config.maps_per_sample)

        pairs = {
            "map": (
                side("ours: pool.map(double, items)", lambda: ours_pool.map(double, items)),
                side(
                    "peer: pool.map(double, items, chunksize)",
                    lambda: peer_pool.map(double, items, chunksize=chunksize),
                ),
            ),
            "lambda": (
                side(
                    "ours: pool.map(lambda x: x * 2, items)",
                    lambda: ours_pool.map(lambda x: x * 2, items),
                ),
                side(
                    "peer: pool.map(double, items, chunksize) (no lambdas)",
                    lambda: peer_pool.map(double, items, chunksize=chunksize),
                ),
            ),
            "unordered_map": (
                side(
                    "ours: pool.unordered_map(double, items)",
                    lambda: ours_pool.unordered_map(double, items),
                ),
                side(
                    "peer: list(pool.imap_unordered(double, items, chunksize))",
                    lambda: peer_pool.imap_unordered(double, items, chunksize=chunksize),
                ),
            ),
            "imap": (
                side("ours: list(pool.imap(double, items))", lambda: ours_pool.imap(double, items)),
                side(
                    "peer: list(pool.imap(double, items, chunksize))",
                    lambda: peer_pool.imap(double, items, chunksize=chunksize),
                ),
            ),
        }
        # Every side interleaved with every other, so that drift is shared across rows too.
        measure([s for pair in pairs.values() for s in (pair[1], pair[0])], config.map_repeats)
    finally:
        ours_pool.close()
        peer_pool.close()
        peer_pool.join()

    rows = []
    for key, (ours, peer) in pairs.items():
        show_pair(peer, ours, "/call")
        rows.append(versus(STEADY_LABELS[key], ours, peer, "<= 1.5x" if key == "map" else "info"))
    return rows


# -- the run -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fast smoke run (~3 s)")
    parser.add_argument(COLD_FLAG, choices=("ours", "peer"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_run:
        print(cold_round(args.cold_run))
        return 0
    from suitkaise import __version__

    config = QUICK if args.quick else FULL
    started = time.perf_counter()
    print_banner(
        f"suitkaise {__version__} pool benchmarks", args.quick, ["interleaved samples, medians"]
    )
    rows = [*bench_e2e(config), *bench_steady(config)]
    print_summary(rows, started, "peer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
