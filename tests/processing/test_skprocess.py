"""Skprocess: the lifecycle, process_config at work, errors, parent control, messages, and the
real class in the child, under the fork, spawn and forkserver start methods.

Each object records what happened to it in the child and hands the record back through
``__result__`` (or ``__error__``), so the assertions are about what the child actually did.
Every process a test starts is waited for with a deadline and killed if still alive; the
autouse ``no_leaked_processes`` check (conftest) fails a test that leaves one behind.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from process_tree import descendants

from suitkaise.processing import (
    ErrorHandlerError,
    OnFinishError,
    Pool,
    PostRunError,
    PreRunError,
    ProcessError,
    ProcessTimeoutError,
    ResultError,
    ResultTimeoutError,
    RunError,
    Skprocess,
)

pytestmark = pytest.mark.slow

WAIT = 30.0  # seconds the parent waits for any child before the test fails
SCRIPTS = Path(__file__).parent / "scripts"
ALL_ERRORS = (
    ProcessError,
    PreRunError,
    RunError,
    PostRunError,
    OnFinishError,
    ResultError,
    ErrorHandlerError,
    ProcessTimeoutError,
    ResultTimeoutError,
)


@pytest.fixture
def track() -> Iterator[Callable[[Skprocess], Skprocess]]:
    """Register the Skprocesses a test creates; any still alive at the end is killed."""
    started: list[Skprocess] = []

    def add(process: Skprocess) -> Skprocess:
        started.append(process)
        return process

    yield add
    for process in started:
        if process.is_alive:
            process.kill()


def finish(process: Skprocess, timeout: float = WAIT) -> Any:
    """Wait (bounded) for a started process and return its result."""
    assert process.wait(timeout), f"{process!r} did not finish within {timeout} s"
    return process.result()


def wait_until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- classes run in the children (module level: spawn imports them by reference) ----------


class Recorder(Skprocess):
    """Records every section with the run number seen in the child."""

    def __init__(self, runs: int) -> None:  # no super().__init__()
        self.log: list[str] = []
        self.process_config.runs = runs

    def _mark(self, section: str) -> None:
        self.log.append(f"{section}{self.current_run}")

    def __prerun__(self) -> None:
        self._mark("prerun")

    def __run__(self) -> None:
        self._mark("run")

    def __postrun__(self) -> None:
        self._mark("postrun")

    def __onfinish__(self) -> None:
        self._mark("onfinish")

    def __result__(self) -> list[str]:
        self._mark("result")
        return self.log


def expected_log(runs: int) -> list[str]:
    loop = [f"{s}{n}" for n in range(1, runs + 1) for s in ("prerun", "run", "postrun")]
    return [*loop, f"onfinish{runs}", f"result{runs}"]


class Counter(Skprocess):
    def __init__(self, runs: int | None = None, join_in: float | None = None) -> None:
        self.runs = 0
        self.process_config.runs = runs
        self.process_config.join_in = join_in
        self.started = 0.0
        self.elapsed = 0.0

    def __prerun__(self) -> None:
        if not self.started:
            self.started = time.monotonic()

    def __run__(self) -> None:
        self.runs += 1
        if self.process_config.join_in is not None:
            time.sleep(0.02)

    def __onfinish__(self) -> None:
        self.elapsed = time.monotonic() - self.started

    def __result__(self) -> tuple[int, float]:
        return self.runs, self.elapsed


class Stopper(Skprocess):
    """Calls self.stop() in section ``where`` of run ``at`` (runs capped at 10 as a backstop)."""

    def __init__(self, where: str, at: int) -> None:
        self.where = where
        self.at = at
        self.log: list[str] = []
        self.process_config.runs = 10

    def _mark(self, section: str) -> None:
        self.log.append(f"{section}{self.current_run}")
        if section == self.where and self.current_run == self.at:
            self.stop()

    def __prerun__(self) -> None:
        self._mark("prerun")

    def __run__(self) -> None:
        self._mark("run")

    def __postrun__(self) -> None:
        self._mark("postrun")

    def __onfinish__(self) -> None:
        self.log.append("onfinish")

    def __result__(self) -> list[str]:
        self.log.append("result")
        return self.log


class Forever(Skprocess):
    """Loops until stopped or killed; tells the parent once it is inside its first __run__."""

    def __init__(self, run_seconds: float = 0.02) -> None:
        self.run_seconds = run_seconds
        self.log: list[str] = []

    def __prerun__(self) -> None:
        self.log.append(f"prerun{self.current_run}")

    def __run__(self) -> None:
        self.log.append(f"run{self.current_run}")
        if self.current_run == 1:
            self.tell("in run 1")
        time.sleep(self.run_seconds)

    def __postrun__(self) -> None:
        self.log.append(f"postrun{self.current_run}")

    def __onfinish__(self) -> None:
        self.log.append("onfinish")

    def __result__(self) -> list[str]:
        self.log.append("result")
        return self.log


class Flaky(Skprocess):
    """lives=3, runs=2: run 1 fails on its first two attempts, then everything succeeds."""

    def __init__(self) -> None:
        self.process_config.lives = 3
        self.process_config.runs = 2
        self.attempts = 0
        self.log: list[str] = []

    def __prerun__(self) -> None:
        self.log.append(f"prerun{self.current_run}")

    def __run__(self) -> None:
        self.attempts += 1
        self.log.append(f"run{self.current_run}")
        if self.attempts <= 2:
            raise ValueError(f"flake {self.attempts}")

    def __postrun__(self) -> None:
        self.log.append(f"postrun{self.current_run}")

    def __result__(self) -> tuple[int, list[str]]:
        return self.attempts, self.log


class Doomed(Skprocess):
    """runs=5, lives=2: run 3 always fails. ``handler`` picks what __error__ does."""

    def __init__(self, handler: str = "default") -> None:
        self.handler = handler
        self.process_config.runs = 5
        self.process_config.lives = 2
        self.attempts = 0
        self.finished = False

    def __run__(self) -> None:
        if self.current_run == 3:
            self.attempts += 1
            raise ValueError(f"bad run, attempt {self.attempts}")

    def __onfinish__(self) -> None:
        self.finished = True

    def __result__(self) -> str:
        return "unreachable"

    def __error__(self) -> Any:
        if self.handler == "value":
            error = self.error
            assert isinstance(error, ProcessError)
            return {
                "error": type(error).__name__,
                "current_run": error.current_run,
                "original": repr(error.original_error),
                "attempts": self.attempts,
                "onfinish_ran": self.finished,
            }
        if self.handler == "exception":
            assert isinstance(self.error, ProcessError)
            return Custom(f"handled: {self.error.original_error}")
        if self.handler == "raise":
            raise KeyError("the handler broke")
        return super().__error__()


class Custom(Exception):
    pass


class FailsIn(Skprocess):
    """runs=2, lives=2: ``section`` raises on run 2 (every time it is called then)."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.calls = 0
        self.process_config.runs = 2
        self.process_config.lives = 2

    def _maybe_fail(self, section: str) -> None:
        if section == self.section and self.current_run == 2:
            self.calls += 1
            raise ValueError(f"{section} failed, call {self.calls}")

    def __prerun__(self) -> None:
        self._maybe_fail("prerun")

    def __run__(self) -> None:
        self._maybe_fail("run")

    def __postrun__(self) -> None:
        self._maybe_fail("postrun")

    def __onfinish__(self) -> None:
        self._maybe_fail("onfinish")

    def __result__(self) -> None:
        self._maybe_fail("result")


class Sleeper(Skprocess):
    """One run; ``section`` sleeps ``seconds``, inside a user's ``except Exception``."""

    def __init__(self, section: str, seconds: float, timeout: float) -> None:
        self.section = section
        self.seconds = seconds
        self.process_config.runs = 1
        setattr(self.process_config.timeouts, section, timeout)
        self.swallowed = False

    def _sleep(self, section: str) -> None:
        if section != self.section:
            return
        try:
            time.sleep(self.seconds)
        except Exception:  # must not catch the timeout
            self.swallowed = True

    def __run__(self) -> None:
        self._sleep("run")

    def __result__(self) -> str:
        self._sleep("result")
        return f"done, swallowed={self.swallowed}"


class TimedSleeper(Skprocess):
    """Measures, in the child, how long __run__ lasted before its timeout stopped it."""

    def __init__(self, timeout: float) -> None:
        self.process_config.runs = 1
        self.process_config.timeouts.run = timeout
        self.entered = 0.0

    def __run__(self) -> None:
        self.entered = time.monotonic()
        time.sleep(10)

    def __error__(self) -> tuple[str, float]:
        return type(self.error).__name__, time.monotonic() - self.entered


class SlowFirstAttempt(Skprocess):
    """lives=2, timeouts.run=0.2: the first attempt overruns, the retry is quick."""

    def __init__(self) -> None:
        self.process_config.runs = 1
        self.process_config.lives = 2
        self.process_config.timeouts.run = 0.2
        self.attempts = 0

    def __run__(self) -> None:
        self.attempts += 1
        if self.attempts == 1:
            time.sleep(10)

    def __result__(self) -> int:
        return self.attempts


class PingPong(Skprocess):
    """Echoes what the parent tells it until told "done"; calls callables it receives."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.quiet: tuple[Any, float] | None = None

    def __prerun__(self) -> None:
        if self.quiet is None:  # the parent says nothing at first: listen times out
            began = time.monotonic()
            message = self.listen(timeout=0.3)
            self.quiet = (message, time.monotonic() - began)
            self.tell("ready")

    def __run__(self) -> None:
        message = self.listen(timeout=WAIT)
        if message is None or message == "done":
            self.stop()
            return
        if callable(message):
            self.tell(("called", message(41)))
            return
        self.got.append(message)
        self.tell(("echo", message, self.current_run))

    def __result__(self) -> tuple[list[Any], tuple[Any, float] | None]:
        return self.got, self.quiet


class Base(Skprocess):
    greeting = "hello"

    def helper(self, name: str) -> str:
        return f"{self.greeting}, {name}"

    @property
    def doubled(self) -> int:
        return self.value * 2  # type: ignore[attr-defined, no-any-return]


class Derived(Base):
    """Uses an inherited method, an inherited property and a name-mangled private method."""

    greeting = "bonjour"

    def __init__(self, value: int) -> None:
        self.value = value
        self.process_config.runs = 1
        self.seen: dict[str, Any] = {}

    def __secret(self) -> str:
        return f"secret {self.value}"

    def __run__(self) -> None:
        self.seen = {
            "helper": self.helper("child"),
            "doubled": self.doubled,
            "private": self.__secret(),
            "class": type(self).__qualname__,
            "module": type(self).__module__,
            "mro": [c.__name__ for c in type(self).__mro__],
            "is_base": isinstance(self, Base),
            "pid": os.getpid(),
        }

    def __result__(self) -> dict[str, Any]:
        return self.seen


class Unrebuildable(Exception):
    """Pickles (args are the formatted message), but cannot be rebuilt from its args."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code


class RaisesUnrebuildable(Skprocess):
    def __run__(self) -> None:
        raise Unrebuildable(7, "needs two arguments")


class UnsendableResult(Skprocess):
    def __init__(self) -> None:
        self.process_config.runs = 1

    def __run__(self) -> None:
        pass

    def __result__(self) -> Any:
        return threading.Lock()


class Token:
    """Pickles, but cannot be rebuilt: __reduce__ leaves out the required argument."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Token, ())


class UnrebuildableResult(Skprocess):
    def __init__(self) -> None:
        self.process_config.runs = 1

    def __run__(self) -> None:
        pass

    def __result__(self) -> Token:
        return Token(5)


def _rebuild_away_from(pid: int) -> str:
    if os.getpid() == pid:
        raise RuntimeError("cannot be rebuilt in the parent")
    return "rebuilt"


class ParentHostile:
    """Unpickles anywhere but in process ``pid`` (like a class the parent cannot import)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_away_from, (self.pid,))


class ParentHostileResult(Skprocess):
    def __init__(self) -> None:
        self.parent = os.getpid()
        self.process_config.runs = 1

    def __run__(self) -> None:
        pass

    def __result__(self) -> ParentHostile:
        return ParentHostile(self.parent)


class ExitsHard(Skprocess):
    def __run__(self) -> None:
        os._exit(3)


class NoRun(Skprocess):
    def __prerun__(self) -> None:
        pass


class Quick(Skprocess):
    def __init__(self) -> None:
        self.process_config.runs = 1

    def __run__(self) -> None:
        pass

    def __result__(self) -> str:
        return "quick"


# -- the lifecycle ------------------------------------------------------------------------


def test_lifecycle_order_under_every_start_method(start_method: str, track: Any) -> None:
    process = track(Recorder(runs=3))
    assert not process.is_alive
    assert process.current_run == 0
    process.start()
    assert finish(process) == expected_log(3)
    assert not process.is_alive
    assert process.current_run == 3
    # result() and wait() again: same answer, no blocking
    assert process.wait(0) is True
    assert process.result() == expected_log(3)


@pytest.mark.parametrize("runs", [1, 7])
def test_runs_gives_exactly_that_many_iterations(runs: int) -> None:
    assert Recorder(runs=runs).run() == expected_log(runs)


def test_run_is_start_wait_result(track: Any) -> None:
    process = track(Quick())
    assert process.run() == "quick"
    assert not process.is_alive
    with pytest.raises(ProcessError, match="already started"):
        process.start()


def test_join_in_ends_the_loop_after_about_that_time() -> None:
    runs, elapsed = Counter(join_in=0.5).run()
    assert 0.5 <= elapsed < 1.5
    assert 3 <= runs <= 26  # 20 ms per run over ~0.5 s


def test_runs_and_join_in_whichever_comes_first() -> None:
    runs, elapsed = Counter(runs=3, join_in=10.0).run()
    assert runs == 3
    assert elapsed < 5


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("prerun", ["prerun1", "run1", "postrun1", "prerun2", "onfinish", "result"]),
        ("run", ["prerun1", "run1", "postrun1", "prerun2", "run2", "onfinish", "result"]),
        (
            "postrun",
            ["prerun1", "run1", "postrun1", "prerun2", "run2", "postrun2", "onfinish", "result"],
        ),
    ],
)
def test_stop_inside_a_section_ends_the_loop_after_it(where: str, expected: list[str]) -> None:
    assert Stopper(where, at=2).run() == expected


def test_stop_inside_run_on_the_first_run(start_method: str) -> None:
    assert Stopper("run", at=1).run() == ["prerun1", "run1", "onfinish", "result"]


def test_stop_from_the_parent_is_graceful(track: Any) -> None:
    process = track(Forever())
    process.start()
    wait_until(lambda: process.current_run >= 3)
    process.stop()
    log = finish(process)
    assert log[-2:] == ["onfinish", "result"]
    runs = {entry for entry in log if entry.startswith("run")}
    assert len(runs) >= 3
    assert not process.is_alive


def test_stop_from_the_parent_while_in_run_skips_postrun(track: Any) -> None:
    # docs/processing.md: "the parent calls process.stop(): the child notices between
    # sections and ends the same way" (as self.stop() from that section: postrun skipped).
    process = track(Forever(run_seconds=0.5))
    process.start()
    assert process.listen(timeout=WAIT) == "in run 1"
    process.stop()
    assert finish(process) == ["prerun1", "run1", "onfinish", "result"]


# -- lives ----------------------------------------------------------------------------------


def test_lives_retry_the_same_iteration_and_keep_state(start_method: str) -> None:
    attempts, log = Flaky().run()
    assert attempts == 4  # 3 attempts of run 1 (counter kept across retries) + run 2
    assert log == [
        "prerun1", "run1",
        "prerun1", "run1",
        "prerun1", "run1", "postrun1",
        "prerun2", "run2", "postrun2",
    ]  # fmt: skip


def test_lives_are_one_budget_for_the_whole_process(track: Any) -> None:
    # docs/processing.md: lives = 3 allows two failures in total, not per iteration.
    class OnePerRun(Skprocess):
        def __init__(self) -> None:
            self.process_config.runs = 3
            self.process_config.lives = 3
            self.failed: set[int] = set()

        def __run__(self) -> None:
            if self.current_run not in self.failed:
                self.failed.add(self.current_run)
                raise ValueError(f"first attempt of run {self.current_run}")

    process = track(OnePerRun())
    process.start()
    assert process.wait(WAIT)
    with pytest.raises(RunError) as info:
        process.result()
    assert info.value.current_run == 3
    assert str(info.value.original_error) == "first attempt of run 3"


def test_lives_exhausted_raises_run_error(start_method: str, track: Any) -> None:
    process = track(Doomed())
    process.start()
    assert process.wait(WAIT)
    with pytest.raises(RunError) as info:
        process.result()
    error = info.value
    assert type(error) is RunError
    assert error.current_run == 3
    assert type(error.original_error) is ValueError
    assert error.original_error.args == ("bad run, attempt 2",)  # both lives were spent
    assert error.__cause__ is error.original_error
    assert "ValueError: bad run, attempt 2" in error.message
    assert "Doomed" in error.message
    assert "bad run, attempt 2" in str(error)
    assert error.remote_traceback is not None
    assert "__run__" in error.remote_traceback
    # the same error again from a second result() call
    with pytest.raises(RunError):
        process.result()


def test_error_handler_return_value_becomes_the_result() -> None:
    assert Doomed("value").run() == {
        "error": "RunError",
        "current_run": 3,
        "original": repr(ValueError("bad run, attempt 2")),
        "attempts": 2,
        "onfinish_ran": False,  # after an error, onfinish and result do not run
    }


def test_error_handler_returning_an_exception_raises_it() -> None:
    with pytest.raises(Custom, match=r"^handled: bad run, attempt 2$"):
        Doomed("exception").run()


def test_error_handler_raising_gives_error_handler_error() -> None:
    with pytest.raises(ErrorHandlerError) as info:
        Doomed("raise").run()
    assert info.value.current_run == 3
    assert type(info.value.original_error) is KeyError
    assert info.value.original_error.args == ("the handler broke",)
    assert "KeyError" in info.value.message


@pytest.mark.parametrize(
    ("section", "kind", "calls"),
    [
        ("prerun", PreRunError, 2),  # loop sections are retried while lives last
        ("postrun", PostRunError, 2),
        ("onfinish", OnFinishError, 1),  # not retried
        ("result", ResultError, 1),
    ],
)
def test_each_section_maps_to_its_error_class(
    section: str, kind: type[ProcessError], calls: int
) -> None:
    with pytest.raises(ProcessError) as info:
        FailsIn(section).run()
    error = info.value
    assert type(error) is kind
    assert error.current_run == 2
    assert type(error.original_error) is ValueError
    assert str(error.original_error) == f"{section} failed, call {calls}"
    assert f"__{section}__" in error.message


def test_pool_workers_run_the_same_lifecycle() -> None:
    # One loop for start() and for Pool workers: __error__ means the same in both.
    expected = Doomed("value").run()
    with Pool(1) as pool:
        assert pool.map(Doomed, ["value", "value"]) == [expected, expected]
        assert pool.map(Recorder, [2]) == [expected_log(2)]
        with pytest.raises(Custom, match="handled: bad run, attempt 2"):
            pool.map(Doomed, ["exception"])
        with pytest.raises(ErrorHandlerError):
            pool.map(Doomed, ["raise"])
        with pytest.raises(RunError) as info:
            pool.map(Doomed, ["default"])
    assert info.value.current_run == 3
    assert type(info.value.original_error) is ValueError


# -- timeouts -------------------------------------------------------------------------------


def test_run_timeout_is_not_swallowed_by_except_exception(start_method: str) -> None:
    began = time.monotonic()
    with pytest.raises(ProcessTimeoutError) as info:
        Sleeper("run", seconds=5, timeout=0.2).run()
    assert time.monotonic() - began < 4  # a swallowed timeout would sleep the full 5 s
    error = info.value
    assert type(error) is ProcessTimeoutError
    assert error.current_run == 1
    assert "timeout" in error.message
    assert "__run__" in error.message


def test_timeouts_have_sub_second_precision() -> None:
    kind, lasted = TimedSleeper(timeout=0.3).run()
    assert kind == "ProcessTimeoutError"
    assert 0.2 <= lasted < 0.8  # 1 s if rounded up; no timeout if rounded down


def test_a_timeout_spends_a_life_and_the_retry_can_succeed() -> None:
    assert SlowFirstAttempt().run() == 2


def test_result_timeout_raises_result_timeout_error() -> None:
    with pytest.raises(ResultTimeoutError) as info:
        Sleeper("result", seconds=5, timeout=0.2).run()
    assert isinstance(info.value, ProcessTimeoutError)
    assert info.value.current_run == 1
    assert "__result__" in info.value.message


# -- parent control -------------------------------------------------------------------------


def test_tell_and_listen_both_ways(start_method: str, track: Any) -> None:
    process = track(PingPong())
    process.start()
    began = time.monotonic()
    assert process.listen(timeout=0.2) is None  # the child says nothing for its first 0.3 s
    assert 0.15 <= time.monotonic() - began < 5
    assert process.listen(timeout=WAIT) == "ready"
    for n in range(5):
        process.tell({"n": n, "payload": [n] * n})
        assert process.listen(timeout=WAIT) == ("echo", {"n": n, "payload": [n] * n}, n + 1)
    process.tell(lambda x: x + 1)  # cloudpickle: a lambda travels too
    assert process.listen(timeout=WAIT) == ("called", 42)
    process.tell("done")
    got, quiet = finish(process)
    assert got == [{"n": n, "payload": [n] * n} for n in range(5)]
    assert quiet is not None
    message, waited = quiet
    assert message is None
    assert 0.25 <= waited < 5
    # the child is gone: listen gives None rather than blocking
    assert process.listen(timeout=0.2) is None


def test_messages_queue_up_in_order(track: Any) -> None:
    class Burst(Skprocess):
        def __init__(self) -> None:
            self.process_config.runs = 1

        def __run__(self) -> None:
            for n in range(20):
                self.tell(n)
            self.total = sum(self.listen(timeout=WAIT) for _ in range(20))

        def __result__(self) -> int:
            return self.total

    process = track(Burst())
    process.start()
    for n in range(20):
        process.tell(n * 10)
    assert [process.listen(timeout=WAIT) for _ in range(20)] == list(range(20))
    assert finish(process) == sum(n * 10 for n in range(20))


def test_current_run_and_is_alive_from_the_parent(track: Any) -> None:
    process = track(Forever())
    assert process.current_run == 0
    assert not process.is_alive
    process.start()
    assert process.is_alive
    seen = []
    wait_until(lambda: seen.append(process.current_run) or seen[-1] >= 5)
    assert seen == sorted(seen)  # it only moves forward
    assert process.is_alive
    process.stop()
    assert process.wait(WAIT)
    assert not process.is_alive
    assert process.current_run >= 5


def test_wait_with_timeout(start_method: str, track: Any) -> None:
    process = track(Forever())
    process.start()
    began = time.monotonic()
    assert process.wait(0.3) is False
    assert 0.25 <= time.monotonic() - began < 5
    assert process.is_alive
    process.stop()
    assert process.wait(WAIT) is True
    assert not process.is_alive
    assert process.result()[-1] == "result"


def test_kill_makes_result_raise_process_error_naming_the_signal(track: Any) -> None:
    process = track(Forever())
    process.start()
    wait_until(lambda: process.current_run >= 2)
    process.kill()
    assert not process.is_alive
    assert process.wait(WAIT)
    with pytest.raises(ProcessError) as info:
        process.result()
    error = info.value
    assert type(error) is ProcessError
    assert "SIGKILL" in str(error)
    assert error.current_run is not None
    assert error.current_run >= 2


def test_kill_after_the_end_keeps_the_result(track: Any) -> None:
    process = track(Quick())
    process.start()
    assert process.wait(WAIT)
    process.kill()
    assert process.result() == "quick"


def test_a_child_that_exits_without_reporting(track: Any) -> None:
    process = track(ExitsHard())
    process.start()
    assert process.wait(WAIT)
    with pytest.raises(ProcessError, match="exited with code 3"):
        process.result()


def test_starting_twice_raises(track: Any) -> None:
    process = track(Forever())
    process.start()
    with pytest.raises(ProcessError, match="already started"):
        process.start()
    process.stop()
    assert process.wait(WAIT)
    with pytest.raises(ProcessError, match="already started"):
        process.start()


def test_a_class_without_run_raises_type_error_at_start() -> None:
    process = NoRun()
    with pytest.raises(TypeError, match="__run__"):
        process.start()
    assert not process.is_alive
    with pytest.raises(TypeError, match="__run__"):
        process.run()


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.wait(0.1),
        lambda p: p.result(),
        lambda p: p.kill(),
        lambda p: p.tell("x"),
        lambda p: p.listen(0.1),
    ],
)
def test_parent_calls_before_start_raise(call: Callable[[Skprocess], Any]) -> None:
    with pytest.raises(ProcessError, match="not been started"):
        call(Quick())


# -- the real class in the child -----------------------------------------------------------


def test_the_child_runs_the_real_class(start_method: str, track: Any) -> None:
    process = track(Derived(21))
    process.start()
    seen = finish(process)
    assert seen["helper"] == "bonjour, child"
    assert seen["doubled"] == 42
    assert seen["private"] == "secret 21"
    assert seen["class"] == "Derived"
    assert seen["module"] == Derived.__module__
    assert seen["mro"] == ["Derived", "Base", "Skprocess", "object"]
    assert seen["is_base"] is True
    assert seen["pid"] != os.getpid()


def test_a_locally_defined_class_works_in_the_child(start_method: str) -> None:
    factor = 3

    class Local(Base):
        def __init__(self) -> None:
            self.value = 5
            self.scale = lambda x: x * factor
            self.process_config.runs = 2
            self.out: list[Any] = []

        def __hidden(self) -> int:
            return self.scale(self.value)

        def __run__(self) -> None:
            self.out.append((self.current_run, self.__hidden(), self.helper("local")))

        def __result__(self) -> list[Any]:
            return self.out

    assert Local().run() == [(1, 15, "hello, local"), (2, 15, "hello, local")]


# -- errors crossing processes -------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_ERRORS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_error_classes_pickle_intact(kind: type[ProcessError], dumps: Callable[..., bytes]) -> None:
    original = ValueError("inner problem")
    error = kind("it went wrong (run 3)", current_run=3, original_error=original)
    error.remote_traceback = "Traceback (most recent call last):\n  boom\n"
    copy = pickle.loads(dumps(error))
    assert type(copy) is kind
    assert copy.message == "it went wrong (run 3)"
    assert str(copy) == str(error)
    assert "it went wrong (run 3)" in str(copy)
    assert copy.current_run == 3
    assert type(copy.original_error) is ValueError
    assert copy.original_error.args == ("inner problem",)
    assert copy.__cause__ is copy.original_error
    assert copy.remote_traceback == error.remote_traceback

    bare = pickle.loads(dumps(kind("plain")))
    assert type(bare) is kind
    assert str(bare) == "plain"
    assert bare.current_run is None
    assert bare.original_error is None


def test_error_family() -> None:
    for kind in ALL_ERRORS:
        assert issubclass(kind, ProcessError)
        assert issubclass(kind, Exception)
    assert issubclass(ResultTimeoutError, ProcessTimeoutError)
    assert not issubclass(ProcessTimeoutError, RunError)


def test_an_exception_that_cannot_be_rebuilt_still_reports_its_message(track: Any) -> None:
    # Unrebuildable pickles fine in the child but unpickling it in the parent fails
    # (__init__ needs two arguments). The RunError and its message must still arrive.
    process = track(RaisesUnrebuildable())
    process.start()
    assert process.wait(WAIT)
    assert not process.is_alive
    with pytest.raises(RunError) as info:
        process.result()
    assert "Unrebuildable" in str(info.value)
    assert "7: needs two arguments" in str(info.value)
    assert info.value.current_run == 1


def test_a_result_that_cannot_be_sent_raises_result_error(track: Any) -> None:
    # _errors.py: ResultError is "__result__ raised, or the result could not be sent back".
    process = track(UnsendableResult())
    process.start()
    assert process.wait(WAIT)
    with pytest.raises(ResultError, match="could not be sent"):
        process.result()


def test_a_result_that_cannot_be_rebuilt_raises_result_error(track: Any) -> None:
    # The result pickles in the child but fails to unpickle in the parent: wait() must not
    # raise the unpickling TypeError; result() raises a ResultError saying what happened.
    process = track(UnrebuildableResult())
    process.start()
    assert process.wait(WAIT)
    assert not process.is_alive
    with pytest.raises(ResultError, match="Token"):
        process.result()


def test_a_result_that_only_the_parent_cannot_rebuild(track: Any) -> None:
    # The child's own round-trip check passes; only the parent's unpickling fails. wait()
    # must still return True and result() raise a ProcessError (ResultError) that says so,
    # every time, instead of leaking the unpickling error once and then a wrong message.
    process = track(ParentHostileResult())
    process.start()
    assert process.wait(WAIT)
    for _ in range(2):
        with pytest.raises(ProcessError, match="cannot be rebuilt in the parent"):
            process.result()


# -- processes are owned --------------------------------------------------------------------


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    assert result, "the script printed nothing in time"
    return result[0]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_the_child_exits_when_its_parent_is_killed(method: str) -> None:
    script = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "orphan_parent.py"), method],
        stdout=subprocess.PIPE,
        text=True,
    )
    family: set[int] = set()
    try:
        line = _read_line(script, WAIT)
        child = int(line)
        family = descendants(script.pid)
        assert child in family
        os.kill(script.pid, signal.SIGKILL)
        script.wait(WAIT)
        killed = time.monotonic()
        while not all(_gone(pid) for pid in family) and time.monotonic() - killed < 5:
            time.sleep(0.02)
        lasted = time.monotonic() - killed
        assert _gone(child), "the Skprocess child outlived its parent by 5 s"
        assert lasted < 2.0, f"took {lasted:.2f} s; left: {[p for p in family if not _gone(p)]}"
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
        for pid in family:  # the script's own descendants, recorded before it died
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        if script.stdout is not None:
            script.stdout.close()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_classes_and_lambdas_defined_in_a_scripts_main(method: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "main_classes.py"), method],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["method"] == method
    assert report["replies"] == [101, 202]
    result = report["result"]
    assert result["log"] == [
        "prerun1", "run1", "postrun1", "prerun2", "run2", "postrun2", "onfinish2"
    ]  # fmt: skip
    assert result["helper"] == "hello, world"
    assert result["private"] == "private 2"
    assert result["scaled"] == 20
    assert result["module"] in ("__main__", "__mp_main__")
    assert result["mro"] == ["Worker", "MainBase", "Skprocess", "object"]
    assert report["error"] == {
        "type": "RunError",
        "current_run": 1,
        "original_is_main_error": True,
        "message_intact": True,
    }
    assert report["handled"] == "caught MainError: from main"
    assert report["pool"] == [1, 4, 9]
    assert report["pool_lambda"] == [2, 3, 4]
    assert report["children_left"] == 0


def test_interpreter_exit_stops_a_running_process(tmp_path: Path) -> None:
    marker = tmp_path / "onfinish.txt"
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "exit_while_running.py"), str(marker)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - began < 15
    child = int(done.stdout.strip())
    assert marker.read_text() == "stopped gracefully"
    deadline = time.monotonic() + 2
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    if not _gone(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived the script")
