"""A message channel between two processes that an interrupted call cannot desynchronise.

Skprocess ``tell()``/``listen()`` and the child's final report travel over it. The calling
thread may be interrupted at any point by an exception raised from a signal handler (a
section timeout through SIGALRM, Ctrl-C, a user's own handler). A byte stream cannot survive
that: a reader interrupted after the length header leaves the rest of the message in the
pipe, where the next read takes it for a new header; a writer interrupted halfway leaves a
truncated message that swallows the start of the next one.

So the channel is a ``SOCK_SEQPACKET`` Unix socket pair. The kernel keeps record boundaries
and moves each record whole: a send queues one entire record or nothing, a receive takes one
entire record or nothing. A message is cut into records of at most ``RECORD_BYTES`` (a larger
single record may not fit the socket's send buffer), each with a header: the message id, the
record's index in the message and the number of records.

Receiving is lossless under interruption. A record is first *peeked* (copied out without
taking it from the socket) and absorbed into the assembly state, and only then taken off the
socket. Absorbing is idempotent, so a call interrupted between the two steps leaves the
record in the socket, and the next call peeks it again and recognises it (same id and index).
The assembly state lives on the channel, not in the call: the next ``recv`` carries on where
an interrupted one stopped and returns that message whole.

Sending is atomic per record only. A sender interrupted between records leaves a message
without its tail; the receiver drops an incomplete message as soon as a record of another
message arrives, and ignores records whose message start it never saw. That message is lost,
never delivered in part, and the channel stays usable.

Message ids are the sender's pid (high 32 bits) and a per-channel counter (low 32 bits): a
forked copy of an end that sends too cannot reuse the id of the message just before it.
"""

from __future__ import annotations

import math
import os
import select
import socket
import struct
import threading
import time
from typing import Any

__all__ = ["Channel", "ChannelClosed", "wait_ready"]

RECORD_BYTES = 64 * 1024
"""Largest record sent, header included: fits any Unix socket's default send buffer."""

_HEADER = struct.Struct("=QII")  # message id, record index, record count
_PAYLOAD = RECORD_BYTES - _HEADER.size
_SLICE_SECONDS = 3600.0  # poll() takes milliseconds as a C int: wait in slices of an hour


class ChannelClosed(Exception):
    """The other end of the channel is closed and no complete message is left."""


def wait_ready(
    fds: list[int], timeout: float | None, *, write: int | None = None
) -> list[int]:
    """The fds among ``fds`` that are readable (or hung up), and ``write`` if it is writable,
    within ``timeout`` seconds (None: no limit); ``[]`` on timeout."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    if write is not None:
        poller.register(write, select.POLLOUT)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if deadline is None:
            step = _SLICE_SECONDS
        else:
            step = min(max(0.0, deadline - time.monotonic()), _SLICE_SECONDS)
        events = poller.poll(math.ceil(step * 1000))
        if events:
            return [fd for fd, _ in events]
        if deadline is not None and time.monotonic() >= deadline:
            return []


class Channel:
    """One end of a channel: ``send(bytes)`` and ``recv(timeout) -> bytes | None``.

    Thread-safe: each message is sent whole by one thread (a send lock) and assembled by one
    thread (a receive lock), so two threads never share or split a message.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._counter = 0
        self._scratch = bytearray(RECORD_BYTES)
        # Assembly state (see the module docstring), changed only under the receive lock.
        # Every step is a single assignment, so an exception between two steps leaves a
        # state that the same record, peeked again, brings to the same end.
        self._current = -1  # id of the message being assembled; -1: none
        self._count = 0
        self._expect = 0  # index of the next record of the current message
        self._parts: dict[int, bytes] = {}
        # (id of the last completed message, its bytes until delivered): one tuple, so that
        # "completed" and "delivered" each change in one store.
        self._finished: tuple[int, bytes | None] = (-1, None)

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        """Two connected ends."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(a), cls(b)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __del__(self) -> None:
        # A dropped end closes its socket, as a dropped multiprocessing Connection does.
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # Only when a process is being started (multiprocessing pickles the socket as a
        # duplicated file descriptor); the receiving end starts with an empty state.
        return (Channel, (self._sock,))

    # -- sending ------------------------------------------------------------------------

    def send(self, data: bytes, *, watch: int | None = None) -> None:
        """Send one message, waiting while the other side's buffer is full.

        Raises ``ChannelClosed`` if the other end is closed, or if ``watch`` (a process
        sentinel) becomes readable while waiting: the receiver is gone.
        """
        view = memoryview(data)
        count = max(1, -(-len(view) // _PAYLOAD))
        with self._send_lock:
            self._counter = (self._counter + 1) & 0xFFFFFFFF
            message = (os.getpid() << 32) | self._counter
            for index in range(count):
                record = [
                    _HEADER.pack(message, index, count),
                    view[index * _PAYLOAD : (index + 1) * _PAYLOAD],
                ]
                self._send_record(record, watch)

    def _send_record(self, record: list[Any], watch: int | None) -> None:
        flags = socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT
        while True:
            try:
                self._sock.sendmsg(record, [], flags)  # the whole record, or nothing
                return
            except (BlockingIOError, InterruptedError):
                pass
            except (BrokenPipeError, ConnectionResetError) as error:
                raise ChannelClosed("the other end of the channel is closed") from error
            ready = wait_ready([] if watch is None else [watch], None, write=self.fileno())
            if watch is not None and watch in ready:
                raise ChannelClosed("the other side is gone")

    # -- receiving ----------------------------------------------------------------------

    def recv(self, timeout: float | None = None, *, watch: int | None = None) -> bytes | None:
        """The next message, waiting at most ``timeout`` seconds (None: no limit).

        Returns ``None`` on timeout. Raises ``ChannelClosed`` when the other end is closed
        and no complete message is left. ``watch``: a file descriptor (a process sentinel)
        whose readiness means the other side is gone even if the socket stays open (a
        forked copy of its end may outlive it); what was sent before is still read.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._recv_lock.acquire(timeout=-1 if timeout is None else timeout):
            return None
        try:
            while True:
                message, data = self._finished
                if data is not None:
                    self._finished = (message, None)
                    return data
                if self._take_one():
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                own = self.fileno()
                ready = wait_ready([own] if watch is None else [own, watch], remaining)
                if watch is not None and watch in ready and own not in ready:
                    while self._finished[1] is None and self._take_one():
                        pass  # what it sent before it went
                    if self._finished[1] is None:
                        raise ChannelClosed("the other side is gone")
        finally:
            self._recv_lock.release()

    def _take_one(self) -> bool:
        """Absorb and consume one record if one is waiting; ``False`` if none is."""
        try:
            size = self._sock.recv_into(
                self._scratch, RECORD_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT
            )
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionResetError:
            size = 0
        if size == 0:
            raise ChannelClosed("the other end of the channel is closed")
        if size >= _HEADER.size:
            message, index, count = _HEADER.unpack_from(self._scratch)
            with memoryview(self._scratch) as view:
                payload = bytes(view[_HEADER.size : size])
            self._absorb(message, index, count, payload)
        # Only now is the record taken off the socket (its bytes are discarded).
        self._sock.recv(1, socket.MSG_DONTWAIT)
        return True

    def _absorb(self, message: int, index: int, count: int, payload: bytes) -> None:
        # Idempotent: the same record absorbed twice (peeked again after an interruption
        # before it was consumed) changes nothing the second time.
        if message == self._finished[0]:
            return  # the last record of the message completed last
        if message == self._current and index < self._expect:
            return  # already absorbed
        if index == 0:
            # A new message. An incomplete one before it lost its tail: it is dropped.
            self._parts = {}
            self._count = count
            self._expect = 0
            self._current = message
        elif message != self._current or index != self._expect or count != self._count:
            return  # a record of a message whose start never came (or that was dropped)
        self._parts[index] = payload
        if index + 1 < count:
            self._expect = index + 1
            return
        parts = self._parts
        self._finished = (message, b"".join(parts[i] for i in range(count)))
        self._current = -1
        self._parts = {}
