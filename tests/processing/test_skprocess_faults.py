"""Skprocess under failure: BaseExceptions in sections, calls interrupted mid-message, and
several threads on one object.

- ``sys.exit()``/``KeyboardInterrupt`` in a section: ``result()`` raises a ``ProcessError``
  with the exit status and the child's traceback; no life is spent.
- ``tell()``, ``listen()`` and ``wait()`` interrupted in the middle of a multi-MiB message, by
  a section timeout (SIGALRM, with lives to retry) or by a signal handler that raises: no
  call ever gets a corrupted message or a part of another, and later exchanges are exact.
  To interrupt a call in the middle of a message the test stops the other side (SIGSTOP)
  while the message is half sent, and continues it afterwards.
- Two threads starting, waiting for, telling to and listening to one Skprocess.

Each process is waited for with a deadline; a call that could hang runs in a thread with a
deadline. Every test uses ``no_leaks``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from suitkaise.processing import ProcessError, RunError, Skprocess

pytestmark = pytest.mark.slow

WAIT = 30.0
BIG = 12 * 1024 * 1024  # a message of several MiB: many times any socket buffer


@pytest.fixture(autouse=True, scope="module")
def _multiprocessing_helpers() -> None:
    """Start multiprocessing's session-long helpers before any leak snapshot (see
    test_pool_faults.py)."""
    from multiprocessing import forkserver, resource_tracker

    resource_tracker.ensure_running()
    forkserver.ensure_running()
    # multiprocessing's shared-memory heap keeps one arena per process for Value():
    # allocate it once here, not in the first test that starts a child.
    multiprocessing.get_context("fork").Value("q", 0, lock=False)


@pytest.fixture
def track() -> Iterator[Callable[[Skprocess], Skprocess]]:
    """Skprocesses a test starts; any still alive at the end is continued and killed."""
    started: list[Skprocess] = []

    def add(process: Skprocess) -> Skprocess:
        started.append(process)
        return process

    yield add
    for process in started:
        handle = process.__dict__.get("_sk_parent")
        if handle is not None and process.is_alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.process.pid, signal.SIGCONT)
            process.kill()
    # pytest keeps fixture values until every teardown is done: let go of the objects (and
    # of their pipes) before no_leaks looks.
    started.clear()


def payload(seed: int, size: int = BIG) -> bytes:
    return random.Random(seed).randbytes(size)


def digest(data: Any) -> Any:
    return hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else data


class Interrupted(Exception):
    """Raised by the tests' signal handlers."""


@contextlib.contextmanager
def raising_alarm(seconds: float) -> Iterator[None]:
    """SIGALRM after ``seconds`` (an interval timer), whose handler raises Interrupted."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted("SIGALRM")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def raising_usr1(after: float) -> Iterator[None]:
    """SIGUSR1 sent to this process by a timer thread after ``after`` seconds; its handler
    (run in the main thread) raises Interrupted."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted("SIGUSR1")

    previous = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(after, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGUSR1, previous)


def bounded(call: Callable[[], Any], seconds: float = WAIT) -> Any:
    """Run ``call`` in a thread; fail if it does not return within ``seconds``."""
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
        pytest.fail(f"the call hung for more than {seconds} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def finish(process: Skprocess) -> Any:
    assert bounded(lambda: process.wait(WAIT)), f"{process!r} did not finish in time"
    return process.result()


def reap(pid: int, seconds: float = WAIT) -> int | None:
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


# -- children ---------------------------------------------------------------------------


class ExitsIn(Skprocess):
    """runs=3, lives=3: ``section`` raises ``what`` on run 2 (marks each section it enters)."""

    def __init__(self, section: str, what: str, marks: str) -> None:
        self.section = section
        self.what = what
        self.marks = marks
        self.process_config.runs = 3
        self.process_config.lives = 3

    def _enter(self, section: str) -> None:
        with open(self.marks, "a") as marks:
            marks.write(f"{section}{self.current_run}\n")
        loop = section in ("prerun", "run", "postrun")
        if section == self.section and (self.current_run == 2 or not loop):
            if self.what == "exit":
                sys_exit(3)
            raise KeyboardInterrupt

    def __prerun__(self) -> None:
        self._enter("prerun")

    def __run__(self) -> None:
        self._enter("run")

    def __postrun__(self) -> None:
        self._enter("postrun")

    def __onfinish__(self) -> None:
        self._enter("onfinish")

    def __result__(self) -> str:
        self._enter("result")
        return "finished"

    def __error__(self) -> Any:
        self._enter("error")
        return "handled"


def sys_exit(code: int) -> None:
    import sys

    sys.exit(code)


class BigSender(Skprocess):
    """Tells its pid, then a big message (blocks while the parent does not read), then
    "after"; then echoes what it is told until "done"."""

    def __init__(self) -> None:
        self.process_config.runs = 1

    def __run__(self) -> None:
        self.tell(os.getpid())
        self.tell(payload(1))
        self.tell("after")
        while (message := self.listen(timeout=WAIT)) not in (None, "done"):
            self.tell(("echo", message))


class LateListener(Skprocess):
    """Tells its pid, waits for a flag file, then listens until "done"; the result is what
    it received (big messages as digests)."""

    def __init__(self, flag: str) -> None:
        self.flag = flag
        self.got: list[Any] = []
        self.process_config.runs = 1

    def __run__(self) -> None:
        self.tell(os.getpid())
        deadline = time.monotonic() + WAIT
        while not os.path.exists(self.flag) and time.monotonic() < deadline:
            time.sleep(0.01)
        while (message := self.listen(timeout=WAIT)) not in (None, "done"):
            self.got.append(digest(message))

    def __result__(self) -> list[Any]:
        return self.got


class StalledReader(Skprocess):
    """lives=2, timeouts.run=4: each attempt tells (attempt, pid), then listens for a big
    message and for one more. The first attempt is interrupted by its timeout in the middle
    of the big message; the second must get that message whole, then the next."""

    def __init__(self) -> None:
        self.process_config.runs = 1
        self.process_config.lives = 2
        self.process_config.timeouts.run = 4.0
        self.attempts = 0
        self.got: list[Any] = []

    def __run__(self) -> None:
        self.attempts += 1
        self.tell(("attempt", self.attempts, os.getpid()))
        self.got.append(digest(self.listen()))
        self.got.append(self.listen(timeout=WAIT))

    def __result__(self) -> tuple[int, list[Any]]:
        return self.attempts, self.got


class StalledWriter(Skprocess):
    """lives=2, timeouts.run=2: the first attempt tells "started" and a big message the
    parent does not read, and is interrupted by its timeout in the middle of it; every
    attempt then tells ("second", attempt) and another big message."""

    def __init__(self) -> None:
        self.process_config.runs = 1
        self.process_config.lives = 2
        self.process_config.timeouts.run = 2.0
        self.attempts = 0

    def __run__(self) -> None:
        self.attempts += 1
        if self.attempts == 1:
            self.tell("started")
            self.tell(payload(5))
        self.tell(("second", self.attempts))
        self.tell(payload(6))

    def __result__(self) -> int:
        return self.attempts


class BigResult(Skprocess):
    """Tells its pid; its result is a big message (the report blocks until read)."""

    def __init__(self) -> None:
        self.process_config.runs = 1

    def __run__(self) -> None:
        self.tell(os.getpid())

    def __result__(self) -> bytes:
        return payload(7)


class Burst(Skprocess):
    """Tells ``count`` tagged messages of mixed sizes, then waits for "done"."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.process_config.runs = 1

    def __run__(self) -> None:
        for n in range(self.count):
            self.tell((n, payload(n, (3 * 1024 * 1024, 10, 200_000)[n % 3])))
        self.listen(timeout=WAIT)


class Collector(Skprocess):
    """Listens for ``count`` messages; the result is their digests by tag."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.process_config.runs = 1
        self.got: dict[Any, Any] = {}

    def __run__(self) -> None:
        for _ in range(self.count):
            message = self.listen(timeout=WAIT)
            if message is None:
                break
            tag, data = message
            self.got[tag] = digest(data)

    def __result__(self) -> dict[Any, Any]:
        return self.got


class RecordsPid(Skprocess):
    def __init__(self, path: str, seconds: float = 0.0, size: int = 0) -> None:
        self.path = path
        self.seconds = seconds
        self.size = size
        self.process_config.runs = 1

    def __run__(self) -> None:
        with open(self.path, "a") as pids:
            pids.write(f"{os.getpid()}\n")
        time.sleep(self.seconds)

    def __result__(self) -> tuple[str, bytes]:
        return "done", payload(9, self.size)


class Forever(Skprocess):
    def __run__(self) -> None:
        time.sleep(0.01)


class SaysLater(Skprocess):
    def __init__(self) -> None:
        self.process_config.runs = 1

    def __run__(self) -> None:
        time.sleep(0.3)
        self.tell("late")


# -- BaseExceptions in sections --------------------------------------------------------------


@pytest.mark.parametrize("section", ["prerun", "run", "postrun"])
def test_sys_exit_in_a_loop_section_is_reported_not_retried(
    start_method: str, section: str, tmp_path: Path, no_leaks: None, track: Any
) -> None:
    marks = tmp_path / "marks"
    process = track(ExitsIn(section, "exit", str(marks)))
    process.start()
    assert bounded(lambda: process.wait(WAIT))
    with pytest.raises(ProcessError) as caught:
        process.result()
    error = caught.value
    assert type(error) is ProcessError
    assert error.exit_code == 3
    assert error.current_run == 2
    assert type(error.original_error) is SystemExit
    assert f"__{section}__ of ExitsIn" in error.message
    assert "sys.exit(3)" in error.message
    assert error.remote_traceback is not None
    assert f"in __{section}__" in error.remote_traceback
    assert "SystemExit: 3" in error.remote_traceback
    # No retry although two lives were left; __onfinish__, __result__, __error__ not run.
    entered = marks.read_text().split()
    assert entered.count(f"{section}2") == 1
    assert not {"onfinish3", "result3", "error2", "onfinish2"} & set(entered)
    assert "exit code 3" in repr(process)  # the child left with the status it asked for


@pytest.mark.parametrize("section", ["run", "onfinish", "result", "error"])
def test_keyboard_interrupt_in_a_section_is_a_process_error(
    section: str, tmp_path: Path, no_leaks: None, track: Any
) -> None:
    marks = tmp_path / "marks"
    if section == "error":
        process = track(InterruptsInErrorHandler())
    else:
        process = track(ExitsIn(section, "interrupt", str(marks)))
    process.start()
    assert bounded(lambda: process.wait(WAIT))
    with pytest.raises(ProcessError) as caught:
        process.result()
    error = caught.value
    assert type(error) is ProcessError
    assert error.exit_code is None
    assert type(error.original_error) is KeyboardInterrupt
    assert f"__{section}__" in error.message
    assert "KeyboardInterrupt" in error.message
    assert error.remote_traceback is not None
    assert "KeyboardInterrupt" in error.remote_traceback


class InterruptsInErrorHandler(Skprocess):
    def __init__(self) -> None:
        self.process_config.runs = 1

    def __run__(self) -> None:
        raise ValueError("into __error__")

    def __error__(self) -> Any:
        raise KeyboardInterrupt


# -- interrupted in the middle of a message ------------------------------------------------


def test_listen_interrupted_mid_message_by_a_raising_handler(
    start_method: str, no_leaks: None, track: Any
) -> None:
    process = track(BigSender())
    process.start()
    pid = process.listen(timeout=WAIT)
    time.sleep(1.0)  # the child is blocked in the middle of its big tell()
    os.kill(pid, signal.SIGSTOP)
    try:
        with raising_alarm(0.5), pytest.raises(Interrupted):
            process.listen(timeout=WAIT)  # takes what was sent, then waits: interrupted
    finally:
        os.kill(pid, signal.SIGCONT)
    # Nothing was lost: the next listen() returns that message whole.
    assert digest(bounded(lambda: process.listen(timeout=WAIT))) == digest(payload(1))
    assert bounded(lambda: process.listen(timeout=WAIT)) == "after"
    for n in range(3):
        process.tell({"n": n})
        assert bounded(lambda: process.listen(timeout=WAIT)) == ("echo", {"n": n})
    process.tell("done")
    assert finish(process) is None


def test_tell_interrupted_mid_message_by_a_raising_handler(
    start_method: str, tmp_path: Path, no_leaks: None, track: Any
) -> None:
    flag = tmp_path / "flag"
    process = track(LateListener(str(flag)))
    process.start()
    assert process.listen(timeout=WAIT) > 0
    with raising_usr1(after=0.8), pytest.raises(Interrupted):
        process.tell(payload(2))  # the child does not read yet: blocks half-way
    flag.touch()
    process.tell("second")
    process.tell(payload(3))
    process.tell("done")
    # The interrupted message is dropped whole; the rest arrives exactly.
    assert finish(process) == ["second", digest(payload(3))]


def test_listen_in_the_child_interrupted_by_its_section_timeout(
    start_method: str, no_leaks: None, track: Any
) -> None:
    process = track(StalledReader())
    process.start()
    _, attempt, pid = process.listen(timeout=WAIT)
    assert attempt == 1
    os.kill(pid, signal.SIGSTOP)  # the child waits in listen(): let it read nothing yet
    helper = os.fork()
    if helper == 0:  # a second sender on the parent's end of the channel
        code = 1
        try:
            process.tell(payload(4))
            code = 0
        finally:
            os._exit(code)
    try:
        time.sleep(1.0)  # the helper filled the socket and waits, half-way through
        os.kill(helper, signal.SIGSTOP)
        os.kill(pid, signal.SIGCONT)  # the child reads what is there, then waits...
        # ... until its 4 s section timeout interrupts it mid-message: it retries.
        assert bounded(lambda: process.listen(timeout=WAIT))[1] == 2
    finally:
        os.kill(helper, signal.SIGCONT)
        helper_code = reap(helper)
    assert helper_code == 0
    process.tell("after")
    attempts, got = finish(process)
    assert attempts == 2
    assert got == [digest(payload(4)), "after"]


def test_tell_in_the_child_interrupted_by_its_section_timeout(
    start_method: str, no_leaks: None, track: Any
) -> None:
    process = track(StalledWriter())
    process.start()
    assert process.listen(timeout=WAIT) == "started"
    time.sleep(3.0)  # not reading: the big tell blocks half-way until the 2 s timeout
    assert bounded(lambda: process.listen(timeout=WAIT)) == ("second", 2)
    assert digest(bounded(lambda: process.listen(timeout=WAIT))) == digest(payload(6))
    assert finish(process) == 2


def test_wait_interrupted_mid_report_loses_nothing(
    start_method: str, no_leaks: None, track: Any
) -> None:
    process = track(BigResult())
    process.start()
    pid = process.listen(timeout=WAIT)
    time.sleep(1.0)  # the child is blocked half-way through sending its big report
    os.kill(pid, signal.SIGSTOP)
    try:
        with raising_alarm(0.5), pytest.raises(Interrupted):
            process.wait()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert digest(finish(process)) == digest(payload(7))


# -- several threads on one Skprocess --------------------------------------------------------


def test_two_threads_listening_each_get_whole_messages(
    start_method: str, no_leaks: None, track: Any
) -> None:
    count = 12
    process = track(Burst(count))
    process.start()
    got: list[list[Any]] = [[], []]

    def listen(mine: list[Any]) -> None:
        for _ in range(count // 2):
            tag, data = process.listen(timeout=WAIT)
            mine.append((tag, digest(data)))

    threads = [threading.Thread(target=listen, args=(box,), daemon=True) for box in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
        assert not thread.is_alive(), "a listening thread hung"
    received = sorted(got[0] + got[1])
    sizes = (3 * 1024 * 1024, 10, 200_000)
    expected = [(n, digest(payload(n, sizes[n % 3]))) for n in range(count)]
    assert received == expected
    process.tell("done")
    finish(process)


def test_two_threads_telling_deliver_whole_messages(
    start_method: str, no_leaks: None, track: Any
) -> None:
    process = track(Collector(12))
    process.start()

    def tell(first: int) -> None:
        for n in range(first, first + 6):
            process.tell((n, payload(n, 2 * 1024 * 1024)))

    threads = [threading.Thread(target=tell, args=(first,), daemon=True) for first in (0, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
        assert not thread.is_alive(), "a telling thread hung"
    assert finish(process) == {n: digest(payload(n, 2 * 1024 * 1024)) for n in range(12)}


def test_two_threads_starting_one_object_start_one_child(
    start_method: str, tmp_path: Path, no_leaks: None, track: Any
) -> None:
    for attempt in range(3):
        path = tmp_path / f"pids{attempt}"
        process = track(RecordsPid(str(path), 0.5))
        barrier = threading.Barrier(2)
        outcomes: list[Any] = []

        def start(
            process: Skprocess = process,
            barrier: threading.Barrier = barrier,
            outcomes: list[Any] = outcomes,
        ) -> None:
            barrier.wait(WAIT)
            try:
                process.start()
                outcomes.append("started")
            except ProcessError as error:
                outcomes.append(str(error))

        threads = [threading.Thread(target=start, daemon=True) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert sorted(outcomes)[1] == "started"
        assert "already started" in sorted(outcomes)[0]
        assert finish(process)[0] == "done"
        assert len(path.read_text().split()) == 1  # one child, not two


def test_two_threads_waiting_get_the_same_result(
    start_method: str, tmp_path: Path, no_leaks: None, track: Any
) -> None:
    process = track(RecordsPid(str(tmp_path / "pids"), 0.5, 3 * 1024 * 1024))
    process.start()
    results: list[Any] = [None, None]

    def result(slot: int) -> None:
        results[slot] = bounded(process.result)

    threads = [threading.Thread(target=result, args=(slot,), daemon=True) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    expected = ("done", payload(9, 3 * 1024 * 1024))
    assert results == [expected, expected]
    assert process.wait(0) is True


def test_kill_while_another_thread_waits(no_leaks: None, track: Any) -> None:
    process = track(Forever())
    process.start()
    waited: list[bool] = []
    waiter = threading.Thread(target=lambda: waited.append(process.wait(WAIT)), daemon=True)
    waiter.start()
    time.sleep(0.3)
    process.kill()
    waiter.join(WAIT)
    assert waited == [True]
    with pytest.raises(ProcessError) as caught:
        process.result()
    assert caught.value.exit_code == -signal.SIGKILL
    assert "SIGKILL" in str(caught.value)


# -- values --------------------------------------------------------------------------------


def test_wait_and_listen_timeouts_are_validated(no_leaks: None, track: Any) -> None:
    process = track(SaysLater())
    process.start()
    for bad, kind in [(True, TypeError), ("1", TypeError), (-1, ValueError), (1e10, ValueError)]:
        with pytest.raises(kind, match="timeout"):
            process.wait(bad)
        with pytest.raises(kind, match="timeout"):
            process.listen(bad)
    # A timedelta works, and so does the longest accepted wait (1e9 s) without overflowing.
    assert process.listen(datetime.timedelta(seconds=0)) is None
    assert bounded(lambda: process.listen(1e9)) == "late"
    assert bounded(lambda: process.wait(1e9)) is True
    assert process.wait(datetime.timedelta(seconds=1)) is True


def test_tell_to_a_child_that_is_gone_is_a_process_error(no_leaks: None, track: Any) -> None:
    process = track(SaysLater())
    process.start()
    assert finish(process) is None
    with pytest.raises(ProcessError, match="gone"):
        process.tell("anyone there?")
    assert process.listen(0.5) == "late"  # what it said before it went is still there
    assert process.listen(0.2) is None


def test_a_run_error_still_reaches_the_parent(no_leaks: None, track: Any) -> None:
    # The report now travels over the new channel: an ordinary error still arrives intact.
    class Fails(Skprocess):
        def __run__(self) -> None:
            raise ValueError("plain")

    with pytest.raises(RunError, match="plain"):
        track(Fails()).run()


# -- children nobody waits for ---------------------------------------------------------------


class StartsAndForgets(Skprocess):
    """In its child: starts a looping Skprocess, keeps no reference, and finishes."""

    def __init__(self, pidfile: str) -> None:
        self.pidfile = pidfile
        self.process_config.runs = 1

    def __run__(self) -> None:
        Looper(self.pidfile).start()
        deadline = time.monotonic() + WAIT
        while not os.path.exists(self.pidfile) and time.monotonic() < deadline:
            time.sleep(0.01)  # it is looping

    def __result__(self) -> str:
        return "started one"


class Looper(Skprocess):
    def __init__(self, pidfile: str) -> None:
        self.pidfile = pidfile

    def __run__(self) -> None:
        if self.current_run == 1:
            with open(self.pidfile, "w") as out:
                out.write(str(os.getpid()))
        time.sleep(0.01)


def test_a_child_that_forgets_its_own_child_still_ends(
    start_method: str, tmp_path: Path, no_leaks: None, track: Any
) -> None:
    # Its exit used to join the grandchild forever: nothing asked it to stop.
    pidfile = tmp_path / "grandchild"
    process = track(StartsAndForgets(str(pidfile)))
    process.start()
    assert bounded(lambda: process.wait(20)), "the child hung at exit, joining its own child"
    assert process.result() == "started one"
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _running(grandchild)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_script_that_forgets_a_running_child_still_exits(
    method: str, tmp_path: Path, no_leaks: None
) -> None:
    import subprocess
    import sys

    pidfile = tmp_path / "child"
    script = Path(__file__).parent / "scripts" / "forgotten_child.py"
    try:
        done = subprocess.run(
            [sys.executable, str(script), method, str(pidfile)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
        pytest.fail("the script never exited: its forgotten child kept it alive")
    assert done.returncode == 0, done.stderr
    assert "main done" in done.stdout
    assert not _running(int(pidfile.read_text()))
