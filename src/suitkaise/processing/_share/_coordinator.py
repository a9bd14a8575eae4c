"""The coordinator: one process that holds a Share's objects and applies every request.

It listens on a Unix socket inside a directory only the owner can enter, and every
connection must pass ``multiprocessing.connection``'s HMAC challenge with the Share's key; a
client that fails (wrong key, garbage bytes) is dropped and the others are not affected.
One thread per connection; one lock around every request, so requests are linearizable.
Circuits live in shared memory (``_memory``); the coordinator only allocates their slots.
"""

from __future__ import annotations

import _thread
import operator
import os
import pickle
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import Any

from ...circuits import Settings
from .._orphan import exit_with_parent
from .._pickling import dumps, portable_error
from ._memory import CROWDED_WORD, HEARTBEAT_WORD, Segment
from ._proxies import INPLACE
from ._wire import Wire

__all__ = ["HEARTBEAT_SECONDS", "PROCESS_NAME", "serve"]

HEARTBEAT_SECONDS = 0.1
"""How often the coordinator refreshes its heartbeat in the shared memory (seconds)."""

PROCESS_NAME = "suitkaise-share"
"""The coordinator process's name, as ``ps`` shows it (Linux)."""

CROWD_GAP_SECONDS = 0.001
"""Requests from two connections this close together: several clients are busy (seconds)."""

CROWD_HOLD_SECONDS = 0.02
"""How long the coordinator stays crowded after the last such pair (seconds)."""

# Immutable values are sent back by value (and cached by readers); anything else stays
# here and is reached through a proxy.
BY_VALUE = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset, range)

# The in-place operators a read value or a proxy may forward (see _proxies.INPLACE).
_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    method: getattr(operator, method[2:-2]) for method in INPLACE
}


class _Coordinator:
    def __init__(self, directory: str, segment: Segment, seed: dict[str, Any]) -> None:
        self.directory = directory
        self.segment = segment
        self.lock = threading.Lock()
        # name -> ("value", obj) | ("object", obj) | ("circuit", kind, settings, slot)
        self.names: dict[str, tuple[Any, ...]] = dict(seed)
        self.next_slot = 1 + max(
            (entry[3] for entry in self.names.values() if entry[0] == "circuit"), default=-1
        )
        self.stopping = threading.Event()
        self.listening: socket.socket | None = None
        # Who called last, and when: requests from different connections close together
        # mean several clients are busy, and spinning would take the CPU from the work.
        self.last_caller: object = None
        self.last_call = 0.0
        self.crowded = False
        self.crowded_until = 0.0

    def note_caller(self, wire: object, now: float) -> None:
        """A request from ``wire`` arrived at ``now`` (``time.perf_counter()``)."""
        # Unlocked on purpose: a lost update only delays a switch of the spinning policy.
        if wire is not self.last_caller:
            if now - self.last_call < CROWD_GAP_SECONDS:
                self.crowded_until = now + CROWD_HOLD_SECONDS
                if not self.crowded:
                    self.crowded = True
                    self.segment.words[CROWDED_WORD] = 1
            self.last_caller = wire
        elif self.crowded and now > self.crowded_until:
            self.crowded = False
            self.segment.words[CROWDED_WORD] = 0
        self.last_call = now

    # -- requests -----------------------------------------------------------------

    def handle(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        op = request[0]
        with self.lock:
            if self.stopping.is_set():
                # Arrived after the snapshot was taken: refuse rather than acknowledge a
                # write that the restarted Share would not have.
                return ("error", "this Share was stopped; call share.start() to use it again")
            return getattr(self, f"op_{op}")(*request[1:])  # type: ignore[no-any-return]

    def op_ping(self) -> tuple[Any, ...]:
        return ("ok", os.getpid())

    def op_names(self) -> tuple[Any, ...]:
        return ("ok", sorted(self.names))

    def op_get(self, name: str) -> tuple[Any, ...]:
        entry = self.names.get(name)
        if entry is None:
            return ("missing",)
        if entry[0] == "value":
            return ("value", entry[1])
        if entry[0] == "circuit":
            return entry
        obj = entry[1]
        methods = sorted(n for n in dir(type(obj)) if callable(getattr(type(obj), n, None)))
        return ("object", type(obj).__name__, methods)

    def op_set(self, name: str, blob: bytes) -> tuple[Any, ...]:
        obj = pickle.loads(blob)
        self.names[name] = ("value", blob) if isinstance(obj, BY_VALUE) else ("object", obj)
        self.segment.bump_version()
        return ("ok",)

    def op_set_circuit(self, name: str, kind: str, settings: Settings, state: Any) -> Any:
        if self.next_slot >= self.segment.slots:
            return ("error", f"this Share has room for {self.segment.slots} circuits")
        slot = self.next_slot
        self.next_slot += 1  # never reused: an old handle must not write into a new circuit
        self.segment.write_slot(slot, state)
        self.names[name] = ("circuit", kind, settings, slot)
        self.segment.bump_version()
        return ("ok", slot)

    def op_delete(self, name: str) -> tuple[Any, ...]:
        if self.names.pop(name, None) is None:
            return ("missing",)
        self.segment.bump_version()
        return ("ok",)

    def op_clear(self) -> tuple[Any, ...]:
        self.names.clear()
        self.segment.bump_version()
        return ("ok",)

    def _object(self, name: str) -> Any:
        entry = self.names.get(name)
        if entry is None or entry[0] != "object":
            raise _Gone(name)
        return entry[1]

    def op_getattr(self, name: str, attribute: str) -> tuple[Any, ...]:
        return ("value", dumps(getattr(self._object(name), attribute)))

    def op_setattr(self, name: str, attribute: str, blob: bytes) -> tuple[Any, ...]:
        setattr(self._object(name), attribute, pickle.loads(blob))
        return ("ok",)

    def op_call(self, name: str, method: str, blob: bytes) -> tuple[Any, ...]:
        args, kwargs = pickle.loads(blob)
        result = getattr(self._object(name), method)(*args, **kwargs)
        return ("value", dumps(result))

    def op_inplace(self, name: str, method: str, blob: bytes) -> tuple[Any, ...]:
        entry = self.names.get(name)
        if entry is None or entry[0] == "circuit":
            raise _Gone(name)
        current = pickle.loads(entry[1]) if entry[0] == "value" else entry[1]
        result = _INPLACE[method](current, pickle.loads(blob))
        if isinstance(result, BY_VALUE):
            data = dumps(result)
            self.names[name] = ("value", data)
            # The version this change made: a client whose cache was current just before
            # it may keep the cache, with the new value (no read round trip next time).
            return ("value", data, self.segment.bump_version())
        self.names[name] = ("object", result)
        if result is not current:
            self.segment.bump_version()
        return ("object",)

    def op_stop(self) -> tuple[Any, ...]:
        """Stop serving, and return everything, serialized: what a restart starts from."""
        self.stopping.set()
        snapshot = {
            name: (entry if entry[0] != "object" else ("object-blob", dumps(entry[1])))
            for name, entry in self.names.items()
        }
        return ("ok", snapshot)

    def finish(self) -> None:
        """End the process, after ``stop`` was answered."""
        if self.listening is not None:
            self.listening.close()
        # Let the replies to requests handled just before "stop" leave before the process
        # (and its threads) ends.
        time.sleep(0.01)
        os._exit(0)

    # -- connections ----------------------------------------------------------------

    def serve_connection(self, sock: socket.socket, authkey: bytes | None) -> None:
        """Serve one client; ``authkey`` None: a connection that needs no handshake."""
        with sock:
            # The handshake runs here, not in the accept loop, so a client that connects
            # and then stalls or sends garbage holds up nobody but itself.
            if authkey is not None and not _handshake(sock, authkey):
                return
            wire = Wire(sock)
            sent = time.perf_counter()
            while not self.stopping.is_set():
                try:
                    payload = wire.receive(sent, not self.crowded)
                except (EOFError, OSError):
                    return
                self.note_caller(wire, time.perf_counter())
                try:
                    reply = self.handle(pickle.loads(payload))
                except _Gone as gone:
                    reply = ("gone", gone.args[0])
                except BaseException as error:  # the caller gets its own exception back
                    reply = ("raise", portable_error(error, RuntimeError))
                try:
                    wire.send(pickle.dumps(reply, protocol=5))
                except OSError:
                    return
                sent = time.perf_counter()
            if self.stopping.is_set():
                self.finish()


def _handshake(sock: socket.socket, authkey: bytes) -> bool:
    """``multiprocessing.connection``'s HMAC challenge, both ways, on a copy of the socket's
    file descriptor (the frames that follow are the Wire's own)."""
    connection = Connection(os.dup(sock.fileno()))
    try:
        deliver_challenge(connection, authkey)
        answer_challenge(connection, authkey)
    except Exception:
        return False
    finally:
        connection.close()
    return True


class _Gone(Exception):
    pass


def _seed(snapshot: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    seeded: dict[str, tuple[Any, ...]] = {}
    for name, entry in snapshot.items():
        if entry[0] == "object-blob":
            seeded[name] = ("object", pickle.loads(entry[1]))
        else:
            seeded[name] = entry
    return seeded


def serve(
    directory: str,
    listening: socket.socket,
    authkey: bytes,
    segment_path: str,
    snapshot: dict[str, tuple[Any, ...]],
    *,
    owner: int,
    owner_connection: socket.socket,
) -> None:
    """The coordinator process's main function. ``listening`` is bound and listening;
    ``owner_connection`` is a socket pair's end whose other end the owner already holds.

    The main thread serves the owner's connection at once (the owner's first call is
    usually waiting for it); one more thread accepts the other connections and keeps the
    heartbeat. The thread that handles ``stop`` ends the process.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # whatever handler the owner installed
    segment = Segment(segment_path)
    segment.doubles[HEARTBEAT_WORD] = time.monotonic()
    coordinator = _Coordinator(directory, segment, _seed(snapshot))
    coordinator.listening = listening
    listening.settimeout(HEARTBEAT_SECONDS)  # accept() wakes up to beat
    _thread.start_new_thread(_accept_forever, (coordinator, listening, authkey, owner))
    coordinator.serve_connection(owner_connection, None)
    # The owner's connection is closed (the thread that made it ended) but the Share goes
    # on: the other connections' threads carry on until one of them handles "stop".
    coordinator.stopping.wait()
    coordinator.finish()


def _accept_forever(
    coordinator: _Coordinator, listening: socket.socket, authkey: bytes, owner: int
) -> None:
    # The owner died without stopping us: nobody else will remove the private directory.
    exit_with_parent(owner, cleanup=lambda: shutil.rmtree(coordinator.directory, True))
    _name_this_process()  # here, not before the owner's first call is served
    heartbeat = coordinator.segment.doubles
    while True:
        heartbeat[HEARTBEAT_WORD] = time.monotonic()
        try:
            client, _ = listening.accept()
        except TimeoutError:
            continue
        except OSError:
            if coordinator.stopping.is_set():
                return
            continue
        client.setblocking(True)
        # _thread: threading.Thread.start() would wait for the thread to be scheduled.
        _thread.start_new_thread(coordinator.serve_connection, (client, authkey))


def _name_this_process() -> None:
    # What ps and top show (and how the tests find coordinators). /proc/self/comm is the
    # main thread's name, whichever thread writes it. Linux only; harmless elsewhere.
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(PROCESS_NAME)
    except OSError:
        pass
