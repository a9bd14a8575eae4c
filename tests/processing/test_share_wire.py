"""The Share's wire: frames, end of stream, timeouts, and when a wait spins.

The spinning policy decides speed, not results, so these tests check the decisions
themselves: which waits poll the socket, and when the coordinator says it is crowded.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from suitkaise.processing._share import _coordinator, _wire
from suitkaise.processing._share._memory import CROWDED_WORD, Segment
from suitkaise.processing._share._wire import HEADER, SPIN_SECONDS, Wire


@pytest.fixture
def pair() -> Iterator[tuple[Wire, Wire]]:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a, b = Wire(left), Wire(right)
    yield a, b
    a.close()
    b.close()


def _frame(payload: bytes, request_id: int = 0) -> bytes:
    return HEADER.pack(len(payload), request_id) + payload


@pytest.mark.parametrize("size", [0, 1, 7, 8, 65_535, 65_536, 65_537, 3 * 1024 * 1024 + 5])
def test_a_frame_arrives_whole_and_alone_with_its_id(pair: tuple[Wire, Wire], size: int) -> None:
    a, b = pair
    payload = os.urandom(size)
    # A large frame does not fit in the socket's buffer: send it from another thread.
    sender = threading.Thread(target=a.send, args=(7, payload))
    sender.start()
    assert b.receive(time.perf_counter(), False) == (7, payload)
    sender.join()
    a.send(2**64 - 1, b"next")
    assert b.receive(time.perf_counter(), False) == (2**64 - 1, b"next")


def test_frames_go_both_ways_in_turn(pair: tuple[Wire, Wire]) -> None:
    a, b = pair
    for number in range(200):
        a.send(number, b"request %d" % number)
        assert b.receive(time.perf_counter(), True) == (number, b"request %d" % number)
        b.send(number, b"reply %d" % number)
        assert a.receive(time.perf_counter(), True) == (number, b"reply %d" % number)


def test_a_closed_peer_is_end_of_stream(pair: tuple[Wire, Wire]) -> None:
    a, b = pair
    a.close()
    with pytest.raises(EOFError):
        b.receive(time.perf_counter(), True)


def test_a_peer_closing_in_the_middle_of_a_frame_is_end_of_stream(
    pair: tuple[Wire, Wire],
) -> None:
    a, b = pair
    a.sock.sendall(HEADER.pack(100, 1) + b"only ten b")
    a.close()
    with pytest.raises(EOFError, match="middle"):
        b.receive(time.perf_counter(), False)


def test_frames_that_arrive_together_are_read_one_at_a_time_in_order(
    pair: tuple[Wire, Wire],
) -> None:
    a, b = pair
    # A stale reply and the current one in the buffer at once: nothing is lost or merged.
    a.sock.sendall(_frame(b"ab", 1) + _frame(b"cd", 2) + _frame(b"", 3) + _frame(b"e", 4)[:5])
    time.sleep(0.05)  # all of it is in the buffer before the first read
    assert b.receive(time.perf_counter(), False) == (1, b"ab")
    assert b.receive(time.perf_counter(), False) == (2, b"cd")
    assert b.receive(time.perf_counter(), False) == (3, b"")
    a.sock.sendall(_frame(b"e", 4)[5:])
    assert b.receive(time.perf_counter(), False) == (4, b"e")


def test_a_wait_calls_on_idle_every_slice_and_stops_when_it_raises() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    wire = Wire(right, idle=0.05)
    calls: list[float] = []

    def on_idle() -> None:
        calls.append(time.monotonic())
        if len(calls) == 4:
            raise TimeoutError("enough")

    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="enough"):
            wire.receive(time.perf_counter(), True, on_idle)
        assert 0.15 < time.monotonic() - started < 5.0
        # ... and a wait that on_idle lets go on gets its frame.
        calls.clear()
        threading.Timer(0.2, lambda: left.sendall(_frame(b"late", 9))).start()
        assert wire.receive(time.perf_counter(), False, lambda: calls.append(0.0)) == (9, b"late")
        assert len(calls) >= 2
    finally:
        wire.close()
        left.close()


def test_a_send_to_a_peer_that_reads_nothing_is_bounded_too() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    wire = Wire(right, idle=0.05)
    calls = 0

    def on_idle() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise TimeoutError("the peer reads nothing")

    try:
        with pytest.raises(TimeoutError):
            wire.send(1, b"x" * (32 * 1024 * 1024), on_idle)
        assert calls == 3
    finally:
        wire.close()
        left.close()


def test_without_kernel_time_outs_waits_use_select(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_wire, "IDLE_SECONDS", 0.05)
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    wire = Wire(right)  # no idle: the kernel does not time reads out
    calls: list[int] = []

    def on_idle() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise TimeoutError("enough")

    try:
        with pytest.raises(TimeoutError):
            wire.receive(time.perf_counter(), False, on_idle)
        left.sendall(_frame(b"ok", 5))
        assert wire.receive(time.perf_counter(), False, on_idle) == (5, b"ok")
    finally:
        wire.close()
        left.close()


class _CountingSocket:
    """A socket stand-in that counts non-blocking polls, and answers after ``delay``."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.polls = 0

    def setblocking(self, flag: bool) -> None:
        self.real.setblocking(flag)

    def recv(self, size: int, flags: int = 0) -> bytes:
        if flags & socket.MSG_DONTWAIT:
            self.polls += 1
        return self.real.recv(size, flags)

    def fileno(self) -> int:
        return self.real.fileno()

    def close(self) -> None:
        self.real.close()


@pytest.fixture
def counting() -> Iterator[tuple[socket.socket, Wire, _CountingSocket]]:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    counter = _CountingSocket(right)
    wire = Wire(counter)  # type: ignore[arg-type]
    yield left, wire, counter
    left.close()
    right.close()


def _answer_after(sock: socket.socket, delay: float, payload: bytes = b"x") -> threading.Thread:
    def answer() -> None:
        time.sleep(delay)
        sock.sendall(_frame(payload))

    thread = threading.Thread(target=answer)
    thread.start()
    return thread


def test_a_spin_that_catches_nothing_backs_off_and_one_that_catches_resets(
    counting: tuple[socket.socket, Wire, _CountingSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_wire, "_SPIN_ALLOWED", True)
    peer, wire, sock = counting

    def wait(answer_delay: float | None) -> int:
        """One wait for an answer (None: already there); how many times it polled."""
        sock.polls = 0
        if answer_delay is None:
            peer.sendall(_frame(b"x"))
            assert wire.receive(time.perf_counter(), True) == (0, b"x")
        else:
            thread = _answer_after(peer, answer_delay)
            assert wire.receive(time.perf_counter(), True) == (0, b"x")
            thread.join()
        return sock.polls

    slow = 0.02  # far beyond SPIN_SECONDS
    assert wait(slow) >= 1  # spun, caught nothing: the next wait sleeps at once
    assert wire.skips == 1
    assert wait(None) == 0  # skipped (even though the answer was there)
    assert wait(slow) >= 1  # spun again, in vain: now two waits are skipped
    assert [wait(None), wait(None)] == [0, 0]
    assert wait(slow) >= 1
    assert [wait(None) for _ in range(4)] == [0] * 4
    assert wait(None) == 1  # spun and caught it at once: the backoff starts over
    assert (wire.skips, wire.backoff) == (0, 1)
    assert wait(None) == 1


def test_skips_are_capped(
    counting: tuple[socket.socket, Wire, _CountingSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_wire, "_SPIN_ALLOWED", True)
    peer, wire, _ = counting
    for _ in range(3 * _wire.MAX_SKIPS):  # every answer comes after the spin gave up
        thread = _answer_after(peer, 0.001)
        wire.receive(time.perf_counter(), True)
        thread.join()
        assert wire.skips <= _wire.MAX_SKIPS
    assert wire.backoff == _wire.MAX_SKIPS


def test_no_spinning_when_told_not_to_or_on_one_cpu(
    counting: tuple[socket.socket, Wire, _CountingSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_wire, "_SPIN_ALLOWED", True)
    peer, wire, sock = counting
    thread = _answer_after(peer, 0.01)
    assert wire.receive(time.perf_counter(), False) == (0, b"x")  # crowded: do not spin
    thread.join()
    assert sock.polls == 0
    monkeypatch.setattr(_wire, "_SPIN_ALLOWED", False)  # one CPU: never spin
    peer.sendall(_frame(b"y"))
    assert wire.receive(time.perf_counter(), True) == (0, b"y")
    assert sock.polls == 0
    assert (wire.skips, wire.backoff) == (0, 1)  # nothing learned from waits that did not spin


def test_only_one_thread_of_a_process_spins_at_a_time(
    counting: tuple[socket.socket, Wire, _CountingSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_wire, "_SPIN_ALLOWED", True)
    peer, wire, sock = counting
    with _wire._spinner:  # another thread of this process is spinning
        thread = _answer_after(peer, 0.01)
        assert wire.receive(time.perf_counter(), True) == (0, b"x")
        thread.join()
    assert sock.polls == 0


def test_the_spinning_window_is_short() -> None:
    # A spin is worth it only for answers that come faster than a sleeping side wakes up.
    assert 0 < SPIN_SECONDS <= 100e-6


# -- the coordinator's crowding flag ----------------------------------------------------


@pytest.fixture
def coordinator() -> Iterator[Any]:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "memory")
        Segment.create(path, 4)
        yield _coordinator._Coordinator(directory, Segment(path))


def test_interleaved_callers_make_the_coordinator_crowded_until_one_is_left(
    coordinator: Any,
) -> None:
    words = coordinator.segment.words
    one, two = object(), object()
    now = 1000.0
    for _ in range(5):  # one caller, however fast: not crowded
        coordinator.note_caller(one, now)
        now += 0.0001
    assert (coordinator.crowded, words[CROWDED_WORD]) == (False, 0)
    coordinator.note_caller(two, now)  # a second caller right after the first
    assert (coordinator.crowded, words[CROWDED_WORD]) == (True, 1)
    now += _coordinator.CROWD_HOLD_SECONDS / 2
    coordinator.note_caller(two, now)  # still within the hold
    assert words[CROWDED_WORD] == 1
    now += _coordinator.CROWD_HOLD_SECONDS
    coordinator.note_caller(two, now)  # only one caller for longer than the hold
    assert (coordinator.crowded, words[CROWDED_WORD]) == (False, 0)


def test_callers_that_take_turns_slowly_are_not_a_crowd(coordinator: Any) -> None:
    one, two = object(), object()
    now = 1000.0
    for caller in [one, two] * 5:
        coordinator.note_caller(caller, now)
        now += _coordinator.CROWD_GAP_SECONDS * 2
    assert coordinator.crowded is False
    assert coordinator.segment.words[CROWDED_WORD] == 0


def test_a_share_with_two_busy_clients_is_crowded_and_with_one_is_not() -> None:
    from suitkaise.processing import Share

    with Share() as share:
        share.items = []
        words = share._sk.words
        for number in range(50):  # the owner alone
            share.items.append(number)
        assert words[CROWDED_WORD] == 0
        done = threading.Event()

        def other_thread() -> None:  # a second connection, calling as fast as it can
            while not done.is_set():
                share.items.append(-1)

        thread = threading.Thread(target=other_thread)
        thread.start()
        try:
            deadline = time.monotonic() + 10.0
            while words[CROWDED_WORD] == 0 and time.monotonic() < deadline:
                share.items.append(0)
            assert words[CROWDED_WORD] == 1
        finally:
            done.set()
            thread.join()
        time.sleep(_coordinator.CROWD_HOLD_SECONDS * 2)
        share.items.append(1)  # the first call after the crowd left ...
        share.items.append(2)  # ... and the flag is down again
        assert words[CROWDED_WORD] == 0
