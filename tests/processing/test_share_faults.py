"""Share: security and faults.

- Only processes given the Share can reach its coordinator: a Unix socket in a private
  (0700) directory, and an HMAC handshake with the Share's key. Wrong keys, garbage bytes,
  stalled clients and floods of failed attempts are refused while everyone else is served.
- A child SIGKILLed at any moment (while shorting a shared circuit, even while it holds the
  slot's lock, or in the middle of a coordinator request) loses nothing that completed and
  blocks nobody.
- A dead coordinator makes every kind of call raise ``ShareError`` fast, in the parent and in
  children; nothing hangs.
- A SIGKILLed parent takes its coordinator, Pool workers and Skprocess children with it
  within 2 s, and its private directory is removed.
- ``stop()`` drops nothing that completed.

Every process a test starts is killed (by pid, only ours) and joined at the end; the autouse
``no_leaked_processes`` check (conftest) fails a test that leaves one behind. Anything that
could hang runs in a daemon thread or a child with a deadline, so a hang is a failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import AuthenticationError, Client, address_type
from pathlib import Path
from typing import Any

import pytest
from process_tree import descendants

from suitkaise import BreakingCircuit, Circuit
from suitkaise.processing import Share, ShareError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leaks")]


@pytest.fixture(scope="module", autouse=True)
def _session_helpers() -> None:
    """multiprocessing's fork server, resource tracker and shared-value heap live for the
    whole session, each with descriptors of its own: start them before any test's leak
    check begins, so that the first test to need one is not blamed for them."""
    from multiprocessing import forkserver, resource_tracker

    forkserver.ensure_running()
    resource_tracker.ensure_running()
    FORK.RawValue("q", 0)

WAIT = 20.0  # seconds the parent waits for a child that should finish; a failure, not a hang
UNBLOCKED = 2.0  # a call that must not be blocked completes within this (generous on 2 CPUs)
DEAD_FAST = 2.0  # coordinator dead: an uncached call raises ShareError within this
DEAD_CACHED = 2.5  # ... a cached read notices the stale heartbeat (1.5 s) within this
ORPHAN_EXIT = 2.0  # parent SIGKILLed: its helpers exit within this
SCRIPTS = Path(__file__).parent / "share_fault_scripts"
FORK = multiprocessing.get_context("fork")
DEATH_MESSAGE = re.compile(r"coordinator.*(died|dead)", re.DOTALL)


# -- helpers ------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _within(seconds: float, fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` run in a daemon thread; fails the test if it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as error:  # handed to the test's thread
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{what} did not complete within {seconds} s (blocked)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.005)


class Children:
    """Processes started by one test; every one is SIGKILLed (if alive) and joined at the end."""

    def __init__(self) -> None:
        self.started: list[Any] = []

    def start(self, target: Callable[..., Any], *args: Any, context: Any = FORK) -> Any:
        process = context.Process(target=target, args=args, daemon=True)
        process.start()
        self.started.append(process)
        return process

    def kill(self, process: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.join(WAIT)
        assert not process.is_alive()

    def cleanup(self) -> None:
        for process in self.started:
            if process.is_alive():
                self.kill(process)
            process.join(WAIT)
            process.close()  # its sentinel pipe
        self.started.clear()


@pytest.fixture
def children(request: pytest.FixtureRequest) -> Iterator[Children]:
    tracker = Children()
    try:
        yield tracker
    finally:
        tracker.cleanup()
        request.node.funcargs.pop("children", None)  # type: ignore[attr-defined]


@pytest.fixture
def share(request: pytest.FixtureRequest) -> Iterator[Share]:
    """A Share, stopped after the test and then let go of, so that ``no_leaks`` (set up
    before, checked after) sees everything it used closed."""
    created = Share()
    try:
        yield created
    finally:
        created.stop(timeout=2.0)
        request.node.funcargs.pop("share", None)  # type: ignore[attr-defined]
        del created


def _coordinator_pid(share: Share) -> int:
    """The coordinator's pid (in the owner process), wherever the link keeps its handle."""
    link = share._sk
    process = getattr(getattr(link, "running", link), "process", None)
    assert process is not None, "this Share has no coordinator process"
    pid: int = process.pid
    return pid


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _inet_inodes() -> set[int]:
    """Inodes of every TCP and UDP socket (IPv4 and IPv6) in this network namespace."""
    inodes = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        with contextlib.suppress(OSError), open(f"/proc/net/{table}") as lines:
            next(lines)
            for line in lines:
                inodes.add(int(line.split()[9]))
    return inodes


def _unix_socket_paths() -> dict[int, str]:
    paths = {}
    with open("/proc/net/unix") as lines:
        next(lines)
        for line in lines:
            fields = line.split()
            if len(fields) >= 8:
                paths[int(fields[6])] = fields[7]
    return paths


def _slot_lock_is_held(share: Share, slot: int) -> bool:
    """True if another process holds the record lock on a circuit slot.

    Only call it while no thread of this process is inside a circuit update: closing any fd
    of the memory file drops this process's own record locks on it (POSIX semantics).
    """
    from suitkaise.processing._share._memory import HEADER_WORDS, SLOT_WORDS

    fd = os.open(share._sk.memory_path, os.O_RDWR)
    try:
        offset = (HEADER_WORDS + slot * SLOT_WORDS) * 8
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, SLOT_WORDS * 8, offset)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, SLOT_WORDS * 8, offset)
        return False
    finally:
        os.close(fd)


def _raw_connect(share: Share) -> socket.socket:
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(5.0)
    raw.connect(share._sk.address)
    return raw


def _read_until_closed(raw: socket.socket, seconds: float = 5.0) -> bytes:
    """Everything the coordinator sends until it closes the connection (fails on timeout)."""
    received = b""
    deadline = time.monotonic() + seconds
    while True:
        raw.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = raw.recv(4096)
        except TimeoutError:
            pytest.fail(f"the coordinator kept a refused connection open for {seconds} s")
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def _refused(share: Share, authkey: bytes) -> None:
    """A client with ``authkey`` is refused (AuthenticationError) within UNBLOCKED seconds."""

    def attempt() -> None:
        with pytest.raises(AuthenticationError):
            Client(share._sk.address, family="AF_UNIX", authkey=authkey)

    _within(UNBLOCKED, attempt, f"a client with the key {authkey!r}")


def _legit_round_trip(share: Share, name: str, value: int) -> None:
    """A write and a read by this process, from a fresh thread (a new, authenticated
    connection) and from this thread, each within UNBLOCKED seconds."""

    def fresh_thread() -> int:
        setattr(share, name, value)
        return int(getattr(share, name))

    assert _within(UNBLOCKED, fresh_thread, "a call from a new thread") == value
    assert _within(UNBLOCKED, lambda: int(getattr(share, name)), "a read") == value


# -- run in children (module level: spawn imports them by reference) ----------------------


def _child_round_trip(share: Share, name: str, value: int, reply: Any) -> None:
    try:
        setattr(share, name, value)
        share.items.append(value)
        share.counter += 1
        reply.send(("ok", int(getattr(share, name))))
    except BaseException as error:
        reply.send(("error", f"{type(error).__name__}: {error}"))


def _count_increments(share: Share, done: Any, errors: Any, stop: Any) -> None:
    n = 0
    while not stop.value:
        try:
            share.counter += 1
        except ShareError:
            errors.value += 1
            time.sleep(0.002)
            continue
        n += 1
        done.value = n


def _hammer_circuit(share: Share, counts: Any, index: int) -> None:
    n = 0
    while True:
        share.circuit.short()
        n += 1
        counts[index] = n  # after the call returned: a completed call


def _hammer_counter(share: Share, counts: Any, index: int) -> None:
    n = 0
    while True:
        share.counter += 1
        n += 1
        counts[index] = n


def _short_n(share: Share, n: int) -> None:
    for _ in range(n):
        share.circuit.short()


def _increment_n(share: Share, n: int) -> None:
    for _ in range(n):
        share.counter += 1


def _hold_slot_lock(share: Share, window: str, ready: Any) -> None:
    """Short ``share.circuit`` and park (until SIGKILLed) inside the update, at ``window``:

    - ``in-transition``: holding the lock, nothing written yet;
    - ``mid-copy``: half-way through writing the new copy of the state (torn, seq odd);
    - ``after-flip``: the new state is published, the lock not yet released.
    """
    from suitkaise.circuits._transitions import circuit_short
    from suitkaise.processing._share import _memory

    circuit = share.circuit
    store = circuit._store
    segment, slot = store._segment, store._slot

    def park() -> None:
        ready.value = 1
        time.sleep(60)

    if window == "in-transition":

        def transition(settings: Any, state: Any, custom_sleep: Any) -> Any:
            park()
            return circuit_short(settings, state, custom_sleep)

        segment.apply(slot, transition, circuit._settings, None)
    elif window == "mid-copy":

        def torn_write(copy: int, state: Any) -> None:
            words = segment.words
            words[copy] += 1  # odd: a write in progress
            words[copy + 1] = 999_999_999
            words[copy + 2] = 999_999_999
            park()

        segment._write_copy = torn_write
        segment.apply(slot, circuit_short, circuit._settings, None)
    else:
        real = _memory.fcntl

        class Parked:
            LOCK_EX = real.LOCK_EX
            LOCK_UN = real.LOCK_UN

            @staticmethod
            def lockf(fd: int, operation: int, *args: int) -> Any:
                if operation == real.LOCK_UN:
                    park()
                return real.lockf(fd, operation, *args)

        _memory.fcntl = Parked  # type: ignore[assignment]
        circuit.short()


class Sleeper:
    """A shared object whose method runs (at the coordinator) for a long time."""

    def __init__(self) -> None:
        self.naps = 0

    def nap(self, flag: str, seconds: float) -> None:
        self.naps += 1
        Path(flag).touch()
        time.sleep(seconds)


def _increment(share: Share) -> None:
    share.counter += 1


# The kinds of access checked once the coordinator is dead. Each runs in its own thread,
# which first makes a connection and warms this process's cache (reads only: a write would
# invalidate every cache), then waits for the kill, then tries until ShareError.
# name -> (warm-up, access, cached: may succeed until the heartbeat is stale)
_KINDS: dict[str, tuple[Callable[[Share], Any], Callable[[Share], Any], bool]] = {
    "value read": (lambda s: s.value, lambda s: int(s.value), True),
    "value write": (lambda s: s.value, lambda s: setattr(s, "value", 8), False),
    "proxy method call": (lambda s: s.items, lambda s: s.items.append(9), False),
    "proxy attribute read": (lambda s: s.sleeper.naps, lambda s: s.sleeper.naps, False),
    "counter += 1": (lambda s: s.counter, lambda s: _increment(s), False),
    "delete": (lambda s: None, lambda s: delattr(s, "doomed"), False),
    "circuit short": (lambda s: s.circuit.times_shorted, lambda s: s.circuit.short(), True),
    "circuit broken": (lambda s: s.breaker.broken, lambda s: s.breaker.broken, True),
}
_FRESH_THREAD = "first call of a new thread"


def _setup_names(share: Share) -> None:
    share.value = 7
    share.items = [1, 2]
    share.counter = 0
    share.doomed = "x"
    share.circuit = Circuit(10**9)
    share.breaker = BreakingCircuit(3)
    share.sleeper = Sleeper()


def _accesses_after_death(
    share: Share, warmed: Any, go: Any, killed_at: Any, flag: str | None
) -> dict[str, Any]:
    """Run every kind of access once the coordinator is dead; returns what happened to each:
    {"kind": (successes before the error, seconds after the kill, error type, message)}."""
    results: dict[str, Any] = {}
    ready = threading.Barrier(len(_KINDS) + 2 + (flag is not None))

    def attempt(kind: str, warm: Callable[[Share], Any], access: Callable[[Share], Any]) -> None:
        if kind != _FRESH_THREAD:
            share._sk_names()  # this thread's own connection, made while the coordinator lives
            warm(share)
        ready.wait()
        go.wait()
        successes = 0
        while True:
            try:
                access(share)
            except Exception as error:
                elapsed = time.monotonic() - killed_at.value
                results[kind] = (successes, elapsed, type(error).__name__, str(error))
                return
            successes += 1
            if time.monotonic() - killed_at.value > 10.0:
                results[kind] = (successes, None, None, "no error for 10 s")
                return
            time.sleep(0.01)

    def in_progress() -> None:
        ready.wait()
        try:
            share.sleeper.nap(flag, 30.0)
        except Exception as error:
            elapsed = time.monotonic() - killed_at.value
            results["call in progress"] = (0, elapsed, type(error).__name__, str(error))
        else:
            results["call in progress"] = (1, None, None, "returned")

    threads = [
        threading.Thread(target=attempt, args=(kind, warm, access), daemon=True)
        for kind, (warm, access, _) in _KINDS.items()
    ]
    threads.append(
        threading.Thread(
            target=attempt,
            args=(_FRESH_THREAD, None, lambda s: setattr(s, "fresh", 1)),
            daemon=True,
        )
    )
    if flag is not None:
        threads.append(threading.Thread(target=in_progress, daemon=True))
    for thread in threads:
        thread.start()
    ready.wait()
    warmed.set()
    deadline = time.monotonic() + 15.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for kind in [*_KINDS, _FRESH_THREAD]:
        results.setdefault(kind, (None, None, None, "hung: no result within 15 s"))
    return results


def _child_accesses_after_death(
    share: Share, warmed: Any, go: Any, killed_at: Any, flag: str, reply: Any
) -> None:
    reply.send(_accesses_after_death(share, warmed, go, killed_at, flag))


def _check_death_results(results: dict[str, Any]) -> None:
    problems = []
    for kind, (successes, elapsed, error_type, message) in sorted(results.items()):
        cached = _KINDS.get(kind, (None, None, False))[2]
        bound = DEAD_CACHED if cached else DEAD_FAST
        if error_type != "ShareError":
            problems.append(f"{kind}: expected ShareError, got {error_type}: {message}")
        elif elapsed is None or elapsed > bound:
            problems.append(f"{kind}: ShareError after {elapsed} s (bound {bound} s)")
        elif not cached and successes != 0:
            problems.append(f"{kind}: {successes} call(s) 'succeeded' with the coordinator dead")
        elif not DEATH_MESSAGE.search(message):
            problems.append(f"{kind}: unclear message {message!r}")
    assert not problems, "\n".join(problems)


# -- security: a private place, an authentication, refusals that harm nobody ---------------


def test_the_coordinator_listens_only_on_a_unix_socket_in_a_private_directory(
    share: Share,
) -> None:
    link = share._sk
    directory = link.directory
    info = os.stat(directory)
    assert stat.S_ISDIR(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.getuid()
    assert info.st_gid == os.getgid()
    # The socket is a Unix socket path inside that directory, not a TCP address.
    address = link.address
    assert isinstance(address, str)
    assert address_type(address) == "AF_UNIX"
    assert os.path.dirname(address) == directory
    assert stat.S_ISSOCK(os.stat(address).st_mode)
    assert os.stat(address).st_uid == os.getuid()
    # The shared memory lives there too, readable by its owner only.
    memory = os.stat(link.memory_path)
    assert os.path.dirname(link.memory_path) == directory
    assert stat.S_ISREG(memory.st_mode)
    assert stat.S_IMODE(memory.st_mode) & 0o077 == 0
    assert memory.st_uid == os.getuid()
    # The coordinator has no TCP or UDP socket at all, and it listens on that path.
    coordinator = _coordinator_pid(share)
    sockets = _socket_inodes(coordinator)
    assert sockets, "the coordinator holds no socket"
    assert not sockets & _inet_inodes(), "the coordinator holds a TCP/UDP socket"
    paths = _unix_socket_paths()
    assert {paths.get(inode) for inode in sockets} - {None} == {address}
    # And the directory was made for this Share alone: its socket, its memory, and who
    # its coordinator is (for the sweep of directories left by killed Shares).
    _wait_for(
        lambda: "coordinator" in os.listdir(directory), WAIT, "the coordinator's record"
    )
    assert sorted(os.listdir(directory)) == ["coordinator", "coordinator.sock", "memory"]
    assert stat.S_IMODE(os.stat(os.path.join(directory, "coordinator")).st_mode) & 0o077 == 0


def test_a_client_with_a_wrong_key_is_refused_and_everyone_else_is_served(
    share: Share, children: Children
) -> None:
    share.counter = 0
    share.items = []
    _refused(share, b"wrong")
    _refused(share, bytes(32))  # a key of the right length, but not ours
    assert share._sk.authkey != bytes(32)
    _legit_round_trip(share, "value", 41)
    mine, theirs = FORK.Pipe(duplex=False)
    child = children.start(_child_round_trip, share, "value", 42, theirs)
    assert mine.poll(WAIT), "the child got no answer from the Share"
    assert mine.recv() == ("ok", 42)
    child.join(WAIT)
    assert child.exitcode == 0
    _refused(share, b"wrong")
    assert int(share.value) == 42
    assert list(share.items) == [42]
    assert int(share.counter) == 1


GARBAGE = {
    "http request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "framed wrong digest": struct.pack("!i", 16) + bytes(range(16)),
    "huge declared length": struct.pack("!i", -1) + struct.pack("!Q", 2**40) + b"x" * 64,
    "random bytes": random.Random(7).randbytes(4096),
    "nothing, then close": b"",
}


@pytest.mark.parametrize("garbage", list(GARBAGE), ids=list(GARBAGE))
def test_garbage_bytes_are_refused_and_the_coordinator_keeps_serving(
    share: Share, garbage: str
) -> None:
    share.value = 1
    raw = _raw_connect(share)
    with raw:
        payload = GARBAGE[garbage]
        if payload:
            raw.sendall(payload)
        else:
            raw.shutdown(socket.SHUT_WR)
        received = _read_until_closed(raw)
    # The coordinator spoke first (its challenge), never welcomed us, and hung up.
    assert b"#CHALLENGE#" in received
    assert b"#WELCOME#" not in received
    if garbage == "framed wrong digest":
        assert b"#FAILURE#" in received
    _legit_round_trip(share, "value", 2)


def test_a_stalled_client_does_not_block_anyone(share: Share, children: Children) -> None:
    share.counter = 0
    share.items = []
    stalled = [_raw_connect(share) for _ in range(4)]  # connect, then say nothing
    half = _raw_connect(share)  # announces 100 bytes, sends 10, then stalls
    half.sendall(struct.pack("!i", 100) + b"0123456789")
    try:
        _legit_round_trip(share, "value", 5)
        mine, theirs = FORK.Pipe(duplex=False)
        child = children.start(_child_round_trip, share, "value", 6, theirs)
        assert mine.poll(UNBLOCKED + 2.0), "a child was blocked by a stalled client"
        assert mine.recv() == ("ok", 6)
        child.join(WAIT)
        assert child.exitcode == 0
        # The stalled connections are still open (nobody closed them for us): they really
        # were stalled while the others were served.
        for raw in [*stalled, half]:
            raw.setblocking(False)
            with pytest.raises(BlockingIOError):
                while raw.recv(4096):  # the challenge, then nothing, but no EOF
                    pass
    finally:
        for raw in [*stalled, half]:
            raw.close()
    assert int(share.counter) == 1
    assert list(share.items) == [6]


def test_a_flood_of_failed_attempts_harms_no_one_and_leaks_nothing(
    share: Share, children: Children
) -> None:
    share.counter = 0
    done = FORK.RawValue("q", 0)
    errors = FORK.RawValue("q", 0)
    stop = FORK.RawValue("b", 0)
    child = children.start(_count_increments, share, done, errors, stop)
    _wait_for(lambda: done.value > 10, WAIT, "the child's first increments")
    coordinator = _coordinator_pid(share)
    fds, threads = _fd_count(coordinator), _thread_count(coordinator)
    progress = done.value
    for attempt in range(50):
        _refused(share, b"wrong%d" % attempt)
        raw = _raw_connect(share)
        with raw:
            raw.sendall(b"\xff" * 8 + os.urandom(64))
            assert b"#WELCOME#" not in _read_until_closed(raw)
    _legit_round_trip(share, "value", 3)
    _wait_for(lambda: done.value > progress + 10, WAIT, "the child to keep incrementing")
    stop.value = 1
    child.join(WAIT)
    assert child.exitcode == 0
    assert errors.value == 0, "the child's calls failed during the flood"
    assert int(share.counter) == done.value
    # The refused connections are gone: their sockets and threads were released.
    _wait_for(lambda: _fd_count(coordinator) <= fds, 3.0, "the coordinator's fds to go back")
    _wait_for(
        lambda: _thread_count(coordinator) <= threads, 3.0, "the coordinator's threads to end"
    )


# -- a child killed at any moment -----------------------------------------------------------

KILLS = 20


def _kill_hammering_children(
    share: Share, children: Children, target: Callable[..., None], seed: int
) -> tuple[int, int]:
    """Start KILLS children running ``target(share, counts, i)``, at most 3 at a time, and
    SIGKILL each at a random moment. Returns (calls reported complete, kills while active)."""
    rng = random.Random(seed)
    counts = FORK.RawArray("q", KILLS)
    alive: list[tuple[int, Any]] = []
    active_kills = 0
    for index in range(KILLS):
        alive.append((index, children.start(target, share, counts, index)))
        if len(alive) < 3 and index < KILLS - 1:
            continue
        victim, process = alive.pop(rng.randrange(len(alive)))
        if rng.random() < 0.75:  # mostly mid-loop; sometimes while it is still starting
            _wait_for(lambda i=victim: counts[i] > 0, WAIT, "a child's first call")
        time.sleep(rng.uniform(0.0, 0.02))
        active_kills += counts[victim] > 0
        children.kill(process)
    for index, process in alive:
        active_kills += counts[index] > 0
        children.kill(process)
    return sum(counts), active_kills


def _shorts_so_far(circuit: Circuit | BreakingCircuit) -> int:
    """Every short the circuit has counted: a Circuit clears its counter at each trip, a
    BreakingCircuit keeps counting while broken (and is never reset here)."""
    if isinstance(circuit, BreakingCircuit):
        return circuit.times_shorted
    return circuit.total_trips * circuit.num_shorts_to_trip + circuit.times_shorted


@pytest.mark.parametrize(
    "make",
    [lambda: Circuit(10**9), lambda: Circuit(7), lambda: BreakingCircuit(7)],
    ids=["Circuit(10**9)", "Circuit(7)-tripping", "BreakingCircuit(7)-breaking"],
)
def test_children_killed_while_shorting_lose_nothing_and_block_no_one(
    share: Share, children: Children, make: Callable[[], Circuit | BreakingCircuit]
) -> None:
    share.circuit = make()
    threshold = share.circuit.num_shorts_to_trip
    completed, active_kills = _kill_hammering_children(share, children, _hammer_circuit, 1)
    assert completed > 1000, "the children barely ran: the test proves nothing"
    assert active_kills >= KILLS // 2
    circuit = _within(UNBLOCKED, lambda: share.circuit, "reading share.circuit")
    shorts, trips, sleep = _within(
        UNBLOCKED,
        lambda: (circuit.times_shorted, circuit.total_trips, circuit.current_sleep_time),
        "reading the circuit's state",
    )
    total = _shorts_so_far(circuit)
    # Every call reported complete is counted; at most one in-flight call per killed child.
    assert completed <= total <= completed + KILLS, (shorts, trips, completed)
    assert sleep == 0.0
    if isinstance(circuit, BreakingCircuit):
        assert (trips, circuit.broken) == (1, True)  # broke once, and stays broken
    else:
        assert 0 <= shorts < threshold
        assert trips == total // threshold
    # Nobody holds the slot's lock: the parent and a new child both short.
    assert not _slot_lock_is_held(share, share.circuit._store._slot)
    _within(UNBLOCKED, share.circuit.short, "a short by the parent")
    child = children.start(_short_n, share, 100)
    child.join(WAIT)
    assert child.exitcode == 0
    assert _shorts_so_far(share.circuit) == total + 101


def test_a_child_forked_while_a_parent_thread_updates_a_circuit_is_not_blocked(
    share: Share, children: Children
) -> None:
    from suitkaise.circuits._transitions import circuit_short

    share.circuit = Circuit(10**9)
    circuit = share.circuit
    store = circuit._store
    inside, release = threading.Event(), threading.Event()

    def slow_short(settings: Any, state: Any, custom_sleep: Any) -> Any:
        inside.set()
        release.wait(WAIT)
        return circuit_short(settings, state, custom_sleep)

    updater = threading.Thread(
        target=store._segment.apply,
        args=(store._slot, slow_short, circuit._settings, None),
        daemon=True,
    )
    updater.start()
    assert inside.wait(WAIT)
    # Forked while this process holds the slot's thread lock and record lock: the child
    # must not inherit a thread lock that nobody in it will ever release.
    child = children.start(_short_n, share, 10)
    child.join(0.3)
    assert child.is_alive(), "the child did not wait for the update in progress"
    release.set()
    updater.join(UNBLOCKED)
    assert not updater.is_alive()
    child.join(5.0)
    assert child.exitcode == 0, "the forked child stayed blocked on an inherited lock"
    assert share.circuit.times_shorted == 11


@pytest.mark.parametrize("window", ["in-transition", "mid-copy", "after-flip"])
def test_a_child_killed_while_holding_a_circuit_lock_blocks_no_one(
    share: Share, children: Children, window: str
) -> None:
    share.circuit = Circuit(10**9)
    for _ in range(5):
        share.circuit.short()
    slot = share.circuit._store._slot
    ready = FORK.RawValue("b", 0)
    holder = children.start(_hold_slot_lock, share, window, ready)
    _wait_for(lambda: ready.value == 1, WAIT, "the child to park inside the update")
    assert _slot_lock_is_held(share, slot), "the child does not hold the slot's lock"
    # Readers never wait, and see the last complete state: the parked update is
    # invisible until it is published (after-flip: it is published).
    published = 6 if window == "after-flip" else 5
    assert _within(0.5, lambda: share.circuit.times_shorted, "a read") == published
    assert share.circuit.total_trips == 0
    assert share.circuit.current_sleep_time == 0.0
    # A writer waits for the lock while its holder lives...
    finished = threading.Event()

    def write() -> None:
        share.circuit.short()
        finished.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert not finished.wait(0.2), "a writer did not wait for the lock's holder"
    # ... and proceeds as soon as the holder is killed.
    os.kill(holder.pid, signal.SIGKILL)
    killed = time.monotonic()
    assert finished.wait(UNBLOCKED), "the writer stayed blocked by a dead process"
    assert time.monotonic() - killed < 1.0
    writer.join(UNBLOCKED)
    holder.join(WAIT)
    assert holder.exitcode == -signal.SIGKILL
    assert not _slot_lock_is_held(share, slot)
    # Other processes proceed too, from a consistent state.
    child = children.start(_short_n, share, 10)
    child.join(WAIT)
    assert child.exitcode == 0
    assert share.circuit.times_shorted == published + 1 + 10
    assert share.circuit.total_trips == 0
    assert share.circuit.current_sleep_time == 0.0


def test_children_killed_mid_request_lose_no_completed_increment(
    share: Share, children: Children
) -> None:
    share.counter = 0
    coordinator = _coordinator_pid(share)
    fds = _fd_count(coordinator)
    completed, active_kills = _kill_hammering_children(share, children, _hammer_counter, 2)
    assert completed > 200, "the children barely ran: the test proves nothing"
    assert active_kills >= KILLS // 2
    counter = _within(UNBLOCKED, lambda: int(share.counter), "reading the counter")
    assert completed <= counter <= completed + KILLS, (counter, completed)
    # Others continue: the parent and a new child.
    _within(UNBLOCKED, lambda: _increment(share), "an increment by the parent")
    child = children.start(_increment_n, share, 100)
    child.join(WAIT)
    assert child.exitcode == 0
    assert int(share.counter) == counter + 101
    # The dead children's connections were closed by the coordinator.
    _wait_for(lambda: _fd_count(coordinator) <= fds + 1, 3.0, "the coordinator's fds to go back")


# -- the coordinator dies ---------------------------------------------------------------------


def test_a_dead_coordinator_makes_every_call_in_the_parent_fail_fast(
    share: Share, tmp_path: Path
) -> None:
    _setup_names(share)
    flag = tmp_path / "napping"
    warmed, go = threading.Event(), threading.Event()
    killed_at = type("Moment", (), {"value": 0.0})()
    box: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: box.update(_accesses_after_death(share, warmed, go, killed_at, str(flag))),
        daemon=True,
    )
    runner.start()
    assert warmed.wait(WAIT)
    _wait_for(flag.exists, WAIT, "the long call to start at the coordinator")
    coordinator = _coordinator_pid(share)
    killed_at.value = time.monotonic()
    os.kill(coordinator, signal.SIGKILL)
    go.set()
    runner.join(15.0 + WAIT)
    assert not runner.is_alive()
    assert "call in progress" in box
    _check_death_results(box)
    # The owner's own lifecycle calls do not hang either.
    assert _within(UNBLOCKED, lambda: share.is_running, "is_running") is False
    assert _within(UNBLOCKED + 1.0, lambda: share.stop(timeout=1.0), "stop()") is False
    with pytest.raises(ShareError):
        _within(UNBLOCKED, lambda: share.counter, "a read after stop()")


def test_a_dead_coordinator_makes_every_call_in_a_child_fail_fast(
    start_method: str, children: Children, tmp_path: Path
) -> None:
    context = multiprocessing.get_context(start_method)
    share = Share()
    try:
        _setup_names(share)
        flag = tmp_path / "napping"
        warmed, go = context.Event(), context.Event()
        killed_at = context.RawValue("d", 0.0)
        mine, theirs = context.Pipe(duplex=False)
        children.start(
            _child_accesses_after_death,
            *(share, warmed, go, killed_at, str(flag), theirs),
            context=context,
        )
        assert warmed.wait(WAIT), "the child did not get ready"
        _wait_for(flag.exists, WAIT, "the child's long call to start at the coordinator")
        killed_at.value = time.monotonic()
        os.kill(_coordinator_pid(share), signal.SIGKILL)
        go.set()
        assert mine.poll(15.0 + WAIT), "the child never reported (it hung)"
        results = mine.recv()
        assert set(results) == {*_KINDS, _FRESH_THREAD, "call in progress"}
        _check_death_results(results)
    finally:
        share.stop(timeout=1.0)


# -- the parent dies --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_killed_parent_takes_the_coordinator_and_every_helper_with_it(method: str) -> None:
    script = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "orphan_share.py"), method],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the resource tracker's warnings once its owner is gone
        text=True,
    )
    family: set[int] = set()
    report: dict[str, Any] = {}
    try:
        line = _within(WAIT, script.stdout.readline, "the script's report")  # type: ignore[union-attr]
        report = json.loads(line)
        family = descendants(script.pid)
        ours = {report["coordinator"], report["skprocess"], *report["workers"]}
        assert len(report["workers"]) == 2
        assert ours <= family, "the script's helpers are not its descendants"
        assert report["counter"] == 2
        assert os.path.isdir(report["directory"])
        os.kill(script.pid, signal.SIGKILL)
        script.wait(WAIT)
        killed = time.monotonic()
        while time.monotonic() - killed < 5.0 and (
            not all(_gone(pid) for pid in family) or os.path.exists(report["directory"])
        ):
            time.sleep(0.01)
        lasted = time.monotonic() - killed
        left = sorted(pid for pid in family if not _gone(pid))
        assert _gone(report["coordinator"]), "the coordinator outlived its owner by 5 s"
        assert not left, f"left behind after 5 s: {left} (coordinator, workers, skprocess: {ours})"
        assert not os.path.exists(report["directory"]), "the private directory was not removed"
        assert lasted < ORPHAN_EXIT, f"took {lasted:.2f} s"
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
        for pid in family:  # the script's own descendants, recorded before it died
            if not _gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if script.stdout is not None:
            script.stdout.close()
        directory = report.get("directory")
        if directory and os.path.isdir(directory) and "suitkaise-share-" in directory:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)


# -- stop() ------------------------------------------------------------------------------------


def test_stop_keeps_every_write_that_returned(children: Children) -> None:
    share = Share()
    try:
        share.counter = 0
        share.items = []
        share.circuit = Circuit(10**9)
        share.breaker = BreakingCircuit(2)
        for i in range(50):
            share.counter += 1
            share.items.append(i)
            share.circuit.short()
        share.breaker.short()
        share.breaker.short()  # breaks (no sleep configured)
        child = children.start(_increment_n, share, 25)
        child.join(WAIT)
        assert child.exitcode == 0
        share.label = "last"
        assert share.stop() is True
        assert share.is_running is False
        with pytest.raises(ShareError, match="stopped"):
            share.counter += 1
        share.start()
        assert share.is_running is True
        assert int(share.counter) == 75
        assert list(share.items) == list(range(50))
        assert share.circuit.times_shorted == 50
        assert share.breaker.broken is True
        assert share.breaker.total_trips == 1
        assert str(share.label) == "last"
        share.counter += 1  # and it goes on working
        assert int(share.counter) == 76
    finally:
        share.stop(timeout=2.0)


def test_stop_while_a_child_writes_drops_no_completed_write(children: Children) -> None:
    share = Share()
    try:
        share.counter = 0
        done = FORK.RawValue("q", 0)
        errors = FORK.RawValue("q", 0)
        stop = FORK.RawValue("b", 0)
        child = children.start(_count_increments, share, done, errors, stop)
        _wait_for(lambda: done.value > 100, WAIT, "the child's first increments")
        lost = []
        for cycle in range(8):
            time.sleep(0.02)
            share.stop()
            completed = done.value  # nothing can complete while the Share is stopped
            share.start()
            counter = int(share.counter)
            if counter < completed:
                lost.append((cycle, completed, counter))
        stop.value = 1
        child.join(WAIT)
        assert child.exitcode == 0
        final = int(share.counter)
        assert not lost, (
            f"increments that returned were lost by stop() (cycle, done, counter): {lost}"
        )
        # A call that raised ShareError may have been applied before the reply was lost.
        assert done.value <= final <= done.value + errors.value
    finally:
        share.stop(timeout=2.0)


def test_stop_honours_its_timeout_while_a_call_runs_at_the_coordinator() -> None:
    """``stop(timeout)``: "Returns True if the coordinator stopped cleanly within timeout
    seconds (it is killed otherwise)". A method of a shared object that runs for long (or
    never returns) must not make ``stop()`` wait for it: nothing hangs."""
    share = Share()
    try:
        share.sleeper = Sleeper()
        flag = Path(share._sk.directory) / "napping"
        outcome: list[str] = []

        def call() -> None:
            try:
                share.sleeper.nap(str(flag), 4.0)
                outcome.append("returned")
            except ShareError:
                outcome.append("ShareError")
            except BaseException as error:
                outcome.append(f"{type(error).__name__}: {error}")

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        _wait_for(lambda: flag.exists() or bool(outcome), WAIT, "the long call to start")
        assert not outcome, outcome
        started = time.monotonic()
        clean = _within(10.0, lambda: share.stop(timeout=0.5), "stop(timeout=0.5)")
        took = time.monotonic() - started
        assert took < 0.5 + 1.5, f"stop(timeout=0.5) took {took:.2f} s (returned {clean})"
        assert clean is False
        assert share.is_running is False
        caller.join(UNBLOCKED)
        assert not caller.is_alive(), "the call in progress hung after stop()"
    finally:
        share.stop(timeout=1.0)
