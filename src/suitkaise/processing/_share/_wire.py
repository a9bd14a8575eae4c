"""Messages between a Share's clients and its coordinator: length-prefixed frames on a
connected Unix stream socket, one request and one reply at a time.

Waiting for a message by sleeping in ``recv`` costs a wake-up on each side of every round
trip, and on virtual machines a wake-up of an idle CPU is 10-20 µs: more than everything
else a call does. So a side that has just sent a message, and expects the answer soon, first
polls the socket for up to ``SPIN_SECONDS`` before it sleeps. "Soon" is learned: a
connection spins only while its last answer came within that window. Spinning pays only
while the spinners leave a CPU free for the side doing the work, so:

- the coordinator marks itself crowded (a word in the shared memory) while requests from
  several connections interleave; then no side spins, and the CPU goes to the work;
- when the machine is oversubscribed, answers are slow, and nobody spins either;
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

SPIN_SECONDS = 100e-6
"""How long a side polls for an expected message before it sleeps (seconds)."""

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

    __slots__ = ("hot", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.hot = False  # until a fast answer says otherwise

    def send(self, payload: bytes) -> None:
        if len(payload) < _CHUNK:
            self.sock.sendall(_HEADER.pack(len(payload)) + payload)
        else:  # no copy of a large payload just to prepend 8 bytes
            self.sock.sendall(_HEADER.pack(len(payload)))
            self.sock.sendall(payload)

    def receive(self, since: float, spin: bool, timeout: float | None = None) -> bytes:
        """The next frame's payload.

        ``since``: ``time.perf_counter()`` when this side sent what the frame answers; the
        wait may spin until ``since + SPIN_SECONDS`` if ``spin`` is true and recent answers
        came that fast. ``timeout`` (seconds) bounds the wait for the frame's first bytes:
        ``TimeoutError`` after it. ``EOFError`` if the other side closed the connection.
        """
        sock = self.sock
        chunk = None
        if spin and self.hot and _SPIN_ALLOWED and _spinner.acquire(False):
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
            if timeout is not None and not select.select([sock], [], [], timeout)[0]:
                raise TimeoutError(f"no message within {timeout:g} s")
            chunk = sock.recv(_CHUNK)
        if not chunk:
            raise EOFError("the other side closed the connection")
        # Spin next time only if this answer came within the window.
        self.hot = time.perf_counter() - since < SPIN_SECONDS
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

    def fileno(self) -> int:
        return self.sock.fileno()
