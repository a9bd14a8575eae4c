"""Share: it survives failure (the "faults" issue).

One section per defect class, each test written to fail on the code before the fix:

1. the in-place rule: only ``share.n op= x`` is atomic; a value changed locally and assigned
   back is assigned whole (no lost steps);
2. interrupted calls (a signal handler that raises, Ctrl-C, an Skprocess section timeout)
   never desynchronise a connection: every request has an id, a stale reply is discarded,
   an interrupted connection is replaced;
3. a coordinator that uses its own Share (a proxy, a circuit or the Share inside a shared
   value, a method that uses the Share) works, also across stop()/start(); no client waits
   forever: a deadlocked coordinator fails calls after ``Share(timeout=...)``, a frozen one
   within about 2 s (heartbeat), a killed one at once;
4. stop() keeps everything it can and names what it could not keep;
5. a Share whose owner and coordinator were killed together leaves nothing behind for long:
   the next Share's coordinator sweeps it (and nothing else);
6. no file descriptor stays open once nothing uses the Share;
7. names starting with "_" are ordinary names; iteration and mapping views come back.

Plus what the same classes showed elsewhere: circuit slots reused after a restart, start()
and stop() from two threads, handles kept across restarts and forks, 32 processes on one
circuit and one counter. Every fault test runs under ``no_leaks`` (descriptors, /dev/shm,
processes). Anything that could hang runs with a deadline (``within``), so a hang fails.
"""

from __future__ import annotations

import contextlib
import gc
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from leaks import open_fds

from suitkaise import Circuit
from suitkaise.processing import Share, ShareError, Skprocess

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leaks")]


@pytest.fixture(scope="module", autouse=True)
def _session_helpers() -> None:
    """multiprocessing's fork server, resource tracker and shared-value heap live for the
    whole session, each with descriptors of its own: start them before any test's leak
    check begins, so that the first test to need one is not blamed for them."""
    from multiprocessing import forkserver, resource_tracker

    forkserver.ensure_running()
    resource_tracker.ensure_running()
    FORK.RawValue("q", 0)  # maps the heap's arena (Skprocess uses a shared value)

FORK = multiprocessing.get_context("fork")
WAIT = 20.0  # a child or a thread that must finish: a failure after this, never a hang
SCRIPTS = Path(__file__).parent / "share_fault_scripts"
SRC = Path(__file__).resolve().parents[2] / "src"


# -- helpers ------------------------------------------------------------------------------


def within(seconds: float, fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` in a daemon thread; fails the test if it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as error:  # handed to the test's thread
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{what} did not complete within {seconds} s (it hangs)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.01)


def coordinator_pid(share: Share) -> int:
    process = share._sk.running.process
    assert process is not None
    pid: int = process.pid
    return pid


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """Process ``pid`` stopped (SIGSTOP) for the block, and continued after it, whatever
    happens in it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def alarm_raises(exception: type[BaseException], after: float) -> Iterator[None]:
    """A SIGALRM handler that raises ``exception`` ``after`` seconds into the block."""

    def handler(signum: int, frame: object) -> None:
        raise exception("the alarm went off")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, after)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def share(request: pytest.FixtureRequest) -> Iterator[Share]:
    """A Share, stopped after the test and then let go of, so that ``no_leaks`` (set up
    before, checked after) sees everything it used closed."""
    created = Share()
    try:
        yield created
    finally:
        created.stop(timeout=2.0)
        # pytest keeps the test's arguments until the very end: drop ours now.
        request.node.funcargs.pop("share", None)  # type: ignore[attr-defined]
        del created


class Children:
    """Processes a test starts; every one is SIGKILLed (if alive) and joined at the end."""

    def __init__(self) -> None:
        self.started: list[Any] = []

    def start(self, target: Callable[..., Any], *args: Any, context: Any = FORK) -> Any:
        process = context.Process(target=target, args=args, daemon=True)
        process.start()
        self.started.append(process)
        return process

    def cleanup(self) -> None:
        for process in self.started:
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
            process.join(WAIT)
            process.close()


@pytest.fixture
def children() -> Iterator[Children]:
    tracker = Children()
    try:
        yield tracker
    finally:
        tracker.cleanup()


def run_in_child(context: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a child of ``context``; its result, or its error as a failure."""
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_report, args=(writer, fn, args), daemon=True)
    process.start()
    writer.close()
    try:
        assert reader.poll(WAIT + 10.0), f"the child ({fn.__name__}) did not report"
        kind, value = reader.recv()
    finally:
        if process.is_alive():
            process.join(WAIT)
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
            process.join()
        process.close()
        reader.close()
    assert kind == "ok", value
    return value


def _report(writer: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    import traceback

    try:
        outcome = ("ok", fn(*args))
    except BaseException:
        outcome = ("error", traceback.format_exc())
    writer.send(outcome)
    writer.close()


# -- objects stored in Shares (module level: importable by spawned coordinators) -------------


class Slow:
    """A shared object with a method that runs (at the coordinator) as long as asked."""

    def __init__(self) -> None:
        self.value = 0
        self.calls = 0

    def nap(self, seconds: float) -> str:
        self.calls += 1
        time.sleep(seconds)
        return "nap"

    def get(self) -> int:
        self.calls += 1
        return self.value

    def nap_flagged(self, flag: str, seconds: float) -> str:
        """Naps, after touching ``flag`` (how a test knows the call is running)."""
        self.calls += 1
        Path(flag).touch()
        time.sleep(seconds)
        return "nap"

    def add(self, amount: int) -> int:
        self.calls += 1
        self.value += amount
        return self.value

    def take(self, blob: bytes) -> int:
        self.calls += 1
        return len(blob)

    def make_lock(self) -> None:
        self.lock = threading.Lock()  # cannot be pickled: stop() cannot keep this object

    def hang(self) -> None:
        threading.Event().wait()  # never returns: a deadlocked method


class Holder:
    """Keeps whatever it is given (a proxy, a circuit, the Share) and uses it."""

    def __init__(self, thing: Any) -> None:
        self.thing = thing

    def short(self) -> Any:
        return self.thing.short()

    def append(self, item: Any) -> None:
        self.thing.append(item)

    def bump(self) -> int:
        # Runs at the coordinator, inside the request that called it, and uses the Share.
        self.thing.counter += 1
        self.thing.log.append(int(self.thing.counter))
        return int(self.thing.counter)


GLOBAL_SHARE: Share | None = None  # set by a test: what a user's module-level Share is


class UsesTheGlobalShare:
    def bump(self) -> int:
        assert GLOBAL_SHARE is not None
        GLOBAL_SHARE.counter += 1
        return int(GLOBAL_SHARE.counter)


class WaitsForAThread:
    """A method that starts a thread which uses the Share, and waits for it: the thread
    needs the coordinator, which this method holds (a deadlock of the user's making)."""

    def __init__(self, share: Share) -> None:
        self.share = share

    def via_thread(self) -> list[str]:
        outcome: list[str] = []

        def run() -> None:
            try:
                self.share.n += 1
                outcome.append("applied")
            except ShareError as error:
                outcome.append(f"ShareError: {error}")

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        return outcome


class Numbers:
    """Iterates with a generator (which cannot be pickled)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        yield from range(self.n)

    def evens(self) -> Iterator[int]:
        return (i for i in range(self.n) if i % 2 == 0)


class Fragile:
    """Pickles, but cannot be unpickled once ``flag`` exists (a restore that fails)."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_fragile, (self.flag,))


def _rebuild_fragile(flag: str) -> Fragile:
    if os.path.exists(flag):
        raise RuntimeError("this object cannot be rebuilt any more")
    return Fragile(flag)


# == 1. the in-place rule ====================================================================


def test_local_in_place_steps_are_assigned_whole(share: Share) -> None:
    share.total = 0
    t = share.total
    t += 1
    t += 2
    t += 3
    share.total = t
    assert share.total == 6  # the starting code applied only the last step: 3
    share.text = "a"
    s = share.text
    s += "b"
    s += "c"
    share.text = s
    assert share.text == "abc"
    share.pair = (1,)
    p = share.pair
    p += (2,)
    p += (3,)
    share.pair = p
    assert share.pair == (1, 2, 3)
    share.ratio = 1.0
    r = share.ratio
    r *= 4
    r /= 2
    share.ratio = r
    assert share.ratio == 2.0


def test_a_locally_changed_value_overwrites_a_concurrent_change_like_any_assignment(
    share: Share,
) -> None:
    # A local computation, then an assignment: the assignment wins, as it would for any
    # attribute. The old code replayed the last local step at the coordinator instead.
    share.total = 10
    t = share.total
    t += 5
    run_in_child(FORK, _add_to, share, "total", 100)  # another process writes meanwhile
    share.total = t
    assert share.total == 15


def _add_to(share: Share, name: str, amount: int) -> None:
    setattr(share, name, getattr(share, name) + amount)


def test_a_value_changed_in_place_elsewhere_is_assigned_whole(share: Share) -> None:
    class Box:
        pass

    share.total = 1
    box = Box()
    box.total = share.total  # type: ignore[attr-defined]
    box.total += 41  # type: ignore[attr-defined]  # the same statement shape, on another object
    assert share.total == 1
    share.total = 100  # someone else's write
    share.total = box.total  # type: ignore[attr-defined]
    assert share.total == 42  # assigned whole; not 100 + 41
    share.other = 0
    share.other += share.total  # += of another name's value
    assert share.other == 42
    x = share.total
    x += 1
    share.other = x  # a value read from `total`, assigned to `other`
    assert (share.total, share.other) == (42, 43)


def test_only_the_statement_share_name_op_equals_is_atomic(share: Share) -> None:
    share.counter = 0
    requests: list[int] = []
    link = share._sk
    real = link.request

    def counting(op: int, *args: Any, **options: Any) -> tuple[Any, ...]:
        requests.append(op)
        return real(op, *args, **options)

    from suitkaise.processing._share import _protocol as P

    link.request = counting  # type: ignore[method-assign]
    try:
        assert share.counter == 0  # read first: the reads below come from the cache
        requests.clear()
        share.counter += 1
        assert requests == [P.INPLACE]
        requests.clear()
        t = share.counter
        t += 1
        share.counter = t
        assert requests == [P.SET]

        class Deep:
            def __init__(self, s: Share) -> None:
                self.share = s

            def bump(self) -> None:
                self.share.counter += 1

        assert share.counter == 2
        requests.clear()
        Deep(share).bump()
        assert requests == [P.INPLACE]
    finally:
        del link.request
    assert share.counter == 3


def test_in_place_detection_on_every_interpreter() -> None:
    """The bytecode after an in-place operator differs between 3.10 and 3.11+: the rule
    holds on each interpreter installed here (3.10-3.13), not only on the one running."""
    script = (
        "import sys\n"
        "from suitkaise._compat import getframe, inplace_store\n"
        "seen = []\n"
        "class V(int):\n"
        "    def __iadd__(self, other):\n"
        "        seen.append(inplace_store(getframe(1)))\n"
        "        return V(int(self) + other)\n"
        "class O:\n"
        "    pass\n"
        "o = O(); o.total = V(0)\n"
        "def atomic(o):\n"
        "    o.total += 1\n"
        "def local(o):\n"
        "    t = o.total\n"
        "    t += 1\n"
        "    o.total = t\n"
        "def item(d):\n"
        "    d['total'] += 1\n"
        "atomic(o); local(o); item({'total': V(0)})\n"
        "ns = {'o': o}\n"
        "exec(compile(''.join(f'o.a{i} = 1\\n' for i in range(300)) + 'o.total += 1\\n',"
        " 's', 'exec'), ns)\n"
        "print([None if s is None else s[0] for s in seen])\n"
    )
    versions = []
    for version in ("3.10", "3.11", "3.12", "3.13"):
        candidates = sorted(Path("/root/.pyenv/versions").glob(f"{version}*/bin/python"))
        found = shutil.which(f"python{version}")
        python = str(candidates[-1]) if candidates else found
        if python is None:
            continue
        versions.append(version)
        out = subprocess.run(
            [python, "-c", script],
            env={**os.environ, "PYTHONPATH": str(SRC)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, (version, out.stderr)
        assert out.stdout.split() == ["['total',", "None,", "None,", "'total']"], version
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert running in versions


# == 2. interrupted calls ====================================================================


def test_a_call_interrupted_by_a_signal_handler_does_not_give_its_reply_to_the_next(
    share: Share,
) -> None:
    share.slow = Slow()
    share.slow.add(7)
    for exception in (TimeoutError, KeyboardInterrupt, RuntimeError):
        with pytest.raises(exception), alarm_raises(exception, 0.05):
            share.slow.nap(0.4)
        # The interrupted call's reply ("nap") comes later; nobody may receive it.
        assert share.slow.get() == 7
        time.sleep(0.5)  # the interrupted call is over at the coordinator now
        assert share.slow.get() == 7
        assert share.slow.add(1) == 8
        share.slow.add(-1)


def test_a_call_interrupted_in_the_middle_of_sending_is_dropped_whole(share: Share) -> None:
    share.slow = Slow()
    assert share.slow.calls == 0
    big = b"x" * (16 * 1024 * 1024)  # far more than a socket buffer holds
    # The coordinator is frozen, so the request stops part of the way through the send;
    # the alarm then interrupts it there (well before the frozen coordinator is noticed).
    with (
        frozen(coordinator_pid(share)),
        pytest.raises(KeyboardInterrupt),
        alarm_raises(KeyboardInterrupt, 0.3),
    ):
        share.slow.take(big)
    # The half-sent request was never applied, and the next call is answered, correctly.
    assert within(WAIT, share.slow.get, "the call after the interrupted one") == 0
    assert share.slow.calls == 1


class NapTwice(Skprocess):
    """Its first life times out (SIGALRM) while waiting for the Share; the second reads."""

    def __init__(self, share: Share) -> None:
        self.share = share
        self.process_config.runs = 1
        self.process_config.lives = 2
        self.process_config.timeouts.run = 0.2
        self.seen: list[Any] = []

    def __prerun__(self) -> None:
        if self.seen:  # the retry: wait (untimed) until the coordinator is free again
            time.sleep(0.6)

    def __run__(self) -> None:
        if not self.seen:
            self.seen.append("first life")
            self.share.slow.nap(0.6)  # interrupted by the section timeout
        else:
            self.seen.append(self.share.slow.get())
            self.seen.append(self.share.slow.add(1))

    def __result__(self) -> Any:
        return self.seen


def test_an_skprocess_section_timeout_in_a_share_call_leaves_the_share_usable(
    share: Share, start_method: str
) -> None:
    share.slow = Slow()
    share.slow.add(5)
    process = NapTwice(share)
    assert within(WAIT + 10.0, process.run, "the Skprocess") == ["first life", 5, 6]
    assert share.slow.get() == 6


def test_a_stale_reply_is_recognised_and_discarded() -> None:
    """A late reply on a connection (with an older request id) is never taken for the
    answer to the current request."""
    import socket as socket_module

    from suitkaise.processing._share import _protocol as P
    from suitkaise.processing._share._link import Link
    from suitkaise.processing._share._memory import GENERATION_WORD
    from suitkaise.processing._share._wire import Wire

    with Share() as share:
        link: Link = share._sk
        mine, theirs = socket_module.socketpair()
        fake = Wire(theirs)

        def coordinator() -> None:
            request_id, _ = fake.receive(time.perf_counter(), False)
            # first the late reply of an earlier call, then this call's own
            fake.send(request_id - 1, pickle.dumps((P.OK, "stale"), protocol=5))
            fake.send(request_id, pickle.dumps((P.OK, "fresh"), protocol=5))
            request_id, _ = fake.receive(time.perf_counter(), False)
            fake.send(request_id + 5, pickle.dumps((P.OK, "from the future"), protocol=5))

        thread = threading.Thread(target=coordinator, daemon=True)
        thread.start()
        wire = link.adopt(Wire(mine, idle=0.25), link.words[GENERATION_WORD])
        wire.next_id = 41
        assert link.request(P.PING) == (P.OK, "fresh")
        with pytest.raises(ShareError, match="answered request 48 while 43"):
            link.request(P.PING)
        thread.join(WAIT)
        fake.close()
        assert getattr(link.local, "wire", None) is None  # out of step: dropped
        share.n = 1  # a new connection, in step
        assert share.n == 1


def test_an_interrupted_stop_leaves_the_share_running_with_everything(share: Share) -> None:
    share.n = 5
    share.slow = Slow()
    napping = threading.Thread(target=share.slow.nap, args=(0.8,), daemon=True)
    napping.start()
    time.sleep(0.2)  # the nap holds the coordinator: stop() waits for it
    with pytest.raises(KeyboardInterrupt), alarm_raises(KeyboardInterrupt, 0.2):
        share.stop(timeout=5.0)
    napping.join(WAIT)
    assert within(WAIT, lambda: share.is_running, "is_running") is True
    assert within(WAIT, lambda: int(share.n), "a read") == 5
    assert share.slow.get() == 0
    assert share.stop() is True  # and a later stop() is clean, and keeps everything
    share.start()
    assert share.n == 5 and share.slow.calls >= 2


# == 3. a coordinator that uses its own Share; bounded waits ===================================


def test_a_proxy_inside_a_shared_value_works(share: Share) -> None:
    share.items = [1]
    within(5.0, lambda: setattr(share, "box", [share.items]), "share.box = [share.items]")
    within(5.0, lambda: share.box[0].append(2), "share.box[0].append(2)")
    assert list(share.items) == [1, 2]
    share.also = share.items  # another name for the same object
    share.also.append(3)
    assert list(share.items) == [1, 2, 3]
    share.holder = Holder(share.items)
    within(5.0, lambda: share.holder.append(4), "a method using a proxy it holds")
    assert list(share.items) == [1, 2, 3, 4]
    share.n = 1  # everyone else is still served
    assert run_in_child(FORK, _read_items, share) == [1, 2, 3, 4]


def _read_items(share: Share) -> list[Any]:
    return list(share.box[0])


def test_a_circuit_inside_a_shared_value_is_the_shared_circuit(share: Share) -> None:
    share.circuit = Circuit(3)
    share.holder = Holder(share.circuit)
    assert within(5.0, share.holder.short, "holder.short()") is False
    assert share.circuit.times_shorted == 1
    share.circuit.short()
    assert share.holder.short() is True  # the third short, counted at the coordinator
    assert share.circuit.total_trips == 1
    share.alias = share.circuit  # another name for the same circuit
    share.alias.short()
    assert share.circuit.times_shorted == 1


def _bump_n(share: Share, times: int) -> None:
    for _ in range(times):
        share.keeper.bump()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_method_that_uses_the_share_runs_atomically_at_the_coordinator(method: str) -> None:
    context = multiprocessing.get_context(method)
    with Share(context=context) as share:
        share.counter = 0
        share.log = []
        within(5.0, lambda: setattr(share, "keeper", Holder(share)), "storing the Share")
        assert within(5.0, share.keeper.bump, "a method using the Share") == 1
        workers = [FORK.Process(target=_bump_n, args=(share, 50)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT)
            assert worker.exitcode == 0
            worker.close()
        assert share.counter == 151
        # each bump appended the counter it made, atomically: no value twice, none missing
        assert sorted(share.log) == list(range(1, 152))


def test_a_method_that_uses_a_module_level_share_works_in_a_forked_coordinator(
    share: Share,
) -> None:
    global GLOBAL_SHARE
    GLOBAL_SHARE = share
    try:
        share.stop()
        share.start()  # forked now: the coordinator has the global, and its link, too
        share.counter = 0
        share.user = UsesTheGlobalShare()
        assert within(5.0, share.user.bump, "a method using a global Share") == 1
        assert within(5.0, share.user.bump, "again") == 2
        assert share.counter == 2
    finally:
        GLOBAL_SHARE = None


def test_shared_objects_that_hold_the_share_survive_a_restart(share: Share) -> None:
    share.counter = 0
    share.log = []
    share.items = [1]
    share.circuit = Circuit(2)
    share.keeper = Holder(share)
    share.box = [share.items]
    share.holder = Holder(share.circuit)
    assert within(5.0, share.stop, "stop()") is True
    share.start()
    assert within(5.0, share.keeper.bump, "a restored method using the Share") == 1
    within(5.0, lambda: share.box[0].append(2), "a restored proxy")
    assert list(share.items) == [1, 2]
    assert share.holder.short() is False
    assert share.circuit.short() is True


def test_a_deadlocked_coordinator_fails_calls_after_the_timeout(children: Children) -> None:
    share = Share(timeout=1.0)
    try:
        share.slow = Slow()
        share.n = 1
        hung = threading.Thread(target=lambda: _quietly(share.slow.hang), daemon=True)
        hung.start()
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(ShareError, match=r"did not answer .*within 1 s.*may or may not"):
            within(WAIT, share.slow.get, "a call to a deadlocked coordinator")
        assert 0.9 < time.monotonic() - started < 5.0
        hung.join(WAIT)
        assert not hung.is_alive()
        # Children too (the timeout travels with the Share).
        outcome = run_in_child(FORK, _call_outcome, share)
        assert outcome[0] == "ShareError" and 0.9 < outcome[1] < 5.0, outcome
        started = time.monotonic()
        assert share.stop(timeout=0.5) is False
        assert time.monotonic() - started < 3.0
    finally:
        share.stop(timeout=0.5)


def _quietly(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):
        fn()


def _call_outcome(share: Share) -> tuple[str, float]:
    started = time.monotonic()
    try:
        share.slow.get()
    except Exception as error:
        return type(error).__name__, time.monotonic() - started
    return "returned", time.monotonic() - started


def test_a_thread_of_a_shared_method_cannot_deadlock_the_coordinator_for_ever() -> None:
    share = Share(timeout=1.0)
    try:
        share.n = 0
        share.waiter = WaitsForAThread(share)
        # The thread's request gives up after the timeout, so the method returns; the call
        # itself either gets that result or has just given up too (the same time limit).
        try:
            outcome = within(WAIT, share.waiter.via_thread, "the call that deadlocks")
        except ShareError as error:
            assert "within 1 s" in str(error)
        else:
            assert len(outcome) == 1 and "busy" in outcome[0] and "not applied" in outcome[0]
        # And the coordinator serves again (it did not wait for ever).
        wait_for(lambda: _quietly_read(share) == 0, 10.0, "the coordinator to serve again")
        share.n += 1
        assert share.n == 1
    finally:
        share.stop(timeout=1.0)


def _quietly_read(share: Share) -> Any:
    try:
        return int(share.n)
    except ShareError:
        return None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (1e12, ValueError),
        ("5", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_an_absurd_timeout_is_refused_naming_it(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout"):
        Share(timeout=value)


@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (float("nan"), ValueError), (None, TypeError), ("1", TypeError)],
)
def test_an_absurd_stop_timeout_is_refused_and_the_share_keeps_running(
    share: Share, value: Any, error: type[Exception]
) -> None:
    share.n = 1
    with pytest.raises(error, match="timeout"):
        share.stop(timeout=value)
    assert share.is_running and share.n == 1


def test_an_absurd_context_or_name_is_refused_clearly(share: Share) -> None:
    with pytest.raises(TypeError, match=r"context must be a multiprocessing context.*'spawn'"):
        Share(context="spawn")  # type: ignore[arg-type]
    with pytest.raises(AttributeError, match="cannot be empty"):
        setattr(share, "", 1)
    with pytest.raises(AttributeError):
        getattr(share, "")
    share.n = 1
    assert share.n == 1


def test_a_timedelta_timeout_is_seconds() -> None:
    from datetime import timedelta

    with Share(timeout=timedelta(milliseconds=1500)) as share:
        assert share._sk.timeout == 1.5
        assert pickle.loads(pickle.dumps(share))._sk.timeout == 1.5


@pytest.mark.parametrize("where", ["owner", "child"])
def test_a_frozen_coordinator_fails_calls_within_about_two_seconds(where: str) -> None:
    share = Share(timeout=60.0)  # far longer: the heartbeat must be what notices
    try:
        share.slow = Slow()
        share.n = 1
        _ = share.n  # cached here
        with frozen(coordinator_pid(share)):
            if where == "owner":
                started = time.monotonic()
                with pytest.raises(ShareError, match=r"frozen.*may or may not"):
                    within(WAIT, share.slow.get, "a call to a frozen coordinator")
                assert time.monotonic() - started < 3.5
                started = time.monotonic()
                with pytest.raises(ShareError, match="frozen"):
                    within(WAIT, lambda: share.n, "a cached read")
                assert time.monotonic() - started < 1.0  # the heartbeat is stale already
            else:
                outcome = run_in_child(FORK, _call_outcome, share)
                assert outcome[0] == "ShareError" and outcome[1] < 3.5, outcome
        # Once it runs again, so does the Share.
        assert within(WAIT, share.slow.get, "a call after SIGCONT") == 0
        assert share.n == 1
    finally:
        share.stop(timeout=2.0)


def test_stop_of_a_frozen_coordinator_returns_false_without_waiting_its_timeout() -> None:
    share = Share()
    try:
        share.n = 1
        pid = coordinator_pid(share)
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        try:
            assert within(WAIT, lambda: share.stop(timeout=10.0), "stop()") is False
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        assert time.monotonic() - started < 5.0
        assert not share.is_running
        share.start()  # a fresh coordinator (what the frozen one held is lost)
        share.n = 2
        assert share.n == 2
    finally:
        share.stop(timeout=2.0)


def test_a_frozen_coordinator_is_noticed_by_a_spawned_child_and_a_new_connection() -> None:
    context = multiprocessing.get_context("spawn")
    share = Share(context=context, timeout=60.0)
    try:
        share.slow = Slow()
        with frozen(coordinator_pid(share)):
            outcome = run_in_child(context, _call_outcome, share)  # connects while frozen
            assert outcome[0] == "ShareError" and outcome[1] < 3.5, outcome
        assert run_in_child(context, _call_outcome, share)[0] == "returned"
    finally:
        share.stop(timeout=2.0)


def test_a_coordinator_killed_mid_call_fails_the_call_at_once(
    share: Share, tmp_path: Path
) -> None:
    share.slow = Slow()
    flag = tmp_path / "napping"
    outcome: list[Any] = []

    def call() -> None:
        try:
            share.slow.nap_flagged(str(flag), 30.0)
            outcome.append("returned")
        except ShareError as error:
            outcome.append(str(error))

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    wait_for(lambda: flag.exists() or bool(outcome), WAIT, "the call to start")
    os.kill(coordinator_pid(share), signal.SIGKILL)
    killed = time.monotonic()
    caller.join(WAIT)
    assert time.monotonic() - killed < 2.0
    assert len(outcome) == 1 and "died" in outcome[0] and "may or may not" in outcome[0]
    with pytest.raises(ShareError, match=r"died|stopped"):
        share.slow.get()
    assert share.stop(timeout=1.0) is False  # it had died


# == 4. stop() keeps what it can ==============================================================


def test_stop_keeps_everything_but_the_object_it_cannot_pickle(share: Share) -> None:
    share.n = 5
    share.items = [1, 2]
    share.circuit = Circuit(4)
    share.circuit.short()
    share.locked = Slow()
    share.locked.make_lock()  # a lock made at the coordinator: this object cannot be kept
    share.fine = Slow()
    share.fine.add(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert share.stop() is False
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "share.locked" in messages[0] and "lock" in messages[0]
    assert "share.fine" not in messages[0]
    share.start()
    assert share.n == 5
    assert list(share.items) == [1, 2]
    assert share.circuit.times_shorted == 1
    assert share.fine.get() == 3
    assert not hasattr(share, "locked")


def test_a_shared_object_that_cannot_be_restored_is_named_and_alone_lost(
    share: Share, tmp_path: Path
) -> None:
    flag = tmp_path / "broken"
    share.fragile = Fragile(str(flag))
    share.sturdy = Slow()
    share.sturdy.add(2)
    share.alias = share.sturdy
    assert share.stop() is True
    flag.touch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        share.start()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "share.fragile" in messages[0], messages
    assert share.sturdy.get() == 2
    share.alias.add(1)  # still one object under two names
    assert share.sturdy.get() == 3
    assert not hasattr(share, "fragile")


# == 5. nothing left behind in /dev/shm ========================================================


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_share_killed_with_its_coordinator_is_swept_by_the_next_share(method: str) -> None:
    from suitkaise.processing._share import _directory

    script = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "killed_together.py"), method],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    report: dict[str, Any] = {}
    try:
        line = within(WAIT, script.stdout.readline, "the script's report")  # type: ignore[union-attr]
        report = json.loads(line)
        directory = report["directory"]
        assert os.path.isdir(directory)
        # Frozen first, so that it cannot clean up when it sees its owner die; then both
        # killed, as the OOM killer would.
        os.kill(report["coordinator"], signal.SIGSTOP)
        os.kill(script.pid, signal.SIGKILL)
        os.kill(report["coordinator"], signal.SIGKILL)
        script.wait(WAIT)
        wait_for(lambda: _directory.process_state(report["coordinator"]) is None, WAIT, "death")
        time.sleep(0.5)
        assert os.path.isdir(directory), "removed by nobody: the test proves nothing"
        with Share(context=multiprocessing.get_context(method)) as share:
            share.n = 1
            wait_for(lambda: not os.path.exists(directory), 10.0, "the sweep")
            assert share.n == 1
            assert os.path.isdir(share._sk.directory)  # its own directory is not swept
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
        if script.stdout is not None:
            script.stdout.close()
        directory = report.get("directory")
        if directory and "suitkaise-share-" in directory:
            shutil.rmtree(directory, ignore_errors=True)


def test_the_sweep_removes_only_directories_whose_owner_and_coordinator_are_dead(
    tmp_path: Path,
) -> None:
    from suitkaise.processing._share import _directory

    pid, start = _directory.identity()
    dead = _dead_pid()

    def make(name: str, coordinator: tuple[int, int] | None = None) -> Path:
        path = tmp_path / name
        path.mkdir(mode=0o700)
        (path / "memory").write_bytes(b"x")
        if coordinator is not None:
            (path / "coordinator").write_text(f"{coordinator[0]} {coordinator[1]}\n")
        return path

    live = make(f"suitkaise-share-{pid}-{start}-live")
    stopped = make(f"suitkaise-share-{pid}-{start}-stopped", (dead, 1))
    orphan = make(f"suitkaise-share-{dead}-{start}-orphan", (dead, 1))
    reused = make(f"suitkaise-share-{pid}-{start + 1}-reused")  # our pid, not our start
    leaving = make(f"suitkaise-share-{dead}-1-leaving", (pid, start))  # coordinator alive
    unknown = make("suitkaise-share-abcdefgh")  # does not say who made it
    other = make(f"something-else-{dead}-1-x")
    removed = _directory.sweep(str(tmp_path))
    assert sorted(removed) == sorted([str(orphan), str(reused)])
    for kept in (live, stopped, leaving, unknown, other):
        assert kept.is_dir(), kept
    assert not orphan.exists() and not reused.exists()


def _dead_pid() -> int:
    process = FORK.Process(target=int)
    process.start()
    process.join()
    pid = process.pid
    process.close()
    assert pid is not None
    return pid


def test_the_directory_is_named_after_its_owner(share: Share) -> None:
    from suitkaise.processing._share import _directory

    name = os.path.basename(share._sk.directory)
    pid, start = _directory.identity()
    assert name.startswith(f"suitkaise-share-{pid}-{start}-")


# == 6. file descriptors ==========================================================================


def _use_a_share(share: Share) -> None:
    share.n = 1
    share.n += 1
    share.items = [1]
    share.items.append(2)
    share.circuit = Circuit(5)
    share.circuit.short()
    assert share.circuit.times_shorted == 1
    thread = threading.Thread(target=lambda: share.items.append(3))
    thread.start()
    thread.join()


def test_no_descriptor_stays_open_in_the_owner_once_the_share_is_gone() -> None:
    before = open_fds()
    for _ in range(3):
        share = Share()
        _use_a_share(share)
        circuit = share.circuit
        share.stop()
        del share
        gc.collect()
        circuit.short()  # a circuit kept longer keeps the memory, and only that
        del circuit
    gc.collect()
    assert open_fds() == before


def _fds_around_shares(receive: Any) -> tuple[int, int, int]:
    """In a child: descriptors before it gets two Shares, while it uses them, and after it
    has let go of them."""
    gc.collect()
    start = len(open_fds())
    shares = pickle.loads(receive.recv_bytes())
    for share in shares:
        _use_a_share(share)
    used = len(open_fds())
    del share, shares
    gc.collect()
    return start, used, len(open_fds())


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_no_descriptor_stays_open_in_a_child_once_it_drops_the_share(method: str) -> None:
    context = multiprocessing.get_context(method)
    with Share() as first, Share() as second:
        receive, send = context.Pipe(duplex=False)
        box: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: box.update(
                result=run_in_child(context, _fds_around_shares, receive)
            )
        )
        thread.start()
        send.send_bytes(pickle.dumps([first, second]))
        thread.join(WAIT + 15.0)
        send.close()
        receive.close()
    start, used, end = box["result"]
    assert used > start  # the child did open connections and mappings
    assert end == start, (start, used, end)


def test_a_forked_child_does_not_hold_its_parents_connections() -> None:
    def sockets() -> set[str]:
        return {target for target in open_fds().values() if target.startswith("socket:")}

    before = sockets()
    with Share() as share:
        share.n = 1  # this thread's connection is open
        mine = sorted(sockets() - before)
        assert mine
        inherited = run_in_child(FORK, _open_targets, mine)
    assert inherited == [], "a forked child kept its parent's Share connections open"


def _open_targets(candidates: list[str]) -> list[str]:
    return sorted(set(candidates) & set(open_fds().values()))


# == 7. names and proxies ==========================================================================


def test_names_starting_with_an_underscore_are_ordinary_names(share: Share) -> None:
    share._hidden = 1
    share.__private = [1]  # no mangling outside a class: the name is "__private"
    share._ = "underscore"
    assert share._hidden == 1
    assert list(getattr(share, "__private")) == [1]
    assert share._ == "underscore"
    share._hidden += 1
    assert share._hidden == 2
    assert {"_hidden", "__private", "_"} <= set(share._sk_names())
    assert run_in_child(FORK, _read_hidden, share) == 2
    del share._hidden
    assert not hasattr(share, "_hidden")


def _read_hidden(share: Share) -> int:
    return int(share._hidden)


@pytest.mark.parametrize("name", ["_sk", "_sk_link", "__dunder__", "__class__", "start"])
def test_the_shares_own_names_are_refused_with_a_clear_error(share: Share, name: str) -> None:
    with pytest.raises(AttributeError, match=rf"share\.{name}.*part of the Share itself"):
        setattr(share, name, 1)
    with pytest.raises(AttributeError, match="part of the Share itself"):
        delattr(share, name)
    assert name not in share._sk_names()
    share.n = 1
    assert share.n == 1 and share.is_running


def test_iteration_over_a_shared_object_is_over_a_snapshot(share: Share) -> None:
    share.numbers = Numbers(4)
    assert list(share.numbers) == [0, 1, 2, 3]
    assert [n * 2 for n in share.numbers] == [0, 2, 4, 6]
    share.d = {"a": 1, "b": 2}
    iterator = iter(share.d)
    share.d["c"] = 3  # after the snapshot: not in it
    assert list(iterator) == ["a", "b"]
    assert sorted(share.d) == ["a", "b", "c"]


class Registry(Mapping[str, int]):
    """A mapping whose views refer to it, and which holds a lock once armed: its views
    cannot be pickled."""

    def __init__(self, **entries: int) -> None:
        self.entries = entries
        self.guard: Any = None

    def arm(self) -> None:
        self.guard = threading.Lock()

    def __getitem__(self, key: str) -> int:
        return self.entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def test_mapping_views_come_back_as_views_of_a_snapshot(share: Share) -> None:
    share.reg = Registry(a=1, b=2)
    share.reg.arm()
    keys, values, items = share.reg.keys(), share.reg.values(), share.reg.items()
    assert list(keys) == ["a", "b"] and keys & {"b", "z"} == {"b"} and "a" in keys
    assert list(values) == [1, 2] and len(values) == 2
    assert list(items) == [("a", 1), ("b", 2)] and ("b", 2) in items
    share.d = {"a": 1, "b": 2}
    keys = share.d.keys()
    share.d["c"] = 3
    assert len(keys) == 2  # a snapshot
    assert run_in_child(FORK, _keys_in_child, share) == ["a", "b", "c"]
    del share.reg  # holds a lock: stop() could not keep it (and would say so)


def _keys_in_child(share: Share) -> list[str]:
    return sorted(share.d.keys())


def test_a_result_that_cannot_travel_is_a_clear_type_error(share: Share) -> None:
    share.numbers = Numbers(4)
    with pytest.raises(TypeError, match=r"share\.numbers\.evens\(\) gave a generator"):
        share.numbers.evens()
    assert list(share.numbers) == [0, 1, 2, 3]  # and the Share goes on


# == siblings: restarts, threads, forks =========================================================


def test_a_circuit_slot_is_never_reused_even_after_a_restart(share: Share) -> None:
    share.old = Circuit(10**6)
    kept = share.old
    del share.old
    share.stop()
    share.start()
    share.new = Circuit(10**6)
    kept.short()  # a handle on the deleted circuit must not write into the new one
    assert share.new.times_shorted == 0
    assert share.new._store._slot != kept._store._slot


def test_handles_from_before_a_restart_keep_working(share: Share) -> None:
    share.items = [1]
    share.n = 1
    share.circuit = Circuit(10**6)
    items, circuit = share.items, share.circuit
    other = threading.Event()
    go = threading.Event()
    results: list[Any] = []

    def thread_with_a_connection() -> None:
        results.append(int(share.n))
        other.set()
        go.wait(WAIT)
        results.append(list(share.items))

    thread = threading.Thread(target=thread_with_a_connection)
    thread.start()
    assert other.wait(WAIT)
    share.stop()
    share.start()
    items.append(2)
    circuit.short()
    go.set()
    thread.join(WAIT)
    assert results == [1, [1, 2]]
    assert share.circuit.times_shorted == 1


def test_start_and_stop_from_two_threads_at_once(share: Share) -> None:
    share.counter = 0
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)
    cycling = threading.Event()
    tally = {"returned": 0, "failed": 0}

    def cycle() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                share.stop()
                share.start()
        except BaseException as error:
            errors.append(error)

    def count() -> None:
        barrier.wait()
        while not cycling.is_set() or tally["returned"] < 50:
            try:
                share.counter += 1
                tally["returned"] += 1
            except ShareError:
                tally["failed"] += 1

    threads = [threading.Thread(target=cycle) for _ in range(2)]
    counter = threading.Thread(target=count)
    for thread in [*threads, counter]:
        thread.start()
    for thread in threads:
        thread.join(60.0)
    cycling.set()
    counter.join(60.0)
    assert not errors, errors
    share.start()
    assert share.is_running
    # Every increment that returned was kept through the restarts; one that failed may or
    # may not have been applied.
    assert tally["returned"] <= share.counter <= tally["returned"] + tally["failed"]
    # one coordinator: the last one started
    from process_tree import descendants

    from suitkaise.processing._share._coordinator import PROCESS_NAME

    def coordinators() -> set[int]:
        found = set()
        for pid in descendants():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == PROCESS_NAME:
                    found.add(pid)
        return found

    wait_for(lambda: coordinators() == {coordinator_pid(share)}, 5.0, "one coordinator")


def _add_many(share: Share, times: int) -> None:
    for _ in range(times):
        share.counter += 1
        share.items.append(1)


def test_one_share_used_from_several_threads_at_once_is_exact(share: Share) -> None:
    share.counter = 0
    share.items = []
    threads = [threading.Thread(target=_add_many, args=(share, 300)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert share.counter == 1200
    assert len(share.items) == 1200


def test_a_child_forked_while_a_parent_thread_waits_for_a_reply_gets_its_own(
    share: Share,
) -> None:
    share.slow = Slow()
    share.slow.add(9)
    napping = threading.Thread(target=share.slow.nap, args=(0.5,), daemon=True)
    napping.start()
    time.sleep(0.1)
    assert run_in_child(FORK, _get_slow, share) == 9
    napping.join(WAIT)
    assert share.slow.get() == 9


def _get_slow(share: Share) -> int:
    value: int = share.slow.get()
    return value


# == 32 processes ==============================================================================


def _hammer(share: Share, start: Any, shorts: int, increments: int) -> None:
    start.wait(WAIT)
    circuit = share.circuit
    for i in range(max(shorts, increments)):
        if i < shorts:
            circuit.short()
        if i < increments:
            share.counter += 1


def test_32_processes_on_one_circuit_and_one_counter_are_exact(share: Share) -> None:
    processes, shorts, increments = 32, 200, 40
    share.circuit = Circuit(7)
    share.counter = 0
    start = FORK.Barrier(processes)
    workers = [
        FORK.Process(target=_hammer, args=(share, start, shorts, increments))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(60.0)
            assert worker.exitcode == 0
    finally:
        for worker in workers:
            if worker.is_alive():
                os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]
                worker.join()
            worker.close()
    total = processes * shorts
    assert share.circuit.total_trips == total // 7
    assert share.circuit.times_shorted == total % 7
    assert share.counter == processes * increments


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_processes_of_every_start_method_on_one_circuit_and_counter(method: str) -> None:
    context = multiprocessing.get_context(method)
    with Share() as share:
        share.circuit = Circuit(7)
        share.counter = 0
        start = context.Barrier(3)
        workers = [context.Process(target=_hammer, args=(share, start, 70, 30)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60.0)
            assert worker.exitcode == 0
            worker.close()
        assert share.circuit.total_trips == 30
        assert share.circuit.times_shorted == 0
        assert share.counter == 90
