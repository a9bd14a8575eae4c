"""The terminal show behind ``python -m suitkaise demo``.

Not imported by ``import suitkaise``: only the command line loads it.

The demo is a list of scenarios (:data:`SCENARIOS`). A scenario is a function that takes a
:class:`Show` (where it prints, with timestamps relative to its own start) and returns
normally when everything behaved as the docs promise, or raises :class:`DemoFailure`.
To add one, write the function and append a :class:`Scenario` to the list.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .circuits import BreakingCircuit, Circuit

__all__ = ["SCENARIOS", "DemoFailure", "Scenario", "Show", "run"]


class DemoFailure(Exception):
    """A scenario saw something the library promises not to do."""


class Show:
    """Where scenarios print: one whole line at a time (safe from any thread), optionally
    stamped with the time since the scenario started."""

    def __init__(self, out: TextIO, *, color: bool = False, seed: int | None = None) -> None:
        self._out = out
        self._color = color
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self.seed = seed

    def rng(self) -> random.Random | None:
        """A random source for circuit jitter: seeded if the demo was given ``--seed``."""
        return None if self.seed is None else random.Random(self.seed)

    def restart_clock(self) -> None:
        """Timestamps count from now."""
        self._start = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the clock (re)started."""
        return time.monotonic() - self._start

    def _write(self, text: str) -> None:
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()

    def title(self, text: str) -> None:
        """A scenario heading."""
        self._write("")
        self._write(f"\033[1m{text}\033[0m" if self._color else text)

    def say(self, text: str) -> None:
        """An explanatory line, without a timestamp."""
        self._write(f"  {text}")

    def event(self, text: str) -> None:
        """Something that happened, stamped with the time since the scenario started."""
        stamp = f"+{self.elapsed():.3f}s"
        self._write(f"  {stamp:>8}  {text}")


@dataclass(frozen=True)
class Scenario:
    """One part of the demo: ``python -m suitkaise demo NAME`` runs it alone."""

    name: str
    title: str
    run: Callable[[Show], None]


# -- scenario: retry a flaky service ----------------------------------------------------------


class ServiceError(Exception):
    """What the simulated service raises while it is down."""


class FlakyService:
    """A simulated remote service: its first ``failures`` calls fail, then it answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def call(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ServiceError("503 Service Unavailable")
        return "200 OK"


def retry_flaky_service(show: Show) -> None:
    """A Circuit with backoff and jitter retries a service until it recovers."""
    threshold, failures = 3, 12
    circuit = Circuit(
        num_shorts_to_trip=threshold,
        sleep_time_after_trip=0.1,
        backoff_factor=2.0,
        max_sleep_time=0.4,
        jitter=0.2,
        rng=show.rng(),
    )
    service = FlakyService(failures)
    show.say("circuit = Circuit(num_shorts_to_trip=3, sleep_time_after_trip=0.1,")
    show.say("                  backoff_factor=2.0, max_sleep_time=0.4, jitter=0.2)")
    show.say(f"the service fails its first {failures} calls, then recovers")
    show.restart_clock()
    slept_total = 0.0
    while True:
        try:
            answer = service.call()
            break
        except ServiceError:
            base = circuit.current_sleep_time  # what this short sleeps if it trips
            started = time.monotonic()
            tripped = circuit.short()
            slept = time.monotonic() - started
            head = f"call {service.calls:2}: ServiceError -> short()"
            if tripped:
                slept_total += slept
                show.event(
                    f"{head}  trip #{circuit.total_trips}: slept {slept:.3f}s "
                    f"(base {base:.3f}s +/-20%)"
                )
            else:
                show.event(f"{head}  {circuit.times_shorted}/{threshold}")
    show.event(f"call {service.calls:2}: {answer!r}")
    expected_trips = failures // threshold
    if circuit.total_trips != expected_trips:
        raise DemoFailure(f"expected {expected_trips} trips, saw {circuit.total_trips}")
    capped = " (the cap)" if circuit.current_sleep_time == circuit.max_sleep_time else ""
    show.say(
        f"recovered after {failures} failures and {circuit.total_trips} trips, "
        f"{slept_total:.2f}s spent backing off"
    )
    show.say(f"the next trip would sleep {circuit.current_sleep_time:.1f}s{capped}")


# -- scenario: coordinated shutdown of threads ------------------------------------------------


class FatalError(Exception):
    """An error after which no worker should carry on."""


def coordinated_shutdown(show: Show) -> None:
    """Four threads share one BreakingCircuit; one fatal error stops them all."""
    workers, fatal_worker, fatal_item = 4, 2, 3
    item_times = [0.04 + 0.015 * worker_id for worker_id in range(workers)]
    shutdown = BreakingCircuit(num_shorts_to_trip=1)
    fatal_at: list[float] = []
    show.say("shutdown = BreakingCircuit(num_shorts_to_trip=1), shared by 4 worker threads")
    show.say(
        "items take " + ", ".join(f"{t * 1000:.0f}" for t in item_times) + " ms for workers "
        f"0-3; worker {fatal_worker} hits a FatalError on item {fatal_item}"
    )

    def process_item(worker_id: int, item: int) -> None:
        time.sleep(item_times[worker_id])
        if worker_id == fatal_worker and item == fatal_item:
            raise FatalError(f"item {item} is corrupt")

    def worker(worker_id: int) -> None:
        done = attempts = 0
        while not shutdown.broken:
            attempts += 1
            if attempts > 20:  # a safety net: the fatal error comes long before this
                show.event(f"worker {worker_id}: never saw shutdown.broken, giving up")
                return
            try:
                process_item(worker_id, done + 1)
                done += 1
                show.event(f"worker {worker_id}: item {done} done")
            except FatalError as error:
                fatal_at.append(show.elapsed())
                show.event(f"worker {worker_id}: FatalError ({error}) -> shutdown.short()")
                shutdown.short()
        show.event(f"worker {worker_id}: saw shutdown.broken, stopping after {done} items")

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"demo-worker-{i}", daemon=True)
        for i in range(workers)
    ]
    show.restart_clock()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5.0
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    if not fatal_at or not shutdown.broken or any(thread.is_alive() for thread in threads):
        raise DemoFailure("the workers did not all stop after the fatal error")
    after = show.elapsed() - fatal_at[0]
    show.say(f"all {workers} workers stopped, each after finishing the item in hand;")
    show.say(
        f"the last one {after * 1000:.0f} ms after the fatal error "
        f"(shutdown.total_trips={shutdown.total_trips})"
    )

# -- scenario: eight processes, one circuit in a Share ------------------------------------------


def _share_scenario_worker() -> type:
    # Built on first use: `python -m suitkaise demo retry` should not import processing.
    from .processing import Skprocess

    class DemoWorker(Skprocess):
        """One of eight workers: calls a service that fails on a fixed schedule."""

        def __init__(self, share: Any, worker_id: int, failing_calls: tuple[int, ...]) -> None:
            self.share = share
            self.worker_id = worker_id
            self.failing_calls = failing_calls
            self.calls = 0

        def __run__(self) -> None:
            if self.share.circuit.broken:
                self.share.log += [
                    (time.monotonic(), self.worker_id, f"saw broken after {self.calls} calls")
                ]
                self.stop()
                return
            self.calls += 1
            time.sleep(0.01)  # the service call
            if self.calls in self.failing_calls:
                what = f"ServiceError on call {self.calls} -> short()"
                self.share.log += [(time.monotonic(), self.worker_id, what)]
                self.share.circuit.short()

    return DemoWorker


def processes_share_one_circuit(show: Show) -> None:
    """Eight processes, one BreakingCircuit in a Share: three failures stop them all."""
    from .processing import Pool, Share

    schedule = {1: (3,), 5: (5,), 2: (8,)}  # worker -> its failing calls
    show.say("share = Share(); share.circuit = BreakingCircuit(num_shorts_to_trip=3)")
    show.say("pool.star().map(DemoWorker, ...) over 8 processes; the service fails for")
    show.say("worker 1 on its call 3, worker 5 on call 5, worker 2 on call 8")
    worker = _share_scenario_worker()
    with Share() as share, Pool(workers=8) as pool:
        share.circuit = BreakingCircuit(num_shorts_to_trip=3)
        share.log = []
        show.restart_clock()
        start = time.monotonic()
        items = [(share, i, schedule.get(i, ())) for i in range(8)]
        results = pool.star().map.timeout(30)(worker, items)
        ended = time.monotonic() - start
        for moment, worker_id, what in sorted(share.log):
            stamp = f"+{moment - start:.3f}s"
            show.say(f"{stamp:>8}  worker {worker_id} (its own process): {what}")
        circuit = share.circuit
        stopped = sum(1 for _, _, what in share.log if what.startswith("saw broken"))
        if results != [None] * 8 or not circuit.broken or stopped != 8:
            raise DemoFailure(f"expected 8 stopped workers, got {stopped} ({results})")
        show.say(
            f"all 8 workers stopped; pool.map returned {results.count(None)} x None after "
            f"{ended:.2f}s (circuit.total_trips={circuit.total_trips}, "
            f"times_shorted={circuit.times_shorted})"
        )


# -- scenario: circuits on Redis ----------------------------------------------------------------

REDIS_URL_VARIABLE = "SUITKAISE_REDIS_URL"
"""Environment variable naming the Redis server of the Redis scenario."""


def _redis_machine(url: str, name: str, machine: int, failing: tuple[int, ...]) -> list[str]:
    """One "machine": its own process and its own circuit object on the shared Redis circuit."""
    from .circuits.redis import RedisStore

    breaker = BreakingCircuit(3, store=RedisStore(url, name))
    log: list[str] = []
    calls = 0
    while not breaker.broken:
        calls += 1
        time.sleep(0.01)  # the service call
        if calls in failing:
            log.append(f"{time.monotonic():.6f} machine {machine}: failure on call {calls}")
            breaker.short()
        if calls > 500:
            log.append(f"{time.monotonic():.6f} machine {machine}: never saw broken")
            return log
    log.append(f"{time.monotonic():.6f} machine {machine}: saw broken after {calls} calls")
    return log


def circuits_on_redis(show: Show) -> None:
    """Three processes ("machines"), one BreakingCircuit on Redis."""
    url = os.environ.get(REDIS_URL_VARIABLE, "redis://127.0.0.1:6379/0")
    try:
        import redis
    except ImportError:
        show.say("skipped: redis-py is not installed (pip install 'suitkaise[redis]').")
        return
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        client.ping()
    except Exception as error:
        show.say(f"skipped: no Redis server at {url} ({type(error).__name__}).")
        show.say(f"Start one, or set {REDIS_URL_VARIABLE}, to see this scenario.")
        return
    from .processing import Pool

    name = f"demo-payments-{os.getpid()}-{time.monotonic_ns()}"
    schedule = {0: (4,), 1: (6,), 2: (9,)}
    show.say(f"breaker = BreakingCircuit(3, store=RedisStore({url!r}, name=...))")
    show.say("built separately in 3 processes; each fails once (calls 4, 6 and 9)")
    try:
        start = time.monotonic()
        with Pool(workers=3) as pool:
            logs = pool.star().map.timeout(30)(
                _redis_machine, [(url, name, m, schedule[m]) for m in range(3)]
            )
        lines = sorted(line for log in logs for line in log)
        for line in lines:
            moment, text = line.split(" ", 1)
            stamp = f"+{float(moment) - start:.3f}s"
            show.say(f"{stamp:>8}  {text}")
        stopped = sum("saw broken" in line for line in lines)
        broken, trips = client.hmget(f"suitkaise:circuit:{name}", ["broken", "trips"])
        if stopped != 3 or broken != b"1":
            raise DemoFailure("the three machines did not all see the break")
        show.say(
            f"all 3 stopped; Redis key suitkaise:circuit:{name} holds broken=1, "
            f"trips={int(trips or 0)}"
        )
    finally:
        client.delete(f"suitkaise:circuit:{name}")


SCENARIOS: list[Scenario] = [
    Scenario(
        name="retry",
        title="A flaky service, retried with one Circuit (backoff + jitter)",
        run=retry_flaky_service,
    ),
    Scenario(
        name="shutdown",
        title="Coordinated shutdown: 4 threads, one BreakingCircuit",
        run=coordinated_shutdown,
    ),
    Scenario(
        name="processes",
        title="Eight processes, one BreakingCircuit in a Share",
        run=processes_share_one_circuit,
    ),
    Scenario(
        name="redis",
        title="Across machines: one BreakingCircuit on Redis",
        run=circuits_on_redis,
    ),
]
"""The demo, in order. Later scenarios (Share, Redis) append here."""


def run(
    names: Sequence[str] = (),
    *,
    out: TextIO | None = None,
    seed: int | None = None,
) -> int:
    """Run the named scenarios (all of them if ``names`` is empty); return an exit code.

    Raises:
        KeyError: a name is not one of :data:`SCENARIOS`.
    """
    by_name = {scenario.name: scenario for scenario in SCENARIOS}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise KeyError(", ".join(unknown))
    chosen = [by_name[name] for name in names] if names else list(SCENARIOS)
    stream = sys.stdout if out is None else out
    color = stream.isatty() and "NO_COLOR" not in os.environ
    show = Show(stream, color=color, seed=seed)

    show.say("suitkaise demo: circuits count failures, back off, and coordinate workers")
    started = time.monotonic()
    failed = 0
    for number, scenario in enumerate(chosen, 1):
        show.title(f"[{number}/{len(chosen)}] {scenario.title}")
        try:
            scenario.run(show)
        except DemoFailure as failure:
            failed += 1
            show.say(f"FAILED: {failure}")
    show.title(
        f"demo finished in {time.monotonic() - started:.1f}s: "
        f"{len(chosen) - failed} of {len(chosen)} scenarios ok"
    )
    return 1 if failed else 0
