"""Frames between a Share's clients and its coordinator, on a connected Unix stream socket.

A frame is a 16-byte header (payload length, request id; big-endian) and a payload. The id
is the request's: a reply carries the id of the request it answers, so a client can tell its
reply from a stale one (``_link``). Bytes read past the end of a frame are kept for the next
one, so nothing is ever mistaken for the start of a frame.

Waits are bounded in slices. A client's socket has kernel time-outs on reads and writes
(``SO_RCVTIMEO``/``SO_SNDTIMEO``, ``IDLE_SECONDS``; ``select`` where those are missing): a
read or write that waits that long with nothing to do returns, ``on_idle()`` is called, and
it raises to give up (the call took too long, or the coordinator is frozen or dead) or
returns to go on waiting. This costs nothing on the fast path: no extra system call.

Waiting for a message by sleeping in ``recv`` costs a wake-up on each side of every round
trip, and on virtual machines a wake-up of an idle CPU is 10-20 µs: more than everything
else a call does. So a side that has just sent a message, and expects the answer soon, first
polls the socket for up to ``SPIN_SECONDS`` before it sleeps. Spinning pays only while the
spinners leave a CPU free for the side doing the work, so:

- a spin that ends with nothing (the answer was slow: the machine is busy, or the other side
  was asleep) is not tried again for the next 1, 2, 4, ... up to ``MAX_SKIPS`` waits of
  that connection; a spin that catches its answer resets this;
- the coordinator marks itself crowded (a word in the shared memory) while requests from
  several connections interleave; then no side spins, and the CPU goes to the work;
- one thread per process spins at a time (more would only fight over the GIL);
- a process that may run on one CPU only never spins.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import select
import socket
import struct
import time
from collections.abc import Callable

__all__ = ["IDLE_SECONDS", "SPIN_SECONDS", "Wire"]

SPIN_SECONDS = 25e-6
"""How long a side polls for an expected message before it sleeps (seconds)."""

MAX_SKIPS = 64
"""After failed spins, the most waits of a connection that sleep before it spins again."""

IDLE_SECONDS = 0.25
"""A client's blocked read or write returns after this long to check on the coordinator
(seconds)."""

HEADER = struct.Struct("!QQ")
_HEADER_SIZE = HEADER.size
_CHUNK = 65536


def _may_spin() -> bool:
    try:
        return len(os.sched_getaffinity(0)) > 1
    except (AttributeError, OSError):
        return (os.cpu_count() or 1) > 1


_SPIN_ALLOWED = _may_spin()
# Held by the one thread of this process that is spinning.
_spinner = _thread.allocate_lock()


def _after_fork() -> None:
    global _spinner
    # A thread of the parent may have been spinning at the fork: it does not exist here.
    _spinner = _thread.allocate_lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1e6))


class Wire:
    """One end of a connection: ``send`` a frame, ``receive`` the next one.

    ``next_id`` and ``busy`` belong to the client that owns the connection: the last
    request id it used, and whether a request is on its way (sent, or being sent, and its
    reply not read yet). A connection found busy at the start of a call was interrupted in
    the middle of one, and is out of step: it is dropped, never reused.
    """

    __slots__ = (
        "__weakref__",
        "backoff",
        "busy",
        "forks",
        "generation",
        "next_id",
        "pending",
        "request",
        "skips",
        "sock",
        "started",
        "timed",
        "watch",
    )

    def __init__(self, sock: socket.socket, idle: float | None = None) -> None:
        """``idle``: bound every blocked read and write to this many seconds (clients)."""
        sock.setblocking(True)
        self.sock = sock
        self.skips = 0  # waits left that sleep without spinning first
        self.backoff = 1  # the skips after the next spin that catches nothing
        self.pending = b""  # bytes read beyond the last frame
        self.next_id = 0
        self.busy = False
        # Set by the client that owns the connection: the request on its way, when it was
        # sent, and what to call while its reply is awaited (see idle()).
        self.request: tuple[object, ...] = ()
        self.started = 0.0
        self.watch: Callable[[Wire], None] | None = None
        self.generation = -1
        self.forks = -1
        self.timed = False
        if idle is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(idle))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(idle))
                self.timed = True
            except (OSError, AttributeError, struct.error):
                self.timed = False  # waits use select() instead

    def send(
        self, request_id: int, payload: bytes, on_idle: Callable[[], None] | None = None
    ) -> None:
        """Send one frame. ``on_idle`` is called each time the send is blocked for
        ``IDLE_SECONDS`` (the peer reads nothing)."""
        header = HEADER.pack(len(payload), request_id)
        if len(payload) < _CHUNK:
            data = header + payload
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                self._send_all(memoryview(data)[sent:], on_idle)
        else:  # no copy of a large payload just to prepend the header
            self._send_all(memoryview(header), on_idle)
            self._send_all(memoryview(payload), on_idle)

    def _send_all(self, view: memoryview, on_idle: Callable[[], None] | None) -> None:
        sock = self.sock
        while view:
            if not self.timed and on_idle is not None:
                while not select.select([], [sock], [], IDLE_SECONDS)[1]:
                    on_idle()
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:  # SO_SNDTIMEO: the peer read nothing for IDLE_SECONDS
                if on_idle is not None:
                    on_idle()

    def receive(
        self, since: float, spin: bool, on_idle: Callable[[], None] | None = None
    ) -> tuple[int, bytes]:
        """The next frame: ``(request id, payload)``.

        ``since``: ``time.perf_counter()`` when this side sent what the frame answers; if
        ``spin`` is true (and the policy above allows), the wait polls until
        ``since + SPIN_SECONDS`` before it sleeps. ``on_idle`` is called after each
        ``IDLE_SECONDS`` of waiting (clients); it raises to stop waiting. ``EOFError`` if
        the other side closed the connection.
        """
        data = self.pending
        if data:
            self.pending = b""
        else:
            data = self._first_chunk(since, spin, on_idle)
        while len(data) < _HEADER_SIZE:
            data += self._read(on_idle, _CHUNK)
        size, request_id = HEADER.unpack_from(data)
        end = _HEADER_SIZE + size
        if len(data) == end:
            return request_id, data[_HEADER_SIZE:]
        if len(data) > end:
            self.pending = data[end:]
            return request_id, data[_HEADER_SIZE:end]
        frame = bytearray(data[_HEADER_SIZE:])
        while len(frame) < size:
            frame += self._read(on_idle, size - len(frame))
        return request_id, bytes(frame)

    def _first_chunk(
        self, since: float, spin: bool, on_idle: Callable[[], None] | None
    ) -> bytes:
        sock = self.sock
        chunk = None
        if spin and _SPIN_ALLOWED:
            if self.skips:
                self.skips -= 1
            elif _spinner.acquire(False):
                try:
                    deadline = since + SPIN_SECONDS
                    while True:
                        try:
                            chunk = sock.recv(_CHUNK, socket.MSG_DONTWAIT)
                            break
                        except BlockingIOError:
                            if time.perf_counter() > deadline:
                                break
                finally:
                    _spinner.release()
                if chunk is None:
                    self.skips = self.backoff
                    self.backoff = min(2 * self.backoff, MAX_SKIPS)
                else:
                    self.backoff = 1
        if chunk is None:
            chunk = self._wait(on_idle, _CHUNK)
        if not chunk:
            raise EOFError("the other side closed the connection")
        return chunk

    def _wait(self, on_idle: Callable[[], None] | None, wanted: int) -> bytes:
        sock = self.sock
        if on_idle is not None and not self.timed:
            while not select.select([sock], [], [], IDLE_SECONDS)[0]:
                on_idle()
        while True:
            try:
                return sock.recv(wanted)
            except BlockingIOError:  # SO_RCVTIMEO: nothing for IDLE_SECONDS
                if on_idle is not None:
                    on_idle()

    def _read(self, on_idle: Callable[[], None] | None, wanted: int) -> bytes:
        more = self._wait(on_idle, min(wanted, _CHUNK))
        if not more:
            raise EOFError("the connection was closed in the middle of a message")
        return more

    def idle(self) -> None:
        """The owner's ``watch(self)``: called while a wait of this connection lasts."""
        if self.watch is not None:
            self.watch(self)

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Wake up whoever waits on this connection, with end of stream. The socket is not
        closed here: its thread may be inside a system call on its descriptor, which
        another file could take over; the thread closes it when it sees the end."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.sock.close()
