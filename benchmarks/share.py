"""Share benchmarks: suitkaise's Share next to multiprocessing.Manager, measured in one run.

    python benchmarks/share.py           # full run, about 15 s on 2 cores
    python benchmarks/share.py --quick   # smoke run, about 2 s (numbers are rough)
    python benchmarks/share.py --busy 1  # the same with 1 process burning a CPU throughout

Targets come from shared/PERFORMANCE.md. Absolute times drift between runs and machines, so
every ratio target compares two things measured here, in this run, interleaved (peer, ours,
peer, ours, ...) so that drift hits both sides alike; a side's figure is the median over its
samples. A few targets are also absolute (µs, ms); those rows say so.

The peer is a ``multiprocessing`` manager started in this run: a ``SyncManager`` subclass
(``multiprocessing.Manager()`` is a started ``SyncManager``) with one class registered, so
that both sides can share the same small object, ``Counter``. "A Manager method call" means
``counter.incr()`` on that manager's proxy: one round trip to the manager's server process,
which runs ``Counter.incr`` and sends back an int. That is the like-for-like peer of
``share.obj.incr()`` (the same class, the same method), and it is the denominator of rows 1,
2 and 4. A ``manager.Value`` proxy's ``.get()`` is timed as well, to show that the choice
does not flatter us: the row "Manager value.get() vs counter.incr()" should be near 1.0x.

1. ``share.circuit.short()`` (a ``Circuit`` whose threshold is never reached) from a child
   process; the whole expression, name lookup included. A row with ``c = share.circuit``
   held in a local shows what the lookup costs.
2. ``share.breaker.broken`` (a ``BreakingCircuit``) read from a child.
3. A trip in one process seen by another: the parent records the clock and calls
   ``share.breaker.trip()``; a child that was busy-polling ``share.breaker.broken`` records
   the clock when it sees ``True``. The clock is ``time.perf_counter_ns`` when it is
   ``CLOCK_MONOTONIC`` (system-wide, so the two processes' readings compare; the script
   checks) and ``time.monotonic_ns`` otherwise. The parent waits a random 0.2-1 ms after
   the child says it is polling, then trips; the circuit is reset between trials. The peer
   (context only) is a ``manager.Event``: the parent calls ``set()``, the child polls
   ``is_set()``. Ours and the peer alternate trial by trial.
4. ``share.obj.incr()`` on a shared ``Counter`` from a child.
5. ``Share()`` plus the first assignment (``share.x = 1``) against
   ``multiprocessing.Manager()``; each is shut down outside the timed region. One untimed
   round per side comes first. A context row adds the first shared object to the Manager
   side too (``manager.Namespace()`` and ``ns.x = 1``).
6. Memory of the helper processes, after the rows above used them: the Share's coordinator
   against the manager's server process (VmRSS from /proc/PID/status, Pss from
   /proc/PID/smaps_rollup; Linux only). Both are forked from this script at the same point.

Context rows: ``share.counter += 1`` and ``share.value`` (a cached int read) from a child.

Reading the numbers: a Manager call is one sleep-and-wake round trip between two processes,
and its cost depends on the machine's state far more than on Python. On a 2-CPU VM it is
about 35-57 µs when the other CPU is idle (waking an idle CPU is slow) and about 17 µs when
something else keeps that CPU busy (both processes then take turns on one CPU). Shared-memory
operations (rows 1-3) do not sleep, so their ratio to a Manager call moves with that state:
look at the min/max of the peer's samples, and at the "by bests" ratio, before trusting a
ratio near its target. Round trip against round trip (row 4) is affected on both sides.
``--busy N`` starts N processes that burn a CPU each for the whole run (killed by pid at the
end), to see the rows on a machine with no idle CPU; the Share's wire spins briefly before it
sleeps, and this is where spinning could hurt.

Every child-side figure is timed inside the child: one long-lived child process runs a
``time.perf_counter_ns`` loop of many calls, with its garbage collector paused (as
``timeit`` does), and sends the elapsed time back through a Pipe. The loops are identical on
both sides, so their own cost (about 15 ns a call) is on both sides.

This is a script, not a test: it prints and always exits 0, slow machine or not.
``tests/test_benchmark_share_run.py`` only checks that it runs.
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from multiprocessing.connection import Connection
from multiprocessing.managers import SyncManager
from typing import Any

from _harness import (
    Row,
    Sampling,
    Side,
    fmt_us,
    guarded,
    measure,
    ms_format,
    paused_gc,
    print_banner,
    print_summary,
    ratio_row,
    show,
    show_ratio,
    unmeasured,
)

NEVER = 10**9  # a threshold no benchmark reaches: short() never trips, never sleeps
CHILD_TIMEOUT_S = 60.0  # a child that does not answer in this long is taken for stuck
SHARE_DIRECTORIES: list[str] = []  # every Share made here, checked for removal at the end


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Config(Sampling):
    first_calls: int = 10  # calibration starts here: a Manager call takes tens of µs
    trip_trials: int  # trips timed per side (row 3)
    startup_repeats: int  # Share() / Manager() starts timed per side (row 5)


FULL = Config(
    repeats=11, sample_s=0.1, min_calls=200, max_calls=300_000, trip_trials=400, startup_repeats=15
)
QUICK = Config(
    repeats=3, sample_s=0.01, min_calls=20, max_calls=20_000, trip_trials=20, startup_repeats=3
)


# -- the peer ---------------------------------------------------------------------------


class Counter:
    """The small object both sides share: ``incr()`` adds one and returns the count."""

    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


class BenchManager(SyncManager):
    """``multiprocessing.Manager()``'s class, plus ``Counter``."""


BenchManager.register("Counter", Counter)


# -- rows and figures --------------------------------------------------------------------


def limit_row(
    label: str, ours: float, limit: float, target: str, fmt: Callable[[float], str]
) -> Row:
    """An absolute target: ``ours`` (ns) at most ``limit`` (ns)."""
    return Row(label, fmt(ours), f"limit {fmt(limit)}", None, target, ours <= limit)


fmt_ms = ms_format(3)  # the trip latencies are fractions of a millisecond


def fmt_mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


# -- the clock shared by two processes ------------------------------------------------------


def cross_process_clock() -> tuple[Callable[[], int], str]:
    """A nanosecond clock whose readings compare between processes (system-wide)."""
    info = time.get_clock_info("perf_counter")
    if info.implementation == "clock_gettime(CLOCK_MONOTONIC)":
        return time.perf_counter_ns, f"time.perf_counter_ns = {info.implementation}"
    monotonic = time.get_clock_info("monotonic").implementation
    return time.monotonic_ns, (
        f"time.monotonic_ns = {monotonic} (perf_counter is {info.implementation}, "
        "not known to be system-wide)"
    )


CLOCK, CLOCK_NAME = cross_process_clock()


# -- what the child runs --------------------------------------------------------------------
# One function per timed loop, all the same shape: n calls of one expression between two
# clock reads. Each returns the elapsed nanoseconds.


def loop_share_short(share: Any, n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        share.circuit.short()
    return time.perf_counter_ns() - t0


def loop_held_short(share: Any, n: int) -> int:
    circuit = share.circuit
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        circuit.short()
    return time.perf_counter_ns() - t0


def loop_share_broken(share: Any, n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        share.breaker.broken  # noqa: B018 - the read is what is timed
    return time.perf_counter_ns() - t0


def loop_share_method(share: Any, n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        share.obj.incr()
    return time.perf_counter_ns() - t0


def loop_share_iadd(share: Any, n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        share.counter += 1
    return time.perf_counter_ns() - t0


def loop_share_value(share: Any, n: int) -> int:
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        share.value  # noqa: B018 - the read is what is timed
    return time.perf_counter_ns() - t0


def loop_manager_method(peers: dict[str, Any], n: int) -> int:
    counter = peers["counter"]
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        counter.incr()
    return time.perf_counter_ns() - t0


def loop_manager_value(peers: dict[str, Any], n: int) -> int:
    value = peers["value"]
    t0 = time.perf_counter_ns()
    for _ in repeat(None, n):
        value.get()
    return time.perf_counter_ns() - t0


SHARE_LOOPS: dict[str, Callable[[Any, int], int]] = {
    "share.circuit.short()": loop_share_short,
    "c.short(), c = share.circuit held": loop_held_short,
    "share.breaker.broken": loop_share_broken,
    "share.obj.incr()": loop_share_method,
    "share.counter += 1": loop_share_iadd,
    "share.value (cached int)": loop_share_value,
}
MANAGER_LOOPS: dict[str, Callable[[dict[str, Any], int], int]] = {
    "Manager: counter.incr() (registered Counter)": loop_manager_method,
    "Manager: value.get() (manager.Value)": loop_manager_value,
}


def child_main(conn: Connection, share: Any, peers: dict[str, Any]) -> None:
    """The child: answers requests from the parent until told to stop.

    ("time", name, n): run loop ``name`` n times, reply the elapsed ns.
    ("watch", "share" | "manager"): reply "ready", busy-poll the flag, reply the clock
    reading taken the moment the flag was seen set.
    """
    while True:
        request = conn.recv()
        if request[0] == "stop":
            conn.send("stopped")
            return
        if request[0] == "time":
            _, name, n = request
            if name in SHARE_LOOPS:
                elapsed = paused_gc(SHARE_LOOPS[name], share, n)
            else:
                elapsed = paused_gc(MANAGER_LOOPS[name], peers, n)
            conn.send(elapsed)
            gc.collect()
        elif request[0] == "watch":
            clock = CLOCK
            if request[1] == "share":
                share.breaker.broken  # noqa: B018 - the handle is cached before polling
                conn.send("ready")
                while not share.breaker.broken:
                    pass
                seen = clock()
            else:
                event = peers["event"]
                conn.send("ready")
                while not event.is_set():
                    pass
                seen = clock()
            conn.send(seen)


class Child:
    """The parent's handle on the child: requests with a timeout, and a sure shutdown."""

    def __init__(self, share: Any, peers: dict[str, Any]) -> None:
        context = multiprocessing.get_context()
        self.conn, theirs = context.Pipe()
        self.process = context.Process(
            target=child_main, args=(theirs, share, peers), name="share-benchmark-child"
        )
        self.process.start()
        theirs.close()

    def ask(self, *request: Any) -> Any:
        self.conn.send(request)
        return self.answer()

    def answer(self) -> Any:
        if not self.conn.poll(CHILD_TIMEOUT_S):
            raise TimeoutError(f"the benchmark child did not answer in {CHILD_TIMEOUT_S} s")
        return self.conn.recv()

    def close(self) -> None:
        try:
            if self.process.is_alive():
                self.ask("stop")
        except (OSError, EOFError, TimeoutError):
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.conn.close()


# -- rows 1, 2, 4 and the context calls: one method call from a child ------------------------

SHORT_LABEL = "share.circuit.short() from child vs Manager call"
SHORT_ABS_LABEL = "share.circuit.short() from child, absolute"
HELD_LABEL = "held circuit c.short() from child vs Manager call"
BROKEN_LABEL = "share.breaker.broken from child vs Manager call"
BROKEN_ABS_LABEL = "share.breaker.broken from child, absolute"
METHOD_LABEL = "share.obj.incr() from child vs Manager call"
IADD_LABEL = "share.counter += 1 from child vs Manager call"
VALUE_LABEL = "share.value read from child vs Manager call"
PEER_CHECK_LABEL = "Manager value.get() vs counter.incr()"
CALL_LABELS = [
    SHORT_LABEL,
    SHORT_ABS_LABEL,
    HELD_LABEL,
    BROKEN_LABEL,
    BROKEN_ABS_LABEL,
    METHOD_LABEL,
    IADD_LABEL,
    VALUE_LABEL,
    PEER_CHECK_LABEL,
]


def bench_calls(child: Child, config: Config) -> list[Row]:
    print(
        "\n1, 2, 4. One call from a child process (timed in the child; the peer is a Manager "
        "proxy method call)"
    )

    def side(name: str) -> Side:
        return Side(name, lambda n: int(child.ask("time", name, n)))

    peer, peer_value = (side(name) for name in MANAGER_LOOPS)
    ours = {name: side(name) for name in SHARE_LOOPS}
    sides = [peer, *ours.values(), peer_value]
    measure(sides, config, local_gc=False)  # the child pauses its own collector
    show(sides, fmt_us)
    for mine in ours.values():
        show_ratio(mine, peer, digits=3)
    show_ratio(peer_value, peer, digits=3)

    def versus(label: str, name: str, target: str) -> Row:
        return ratio_row(label, ours[name].median, peer.median, target, fmt_us)

    return [
        versus(SHORT_LABEL, "share.circuit.short()", "<= 0.1x"),
        limit_row(SHORT_ABS_LABEL, ours["share.circuit.short()"].median, 5_000, "<= 5 µs", fmt_us),
        versus(HELD_LABEL, "c.short(), c = share.circuit held", "info"),
        versus(BROKEN_LABEL, "share.breaker.broken", "<= 0.02x"),
        limit_row(BROKEN_ABS_LABEL, ours["share.breaker.broken"].median, 1_000, "<= 1 µs", fmt_us),
        versus(METHOD_LABEL, "share.obj.incr()", "<= 0.5x"),
        versus(IADD_LABEL, "share.counter += 1", "info"),
        versus(VALUE_LABEL, "share.value (cached int)", "info"),
        ratio_row(PEER_CHECK_LABEL, peer_value.median, peer.median, "info", fmt_us),
    ]


# -- row 3: a trip in one process seen by another ---------------------------------------------

TRIP_P99_LABEL = "trip seen by another process, p99"
TRIP_MEDIAN_LABEL = "trip seen by another process, median"
TRIP_LABELS = [TRIP_P99_LABEL, TRIP_MEDIAN_LABEL]


def percentile(values: list[int], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(fraction * len(ordered)) - 1)])


def bench_trip(child: Child, share: Any, peers: dict[str, Any], config: Config) -> list[Row]:
    print(
        f"\n3. A trip in this process seen by a child busy-polling it, {config.trip_trials} "
        f"trials per side, alternating (clock: {CLOCK_NAME})"
    )
    breaker = share.breaker
    event = peers["event"]
    rng = random.Random(1)
    latencies: dict[str, list[int]] = {"share": [], "manager": []}

    def trial(which: str) -> int:
        if which == "share":
            breaker.reset()
            assert not share.breaker.broken
        else:
            event.clear()
        if child.ask("watch", which) != "ready":
            raise RuntimeError("the child did not start watching")
        time.sleep(rng.uniform(0.0002, 0.001))  # the child is in its polling loop by now
        t0 = CLOCK()
        if which == "share":
            breaker.trip()
        else:
            event.set()
        return int(child.answer()) - t0

    for which in ("share", "manager"):  # warm up both paths
        trial(which)
    for i in range(config.trip_trials):
        order = ("share", "manager") if i % 2 == 0 else ("manager", "share")
        for which in order:
            latencies[which].append(trial(which))
    breaker.reset()
    ours, peer = latencies["share"], latencies["manager"]
    if min(ours) < 0 or min(peer) < 0:
        raise RuntimeError("a child saw the trip before it happened: the clock is not shared")
    for name, values in (("ours: share.breaker.trip()", ours), ("peer: manager.Event.set()", peer)):
        print(
            f"  {name:<30} median {fmt_ms(statistics.median(values))}, p99 "
            f"{fmt_ms(percentile(values, 0.99))}, min {fmt_ms(min(values))}, "
            f"max {fmt_ms(max(values))}"
        )
    ours_p99, peer_p99 = percentile(ours, 0.99), percentile(peer, 0.99)
    return [
        Row(
            TRIP_P99_LABEL,
            fmt_ms(ours_p99),
            fmt_ms(peer_p99),
            ours_p99 / peer_p99,
            "<= 0.1 ms",
            ours_p99 <= 100_000,
        ),
        ratio_row(
            TRIP_MEDIAN_LABEL, statistics.median(ours), statistics.median(peer), "info", fmt_ms
        ),
    ]


# -- row 6: the helper processes' memory -----------------------------------------------------

RSS_LABEL = "helper processes' RSS vs Manager server"
PSS_LABEL = "helper processes' PSS vs Manager server"
MEMORY_LABELS = [RSS_LABEL, PSS_LABEL]


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS, and Pss and private (USS) if the kernel has smaps_rollup; in bytes."""
    sizes: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                sizes["rss"] = int(line.split()[1]) * 1024
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            fields = {
                parts[0].rstrip(":"): int(parts[1]) * 1024
                for parts in (line.split() for line in rollup)
                if len(parts) == 3 and parts[2] == "kB"
            }
        sizes["pss"] = fields["Pss"]
        sizes["uss"] = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    except (OSError, KeyError):
        pass
    return sizes


def coordinator_pid(share: Any) -> int:
    """The pid of the Share's coordinator (a private detail: ``share._sk``'s process)."""
    link = share._sk
    process = getattr(link, "process", None)
    if process is None:  # kept apart from the link, so that a finalizer can stop it
        process = link.running.process
    return int(process.pid)


def bench_memory(share: Any, manager: SyncManager) -> list[Row]:
    print("\n6. Memory of the helper processes, after the rows above (forked from this script)")
    if not os.path.exists("/proc/self/status"):
        print("  /proc is not available here")
        return [unmeasured(label, "no /proc") for label in MEMORY_LABELS]
    ours_pids = [coordinator_pid(share)]  # the Share has one helper: its coordinator
    peer_pid = manager._process.pid  # type: ignore[attr-defined]
    ours = [memory_of(pid) for pid in ours_pids]
    peer = memory_of(peer_pid)
    for name, sizes in (
        (f"ours: Share coordinator (pid {ours_pids[0]})", ours[0]),
        (f"peer: Manager server (pid {peer_pid})", peer),
    ):
        print(
            f"  {name:<40} "
            + ", ".join(f"{key.upper()} {fmt_mib(value)}" for key, value in sizes.items())
        )
    rows = []
    for key, label in (("rss", RSS_LABEL), ("pss", PSS_LABEL)):
        if key in peer and all(key in sizes for sizes in ours):
            total = sum(sizes[key] for sizes in ours)
            rows.append(
                Row(
                    label,
                    f"{fmt_mib(total)} ({len(ours)} process)",
                    fmt_mib(peer[key]),
                    total / peer[key],
                    "info",
                )
            )
        else:
            rows.append(unmeasured(label, f"no {key.upper()} here"))
    return rows


# -- rows 1-4 and 6 share one Share, one manager and one child --------------------------------

USED_LABELS = CALL_LABELS + TRIP_LABELS + MEMORY_LABELS


def bench_used(config: Config) -> list[Row]:
    from suitkaise import BreakingCircuit, Circuit
    from suitkaise.processing import Share

    manager = BenchManager(ctx=multiprocessing.get_context())
    manager.start()
    share = None
    child = None
    rows: list[Row] = []
    try:
        share = Share()
        SHARE_DIRECTORIES.append(share._sk.directory)
        share.circuit = Circuit(NEVER)
        share.breaker = BreakingCircuit(NEVER)  # trip() breaks it; reset() mends it
        share.obj = Counter()
        share.counter = 0
        share.value = 12345
        peers = {
            "counter": manager.Counter(),  # type: ignore[attr-defined]
            "value": manager.Value("i", 12345),
            "event": manager.Event(),
        }
        child = running = Child(share, peers)
        rows += guarded(lambda: bench_calls(running, config), CALL_LABELS)
        rows += guarded(lambda: bench_trip(running, share, peers, config), TRIP_LABELS)
        child.close()
        child = None
        rows += guarded(lambda: bench_memory(share, manager), MEMORY_LABELS)
    finally:
        if child is not None:
            child.close()
        if share is not None:
            share.stop()
        manager.shutdown()
        share = None
        gc.collect()  # the Share's finalizer removes its private directory
    return rows


# -- row 5: start-up ------------------------------------------------------------------------

STARTUP_LABEL = "Share() + first assignment vs Manager()"
STARTUP_NS_LABEL = "Share() + x = 1 vs Manager() + Namespace x = 1"
STARTUP_LABELS = [STARTUP_LABEL, STARTUP_NS_LABEL]


def start_share() -> float:
    from suitkaise.processing import Share

    t0 = time.perf_counter_ns()
    share = Share()
    share.x = 1
    elapsed = time.perf_counter_ns() - t0
    SHARE_DIRECTORIES.append(share._sk.directory)
    share.stop()
    del share
    gc.collect()  # its finalizer removes its private directory
    return elapsed


def start_manager() -> float:
    t0 = time.perf_counter_ns()
    manager = multiprocessing.Manager()
    elapsed = time.perf_counter_ns() - t0
    manager.shutdown()
    return elapsed


def start_manager_namespace() -> float:
    t0 = time.perf_counter_ns()
    manager = multiprocessing.Manager()
    namespace = manager.Namespace()
    namespace.x = 1
    elapsed = time.perf_counter_ns() - t0
    del namespace
    manager.shutdown()
    return elapsed


def bench_startup(config: Config) -> list[Row]:
    print(
        f"\n5. Start-up, {config.startup_repeats} interleaved rounds per side after one untimed "
        "round (each shut down outside the timed region)"
    )
    sides = {
        "ours: Share() + share.x = 1": start_share,
        "peer: multiprocessing.Manager()": start_manager,
        "peer: Manager() + Namespace() + ns.x = 1": start_manager_namespace,
    }
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for run in sides.values():
        run()
    for _ in range(config.startup_repeats):
        for name, run in sides.items():
            samples[name].append(run())
    for name, values in samples.items():
        print(
            f"  {name:<42} median {fmt_ms(statistics.median(values)):>9}   (min "
            f"{fmt_ms(min(values))}, max {fmt_ms(max(values))}, {len(values)} samples)"
        )
    ours, peer, peer_ns = (statistics.median(values) for values in samples.values())
    return [
        ratio_row(STARTUP_LABEL, ours, peer, "<= 1.0x", fmt_ms),
        ratio_row(STARTUP_NS_LABEL, ours, peer_ns, "info", fmt_ms),
    ]


# -- summary -----------------------------------------------------------------------------


def live_coordinators() -> list[str]:
    """This script's Share coordinators still running (a coordinator started with a bare
    fork is not among multiprocessing's children); Linux only."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                state, parent = stat.read().rsplit(")", 1)[1].split()[:2]
            if int(parent) != os.getpid() or state == "Z":
                continue
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() == "suitkaise-share":
                    found.append(f"coordinator pid {entry}")
        except OSError:
            continue
    return found


def check_nothing_left() -> None:
    """Say so if a child, a coordinator, a manager server or a Share directory outlived
    its section (each section stops what it started)."""
    gc.collect()
    time.sleep(0.05)  # a finalizer's rmtree, or a just-stopped process being reaped
    processes: list[Any] = [*multiprocessing.active_children(), *live_coordinators()]
    directories = [path for path in SHARE_DIRECTORIES if os.path.exists(path)]
    if processes:
        print(f"\nProcesses left behind: {processes}")
    if directories:
        print(f"\nShare directories left behind: {directories}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fast smoke run (~2 s)")
    parser.add_argument(
        "--busy", type=int, default=0, metavar="N", help="N processes burn a CPU meanwhile"
    )
    args = parser.parse_args(argv)
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)
    ]
    try:
        return run(args.quick, len(burners))
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def run(quick: bool, busy: int) -> int:
    from suitkaise import __version__

    config = QUICK if quick else FULL
    started = time.perf_counter()
    print_banner(
        f"suitkaise {__version__} Share benchmarks",
        quick,
        [f"{config.repeats} interleaved samples per side, medians"],
        machine=f", start method {multiprocessing.get_start_method()}",
    )
    if busy:
        print(f"{busy} process(es) burning a CPU each throughout (--busy)")
    rows: list[Row] = []
    rows += guarded(lambda: bench_used(config), USED_LABELS)
    rows += guarded(lambda: bench_startup(config), STARTUP_LABELS)
    # Rows in the order of PERFORMANCE.md's targets, context rows after them.
    order = [
        SHORT_LABEL,
        SHORT_ABS_LABEL,
        BROKEN_LABEL,
        BROKEN_ABS_LABEL,
        TRIP_P99_LABEL,
        METHOD_LABEL,
        STARTUP_LABEL,
        HELD_LABEL,
        TRIP_MEDIAN_LABEL,
        IADD_LABEL,
        VALUE_LABEL,
        PEER_CHECK_LABEL,
        STARTUP_NS_LABEL,
        RSS_LABEL,
        PSS_LABEL,
    ]
    by_label = {row.label: row for row in rows}
    rows = [by_label[label] for label in order if label in by_label]
    check_nothing_left()
    print_summary(rows, started, "peer / limit", ratio_digits=3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
