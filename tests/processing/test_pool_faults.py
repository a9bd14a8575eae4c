"""Pool under failure: what user code can throw at it, what can happen to its workers, and
what several threads can do to it at once.

- ``sys.exit()``, ``KeyboardInterrupt`` and other ``BaseException``\\ s in an item become a
  ``ProcessError`` with the exit status and the worker's traceback; the parent never ends.
- A call that times out, fails, is abandoned or cancelled, or whose worker is killed, takes
  only its own work down: a call running beside it in another thread returns its exact,
  complete result.
- Items travel with cloudpickle (lambdas, instances of local classes, ``__main__``
  definitions), under every start method.
- Workers forked while a background call runs exit cleanly (they used to run the parent's
  exit hook and deadlock).
- Two threads mapping, closing and terminating one pool at once.

Every test that could hang runs its blocking calls with a deadline, and every fault test
uses ``no_leaks`` (no process, file descriptor or shared memory left behind).
"""

from __future__ import annotations

import asyncio
import datetime
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from process_tree import descendants

from suitkaise.processing import Pool, ProcessError, Skprocess
from suitkaise.processing._pool import RemoteTraceback

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).parent / "pool_scripts"
DEADLINE = 60.0  # generous bound for anything that must not hang


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _multiprocessing_helpers() -> None:
    """Start multiprocessing's own session-long helpers (the resource tracker, the fork
    server) before any test takes its leak snapshot: the pipes this process keeps to them
    are theirs, not leaks of the test that happened to use spawn or forkserver first."""
    from multiprocessing import forkserver, resource_tracker

    resource_tracker.ensure_running()
    forkserver.ensure_running()
    # multiprocessing's shared-memory heap keeps one arena per process for Value() (an
    # Skprocess's current_run): allocate it here, not in the first test that needs it.
    multiprocessing.get_context("fork").Value("q", 0, lock=False)


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
    deadline = time.monotonic() + seconds
    pids = read_pids(path)
    while len(pids) < count and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = read_pids(path)
    assert len(pids) >= count, f"only {len(pids)} of {count} items started: {pids}"
    return pids


class Outcome:
    """What a call did: its value, or what it raised (anything, SystemExit included)."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()


def in_thread(call: Callable[[], Any]) -> Outcome:
    """Run ``call`` in a daemon thread; the outcome is filled in when it returns."""
    outcome = Outcome()

    def run() -> None:
        try:
            outcome.value = call()
        except BaseException as error:  # SystemExit and KeyboardInterrupt too: never escape
            outcome.error = error
        finally:
            outcome.done.set()

    threading.Thread(target=run, daemon=True).start()
    return outcome


def finished(pool: Pool, outcome: Outcome, seconds: float = DEADLINE) -> Outcome:
    """Wait for ``outcome``; if it hangs, terminate the pool and fail."""
    if not outcome.done.wait(seconds):
        pool.terminate()
        outcome.done.wait(10)
        pytest.fail(f"a pool call hung for more than {seconds} s")
    return outcome


def outcome_of(pool: Pool, call: Callable[[], Any], seconds: float = DEADLINE) -> Outcome:
    """Run a blocking pool call with a deadline; whatever it raises is caught (a
    SystemExit or KeyboardInterrupt reaching this process would end the test run)."""
    return finished(pool, in_thread(call), seconds)


def failure(pool: Pool, call: Callable[[], Any], seconds: float = DEADLINE) -> BaseException:
    outcome = outcome_of(pool, call, seconds)
    assert outcome.error is not None, f"expected an error, got {outcome.value!r}"
    return outcome.error


def reap(pid: int, seconds: float) -> int | None:
    """Wait (bounded) for a child forked by the test; SIGKILL it if it hangs."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


# -- work run by the pool (module level: spawn workers import it by name) ----------------


class CustomBase(BaseException):
    """A BaseException of the user's own (not an Exception)."""


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def slow_pair(x: int) -> tuple[int, int]:
    time.sleep(0.15)
    return x, x * x


def worker_pid(_: object = None) -> int:
    return os.getpid()


def note_pid_and_sleep(path: str, seconds: float) -> float:
    with open(path, "a") as pids:
        pids.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return seconds


def exits(code: Any) -> Any:
    if code == "no":
        return "fine"
    sys.exit(code)


def exits_bare(_: object) -> None:
    sys.exit()


def interrupts(x: int) -> int:
    if x == 2:
        raise KeyboardInterrupt
    return x


def raises_base(x: int) -> int:
    raise CustomBase(f"custom {x}")


def raise_after(path: str, seconds: float) -> None:
    note_pid_and_sleep(path, seconds)
    raise ValueError("planned failure")


class ExitsInRun(Skprocess):
    """lives=3, but __run__ calls sys.exit(5): no retry, no __onfinish__, no __error__."""

    def __init__(self, marks: str) -> None:
        self.marks = marks
        self.process_config.lives = 3
        self.process_config.runs = 2

    def _mark(self, what: str) -> None:
        with open(self.marks, "a") as marks:
            marks.write(f"{what}\n")

    def __run__(self) -> None:
        self._mark(f"run{self.current_run}")
        if self.current_run == 2:
            sys.exit(5)

    def __onfinish__(self) -> None:
        self._mark("onfinish")

    def __error__(self) -> Any:
        self._mark("error")
        return "handled"


class ExitsInInit(Skprocess):
    def __init__(self, code: int) -> None:
        sys.exit(code)

    def __run__(self) -> None:
        pass


def check_exit_error(error: BaseException, code: int | None, where: str) -> None:
    """A ProcessError with that exit code, whose worker traceback shows ``where``."""
    assert type(error) is ProcessError, f"{type(error).__name__}: {error}"
    assert error.exit_code == code
    assert error.remote_traceback is not None
    assert where in error.remote_traceback
    assert isinstance(error.__cause__, RemoteTraceback)
    assert where in str(error.__cause__)


# -- sys.exit(), KeyboardInterrupt and other BaseExceptions in items ---------------------


def test_sys_exit_in_an_item_is_a_process_error_and_the_pool_goes_on(
    start_method: str, no_leaks: None
) -> None:
    with Pool(2) as pool:
        error = failure(pool, lambda: pool.map(exits, ["no", 3, "no"]))
        check_exit_error(error, 3, "exits")
        assert isinstance(error, ProcessError)
        assert type(error.original_error) is SystemExit
        assert error.original_error.code == 3
        assert "sys.exit(3)" in str(error)
        assert "SystemExit: 3" in error.remote_traceback  # type: ignore[operator]
        # The parent is alive, and so is the pool.
        assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]
        assert pool.map(exits, ["no"]) == ["fine"]


@pytest.mark.parametrize(
    ("argument", "status"), [(None, 0), (0, 0), (7, 7), ("bye", 1)], ids=repr
)
def test_the_exit_status_is_what_sys_exit_asks_for(argument: Any, status: int) -> None:
    with Pool(1) as pool:
        error = failure(pool, lambda: pool.map(exits, [argument]))
        check_exit_error(error, status, "exits")
        error = failure(pool, lambda: pool.map(exits_bare, [0]))
        check_exit_error(error, 0, "exits_bare")


def test_keyboard_interrupt_in_an_item_is_not_a_ctrl_c(start_method: str, no_leaks: None) -> None:
    with Pool(2) as pool:
        error = failure(pool, lambda: pool.map(interrupts, range(4)))
        check_exit_error(error, None, "interrupts")
        assert isinstance(error, ProcessError)
        assert type(error.original_error) is KeyboardInterrupt
        assert "KeyboardInterrupt" in str(error)
        assert pool.map(interrupts, [0, 1, 3]) == [0, 1, 3]


def test_any_other_base_exception_in_an_item(no_leaks: None) -> None:
    with Pool(1) as pool:
        error = failure(pool, lambda: pool.map(raises_base, [4]))
        check_exit_error(error, None, "raises_base")
        assert isinstance(error, ProcessError)
        assert type(error.original_error) is CustomBase
        assert error.original_error.args == ("custom 4",)
        assert pool.map(square, [3]) == [9]


@pytest.mark.parametrize("kind", ["map", "unordered_map", "imap", "unordered_imap"])
def test_sys_exit_in_every_call_kind_and_mode(kind: str, no_leaks: None) -> None:
    with Pool(2) as pool:
        call = getattr(pool, kind)
        error = failure(pool, lambda: list(call(exits, ["no", 4])))
        check_exit_error(error, 4, "exits")
        future = call.background()(exits, [4])
        error = failure(pool, lambda: future.result(DEADLINE))
        check_exit_error(error, 4, "exits")
        error = failure(pool, lambda: asyncio.run(call.asynced()(interrupts, [2])))
        check_exit_error(error, None, "interrupts")
        assert sorted(call(square, [1, 2])) == [1, 4]


def test_sys_exit_in_an_skprocess_item_stops_it_without_retrying(
    start_method: str, tmp_path: Path, no_leaks: None
) -> None:
    marks = tmp_path / "marks"
    with Pool(1) as pool:
        error = failure(pool, lambda: pool.map(ExitsInRun, [str(marks)]))
        assert type(error) is ProcessError
        assert error.exit_code == 5
        assert error.current_run == 2
        assert "__run__" in str(error)
        assert error.remote_traceback is not None
        assert "sys.exit(5)" in error.remote_traceback
        # One attempt of run 2 (lives=3 not spent), no __onfinish__, no __error__.
        assert marks.read_text().split() == ["run1", "run2"]
        error = failure(pool, lambda: pool.map(ExitsInInit, [6]))
        check_exit_error(error, 6, "sys.exit(code)")
        assert "ExitsInInit" in str(error)
        assert pool.map(square, [4]) == [16]


# -- one call's fault is that call's alone --------------------------------------------


def test_a_timed_out_call_leaves_a_concurrent_call_alone(
    start_method: str, tmp_path: Path, no_leaks: None
) -> None:
    mine = tmp_path / "mine"
    with Pool(3) as pool:
        assert pool.map(square, range(3)) == [0, 1, 4]  # three workers up
        doomed = in_thread(
            lambda: pool.star().map.timeout(1.0)(note_pid_and_sleep, [(str(mine), 30)])
        )
        victim = wait_pids(mine, 1)
        # About 2 s of work on the two other workers: it runs when the timeout strikes.
        other = in_thread(lambda: pool.map(slow_pair, range(24)))
        finished(pool, doomed)
        assert type(doomed.error) is TimeoutError
        assert not other.done.is_set(), "the other call ended before the timeout: no overlap"
        assert wait_gone(victim, 5.0) == set(), "the timed-out call's worker still runs"
        finished(pool, other)
        assert other.error is None, f"the other call failed: {other.error!r}"
        assert other.value == [(x, x * x) for x in range(24)]
        assert pool.map(square, range(6)) == [0, 1, 4, 9, 16, 25]


def test_a_failing_call_leaves_a_concurrent_call_alone(
    start_method: str, tmp_path: Path, no_leaks: None
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    with Pool(3) as pool:
        assert pool.map(square, range(3)) == [0, 1, 4]
        # The failing call has two items running: one raises, the other must be killed.
        doomed = in_thread(
            lambda: pool.star().map(
                lambda path, seconds: (
                    raise_after(path, seconds) if seconds < 1 else nap(seconds)
                ),
                [(str(first), 0.8), (str(second), 30)],
            )
        )
        wait_pids(first, 1)
        other = in_thread(lambda: pool.map(slow_pair, range(16)))
        finished(pool, doomed)
        assert not other.done.is_set(), "the other call ended before the failure: no overlap"
        assert type(doomed.error) is ValueError
        assert str(doomed.error) == "planned failure"
        finished(pool, other)
        assert other.error is None, f"the other call failed: {other.error!r}"
        assert other.value == [(x, x * x) for x in range(16)]


def test_a_killed_worker_fails_only_the_call_it_was_running(
    start_method: str, tmp_path: Path, no_leaks: None
) -> None:
    mine = tmp_path / "mine"
    with Pool(3) as pool:
        assert pool.map(square, range(3)) == [0, 1, 4]
        doomed = in_thread(lambda: pool.star().map(note_pid_and_sleep, [(str(mine), 30)]))
        (victim,) = wait_pids(mine, 1)
        other = in_thread(lambda: pool.map(slow_pair, range(24)))
        time.sleep(0.3)  # the other call is running on the two other workers
        os.kill(victim, signal.SIGKILL)
        finished(pool, doomed)
        assert not other.done.is_set(), "the other call ended before the kill: no overlap"
        error = doomed.error
        assert type(error) is ProcessError
        assert error.exit_code == -signal.SIGKILL
        assert "SIGKILL" in str(error)
        assert "died" in str(error)
        finished(pool, other)
        assert other.error is None, f"the other call failed: {other.error!r}"
        assert other.value == [(x, x * x) for x in range(24)]
        # The dead worker was replaced: three items can run at once again.
        assert len(set(pool.map(nap_pid, [0.5] * 3))) == 3


def nap_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_dead_worker_reports_its_exit_code(how: str, no_leaks: None) -> None:
    def die(x: int) -> int:
        if x == 1:
            if how == "exit":
                os._exit(3)
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    with Pool(2) as pool:
        error = failure(pool, lambda: pool.map(die, range(3)))
        assert type(error) is ProcessError
        assert error.exit_code == (3 if how == "exit" else -signal.SIGKILL)
        assert ("exit code 3" if how == "exit" else "SIGKILL") in str(error)
        assert pool.map(die, [0, 2]) == [0, 2]


def test_an_abandoned_iterator_leaves_a_concurrent_call_alone(
    tmp_path: Path, no_leaks: None
) -> None:
    mine = tmp_path / "mine"
    with Pool(3) as pool:
        assert pool.map(square, range(3)) == [0, 1, 4]
        iterator = pool.star().imap(note_pid_and_sleep, [(str(mine), 0), (str(mine), 30)])
        assert next(iterator) == 0
        busy = wait_pids(mine, 2)
        other = in_thread(lambda: pool.map(slow_pair, range(12)))
        time.sleep(0.3)
        iterator.close()
        finished(pool, other)
        assert other.error is None, f"the other call failed: {other.error!r}"
        assert other.value == [(x, x * x) for x in range(12)]
        assert len(wait_gone(busy, 5.0)) == 1  # the one that finished is an idle worker


def test_a_dropped_iterator_cancels_its_work(tmp_path: Path, no_leaks: None) -> None:
    mine = tmp_path / "mine"
    with Pool(2) as pool:
        iterator = pool.star().imap(note_pid_and_sleep, [(str(mine), 30)])
        busy = wait_pids(mine, 1)
        del iterator  # never even started
        assert wait_gone(busy, 5.0) == set()
        assert pool.map(square, [5]) == [25]


def test_cancelling_a_future_or_an_awaiting_task_kills_only_that_work(
    tmp_path: Path, no_leaks: None
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    with Pool(3) as pool:
        future = pool.star().map.background()(note_pid_and_sleep, [(str(first), 30)])
        busy = wait_pids(first, 1)
        other = pool.map.background()(slow_pair, range(10))
        assert future.cancel()
        assert wait_gone(busy, 5.0) == set()

        async def impatient() -> None:
            call = pool.star().map.asynced()(note_pid_and_sleep, [(str(second), 30)])
            await asyncio.wait_for(call, 1.5)

        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(impatient())
        assert wait_gone(read_pids(second), 5.0) == set()
        assert other.result(DEADLINE) == [(x, x * x) for x in range(10)]


# -- items travel with cloudpickle ---------------------------------------------------------


def test_items_may_hold_lambdas_closures_and_local_classes(
    start_method: str, no_leaks: None
) -> None:
    offset = 5

    class Point:  # a local class: the standard pickle cannot send its instances
        def __init__(self, x: int, y: int) -> None:
            self.x = x
            self.y = y

        def norm1(self) -> int:
            return abs(self.x) + abs(self.y)

    class LocalError(Exception):
        pass

    def boom(point: Point) -> None:
        raise LocalError(f"at {point.x},{point.y}")

    with Pool(2) as pool:
        functions = [lambda x: x + 1, lambda x: x * offset, abs]
        assert pool.map(lambda f: f(-2), functions) == [-1, -10, 2]
        assert pool.star().map(lambda f, x: f(x), [(lambda x: x - offset, 1)]) == [-4]
        points = [Point(1, -2), Point(3, 4)]
        assert pool.map(Point.norm1, points) == [3, 7]
        assert list(pool.imap(lambda p: p.x, points)) == [1, 3]
        assert sorted(pool.unordered_map(lambda p: p.y, points)) == [-2, 4]
        # Results and exceptions of local classes come back as those very classes.
        back = pool.map(lambda p: Point(p.y, p.x), points)
        assert [type(p) is Point and (p.x, p.y) for p in back] == [(-2, 1), (4, 3)]
        with pytest.raises(LocalError, match="at 3,4"):
            pool.map(boom, points[1:])
        future = pool.map.background()(lambda f: f(3), [lambda x: x**2])
        assert future.result(DEADLINE) == [9]


def test_items_defined_in_a_scripts_main(start_method: str) -> None:
    done = subprocess.run(
        [sys.executable, "main_items.py", start_method],
        capture_output=True,
        text=True,
        cwd=SCRIPTS,
        timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "functions": [32, 9],
        "lambda_items": [42],
        "instances": [6, 8],
        "star": [0, 1],
        "results": [5, 6],
        "error": [True, "no 9"],
    }


def test_unsendable_items_are_a_clear_type_error() -> None:
    with Pool(1) as pool:
        with pytest.raises(TypeError, match=r"Pool\.map: an item .* cannot be sent"):
            pool.map(square, [1, threading.Lock()])
        lock = threading.Lock()
        with pytest.raises(TypeError, match="cannot be sent"):
            pool.map(lambda x: (x, lock), [1])
        assert pool.map(square, [2]) == [4]


# -- workers forked while a background call runs ------------------------------------------


def test_workers_forked_during_a_background_call_exit_cleanly(no_leaks: None) -> None:
    # The old pool registered a threading exit hook in the parent; a worker forked while a
    # background call's thread was alive inherited it, ran it when it exited, and deadlocked
    # in a copy of the executor: close() then waited for that worker forever.
    fork = multiprocessing.get_context("fork")
    pool = Pool(2, context=fork)
    release = threading.Event()
    try:
        future = pool.map.background()(nap, [1.0])
        future.add_done_callback(lambda _: release.wait(10))  # its thread lingers
        outcome = outcome_of(pool, lambda: pool.map.timeout(0.3)(nap, [30]))
        assert type(outcome.error) is TimeoutError
        # Fresh workers, forked while the background call's thread is still alive.
        assert outcome_of(pool, lambda: pool.map(square, [2, 3])).value == [4, 9]
        release.set()
        closing = in_thread(pool.close)
        finished(pool, closing, 20.0)
        assert closing.error is None
        assert future.result(0) == [1.0]
    finally:
        release.set()
        pool.terminate()


# -- several threads on one pool -------------------------------------------------------


def test_several_threads_map_on_one_pool_at_once(start_method: str, no_leaks: None) -> None:
    barrier = threading.Barrier(4)

    def work(k: int) -> Any:
        barrier.wait(DEADLINE)
        got = []
        for _ in range(3):
            got.append(pool.map(lambda x, k=k: (k, x * x), range(40)))
            got.append(sorted(pool.unordered_map(lambda x, k=k: k * 1000 + x, range(25))))
            got.append(list(pool.imap(lambda x, k=k: -x - k, range(10))))
        return got

    with Pool(2) as pool:
        outcomes = [in_thread(lambda k=k: work(k)) for k in range(4)]
        for k, outcome in enumerate(outcomes):
            finished(pool, outcome)
            assert outcome.error is None, repr(outcome.error)
            expected = [
                [(k, x * x) for x in range(40)],
                [k * 1000 + x for x in range(25)],
                [-x - k for x in range(10)],
            ] * 3
            assert outcome.value == expected


def test_close_while_another_thread_maps_lets_it_finish(no_leaks: None) -> None:
    pool = Pool(2)
    try:
        mapping = in_thread(lambda: pool.map(slow_pair, range(10)))
        time.sleep(0.3)
        closing = in_thread(pool.close)
        time.sleep(0.1)
        # Closing: no new work is taken.
        late = outcome_of(pool, lambda: pool.map(square, [1]))
        assert type(late.error) is ProcessError
        assert "closing" in str(late.error) or "closed" in str(late.error)
        finished(pool, mapping)
        finished(pool, closing)
        assert mapping.error is None, repr(mapping.error)
        assert mapping.value == [(x, x * x) for x in range(10)]
        assert closing.error is None
    finally:
        pool.terminate()


def test_terminate_while_another_thread_maps(
    start_method: str, tmp_path: Path, no_leaks: None
) -> None:
    path = tmp_path / "pids"
    pool = Pool(2)
    try:
        mapping = in_thread(
            lambda: pool.star().map(note_pid_and_sleep, [(str(path), 30)] * 2)
        )
        busy = wait_pids(path, 2)
        started = time.monotonic()
        pool.terminate()
        assert time.monotonic() - started < 10
        finished(pool, mapping, 10)
        assert type(mapping.error) is ProcessError
        assert "terminated" in str(mapping.error)
        assert wait_gone(busy, 3.0) == set()
    finally:
        pool.terminate()


def test_close_and_terminate_from_several_threads_at_once(no_leaks: None) -> None:
    for ends in (["close"] * 3, ["terminate"] * 3, ["close", "terminate", "close"]):
        pool = Pool(2)
        future = pool.map.background()(nap, [0.3, 0.3, 0.3])
        pids = set(pool.map(worker_pid, range(4)))
        barrier = threading.Barrier(len(ends))

        def end(name: str, pool: Pool = pool, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(DEADLINE)
            getattr(pool, name)()

        outcomes = [in_thread(lambda name=name: end(name)) for name in ends]
        for outcome in outcomes:
            finished(pool, outcome, 30)
            assert outcome.error is None, repr(outcome.error)
        assert wait_gone(pids, 3.0) == set()
        if "terminate" not in ends:
            assert future.result(0) == [0.3, 0.3, 0.3]
        else:
            assert future.done()
        with pytest.raises(ProcessError):
            pool.map(square, [1])


def test_a_pool_inherited_by_a_forked_child_refuses_work(no_leaks: None) -> None:
    with Pool(1) as pool:
        assert pool.map(square, [2]) == [4]
        pid = os.fork()
        if pid == 0:  # the child: the pool and its workers belong to the parent
            code = 1
            try:
                pool.map(square, [3])
            except ProcessError as error:
                code = 0 if "belongs to process" in str(error) else 2
            except BaseException:
                code = 3
            os._exit(code)
        assert reap(pid, DEADLINE) == 0
        assert pool.map(square, [4]) == [16]


def test_a_pool_cannot_be_pickled() -> None:
    with Pool(1) as pool:
        with pytest.raises(TypeError, match="cannot be sent to another process"):
            pickle.dumps(pool)
        import cloudpickle

        with pytest.raises(TypeError, match="cannot be sent to another process"):
            cloudpickle.dumps(pool)


# -- bad and absurd values ----------------------------------------------------------------


def test_timeout_takes_a_timedelta_and_is_bounded() -> None:
    with Pool(1) as pool:
        assert pool.map.timeout(datetime.timedelta(seconds=30))(square, [3]) == [9]
        assert pool.map.timeout(1e9)(square, [2]) == [4]  # the longest accepted
        with pytest.raises(ValueError, match="timeout"):
            pool.map.timeout(1e9 + 1)
        with pytest.raises(ValueError, match="timeout"):
            pool.map.timeout(datetime.timedelta(0))
        with pytest.raises(TypeError, match="timeout"):
            pool.map.timeout(False)


def test_context_must_be_a_multiprocessing_context() -> None:
    with pytest.raises(TypeError, match="context"):
        Pool(1, context="spawn")  # type: ignore[arg-type]


def test_a_huge_worker_count_starts_only_the_workers_the_work_needs(no_leaks: None) -> None:
    with Pool(10**6) as pool:
        assert pool.workers == 10**6
        pids = pool.map(nap_pid, [0.3] * 3)
        assert len(set(pids)) == 3
        assert len(descendants() & set(pids)) == 3
        assert len(descendants()) < 50  # not a million


def test_a_gc_collected_pool_ends_its_workers(no_leaks: None) -> None:
    pool = Pool(2)
    pids = set(pool.map(worker_pid, range(4)))
    del pool
    import gc

    gc.collect()
    assert wait_gone(pids, 10.0) == set()


def test_items_and_results_of_several_mebibytes(no_leaks: None) -> None:
    big = [bytes([n]) * (3 * 1024 * 1024) for n in range(4)]
    with Pool(2) as pool:
        assert pool.map(len, big) == [3 * 1024 * 1024] * 4
        assert pool.map(lambda b: b[::-1], big) == big
        assert list(pool.imap(lambda n: bytes([n]) * 5_000_000, range(3))) == [
            bytes([n]) * 5_000_000 for n in range(3)
        ]



# -- pools nobody closes, workers that cannot start ------------------------------------


class UsesAPool(Skprocess):
    """In its child: makes a Pool, uses it, and never closes it."""

    def __init__(self) -> None:
        self.process_config.runs = 1

    def __run__(self) -> None:
        self.pool = Pool(2)
        self.squares = self.pool.map(square, [1, 2, 3])
        self.pids = self.pool.map(worker_pid, range(4))

    def __result__(self) -> tuple[list[int], list[int]]:
        return self.squares, self.pids


def test_a_pool_left_open_in_a_child_does_not_keep_it_alive(
    start_method: str, no_leaks: None
) -> None:
    # The child's exit joins its own children: the pool's idle workers used to wait there
    # forever.
    process = UsesAPool()
    process.start()
    try:
        waited = in_thread(lambda: process.wait(30))
        assert waited.done.wait(40), "wait(30) itself hung"
        assert waited.value is True, "the child hung at exit, joining its pool's workers"
        squares, pids = process.result()
        assert squares == [1, 4, 9]
        assert wait_gone(set(pids), 5.0) == set()
    finally:
        if process.is_alive:
            process.kill()


class _RefusingContext(type(multiprocessing.get_context("fork"))):  # type: ignore[misc]
    """A context whose processes cannot be started (like fork() failing with EAGAIN)."""

    def Process(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError(11, "Resource temporarily unavailable")


def test_workers_that_cannot_start_fail_the_call_instead_of_hanging(no_leaks: None) -> None:
    pool = Pool(2, context=_RefusingContext())
    try:
        error = failure(pool, lambda: pool.map(square, range(4)), 20)
        assert type(error) is ProcessError
        assert "could not start a Pool worker process" in str(error)
        assert "Resource temporarily unavailable" in str(error)
        error = failure(pool, lambda: pool.map.timeout(30)(square, [1]), 20)
        assert "could not start" in str(error)
    finally:
        pool.terminate()
