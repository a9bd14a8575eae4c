"""Messages between a Share's clients and its coordinator: length-prefixed frames on a
connected Unix stream socket, one request and one reply at a time.

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
import os
import select
import socket
import struct
import time

__all__ = ["SPIN_SECONDS", "Wire"]

SPIN_SECONDS = 25e-6
"""How long a side polls for an expected message before it sleeps (seconds)."""

MAX_SKIPS = 64
"""After failed spins, the most waits of a connection that sleep before it spins again."""

_HEADER = struct.Struct("!Q")
_CHUNK = 65536


def _may_spin() -> bool:
    try:
        return len(os.sched_getaffinity(0)) > 1
    except (AttributeError, OSError):
        return (os.cpu_count() or 1) > 1


_SPIN_ALLOWED = _may_spin()
# Held by the one thread of this process that is spinning.
_spinner = _thread.allocate_lock()


class Wire:
    """One end of a connection: ``send`` a frame, ``receive`` the next one."""

    __slots__ = ("backoff", "skips", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.skips = 0  # waits left that sleep without spinning first
        self.backoff = 1  # the skips after the next spin that catches nothing

    def send(self, payload: bytes) -> None:
        if len(payload) < _CHUNK:
            self.sock.sendall(_HEADER.pack(len(payload)) + payload)
        else:  # no copy of a large payload just to prepend 8 bytes
            self.sock.sendall(_HEADER.pack(len(payload)))
            self.sock.sendall(payload)

    def receive(self, since: float, spin: bool, timeout: float | None = None) -> bytes:
        """The next frame's payload.

        ``since``: ``time.perf_counter()`` when this side sent what the frame answers; if
        ``spin`` is true (and the policy above allows), the wait polls until
        ``since + SPIN_SECONDS`` before it sleeps. ``timeout`` (seconds) bounds the wait for
        the frame's first bytes: ``TimeoutError`` after it. ``EOFError`` if the other side
        closed the connection.
        """
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
            if timeout is not None and not select.select([sock], [], [], timeout)[0]:
                raise TimeoutError(f"no message within {timeout:g} s")
            chunk = sock.recv(_CHUNK)
        if not chunk:
            raise EOFError("the other side closed the connection")
        while len(chunk) < _HEADER.size:
            chunk = self._more(chunk)
        (size,) = _HEADER.unpack_from(chunk)
        end = _HEADER.size + size
        if len(chunk) == end:
            return chunk[_HEADER.size :]
        frame = bytearray(chunk[_HEADER.size :])
        while len(frame) < size:
            frame += self._more(b"", size - len(frame))
        if len(frame) != size:
            raise EOFError("more bytes than one frame: the connection is out of step")
        return bytes(frame)

    def _more(self, chunk: bytes, wanted: int = _CHUNK) -> bytes:
        more = self.sock.recv(min(wanted, _CHUNK))
        if not more:
            raise EOFError("the connection was closed in the middle of a message")
        return chunk + more

    def close(self) -> None:
        self.sock.close()
