"""Share (SPEC section 2): lifecycle, what reads give back, consistency across processes, atomic
augmented assignment, circuits in a Share, passing a Share to children under every start method,
and the docs page's cross-process example run as written.

Processes are ordered with Events and pipes, never with sleeps. Children report through a pipe
(``Child``): an assertion or error in a child comes back to the test as its traceback. Every
process started here is joined, or killed by its own pid, before the test ends; the autouse
``no_leaked_processes`` fixture (conftest.py) checks that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from process_tree import descendants

from suitkaise import BreakingCircuit, Circuit
from suitkaise.circuits.testing import recorded_sleeps
from suitkaise.processing import Pool, Share, ShareError, Skprocess
from suitkaise.processing._share._coordinator import PROCESS_NAME
from suitkaise.processing._share._protocol import OP_NAMES

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).parent / "share_scripts"
DEADLINE = 30.0  # generous bound for anything that must not hang
FORK = multiprocessing.get_context("fork")  # the cheap way to get a child, where the method is moot


# -- helpers ---------------------------------------------------------------------------


def _child_entry(writer: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        outcome = ("ok", fn(*args))
    except BaseException:
        outcome = ("error", traceback.format_exc())
    writer.send(outcome)
    writer.close()


class Child:
    """``fn(*args)`` in a child process; ``result()`` returns its value or fails the test with
    the child's traceback."""

    def __init__(self, ctx: Any, fn: Callable[..., Any], *args: Any) -> None:
        self.reader, writer = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_child_entry, args=(writer, fn, args))
        self.process.start()
        writer.close()

    def result(self, timeout: float = DEADLINE) -> Any:
        if not self.reader.poll(timeout):
            raise AssertionError(f"child {self.process.pid} did not report within {timeout} s")
        kind, value = self.reader.recv()
        self.process.join(timeout)
        if kind == "error":
            raise AssertionError(f"child {self.process.pid} failed:\n{value}")
        return value

    def close(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.reader.close()


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    """Start children with ``children(ctx, fn, *args)``; all are killed (by pid) and joined
    at the end of the test."""
    started: list[Child] = []

    def start(ctx: Any, fn: Callable[..., Any], *args: Any) -> Child:
        child = Child(ctx, fn, *args)
        started.append(child)
        return child

    yield start
    for child in started:
        child.close()


@pytest.fixture
def share() -> Iterator[Share]:
    with Share() as created:
        yield created


def coordinators() -> set[int]:
    """Pids of this process's living coordinators: the descendants that ``ps`` shows as
    ``suitkaise-share`` (a coordinator names itself as soon as it runs)."""
    found = set()
    for pid in descendants():
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == PROCESS_NAME:
                    found.add(pid)
        except OSError:
            pass
    return found


def names(share: Share) -> list[str]:
    """The names a Share holds, as ``dir()`` reports them."""
    return sorted(n for n in set(dir(share)) - set(dir(Share)) if not n.startswith("_sk"))


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


def wait_event(event: Any) -> None:
    assert event.wait(DEADLINE), "event never set"


# -- objects stored in Shares (module level: importable by spawned children) -------------


class InsufficientFunds(Exception):
    pass


class OneWayError(Exception):
    """Pickles, but unpickling calls ``OneWayError(message)``, which needs two arguments."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")


class Thrower:
    def one_way(self) -> None:
        raise OneWayError(7, "no way back")


class Account:
    kind = "checking"

    def __init__(self, owner: str, balance: int) -> None:
        self.owner = owner
        self.balance = balance
        self.history: list[int] = []

    def deposit(self, amount: int) -> int:
        self.balance += amount
        self.history.append(amount)
        return self.balance

    def withdraw(self, amount: int) -> int:
        if amount > self.balance:
            raise InsufficientFunds(f"{self.owner} has only {self.balance}")
        self.balance -= amount
        self.history.append(-amount)
        return self.balance

    def describe(self) -> str:
        return f"{self.owner}: {self.balance}"


class ShareWorker(Skprocess):
    """Reads and writes the Share it was given as its constructor argument."""

    def __init__(self, share: Share, tag: str) -> None:
        self.share = share
        self.tag = tag
        self.seen: Any = None
        self.process_config.runs = 1

    def __run__(self) -> None:
        self.seen = (int(self.share.n), list(self.share.items))
        self.share.items.append(self.tag)
        self.share.counter += 1
        self.share.circuit.short()
        self.share.account.deposit(1)

    def __result__(self) -> Any:
        return self.seen


def visit(share: Share, tag: str) -> tuple[int, list[Any]]:
    """What every kind of child does with the Share it got: read, then write."""
    seen = (int(share.n), list(share.items))
    share.items.append(tag)
    share.counter += 1
    share.circuit.short()
    share.account.deposit(1)
    return seen


def visit_pickled(connection: Any, tag: str) -> tuple[int, list[Any]]:
    received = pickle.loads(connection.recv_bytes())
    assert isinstance(received, Share)
    return visit(received, tag)


def prepare(share: Share) -> None:
    share.n = 41
    share.items = ["parent"]
    share.counter = 0
    share.circuit = BreakingCircuit(2)
    share.account = Account("ann", 0)  # a class of this module: the coordinator imports it


def check_visits(share: Share, tags: list[str], seen: list[Any]) -> None:
    """``seen``: what each child read before writing (the parent's values, maybe with the
    items of children that wrote before it)."""
    for n, items in seen:
        assert n == 41 and items[0] == "parent" and set(items) <= {"parent", *tags}
    assert sorted(share.items) == sorted(["parent", *tags])
    assert share.counter == len(tags)
    assert share.circuit.times_shorted == len(tags)
    assert share.circuit.broken is (len(tags) >= 2)
    assert share.account.balance == len(tags)


# -- lifecycle ---------------------------------------------------------------------------


def test_share_starts_a_coordinator_and_stop_ends_it() -> None:
    before = coordinators()
    share = Share()
    try:
        assert share.is_running is True
        share.n = 1
        assert share.n == 1
        wait_until(lambda: len(coordinators() - before) == 1)
        (started,) = coordinators() - before
        share.start()  # already running: no second coordinator
        time.sleep(0.2)
        assert coordinators() - before == {started}
    finally:
        assert share.stop(timeout=5.0) is True
    assert share.is_running is False
    assert started not in descendants()
    with pytest.raises(ShareError):
        share.n = 2


def test_with_block_stops_on_exit_even_on_error() -> None:
    with Share() as share:
        assert share.is_running
        share.n = 1
    assert not share.is_running
    with pytest.raises(ShareError):
        _ = share.n

    with pytest.raises(KeyError), Share() as other:
        other.n = 1
        raise KeyError("boom")
    assert not other.is_running
    assert not coordinators()


def test_stop_returns_true_and_exit_is_an_alias() -> None:
    share = Share()
    assert share.stop(2.0) is True
    assert not share.is_running
    share.start()
    assert share.is_running
    assert share.exit() is True
    assert not share.is_running
    assert not coordinators()


def test_start_after_stop_keeps_values_objects_and_circuits() -> None:
    share = Share()
    try:
        share.n = 41
        share.text = "hello"
        share.items = [1, 2]
        share.items.append(3)
        share.account = Account("ann", 100)
        share.account.deposit(5)
        share.circuit = Circuit(3)
        share.circuit.short()
        share.breaker = BreakingCircuit(1)
        share.breaker.short()

        assert share.stop() is True
        share.start()

        assert share.is_running
        assert share.n == 41 and share.text == "hello"
        assert list(share.items) == [1, 2, 3]
        assert share.account.balance == 105
        assert share.account.history == [5]
        assert share.circuit.times_shorted == 1
        assert share.breaker.broken is True
        # ... and they keep working
        share.n += 1
        assert share.n == 42
        assert share.account.deposit(1) == 106
        share.circuit.short()
        assert share.circuit.short() is True
        assert share.circuit.total_trips == 1
        assert sorted(names(share)) == sorted(
            ["n", "text", "items", "account", "circuit", "breaker"]
        )
    finally:
        share.stop()


def _read_across_restart(share: Share, ready: Any, go: Any) -> list[Any]:
    first = int(share.n)
    ready.set()
    wait_event(go)
    return [first, int(share.n)]


def test_restart_is_seen_by_a_process_that_used_the_share_before(
    share: Share, children: Callable[..., Child]
) -> None:
    share.n = 1
    ready, go = FORK.Event(), FORK.Event()
    child = children(FORK, _read_across_restart, share, ready, go)
    wait_event(ready)
    share.stop()
    share.start()
    share.n = 2
    go.set()
    assert child.result() == [1, 2]


def test_restart_is_seen_by_a_thread_that_used_the_share_before(share: Share) -> None:
    share.n = 1
    ready, go = threading.Event(), threading.Event()
    results: list[Any] = []

    def reader() -> None:
        try:
            results.extend(_read_across_restart(share, ready, go))
        except BaseException as error:
            results.append(error)
            ready.set()

    thread = threading.Thread(target=reader)
    thread.start()
    wait_event(ready)
    share.stop()
    share.start()
    share.n = 2
    go.set()
    thread.join(DEADLINE)
    assert results == [1, 2]


def _hammer(share: Share, progress: Any, done: Any) -> tuple[int, int]:
    completed = failed = 0
    while not done.is_set():
        try:
            share.counter += 1
        except ShareError:
            failed += 1
        else:
            completed += 1
            progress.value = completed
    return completed, failed


def test_stop_drops_nothing_that_completed(share: Share, children: Callable[..., Child]) -> None:
    # A child increments as fast as it can while the Share is stopped and restarted three
    # times. Every increment that returned must be in the counter afterwards.
    share.counter = 0
    progress, done = FORK.Value("q", 0, lock=False), FORK.Event()
    child = children(FORK, _hammer, share, progress, done)
    for _ in range(3):
        mark = progress.value
        wait_until(lambda mark=mark: progress.value >= mark + 200)
        share.stop()
        share.start()
    mark = progress.value
    wait_until(lambda: progress.value >= mark + 200)
    done.set()
    completed, failed = child.result()
    assert completed > 0
    assert share.counter >= completed, (
        f"{completed - share.counter} increments returned to the child but were lost by "
        f"stop()/start() ({failed} calls failed with ShareError while stopped)"
    )


def test_clear_removes_every_name(share: Share) -> None:
    share.n = 1
    share.items = [1]
    share.circuit = Circuit(2)
    share.clear()
    for name in ("n", "items", "circuit"):
        with pytest.raises(AttributeError):
            getattr(share, name)
    assert names(share) == []
    share.n = 5  # still usable
    assert share.n == 5


def test_del_removes_a_name_and_a_missing_name_raises(share: Share) -> None:
    share.n = 1
    share.items = [1]
    share.circuit = BreakingCircuit(1)
    _ = share.n, share.items, share.circuit  # cached by this process: must not survive del
    del share.n
    del share.items
    del share.circuit
    for name in ("n", "items", "circuit"):
        with pytest.raises(AttributeError):
            getattr(share, name)
        with pytest.raises(AttributeError):
            delattr(share, name)
    with pytest.raises(AttributeError):
        del share.never_set


def test_repr_lists_the_names(share: Share) -> None:
    share.alpha = 1
    share.beta = [2]
    share.gamma = Circuit(3)
    text = repr(share)
    for name in ("alpha", "beta", "gamma"):
        assert repr(name) in text
    del share.beta
    assert repr("beta") not in repr(share)
    assert repr("alpha") in repr(share)


def test_reading_a_missing_name_raises_attribute_error(share: Share) -> None:
    with pytest.raises(AttributeError, match="nothing_here"):
        _ = share.nothing_here
    assert getattr(share, "nothing_here", "default") == "default"
    assert not hasattr(share, "nothing_here")


@pytest.mark.parametrize("name", ["stop", "start", "exit", "clear", "is_running"])
def test_assigning_a_share_method_name_raises(share: Share, name: str) -> None:
    with pytest.raises((AttributeError, TypeError)):
        setattr(share, name, 1)
    assert name not in names(share)
    assert callable(share.stop) and share.is_running  # the Share itself is intact


# -- contents --------------------------------------------------------------------------


IMMUTABLES = [
    pytest.param(41, id="int"),
    pytest.param(-2.5, id="float"),
    pytest.param("text ✓", id="str"),
    pytest.param((1, "a", (2.0, None)), id="tuple"),
    pytest.param(None, id="None"),
    pytest.param(True, id="True"),
    pytest.param(False, id="False"),
    pytest.param(b"\x00bytes", id="bytes"),
    pytest.param(frozenset({1, 2}), id="frozenset"),
]


@pytest.mark.parametrize("value", IMMUTABLES)
def test_an_immutable_value_reads_back_equal(share: Share, value: Any) -> None:
    share.v = value
    read = share.v
    assert read == value
    assert isinstance(read, type(value))
    if value is None or isinstance(value, bool):
        assert read is value
    assert pickle.loads(pickle.dumps(read)) == value
    assert type(pickle.loads(pickle.dumps(read))) is type(value)


def test_a_number_compares_hashes_formats_and_computes_like_the_value(share: Share) -> None:
    share.n = 41
    assert share.n == 41
    assert share.n + 1 == 42
    assert 1 + share.n == 42
    assert share.n * 2 == 82
    assert share.n < 42
    assert int(share.n) == 41 and type(int(share.n)) is int
    assert float(share.n) == 41.0
    assert f"{share.n}" == "41"
    assert f"{share.n:>5}" == "   41"
    assert str(share.n) == "41" and repr(share.n) == "41"
    assert hash(share.n) == hash(41)
    assert {41: "found"}[share.n] == "found"
    assert share.n in {41}
    assert [10, 20, 30][share.n - 40] == 20  # usable as an index
    plain = pickle.loads(pickle.dumps(share.n))
    assert plain == 41 and type(plain) is int

    share.f = 2.5
    assert share.f * 2 == 5.0 and f"{share.f:.2f}" == "2.50" and round(share.f) == 2
    share.s = "abc"
    assert share.s.upper() == "ABC" and share.s + "d" == "abcd" and len(share.s) == 3
    assert type(pickle.loads(pickle.dumps(share.s))) is str


def test_a_value_read_from_the_share_is_a_value_not_a_handle(share: Share) -> None:
    # `x = share.n; x += 1` is a local computation, as it is for any int: the Share only
    # changes when the result is assigned back to it.
    share.n = 41
    local = share.n
    local += 1
    assert local == 42
    assert share.n == 41

    def add_ten(start: int) -> int:
        start += 10
        return start

    assert add_ten(share.n) == 51
    assert share.n == 41

    share.t = (1,)
    mine = share.t
    mine += (2,)
    assert mine == (1, 2)
    assert share.t == (1,)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: (x for x in range(3)), id="generator"),
        pytest.param(threading.Lock, id="lock"),
        pytest.param(lambda: open(os.devnull, "w"), id="file-for-writing"),  # noqa: SIM115
    ],
)
def test_an_unpicklable_object_is_refused_with_type_error_naming_it(
    share: Share, make: Callable[[], Any]
) -> None:
    obj = make()
    try:
        with pytest.raises(TypeError, match="share_me"):
            share.share_me = obj
    finally:
        if hasattr(obj, "close"):
            obj.close()
    with pytest.raises(AttributeError):
        _ = share.share_me
    assert "share_me" not in names(share)


def test_a_list_reads_as_a_proxy_to_the_one_shared_copy(share: Share) -> None:
    original = [3, 1, 2]
    share.items = original
    items = share.items
    assert len(items) == 3
    assert items[0] == 3 and items[-1] == 2 and items[0:2] == [3, 1]
    assert 2 in items and 9 not in items
    assert list(items) == [3, 1, 2]
    assert [x * 10 for x in items] == [30, 10, 20]
    assert items == [3, 1, 2] and items != [3, 1]
    assert items.append(4) is None
    items.sort()
    assert share.items.index(3) == 2
    assert share.items.pop() == 4
    share.items[0] = 100
    del share.items[1]
    assert list(share.items) == [100, 3]
    assert len(share.items) == 2
    assert original == [3, 1, 2]  # the Share holds its own copy
    with pytest.raises(IndexError):
        share.items[10]
    with pytest.raises(ValueError):
        share.items.remove("absent")


def test_a_dict_reads_as_a_proxy(share: Share) -> None:
    share.d = {"a": 1}
    share.d["b"] = 2
    share.d.update(c=3)
    assert share.d["a"] == 1 and share.d.get("z", 0) == 0
    assert "b" in share.d and "z" not in share.d
    assert len(share.d) == 3
    assert sorted(share.d) == ["a", "b", "c"]
    assert share.d.setdefault("a", 99) == 1
    assert share.d == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(KeyError):
        share.d["missing"]


def test_an_exception_that_cannot_travel_back_arrives_as_a_runtime_error(share: Share) -> None:
    share.thrower = Thrower()
    with pytest.raises(RuntimeError, match=r"OneWayError: 7: no way back .*could not be sent"):
        share.thrower.one_way()
    share.n = 1  # the connection is still in step, and the coordinator still serves
    assert share.n == 1


def test_a_user_object_runs_its_methods_on_the_shared_copy(share: Share) -> None:
    local = Account("ann", 100)
    share.account = local
    assert share.account.deposit(10) == 110
    assert share.account.withdraw(30) == 80
    assert share.account.describe() == "ann: 80"
    assert local.balance == 100 and local.history == []  # the shared copy is another object

    balance = share.account.balance  # an attribute holding a plain value is the value
    assert balance == 80 and type(balance) is int
    assert share.account.owner == "ann" and type(share.account.owner) is str
    assert share.account.kind == "checking"
    assert share.account.history == [10, -30]

    share.account.owner = "bob"  # setting an attribute through the proxy
    assert share.account.owner == "bob"
    assert share.account.describe() == "bob: 80"

    with pytest.raises(InsufficientFunds, match="bob has only 80"):
        share.account.withdraw(1000)
    with pytest.raises(TypeError):
        share.account.deposit("not a number")
    with pytest.raises(AttributeError):
        _ = share.account.no_such_attribute
    assert share.account.balance == 80  # failed calls changed nothing


def test_a_class_defined_in_a_test_works_in_a_share(share: Share) -> None:
    class Tally:
        def __init__(self) -> None:
            self.marks: list[str] = []

        def mark(self, who: str) -> int:
            self.marks.append(who)
            return len(self.marks)

        def boom(self) -> None:
            raise LookupError("nothing to find")

        def __len__(self) -> int:
            return len(self.marks)

        def __iter__(self) -> Iterator[str]:
            return iter(self.marks)

        def __contains__(self, who: object) -> bool:
            return who in self.marks

        def __getitem__(self, index: int) -> str:
            return self.marks[index]

    share.tally = Tally()
    assert share.tally.mark("a") == 1
    assert share.tally.mark("b") == 2
    assert len(share.tally) == 2
    assert share.tally[1] == "b"
    assert "a" in share.tally and "z" not in share.tally
    assert list(share.tally) == ["a", "b"]
    assert share.tally.marks == ["a", "b"]
    with pytest.raises(LookupError, match="nothing to find"):
        share.tally.boom()


# -- consistency across processes ------------------------------------------------------


def _write_then_read(share: Share, wrote: Any, go: Any) -> list[Any]:
    seen = [int(share.n)]
    share.n = 2
    share.items.append("child")
    share.account.deposit(7)
    wrote.set()
    wait_event(go)
    seen.append(int(share.n))
    seen.append(list(share.items))
    seen.append(share.account.balance)
    return seen


def test_a_write_is_seen_by_a_later_read_in_another_process(
    share: Share, children: Callable[..., Child]
) -> None:
    share.n = 1
    share.items = []
    share.account = Account("ann", 0)
    wrote, go = FORK.Event(), FORK.Event()
    child = children(FORK, _write_then_read, share, wrote, go)
    wait_event(wrote)
    assert share.n == 2
    assert list(share.items) == ["child"]
    assert share.account.balance == 7
    share.n = 3
    share.items.append("parent")
    share.account.deposit(1)
    go.set()
    assert child.result() == [1, 3, ["child", "parent"], 8]


def _read_before_and_after(share: Share, read: Any, go: Any) -> dict[str, Any]:
    before = {
        "value": share.value,
        "obj": list(share.obj),
        "circuit": (type(share.circuit).__name__, share.circuit.num_shorts_to_trip),
    }
    read.set()
    wait_event(go)
    after = {
        "value": share.value,
        "obj": dict(share.obj.items()),
        "circuit": (type(share.circuit).__name__, share.circuit.num_shorts_to_trip),
        "was_circuit": int(share.was_circuit),
    }
    return {"before": before, "after": after}


def test_reassigning_a_name_replaces_it_for_every_process(
    share: Share, children: Callable[..., Child]
) -> None:
    share.value = 1
    share.obj = [1, 2]
    share.circuit = Circuit(5)
    share.was_circuit = BreakingCircuit(1)
    read, go = FORK.Event(), FORK.Event()
    child = children(FORK, _read_before_and_after, share, read, go)
    wait_event(read)
    share.value = "replaced"
    share.obj = {"new": True}
    share.circuit = BreakingCircuit(9)
    share.was_circuit = 12
    go.set()
    assert child.result() == {
        "before": {"value": 1, "obj": [1, 2], "circuit": ("Circuit", 5)},
        "after": {
            "value": "replaced",
            "obj": {"new": True},
            "circuit": ("BreakingCircuit", 9),
            "was_circuit": 12,
        },
    }
    assert share.value == "replaced" and share.was_circuit == 12


# -- atomic augmented assignment -------------------------------------------------------


def _increment(share: Share, times: int, start: Any) -> None:
    start.wait(DEADLINE)
    for _ in range(times):
        share.counter += 1


def _extend(share: Share, worker: int, times: int, start: Any) -> None:
    start.wait(DEADLINE)
    for i in range(times):
        share.items += [worker * 1000 + i]


def _other_operators(share: Share, times: int, start: Any) -> None:
    start.wait(DEADLINE)
    for _ in range(times):
        share.down -= 1
        share.doubled *= 2
        share.halves *= 0.5
        share.text += "x"


def test_counter_plus_equals_from_8_processes_is_exact(
    share: Share, children: Callable[..., Child]
) -> None:
    share.counter = 0
    start = FORK.Barrier(8)
    workers = [children(FORK, _increment, share, 1000, start) for _ in range(8)]
    for worker in workers:
        worker.result()
    assert share.counter == 8000


def test_list_plus_equals_from_8_processes_keeps_every_item(
    share: Share, children: Callable[..., Child]
) -> None:
    share.items = []
    start = FORK.Barrier(8)
    workers = [children(FORK, _extend, share, k, 100, start) for k in range(8)]
    for worker in workers:
        worker.result()
    items = list(share.items)
    assert len(items) == 800
    assert sorted(items) == sorted(k * 1000 + i for k in range(8) for i in range(100))
    for k in range(8):  # each worker's items in its own order
        mine = [x for x in items if x // 1000 == k]
        assert mine == sorted(mine)


def test_minus_and_times_equals_from_4_processes_are_exact(
    share: Share, children: Callable[..., Child]
) -> None:
    share.down = 1000
    share.doubled = 1
    share.halves = 1.0
    share.text = ""
    start = FORK.Barrier(4)
    workers = [children(FORK, _other_operators, share, 5, start) for _ in range(4)]
    for worker in workers:
        worker.result()
    assert share.down == 980
    assert share.doubled == 2**20
    assert share.halves == 0.5**20
    assert share.text == "x" * 20


def test_augmented_assignment_in_process(share: Share) -> None:
    share.n = 10
    share.n -= 3
    share.n *= 4
    share.n //= 3
    share.n **= 2
    share.n %= 50
    assert share.n == 31 and type(int(share.n)) is int
    share.t = (1,)
    share.t += (2, 3)
    assert share.t == (1, 2, 3)
    share.items = [1]
    share.items += [2]
    share.items *= 2
    assert share.items == [1, 2, 1, 2]
    share.flags = {1}
    share.flags |= {2}
    assert share.flags == {1, 2}


def _add(share: Share, name: str, amount: Any) -> None:
    value = getattr(share, name)
    setattr(share, name, value + amount)  # a plain (non-atomic) write: a new value


def test_after_n_plus_equals_the_next_read_needs_no_round_trip_unless_someone_else_wrote(
    share: Share, children: Callable[..., Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    share.n = 0
    share.other = "x"
    link = share._sk
    requests: list[str] = []
    real_request = link.request

    def counting(*request: Any, **options: Any) -> tuple[Any, ...]:
        requests.append(OP_NAMES[request[0]])
        return real_request(*request, **options)

    monkeypatch.setattr(link, "request", counting)
    assert share.n == 0 and share.other == "x"
    requests.clear()
    for _ in range(5):
        share.n += 1
    # One request each: the value `+=` read came from the cache the previous one updated.
    assert requests == ["inplace"] * 5
    assert share.n == 5 and share.other == "x"
    assert requests == ["inplace"] * 5
    # Another process writes in between: the cache is not kept, and the read sees its write.
    share.n += 1
    children(FORK, _add, share, "n", 10).result()
    requests.clear()
    assert share.n == 16 and share.other == "x"
    assert requests == ["get", "get"]
    share.n += 1  # the cache was current again before this one: kept
    requests.clear()
    assert share.n == 17 and share.other == "x"
    assert requests == []
    # ... but not when someone else's write came between the read and the update (even a
    # write to another name): the cache may be stale in ways this reply cannot tell.
    value = share.n
    value += 1  # `share.n += 1`, with another process's write in the middle
    children(FORK, _add, share, "other", "y").result()
    share.n = value
    requests.clear()
    assert share.n == 18 and share.other == "xy"
    assert requests == ["get", "get"]


# -- circuits in a Share ---------------------------------------------------------------


def test_both_circuit_classes_live_in_a_share_with_their_configuration(share: Share) -> None:
    local = Circuit(
        5, sleep_time_after_trip=0.5, backoff_factor=2.0, max_sleep_time=3.0, jitter=0.1
    )
    local.short()
    local.short()
    share.circuit = local
    share.breaker = BreakingCircuit(3, sleep_time_after_trip=0.25)
    circuit, breaker = share.circuit, share.breaker
    assert type(circuit) is Circuit and type(breaker) is BreakingCircuit
    assert circuit.num_shorts_to_trip == 5
    assert circuit.sleep_time_after_trip == 0.5
    assert circuit.backoff_factor == 2.0
    assert circuit.max_sleep_time == 3.0
    assert circuit.jitter == 0.1
    assert circuit.times_shorted == 2  # the state it had when assigned
    assert circuit.total_trips == 0
    assert circuit.current_sleep_time == 0.5
    assert breaker.num_shorts_to_trip == 3 and breaker.sleep_time_after_trip == 0.25
    assert breaker.broken is False and type(breaker.broken) is bool
    assert type(share.circuit.times_shorted) is int
    local.short()  # the local circuit is not the shared one
    assert share.circuit.times_shorted == 2
    assert "Circuit" in repr(circuit) and "times_shorted=2" in repr(circuit)


def _short_after(share: Share, go: Any, shorted: Any) -> list[Any]:
    wait_event(go)
    before = share.circuit.broken
    returned = share.circuit.short()
    shorted.set()
    return [before, returned]


def test_three_shorts_from_a_mix_of_processes_break_the_circuit_for_all(
    share: Share, children: Callable[..., Child]
) -> None:
    share.circuit = BreakingCircuit(3)
    go_a, go_b, done_a, done_b = FORK.Event(), FORK.Event(), FORK.Event(), FORK.Event()
    a = children(FORK, _short_after, share, go_a, done_a)
    b = children(FORK, _short_after, share, go_b, done_b)
    assert share.circuit.short() is None
    go_a.set()
    wait_event(done_a)
    assert share.circuit.broken is False and share.circuit.times_shorted == 2
    go_b.set()
    wait_event(done_b)
    assert a.result() == [False, None]
    assert b.result() == [False, None]
    assert share.circuit.broken is True
    assert share.circuit.total_trips == 1
    assert share.circuit.times_shorted == 3


def _watch_broken(share: Share, ready: Any) -> bool:
    circuit = share.circuit
    ready.set()
    deadline = time.monotonic() + DEADLINE
    while not circuit.broken:
        if time.monotonic() > deadline:
            return False
    return bool(share.circuit.broken)


def test_a_break_is_seen_by_a_process_watching_the_circuit(
    share: Share, children: Callable[..., Child]
) -> None:
    share.circuit = BreakingCircuit(1)
    ready = FORK.Event()
    watcher = children(FORK, _watch_broken, share, ready)
    wait_event(ready)
    share.circuit.short()
    assert watcher.result() is True


def _short_many(share: Share, times: int, start: Any) -> int:
    circuit = share.circuit
    start.wait(DEADLINE)  # all together, so that they contend
    return sum(1 for _ in range(times) if circuit.short())


def test_circuit_shorted_700_times_by_4_processes_trips_exactly_100_times(
    share: Share, children: Callable[..., Child]
) -> None:
    share.circuit = Circuit(7)
    start = FORK.Barrier(4)
    workers = [children(FORK, _short_many, share, 175, start) for _ in range(4)]
    trips = [worker.result() for worker in workers]
    assert sum(trips) == 100
    assert share.circuit.total_trips == 100
    assert share.circuit.times_shorted == 0


@pytest.mark.parametrize("kind", [Circuit, BreakingCircuit])
def test_return_values_and_state_match_a_local_circuit(share: Share, kind: type) -> None:
    config = {"sleep_time_after_trip": 1.0, "backoff_factor": 2.0, "max_sleep_time": 5.0}
    local = kind(3, **config)
    share.circuit = kind(3, **config)
    shared = share.circuit
    steps: list[Callable[[Any], Any]] = [lambda c: c.short()] * 7 + [
        lambda c: c.trip(),
        lambda c: c.short(),
        lambda c: c.reset_backoff(),
        lambda c: c.short(custom_sleep=0.5),
        lambda c: c.trip(custom_sleep=0.25),
    ]
    if kind is BreakingCircuit:
        steps += [lambda c: c.reset(), lambda c: c.reset(), lambda c: c.short()]

    def state(c: Any) -> tuple[Any, ...]:
        return (c.times_shorted, c.total_trips, c.current_sleep_time, getattr(c, "broken", None))

    with recorded_sleeps() as sleeps:
        for step in steps:
            expected = step(local)
            local_sleeps = sleeps.durations
            sleeps.clear()
            assert step(shared) == expected
            assert sleeps.durations == local_sleeps
            sleeps.clear()
            assert state(shared) == state(local)


def _trip_and_time(share: Share) -> tuple[Any, float]:
    circuit = share.circuit
    start = time.monotonic()
    returned = circuit.short()
    return returned, time.monotonic() - start


@pytest.mark.parametrize("kind", [Circuit, BreakingCircuit])
def test_only_the_tripping_process_sleeps(
    share: Share, children: Callable[..., Child], kind: type
) -> None:
    share.circuit = kind(2, sleep_time_after_trip=0.3)
    circuit = share.circuit
    circuit.short()  # the child's short will be the second: it trips
    child = children(FORK, _trip_and_time, share)
    wait_until(lambda: circuit.total_trips == 1)
    # The child is now sleeping. This process is not blocked: it reads and shorts at once.
    start = time.monotonic()
    assert circuit.times_shorted == (0 if kind is Circuit else 2)
    assert circuit.short() in (False, None)
    assert circuit.total_trips == 1
    elapsed = time.monotonic() - start
    child_still_sleeping = child.process.is_alive() and not child.reader.poll(0)
    returned, slept = child.result()
    assert elapsed < 0.1
    assert child_still_sleeping
    assert returned is (True if kind is Circuit else None)
    assert slept >= 0.3


def _async_shorts(share: Share) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        short = share.circuit.short.asynced()
        results = [await short(), await short()]
        ticks_before_trip = ticks
        results.append(await short())  # trips: sleeps 0.2 s without blocking the loop
        ticks_during_trip = ticks - ticks_before_trip
        tripped = await share.circuit.trip.asynced()(custom_sleep=0)
        stop.set()
        await task
        return {"results": results, "trip": tripped, "ticks": ticks_during_trip}

    return asyncio.run(main())


def test_asynced_works_through_the_share_in_a_child(
    share: Share, children: Callable[..., Child]
) -> None:
    share.circuit = Circuit(3, sleep_time_after_trip=0.2)
    outcome = children(FORK, _async_shorts, share).result()
    assert outcome["results"] == [False, False, True]
    assert outcome["trip"] is True
    assert outcome["ticks"] >= 5  # the event loop kept running during the 0.2 s sleep
    assert share.circuit.total_trips == 2
    assert share.circuit.times_shorted == 0


def _operate(share: Share, todo: Any, done: Any) -> None:
    while True:
        operation = todo.recv()
        if operation is None:
            return
        if operation == "reset":
            share.breaker.reset()
        elif operation == "reset_backoff":
            share.breaker.reset_backoff()
        elif operation == "trip":
            share.circuit.trip(custom_sleep=0)
        done.send(operation)


def test_reset_reset_backoff_and_trip_from_another_process(
    share: Share, children: Callable[..., Child]
) -> None:
    share.breaker = BreakingCircuit(1, sleep_time_after_trip=1.0, backoff_factor=2.0)
    share.circuit = Circuit(10, sleep_time_after_trip=1.0)
    todo_parent, todo_child = FORK.Pipe()
    done_parent, done_child = FORK.Pipe()
    child = children(FORK, _operate, share, todo_child, done_child)

    def ask(operation: str) -> None:
        todo_parent.send(operation)
        assert done_parent.poll(DEADLINE)
        assert done_parent.recv() == operation

    breaker = share.breaker
    with recorded_sleeps() as sleeps:
        breaker.short()
        assert breaker.broken and sleeps.durations == [1.0]
        ask("reset")
        assert breaker.broken is False and breaker.times_shorted == 0
        assert breaker.current_sleep_time == 2.0  # the reset ended a break: backoff advanced
        breaker.trip()
        assert sleeps.durations == [1.0, 2.0]
        ask("reset_backoff")
        assert breaker.current_sleep_time == 1.0
        assert breaker.broken is True and breaker.total_trips == 2  # untouched
        share.circuit.short()
        ask("trip")
        assert share.circuit.total_trips == 1 and share.circuit.times_shorted == 0
    todo_parent.send(None)
    child.result()


# -- passing a Share on ----------------------------------------------------------------


def test_share_as_skprocess_argument(start_method: str) -> None:
    with Share() as share:
        prepare(share)
        workers = [ShareWorker(share, f"w{i}") for i in range(2)]
        for worker in workers:
            worker.start()
        try:
            seen = [worker.result() for worker in workers]
        finally:
            for worker in workers:
                with contextlib.suppress(Exception):
                    if worker.is_alive:
                        worker.kill()
        check_visits(share, ["w0", "w1"], seen)


def test_share_as_pool_map_item(start_method: str) -> None:
    with Share() as share:
        prepare(share)
        with Pool(workers=2) as pool:
            seen = pool.map(lambda s: visit(s, f"p{os.getpid()}"), [share, share])
        assert len(seen) == 2
        assert share.counter == 2
        assert len(share.items) == 3 and share.items[0] == "parent"
        assert share.circuit.broken is True
        assert share.account.balance == 2
        assert all(s[0] == 41 and s[1][0] == "parent" for s in seen)


def test_share_as_process_argument(start_method: str, children: Callable[..., Child]) -> None:
    ctx = multiprocessing.get_context(start_method)
    with Share() as share:
        prepare(share)
        seen = [children(ctx, visit, share, "c0").result()]
        check_visits(share, ["c0"], seen)


def test_share_pickled_and_sent_through_a_pipe(
    start_method: str, children: Callable[..., Child]
) -> None:
    ctx = multiprocessing.get_context(start_method)
    with Share() as share:
        prepare(share)
        mine, theirs = ctx.Pipe()
        child = children(ctx, visit_pickled, theirs, "piped")
        mine.send_bytes(pickle.dumps(share))
        check_visits(share, ["piped"], [child.result()])


def _describe(share: Share) -> dict[str, Any]:
    return {"is_running": share.is_running, "repr": repr(share), "n": int(share.n)}


def test_is_running_and_repr_work_in_a_child(
    start_method: str, children: Callable[..., Child]
) -> None:
    ctx = multiprocessing.get_context(start_method)
    with Share() as share:
        share.n = 1
        seen = children(ctx, _describe, share).result()
    assert seen["is_running"] is True
    assert "'n'" in seen["repr"]
    assert seen["n"] == 1


def test_share_pickled_in_the_same_process_is_the_same_share(share: Share) -> None:
    prepare(share)
    copy = pickle.loads(pickle.dumps(share))
    assert isinstance(copy, Share)
    assert copy.n == 41
    copy.n = 7
    copy.items.append("copy")
    copy.circuit.short()
    assert share.n == 7
    assert list(share.items) == ["parent", "copy"]
    assert share.circuit.times_shorted == 1
    proxy = pickle.loads(pickle.dumps(share.items))  # a proxy travels as a handle too
    proxy.append("again")
    assert share.items[-1] == "again"
    circuit = pickle.loads(pickle.dumps(share.circuit))  # so does a shared circuit
    circuit.short()
    assert share.circuit.broken is True


def test_a_pickled_copy_keeps_working_when_the_original_is_dropped() -> None:
    original = Share()
    original.n = 5
    copy = pickle.loads(pickle.dumps(original))
    del original
    gc.collect()
    try:
        assert copy.is_running
        assert copy.n == 5
        copy.n += 1
        assert copy.n == 6
    finally:
        with contextlib.suppress(Exception):
            copy.stop()


# -- the docs page's example -----------------------------------------------------------


def test_page_example_runs_as_written(start_method: str) -> None:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "page_example.py"), start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["results"] == [None] * 8
    assert report["broken"] is True
    assert report["total_trips"] == 1
    assert report["times_shorted"] >= 3
    assert report["start_method"] == start_method


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_the_coordinator_starts_stops_and_restarts_under_every_start_method(
    method: str, children: Callable[..., Child]
) -> None:
    context = multiprocessing.get_context(method)
    share = Share(context=context)
    try:
        prepare(share)
        seen = [children(context, visit, share, "c0").result()]
        first = share._sk.running.process.pid  # type: ignore[union-attr]
        wait_until(lambda: first in coordinators())
        assert share.stop() is True
        assert first not in descendants()
        share.start()
        second = share._sk.running.process.pid  # type: ignore[union-attr]
        assert second != first
        check_visits(share, ["c0"], seen)  # kept across the restart
        wait_until(lambda: second in coordinators())
    finally:
        share.stop()
    assert not coordinators()
