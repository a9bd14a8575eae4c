"""The coordinator: one process that holds a Share's objects and applies every request.

It listens on a Unix socket inside a directory only the owner can enter, and every
connection must pass ``multiprocessing.connection``'s HMAC challenge with the Share's key; a
client that fails (wrong key, garbage bytes) is dropped and the others are not affected.
One thread per connection; one re-entrant lock around every operation, so operations are
linearizable, and an operation that uses the Share from inside (a shared object's method
that reads or writes the Share) runs inside the one that called it. Operations are applied
through an explicit table (``_protocol``); anything else is refused. Circuits live in shared
memory (``_memory``); the coordinator only hands out their slots.
"""

from __future__ import annotations

import _thread
import contextlib
import operator
import os
import pickle
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, ItemsView, KeysView, ValuesView
from typing import Any

from ..._compat import Connection, answer_challenge, deliver_challenge
from .._orphan import exit_with_parent
from .._pickling import dumps, portable_error
from . import _protocol as P
from ._directory import identity, record_coordinator, sweep
from ._link import InProcessLink, serve_here
from ._memory import (
    COORDINATOR_WORD,
    CROWDED_WORD,
    HEARTBEAT_WORD,
    NEXT_SLOT_WORD,
    START_WORD,
    Segment,
    segment_at,
)
from ._proxies import INPLACE, SharedObject
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

COMMIT_SECONDS = 5.0
"""How long a stopping coordinator waits for its owner to confirm it has the snapshot
before it goes back to serving (seconds)."""

# Immutable values are sent back by value (and cached by readers); anything else stays
# here and is reached through a proxy.
BY_VALUE = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset, range)

# The in-place operators a read value or a proxy may forward (see _proxies.INPLACE).
_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    method: getattr(operator, method[2:-2]) for method in INPLACE
}

_STOPPED = "this Share was stopped; call share.start() to use it again"


class _Gone(Exception):
    pass


def _view_kind(result: object) -> str | None:
    if isinstance(result, KeysView):
        return "keys"
    if isinstance(result, ItemsView):
        return "items"
    if isinstance(result, ValuesView):
        return "values"
    return None


class _Coordinator:
    def __init__(
        self,
        directory: str,
        segment: Segment,
        authkey: bytes = b"",
        owner: int = 0,
        timeout: float = 30.0,
    ) -> None:
        self.directory = directory
        self.segment = segment
        self.lock = threading.RLock()
        # name -> ("value", blob) | ("object", obj) | ("circuit", kind, settings, slot)
        self.names: dict[str, tuple[Any, ...]] = {}
        self.not_restored: dict[str, str] = {}
        self.stopping = threading.Event()
        self.listening: socket.socket | None = None
        self.methods: dict[type, tuple[str, ...]] = {}
        # Who called last, and when: requests from different connections close together
        # mean several clients are busy, and spinning would take the CPU from the work.
        self.last_caller: object = None
        self.last_call = 0.0
        self.crowded = False
        self.crowded_until = 0.0
        # In this process, the Share is reached through a link that applies requests here,
        # directly, re-entrantly; made when first needed (something here unpickles a
        # handle on the Share), not before the owner's first call.
        self.link: InProcessLink | None = None
        serve_here(directory, lambda: self._own_link(authkey, owner, timeout))

    def _own_link(self, authkey: bytes, owner: int, timeout: float) -> InProcessLink:
        if self.link is None:
            self.link = InProcessLink(self, self.directory, authkey, owner, timeout)
        return self.link

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

    def execute(
        self, op: int, args: tuple[Any, ...], wait: float | None = None
    ) -> tuple[Any, ...]:
        """Apply one operation atomically; the reply. Never raises.

        ``wait``: the longest to wait for the lock (seconds; ``None``: as long as it
        takes). A request from a connection waits without limit (its client has its own
        time limit); one made in this process by a thread other than the one holding the
        lock (a thread a shared object started) waits at most the Share's timeout.
        """
        handler = _TABLE.get(op)
        if handler is None:
            return (P.ERROR, f"this Share's coordinator does not know the operation {op!r}")
        lock = self.lock
        if not lock.acquire(timeout=-1 if wait is None else wait):
            return (
                P.ERROR,
                f"this Share's coordinator was busy for {wait:g} s with another request "
                "(a slow or deadlocked method of a shared object); the call was not applied",
            )
        try:
            if self.stopping.is_set():
                # Arrived after the snapshot was taken: refuse rather than acknowledge a
                # write that the restarted Share would not have.
                return (P.ERROR, _STOPPED)
            return handler(self, *args)
        except _Gone as gone:
            return (P.GONE, gone.args[0])
        except BaseException as error:  # the caller gets its own exception back
            return (P.RAISE, portable_error(error, RuntimeError))
        finally:
            lock.release()

    def op_ping(self) -> tuple[Any, ...]:
        return (P.OK, os.getpid())

    def op_names(self) -> tuple[Any, ...]:
        return (P.OK, sorted(self.names))

    def op_get(self, name: str) -> tuple[Any, ...]:
        entry = self.names.get(name)
        if entry is None:
            return (P.MISSING,)
        if entry[0] == "value":
            return (P.VALUE, entry[1])
        if entry[0] == "circuit":
            return (P.CIRCUIT, *entry[1:])
        cls = type(entry[1])
        methods = self.methods.get(cls)
        if methods is None:
            methods = self.methods[cls] = tuple(
                sorted(n for n in dir(cls) if callable(getattr(cls, n, None)))
            )
        return (P.OBJECT, cls.__name__, methods)

    def _resolve(self, obj: Any) -> tuple[Any, ...] | None:
        """The entry a proxy of this Share stands for (``share.a = share.b`` makes ``a``
        another name for the same object), or ``None`` if ``obj`` is no such proxy."""
        if type(obj) is not SharedObject:
            return None
        link, target = obj._sk_origin
        if link is not self.link or link is None:
            return None
        entry = self.names.get(target)
        if entry is None or entry[0] != "object":
            raise _Gone(target)
        return entry

    def op_set(self, name: str, blob: bytes) -> tuple[Any, ...]:
        obj = pickle.loads(blob)
        alias = self._resolve(obj)
        if alias is not None:
            self.names[name] = alias
        elif isinstance(obj, BY_VALUE):
            self.names[name] = ("value", blob)
        else:
            self.names[name] = ("object", obj)
        self.segment.bump_version()
        return (P.OK,)

    def op_set_circuit(
        self, name: str, kind: str, settings: Any, state: Any, alias: int
    ) -> tuple[Any, ...]:
        words = self.segment.words
        if alias >= 0:  # a circuit of this Share under another name: the same circuit
            slot = alias
        else:
            slot = words[NEXT_SLOT_WORD]
            if slot >= self.segment.slots:
                return (P.ERROR, f"this Share has room for {self.segment.slots} circuits")
            # Never reused, even across a restart: an old handle must not write into a
            # new circuit.
            words[NEXT_SLOT_WORD] = slot + 1
            self.segment.write_slot(slot, state)
        self.names[name] = ("circuit", kind, settings, slot)
        self.segment.bump_version()
        return (P.OK, slot)

    def op_delete(self, name: str) -> tuple[Any, ...]:
        if self.names.pop(name, None) is None:
            return (P.MISSING,)
        self.segment.bump_version()
        return (P.OK,)

    def op_clear(self) -> tuple[Any, ...]:
        self.names.clear()
        self.segment.bump_version()
        return (P.OK,)

    def _object(self, name: str) -> Any:
        entry = self.names.get(name)
        if entry is None or entry[0] != "object":
            raise _Gone(name)
        return entry[1]

    def _send_back(self, result: Any, what: str) -> tuple[Any, ...]:
        kind = _view_kind(result)
        if kind is not None:
            return (P.VIEW, kind, dumps(list(result)))
        try:
            return (P.VALUE, dumps(result))
        except Exception as error:
            raise TypeError(
                f"{what} gave a {type(result).__name__} object, which cannot be sent to "
                f"another process ({type(error).__name__}: {error}); return a copy, a list "
                "or a plain value instead"
            ) from None

    def op_getattr(self, name: str, attribute: str) -> tuple[Any, ...]:
        return self._send_back(getattr(self._object(name), attribute), f"share.{name}.{attribute}")

    def op_setattr(self, name: str, attribute: str, blob: bytes) -> tuple[Any, ...]:
        setattr(self._object(name), attribute, pickle.loads(blob))
        return (P.OK,)

    def op_call(self, name: str, method: str, blob: bytes) -> tuple[Any, ...]:
        args, kwargs = pickle.loads(blob)
        result = getattr(self._object(name), method)(*args, **kwargs)
        return self._send_back(result, f"share.{name}.{method}()")

    def op_iterate(self, name: str) -> tuple[Any, ...]:
        # A snapshot, taken atomically: an iterator cannot travel, and iterating remotely
        # one item at a time would not be atomic anyway.
        return (P.VALUE, dumps(list(self._object(name))))

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
            return (P.VALUE, data, self.segment.bump_version())
        self.names[name] = ("object", result)
        if result is not current:
            self.segment.bump_version()
        return (P.OBJECT,)

    def op_stop(self) -> tuple[Any, ...]:
        """Stop serving, and return everything, serialized: what a restart starts from,
        and what could not be kept (name -> reason)."""
        self.stopping.set()
        snapshot, lost = self.snapshot()
        return (P.OK, snapshot, lost)

    def op_restored(self) -> tuple[Any, ...]:
        return (P.OK, dict(self.not_restored))

    def snapshot(self) -> tuple[dict[str, Any], dict[str, str]]:
        """``({"entries": plain entries, "objects": [(names, blob), ...]}, lost)``.

        Each shared object is pickled on its own (names that are one object, after
        ``share.a = share.b``, stay one object), so one that cannot be pickled (it holds a
        lock, say) is the only thing lost.
        """
        entries = {name: entry for name, entry in self.names.items() if entry[0] != "object"}
        groups: dict[int, tuple[Any, list[str]]] = {}
        for name, entry in self.names.items():
            if entry[0] == "object":
                groups.setdefault(id(entry[1]), (entry[1], []))[1].append(name)
        objects: list[tuple[list[str], bytes]] = []
        lost: dict[str, str] = {}
        for obj, names in groups.values():
            try:
                objects.append((names, dumps(obj)))
            except Exception as error:
                for name in names:
                    lost[name] = f"{type(obj).__name__} object: {type(error).__name__}: {error}"
        return {"entries": entries, "objects": objects}, lost

    def restore(self, snapshot: dict[str, Any] | None) -> None:
        if not snapshot:
            return
        self.names.update(snapshot["entries"])
        for names, blob in snapshot["objects"]:
            try:
                entry = ("object", pickle.loads(blob))
            except Exception as error:
                for name in names:
                    self.not_restored[name] = f"{type(error).__name__}: {error}"
                continue
            for name in names:
                self.names[name] = entry

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
            while True:
                try:
                    request_id, payload = wire.receive(sent, not self.crowded)
                except (EOFError, OSError):
                    return
                self.note_caller(wire, time.perf_counter())
                try:
                    request = pickle.loads(payload)
                    op, args = request[0], request[1:]
                except Exception as error:
                    op, reply = -1, (P.ERROR, f"a request that cannot be read: {error!r}")
                else:
                    reply = self.execute(op, args)
                try:
                    data = pickle.dumps(reply, protocol=5)
                except Exception as error:
                    data = pickle.dumps(
                        (P.RAISE, portable_error(error, RuntimeError)), protocol=5
                    )
                stopping = op == P.STOP and reply[0] == P.OK
                try:
                    wire.send(request_id, data)
                except OSError:
                    if stopping:  # the owner is gone mid-stop: it has no snapshot
                        self.stopping.clear()
                    return
                sent = time.perf_counter()
                if stopping:
                    self.await_commit(wire)

    def await_commit(self, wire: Wire) -> None:
        """``stop`` was answered with the snapshot; the owner confirms it has it with one
        more frame. Then the process ends. If the owner never does (its stop() was
        interrupted, say), nothing was lost: serve again, as if stop had not come."""
        wire.sock.settimeout(COMMIT_SECONDS)
        try:
            request_id, _ = wire.receive(time.perf_counter(), True)
        except (EOFError, OSError):
            self.stopping.clear()
            raise EOFError("the owner did not confirm the stop") from None
        with contextlib.suppress(OSError):
            wire.send(request_id, pickle.dumps((P.OK,), protocol=5))
        self.finish()


# The operations a request may name: anything else is refused.
_TABLE: dict[int, Callable[..., tuple[Any, ...]]] = {
    P.PING: _Coordinator.op_ping,
    P.NAMES: _Coordinator.op_names,
    P.GET: _Coordinator.op_get,
    P.SET: _Coordinator.op_set,
    P.SET_CIRCUIT: _Coordinator.op_set_circuit,
    P.DELETE: _Coordinator.op_delete,
    P.CLEAR: _Coordinator.op_clear,
    P.GETATTR: _Coordinator.op_getattr,
    P.SETATTR: _Coordinator.op_setattr,
    P.CALL: _Coordinator.op_call,
    P.INPLACE: _Coordinator.op_inplace,
    P.ITERATE: _Coordinator.op_iterate,
    P.STOP: _Coordinator.op_stop,
    P.RESTORED: _Coordinator.op_restored,
}


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


def serve(
    directory: str,
    listening: socket.socket,
    authkey: bytes,
    segment_path: str,
    snapshot: dict[str, Any] | None,
    *,
    owner: int,
    owner_connection: socket.socket,
    timeout: float = 30.0,
) -> None:
    """The coordinator process's main function. ``listening`` is bound and listening;
    ``owner_connection`` is a socket pair's end whose other end the owner already holds.

    The main thread serves the owner's connection at once (the owner's first call is
    usually waiting for it); one more thread accepts the other connections and keeps the
    heartbeat. The thread that handles ``stop`` ends the process.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # whatever handler the owner installed
    segment = segment_at(segment_path)
    segment.words[COORDINATOR_WORD] = os.getpid()  # its start time: once the owner is served
    segment.doubles[HEARTBEAT_WORD] = time.monotonic()
    coordinator = _Coordinator(directory, segment, authkey, owner, timeout)
    # After the coordinator's own link is registered: restored objects that hold a proxy,
    # a circuit or the Share itself are bound to it.
    coordinator.restore(snapshot)
    coordinator.listening = listening
    listening.settimeout(HEARTBEAT_SECONDS)  # accept() wakes up to beat
    _thread.start_new_thread(_accept_forever, (coordinator, listening, authkey, owner))
    with contextlib.suppress(EOFError):  # a stop that was never confirmed: carry on
        coordinator.serve_connection(owner_connection, None)
    # The owner's connection is closed (the thread that made it ended) but the Share goes
    # on: the other connections' threads carry on until one of them handles "stop".
    while True:
        coordinator.stopping.wait()
        time.sleep(COMMIT_SECONDS + 1.0)  # the stopping thread ends the process


def _serve_accepted(coordinator: _Coordinator, client: socket.socket, authkey: bytes) -> None:
    with contextlib.suppress(EOFError):
        coordinator.serve_connection(client, authkey)


def _accept_forever(
    coordinator: _Coordinator, listening: socket.socket, authkey: bytes, owner: int
) -> None:
    # The owner died without stopping us: nobody else will remove the private directory.
    exit_with_parent(owner, cleanup=lambda: shutil.rmtree(coordinator.directory, True))
    # Everything here runs after the owner's first call could be served (this thread
    # would take the GIL from it), and needs no hurry.
    _name_this_process()
    segment = coordinator.segment
    pid, start = identity()
    segment.words[START_WORD] = start  # who we are, for clients that wait on us ...
    segment.words[COORDINATOR_WORD] = pid
    heartbeat = segment.doubles
    swept = False
    while True:
        heartbeat[HEARTBEAT_WORD] = time.monotonic()
        try:
            client, _ = listening.accept()
        except TimeoutError:
            if not swept:
                swept = True
                # ... and for a later sweep; then remove what Shares killed together
                # with their owners left behind.
                record_coordinator(coordinator.directory)
                sweep()
            continue
        except OSError:
            if coordinator.stopping.is_set():
                return
            time.sleep(HEARTBEAT_SECONDS)  # e.g. out of descriptors: do not spin
            continue
        client.setblocking(True)
        # _thread: threading.Thread.start() would wait for the thread to be scheduled.
        _thread.start_new_thread(_serve_accepted, (coordinator, client, authkey))


def _name_this_process() -> None:
    # What ps and top show (and how the tests find coordinators). /proc/self/comm is the
    # main thread's name, whichever thread writes it. Linux only; harmless elsewhere.
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(PROCESS_NAME)
    except OSError:
        pass
