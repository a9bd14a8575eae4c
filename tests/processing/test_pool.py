"""Pool (SPEC section 4): map / unordered_map / imap / unordered_imap and ``.star()``, the
``.timeout()`` / ``.background()`` / ``.asynced()`` modifiers and their combinations, functions,
lambdas, closures and Skprocess classes as work, errors raised in the parent with their own
type and the worker's traceback, dead workers, close / terminate / context manager, and the
processes left behind (none): after Ctrl-C and after the parent is SIGKILLed too.

Every test is bounded: a call that could hang runs with a deadline, scripts run by
``subprocess`` are waited on with a timeout, and anything still alive at the end of a test is
killed by its own pid (never by name). The autouse ``no_leaked_processes`` fixture
(conftest.py) fails any test that leaves a process of ours behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import inspect
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from suitkaise.processing import (
    OnFinishError,
    Pool,
    PostRunError,
    PreRunError,
    ProcessError,
    ProcessTimeoutError,
    ResultError,
    RunError,
    Skprocess,
)

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).parent / "pool_scripts"
DEADLINE = 60.0  # generous bound for anything that must not hang


# -- helpers ---------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether ``pid`` is a living process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: set[int], seconds: float) -> set[int]:
    """Wait up to ``seconds`` for every pid to die; return those still alive."""
    deadline = time.monotonic() + seconds
    left = {pid for pid in pids if alive(pid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = {pid for pid in left if alive(pid)}
    return left


def read_pids(path: Path) -> set[int]:
    try:
        return {int(line) for line in path.read_text().split()}
    except FileNotFoundError:
        return set()


def wait_pids(path: Path, count: int, seconds: float = DEADLINE) -> set[int]:
    """Wait until ``count`` distinct pids have been written to ``path``."""
    deadline = time.monotonic() + seconds
    pids = read_pids(path)
    while len(pids) < count and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = read_pids(path)
    assert len(pids) >= count, f"only {len(pids)} of {count} workers started: {pids}"
    return pids


def descendants(root: int) -> set[int]:
    """Pids of every living descendant of ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_pids(pids: set[int]) -> None:
    """SIGKILL pids this test started (workers whose pids they reported themselves)."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def bounded(pool: Pool, call: Callable[[], Any], seconds: float = DEADLINE) -> Any:
    """Run a blocking pool call in a thread; if it hangs, terminate the pool and fail."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pool.terminate()
        thread.join(10)
        pytest.fail(f"the pool call hung for more than {seconds} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


# -- work run by the pool (module level: shipped by reference, or by value) --------------


class CustomError(Exception):
    """A user exception defined in the test module."""


class KeywordError(Exception):
    """An exception that pickles but cannot be rebuilt from its args."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def worker_pid(_: object = None) -> int:
    return os.getpid()


def note_pid_and_sleep(path: str, seconds: float) -> float:
    with open(path, "a") as pids:
        pids.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return seconds


def gather_pids(path: str, expected: int) -> int:
    """Write this worker's pid, then wait until ``expected`` pids are in the file."""
    with open(path, "a") as pids:
        pids.write(f"{os.getpid()}\n")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(path) as pids:
            if len(pids.read().split()) >= expected:
                break
        time.sleep(0.01)
    return os.getpid()


def raise_custom_on_three(x: int) -> int:
    if x == 3:
        raise CustomError("item three", x)
    return x


def raise_keyword_error(x: int) -> int:
    raise KeywordError(x, "no way back")


def return_lock(_: object) -> Any:
    return threading.Lock()


def kill_self_on_two(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
    return x


def exit_three_on_two(x: int) -> int:
    if x == 2:
        os._exit(3)
    return x


class Accumulate(Skprocess):
    """``runs`` iterations adding ``step``: the result is ``step * runs``."""

    def __init__(self, step: int, runs: int = 3) -> None:
        self.step = step
        self.total = 0
        self.process_config.runs = runs

    def __run__(self) -> None:
        self.total += self.step

    def __result__(self) -> tuple[int, int]:
        return self.step, self.total


class FailIn(Skprocess):
    """Three runs; raises ValueError in ``section`` (on run 2 for the loop sections)."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.process_config.runs = 3

    def _maybe_fail(self, section: str) -> None:
        loop = section in ("prerun", "run", "postrun")
        if self.section == section and (not loop or self.current_run == 2):
            raise ValueError(f"bad {section}")

    def __prerun__(self) -> None:
        self._maybe_fail("prerun")

    def __run__(self) -> None:
        self._maybe_fail("run")

    def __postrun__(self) -> None:
        self._maybe_fail("postrun")

    def __onfinish__(self) -> None:
        self._maybe_fail("onfinish")

    def __result__(self) -> str:
        self._maybe_fail("result")
        return "fine"


class Recovers(Skprocess):
    """Fails once in run 1; with two lives the retry succeeds."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.attempts = 0
        self.process_config.runs = 1
        self.process_config.lives = 2

    def __run__(self) -> None:
        self.attempts += 1
        if self.attempts == 1:
            raise ConnectionError("flaky")

    def __result__(self) -> tuple[str, int]:
        return self.tag, self.attempts


class Handled(Skprocess):
    """Always fails; ``__error__`` turns the failure into a value."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __run__(self) -> None:
        raise KeyError(self.tag)

    def __error__(self) -> Any:
        assert isinstance(self.error, RunError)
        return f"handled {type(self.error.original_error).__name__} {self.tag}"


class TooSlow(Skprocess):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.process_config.runs = 1
        self.process_config.timeouts.run = 0.2

    def __run__(self) -> None:
        time.sleep(self.seconds)


class KillsItself(Skprocess):
    def __init__(self, how: str) -> None:
        self.how = how

    def __run__(self) -> None:
        if self.how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)
        os._exit(3)


# -- the page's worker pattern, with a local stop condition ------------------------------


class ServiceError(Exception):
    pass


class WorkerSetup:
    """What every worker gets (the page passes a Share; that is a later issue)."""

    def __init__(self, failures_to_stop: int, marks: str, flag: str | None = None) -> None:
        self.failures_to_stop = failures_to_stop
        self.marks = marks
        self.flag = flag


def call_flaky_service(call: int) -> int:
    """A deterministic fake: every other call fails."""
    if call % 2 == 1:
        raise ServiceError(f"call {call} failed")
    return call


class ResilientWorker(Skprocess):
    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.calls = 0
        self.failures = 0

    def _should_stop(self) -> bool:
        if self.setup.flag is not None:
            return os.path.exists(self.setup.flag)
        return self.failures >= self.setup.failures_to_stop

    def __run__(self) -> None:
        if self._should_stop():
            self.stop()
            return
        try:
            call_flaky_service(self.calls)
        except ServiceError:
            self.failures += 1
        finally:
            self.calls += 1
        if self.setup.flag is not None:
            time.sleep(0.01)

    def __onfinish__(self) -> None:
        mark = Path(self.setup.marks) / f"{os.getpid()}-{id(self)}-{time.time_ns()}"
        mark.write_text(f"{self.calls} {self.failures}")


# -- calls, ordering and star, under every start method ---------------------------------


def test_every_call_kind_under_every_start_method(start_method: str) -> None:
    offset = 100

    def local(x: int) -> int:  # a local closure: only cloudpickle can ship it
        return x + offset

    items = list(range(23))
    expected = [x * x for x in items]
    pairs = [(x, 10 * x) for x in range(9)]
    sums = [a + b for a, b in pairs]
    with Pool(2) as pool:
        assert pool.map(square, items) == expected
        unordered = pool.unordered_map(square, items)
        assert isinstance(unordered, list)
        assert sorted(unordered) == expected
        iterator = pool.imap(square, items)
        assert not isinstance(iterator, list)
        assert iter(iterator) is iterator
        assert list(iterator) == expected
        unordered_iterator = pool.unordered_imap(square, items)
        assert not isinstance(unordered_iterator, list)
        assert sorted(unordered_iterator) == expected

        assert pool.star().map(add, pairs) == sums
        assert sorted(pool.star().unordered_map(add, pairs)) == sorted(sums)
        assert list(pool.star().imap(add, pairs)) == sums
        assert sorted(pool.star().unordered_imap(add, pairs)) == sorted(sums)

        assert pool.map(lambda x: -x, items) == [-x for x in items]
        assert pool.map(local, items) == [x + offset for x in items]
        assert pool.star().map(lambda a, b: a * b, pairs) == [a * b for a, b in pairs]
        assert pool.map(str.upper, ["a", "b"]) == ["A", "B"]  # a builtin method


def test_map_keeps_input_order_when_items_finish_out_of_order(tmp_path: Path) -> None:
    delays = [0.8, 0.0, 0.2, 0.0]
    with Pool(2) as pool:
        pool.star().map(gather_pids, [(str(tmp_path / "up"), 2)] * 2)  # both workers up
        assert pool.map(nap, delays) == delays
        assert list(pool.imap(nap, delays)) == delays
        unordered = pool.unordered_map(nap, delays)
        assert sorted(unordered) == sorted(delays)
        # Completion order: the 0.8 s item (alone in a worker) comes last.
        assert unordered[-1] == 0.8


def test_imap_yields_results_before_the_whole_call_is_done() -> None:
    with Pool(2) as pool:
        started = time.monotonic()
        iterator = pool.imap(nap, [0.0, 1.5])
        assert next(iterator) == 0.0
        assert time.monotonic() - started < 1.2
        assert next(iterator) == 1.5
        with pytest.raises(StopIteration):
            next(iterator)
        fast_first = pool.unordered_imap(nap, [1.5, 0.0])
        assert next(fast_first) == 0.0
        assert list(fast_first) == [1.5]


def test_closing_an_unfinished_imap_stops_its_work(tmp_path: Path) -> None:
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    with Pool(2) as pool:
        iterator = pool.star().imap(note_pid_and_sleep, [(str(fast), 0), (str(slow), 30)])
        assert next(iterator) == 0
        busy = wait_pids(slow, 1)
        started = time.monotonic()
        iterator.close()  # the caller gives up on the rest
        assert wait_gone(busy, 3.0) == set(), "the abandoned item kept running"
        assert pool.map(square, [3]) == [9]
    assert time.monotonic() - started < 10  # close() did not wait for the abandoned item


def test_many_items_are_chunked_but_keep_their_order() -> None:
    items = list(range(1003))
    with Pool(2) as pool:
        assert pool.map(lambda x: x * 3 + 1, items) == [x * 3 + 1 for x in items]
        assert list(pool.imap(square, items)) == [x * x for x in items]
        assert sorted(pool.unordered_map(square, items)) == [x * x for x in items]


def test_empty_and_generator_inputs() -> None:
    with Pool(2) as pool:
        assert pool.map(square, []) == []
        assert pool.unordered_map(square, []) == []
        assert list(pool.imap(square, [])) == []
        assert list(pool.unordered_imap(square, [])) == []
        assert pool.star().map(add, []) == []
        assert pool.map.background()(square, []).result(DEADLINE) == []
        assert asyncio.run(pool.map.asynced()(square, [])) == []
        assert pool.map(square, (x for x in range(5))) == [0, 1, 4, 9, 16]
        assert pool.star().map(add, iter([(1, 2), (3, 4)])) == [3, 7]


def test_workers_run_in_parallel_up_to_the_worker_count(tmp_path: Path) -> None:
    path = tmp_path / "pids"
    with Pool(3) as pool:
        assert pool.workers == 3
        pids = pool.star().map(gather_pids, [(str(path), 3)] * 3)
        assert len(set(pids)) == 3  # three items ran at the same time, in three workers
        assert os.getpid() not in pids
        more = pool.map(worker_pid, range(30))
        assert 1 <= len(set(more)) <= 3


def test_workers_none_means_cpu_count() -> None:
    pool = Pool()
    assert pool.workers == (os.cpu_count() or 1)
    assert Pool(None).workers == (os.cpu_count() or 1)
    pool.close()


def test_explicit_context_is_used() -> None:
    context = multiprocessing.get_context("spawn")
    with Pool(1, context=context) as pool:
        assert pool.map(lambda x: x + 1, [1, 2]) == [2, 3]
        pid = pool.map(worker_pid, [0])[0]
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            assert b"multiprocessing" in cmdline.read()  # a spawned interpreter, not a fork


@pytest.mark.parametrize(
    ("workers", "error"),
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError)],
)
def test_workers_validation(workers: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="workers"):
        Pool(workers)


def test_non_callable_is_a_type_error() -> None:
    with Pool(1) as pool:
        with pytest.raises(TypeError):
            pool.map(42, [1])  # type: ignore[arg-type]
        assert pool.map(square, [3]) == [9]


# -- modifiers ---------------------------------------------------------------------------


def test_timeout_raises_builtin_timeout_error_and_kills_the_busy_workers(
    start_method: str, tmp_path: Path
) -> None:
    path = tmp_path / "pids"
    with Pool(2) as pool:
        # Workers up first: under spawn on a loaded machine, starting them alone can take
        # longer than the timeout, and then no item would be busy when it expires.
        assert pool.map(square, [0, 1]) == [0, 1]
        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            pool.star().map.timeout(1.0)(note_pid_and_sleep, [(str(path), 30)] * 2)
        assert type(caught.value) is TimeoutError
        assert time.monotonic() - started < 10
        busy = read_pids(path)
        assert busy, "the workers never started the items"
        assert wait_gone(busy, 3.0) == set(), "abandoned items kept running"
        # The pool is usable afterwards.
        assert pool.map(square, [1, 2, 3]) == [1, 4, 9]


@pytest.mark.parametrize("kind", ["map", "unordered_map", "imap", "unordered_imap"])
def test_timeout_on_every_call_kind(kind: str) -> None:
    with Pool(2) as pool:
        call = getattr(pool, kind).timeout(0.5)
        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            list(call(nap, [30, 30]))
        assert type(caught.value) is TimeoutError
        assert time.monotonic() - started < 5
        assert list(getattr(pool, kind)(square, [2, 3])) in ([4, 9], [9, 4])
        assert list(getattr(pool.star(), kind).timeout(0.5)(add, [(1, 1)])) == [2]


def test_imap_timeout_yields_what_finished_then_raises() -> None:
    with Pool(2) as pool:
        pool.map(square, [0, 1])  # workers up
        iterator = pool.imap.timeout(2.0)(nap, [0.0, 0.1, 30])
        assert next(iterator) == 0.0
        assert next(iterator) == 0.1
        with pytest.raises(TimeoutError):
            next(iterator)
        assert pool.map(square, [4]) == [16]


def test_timeout_long_enough_returns_the_results() -> None:
    with Pool(2) as pool:
        assert pool.map.timeout(30)(square, range(5)) == [0, 1, 4, 9, 16]
        assert pool.star().map.timeout(30)(add, [(1, 2)]) == [3]
        assert list(pool.imap.timeout(30)(square, [3])) == [9]


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), float("nan")])
def test_timeout_value_errors(seconds: float) -> None:
    pool = Pool(1)
    with pytest.raises(ValueError):
        pool.map.timeout(seconds)
    pool.close()


@pytest.mark.parametrize("seconds", ["1", None, True])
def test_timeout_type_errors(seconds: Any) -> None:
    pool = Pool(1)
    with pytest.raises(TypeError):
        pool.map.timeout(seconds)
    pool.close()


def test_modifiers_return_new_calls_and_do_not_change_the_original() -> None:
    with Pool(2) as pool:
        timed = pool.map.timeout(0.3)
        background = pool.map.background()
        assert timed is not pool.map
        assert background is not pool.map
        # pool.map itself has no timeout and still blocks and returns a list.
        assert pool.map(nap, [0.6]) == [0.6]
        assert pool.star().map.background() is not pool.star().map


def test_background_returns_a_future_at_once(start_method: str) -> None:
    with Pool(2) as pool:
        pool.map(square, [1])  # workers up
        started = time.monotonic()
        future = pool.map.background()(nap, [0.5, 0.0, 0.2])
        assert time.monotonic() - started < 0.4
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(DEADLINE) == [0.5, 0.0, 0.2]

        imap_future = pool.imap.background()(square, [1, 2, 3])
        assert isinstance(imap_future, concurrent.futures.Future)
        assert imap_future.result(DEADLINE) == [1, 4, 9]
        unordered = pool.unordered_imap.background()(square, [1, 2, 3])
        assert sorted(unordered.result(DEADLINE)) == [1, 4, 9]
        star = pool.star().unordered_map.background()(add, [(1, 2), (3, 4)])
        assert sorted(star.result(DEADLINE)) == [3, 7]


def test_background_error_is_in_the_future() -> None:
    with Pool(2) as pool:
        future = pool.map.background()(raise_custom_on_three, range(5))
        error = future.exception(DEADLINE)
        assert type(error) is CustomError
        assert error.args == ("item three", 3)
        assert "raise_custom_on_three" in str(error.__cause__)
        assert pool.map(square, [5]) == [25]


def test_several_background_calls_at_once() -> None:
    with Pool(2) as pool:
        futures = [pool.map.background()(lambda x, k=k: x * k, range(6)) for k in range(5)]
        for k, future in enumerate(futures):
            assert future.result(DEADLINE) == [x * k for x in range(6)]


def test_asynced_is_awaitable_under_asyncio_run(start_method: str) -> None:
    with Pool(2) as pool:
        awaitable = pool.map.asynced()(square, [1, 2, 3])
        assert inspect.isawaitable(awaitable)
        assert asyncio.run(awaitable) == [1, 4, 9]

        async def main() -> tuple[Any, ...]:
            return tuple(
                await asyncio.gather(
                    pool.map.asynced()(square, range(4)),
                    pool.unordered_map.asynced()(lambda x: x + 1, range(4)),
                    pool.imap.asynced()(square, [5]),
                    pool.star().unordered_imap.asynced()(add, [(1, 1), (2, 2)]),
                )
            )

        ordered, unordered, imapped, star = asyncio.run(main())
        assert ordered == [0, 1, 4, 9]
        assert sorted(unordered) == [1, 2, 3, 4]
        assert imapped == [25]
        assert sorted(star) == [2, 4]


def test_asynced_raises_the_worker_error_when_awaited() -> None:
    with Pool(2) as pool:
        with pytest.raises(CustomError) as caught:
            asyncio.run(pool.map.asynced()(raise_custom_on_three, range(5)))
        assert type(caught.value) is CustomError
        assert "raise_custom_on_three" in str(caught.value.__cause__)


def test_modifier_combinations() -> None:
    with Pool(2) as pool:
        future = pool.map.timeout(5).background()(square, [1, 2, 3])
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(DEADLINE) == [1, 4, 9]
        future = pool.map.background().timeout(5)(square, [4])  # any order
        assert future.result(DEADLINE) == [16]

        pairs = [(1, 2), (3, 4), (5, 6)]
        assert asyncio.run(pool.star().map.asynced()(add, pairs)) == [3, 7, 11]
        assert asyncio.run(pool.star().imap.timeout(5).asynced()(add, pairs)) == [3, 7, 11]

        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            asyncio.run(pool.map.timeout(0.3).asynced()(nap, [30]))
        assert type(caught.value) is TimeoutError
        assert time.monotonic() - started < 5

        slow = pool.map.asynced().timeout(0.3)(nap, [30])
        with pytest.raises(TimeoutError):
            asyncio.run(slow)

        timed_out = pool.unordered_map.timeout(0.3).background()(nap, [30])
        assert type(timed_out.exception(DEADLINE)) is TimeoutError

        assert pool.map(square, [6]) == [36]  # still usable


# -- errors raised in the parent --------------------------------------------------------


def test_worker_exception_keeps_its_type_and_traceback(start_method: str) -> None:
    with Pool(2) as pool:
        with pytest.raises(CustomError) as caught:
            pool.map(raise_custom_on_three, range(6))
        error = caught.value
        assert type(error) is CustomError
        assert error.args == ("item three", 3)
        assert error.__cause__ is not None
        remote = str(error.__cause__)
        assert "raise_custom_on_three" in remote
        assert "CustomError" in remote
        # The pool stays usable.
        assert pool.map(square, range(4)) == [0, 1, 4, 9]

        def local_failure(x: int) -> int:
            return 10 // x

        with pytest.raises(ZeroDivisionError) as zero:
            pool.map(local_failure, [5, 0])
        assert type(zero.value) is ZeroDivisionError
        assert "local_failure" in str(zero.value.__cause__)

        with pytest.raises(KeyError) as key:
            pool.map(lambda d: d["missing"], [{}])
        assert key.value.args == ("missing",)
        assert "<lambda>" in str(key.value.__cause__)
        assert pool.star().map(add, [(2, 2)]) == [4]


@pytest.mark.parametrize("kind", ["map", "unordered_map", "imap", "unordered_imap"])
def test_exceptions_from_every_call_kind(kind: str) -> None:
    with Pool(2) as pool:
        with pytest.raises(CustomError):
            list(getattr(pool, kind)(raise_custom_on_three, range(8)))
        with pytest.raises(ValueError, match="invalid literal"):
            list(getattr(pool.star(), kind)(int, [("7",), ("x",)]))
        assert sorted(getattr(pool, kind)(square, [1, 2])) == [1, 4]


def test_imap_yields_earlier_results_before_the_error() -> None:
    with Pool(1) as pool:
        iterator = pool.imap(raise_custom_on_three, [0, 1, 2, 3, 4])
        assert [next(iterator), next(iterator), next(iterator)] == [0, 1, 2]
        with pytest.raises(CustomError):
            next(iterator)


def test_exception_that_cannot_be_rebuilt_in_the_parent_is_a_process_error() -> None:
    # KeywordError pickles, but unpickling calls KeywordError("3: no way back"), which fails.
    with Pool(1) as pool:
        with pytest.raises(ProcessError) as caught:
            pool.map(raise_keyword_error, [3])
        assert "KeywordError" in str(caught.value)
        assert pool.map(square, [2]) == [4]


def test_unpicklable_result_is_an_error_not_a_hang() -> None:
    with Pool(1) as pool:
        with pytest.raises((TypeError, ProcessError)):
            bounded(pool, lambda: pool.map(return_lock, [1]))
        assert pool.map(square, [2]) == [4]


# -- Skprocess classes as work -------------------------------------------------------------


def test_skprocess_classes_run_their_lifecycle_in_workers(start_method: str) -> None:
    class LocalCounter(Skprocess):  # defined in a function: travels by value
        def __init__(self, limit: int) -> None:
            self.limit = limit
            self.seen: list[int] = []

        def __run__(self) -> None:
            self.seen.append(self.current_run)
            if len(self.seen) == self.limit:
                self.stop()

        def __result__(self) -> list[int]:
            return self.seen

    with Pool(2) as pool:
        assert pool.map(Accumulate, [1, 2, 5]) == [(1, 3), (2, 6), (5, 15)]
        assert pool.star().map(Accumulate, [(2, 1), (3, 4)]) == [(2, 2), (3, 12)]
        assert sorted(pool.unordered_map(Accumulate, [7, 8])) == [(7, 21), (8, 24)]
        assert list(pool.imap(LocalCounter, [1, 3])) == [[1], [1, 2, 3]]
        assert pool.map(Recovers, ["a"]) == [("a", 2)]
        assert pool.map(Handled, ["k"]) == ["handled KeyError k"]


def test_skprocess_run_error_carries_current_run(start_method: str) -> None:
    with Pool(2) as pool:
        with pytest.raises(RunError) as caught:
            pool.map(FailIn, ["run"])
        error = caught.value
        assert type(error) is RunError
        assert error.current_run == 2
        assert type(error.original_error) is ValueError
        assert str(error.original_error) == "bad run"
        assert "in __run__" in str(error.__cause__)
        assert error.remote_traceback is not None
        assert "in __run__" in error.remote_traceback
        assert pool.map(Accumulate, [1]) == [(1, 3)]


@pytest.mark.parametrize(
    ("section", "error_type", "run"),
    [
        ("prerun", PreRunError, 2),
        ("postrun", PostRunError, 2),
        ("onfinish", OnFinishError, 3),
        ("result", ResultError, 3),
    ],
)
def test_skprocess_section_errors(section: str, error_type: type[ProcessError], run: int) -> None:
    with Pool(1) as pool:
        with pytest.raises(error_type) as caught:
            pool.map(FailIn, [section])
        error = caught.value
        assert type(error) is error_type
        assert error.current_run == run
        assert type(error.original_error) is ValueError
        assert str(error.original_error) == f"bad {section}"
        assert f"in __{section}__" in str(error.__cause__)
        assert pool.map(FailIn, ["nowhere"]) == ["fine"]


def test_skprocess_section_timeout_in_a_worker() -> None:
    with Pool(1) as pool:
        started = time.monotonic()
        with pytest.raises(ProcessTimeoutError) as caught:
            pool.map(TooSlow, [5])
        assert caught.value.current_run == 1
        assert time.monotonic() - started < 4
        assert pool.map(TooSlow, [0]) == [None]


def test_skprocess_error_under_background_and_asynced() -> None:
    with Pool(2) as pool:
        future = pool.map.background()(FailIn, ["run"])
        error = future.exception(DEADLINE)
        assert type(error) is RunError
        assert error.current_run == 2
        with pytest.raises(PostRunError):
            asyncio.run(pool.map.asynced()(FailIn, ["postrun"]))


# -- the page's worker pattern -------------------------------------------------------------


def test_resilient_worker_pattern_stops_after_local_failures(
    start_method: str, tmp_path: Path
) -> None:
    setup = WorkerSetup(failures_to_stop=3, marks=str(tmp_path))
    pool = Pool(workers=8)
    try:
        assert pool.map(ResilientWorker, [setup] * 8) == [None] * 8
        # Every worker has stopped by the time map returns: each wrote its finish mark,
        # after 3 failures of the fake service (calls 1, 3, 5 fail: 6 calls made).
        marks = sorted(path.read_text() for path in tmp_path.iterdir())
        assert marks == ["6 3"] * 8
    finally:
        pool.close()


def test_resilient_worker_pattern_returns_only_when_every_worker_stopped(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    flag = tmp_path / "stop-flag"
    setup = WorkerSetup(failures_to_stop=0, marks=str(marks), flag=str(flag))
    with Pool(workers=8) as pool:
        timer = threading.Timer(1.0, flag.touch)
        started = time.monotonic()
        timer.start()
        try:
            result = pool.map.timeout(DEADLINE)(ResilientWorker, [setup] * 8)
        finally:
            timer.cancel()
        elapsed = time.monotonic() - started
        assert result == [None] * 8
        assert elapsed >= 1.0  # nobody returned before the flag appeared
        finished = [path.read_text().split() for path in marks.iterdir()]
        assert len(finished) == 8
        for calls, failures in finished:
            assert int(calls) >= 2
            assert int(failures) == int(calls) // 2


# -- dead workers ----------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [kill_self_on_two, exit_three_on_two])
def test_dead_worker_is_a_process_error_and_the_pool_recovers(
    start_method: str, fn: Callable[[int], int]
) -> None:
    with Pool(2) as pool:
        with pytest.raises(ProcessError) as caught:
            bounded(pool, lambda: pool.map(fn, range(5)))
        assert "died" in str(caught.value)
        assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        assert pool.star().map(add, [(1, 2)]) == [3]


@pytest.mark.parametrize("kind", ["unordered_map", "imap", "unordered_imap"])
def test_dead_worker_in_other_call_kinds(kind: str) -> None:
    with Pool(2) as pool:
        with pytest.raises(ProcessError):
            bounded(pool, lambda: list(getattr(pool, kind)(kill_self_on_two, range(5))))
        assert sorted(getattr(pool, kind)(square, [1, 2])) == [1, 4]


def test_dead_worker_under_background_and_asynced() -> None:
    with Pool(2) as pool:
        future = pool.map.background()(exit_three_on_two, range(4))
        assert isinstance(future.exception(DEADLINE), ProcessError)
        with pytest.raises(ProcessError):
            asyncio.run(pool.map.timeout(DEADLINE).asynced()(kill_self_on_two, range(4)))
        assert pool.map(square, [3]) == [9]


@pytest.mark.parametrize("how", ["sigkill", "exit"])
def test_skprocess_that_kills_its_worker(how: str) -> None:
    with Pool(2) as pool:
        with pytest.raises(ProcessError):
            bounded(pool, lambda: pool.map(KillsItself, [how]))
        assert pool.map(Accumulate, [2]) == [(2, 6)]


def test_idle_worker_killed_from_outside_does_not_break_the_pool() -> None:
    # A worker may die while it holds no item (OOM killer, an operator's kill -9): no item
    # is lost, so the next call must simply work.
    with Pool(2) as pool:
        pids = set(pool.star().map(gather_pids, [(os.devnull, 0)] * 4))
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        assert wait_gone({victim}, 5.0) == set()
        time.sleep(0.3)  # let the pool notice
        assert bounded(pool, lambda: pool.map(square, range(6))) == [0, 1, 4, 9, 16, 25]
        assert pool.map(square, [7]) == [49]


# -- close, terminate, context manager, leftovers ----------------------------------------------


def test_context_manager_closes_and_leaves_no_worker(start_method: str) -> None:
    with Pool(2) as pool:
        pids = set(pool.map(worker_pid, range(8)))
        assert pids
    assert all(not alive(pid) for pid in pids)  # gone when the block ends, not later
    with pytest.raises(ProcessError):
        pool.map(square, [1])


def test_close_lets_background_calls_finish() -> None:
    pool = Pool(2)
    future = pool.map.background()(nap, [0.5, 0.5])
    pool.close()
    assert future.done()
    assert future.result() == [0.5, 0.5]


def test_terminate_kills_busy_workers_at_once(start_method: str, tmp_path: Path) -> None:
    path = tmp_path / "pids"
    pool = Pool(2)
    future = pool.star().map.background()(note_pid_and_sleep, [(str(path), 30)] * 2)
    busy = wait_pids(path, 2)
    started = time.monotonic()
    pool.terminate()
    assert time.monotonic() - started < 3
    assert wait_gone(busy, 1.0) == set()
    error = future.exception(DEADLINE)
    assert isinstance(error, ProcessError)


def test_context_manager_terminates_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(CustomError), Pool(2) as pool:
        pool.star().map.background()(note_pid_and_sleep, [(str(path), 30)] * 2)
        busy = wait_pids(path, 2)
        raise CustomError("leave the block")
    assert time.monotonic() - started < 10
    assert wait_gone(busy, 1.0) == set()


@pytest.mark.parametrize("end", ["close", "terminate"])
def test_every_call_fails_after_close_or_terminate(end: str) -> None:
    pool = Pool(2)
    assert pool.map(square, [2]) == [4]
    pids = set(pool.map(worker_pid, range(4)))
    getattr(pool, end)()
    assert wait_gone(pids, 2.0) == set()
    for kind in ("map", "unordered_map", "imap", "unordered_imap"):
        with pytest.raises(ProcessError):
            list(getattr(pool, kind)(square, [1]))
        with pytest.raises(ProcessError):
            list(getattr(pool.star(), kind)(add, [(1, 1)]))
    with pytest.raises(ProcessError):
        pool.map.background()(square, [1])
    with pytest.raises(ProcessError):
        asyncio.run(pool.map.asynced()(square, [1]))
    # Ending twice, or both ways, is harmless.
    pool.close()
    pool.terminate()


def test_a_dropped_pool_leaves_no_worker() -> None:
    pool = Pool(2)
    pids = set(pool.map(worker_pid, range(6)))
    del pool
    gc.collect()
    assert wait_gone(pids, 3.0) == set()


# -- scripts: __main__ definitions, Ctrl-C, parent killed ------------------------------------


@pytest.fixture
def scripts() -> Iterator[list[tuple[subprocess.Popen[str], Path | None]]]:
    """Scripts started by a test; whatever is left of them is killed by pid afterwards."""
    started: list[tuple[subprocess.Popen[str], Path | None]] = []
    yield started
    for proc, pidfile in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
        if pidfile is not None:
            kill_pids(read_pids(pidfile))


def run_script(
    scripts: list[tuple[subprocess.Popen[str], Path | None]],
    *args: str,
    pidfile: Path | None = None,
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=SCRIPTS,
        start_new_session=True,  # its own process group, like a program run from a shell
    )
    scripts.append((proc, pidfile))
    return proc


def test_main_defined_lambdas_classes_and_exceptions(
    start_method: str, scripts: list[tuple[subprocess.Popen[str], Path | None]]
) -> None:
    proc = run_script(scripts, "main_defined.py", start_method)
    stdout, stderr = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, stderr
    out = json.loads(stdout.strip().splitlines()[-1])
    pids = set(out.pop("pids"))
    assert out == {
        "start_method": start_method,
        "lambda": [1, 2, 3, 4, 5, 6],
        "named_lambda": [0, 3, 6, 9, 12, 15],
        "closure": [0, 7, 14, 21],
        "star_lambda": [4, 5, -3],
        "square": [2, 8, 18],
        "pair": [12, 34],
        "main_error": {
            "exact_type": True,
            "args": ["boom 1"],
            "cause_names_function": True,
        },
        "run_error": {
            "exact_type": True,
            "current_run": 2,
            "original_is_main_error": True,
            "original": "run 2 of 5",
        },
        "after_errors": [1, 2],
        "asynced_star": [6, 20],
    }
    assert pids and proc.pid not in pids
    # The script never closed its pool: its end must have ended the workers.
    assert wait_gone(pids, 2.0) == set()


def interrupt_case(
    scripts: list[tuple[subprocess.Popen[str], Path | None]],
    tmp_path: Path,
    method: str,
    mode: str,
) -> tuple[subprocess.Popen[str], set[int], set[int]]:
    """Start long_call.py and wait until both workers are busy."""
    pidfile = tmp_path / "pids"
    proc = run_script(scripts, "long_call.py", method, str(pidfile), mode, pidfile=pidfile)
    try:
        workers = wait_pids(pidfile, 2, 30)
    except AssertionError:
        proc.kill()
        _, stderr = proc.communicate(timeout=10)
        raise AssertionError(f"the script did not start its workers:\n{stderr}") from None
    return proc, workers, descendants(proc.pid)


@pytest.mark.parametrize(
    ("mode", "method"),
    [
        *[("map", method) for method in ("fork", "spawn", "forkserver")],
        *[("skprocess", method) for method in ("fork", "spawn", "forkserver")],
        ("with", "fork"),
        ("unordered_imap", "forkserver"),
        ("background", "fork"),
        ("asynced", "fork"),
    ],
)
def test_ctrl_c_in_the_parent_ends_the_workers(
    mode: str,
    method: str,
    tmp_path: Path,
    scripts: list[tuple[subprocess.Popen[str], Path | None]],
) -> None:
    proc, workers, family = interrupt_case(scripts, tmp_path, method, mode)
    assert workers <= family
    os.kill(proc.pid, signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=8)
    except subprocess.TimeoutExpired:
        left = wait_gone(workers, 0)
        proc.kill()
        stdout, stderr = proc.communicate(timeout=10)
        pytest.fail(
            f"the script did not exit within 8 s of Ctrl-C ({mode}, {method}); workers "
            f"alive then: {sorted(left)}\n{stderr[-2000:]}"
        )
    assert "finished" not in stdout
    assert proc.returncode == -signal.SIGINT, stderr  # an uncaught KeyboardInterrupt
    assert "KeyboardInterrupt" in stderr
    assert wait_gone(workers, 3.0) == set()
    assert wait_gone(family, 3.0) == set()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_ctrl_c_to_the_whole_process_group(
    method: str, tmp_path: Path, scripts: list[tuple[subprocess.Popen[str], Path | None]]
) -> None:
    # A terminal's Ctrl-C reaches every process of the foreground group, workers included.
    proc, workers, family = interrupt_case(scripts, tmp_path, method, "map")
    os.killpg(proc.pid, signal.SIGINT)  # the group this test created for the script
    _, stderr = proc.communicate(timeout=8)
    assert proc.returncode == -signal.SIGINT, stderr
    assert wait_gone(workers | family, 3.0) == set()


@pytest.mark.parametrize(
    ("mode", "method"),
    [
        ("map", "fork"),
        ("map", "spawn"),
        ("map", "forkserver"),
        ("skprocess", "spawn"),
        ("background", "forkserver"),
    ],
)
def test_workers_exit_when_the_parent_is_killed(
    mode: str,
    method: str,
    tmp_path: Path,
    scripts: list[tuple[subprocess.Popen[str], Path | None]],
) -> None:
    proc, workers, family = interrupt_case(scripts, tmp_path, method, mode)
    proc.kill()  # SIGKILL: no handler, no atexit, nothing runs in the parent
    killed = time.monotonic()
    proc.communicate(timeout=10)
    left = wait_gone(workers, 2.0)
    assert left == set(), f"workers still alive 2 s after the parent was killed: {left}"
    assert time.monotonic() - killed < 3.0
    # multiprocessing's helpers (fork server, resource tracker) do not outlive it either.
    assert wait_gone(family, 2.0) == set()
